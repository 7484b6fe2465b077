package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// stackOutput returns the buffers a test stack writes its lifecycle (Stdout) and its children's logs
// (Stderr) to; if the test fails, both are logged at its end, the logs' last lines lines of them.
func stackOutput(t *testing.T, lines int) (out, logs *proctest.Buffer) {
	t.Helper()
	out, logs = new(proctest.Buffer), new(proctest.Buffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lifecycle:\n%s", out.String())
			t.Logf("last process logs:\n%s", tail(logs.String(), lines))
		}
	})
	return out, logs
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestEndToEnd runs the whole pipeline as separate processes (producer, two senders, tracker) against
// embedded NATS, a real Postgres database and the MESH sandbox, restarts NATS once mid-run, and checks
// that DPS receives every exportable record exactly once in files that pass the DPS check, that every
// export ends acknowledged, and that the replay commands are idempotent afterwards.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs every process (skipped with -short)")
	}
	dbURL := pgtest.NewDatabase(t)
	out, logs := stackOutput(t, 150) // the children's log pumps and the test share them
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	s, err := start(ctx, Config{
		Once: true, Records: 1500, Seed: 8, Senders: 2,
		DatabaseURL: dbURL, LogLevel: "info",
		// The production ack waits (30 s, pkg/bus) bound how long a message the server handed out just
		// as it stopped takes to come back, so the restart needs no test-only setting.
		Stdout: out, Stderr: logs,
	})
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	// Registered after pgtest's cleanup, so it runs first: the children leave before the database goes.
	t.Cleanup(s.Close)

	requests, err := s.RequestAll(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Restart NATS once the first export exists and before every export is acknowledged, so that
	// producer, senders and tracker all have to reconnect with work in flight.
	waitForFirstExport(t, ctx, s)
	atRestart := s.board.counts()
	if err := s.RestartNATS(); err != nil {
		t.Fatal(err)
	}
	if atRestart.Acknowledged >= len(requests) {
		t.Fatalf("NATS restarted only after every export was acknowledged (%s): not mid-run", atRestart)
	}
	t.Logf("NATS restarted at: %s", atRestart)

	if err := s.Wait(ctx, requests); err != nil {
		t.Fatalf("pipeline did not finish: %v", err)
	}
	if err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}

	// Every export of the run is acknowledged in the database, and each reached DPS as one file.
	exports := requireAllAcknowledged(t, ctx, s)
	files := s.dps.received()
	if len(files) != exports {
		t.Fatalf("DPS received %d files for %d exports", len(files), exports)
	}
	rows := 0
	for _, f := range files {
		if f.Problem != "" {
			t.Errorf("%s: %s", f.FileName, f.Problem)
		}
		rows += f.Rows
	}
	if rows != s.seeded.Exportable {
		t.Errorf("DPS received %d rows, the seed made %d exportable records", rows, s.seeded.Exportable)
	}
	t.Logf("%d exports, %d rows, %d files, all acknowledged", exports, rows, len(files))

	t.Run("tracker exports lists every export", func(t *testing.T) { testExportsListing(t, ctx, s, exports, rows) })
	t.Run("dashboard and rules name what the processes export", func(t *testing.T) { testObservabilityNames(t, s) })
	t.Run("replay", func(t *testing.T) { testReplayAfterRun(t, ctx, s, exports, len(requests)) })
}

