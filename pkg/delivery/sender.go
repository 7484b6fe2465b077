package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// Config is what a Sender needs besides its connections.
type Config struct {
	// DPSMailbox and WorkflowID address every file (MESH_DPS_MAILBOX, MESH_DPS_WORKFLOW_ID).
	DPSMailbox, WorkflowID string
	// JobsEnabled is the MESH feature gate (MESH_JOBS_ENABLED). Off: Run consumes nothing.
	JobsEnabled bool
	// Concurrency is how many batches one sender handles at once; default 1. Replicas add more.
	Concurrency int
	// ShutdownGrace is how long an in-flight send may go on after Run's context ends before it is
	// cancelled (SENDER_SHUTDOWN_GRACE); default 30s.
	ShutdownGrace time.Duration
	// RetryDelays are the nak delays after a transient failure, by delivery count (the last repeats);
	// default 1s, 2s, 5s, 10s, 30s, 60s. MESH's Retry-After wins when longer.
	RetryDelays []time.Duration
	// LockedDelay is the nak delay when another sender holds the export; default 2s.
	LockedDelay time.Duration
	// FetchWait bounds one wait for a batch, and so how long a shutdown waits for a fetch; default 2s.
	FetchWait time.Duration
	// GateWarnInterval is how often a closed gate is reported; default 5m.
	GateWarnInterval time.Duration
	// Consumer is the durable consumer's name; default bus.ConsumerSender.
	Consumer string
}

func (c *Config) applyDefaults() {
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if len(c.RetryDelays) == 0 {
		c.RetryDelays = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}
	}
	if c.LockedDelay <= 0 {
		c.LockedDelay = 2 * time.Second
	}
	if c.FetchWait <= 0 {
		c.FetchWait = 2 * time.Second
	}
	if c.GateWarnInterval <= 0 {
		c.GateWarnInterval = 5 * time.Minute
	}
	if c.Consumer == "" {
		c.Consumer = bus.ConsumerSender
	}
}

// Sender delivers batches from the shared durable consumer to MESH. Any number of Senders, in one
// process or many, may share the consumer. It is safe for concurrent use.
type Sender struct {
	cfg        Config
	pool       *pgxpool.Pool
	js         jetstream.JetStream
	mesh       *mesh.Client
	objects    jetstream.ObjectStore
	log        *slog.Logger
	metrics    *Metrics
	meshHealth meshHealth

	consumerMu sync.Mutex
	consumer   consumerLimits
}

// consumerLimits are the consumer settings the sender adapts to, refreshed while it runs.
type consumerLimits struct {
	maxDeliver int
	heartbeat  time.Duration
	fetchedAt  time.Time
}

// New builds a Sender. client may be nil only when the gate is off. metrics may be nil.
func New(ctx context.Context, cfg Config, pool *pgxpool.Pool, js jetstream.JetStream, client *mesh.Client, log *slog.Logger, metrics *Metrics) (*Sender, error) {
	cfg.applyDefaults()
	if cfg.JobsEnabled {
		if client == nil {
			return nil, errors.New("sender: a MESH client is required when MESH jobs are enabled")
		}
		if cfg.DPSMailbox == "" || cfg.WorkflowID == "" {
			return nil, errors.New("sender: the DPS mailbox and workflow id are required when MESH jobs are enabled")
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	objects, err := bus.ExportStore(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	return &Sender{cfg: cfg, pool: pool, js: js, mesh: client, objects: objects, log: log, metrics: metrics}, nil
}

// Run consumes batches until ctx ends, then stops fetching and lets the sends in flight finish
// within the shutdown grace; a send still going then is cancelled. Its attempt is recorded, so the
// batch's next delivery asks MESH about it before sending again. With the gate off Run consumes
// nothing and says so now and every GateWarnInterval.
func (s *Sender) Run(ctx context.Context) error {
	if !s.cfg.JobsEnabled {
		return s.waitGateClosed(ctx)
	}
	cons, err := s.js.Consumer(ctx, bus.StreamBatches, s.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("sender: open consumer %s: %w", s.cfg.Consumer, err)
	}
	if err := s.refreshConsumerLimits(ctx, cons, true); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	if err := s.mesh.Handshake(ctx); err != nil {
		// Not fatal: MESH may be back by the first batch, and each batch retries on its own.
		s.log.Warn("MESH handshake failed at start", slog.String("error", err.Error()))
		s.recordMESHResult(err)
	} else {
		s.meshHealth.set(nil)
	}
	s.log.Info("sender consuming", slog.String("consumer", s.cfg.Consumer), slog.Int("concurrency", s.cfg.Concurrency),
		slog.String("mesh_to", s.cfg.DPSMailbox), slog.String("workflow_id", s.cfg.WorkflowID))

	// In-flight sends outlive ctx by at most the grace period.
	sendCtx, cancelSends := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSends()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(s.cfg.ShutdownGrace, cancelSends)
		context.AfterFunc(sendCtx, func() { t.Stop() })
	})
	defer stopGrace()

	var wg sync.WaitGroup
	for range s.cfg.Concurrency {
		wg.Go(func() { s.consume(ctx, sendCtx, cons) })
	}
	wg.Wait()
	s.log.Info("sender stopped")
	return nil
}

// consume fetches one batch at a time, so that nothing waits in this replica's buffer while others
// are idle, and a shutdown leaves no batch fetched but unhandled.
func (s *Sender) consume(ctx, sendCtx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		_ = s.refreshConsumerLimits(ctx, cons, false)
		msg, err := cons.Next(jetstream.FetchMaxWait(s.cfg.FetchWait))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("fetch from the sender consumer failed; retrying", slog.String("error", err.Error()))
			sleep(ctx, time.Second)
			continue
		}
		s.HandleMsg(sendCtx, msg)
	}
}

