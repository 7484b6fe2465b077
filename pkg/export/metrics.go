package export

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// Metrics are the producer's Prometheus metrics.
type Metrics struct {
	RequestsReceived *prometheus.CounterVec   // by outcome: exported, dead_lettered, retried
	ExportsCreated   *prometheus.CounterVec   // by programme
	RowsExported     *prometheus.CounterVec   // by programme
	RowsRefused      *prometheus.CounterVec   // by programme and reason (the dps.Rule broken)
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
			Name: "dps_producer_rows_refused_total", Help: "Records left out of a DPS file because the receiver would refuse their row, by programme and reason (the rule broken). They stay queued.",
		}, []string{"programme", "reason"}),
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
		for _, rule := range dps.Rules() {
			m.RowsRefused.WithLabelValues(c, string(rule))
		}
	}
}

func (m *Metrics) observe(res Result, dryRun bool, err error, took time.Duration) {
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
	if !dryRun { // a dry run changes nothing, and its refusals will be counted by the real run
		for rule, n := range res.RefusedByRule {
			m.RowsRefused.WithLabelValues(res.Programme, rule).Add(float64(n))
		}
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
