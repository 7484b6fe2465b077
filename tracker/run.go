package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// flushTimeout bounds publishing the events of the last batch after a stop signal.
const flushTimeout = 10 * time.Second

// run is `tracker run`: it connects, serves /healthz and /metrics, relays the outbox and tracks until
// ctx ends, then drains.
func run(ctx context.Context, cfg config.Tracker, log *slog.Logger) error {
	deps, err := process.Open(ctx, log, cfg.Shared, "tracker")
	if err != nil {
		return err
	}
	defer deps.Close()

	var client *mesh.Client
	if cfg.JobsEnabled {
		if client, err = process.NewMESHClient(cfg.MESH, log); err != nil {
			return err
		}
	}
	reg := health.NewRegistry()
	tcfg := trackingConfig(cfg, deps, client, log)
	tcfg.Metrics = tracking.NewMetrics(reg, deps.Pool, log)
	tr, err := tracking.New(tcfg)
	if err != nil {
		return err
	}
	srv := health.NewServer(cfg.HTTPAddr, reg, log, append(deps.Checks(), tr.MESHCheck())...)
	if err := srv.Listen(); err != nil {
		return &config.Error{Var: "HTTP_ADDR", Problem: fmt.Sprintf("cannot listen: %v", err)}
	}
	relay := outbox.NewRelay(deps.Pool, deps.JS, log)
	log.Info("tracker started", slog.String("http_addr", srv.Addr()), slog.Bool("mesh_jobs_enabled", cfg.JobsEnabled),
		slog.Duration("poll_interval", cfg.PollInterval), slog.Int("batch_size", cfg.BatchSize))

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Run(ctx); err != nil {
			log.Error("health server", slog.Any("error", err))
		}
	})
	wg.Go(func() {
		if err := relay.Run(ctx); err != nil {
			log.Error("outbox relay", slog.Any("error", err))
		}
	})
	err = tr.Run(ctx)
	wg.Wait()

	// Publish what the last batch enqueued now rather than leaving it to the next process to start.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if _, ferr := relay.Flush(flushCtx); ferr != nil {
		log.Warn("publish pending events at exit; the next tracker to start will", slog.Any("error", ferr))
	}
	log.Info("tracker stopped")
	return err
}

// trackingConfig maps the TRACKER_* settings onto a tracking.Config, for `tracker run` and for
// `tracker replay --force`, which tracks with the same settings.
func trackingConfig(cfg config.Tracker, deps *process.Deps, client *mesh.Client, log *slog.Logger) tracking.Config {
	return tracking.Config{
		Pool:              deps.Pool,
		JS:                deps.JS,
		MESH:              client,
		JobsEnabled:       cfg.JobsEnabled,
		PollInterval:      cfg.PollInterval,
		HandshakeInterval: cfg.HandshakeInterval,
		BatchSize:         cfg.BatchSize,
		MaxBackoff:        cfg.MaxBackoff,
		UnknownTimeout:    cfg.UnknownTimeout,
		Logger:            log,
	}
}
