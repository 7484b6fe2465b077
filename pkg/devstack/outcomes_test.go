package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// refusedDose is the dose the test's receiver refuses: three HPV records are given it before the run.
const (
	refusedDose       = "0.123"
	refusedDiagnostic = "Validation errors: protocolApplied[0].doseQuantity.value 0.123 is not a dose of this vaccine (devstack test rule)"
)

// TestReceiverOutcomes runs the whole pipeline with a DPS that answers as the receiver does and does
// not take everything:
//   - HPV: three rows refused in the BusAck. They show refused with their diagnostic in `tracker records
//     --refused` and wait; the others are accepted. One of the three is corrected in vaccination_records:
//     the next export carries it, alone, and it is accepted.
//   - FLU: the first file is refused whole (InfAck Failure): the export is rejected, its records are
//     released, re-exported and sent once more, and accepted.
//   - MENACWY: the first file is never collected and MESH reports it undelivered: the export fails, its
//     records are released, re-exported and sent once more, and accepted.
func TestReceiverOutcomes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs every process (skipped with -short)")
	}
	dbURL := pgtest.NewDatabase(t)
	out, logs := stackOutput(t, 150)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	dose := fieldIndex("DOSE_AMOUNT")
	var fluRejected, menacwyLeft atomic.Bool
	rules := ReceiverRules{
		RefuseRow: func(f *[dps.NumFields]string) (string, bool) {
			return refusedDiagnostic, f[dose] == refusedDose
		},
		RejectFile: func(name string) bool {
			return strings.Contains(name, "FLU") && fluRejected.CompareAndSwap(false, true)
		},
		Uncollected: func(name string) bool {
			return strings.Contains(name, "MENACWY") && menacwyLeft.CompareAndSwap(false, true)
		},
	}
	s, err := start(ctx, Config{Once: true, Records: 400, Seed: 5, Senders: 1, DatabaseURL: dbURL, LogLevel: "info",
		Receiver: rules, Stdout: out, Stderr: logs})
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	t.Cleanup(s.Close)

	// Three exportable HPV records get the dose the receiver refuses.
	rows, err := s.pool.Query(ctx, `
		UPDATE vaccination_records SET dose_volume_ml = `+refusedDose+`, updated_at = now()
		WHERE id IN (SELECT r.id FROM vaccination_records r JOIN programmes p ON p.id = r.programme_id
		             WHERE p.code = 'HPV' AND NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL
		             ORDER BY r.id LIMIT 3)
		RETURNING uuid::text`)
	if err != nil {
		t.Fatal(err)
	}
	refused, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(refused) != 3 {
		t.Fatalf("mark three HPV records: %v (%d)", err, len(refused))
	}

	if _, err := s.RequestAll(ctx); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, s, "HPV", 1, "processed")
	waitStatus(t, ctx, s, "TD_IPV", 1, "processed")
	waitStatus(t, ctx, s, "FLU", 1, "rejected")
	// MESH reports the uncollected MENACWY file undelivered, after its 5 days.
	menacwy := waitStatus(t, ctx, s, "MENACWY", 1, "accepted")
	waitFor(t, ctx, s, "DPS to leave the MENACWY file", func() bool { return menacwyLeft.Load() })
	if _, err := s.sandbox.ReportUndelivered(menacwy[0].message); err != nil {
		t.Fatalf("report the MENACWY file undelivered: %v", err)
	}
	waitStatus(t, ctx, s, "MENACWY", 1, "failed")

	// The three refused records show with their diagnostic and wait; the others were accepted.
	waiting := trackerRecords(t, ctx, s, "--refused", "--programme", "HPV")
	if len(waiting) != 3 {
		t.Fatalf("tracker records --refused lists %d records, want 3: %+v", len(waiting), waiting)
	}
	for _, d := range waiting {
		if !contains(refused, d.RecordUUID) || d.Diagnostic != refusedDiagnostic || d.Outcome != tracking.OutcomeRefused ||
			d.ResponseCode != dps.BusAckRefusedCode || d.DownloadedAt == nil || d.MESHMessage == "" || d.ChangedSince {
			t.Errorf("refused record %+v", d)
		}
	}
	hpv := waitStatus(t, ctx, s, "HPV", 1, "processed")[0]
	byOutcome := map[string]int{}
	for _, d := range trackerRecords(t, ctx, s, "--export", hpv.id) {
		byOutcome[d.Outcome]++
	}
	if byOutcome[tracking.OutcomeRefused] != 3 || byOutcome[tracking.OutcomeAccepted] != hpv.rows-3 || len(byOutcome) != 2 {
		t.Errorf("HPV export's records by outcome %v, want 3 refused and %d accepted", byOutcome, hpv.rows-3)
	}

	// One of the three is corrected; the next run carries it (as new: the receiver never took it), and
	// re-exports the rejected and the failed programmes' records.
	corrected := refused[0]
	if _, err := s.pool.Exec(ctx, `UPDATE vaccination_records SET dose_volume_ml = 0.5, updated_at = now() WHERE uuid = $1`, corrected); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestAll(ctx); err != nil {
		t.Fatal(err)
	}
	second := waitStatus(t, ctx, s, "HPV", 2, "processed")[1]
	waitStatus(t, ctx, s, "FLU", 2, "processed")
	waitStatus(t, ctx, s, "MENACWY", 2, "processed")
	history := trackerRecords(t, ctx, s, "--record", corrected)
	if len(history) != 2 || history[0].Outcome != tracking.OutcomeRefused || history[1].Outcome != tracking.OutcomeAccepted ||
		history[1].ExportID != second.id || history[1].Action != "new" {
		t.Errorf("history of the corrected record: %+v", history)
	}
	if second.rows != 1 {
		t.Errorf("the second HPV export carries %d rows, want only the corrected record", second.rows)
	}
	if still := trackerRecords(t, ctx, s, "--refused"); len(still) != 2 {
		t.Errorf("%d records still refused, want the 2 not corrected: %+v", len(still), still)
	}
	// The rejected and the failed file each went to MESH once more, no more.
	for _, p := range []string{"FLU", "MENACWY"} {
		if n := sandboxFiles(s, p); n != 2 {
			t.Errorf("MESH holds %d %s files from us, want 2 (the first and the re-export)", n, p)
		}
	}
	if err := s.VerifyOutcomes(ctx, map[string]bool{refused[1]: true, refused[2]: true}); err != nil {
		t.Error(err)
	}
	s.printSummary()
	t.Logf("lifecycle:\n%s", out.String())
}

