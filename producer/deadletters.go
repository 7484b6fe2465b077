package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/deadlettercli"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// natsConnectTimeout bounds how long a dead-letter command waits for NATS before giving up.
const natsConnectTimeout = 15 * time.Second

// connectNATS connects for a short operator command. The connection is bounded by natsConnectTimeout;
// the returned connection is then used with the command's own context. status records what the
// server refused, so that a request it never answered can say why (status.Explain).
func connectNATS(ctx context.Context, cfg config.Producer, name string, status *bus.Status) (*nats.Conn, jetstream.JetStream, error) {
	cctx, cancel := context.WithTimeout(ctx, natsConnectTimeout)
	defer cancel()
	return bus.Connect(cctx, process.NATSOptions(cfg.Shared, name, slog.Default(), status))
}

// runDeadLetters is `producer dead-letters` (pkg/deadlettercli), over NATS only.
func runDeadLetters(ctx context.Context, cfg config.Producer, cmd command, _ *slog.Logger, stdout io.Writer) error {
	status := &bus.Status{}
	nc, js, err := connectNATS(ctx, cfg, "producer-dead-letters", status)
	if err != nil {
		return err
	}
	defer nc.Close()
	return status.Explain(deadlettercli.List(ctx, js, cmd.deadLetters, stdout))
}

// runRedrive is `producer redrive` (pkg/deadlettercli), over NATS only.
func runRedrive(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	status := &bus.Status{}
	nc, js, err := connectNATS(ctx, cfg, "producer-redrive", status)
	if err != nil {
		return err
	}
	defer nc.Close()
	return status.Explain(deadlettercli.Redrive(ctx, js, cmd.redriveSeqs, log, stdout))
}
