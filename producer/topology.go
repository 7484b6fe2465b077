package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// runTopology is `producer topology`: it declares the streams, durable consumers and the export bucket
// with NATS_STREAM_REPLICAS, as the services do at start, and prints one line for each: created,
// updated (with each setting's old and new value) or unchanged. With --dry-run it changes nothing and
// prints what it would do. It is how an operator declares the topology for one-shot commands and for
// other systems whose NATS users have no right to, or checks what a change of settings would do.
func runTopology(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	waitCtx, cancel := context.WithTimeout(ctx, cmd.wait)
	defer cancel()
	status := &bus.Status{}
	nc, js, err := bus.Connect(waitCtx, process.NATSOptions(cfg.Shared, "producer-topology", log, status))
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	defer nc.Close()
	t := bus.NewTopology(bus.WithReplicas(cfg.StreamReplicas))
	changes, err := bus.DeclareTopology(waitCtx, js, t, bus.Retry{Log: log, Status: status}, cmd.dryRun)
	for _, c := range changes {
		if _, werr := fmt.Fprintln(stdout, c.Line(cmd.dryRun)); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	return nil
}