// testExportsListing runs `tracker exports` as an operator would and checks that it lists every export
// of the run with its whole lifecycle.
func testExportsListing(t *testing.T, ctx context.Context, s *Stack, exports, rows int) {
	run := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := s.Command(ctx, "tracker", append([]string{"exports"}, args...))
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("tracker exports %v: %v\n%s", args, err, stderr.String())
		}
		return stdout.String()
	}
	text := run("--since", "1h")
	t.Logf("tracker exports:\n%s", text)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) != exports+2 || !strings.HasPrefix(lines[0], "PROGRAMME") {
		t.Fatalf("want a header, %d exports and a totals line:\n%s", exports, text)
	}
	want := fmt.Sprintf("total: %d exports, %d rows, 0 refused; created 0, accepted 0, acknowledged 0, received 0, processed %d, failed 0, rejected 0", exports, rows, exports)
	if lines[len(lines)-1] != want {
		t.Errorf("totals %q, want %q", lines[len(lines)-1], want)
	}
	listed := 0
	for _, line := range strings.Split(strings.TrimRight(run("--json", "--since", "1h"), "\n"), "\n") {
		var e struct {
			ExportID       string     `json:"export_id"`
			Status         string     `json:"status"`
			Rows           int        `json:"rows"`
			CreatedAt      *time.Time `json:"created_at"`
			SentAt         *time.Time `json:"sent_at"`
			AcknowledgedAt *time.Time `json:"acknowledged_at"`
			ReceivedAt     *time.Time `json:"received_at"`
			ProcessedAt    *time.Time `json:"processed_at"`
			MESHMessageID  string     `json:"mesh_message_id"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %v: %s", err, line)
		}
		if e.ExportID == "" {
			continue // the totals line
		}
		listed++
		if e.Status != "processed" || e.Rows == 0 || e.CreatedAt == nil || e.SentAt == nil || e.AcknowledgedAt == nil ||
			e.ReceivedAt == nil || e.ProcessedAt == nil || e.SentAt.Before(*e.CreatedAt) || e.AcknowledgedAt.Before(*e.SentAt) ||
			e.ReceivedAt.Before(*e.AcknowledgedAt) || e.ProcessedAt.Before(*e.ReceivedAt) || e.MESHMessageID == "" {
			t.Errorf("export listed without its lifecycle: %s", line)
		}
	}
	if listed != exports {
		t.Errorf("--json listed %d exports, want %d", listed, exports)
	}
}

// testReplayAfterRun runs the processes' replay commands, as an operator would, against the stack
// that has just delivered everything.
func testReplayAfterRun(t *testing.T, ctx context.Context, s *Stack, exports, requests int) {
	attempts := func() int {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dps_export_attempts`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	exportCount := func() int {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dps_exports`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	sentBefore := len(s.sandbox.Messages(ourMailbox))
	attemptsBefore := attempts()

	t.Run("sender replay sends nothing", func(t *testing.T) {
		counts, out := runReplay(t, ctx, s, "sender", "--since", "1h")
		want := map[replay.Outcome]int{replay.Skipped: exports, replay.Done: 0, replay.Forced: 0, replay.Failed: 0, replay.DryRun: 0}
		assertCounts(t, counts, want, out)
		if got := len(s.sandbox.Messages(ourMailbox)); got != sentBefore {
			t.Errorf("MESH holds %d messages from us after the replay, %d before", got, sentBefore)
		}
		if got := attempts(); got != attemptsBefore {
			t.Errorf("%d send attempts after the replay, %d before", got, attemptsBefore)
		}
	})

	t.Run("sender replay --dry-run --force lists every batch", func(t *testing.T) {
		counts, out := runReplay(t, ctx, s, "sender", "--since", "1h", "--dry-run", "--force")
		want := map[replay.Outcome]int{replay.DryRun: exports, replay.Done: 0, replay.Forced: 0, replay.Failed: 0}
		assertCounts(t, counts, want, out)
		// One table line per export, naming it.
		for _, id := range exportIDs(t, ctx, s) {
			if !regexp.MustCompile(`(?m)^\d+\s+\S+\s+dps\.export\.ready\s+dry-run\s+.*` + id).MatchString(out) {
				t.Errorf("export %s is not listed as a dry run:\n%s", id, out)
			}
		}
		if got := len(s.sandbox.Messages(ourMailbox)); got != sentBefore {
			t.Errorf("a dry run sent %d messages", got-sentBefore)
		}
	})

	t.Run("producer replay creates no export", func(t *testing.T) {
		before := exportCount()
		counts, out := runReplay(t, ctx, s, "producer", "--since", "1h")
		want := map[replay.Outcome]int{replay.Done: 0, replay.Forced: 0, replay.Failed: 0}
		assertCounts(t, counts, want, out)
		if total := counts[replay.Skipped] + counts[replay.Done]; total != requests {
			t.Errorf("producer replay saw %d requests, want %d:\n%s", total, requests, out)
		}
		if got := exportCount(); got != before {
			t.Errorf("%d exports after the replay, %d before", got, before)
		}
	})

	t.Run("tracker replay changes nothing", func(t *testing.T) {
		counts, out := runReplay(t, ctx, s, "tracker", "--since", "1h")
		assertCounts(t, counts, map[replay.Outcome]int{replay.Failed: 0, replay.Forced: 0}, out)
		if got := len(s.sandbox.Messages(ourMailbox)); got != sentBefore {
			t.Errorf("tracker replay sent %d messages", got-sentBefore)
		}
	})
}

func exportIDs(t *testing.T, ctx context.Context, s *Stack) []string {
	t.Helper()
	rows, err := s.pool.Query(ctx, `SELECT id::text FROM dps_exports ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

var countLine = regexp.MustCompile(`(?m)^\s+(done|skipped|forced|dry-run|failed)\s+(\d+)\s*$`)

// runReplay runs `<binary> replay args...` with the stack's environment and returns the outcome
// counts from its summary table. A missing replay subcommand fails the test with the binary's words.
func runReplay(t *testing.T, ctx context.Context, s *Stack, binary string, args ...string) (map[replay.Outcome]int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := s.Command(ctx, binary, append([]string{"replay"}, args...))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s replay: %v", binary, err)
	}
	if err != nil {
		t.Fatalf("%s replay %s: %v\nstdout:\n%s\nstderr:\n%s", binary, strings.Join(args, " "), err, stdout.String(), tail(stderr.String(), 40))
	}
	counts := map[replay.Outcome]int{}
	for _, m := range countLine.FindAllStringSubmatch(stdout.String(), -1) {
		n, _ := strconv.Atoi(m[2])
		counts[replay.Outcome(m[1])] = n
	}
	if len(counts) == 0 {
		t.Fatalf("%s replay printed no summary table:\nstdout:\n%s\nstderr:\n%s", binary, stdout.String(), tail(stderr.String(), 40))
	}
	t.Logf("%s replay %s:\n%s", binary, strings.Join(args, " "), stdout.String())
	return counts, stdout.String()
}

func assertCounts(t *testing.T, got, want map[replay.Outcome]int, out string) {
	t.Helper()
	for o, n := range want {
		if got[o] != n {
			t.Errorf("%s = %d, want %d\n%s", o, got[o], n, out)
		}
	}
}

// requireAllAcknowledged fails the test unless the run made at least one export and every export is
// acknowledged in the database; it returns how many there are.
func requireAllAcknowledged(t *testing.T, ctx context.Context, s *Stack) int {
	t.Helper()
	var exports, acknowledged int
	if err := s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE status = $1) FROM dps_exports`, s.finalStatus()).Scan(&exports, &acknowledged); err != nil {
		t.Fatal(err)
	}
	if exports == 0 || acknowledged != exports {
		t.Fatalf("%d of %d exports %s", acknowledged, exports, s.finalStatus())
	}
	return exports
}

// waitForFirstExport waits until the stack has created its first export, failing the test if ctx ends
// or a child process exits first: faults are injected then, with work in flight.
func waitForFirstExport(t *testing.T, ctx context.Context, s *Stack) {
	t.Helper()
	for s.board.counts().Created == 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("no export created: %s", s.board.counts())
		case e := <-s.exited:
			t.Fatalf("%s exited: %v", e.name, e.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
