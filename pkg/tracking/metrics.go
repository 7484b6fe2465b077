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
	// InboxMessages counts MESH inbox messages handled by this process, by kind and result (applied,
	// held).
	InboxMessages *prometheus.CounterVec
	// InboxDeadLetters counts inbox messages held and dead-lettered on dps.deadletter.inbox.
	InboxDeadLetters prometheus.Counter
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
		InboxMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_tracker_inbox_messages_total",
			Help: "MESH inbox messages handled by this tracker, by kind (report, infack, busack, busack_summary, unknown) and result (applied, held).",
		}, []string{"kind", "result"}),
		InboxDeadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dps_tracker_inbox_dead_letters_total",
			Help: "MESH inbox messages this tracker could not apply: left unacknowledged in MESH and dead-lettered on dps.deadletter.inbox.",
		}),
	}
	for _, k := range []string{KindReport, KindInfAck, KindBusAck, KindBusAckSummary, KindUnknown} {
		for _, r := range []string{"applied", "held"} {
			m.InboxMessages.WithLabelValues(k, r)
		}
	}
	for _, r := range []string{handshakeOK, handshakeFailed} {
		m.Handshakes.WithLabelValues(r)
	}
	for _, k := range []string{errTransient, errPermanent, errUnknown} {
		m.TrackingErrors.WithLabelValues(k)
	}
	// Every series exists from the start, so that an alert on rate(...{status="failed"}) sees a zero
	// rather than nothing until the first failure.
	for _, s := range []lifecycle.Status{lifecycle.Acknowledged, lifecycle.Received, lifecycle.Processed, lifecycle.Failed, lifecycle.Rejected} {
		m.Transitions.WithLabelValues(s.String())
	}
	reg.MustRegister(m.SentToAcknowledged, m.Handshakes, m.TrackingErrors, m.Transitions, m.InboxMessages, m.InboxDeadLetters)
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

var (
	exportsByStatusDesc = prometheus.NewDesc("dps_exports_by_status",
		"Exports in dps_exports by status, read from the database at scrape time.", []string{"status"}, nil)
	refusedByDiagnosticDesc = prometheus.NewDesc("dps_refused_rows_by_diagnostic",
		"Records whose latest delivery the receiver refused (BusAck) and that have not gone out again since, by the receiver's diagnostic "+
			"(its first 100 characters; the 20 commonest, the rest as \"other\"). Read from the database at scrape time.", []string{"diagnostic"}, nil)
	inboxHeldDesc = prometheus.NewDesc("dps_inbox_messages_held",
		"MESH inbox messages the tracker could not apply, left unacknowledged in MESH for a person (see dps.deadletter.inbox).", nil, nil)
)

// maxDiagnosticLabels bounds the diagnostic label's values.
const maxDiagnosticLabels = 20

// statusCollector reads the export counts per status, the waiting refused records and the held inbox
// messages when scraped.
type statusCollector struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- exportsByStatusDesc
	ch <- refusedByDiagnosticDesc
	ch <- inboxHeldDesc
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts := map[string]float64{}
	for _, s := range lifecycle.All() {
		counts[s.String()] = 0
	}
	err := c.collectRows(ctx, `SELECT status, count(*) FROM dps_exports GROUP BY status`, func(k string, n int64) { counts[k] = float64(n) })
	if err != nil {
		// A scrape without the gauge is better than one with made-up zeros.
		c.warn(err)
		return
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(exportsByStatusDesc, prometheus.GaugeValue, n, s)
	}
	byDiagnostic := map[string]float64{}
	err = c.collectRows(ctx, `
		WITH waiting AS (
		    SELECT left(coalesce(er.diagnostic, '(no diagnostic)'), 100) AS diagnostic
		    FROM dps_export_records er JOIN dps_exports e ON e.id = er.export_id
		    WHERE er.outcome = 'refused'
		      AND NOT EXISTS (
		          SELECT 1 FROM dps_export_records later JOIN dps_exports le ON le.id = later.export_id
		          WHERE later.vaccination_record_id = er.vaccination_record_id AND le.created_at > e.created_at
		            AND `+lifecycle.LiveCondition("le")+`)
		), ranked AS (
		    SELECT diagnostic, count(*) AS n, row_number() OVER (ORDER BY count(*) DESC, diagnostic) AS rank
		    FROM waiting GROUP BY diagnostic
		)
		SELECT CASE WHEN rank <= $1 THEN diagnostic ELSE 'other' END, sum(n)::bigint FROM ranked GROUP BY 1`,
		func(k string, n int64) { byDiagnostic[k] += float64(n) }, maxDiagnosticLabels)
	if err != nil {
		c.warn(err)
	} else {
		for d, n := range byDiagnostic {
			ch <- prometheus.MustNewConstMetric(refusedByDiagnosticDesc, prometheus.GaugeValue, n, d)
		}
	}
	var held int64
	if err := c.pool.QueryRow(ctx, `SELECT count(*) FROM dps_inbox_messages WHERE state = 'held'`).Scan(&held); err != nil {
		c.warn(err)
		return
	}
	ch <- prometheus.MustNewConstMetric(inboxHeldDesc, prometheus.GaugeValue, float64(held))
}

func (c *statusCollector) warn(err error) {
	if c.log != nil {
		c.log.Warn("read database for metrics", slog.Any("error", err))
	}
}

// collectRows runs a query of (text, count) rows and hands each to add.
func (c *statusCollector) collectRows(ctx context.Context, sql string, add func(string, int64), args ...any) error {
	rows, err := c.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		add(k, n)
	}
	return rows.Err()
}
