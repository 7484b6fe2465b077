package main

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// run is `sender run`: it connects, serves /healthz and /metrics, relays the outbox and delivers
// batches until ctx ends, then finishes the send in flight within SENDER_SHUTDOWN_GRACE and drains.
func run(ctx context.Context, cfg config.Sender, log *slog.Logger) error {
	reg := health.NewRegistry()
	svc := process.Service{
		Name: "sender", HTTPAddr: cfg.HTTPAddr, Log: log, Registry: reg,
		// Only the producer may publish export requests (its schedule enqueues them).
		RelayExcept: []string{bus.SubjectExportRequest},
		Attrs:       []slog.Attr{slog.Bool("mesh_jobs_enabled", cfg.JobsEnabled), slog.Duration("shutdown_grace", cfg.ShutdownGrace)},
	}
	deps, client, err := svc.OpenWithMESH(ctx, cfg.Shared, cfg.MESH)
	if err != nil {
		return err
	}
	defer deps.Close()
	dcfg, err := deliveryConfig(ctx, cfg, deps, client, log)
	if err != nil {
		return err
	}
	dcfg.Metrics = delivery.NewMetrics(reg)
	s, err := delivery.New(dcfg)
	if err != nil {
		return err
	}
	svc.Deps, svc.Checks = deps, []health.Check{s.HealthCheck()}
	svc.Consumer, svc.ConsumerPaused, svc.Health = bus.ConsumerSender, !cfg.JobsEnabled, cfg.Health
	return svc.Run(ctx, s.Run)
}

// deliveryConfig is the Sender's configuration from the environment and the process's connections.
func deliveryConfig(ctx context.Context, cfg config.Sender, deps *process.Deps, client *mesh.Client, log *slog.Logger) (delivery.Config, error) {
	// The bucket may be between leaders (a node lost, a cold cluster): wait for it rather than exit.
	var objects jetstream.ObjectStore
	err := deps.Retry.Do(ctx, "object store "+bus.BucketExports, func(ctx context.Context) (err error) {
		objects, err = bus.ExportStore(ctx, deps.JS)
		return err
	})
	if err != nil {
		return delivery.Config{}, err
	}
	routes := make(map[string]delivery.Route, len(cfg.Routes))
	for p, r := range cfg.Routes {
		routes[p] = delivery.Route{Mailbox: r.Mailbox, WorkflowID: r.WorkflowID}
	}
	return delivery.Config{
		Pool: deps.Pool, JS: deps.JS, Objects: objects, MESH: client, Logger: log,
		DPSMailbox:    cfg.DPSMailbox,
		WorkflowID:    cfg.DPSWorkflowID,
		Routes:        routes,
		JobsEnabled:   cfg.JobsEnabled,
		ShutdownGrace: cfg.ShutdownGrace,
		Concurrency:   cfg.Concurrency,
	}, nil
}
