// Package runner runs every JetStream consumer of the pipeline, in the shape of Watermill's router: a
// Handler gets one delivery and returns an Outcome (done, retry, dead letter, terminal); the Runner
// owns everything else: fetching from the durable consumer, InProgress heartbeats while the handler
// works, the backoff of retries, dead-lettering (one record shape, bus.DeadLetter) and the ack that
// follows it, the last delivery, concurrency, and the drain within a grace period on shutdown.
// Cross-cutting policies are Middleware.
//
// A new consumer is a Handler and a Config; it must not ack, nak, heartbeat or dead-letter by itself.
// The package knows JetStream and pkg/bus only: nothing of Postgres, MESH or what a subject means.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

// Delivery is one delivery of a message to a handler.
type Delivery struct {
	Msg      jetstream.Msg
	Metadata *jetstream.MsgMetadata
	// Last says the server will not deliver the message again (the consumer's MaxDeliver is reached):
	// a retry now becomes a dead letter.
	Last bool
	// Log names the subject, stream sequence and delivery number.
	Log *slog.Logger
}

// Number is the delivery's number, 1 for the first.
func (d Delivery) Number() uint64 { return d.Metadata.NumDelivered }

// Handler handles one delivery and says what happened. ctx ends when the shutdown grace runs out; the
// handler must not settle the message itself.
type Handler func(ctx context.Context, d Delivery) Outcome

// Middleware wraps a Handler with a policy, as Watermill's middleware does.
type Middleware func(Handler) Handler

// Config is a Runner: which consumer, which handler, and the policies. Zero durations take defaults.
type Config struct {
	JS jetstream.JetStream
	// Stream and Consumer name the durable pull consumer.
	Stream, Consumer string
	// Stage names the dead letters: dps.deadletter.<Stage>.
	Stage   string
	Handler Handler
	// Middleware wraps Handler, the first outermost.
	Middleware []Middleware
	// Concurrency is how many deliveries are handled at once; default 1. Each worker fetches one message
	// at a time, so nothing waits in this process's buffer while another replica is idle, and a
	// shutdown leaves no message fetched but unhandled.
	Concurrency int
	// Heartbeat is how often a delivery being handled is reported in progress. Default: a third of the
	// consumer's shortest ack wait (AckWait or BackOff[0]), between 50 ms and 10 s.
	Heartbeat time.Duration
	// Backoff is the nak delay of a retry by delivery number; default Exponential(1s, 1m).
	Backoff Backoff
	// MaxDeliver is the consumer's delivery limit; 0 reads it from the consumer (and follows changes).
	// A Runner used only through Handle, never Run, knows no limit unless this is set.
	MaxDeliver int
	// FetchWait bounds one wait for a message, and so how long a shutdown waits for a fetch; default 2s.
	FetchWait time.Duration
	// Grace is how long the deliveries in hand may run on after Run's context ends; then their context
	// is cancelled. Default 30s.
	Grace time.Duration
	// AckTimeout bounds each ack, nak and dead-letter publish; default 10s.
	AckTimeout time.Duration
	// Logger; nil logs nothing.
	Logger *slog.Logger
	// Observe, when set, is told how each delivery was settled (for metrics).
	Observe func(Delivery, Settlement)
}

// Runner runs one handler over one durable consumer. It is safe for concurrent use.
type Runner struct {
	cfg     Config
	handler Handler
	log     *slog.Logger

	mu     sync.Mutex
	limits consumerLimits
}

// consumerLimits are the consumer settings the runner adapts to, refreshed while it runs.
type consumerLimits struct {
	maxDeliver int
	heartbeat  time.Duration
	readAt     time.Time
}

// limitsRefresh is how often Run re-reads the consumer's settings, so that an update is followed.
const limitsRefresh = 15 * time.Second

