// Package outbox makes "change the database, then tell the bus" safe across crashes. A message is written
// to dps_outbox in the same transaction as the change it announces, and a Relay publishes it afterwards
// with its Nats-Msg-Id. A crash before commit leaves neither; a crash after commit leaves the row, which
// the next relay publishes; a crash between the stream's ack and marking the row re-publishes a message
// the stream's duplicate window discards. It does not decide what to publish, only that it is published.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/schemas"
)

// notifyChannel wakes relays as soon as a message is committed, so that events leave within
// milliseconds rather than at the next poll.
const notifyChannel = "dps_outbox"

// Enqueue validates v against the schema of subject and stores it for publication when tx commits.
func Enqueue(ctx context.Context, tx pgx.Tx, subject, msgID string, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("outbox %s: encode: %w", subject, err)
	}
	if err := schemas.Validate(subject, payload); err != nil {
		return fmt.Errorf("outbox %s: %w", subject, err)
	}
	// One round trip: the notification is delivered only if the transaction commits.
	if _, err := tx.Exec(ctx, `
		WITH queued AS (INSERT INTO dps_outbox (subject, msg_id, payload) VALUES ($1, $2, $3) RETURNING id)
		SELECT pg_notify($4, '') FROM queued`,
		subject, msgID, payload, notifyChannel); err != nil {
		return fmt.Errorf("outbox %s: insert: %w", subject, err)
	}
	return nil
}

// Relay publishes committed outbox rows. Several relays (one per process replica) may run at once: each
// takes rows with FOR UPDATE SKIP LOCKED. A row the stream can never take is set aside (see flushBatch)
// so that it never holds up the rows after it.
type Relay struct {
	pool       *pgxpool.Pool
	js         jetstream.JetStream
	log        *slog.Logger
	batch      int
	interval   time.Duration
	publishTTL time.Duration
	published  func(subject string)
	metrics    *Metrics
	except     []string

	mu       sync.Mutex
	failures int   // consecutive failed flushes of Run
	lastErr  error // the last of them
}

// Metrics counts what the relays of a process set aside and how their publishing goes.
type Metrics struct {
	// SetAside counts rows set aside, by subject: dps_outbox_set_aside_total.
	SetAside *prometheus.CounterVec
	// RelayFailures is the relay's current run of failed attempts: dps_outbox_relay_consecutive_failures.
	RelayFailures prometheus.Gauge
}

// NewMetrics registers the relay's metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SetAside: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dps_outbox_set_aside_total",
			Help: "Outbox rows set aside because the stream can never take them (invalid or too large); each has a dead letter on dps.deadletter.outbox.",
		}, []string{"subject"}),
		RelayFailures: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dps_outbox_relay_consecutive_failures",
			Help: "Attempts of this process's outbox relay that failed in a row (0 once one succeeds).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.SetAside, m.RelayFailures)
	}
	return m
}

// SetAsideOrigin is the dead letter's "stream" for an outbox row: the table it was in. Its stream_seq
// is the row's id.
const SetAsideOrigin = "dps_outbox"

// RelayConfig wires a Relay. Zero values take the defaults given.
type RelayConfig struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	// Logger; nil logs nothing. Metrics; nil means no metrics (an unregistered set).
	Logger  *slog.Logger
	Metrics *Metrics
	// Interval is how often the relay looks for rows when no notification arrives; default 1s.
	Interval time.Duration
	// OnPublished, when set, is called after each message the stream acknowledged (crash tests).
	OnPublished func(subject string)
	// Except lists subjects this relay leaves to the relays of other processes: those its NATS user
	// may not publish (only the producer may publish dps.export.request, which its schedule enqueues).
	// Without it such a row would be retried here, and hold up the rows behind it, until another
	// relay happened to take it.
	Except []string
}

// NewRelay checks cfg and returns a relay. It contacts nothing.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Pool == nil || cfg.JS == nil {
		return nil, errors.New("outbox relay: a Postgres pool and a JetStream context are required")
	}
	r := &Relay{pool: cfg.Pool, js: cfg.JS, log: cfg.Logger, batch: 100, interval: cfg.Interval, publishTTL: 10 * time.Second,
		published: cfg.OnPublished, metrics: cfg.Metrics, except: append([]string{}, cfg.Except...)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.interval <= 0 {
		r.interval = time.Second
	}
	if r.published == nil {
		r.published = func(string) {}
	}
	if r.metrics == nil {
		r.metrics = NewMetrics(nil)
	}
	return r, nil
}

