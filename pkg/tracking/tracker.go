// Package tracking follows each export MESH accepted until DPS acknowledges it or MESH gives up on it,
// reads our MESH inbox for MESH's reports and the receiver's acknowledgement files (InfAck, BusAck) down
// to each record's outcome, and keeps the daily mailbox handshake going. It decides when an export moves
// accepted → acknowledged → received → processed, or to failed | rejected (the moves themselves,
// compare-and-set with their events, are pkg/lifecycle's) and owns the tracker's bookkeeping columns
// (next_track_at, track_failures, tracking_unknown_since) and dps_inbox_messages. Its consumer of
// dps.export.sent is a handler run by pkg/runner.
//
// It must not send files, create exports, or publish a lifecycle event except through the outbox; it
// never calls MESH when the feature gate is off.
package tracking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/runner"
)

// Defaults for the Config fields that have no environment variable.
const (
	DefaultGateWarnInterval = 5 * time.Minute
	DefaultShutdownGrace    = 30 * time.Second
	// maxHandshakeRetry caps the first retry delay after a failed handshake.
	maxHandshakeRetry = time.Minute
)

// Config wires a Tracker. The durations and the batch size come from the TRACKER_* settings.
type Config struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	// MESH acts as our mailbox. It may be nil when JobsEnabled is false, and is never called then.
	MESH *mesh.Client
	// JobsEnabled is MESH_JOBS_ENABLED: false means no MESH requests at all.
	JobsEnabled bool

	PollInterval      time.Duration
	HandshakeInterval time.Duration
	BatchSize         int
	MaxBackoff        time.Duration
	UnknownTimeout    time.Duration
	// InboxInterval is how often our MESH inbox is read (TRACKER_INBOX_INTERVAL); zero means
	// DefaultInboxInterval.
	InboxInterval time.Duration
	// Mailbox is our mailbox id, named in inbox dead letters.
	Mailbox string
	// AckSenders are the mailboxes acknowledgement files may come from (upper case); empty accepts any.
	AckSenders []string
	// BusAckWait is how long a BusAck waits for its file's InfAck (default DefaultBusAckWait).
	BusAckWait time.Duration

	// HandshakeRetry is the delay before the first retry of a failed handshake; it doubles on each
	// further failure up to HandshakeInterval. Default: PollInterval, at most a minute.
	HandshakeRetry time.Duration
	// GateWarnInterval is how often the WARN line about the closed gate repeats (default 5 minutes).
	GateWarnInterval time.Duration
	// ShutdownGrace bounds how long the batch in hand may run on once Run's context ends.
	ShutdownGrace time.Duration

	Logger *slog.Logger
	// Metrics; nil means no metrics (a private set nobody scrapes).
	Metrics *Metrics
}

// Tracker polls MESH tracking for accepted exports and keeps the mailbox handshake going. Several
// Trackers (replicas) may share one database: they split the due exports with FOR UPDATE SKIP LOCKED.
type Tracker struct {
	cfg  Config
	log  *slog.Logger
	m    *Metrics
	wake chan struct{}
	sent *runner.Runner // dps.export.sent

	mu            sync.Mutex
	handshakeDone bool
	handshakeErr  error
}

// New checks cfg and returns a Tracker. It contacts nothing.
func New(cfg Config) (*Tracker, error) {
	if cfg.Pool == nil {
		return nil, errors.New("tracking: a Postgres pool is required")
	}
	if cfg.JS == nil {
		return nil, errors.New("tracking: a JetStream context is required")
	}
	if cfg.JobsEnabled && cfg.MESH == nil {
		return nil, errors.New("tracking: a MESH client is required when MESH jobs are enabled")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"poll interval", cfg.PollInterval},
		{"handshake interval", cfg.HandshakeInterval},
		{"max backoff", cfg.MaxBackoff},
		{"unknown timeout", cfg.UnknownTimeout},
	} {
		if d.v <= 0 {
			return nil, fmt.Errorf("tracking: %s must be positive", d.name)
		}
	}
	if cfg.BatchSize < 1 {
		return nil, errors.New("tracking: batch size must be at least 1")
	}
	if cfg.HandshakeRetry <= 0 {
		cfg.HandshakeRetry = min(cfg.PollInterval, maxHandshakeRetry)
	}
	switch {
	case cfg.InboxInterval == 0:
		cfg.InboxInterval = DefaultInboxInterval
	case cfg.InboxInterval < 0:
		return nil, errors.New("tracking: inbox interval must be positive")
	}
	if cfg.BusAckWait <= 0 {
		cfg.BusAckWait = DefaultBusAckWait
	}
	if cfg.GateWarnInterval <= 0 {
		cfg.GateWarnInterval = DefaultGateWarnInterval
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics(nil, nil, log)
	}
	t := &Tracker{cfg: cfg, log: log, m: m, wake: make(chan struct{}, 1)}
	sent, err := t.newSentRunner()
	if err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	t.sent = sent
	return t, nil
}