// New checks cfg and returns a Runner. It contacts nothing.
func New(cfg Config) (*Runner, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("runner: a JetStream context is required")
	case cfg.Stream == "" || cfg.Consumer == "":
		return nil, errors.New("runner: the stream and consumer are required")
	case cfg.Stage == "":
		return nil, errors.New("runner: the dead-letter stage is required")
	case cfg.Handler == nil:
		return nil, errors.New("runner: a handler is required")
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	if cfg.Backoff == nil {
		cfg.Backoff = Exponential(time.Second, time.Minute)
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 2 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := cfg.Handler
	for i := len(cfg.Middleware) - 1; i >= 0; i-- {
		h = cfg.Middleware[i](h)
	}
	r := &Runner{cfg: cfg, handler: recoverPanics(h), log: log.With(slog.String("consumer", cfg.Consumer))}
	r.limits = consumerLimits{maxDeliver: cfg.MaxDeliver, heartbeat: cfg.Heartbeat}
	if r.limits.heartbeat <= 0 {
		r.limits.heartbeat = 10 * time.Second
	}
	return r, nil
}

// Run consumes until ctx ends, then stops fetching, lets the deliveries in hand finish within the grace
// period and returns nil. It returns an error only when the consumer cannot be opened for good (a
// permanent JetStream error); one that is not there yet or has no leader is waited for. Fetch errors
// (a NATS restart, a leader election) are logged and retried: a transient fault never ends Run.
func (r *Runner) Run(ctx context.Context) error {
	// The consumer may be between leaders (a node lost, a cold cluster electing): wait for it, with a
	// WARN every few seconds, rather than exit. Only a refusal that cannot heal ends Run early.
	var cons jetstream.Consumer
	err := bus.Retry{Log: r.log}.Do(ctx, "consumer "+r.cfg.Consumer+" on "+r.cfg.Stream, func(actx context.Context) (err error) {
		if cons, err = r.cfg.JS.Consumer(actx, r.cfg.Stream, r.cfg.Consumer); err != nil {
			return err
		}
		return r.refreshLimits(actx, cons, true)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("open consumer %s on %s: %w", r.cfg.Consumer, r.cfg.Stream, err)
	}

	// Deliveries in hand outlive ctx by at most the grace period.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.Grace, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stopGrace()

	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() { r.fetchLoop(ctx, workCtx, cons) })
	}
	wg.Wait()
	return nil
}

// fetchLoop fetches one message at a time until ctx ends and handles each with workCtx.
func (r *Runner) fetchLoop(ctx, workCtx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		if err := r.refreshLimits(ctx, cons, false); err != nil && ctx.Err() == nil {
			r.log.Warn("could not re-read the consumer's settings; keeping the last ones", slog.Any("error", err))
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(r.cfg.FetchWait))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("fetch failed; retrying", slog.Any("error", err))
			sleep(ctx, time.Second)
			continue
		}
		r.Handle(workCtx, msg)
	}
}

// refreshLimits reads MaxDeliver and the ack wait from the server when forced or stale.
func (r *Runner) refreshLimits(ctx context.Context, cons jetstream.Consumer, force bool) error {
	r.mu.Lock()
	stale := force || time.Since(r.limits.readAt) > limitsRefresh
	r.mu.Unlock()
	if !stale {
		return nil
	}
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return fmt.Errorf("consumer %s info: %w", r.cfg.Consumer, err)
	}
	l := consumerLimits{maxDeliver: r.cfg.MaxDeliver, heartbeat: r.cfg.Heartbeat, readAt: time.Now()}
	if l.maxDeliver == 0 {
		l.maxDeliver = info.Config.MaxDeliver
	}
	if l.heartbeat <= 0 {
		ackWait := info.Config.AckWait
		for _, d := range info.Config.BackOff {
			ackWait = min(ackWait, d)
		}
		l.heartbeat = min(max(ackWait/3, 50*time.Millisecond), 10*time.Second)
	}
	r.mu.Lock()
	r.limits = l
	r.mu.Unlock()
	return nil
}

func (r *Runner) currentLimits() consumerLimits {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limits
}

// Handle runs one delivery through the handler and settles it: heartbeats while the handler works,
// then ack, nak with backoff, dead letter then ack, or term, as its outcome says. ctx bounds the
// handler, not the settling. Run calls it for every message; tests and replays may call it directly.
func (r *Runner) Handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery at all: there is nothing to redeliver or dead-letter by sequence.
		r.log.Error("message without JetStream metadata; terminated", slog.String("subject", msg.Subject()), slog.Any("error", err))
		_ = msg.Term()
		return
	}
	limits := r.currentLimits()
	d := Delivery{
		Msg:      msg,
		Metadata: md,
		Last:     limits.maxDeliver > 0 && md.NumDelivered >= uint64(limits.maxDeliver),
		Log: r.log.With(slog.String("subject", msg.Subject()), slog.Uint64("stream_seq", md.Sequence.Stream),
			slog.Uint64("delivery", md.NumDelivered)),
	}

	stop := heartbeat(ctx, msg, limits.heartbeat)
	o := r.handler(ctx, d)
	stop()

	// The settling gets its own deadline, started now: however long the work took, and even when the
	// grace period cancelled ctx, the work done is acknowledged rather than redelivered.
	ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.AckTimeout)
	defer cancel()
	s := r.settle(ackCtx, d, o)
	if r.cfg.Observe != nil {
		r.cfg.Observe(d, s)
	}
}

