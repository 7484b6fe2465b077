package main

import (
	"context"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// run is `sender run`: it connects, serves /healthz and /metrics, relays the outbox and delivers
// batches until ctx ends, then finishes the send in flight within SENDER_SHUTDOWN_GRACE and drains.
func run(ctx context.Context, cfg config.Sender, log *slog.Logger) error {
	reg := health.NewRegistry()
	deps, client, err := process.OpenWithMESH(ctx, log, cfg.Shared, cfg.MESH, "sender", reg)
	if err != nil {
		return err
	}
	defer deps.Close()
	s, err := delivery.New(ctx, deliveryConfig(cfg), deps.Pool, deps.JS, client, log, delivery.NewMetrics(reg))
	if err != nil {
		return err
	}
	return process.Service{
		Name: "sender", HTTPAddr: cfg.HTTPAddr, Log: log, Deps: deps, Registry: reg,
		Checks: []health.Check{s.HealthCheck()},
		Attrs:  []slog.Attr{slog.Bool("mesh_jobs_enabled", cfg.JobsEnabled), slog.Duration("shutdown_grace", cfg.ShutdownGrace)},
	}.Run(ctx, s.Run)
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