// refreshConsumerLimits reads MaxDeliver and the ack wait (for the heartbeat) from the server at most
// every 15 s, so a consumer updated while we run is followed.
func (s *Sender) refreshConsumerLimits(ctx context.Context, cons jetstream.Consumer, force bool) error {
	s.consumerMu.Lock()
	stale := force || time.Since(s.consumer.fetchedAt) > 15*time.Second
	s.consumerMu.Unlock()
	if !stale {
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	ackWait := info.Config.AckWait
	for _, d := range info.Config.BackOff {
		ackWait = min(ackWait, d)
	}
	hb := min(max(ackWait/3, 50*time.Millisecond), 10*time.Second)
	s.consumerMu.Lock()
	s.consumer = consumerLimits{maxDeliver: info.Config.MaxDeliver, heartbeat: hb, fetchedAt: time.Now()}
	s.consumerMu.Unlock()
	return nil
}

func (s *Sender) limits() consumerLimits {
	s.consumerMu.Lock()
	defer s.consumerMu.Unlock()
	l := s.consumer
	if l.heartbeat == 0 {
		l.heartbeat = 10 * time.Second
	}
	return l
}

// HandleMsg handles one delivery of a batch and acks or naks it. ctx bounds the work, not the ack.
func (s *Sender) HandleMsg(ctx context.Context, msg jetstream.Msg) {
	s.metrics.Received.Inc()
	s.metrics.InFlight.Inc()
	defer s.metrics.InFlight.Dec()
	ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()

	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("batch without JetStream metadata; terminated", slog.String("error", err.Error()))
		_ = msg.Term()
		return
	}
	log := s.log.With(slog.Uint64("stream_seq", md.Sequence.Stream), slog.Uint64("delivery", md.NumDelivered))

	var ready bus.ExportReady
	if err := bus.Decode(msg, &ready); err != nil {
		// Invalid now means invalid forever: dead-letter it and move on.
		if dlErr := bus.DeadLetter(ackCtx, s.js, bus.StageSender, msg, CodeInvalidBatch+": "+err.Error()); dlErr != nil {
			log.Warn("could not dead-letter an invalid batch; it will come back", slog.String("error", dlErr.Error()))
			_ = msg.NakWithDelay(s.retryDelay(md.NumDelivered, nil))
			return
		}
		s.metrics.Failures.WithLabelValues("invalid").Inc()
		log.Error("invalid batch dead-lettered", slog.String("error", err.Error()))
		s.ack(ackCtx, msg, log)
		return
	}
	log = log.With(slog.String("export_id", ready.ExportID))

	limits := s.limits()
	last := limits.maxDeliver > 0 && md.NumDelivered >= uint64(limits.maxDeliver)

	// Heartbeats keep the batch ours for as long as the send takes, however short the ack wait.
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	var hbDone sync.WaitGroup
	hbDone.Go(func() {
		t := time.NewTicker(limits.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	})
	res := s.Deliver(ctx, Batch{
		Ready:        ready,
		LastDelivery: last,
		WaitForLock:  last,
		DeadLetter:   deadLetterFor(msg),
	})
	stopHeartbeat()
	hbDone.Wait()

	switch res.Outcome {
	case Sent, Adopted:
		how := "new"
		if res.Outcome == Adopted {
			how = "adopted"
		} else {
			s.metrics.SendDuration.Observe(res.SendDuration.Seconds())
			s.metrics.BytesSent.Add(float64(res.Bytes))
		}
		s.metrics.Sent.WithLabelValues(how).Inc()
		s.ack(ackCtx, msg, log)
	case AlreadySent:
		s.metrics.DuplicatesAvoided.Inc()
		log.Info("batch redelivered for an export already sent; acked without sending",
			slog.String("mesh_message_id", res.MessageID), slog.String("status", res.Status))
		s.ack(ackCtx, msg, log)
	case AlreadyFailed:
		log.Info("batch redelivered for an export that already failed; acked")
		s.ack(ackCtx, msg, log)
	case Failed:
		s.metrics.Failures.WithLabelValues(failureLabel(res.Code)).Inc()
		s.ack(ackCtx, msg, log)
	case Locked:
		s.metrics.Retries.WithLabelValues("locked").Inc()
		log.Info("another sender holds the export; batch handed back", slog.Duration("delay", s.cfg.LockedDelay))
		_ = msg.NakWithDelay(s.cfg.LockedDelay)
	case Retry:
		s.metrics.Retries.WithLabelValues("transient").Inc()
		delay := s.retryDelay(md.NumDelivered, res.Err)
		log.Warn("transient failure; batch will be redelivered", slog.String("error", res.Err.Error()),
			slog.Duration("delay", delay))
		_ = msg.NakWithDelay(delay)
	}
}

// ack is a double ack: the batch is only done once the server says so. If that fails the batch comes
// back, and finds its export already accepted.
func (s *Sender) ack(ctx context.Context, msg jetstream.Msg, log *slog.Logger) {
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack failed; the batch will be redelivered and found done", slog.String("error", err.Error()))
	}
}

