package process_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

func TestServiceCommandTakesNoArguments(t *testing.T) {
	cmd := process.ServiceCommand("prog", func() (struct{}, config.Shared, error) {
		t.Error("configuration loaded")
		return struct{}{}, config.Shared{}, nil
	}, func(context.Context, struct{}, *slog.Logger) error { return nil })
	var stderr bytes.Buffer
	if code := cmd([]string{"extra"}, io.Discard, &stderr); code != cli.ExitUsage || !strings.Contains(stderr.String(), "prog run: takes no arguments") {
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
		{[]string{"--help"}, cli.ExitOK, "-since"},
		{nil, cli.ExitUsage, "prog replay"},
		{[]string{"--since", "yesterday"}, cli.ExitUsage, "prog replay"},
		{[]string{"--since", "1h", "--force"}, cli.ExitUsage, "prog replay: configuration: MESH_JOBS_ENABLED"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := cmd.Main(t.Context(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.stderrPart) || stdout.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stderrPart)
		}
	}
}
