package export

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the producer's Prometheus metrics.
type Metrics struct {
	RequestsReceived *prometheus.CounterVec   // by outcome: exported, dead_lettered, retried
	ExportsCreated   *prometheus.CounterVec   // by programme
	RowsExported     *prometheus.CounterVec   // by programme
	RowsRefused      *prometheus.CounterVec   // by programme
	DeadLetters      *prometheus.CounterVec   // by reason kind
	ExportDuration   *prometheus.HistogramVec // by status
}

// NewMetrics creates the metrics and registers them on reg (nil: a private registry nobody scrapes, for
// a component given no metrics).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		RequestsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_producer_requests_received_total", Help: "Export requests received on dps.export.request, by outcome.",
		}, []string{"outcome"}),
		ExportsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_producer_exports_created_total", Help: "Exports committed, by programme.",
		}, []string{"programme"}),
		RowsExported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_producer_rows_exported_total", Help: "Rows written to committed DPS files, by programme.",
		}, []string{"programme"}),
		RowsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_producer_rows_refused_total", Help: "Records left out of a DPS file because DPS would reject them, by programme.",
		}, []string{"programme"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_producer_dead_letters_total", Help: "Requests sent to dps.deadletter.request, by kind of reason.",
		}, []string{"kind"}),
		ExportDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dps_producer_export_duration_seconds", Help: "Time to run one programme's export transaction, by status.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10), // 10 ms .. ~3 min
		}, []string{"status"}),
	}
	reg.MustRegister(m.RequestsReceived, m.ExportsCreated, m.RowsExported, m.RowsRefused, m.DeadLetters, m.ExportDuration)
	// Every series whose labels are known in advance starts at zero, so /metrics names each metric from
	// the first scrape and a rate() over a counter's first increment is not lost.
	for _, outcome := range []string{"exported", "dead_lettered", "retried"} {
		m.RequestsReceived.WithLabelValues(outcome)
	}
	for _, kind := range []string{"invalid", "unknown_programme", "database_refused", "conflict", "retries_exhausted"} {
		m.DeadLetters.WithLabelValues(kind)
	}
	for _, status := range []Status{Created, Existing, NothingToSend, DryRun} {
		m.ExportDuration.WithLabelValues(string(status))
	}
	return m
}

// InitProgrammes starts the per-programme series at zero for each code, so that a programme that has
// not exported yet shows 0 rather than no series.
func (m *Metrics) InitProgrammes(codes []string) {
	for _, c := range codes {
		m.ExportsCreated.WithLabelValues(c)
		m.RowsExported.WithLabelValues(c)
		m.RowsRefused.WithLabelValues(c)
	}
}

func (m *Metrics) observe(res Result, err error, took time.Duration) {
	status := string(res.Status)
	var unknown *UnknownProgrammeError
	switch {
	case errors.As(err, &unknown):
		status = "unknown_programme"
	case err != nil:
		status = "error"
	}
	m.ExportDuration.WithLabelValues(status).Observe(took.Seconds())
	if err != nil {
		return
	}
	if res.Refused > 0 {
		m.RowsRefused.WithLabelValues(res.Programme).Add(float64(res.Refused))
	}
	if res.Status == Created {
		m.ExportsCreated.WithLabelValues(res.Programme).Inc()
		m.RowsExported.WithLabelValues(res.Programme).Add(float64(res.Rows))
	}
}

func (m *Metrics) request(outcome string) {
	m.RequestsReceived.WithLabelValues(outcome).Inc()
}

func (m *Metrics) deadLetter(kind string) {
	m.DeadLetters.WithLabelValues(kind).Inc()
}
