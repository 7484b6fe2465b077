package process

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// Command runs one subcommand with the arguments that follow its name and returns the exit code.
type Command func(args []string, stdout, stderr io.Writer) int

// Dispatch runs the subcommand args[0] names. -h, --help and help print usage on stdout and exit 0;
// no command or an unknown one prints usage on stderr and exits 2.
func Dispatch(prog string, usage func(io.Writer), commands map[string]Command, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "help":
		usage(stdout)
		return ExitOK
	}
	if cmd, ok := commands[name]; ok {
		return cmd(rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n", prog, name)
	usage(stderr)
	return ExitUsage
}

// WithSignals gives a command a context that SIGINT or SIGTERM cancels.
func WithSignals(f func(ctx context.Context, args []string, stdout, stderr io.Writer) int) Command {
	return func(args []string, stdout, stderr io.Writer) int {
		ctx, stop := SignalContext()
		defer stop()
		return f(ctx, args, stdout, stderr)
	}
}

// ServiceCommand is `<prog> run`: it takes no arguments, loads the configuration (load returns the
// process's own and the shared part of it), builds the logger and runs until SIGINT or SIGTERM.
func ServiceCommand[C any](prog string, load func() (C, config.Shared, error), run func(context.Context, C, *slog.Logger) error) Command {
	return func(args []string, _, stderr io.Writer) int {
		if len(args) != 0 {
			fmt.Fprintf(stderr, "%s run: takes no arguments, got %q\n", prog, args)
			return ExitUsage
		}
		cfg, shared, err := load()
		if err != nil {
			return Fatal(stderr, prog, err)
		}
		log, err := NewLogger(shared, stderr)
		if err != nil {
			return Fatal(stderr, prog, err)
		}
		ctx, stop := SignalContext()
		defer stop()
		return Fatal(stderr, prog, run(ctx, cfg, log))
	}
}

// MESHCommand is an operator command that talks to MESH alone: configured by the MESH_* settings
// only (no database, no NATS), it prints its result on stdout and only warnings (TLS verification
// off) on stderr. name ("tracker check-inbox") prefixes its error lines.
func MESHCommand(name string, f func(ctx context.Context, cfg config.MESH, c *mesh.Client, args []string, stdout, stderr io.Writer) int) Command {
	return func(args []string, stdout, stderr io.Writer) int {
		cfg, err := config.LoadMESH()
		if err != nil {
			return Fatal(stderr, name, err)
		}
		log, err := logging.New(stderr, slog.LevelWarn, logging.FormatAuto)
		if err != nil {
			return Fatal(stderr, name, err)
		}
		client, err := NewMESHClient(cfg, log)
		if err != nil {
			return Fatal(stderr, name, err)
		}
		ctx, stop := SignalContext()
		defer stop()
		return f(ctx, cfg, client, args, stdout, stderr)
	}
}