func (s *Sender) retryDelay(delivered uint64, err error) time.Duration {
	i := min(int(max(delivered, 1))-1, len(s.cfg.RetryDelays)-1)
	d := s.cfg.RetryDelays[i]
	var me *mesh.Error
	if errors.As(err, &me) && me.RetryAfter > d {
		d = me.RetryAfter
	}
	return d
}

func failureLabel(code string) string {
	switch code {
	case CodeObjectMissing, CodeObjectCorrupt:
		return "object"
	case CodeExhausted:
		return "exhausted"
	case CodeNoExport:
		return "missing_export"
	case CodeInvalidBatch:
		return "invalid"
	}
	return "mesh"
}

// deadLetterFor shapes the batch's dead letter with bus.NewDeadLetter, so that it can be enqueued in
// the transaction that marks the export failed instead of published beside it.
func deadLetterFor(msg jetstream.Msg) func(reason string) (string, string, any, error) {
	return func(reason string) (string, string, any, error) {
		dl, err := bus.NewDeadLetter(bus.StageSender, msg, reason)
		if err != nil {
			return "", "", nil, err
		}
		return bus.DeadLetterSubject(bus.StageSender), dl.MsgID(), dl, nil
	}
}

// waitGateClosed is Run with MESH_JOBS_ENABLED false: loud, periodic, and consuming nothing.
func (s *Sender) waitGateClosed(ctx context.Context) error {
	warn := func() {
		s.metrics.GateClosedWarnings.Inc()
		s.log.Warn("MESH jobs are disabled (MESH_JOBS_ENABLED=false): the sender is NOT sending; batches wait in the stream",
			slog.String("stream", bus.StreamBatches), slog.String("consumer", s.cfg.Consumer))
	}
	warn()
	t := time.NewTicker(s.cfg.GateWarnInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			warn()
		}
	}
}

// HealthCheck is the MESH probe for /healthz: the last handshake or send result, "disabled" when the
// gate is off.
func (s *Sender) HealthCheck() health.Check {
	return health.Check{Name: "mesh", Probe: func(context.Context) error {
		if !s.cfg.JobsEnabled {
			return health.ErrDisabled
		}
		return s.meshHealth.get()
	}}
}

// meshHealth remembers the last result that says whether MESH is usable.
type meshHealth struct {
	mu  sync.Mutex
	err error
	at  time.Time
}

func (h *meshHealth) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err, h.at = err, time.Now()
}

func (h *meshHealth) get() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return fmt.Errorf("last MESH call at %s failed: %w", h.at.UTC().Format(time.RFC3339), h.err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
