package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// ReplayCommand is what every `<process> replay` subcommand shares: the replay flags, configuration,
// the logger, the connections, one run of the process's handling over a stored range through an
// ordered consumer, the outbox flushed, the summary table alone on stdout and the exit code (1 when
// any message failed). C is the process's configuration.
type ReplayCommand[C any] struct {
	Name    string // "sender replay": the usage name, the prefix of error lines, the NATS connection name
	Stream  string // the stream replayed
	Subject string // its subject filter
	// Load reads the configuration: the process's own and its shared part.
	Load func() (C, config.Shared, error)
	// Refuse, when set, returns a config.Error naming the variable whose setting does not allow what
	// opts ask for (MESH_JOBS_ENABLED=false for a run that would call MESH), before anything connects.
	Refuse func(cfg C, opts *replay.Options) error
	// ForceWarning, when set, is printed on stderr before a --force run that is not a dry run.
	ForceWarning string
	// Handler builds the process's handling once connected.
	Handler func(ctx context.Context, cfg C, deps *Deps, log *slog.Logger, opts *replay.Options) (replay.Handler, error)
}

// Main runs the command with args (what follows the subcommand) under ctx and returns the exit code.
func (c ReplayCommand[C]) Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var opts *replay.Options
	var r replay.Range
	var shared config.Shared
	return cli.Spec[C]{
		Name: c.Name,
		Parse: func(args []string, stderr io.Writer) (err error) {
			opts, r, err = replay.ParseArgsTo(stderr, c.Name, args, time.Now())
			return err
		},
		Load: func() (C, config.Shared, error) {
			cfg, sh, err := c.Load()
			if err == nil && c.Refuse != nil {
				err = c.Refuse(cfg, opts)
			}
			shared = sh
			return cfg, sh, err
		},
		// Progress and warnings on stderr, in the configured format; the summary alone on stdout.
		Run: func(ctx context.Context, cfg C, log *slog.Logger, stdout, stderr io.Writer) error {
			if c.ForceWarning != "" && opts.Force && !opts.DryRun {
				fmt.Fprintln(stderr, c.ForceWarning)
			}
			return c.run(ctx, cfg, shared, log, opts, r, stdout)
		},
	}.Exec(ctx, args, stdout, stderr)
}

// Command is Main under a context that SIGINT or SIGTERM cancels, for cli.Dispatch.
func (c ReplayCommand[C]) Command() cli.Command {
	return func(args []string, stdout, stderr io.Writer) int {
		ctx, stop := cli.SignalContext()
		defer stop()
		return c.Main(ctx, args, stdout, stderr)
	}
}

func (c ReplayCommand[C]) run(ctx context.Context, cfg C, shared config.Shared, log *slog.Logger, opts *replay.Options, r replay.Range, stdout io.Writer) error {
	deps, err := Open(ctx, log, shared, strings.ReplaceAll(c.Name, " ", "-"))
	if err != nil {
		return err
	}
	defer deps.Close()
	handle, err := c.Handler(ctx, cfg, deps, log, opts)
	if err != nil {
		return err
	}
	sum, err := replay.Run(ctx, deps.JS, c.Stream, c.Subject, r, handle)
	// Publish the events of what the handler changed before exiting.
	FlushOutbox(ctx, deps, log, nil)
	if perr := sum.Print(stdout); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	return sum.Err()
}
