package delivery

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sender's Prometheus series.
type Metrics struct {
	Received           prometheus.Counter
	Sent               *prometheus.CounterVec // label how: new | adopted | forced
	DuplicatesAvoided  prometheus.Counter
	Retries            *prometheus.CounterVec // label reason: transient | locked
	Failures           *prometheus.CounterVec // label reason: mesh | object | exhausted | invalid | missing_export | mismatch | database
	SendDuration       prometheus.Histogram
	BytesSent          prometheus.Counter
	InFlight           prometheus.Gauge
	GateClosedWarnings prometheus.Counter
}

// NewMetrics registers the sender's series on reg (nil: a private registry, for tests and replay).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dps_sender_batches_received_total", Help: "dps.export.ready batches taken from the sender consumer, redeliveries included.",
		}),
		Sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_sender_batches_sent_total", Help: "Exports MESH accepted: sent now (new), found accepted from an earlier attempt (adopted), or re-sent by replay --force (forced).",
		}, []string{"how"}),
		DuplicatesAvoided: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dps_sender_duplicates_avoided_total", Help: "Redelivered batches whose export was already accepted: acked without sending again.",
		}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_sender_retries_total", Help: "Batches handed back for a later redelivery (nak with delay).",
		}, []string{"reason"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_sender_failures_total", Help: "Batches that ended in failure and a dead letter.",
		}, []string{"reason"}),
		SendDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dps_sender_send_duration_seconds", Help: "Time MESH took to accept a file, retries inside the client included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		BytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dps_sender_bytes_sent_total", Help: "Uncompressed bytes of files MESH accepted.",
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dps_sender_in_flight", Help: "Batches being handled now.",
		}),
		GateClosedWarnings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dps_sender_gate_closed_warnings_total", Help: "WARN lines saying MESH_JOBS_ENABLED is false and batches are waiting.",
		}),
	}
	reg.MustRegister(m.Received, m.Sent, m.DuplicatesAvoided, m.Retries, m.Failures, m.SendDuration, m.BytesSent,
		m.InFlight, m.GateClosedWarnings)
	// Every labelled series exists from the first scrape, so that the dashboard and the alerts see zero
	// rather than no data, and rate() sees the first increment.
	for _, how := range []string{"new", "adopted", "forced"} {
		m.Sent.WithLabelValues(how)
	}
	for _, reason := range []string{"transient", "locked"} {
		m.Retries.WithLabelValues(reason)
	}
	for _, reason := range []string{"mesh", "object", "exhausted", "invalid", "missing_export", "mismatch", "database"} {
		m.Failures.WithLabelValues(reason)
	}
	return m
}