// Run publishes until ctx ends. Publication errors (NATS down) are logged and retried; they never stop
// the relay, because the rows are safe in Postgres meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	listener, err := r.listen(ctx)
	if err != nil {
		r.log.Warn("outbox relay polls without notifications", slog.Any("error", err))
	}
	defer func() {
		if listener != nil {
			listener.Release()
		}
	}()
	backoff := r.interval
	for {
		// A batch under way when ctx ends is finished, not cancelled part-way: a statement cancelled
		// mid-transaction leaves its rows locked by a connection Postgres has not yet torn down, and the
		// stopping service's last flush (process.FlushOutbox) would skip them (SKIP LOCKED) and leave
		// them to the next process to start. Each publish stays bounded by publishTTL.
		if _, err := r.flush(ctx, context.WithoutCancel(ctx)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.recordAttempt(err)
			r.log.Warn("outbox relay could not publish; will retry", slog.Any("error", err), slog.Duration("retry_in", backoff))
			backoff = min(backoff*2, 30*time.Second)
		} else {
			r.recordAttempt(nil)
			backoff = r.interval
		}
		if err := r.wait(ctx, listener, backoff); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The listening connection broke (Postgres restart): poll, and try to listen again.
			listener.Release()
			listener, _ = r.listen(ctx)
		}
	}
}

func (r *Relay) listen(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		conn.Release()
		return nil, err
	}
	return conn, nil
}

