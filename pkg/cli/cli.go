// Package cli is the one command framework of the pipeline's programs. It defines the exit codes once,
// the usage error, the dispatch of subcommands, and the life every subcommand shares (Spec): parse its
// arguments (a mistake exits 2 before anything is read), load its configuration, build its logger, run
// under a context that SIGINT or SIGTERM cancels, and turn the error into the exit code with one
// scrubbed line on stderr.
//
// It must not connect to anything or know what a command does: pkg/process opens the connections and
// the CLI packages (meshcli, deadlettercli) and main packages hold the commands.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/failpoint"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
)

// Exit codes of every command.
const (
	// ExitOK: done.
	ExitOK = 0
	// ExitFailure: the work failed (for a MESH operator command: MESH, or the network, said no).
	ExitFailure = 1
	// ExitUsage: bad usage or configuration; the message names the flag or the variable.
	ExitUsage = 2
	// ExitFailpoint: stopped at a crash test's failpoint (pkg/failpoint).
	ExitFailpoint = failpoint.ExitCode
)

// UsageError is a command-line mistake; it exits 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef builds a UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// ExitError ends a command with Code after the command has said why itself (a MESH operator command
// prints MESH's status, code and text); Fatal prints nothing more for it.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ConfigurationProblem is an error that waiting or restarting will not mend and an operator must fix,
// though no variable is wrong in itself: NATS refusing the user's credentials or permissions, a stream
// that exists with a configuration that cannot be changed in place. It exits 2, as a configuration
// error does.
type ConfigurationProblem interface {
	error
	ConfigurationProblem() bool
}

// ExitCode maps a command's error to its exit status.
func ExitCode(err error) int {
	var ce *config.Error
	var ue *UsageError
	var ee *ExitError
	var cp ConfigurationProblem
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ce), errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &cp) && cp.ConfigurationProblem():
		return ExitUsage
	}
	return ExitFailure
}

// Fatal prints err as one line on w (scrubbed of secrets), prefixed with the command's name, and
// returns its exit code.
func Fatal(w io.Writer, name string, err error) int {
	var ee *ExitError
	if err == nil || errors.As(err, &ee) {
		return ExitCode(err)
	}
	var ce *config.Error
	prefix := name + ": "
	if errors.As(err, &ce) {
		prefix += "configuration: "
	}
	fmt.Fprintln(w, prefix+logging.ScrubString(strings.ReplaceAll(err.Error(), "\n", " ")))
	return ExitCode(err)
}

// SignalContext is cancelled on SIGINT or SIGTERM, which starts a graceful drain.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// NewLogger builds the process logger from LOG_LEVEL and LOG_FORMAT and makes it slog's default, so
// that what libraries log through slog.Default (NATS connection events) has the same format and passes
// through the same redaction.
func NewLogger(cfg config.Shared, w io.Writer) (*slog.Logger, error) {
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, &config.Error{Var: "LOG_LEVEL", Problem: err.Error()}
	}
	log, err := logging.New(w, level, cfg.LogFormat)
	if err != nil {
		return nil, &config.Error{Var: "LOG_FORMAT", Problem: err.Error()}
	}
	slog.SetDefault(log)
	return log, nil
}

// WarningLogger is the logger of a command whose only output that matters is its result on stdout:
// warnings and errors on w, in the terminal's or JSON format.
func WarningLogger(_ config.Shared, w io.Writer) (*slog.Logger, error) {
	return logging.New(w, slog.LevelWarn, logging.FormatAuto)
}

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

// Spec is one subcommand's life; C is its configuration. Run it with Main, or make it a Command.
type Spec[C any] struct {
	// Name ("producer export") prefixes its error lines.
	Name string
	// Parse reads the arguments before anything else, so that a mistake exits 2 (a UsageError) before
	// any configuration is read; flag.ErrHelp (usage printed) exits 0. Nil: the command takes no
	// arguments.
	Parse func(args []string, stderr io.Writer) error
	// Load reads the configuration: the command's own, and the part every process shares (for the
	// logger). A config.Error exits 2 naming the variable.
	Load func() (C, config.Shared, error)
	// Logger builds the logger, on stderr; nil is NewLogger (LOG_LEVEL, LOG_FORMAT).
	Logger func(config.Shared, io.Writer) (*slog.Logger, error)
	// Run does the work until it is done or ctx ends (SIGINT, SIGTERM). Its error is printed as one
	// line and decides the exit code (ExitCode).
	Run func(ctx context.Context, cfg C, log *slog.Logger, stdout, stderr io.Writer) error
}

// Main runs the subcommand with args under a context that SIGINT or SIGTERM cancels, and returns its
// exit code.
func (s Spec[C]) Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := SignalContext()
	defer stop()
	return s.Exec(ctx, args, stdout, stderr)
}

// Exec is Main under ctx.
func (s Spec[C]) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	parse := s.Parse
	if parse == nil {
		parse = NoArguments
	}
	if err := parse(args, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		var ue *UsageError
		if !errors.As(err, &ue) {
			// Whatever the parser says, a mistake on the command line exits 2.
			err = &UsageError{Msg: err.Error()}
		}
		return Fatal(stderr, s.Name, err)
	}
	cfg, shared, err := s.Load()
	if err != nil {
		return Fatal(stderr, s.Name, err)
	}
	newLogger := s.Logger
	if newLogger == nil {
		newLogger = NewLogger
	}
	log, err := newLogger(shared, stderr)
	if err != nil {
		return Fatal(stderr, s.Name, err)
	}
	return Fatal(stderr, s.Name, s.Run(ctx, cfg, log, stdout, stderr))
}

// Command is Main as a Command, for Dispatch.
func (s Spec[C]) Command() Command { return s.Main }

// NoArguments is the Parse of a command that takes none.
func NoArguments(args []string, _ io.Writer) error {
	if len(args) != 0 {
		return Usagef("takes no arguments, got %q", args)
	}
	return nil
}

// AnyArguments is the Parse of a command that reads its arguments itself, in Run.
func AnyArguments([]string, io.Writer) error { return nil }

// WriteJSONLines writes each value as one JSON object on a line of its own: the form of every
// command's --json listing and of the export command's summary, which other programs read line by line.
func WriteJSONLines[T any](w io.Writer, values []T) error {
	enc := json.NewEncoder(w)
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}
