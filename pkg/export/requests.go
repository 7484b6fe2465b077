package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// RequestConsumer consumes dps.export.request through the durable consumer "producer" and runs each
// request through an Exporter. Replicas share the durable consumer, so each request is handled by one
// of them at a time; a redelivered request is idempotent (see the package documentation).
type RequestConsumer struct {
	exporter *Exporter
	js       jetstream.JetStream
	log      *slog.Logger
	metrics  *Metrics
	// Heartbeat is how often a request being exported is reported in progress, well inside the
	// consumer's AckWait (1 minute), so a long export is not redelivered to another replica.
	Heartbeat time.Duration
	// DrainTimeout bounds how long a request already being handled may run on after Run's context
	// ends; after it the export is rolled back and the request redelivered later.
	DrainTimeout time.Duration
	// RetryDelay is the delay before the first redelivery of a request that failed for a reason that
	// may pass (an outage); it doubles with each delivery up to MaxRetryDelay.
	RetryDelay, MaxRetryDelay time.Duration
	// MaxDeliver is the consumer's delivery limit; Run reads it from the consumer when it is 0. The last
	// delivery of a request that still fails is dead-lettered with its error instead of being naked
	// once more, because the server would never deliver it again: without this it would stop silently.
	MaxDeliver int
}

// NewRequestConsumer returns a consumer running requests through exporter.
func NewRequestConsumer(exporter *Exporter, js jetstream.JetStream, log *slog.Logger, metrics *Metrics) *RequestConsumer {
	return &RequestConsumer{exporter: exporter, js: js, log: log, metrics: metrics,
		Heartbeat: 10 * time.Second, DrainTimeout: 30 * time.Second, RetryDelay: 10 * time.Second, MaxRetryDelay: 10 * time.Minute}
}

// Run consumes until ctx ends, then lets the request in hand finish (within DrainTimeout) and returns.
// It returns an error only when the consumer cannot be opened.
func (c *RequestConsumer) Run(ctx context.Context) error {
	cons, err := c.js.Consumer(ctx, bus.StreamRequests, bus.ConsumerProducer)
	if err != nil {
		return fmt.Errorf("open consumer %s: %w", bus.ConsumerProducer, err)
	}
	// One request at a time per replica: exports of one programme serialise on its lock anyway, and
	// a bounded buffer means a draining replica holds no requests it has not started.
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.ConsumerProducer, err)
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = cons.CachedInfo().Config.MaxDeliver
	}
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			// Heartbeat misses while NATS restarts; the iterator recovers by itself.
			c.log.Warn("request consumer", slog.Any("error", err))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		c.handleDraining(ctx, msg)
	}
}

// handleDraining handles msg with a context that survives ctx's end by DrainTimeout, so a SIGTERM lets
// the export in hand commit instead of rolling it back.
func (c *RequestConsumer) handleDraining(ctx context.Context, msg jetstream.Msg) {
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.DrainTimeout, cancel)
		context.AfterFunc(hctx, func() { t.Stop() })
	})
	defer stop()
	c.Handle(hctx, msg)
}

