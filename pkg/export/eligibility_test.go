package export

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// TestEligibility walks one record through the contract's rules: each step changes the record (or
// fails its last export) and says which action, if any, the next export carries it with.
func TestEligibility(t *testing.T) {
	e := newEnv(t)
	id, _ := e.addRecord(demodata.RecordSpec{Programme: "FLU"})
	ctx := t.Context()
	tick := time.Date(2024, 10, 1, 9, 0, 0, 0, london)
	touch := func(set string) func() {
		return func() {
			tick = tick.Add(time.Hour)
			e.exec(`UPDATE vaccination_records SET `+set+`, updated_at = $2 WHERE id = $1`, id, tick)
		}
	}
	var lastExport string
	steps := []struct {
		name   string
		change func()
		want   string // action in the next export, "" for no export
	}{
		{"first time administered", func() {}, "new"},
		{"nothing changed", func() {}, ""},
		{"re-queued without a change", func() { e.exec(`UPDATE vaccination_records SET updated_at = updated_at WHERE id = $1`, id) }, ""},
		{"changed", touch("dose_sequence = 2"), "update"},
		{"made a draft", touch("draft = true"), "delete"},
		{"still a draft, changed", touch("dose_sequence = 1"), ""},
		{"recorded again", touch("draft = false"), "new"},
		{"outcome corrected to refused", touch("outcome = 'refused'"), "delete"},
		{"administered again", touch("outcome = 'administered'"), "new"},
		{"changed, and that export fails", touch("dose_sequence = 3"), "update"},
		{"after the failure is released", func() { failAndRelease(t, e, lastExport) }, "update"},
		{"discarded", touch("discarded_at = now()"), "delete"},
		{"discarded and changed", touch("dose_sequence = 4"), ""},
	}
	for _, s := range steps {
		s.change()
		res := e.exportOne(request("FLU"))
		var got string
		if res.Status == Created {
			if res.Rows != 1 {
				t.Fatalf("%s: %d rows, want 1", s.name, res.Rows)
			}
			if err := e.pool.QueryRow(ctx, `SELECT action FROM dps_export_records WHERE export_id = $1`, res.ExportID).Scan(&got); err != nil {
				t.Fatal(err)
			}
			e.file(res.ExportID)
			lastExport = res.ExportID
		}
		if got != s.want {
			t.Fatalf("%s: exported with %q, want %q (result %+v)", s.name, got, s.want, res)
		}
	}
}

func failAndRelease(t *testing.T, e *env, exportID string) {
	t.Helper()
	ctx := t.Context()
	err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if err := lifecycle.Release(ctx, tx, exportID); err == nil {
			t.Errorf("Release of a live export succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE dps_exports SET status = $2, failed_at = now() WHERE id = $1`, exportID, lifecycle.Failed); err != nil {
			return err
		}
		return lifecycle.Release(ctx, tx, exportID)
	})
	if err != nil {
		t.Fatalf("release: %v", err)
	}
}

// TestReleaseUnknownExport: releasing an export that does not exist is an error, not a silent no-op.
func TestReleaseUnknownExport(t *testing.T) {
	e := newEnv(t)
	err := pgx.BeginFunc(t.Context(), e.pool, func(tx pgx.Tx) error {
		return lifecycle.Release(context.Background(), tx, "00000000-0000-4000-8000-000000000000")
	})
	if err == nil {
		t.Fatal("want an error")
	}
}

// TestQueueRowCarriesRecordState: whichever way a record is queued (the recording application's insert
// or change, or a plain insert into the queue as a release does), its queue row holds the record's
// version and eligibility as the queueing transaction sees them, which is what deciding reads.
func TestQueueRowCarriesRecordState(t *testing.T) {
	e := newEnv(t)
	id, _ := e.addRecord(demodata.RecordSpec{Programme: "FLU"})
	check := func(step string, wantEligible bool) {
		t.Helper()
		var same, eligible bool
		if err := e.pool.QueryRow(t.Context(), `SELECT p.record_updated_at = r.updated_at, p.record_eligible
			FROM dps_pending_records p JOIN vaccination_records r ON r.id = p.vaccination_record_id WHERE r.id = $1`, id).
			Scan(&same, &eligible); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !same || eligible != wantEligible {
			t.Errorf("%s: queue row has the record's version: %v, eligible %v (want %v)", step, same, eligible, wantEligible)
		}
	}
	check("inserted", true)
	e.exec(`UPDATE vaccination_records SET discarded_at = clock_timestamp(), updated_at = clock_timestamp() WHERE id = $1`, id)
	check("discarded", false)
	e.exec(`UPDATE vaccination_records SET discarded_at = NULL, updated_at = clock_timestamp() WHERE id = $1`, id)
	check("restored", true)
	e.exec(`DELETE FROM dps_pending_records WHERE vaccination_record_id = $1`, id)
	e.exec(`INSERT INTO dps_pending_records (vaccination_record_id, programme_id) SELECT id, programme_id FROM vaccination_records WHERE id = $1`, id)
	check("queued by a plain insert", true)
	e.exec(`UPDATE vaccination_records SET outcome = 'refused', updated_at = clock_timestamp() WHERE id = $1`, id)
	check("outcome refused", false)
}
