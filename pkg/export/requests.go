package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/runner"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// RequestConsumerConfig wires a RequestConsumer. Zero durations take the defaults given.
type RequestConsumerConfig struct {
	Exporter *Exporter
	JS       jetstream.JetStream
	// Logger; nil logs nothing. Metrics; nil means no metrics (a private set nobody scrapes).
	Logger  *slog.Logger
	Metrics *Metrics
	// Heartbeat is how often a request being exported is reported in progress; default a third of the
	// consumer's ack wait, so that a long export is not redelivered to another replica.
	Heartbeat time.Duration
	// DrainTimeout bounds how long a request already being handled may run on after Run's context
	// ends; after it the export is rolled back and the request redelivered later. Default 30s.
	DrainTimeout time.Duration
	// RetryDelay is the delay before the first redelivery of a request that failed for a reason that
	// may pass (an outage); it doubles with each delivery up to MaxRetryDelay. Defaults 10s and 10m, so
	// that an outage of about 40 minutes is ridden out within the consumer's 10 deliveries.
	RetryDelay, MaxRetryDelay time.Duration
	// MaxDeliver is the consumer's delivery limit; Run reads it from the consumer when it is 0. The last
	// delivery of a request that still fails is dead-lettered with its error (kind retries_exhausted).
	MaxDeliver int
}

// RequestConsumer consumes dps.export.request through the durable consumer "producer" and runs each
// request through an Exporter. Replicas share the durable consumer, so each request is handled by one
// of them at a time; a redelivered request is idempotent (see the package documentation).
type RequestConsumer struct {
	exporter *Exporter
	metrics  *Metrics
	runner   *runner.Runner
}

// NewRequestConsumer checks cfg and returns the consumer. It contacts nothing.
func NewRequestConsumer(cfg RequestConsumerConfig) (*RequestConsumer, error) {
	if cfg.Exporter == nil {
		return nil, errors.New("request consumer: an exporter is required")
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 10 * time.Second
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = 10 * time.Minute
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	c := &RequestConsumer{exporter: cfg.Exporter, metrics: cfg.Metrics}
	r, err := runner.New(runner.Config{
		JS: cfg.JS, Stream: bus.StreamRequests, Consumer: bus.ConsumerProducer, Stage: bus.StageRequest,
		Handler: c.exportRequest,
		// One request at a time per replica: exports of one programme serialise on its lock anyway.
		Concurrency: 1,
		Heartbeat:   cfg.Heartbeat,
		Backoff:     runner.Exponential(cfg.RetryDelay, cfg.MaxRetryDelay),
		MaxDeliver:  cfg.MaxDeliver,
		Grace:       cfg.DrainTimeout,
		Logger:      cfg.Logger,
		Observe:     c.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("request consumer: %w", err)
	}
	c.runner = r
	return c, nil
}

// Run consumes until ctx ends, then lets the request in hand finish (within DrainTimeout) and returns.
// It returns an error only when the consumer cannot be opened.
func (c *RequestConsumer) Run(ctx context.Context) error { return c.runner.Run(ctx) }

// Handle processes one delivery and settles it (see exportRequest); Run calls it for each request.
func (c *RequestConsumer) Handle(ctx context.Context, msg jetstream.Msg) { c.runner.Handle(ctx, msg) }

// exportRequest is the handler: done once exported; a dead letter for a request that can never
// succeed (not JSON, breaks the schema, unknown programme); a retry for anything that may succeed later
// (database or NATS outage), so a request is never lost.
func (c *RequestConsumer) exportRequest(ctx context.Context, d runner.Delivery) runner.Outcome {
	var wire bus.ExportRequest
	if err := bus.Decode(d.Msg, &wire); err != nil {
		return runner.DeadLetter("invalid", err.Error())
	}
	log := d.Log.With(slog.String("request_id", wire.RequestID), slog.String("programme", wire.Programme))
	results, err := c.exporter.Export(ctx, requestFromWire(wire))
	var unknown *UnknownProgrammeError
	var conflict *RequestConflictError
	dbErr, permanent := store.IsPermanent(err)
	switch {
	case errors.As(err, &unknown):
		return runner.DeadLetter("unknown_programme", unknown.Error())
	case errors.As(err, &conflict):
		return runner.DeadLetter("conflict", conflict.Error())
	case permanent:
		// Postgres refused what the request carries (a NUL byte, a value too long): the same request
		// fails the same way on every delivery, so retrying it would only hold up the requests behind it.
		return runner.DeadLetter("database_refused", fmt.Sprintf(
			"Postgres refused the request for good (SQLSTATE %s): %v", dbErr.SQLState, err))
	case err != nil:
		return runner.Retry(fmt.Errorf("export request %s: %w", wire.RequestID, err))
	}
	for _, r := range results {
		log.Info("export request handled", slog.String("status", string(r.Status)),
			slog.String("export_id", r.ExportID), slog.String("for_programme", r.Programme), slog.Int("rows", r.Rows))
	}
	return runner.Done()
}

// observe counts each settled request: exported, retried or dead-lettered (by kind).
func (c *RequestConsumer) observe(_ runner.Delivery, s runner.Settlement) {
	switch s.Action {
	case runner.Acked:
		c.metrics.request("exported")
	case runner.Naked:
		c.metrics.request("retried")
	case runner.DeadLettered:
		c.metrics.request("dead_lettered")
		c.metrics.deadLetter(s.Outcome.Label)
	}
}

func requestFromWire(w bus.ExportRequest) Request {
	return Request{ID: w.RequestID, Programme: w.Programme, RequestedBy: w.RequestedBy, RequestedAt: w.RequestedAt, DryRun: w.DryRun}
}
