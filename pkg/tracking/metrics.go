package tracking

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// Metrics are the tracker's Prometheus metrics. One set per process (per Tracker in tests).
type Metrics struct {
	// SentToAcknowledged observes, per export, the time from dps_exports.sent_at to the moment the
	// tracker saw MESH report it acknowledged.
	SentToAcknowledged prometheus.Histogram
	// Handshakes counts mailbox handshakes by result (ok, failed).
	Handshakes *prometheus.CounterVec
	// TrackingErrors counts MESH tracking calls that failed, by kind (transient, permanent, unknown).
	TrackingErrors *prometheus.CounterVec
	// Transitions counts exports moved on by this process, by the status they reached.
	Transitions *prometheus.CounterVec
}

// NewMetrics registers the tracker's metrics on reg (nil: a private registry nobody scrapes). pool, when not nil, backs the
// dps_exports_by_status gauge, read from the database at scrape time so that every replica reports
// the same truth rather than its own share.
func NewMetrics(reg prometheus.Registerer, pool *pgxpool.Pool, log *slog.Logger) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		SentToAcknowledged: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dps_tracker_sent_to_acknowledged_seconds",
			Help:    "Time from an export's sending to MESH to the tracker seeing it acknowledged by DPS.",
			Buckets: []float64{60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600, 5 * 24 * 3600},
		}),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_tracker_mailbox_handshakes_total",
			Help: "MESH mailbox handshakes by result (ok, failed).",
		}, []string{"result"}),
		TrackingErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_tracker_tracking_errors_total",
			Help: "MESH tracking requests that failed, by kind (transient, permanent, unknown).",
		}, []string{"kind"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_tracker_transitions_total",
			Help: "Exports moved on by this tracker, by the status they reached.",
		}, []string{"status"}),
	}
	for _, r := range []string{handshakeOK, handshakeFailed} {
		m.Handshakes.WithLabelValues(r)
	}
	for _, k := range []string{errTransient, errPermanent, errUnknown} {
		m.TrackingErrors.WithLabelValues(k)
	}
	// Every series exists from the start, so that an alert on rate(...{status="failed"}) sees a zero
	// rather than nothing until the first failure.
	for _, s := range []lifecycle.Status{lifecycle.Acknowledged, lifecycle.Failed} {
		m.Transitions.WithLabelValues(s.String())
	}
	reg.MustRegister(m.SentToAcknowledged, m.Handshakes, m.TrackingErrors, m.Transitions)
	if pool != nil {
		reg.MustRegister(&statusCollector{pool: pool, log: log})
	}
	return m
}

// Tracking error kinds.
const (
	errTransient = "transient"
	errPermanent = "permanent"
	errUnknown   = "unknown"
)

var exportsByStatusDesc = prometheus.NewDesc("dps_exports_by_status",
	"Exports in dps_exports by status, read from the database at scrape time.", []string{"status"}, nil)

// statusCollector reads the export counts per status when scraped.
type statusCollector struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { ch <- exportsByStatusDesc }

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[string]float64{}
	for _, s := range lifecycle.All() {
		counts[s.String()] = 0
	}
	rows, err := c.pool.Query(ctx, `SELECT status, count(*) FROM dps_exports GROUP BY status`)
	if err == nil {
		for rows.Next() {
			var s string
			var n int64
			if err = rows.Scan(&s, &n); err != nil {
				break
			}
			counts[s] = float64(n)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		// A scrape without the gauge is better than one with made-up zeros.
		if c.log != nil {
			c.log.Warn("read export counts for metrics", slog.Any("error", err))
		}
		return
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(exportsByStatusDesc, prometheus.GaugeValue, n, s)
	}
}
