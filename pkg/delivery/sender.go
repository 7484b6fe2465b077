package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/runner"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Config wires a Sender: its connections, then the settings. Zero values take the defaults given.
type Config struct {
	Pool *pgxpool.Pool
	JS   jetstream.JetStream
	// Objects is the bucket the files are read from (bus.ExportStore).
	Objects jetstream.ObjectStore
	// MESH sends the files. It may be nil only when JobsEnabled is false.
	MESH *mesh.Client
	// Logger; nil logs nothing. Metrics; nil means no metrics (a private set nobody scrapes).
	Logger  *slog.Logger
	Metrics *Metrics

	// DPSMailbox and WorkflowID address every file (MESH_DPS_MAILBOX, MESH_DPS_WORKFLOW_ID) unless its
	// programme has a route of its own in Routes (MESH_ROUTES).
	DPSMailbox, WorkflowID string
	Routes                 map[string]Route
	// JobsEnabled is the MESH feature gate (MESH_JOBS_ENABLED). Off: Run consumes nothing.
	JobsEnabled bool
	// Concurrency is how many batches one sender handles at once; default 1. Replicas add more.
	Concurrency int
	// ShutdownGrace is how long an in-flight send may go on after Run's context ends before it is
	// cancelled (SENDER_SHUTDOWN_GRACE); default the runner's, 30s.
	ShutdownGrace time.Duration
	// RetryDelays are the nak delays after a transient failure, by delivery count (the last repeats);
	// default 1s, 2s, 5s, 10s, 30s, 60s. MESH's Retry-After wins when longer.
	RetryDelays []time.Duration
	// LockedDelay is the nak delay when another sender holds the export; default 2s.
	LockedDelay time.Duration
	// RereadDelays are the pauses before each new read of a file whose read failed the Object Store's
	// own digest check or found no object (one more read per delay); default 500ms, 2s, 5s. Only when
	// every read fails so is the file corrupt or missing.
	RereadDelays []time.Duration
	// FetchWait bounds one wait for a batch, and so how long a shutdown waits for a fetch; default the
	// runner's, 2s.
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
	if len(c.RetryDelays) == 0 {
		c.RetryDelays = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}
	}
	if c.LockedDelay <= 0 {
		c.LockedDelay = 2 * time.Second
	}
	if len(c.RereadDelays) == 0 {
		c.RereadDelays = []time.Duration{500 * time.Millisecond, 2 * time.Second, 5 * time.Second}
	}
	if c.GateWarnInterval <= 0 {
		c.GateWarnInterval = 5 * time.Minute
	}
	if c.Consumer == "" {
		c.Consumer = bus.ConsumerSender
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Sender delivers batches from the shared durable consumer to MESH. Any number of Senders, in one
// process or many, may share the consumer. It is safe for concurrent use.
type Sender struct {
	cfg        Config
	pool       *pgxpool.Pool
	mesh       *mesh.Client
	objects    jetstream.ObjectStore
	log        *slog.Logger
	metrics    *Metrics
	meshHealth meshHealth
	runner     *runner.Runner
}

// Route is a programme's own destination (MESH_ROUTES).
type Route struct {
	Mailbox, WorkflowID string
}

// destination is where a programme's files go: its route, else the default.
func (c Config) destination(programme string) Route {
	if r, ok := c.Routes[programme]; ok {
		return r
	}
	return Route{Mailbox: c.DPSMailbox, WorkflowID: c.WorkflowID}
}

// routeList is Routes as PROGRAMME=MAILBOX:WORKFLOW, sorted, for the log.
func (c Config) routeList() []string {
	out := make([]string, 0, len(c.Routes))
	for p, r := range c.Routes {
		out = append(out, p+"="+r.Mailbox+":"+r.WorkflowID)
	}
	sort.Strings(out)
	return out
}

// New checks cfg and returns a Sender. It contacts nothing.
func New(cfg Config) (*Sender, error) {
	cfg.applyDefaults()
	switch {
	case cfg.Pool == nil || cfg.JS == nil || cfg.Objects == nil:
		return nil, errors.New("sender: a Postgres pool, a JetStream context and the export bucket are required")
	case cfg.JobsEnabled && cfg.MESH == nil:
		return nil, errors.New("sender: a MESH client is required when MESH jobs are enabled")
	case cfg.JobsEnabled && (cfg.DPSMailbox == "" || cfg.WorkflowID == "") && len(cfg.Routes) == 0:
		return nil, errors.New("sender: the DPS mailbox and workflow id are required when MESH jobs are enabled")
	}
	for p, r := range cfg.Routes {
		if r.Mailbox == "" || r.WorkflowID == "" {
			return nil, fmt.Errorf("sender: the route of %s needs a mailbox and a workflow id", p)
		}
	}
	s := &Sender{cfg: cfg, pool: cfg.Pool, mesh: cfg.MESH, objects: cfg.Objects, log: cfg.Logger, metrics: cfg.Metrics}
	r, err := runner.New(runner.Config{
		JS: cfg.JS, Stream: bus.StreamBatches, Consumer: cfg.Consumer, Stage: bus.StageSender,
		Handler:     s.sendBatch,
		Concurrency: cfg.Concurrency,
		Backoff:     runner.Steps(cfg.RetryDelays...),
		FetchWait:   cfg.FetchWait,
		Grace:       cfg.ShutdownGrace,
		Logger:      cfg.Logger,
		Observe:     s.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	s.runner = r
	return s, nil
}

// Run consumes batches until ctx ends, then stops fetching and lets the sends in flight finish
// within the shutdown grace; a send still going then is cancelled. Its attempt is recorded, so the
// batch's next delivery asks MESH about it before sending again. With the gate off Run consumes
// nothing and says so now and every GateWarnInterval.
func (s *Sender) Run(ctx context.Context) error {
	if !s.cfg.JobsEnabled {
		return s.waitGateClosed(ctx)
	}
	if err := s.mesh.Handshake(ctx); err != nil {
		// Not fatal: MESH may be back by the first batch, and each batch retries on its own.
		s.log.Warn("MESH handshake failed at start", slog.String("error", err.Error()))
		s.recordMESHResult(err)
	} else {
		s.meshHealth.set(nil)
	}
	s.log.Info("sender consuming", slog.String("consumer", s.cfg.Consumer), slog.Int("concurrency", s.cfg.Concurrency),
		slog.String("mesh_to", s.cfg.DPSMailbox), slog.String("workflow_id", s.cfg.WorkflowID), slog.Any("routes", s.cfg.routeList()))
	if err := s.runner.Run(ctx); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	s.log.Info("sender stopped")
	return nil
}

// errLocked is why a batch is handed back while another sender holds its export.
var errLocked = errors.New("another sender holds the export")

// sendBatch is the handler of one delivery of a dps.export.ready batch: Deliver does the work, and its
// outcome says what becomes of the batch. ctx bounds the work, not the ack.
func (s *Sender) sendBatch(ctx context.Context, d runner.Delivery) runner.Outcome {
	s.metrics.Received.Inc()
	s.metrics.InFlight.Inc()
	defer s.metrics.InFlight.Dec()
	var ready bus.ExportReady
	if err := bus.Decode(d.Msg, &ready); err != nil {
		// Invalid now means invalid forever.
		return runner.DeadLetter("invalid", CodeInvalidBatch+": "+err.Error())
	}
	log := d.Log.With(slog.String("export_id", ready.ExportID))
	res := s.Deliver(ctx, Batch{Ready: ready, LastDelivery: d.Last, WaitForLock: d.Last, DeadLetter: deadLetterFor(d.Msg)})
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
	case AlreadySent:
		s.metrics.DuplicatesAvoided.Inc()
		log.Info("batch redelivered for an export already sent; acked without sending",
			slog.String("mesh_message_id", res.MessageID), slog.String("status", res.Status.String()))
	case AlreadyFailed:
		log.Info("batch redelivered for an export that already failed; acked")
	case Failed, Rejected:
		// The export is failed, or the batch rejected, and the dead letter enqueued in one transaction (see
		// Deliver): done.
		s.metrics.Failures.WithLabelValues(failureLabel(res.Code)).Inc()
	case Locked:
		s.metrics.Retries.WithLabelValues("locked").Inc()
		return runner.RetryAfter(s.cfg.LockedDelay, errLocked)
	default:
		if dbErr, permanent := store.IsPermanent(res.Err); permanent {
			// Postgres refuses what this batch leads to for good: retrying would only hold a slot.
			s.metrics.Failures.WithLabelValues("database").Inc()
			return runner.DeadLetter("database_refused", fmt.Sprintf(
				"Postgres refused the batch's work for good (SQLSTATE %s): %v", dbErr.SQLState, res.Err))
		}
		s.metrics.Retries.WithLabelValues("transient").Inc()
		var me *mesh.Error
		if errors.As(res.Err, &me) {
			return runner.Retry(res.Err).NotBefore(me.RetryAfter)
		}
		return runner.Retry(res.Err)
	}
	return runner.Done()
}

// observe counts the batches the runner dead-lettered itself: invalid ones, and ones still failing
// transiently on their last delivery.
func (s *Sender) observe(_ runner.Delivery, st runner.Settlement) {
	if st.Action != runner.DeadLettered {
		return
	}
	switch st.Outcome.Label {
	case runner.LabelRetriesExhausted:
		s.metrics.Failures.WithLabelValues("exhausted").Inc()
	default:
		s.metrics.Failures.WithLabelValues("invalid").Inc()
	}
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
	case CodeBatchMismatch:
		return "mismatch"
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
