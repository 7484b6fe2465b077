package main

import (
	"context"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// replayCommand is `producer replay`: request handling over a stored range of DPS_REQUESTS, followed
// by the summary table. A request whose exports exist is skipped unless --force. Exit 1 when any failed.
func replayCommand() process.ReplayCommand[config.Producer] {
	return process.ReplayCommand[config.Producer]{
		Name: "producer replay", Stream: bus.StreamRequests, Subject: bus.SubjectExportRequest,
		Load:    loadConfig,
		Handler: replayHandler,
	}
}

func replayHandler(ctx context.Context, cfg config.Producer, deps *process.Deps, log *slog.Logger, opts *replay.Options) (replay.Handler, error) {
	_, exporter, err := newExporter(ctx, cfg, deps, log, nil)
	if err != nil {
		return nil, err
	}
	return exporter.ReplayHandler(opts.Force, opts.DryRun), nil
}