type exportRow struct {
	id, status, message string
	rows                int
}

// waitStatus waits until the programme has n exports and the n-th is in status, and returns them in
// creation order.
func waitStatus(t *testing.T, ctx context.Context, s *Stack, programme string, n int, status string) []exportRow {
	t.Helper()
	var got []exportRow
	waitFor(t, ctx, s, programme+" export "+status, func() bool {
		rows, err := s.pool.Query(ctx, `
			SELECT e.id::text, e.status, coalesce(e.mesh_message_id, ''), e.row_count FROM dps_exports e
			JOIN programmes p ON p.id = e.programme_id WHERE p.code = $1 ORDER BY e.created_at`, programme)
		if err != nil {
			return false
		}
		got, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (exportRow, error) {
			var e exportRow
			err := r.Scan(&e.id, &e.status, &e.message, &e.rows)
			return e, err
		})
		return err == nil && len(got) >= n && got[n-1].status == status
	})
	return got
}

func waitFor(t *testing.T, ctx context.Context, s *Stack, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %s", what, s.board.counts())
		case e := <-s.exited:
			t.Fatalf("%s exited: %v", e.name, e.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// trackerRecords runs `tracker records ARGS --json` against the stack.
func trackerRecords(t *testing.T, ctx context.Context, s *Stack, args ...string) []tracking.Delivery {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := s.Command(ctx, "tracker", append(append([]string{"records"}, args...), "--json"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tracker records %v: %v\n%s", args, err, stderr.String())
	}
	var out []tracking.Delivery
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var d tracking.Delivery
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("tracker records %v: %q: %v", args, sc.Text(), err)
		}
		out = append(out, d)
	}
	// The table form runs too, and names records by UUID only.
	var table bytes.Buffer
	cmd = s.Command(ctx, "tracker", append([]string{"records"}, args...))
	cmd.Stdout, cmd.Stderr = &table, &stderr
	if err := cmd.Run(); err != nil || !strings.HasPrefix(table.String(), "RECORD") && len(out) > 0 {
		t.Errorf("tracker records %v (table): %v\n%s%s", args, err, table.String(), stderr.String())
	}
	return out
}

// sandboxFiles counts the files we sent for a programme.
func sandboxFiles(s *Stack, programme string) int {
	n := 0
	for _, m := range s.sandbox.Messages(ourMailbox) {
		if m.From == ourMailbox && strings.Contains(m.FileName, programme) && !strings.Contains(m.FileName, "Ack_") {
			n++
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
