package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{&config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true or false"}, ExitUsage},
		{fmt.Errorf("load: %w", &config.Error{Var: "X", Problem: "y"}), ExitUsage},
		{Usagef("unknown flag %s", "--x"), ExitUsage},
		{errors.New("connect nats: refused"), ExitFailure},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestFatalPrintsOneScrubbedLine(t *testing.T) {
	var buf bytes.Buffer
	code := Fatal(&buf, "sender", errors.New("connect postgres://u:hunter2@db/dps:\nrefused"))
	if code != ExitFailure {
		t.Errorf("code = %d", code)
	}
	out := buf.String()
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "hunter2") || !strings.HasPrefix(out, "sender: ") {
		t.Errorf("Fatal printed %q", out)
	}
	buf.Reset()
	if code := Fatal(&buf, "tracker", &config.Error{Var: "MESH_JOBS_ENABLED", Problem: "must be true or false"}); code != ExitUsage {
		t.Errorf("config error code = %d", code)
	}
	if got := buf.String(); got != "tracker: configuration: MESH_JOBS_ENABLED: must be true or false\n" {
		t.Errorf("config error line = %q", got)
	}
}

func TestDispatch(t *testing.T) {
	usage := func(w io.Writer) { io.WriteString(w, "usage: prog\n") }
	commands := map[string]Command{
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
		{nil, ExitUsage, "", "usage: prog"},
		{[]string{"help"}, ExitOK, "usage: prog\n", ""},
		{[]string{"--help"}, ExitOK, "usage: prog\n", ""},
		{[]string{"echo", "a", "b"}, 7, "a b", ""},
		{[]string{"bogus"}, ExitUsage, "", `prog: unknown command "bogus"`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := Dispatch("prog", usage, commands, tt.args, &stdout, &stderr)
		if code != tt.code || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderrPart) {
			t.Errorf("%q: exit %d stdout %q stderr %q; want %d, %q, %q", tt.args, code, stdout.String(), stderr.String(), tt.code, tt.stdout, tt.stderrPart)
		}
	}
}
