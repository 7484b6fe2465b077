package process_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

func TestDispatch(t *testing.T) {
	usage := func(w io.Writer) { io.WriteString(w, "usage: prog\n") }
	commands := map[string]process.Command{
		"echo": func(args []string, stdout, _ io.Writer) int {
			io.WriteString(stdout, strings.Join(args, " "))
			return 7
		},
	}
	tests := []struct {
		args               []string
		code               int
		stdout, stderrPart string
	}{
		{nil, process.ExitUsage, "", "usage: prog"},
		{[]string{"help"}, process.ExitOK, "usage: prog\n", ""},
		{[]string{"--help"}, process.ExitOK, "usage: prog\n", ""},
		{[]string{"echo", "a", "b"}, 7, "a b", ""},
		{[]string{"bogus"}, process.ExitUsage, "", `prog: unknown command "bogus"`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := process.Dispatch("prog", usage, commands, tt.args, &stdout, &stderr)
		if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderrPart) {
			t.Errorf("%q: exit %d stdout %q stderr %q; want %d, %q, %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderrPart)
		}
	}
}

func TestServiceCommandTakesNoArguments(t *testing.T) {
	cmd := process.ServiceCommand("prog", func() (struct{}, config.Shared, error) {
		t.Error("configuration loaded")
		return struct{}{}, config.Shared{}, nil
	}, func(context.Context, struct{}, *slog.Logger) error { return nil })
	var stderr bytes.Buffer
	if code := cmd([]string{"extra"}, io.Discard, &stderr); code != process.ExitUsage || !strings.Contains(stderr.String(), "prog run: takes no arguments") {
		t.Errorf("exit %d, %q", code, stderr.String())
	}
}

// TestReplayCommandBeforeConnecting covers what a replay command decides before it connects: help,
// bad flags, configuration a --force run needs.
func TestReplayCommandBeforeConnecting(t *testing.T) {
	cmd := process.ReplayCommand[string]{
		Name: "prog replay",
		Load: func() (string, config.Shared, error) { return "jobs off", config.Shared{}, nil },
		Refuse: func(cfg string, opts *replay.Options) error {
			if opts.Force && cfg == "jobs off" {
				return &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true"}
			}
			return nil
		},
		Handler: func(context.Context, string, *process.Deps, *slog.Logger, *replay.Options) (replay.Handler, error) {
			t.Error("connected")
			return nil, nil
		},
	}
	tests := []struct {
		args       []string
		code       int
		stderrPart string
	}{
		{[]string{"--help"}, process.ExitOK, "-since"},
		{nil, process.ExitUsage, "prog replay"},
		{[]string{"--since", "yesterday"}, process.ExitUsage, "prog replay"},
		{[]string{"--since", "1h", "--force"}, process.ExitUsage, "prog replay: configuration: MESH_JOBS_ENABLED"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := cmd.Main(t.Context(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.stderrPart) || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stderrPart)
		}
	}
}