// Run tracks until ctx ends: the dps.export.sent consumer, the handshake loop, the inbox loop and the
// poll loop. When
// ctx ends it stops polling, lets the batch in hand finish (within ShutdownGrace) and returns nil.
// With the gate closed it only consumes dps.export.sent (a database update) and repeats a WARN line.
func (t *Tracker) Run(ctx context.Context) error {
	// The consumer failing to open stops the loops too; its message handling drains on its own grace.
	partsCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var consumeErr error
	wg.Go(func() {
		if consumeErr = t.sent.Run(partsCtx); consumeErr != nil {
			stop()
		}
	})
	if t.cfg.JobsEnabled {
		wg.Go(func() { t.handshakeLoop(partsCtx) })
		wg.Go(func() { t.inboxLoop(partsCtx) })
		t.pollLoop(partsCtx)
	} else {
		t.warnGateClosed(partsCtx)
	}
	stop()
	wg.Wait()
	if consumeErr != nil && ctx.Err() == nil {
		return consumeErr
	}
	return nil
}

// warnGateClosed says, at start and every GateWarnInterval until ctx ends, that nothing is tracked.
func (t *Tracker) warnGateClosed(ctx context.Context) {
	tick := time.NewTicker(t.cfg.GateWarnInterval)
	defer tick.Stop()
	for {
		t.log.Warn("MESH_JOBS_ENABLED is false: exports are not tracked and the mailbox is not validated; no MESH requests are made")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Wake makes the poll loop look for due exports now instead of at the next interval.
func (t *Tracker) Wake() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// pollLoop runs TrackDue every PollInterval, at once when woken, and again straight away while full
// batches keep coming.
func (t *Tracker) pollLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-t.wake:
		}
		res, err := t.runBatch(ctx)
		if err != nil {
			t.log.Error("track accepted exports", slog.Any("error", err))
		}
		next := t.cfg.PollInterval
		if err == nil && res.Selected == t.cfg.BatchSize && !res.Stopped {
			next = 0
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// runBatch runs one TrackDue that is not interrupted by ctx ending: SIGTERM stops the loop, but the
// batch in hand finishes, bounded by ShutdownGrace, so no MESH answer is thrown away half-applied.
func (t *Tracker) runBatch(ctx context.Context) (BatchResult, error) {
	batchCtx, cancel := t.graced(ctx)
	defer cancel()
	return t.TrackDue(batchCtx)
}

// graced returns a context that outlives ctx by ShutdownGrace: work started before a shutdown may
// finish, but not forever. cancel releases it.
func (t *Tracker) graced(ctx context.Context) (context.Context, context.CancelFunc) {
	gracedCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		grace := time.NewTimer(t.cfg.ShutdownGrace)
		defer grace.Stop()
		select {
		case <-grace.C:
			cancel()
		case <-gracedCtx.Done():
		}
	})
	return gracedCtx, func() { stop(); cancel() }
}

// MESHCheck is the /healthz probe for MESH: the result of the last handshake, "disabled" with the gate
// closed.
func (t *Tracker) MESHCheck() health.Check {
	return health.Check{Name: "mesh", Probe: func(context.Context) error {
		if !t.cfg.JobsEnabled {
			return health.ErrDisabled
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.handshakeDone {
			return errors.New("no mailbox handshake yet")
		}
		if t.handshakeErr != nil {
			return fmt.Errorf("last mailbox handshake failed: %w", t.handshakeErr)
		}
		return nil
	}}
}

// Metrics returns the tracker's metrics.
func (t *Tracker) Metrics() *Metrics { return t.m }