// settle does what o says with d's message and reports what was done.
func (r *Runner) settle(ctx context.Context, d Delivery, o Outcome) Settlement {
	log := d.Log
	if o.Kind == KindRetry && d.Last {
		// The server would never deliver it again: without a dead letter it would stop silently.
		o = Outcome{Kind: KindDeadLetter, Label: LabelRetriesExhausted, Err: o.Err, Reason: fmt.Sprintf(
			"gave up after %d deliveries; the message stays in %s for replay: %v", d.Number(), d.Metadata.Stream, o.Err)}
	}
	switch o.Kind {
	case KindRetry:
		delay := r.retryDelay(d, o)
		log.Warn("will retry", slog.Any("error", o.Err), slog.Duration("retry_in", delay))
		r.nak(d, delay)
		return Settlement{Action: Naked, Outcome: o, Delay: delay}
	case KindDeadLetter:
		if err := bus.DeadLetter(ctx, r.cfg.JS, r.cfg.Stage, d.Msg, o.Reason); err != nil {
			delay := r.retryDelay(d, Outcome{})
			log.Warn("could not dead-letter the message; it will come back", slog.String("kind", o.Label),
				slog.Any("error", err), slog.Duration("retry_in", delay))
			r.nak(d, delay)
			return Settlement{Action: Naked, Outcome: o, Delay: delay, Err: err}
		}
		log.Warn("dead-lettered", slog.String("kind", o.Label), slog.String("reason", o.Reason))
		// The dead letter is stored; only now is the original acknowledged. If this ack is lost, the
		// redelivery is dead-lettered again under the same Nats-Msg-Id, which the stream drops.
		r.ack(ctx, d)
		return Settlement{Action: DeadLettered, Outcome: o}
	case KindTerminal:
		log.Error("terminated; it will not be delivered again", slog.String("reason", o.Reason))
		if err := d.Msg.TermWithReason(o.Reason); err != nil {
			log.Warn("term failed; the message will be redelivered", slog.Any("error", err))
		}
		return Settlement{Action: Terminated, Outcome: o}
	default:
		r.ack(ctx, d)
		return Settlement{Action: Acked, Outcome: o}
	}
}

// ack is a double ack: the message is only done once the server says so. If that fails it comes back,
// and its handler finds the work done.
func (r *Runner) ack(ctx context.Context, d Delivery) {
	if err := d.Msg.DoubleAck(ctx); err != nil {
		d.Log.Warn("ack failed; the message will be redelivered and found done", slog.Any("error", err))
	}
}

func (r *Runner) nak(d Delivery, delay time.Duration) {
	if err := d.Msg.NakWithDelay(delay); err != nil {
		d.Log.Warn("nak failed; the message is redelivered after the ack wait", slog.Any("error", err))
	}
}

func (r *Runner) retryDelay(d Delivery, o Outcome) time.Duration {
	delay := o.Delay
	if delay <= 0 {
		delay = r.cfg.Backoff(d.Number())
	}
	return max(delay, o.MinDelay)
}

// heartbeat reports msg in progress every interval until the returned stop is called, so that a slow
// handler keeps its message however short the ack wait.
func heartbeat(ctx context.Context, msg jetstream.Msg, interval time.Duration) (stop func()) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// recoverPanics turns a handler's panic into a retry, so that one bad message cannot stop the
// consumer; on the last delivery it is dead-lettered with the panic as its reason.
func recoverPanics(h Handler) Handler {
	return func(ctx context.Context, d Delivery) (o Outcome) {
		defer func() {
			if p := recover(); p != nil {
				d.Log.Error("handler panicked", slog.Any("panic", p))
				o = Retry(fmt.Errorf("handler panicked: %v", p))
			}
		}()
		return h(ctx, d)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
