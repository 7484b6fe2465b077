package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

// TestOneShotCommandsDeclareNothing: before anything is declared, `producer request` and `producer
// export` wait (bounded by --wait) and fail with a line that says what to do; they create no stream,
// consumer or bucket. `producer topology --dry-run` lists what it would create and creates nothing;
// `producer topology` creates it all and says so; a second run finds it unchanged, and a changed
// setting shows as the one field that differs.
func TestOneShotCommandsDeclareNothing(t *testing.T) {
	s := newBareStack(t)
	s.mustRun("seed", "--records", "50")
	streams := func() []string {
		var names []string
		l := s.js.StreamNames(t.Context())
		for n := range l.Name() {
			names = append(names, n)
		}
		return names
	}

	for _, args := range [][]string{
		{"request", "--programme", "HPV", "--wait", "2s"},
		{"export", "--programme", "HPV", "--wait", "2s"},
	} {
		_, stderr, code := s.run(s.env(), args...)
		if code != 1 || !strings.Contains(stderr, "gave up after --wait 2s") || !strings.Contains(stderr, "producer topology") {
			t.Errorf("%v before the topology exists: exit %d, want 1 and a line naming `producer topology`\n%s", args, code, stderr)
		}
	}
	if n := streams(); len(n) != 0 {
		t.Fatalf("one-shot commands created streams %v", n)
	}

	out := s.mustRun("topology", "--dry-run")
	for _, want := range []string{
		"stream DPS_REQUESTS: would create", "stream DPS_BATCHES: would create", "stream DPS_EVENTS: would create",
		"stream DPS_DEADLETTER: would create", "consumer sender on DPS_BATCHES: would create",
		"consumer producer on DPS_REQUESTS: would create", "consumer tracker on DPS_EVENTS: would create",
		"object store dps-exports: would create",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if n := streams(); len(n) != 0 {
		t.Fatalf("a dry run created streams %v", n)
	}

	out = s.mustRun("topology")
	if strings.Count(out, ": created\n") != 8 || strings.Contains(out, "would") {
		t.Fatalf("topology printed:\n%s", out)
	}
	out = s.mustRun("topology")
	if strings.Count(out, ": unchanged\n") != 8 {
		t.Fatalf("second topology run printed:\n%s", out)
	}

	// Someone shortened DPS_BATCHES's retention by hand: the dry run names that one field, with both values.
	st, err := s.js.Stream(t.Context(), bus.StreamBatches)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxAge = 48 * time.Hour
	if _, err := s.js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	out = s.mustRun("topology", "--dry-run")
	if !strings.Contains(out, "stream DPS_BATCHES: would update max_age 48h0m0s → 720h0m0s\n") || strings.Count(out, ": unchanged\n") != 7 {
		t.Fatalf("dry run after a change printed:\n%s", out)
	}
	out = s.mustRun("topology")
	if !strings.Contains(out, "stream DPS_BATCHES: updated max_age 48h0m0s → 720h0m0s\n") {
		t.Fatalf("topology after a change printed:\n%s", out)
	}

	// Now the one-shot commands work.
	s.mustRun("request", "--programme", "HPV", "--wait", "10s")
	s.mustRun("export", "--programme", "HPV", "--wait", "10s")
}

// TestIncompatibleStreamExitsTwo: a stream that exists with a setting that cannot be updated in place
// is a refusal that waiting will not mend: the service and `producer topology` exit 2 with one line
// naming the stream and the setting, instead of retrying forever.
func TestIncompatibleStreamExitsTwo(t *testing.T) {
	s := newBareStack(t)
	if _, err := s.js.CreateStream(t.Context(), jetstream.StreamConfig{Name: bus.StreamBatches,
		Subjects: []string{bus.SubjectExportReady}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"topology"}, {"run"}} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, s.bin, args...)
		cmd.Env = s.env("HTTP_ADDR=" + freeAddr(t))
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("producer %v with an incompatible DPS_BATCHES: %v, want exit 2\n%s", args, err, out)
		}
		if !strings.Contains(string(out), `stream DPS_BATCHES exists with an incompatible configuration that cannot be updated in place (storage is "memory", the pipeline needs "file")`) {
			t.Errorf("producer %v printed:\n%s", args, out)
		}
	}
}