// Handle processes one delivery and settles it: DoubleAck on success; dead letter then ack for a
// request that can never succeed (not JSON, breaks the schema, unknown programme); NakWithDelay for
// anything that may succeed later (database or NATS outage), so a request is never lost; on the
// consumer's last delivery a request that still fails is dead-lettered with its error (kind
// "retries_exhausted"), so that giving up is visible and the request can be replayed.
func (c *RequestConsumer) Handle(ctx context.Context, msg jetstream.Msg) {
	log := c.log.With(slog.String("subject", msg.Subject()))
	if md, err := msg.Metadata(); err == nil {
		log = log.With(slog.Uint64("stream_seq", md.Sequence.Stream), slog.Uint64("deliveries", md.NumDelivered))
	}
	var wire bus.ExportRequest
	if err := bus.Decode(msg, &wire); err != nil {
		c.deadLetter(ctx, log, msg, "invalid", err.Error())
		return
	}
	log = log.With(slog.String("request_id", wire.RequestID), slog.String("programme", wire.Programme))

	stopHeartbeat := c.heartbeat(ctx, msg)
	results, err := c.exporter.Export(ctx, requestFromWire(wire))
	stopHeartbeat()

	var unknown *UnknownProgrammeError
	dbErr, permanent := store.IsPermanent(err)
	switch {
	case errors.As(err, &unknown):
		c.deadLetter(ctx, log, msg, "unknown_programme", unknown.Error())
	case permanent:
		// Postgres refused what the request carries (a NUL byte, a value too long): the same request
		// fails the same way on every delivery, so retrying it would only hold up the requests behind it.
		c.deadLetter(ctx, log, msg, "database_refused", fmt.Sprintf(
			"Postgres refused the request for good (SQLSTATE %s): %v", dbErr.SQLState, err))
	case err != nil && c.lastDelivery(msg):
		c.deadLetter(ctx, log, msg, "retries_exhausted", fmt.Sprintf(
			"gave up after %d deliveries; the request stays in %s for `producer replay`: %v", c.MaxDeliver, bus.StreamRequests, err))
	case err != nil:
		delay := c.retryDelay(msg)
		log.Warn("export request failed; will retry", slog.Any("error", err), slog.Duration("retry_in", delay))
		c.metrics.request("retried")
		if nerr := msg.NakWithDelay(delay); nerr != nil {
			log.Warn("nak failed; the request is redelivered after the ack wait", slog.Any("error", nerr))
		}
	default:
		c.metrics.request("exported")
		if err := msg.DoubleAck(ctx); err != nil {
			// Redelivery finds the exports already made for this request and returns them.
			log.Warn("ack failed; the request will be redelivered and found done", slog.Any("error", err))
		}
		for _, r := range results {
			log.Info("export request handled", slog.String("status", string(r.Status)),
				slog.String("export_id", r.ExportID), slog.String("for_programme", r.Programme), slog.Int("rows", r.Rows))
		}
	}
}

func requestFromWire(w bus.ExportRequest) Request {
	return Request{ID: w.RequestID, Programme: w.Programme, RequestedBy: w.RequestedBy, RequestedAt: w.RequestedAt, DryRun: w.DryRun}
}

// deadLetter sends msg to dps.deadletter.request with the reason, then acks it. If the dead letter
// cannot be published, the request is naked and comes back: it is never dropped.
func (c *RequestConsumer) deadLetter(ctx context.Context, log *slog.Logger, msg jetstream.Msg, kind, reason string) {
	if err := bus.DeadLetter(ctx, c.js, bus.StageRequest, msg, reason); err != nil {
		delay := c.retryDelay(msg)
		log.Warn("could not dead-letter a bad request; will retry", slog.Any("error", err), slog.Duration("retry_in", delay))
		c.metrics.request("retried")
		_ = msg.NakWithDelay(delay)
		return
	}
	c.metrics.request("dead_lettered")
	c.metrics.deadLetter(kind)
	log.Warn("bad export request dead-lettered", slog.String("kind", kind), slog.String("reason", reason))
	if err := msg.DoubleAck(ctx); err != nil {
		// Redelivery dead-letters it again under the same Nats-Msg-Id, which the stream drops.
		log.Warn("ack of a dead-lettered request failed", slog.Any("error", err))
	}
}

// lastDelivery reports whether the server will not deliver msg again after this delivery.
func (c *RequestConsumer) lastDelivery(msg jetstream.Msg) bool {
	if c.MaxDeliver <= 0 {
		return false
	}
	md, err := msg.Metadata()
	return err == nil && md.NumDelivered >= uint64(c.MaxDeliver)
}

// heartbeat reports msg in progress until the returned stop is called.
func (c *RequestConsumer) heartbeat(ctx context.Context, msg jetstream.Msg) (stop func()) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.Heartbeat)
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

// retryDelay grows with each delivery: by default 10 s, 20 s, 40 s ... up to 10 minutes, so a database
// or NATS outage of about 40 minutes is ridden out within the consumer's 10 deliveries. A request that
// runs out of deliveries stays in DPS_REQUESTS, and `producer replay` runs it again.
func (c *RequestConsumer) retryDelay(msg jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 0 {
		n = md.NumDelivered
	}
	d := c.RetryDelay
	for i := uint64(1); i < n && d < c.MaxRetryDelay; i++ {
		d *= 2
	}
	return min(d, c.MaxRetryDelay)
}
