package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// flushTimeout bounds publishing the events of the last batches after a stop signal.
const flushTimeout = 10 * time.Second

// run is `sender run`: it connects, serves /healthz and /metrics, relays the outbox and delivers
// batches until ctx ends, then finishes the send in flight within SENDER_SHUTDOWN_GRACE and drains.
func run(ctx context.Context, cfg config.Sender, log *slog.Logger) error {
	deps, err := process.Open(ctx, log, cfg.Shared, "sender")
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
	s, err := delivery.New(ctx, deliveryConfig(cfg), deps.Pool, deps.JS, client, log, delivery.NewMetrics(reg))
	if err != nil {
		return err
	}
	srv := health.NewServer(cfg.HTTPAddr, reg, log, append(deps.Checks(), s.HealthCheck())...)
	if err := srv.Listen(); err != nil {
		return &config.Error{Var: "HTTP_ADDR", Problem: fmt.Sprintf("cannot listen: %v", err)}
	}
	relay := outbox.NewRelay(deps.Pool, deps.JS, log)
	log.Info("sender started", slog.String("http_addr", srv.Addr()), slog.Bool("mesh_jobs_enabled", cfg.JobsEnabled),
		slog.Duration("shutdown_grace", cfg.ShutdownGrace))

	// The relay and the health server outlive the sender's own context by the grace period, so that
	// the events of the last sends are published and /healthz answers while the drain goes on.
	sideCtx, stopSide := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSide()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Run(sideCtx); err != nil {
			log.Error("health server", slog.Any("error", err))
		}
	})
	wg.Go(func() {
		if err := relay.Run(sideCtx); err != nil {
			log.Error("outbox relay", slog.Any("error", err))
		}
	})
	err = s.Run(ctx)
	stopSide()
	wg.Wait()

	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if _, ferr := relay.Flush(flushCtx); ferr != nil {
		log.Warn("publish pending events at exit; the next process to start will", slog.Any("error", ferr))
	}
	return err
}

func deliveryConfig(cfg config.Sender) delivery.Config {
	return delivery.Config{
		DPSMailbox:    cfg.DPSMailbox,
		WorkflowID:    cfg.DPSWorkflowID,
		JobsEnabled:   cfg.JobsEnabled,
		ShutdownGrace: cfg.ShutdownGrace,
		Concurrency:   cfg.Concurrency,
	}
}
