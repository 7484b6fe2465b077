package main

import (
	"context"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// replayCommand is `sender replay`: the sender's handling of dps.export.ready over a stored range,
// through an ordered consumer, followed by the summary table. Exit 1 when any batch failed.
func replayCommand() process.ReplayCommand[config.Sender] {
	return process.ReplayCommand[config.Sender]{
		Name: "sender replay", Stream: bus.StreamBatches, Subject: bus.SubjectExportReady,
		Load: loadConfig,
		Refuse: func(cfg config.Sender, opts *replay.Options) error {
			if !opts.DryRun && !cfg.JobsEnabled {
				return &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true for sender replay to send anything (or use --dry-run)"}
			}
			return nil
		},
		ForceWarning: "sender replay --force: exports MESH already accepted will be RE-SENT to MESH as NEW messages (DPS receives them again)",
		Handler:      replayHandler,
	}
}

func replayHandler(ctx context.Context, cfg config.Sender, deps *process.Deps, log *slog.Logger, opts *replay.Options) (replay.Handler, error) {
	client, err := process.NewJobsMESHClient(cfg.MESH, log)
	if err != nil {
		return nil, err
	}
	dcfg, err := deliveryConfig(ctx, cfg, deps, client, log)
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		dcfg.JobsEnabled = false
	}
	s, err := delivery.New(dcfg)
	if err != nil {
		return nil, err
	}
	return s.ReplayHandler(opts.Force, opts.DryRun), nil
}