func (r *Relay) wait(ctx context.Context, listener *pgxpool.Conn, d time.Duration) error {
	if listener == nil {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := listener.Conn().WaitForNotification(waitCtx)
	if err != nil && waitCtx.Err() != nil {
		return nil
	}
	return err
}

// Flush publishes every row pending now and returns how many it published.
func (r *Relay) Flush(ctx context.Context) (int, error) { return r.flush(ctx, ctx) }

// flush publishes batch after batch under work until none is left, starting no batch once stop has
// ended.
func (r *Relay) flush(stop, work context.Context) (int, error) {
	total := 0
	for {
		if err := stop.Err(); err != nil {
			return total, err
		}
		published, taken, err := r.flushBatch(work)
		total += published
		// A full batch may have more behind it; a row set aside enqueued its dead letter after it.
		if err != nil || (taken < r.batch && published == taken) {
			return total, err
		}
	}
}

type outboxRow struct {
	id       int64
	subject  string
	msgID    string
	payload  []byte
	attempts int
}

// flushBatch publishes up to one batch of rows in id order and returns how many it published and how
// many it took (published, set aside, or failed).
func (r *Relay) flushBatch(ctx context.Context) (published, taken int, err error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after commit this is a no-op

	rows, err := tx.Query(ctx, `
		SELECT id, subject, msg_id, payload::text, attempts FROM dps_outbox
		WHERE published_at IS NULL AND set_aside_at IS NULL AND NOT (subject = ANY($2))
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, r.batch, r.except)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox: select: %w", err)
	}
	pending, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		var payload string
		err := row.Scan(&o.id, &o.subject, &o.msgID, &payload, &o.attempts)
		o.payload = []byte(payload)
		return o, err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("outbox: select: %w", err)
	}

	var publishErr error
	for _, o := range pending {
		pubCtx, cancel := context.WithTimeout(ctx, r.publishTTL)
		_, err := bus.Publish(pubCtx, r.js, o.subject, o.msgID, json.RawMessage(o.payload))
		cancel()
		if err != nil && bus.Unpublishable(err) {
			// Publishing it again would fail the same way for ever, and the rows after it would wait
			// behind it: set it aside, say why, and go on.
			if serr := r.setAside(ctx, tx, o, err); serr != nil {
				publishErr = serr
				break
			}
			continue
		}
		if err != nil {
			publishErr = fmt.Errorf("outbox: publish %s %s: %w", o.subject, o.msgID, err)
			if _, uerr := tx.Exec(ctx, `UPDATE dps_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1`,
				o.id, err.Error()); uerr != nil {
				publishErr = errors.Join(publishErr, uerr)
			}
			break
		}
		if _, err := tx.Exec(ctx, `UPDATE dps_outbox SET published_at = now(), attempts = attempts + 1 WHERE id = $1`, o.id); err != nil {
			return published, len(pending), fmt.Errorf("outbox: mark published: %w", err)
		}
		published++
		r.published(o.subject)
	}
	// Commit what was published even when a later message failed, so it is not published twice.
	if err := tx.Commit(ctx); err != nil {
		return 0, len(pending), fmt.Errorf("outbox: commit: %w", err)
	}
	return published, len(pending), publishErr
}

// setAside marks row o as never to be published, with the reason, and enqueues in the same transaction
// a dead letter on dps.deadletter.outbox keeping the row's payload (bounded like any dead letter) so
// that nothing is lost and an operator sees it. A dead letter that cannot be published itself is only
// set aside and logged: dead-lettering it would make another just like it.
func (r *Relay) setAside(ctx context.Context, tx pgx.Tx, o outboxRow, cause error) error {
	reason := fmt.Sprintf("outbox row %d (%s, Nats-Msg-Id %s) can never be published: %v", o.id, o.subject, o.msgID, cause)
	if _, err := tx.Exec(ctx, `UPDATE dps_outbox SET set_aside_at = now(), attempts = attempts + 1, last_error = $2 WHERE id = $1`,
		o.id, truncateText(reason, 4096)); err != nil {
		return fmt.Errorf("outbox: set aside row %d: %w", o.id, err)
	}
	if !strings.HasPrefix(o.subject, bus.SubjectDeadLetterPrefix) {
		dl := bus.NewDeadLetterOf(bus.StageOutbox, o.subject, SetAsideOrigin, uint64(o.id), uint64(o.attempts+1), o.payload,
			nats.Header{jetstream.MsgIDHeader: []string{o.msgID}}, reason)
		if err := Enqueue(ctx, tx, bus.DeadLetterSubject(bus.StageOutbox), dl.MsgID(), dl); err != nil {
			return fmt.Errorf("outbox: dead-letter row %d: %w", o.id, err)
		}
	}
	r.metrics.SetAside.WithLabelValues(o.subject).Inc()
	r.log.Error("outbox row set aside: the stream can never take it; a dead letter keeps it",
		slog.Int64("outbox_id", o.id), slog.String("subject", o.subject), slog.String("msg_id", o.msgID),
		slog.String("reason", cause.Error()))
	return nil
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (r *Relay) recordAttempt(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.failures, r.lastErr = 0, nil
	} else {
		r.failures++
		r.lastErr = err
	}
	r.metrics.RelayFailures.Set(float64(r.failures))
}

// Failing reports the relay's current run of failed attempts and the last error (0 and nil once an
// attempt succeeds), for /healthz.
func (r *Relay) Failing() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failures, r.lastErr
}

// Backlog is what waits in the outbox: rows neither published nor set aside, and how long the oldest
// of them has waited (zero when none does), by the database's clock.
func Backlog(ctx context.Context, pool *pgxpool.Pool) (rows int64, oldest time.Duration, err error) {
	var seconds float64
	err = pool.QueryRow(ctx, `
		SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
		FROM dps_outbox WHERE published_at IS NULL AND set_aside_at IS NULL`).Scan(&rows, &seconds)
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	return rows, time.Duration(max(seconds, 0) * float64(time.Second)), nil
}

var (
	backlogDesc = prometheus.NewDesc("dps_outbox_backlog_messages",
		"Events committed to the outbox and not yet published (set-aside rows excluded), read from Postgres at scrape time.", nil, nil)
	oldestDesc = prometheus.NewDesc("dps_outbox_oldest_age_seconds",
		"How long the oldest unpublished outbox event has waited (0 when none waits), read at scrape time.", nil, nil)
)

// BacklogCollector exports Backlog at scrape time. The outbox is one table shared by every process, so
// each reports the same backlog.
type BacklogCollector struct {
	Pool *pgxpool.Pool
	Log  *slog.Logger
}

func (c BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backlogDesc
	ch <- oldestDesc
}

func (c BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rows, oldest, err := Backlog(ctx, c.Pool)
	if err != nil {
		// No gauge rather than a made-up zero.
		c.Log.Warn("read the outbox backlog for metrics", slog.Any("error", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, float64(rows))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, oldest.Seconds())
}

// Pending counts rows not yet published (set-aside rows excluded), for health and metrics.
func Pending(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM dps_outbox WHERE published_at IS NULL AND set_aside_at IS NULL`).Scan(&n)
	return n, err
}
