package main

import (
	"context"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// run is `tracker run`: it connects, serves /healthz and /metrics, relays the outbox and tracks until
// ctx ends, then drains.
func run(ctx context.Context, cfg config.Tracker, log *slog.Logger) error {
	reg := health.NewRegistry()
	svc := process.Service{
		Name: "tracker", HTTPAddr: cfg.HTTPAddr, Log: log, Registry: reg,
		// Only the producer may publish export requests (its schedule enqueues them).
		RelayExcept: []string{bus.SubjectExportRequest},
		Attrs: []slog.Attr{slog.Bool("mesh_jobs_enabled", cfg.JobsEnabled),
			slog.Duration("poll_interval", cfg.PollInterval), slog.Duration("inbox_interval", cfg.InboxInterval),
			slog.Int("batch_size", cfg.BatchSize), slog.Any("ack_senders", cfg.AckSenders)},
	}
	deps, client, err := svc.OpenWithMESH(ctx, cfg.Shared, cfg.MESH)
	if err != nil {
		return err
	}
	defer deps.Close()
	tcfg := trackingConfig(cfg, deps, client, log)
	tcfg.Metrics = tracking.NewMetrics(reg, deps.Pool, log)
	tr, err := tracking.New(tcfg)
	if err != nil {
		return err
	}
	svc.Deps, svc.Checks = deps, []health.Check{tr.MESHCheck()}
	svc.Consumer, svc.Health = bus.ConsumerTracker, cfg.Health
	err = svc.Run(ctx, tr.Run)
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
		InboxInterval:     cfg.InboxInterval,
		Mailbox:           cfg.Mailbox,
		AckSenders:        cfg.AckSenders,
		Logger:            log,
	}
}
