package lifecycle_test

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

func TestStatusNamesRoundTrip(t *testing.T) {
	want := []string{"created", "accepted", "acknowledged", "received", "processed", "failed", "rejected"}
	var got []string
	for _, s := range lifecycle.All() {
		got = append(got, s.String())
		p, err := lifecycle.Parse(s.String())
		if err != nil || p != s {
			t.Errorf("Parse(%q) = %v, %v", s, p, err)
		}
		b, err := json.Marshal(s)
		if err != nil || string(b) != `"`+s.String()+`"` {
			t.Errorf("JSON of %v: %s, %v", s, b, err)
		}
		var back lifecycle.Status
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("JSON round trip of %v: %v, %v", s, back, err)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	for _, bad := range []string{`"sent"`, `""`, `3`, `"ACCEPTED"`} {
		var s lifecycle.Status
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("UnmarshalJSON(%s) accepted %v", bad, s)
		}
	}
	if _, err := json.Marshal(lifecycle.Status(0)); err == nil {
		t.Error("the zero Status marshals")
	}
}

func TestAllowedTransitions(t *testing.T) {
	c, a, k, f := lifecycle.Created, lifecycle.Accepted, lifecycle.Acknowledged, lifecycle.Failed
	r, p, j := lifecycle.Received, lifecycle.Processed, lifecycle.Rejected
	tests := []struct {
		from, to lifecycle.Status
		want     bool
	}{
		{c, a, true}, {c, f, true}, {c, k, false}, {c, r, false}, {c, p, false}, {c, j, false},
		{a, k, true}, {a, f, true}, {a, a, true}, {a, c, false}, {a, r, false}, {a, p, true}, {a, j, true},
		{k, a, true}, {k, f, true}, {k, c, false}, {k, r, true}, {k, p, true}, {k, j, true},
		{r, p, true}, {r, f, true}, {r, j, false}, {r, a, false}, {r, k, false},
		{p, f, false}, {p, j, false}, {p, a, false}, {p, r, false},
		{f, a, false}, {f, k, false}, {f, c, false}, {f, r, false}, {f, p, false},
		{j, a, false}, {j, r, false}, {j, p, false}, {j, f, false},
	}
	for _, tt := range tests {
		if got := lifecycle.Allowed(tt.from, tt.to); got != tt.want {
			t.Errorf("Allowed(%v, %v) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
	if got := lifecycle.LiveCondition("e"); got != "e.status NOT IN ('failed', 'rejected')" {
		t.Errorf("LiveCondition = %q", got)
	}
}

// world is a migrated database with one HPV record carried by one export.
type world struct {
	pool     *pgxpool.Pool
	exportID string
	recordID int64
}

func newWorld(t *testing.T, pool *pgxpool.Pool, status lifecycle.Status) world {
	t.Helper()
	ctx := t.Context()
	id, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{})
	if err != nil {
		t.Fatal(err)
	}
	w := world{pool: pool, exportID: uuid.NewString(), recordID: id}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_exports (id, programme_id, filename, status)
			SELECT $1, programme_id, 'Vaccinations-HPV-2024-08-23.csv', $2 FROM vaccination_records WHERE id = $3`, w.exportID, status, id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
			SELECT $1, id, updated_at, 'new' FROM vaccination_records WHERE id = $2`, w.exportID, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM dps_pending_records WHERE vaccination_record_id = $1`, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w world) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (w world) status(t *testing.T) lifecycle.Status {
	t.Helper()
	s, err := lifecycle.StatusOf(t.Context(), w.pool, w.exportID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCheckConstraintAgrees: the migration's CHECK allows exactly the statuses this package defines, and
// every one of them can be written and read back through pgx.
func TestCheckConstraintAgrees(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	var def string
	if err := pool.QueryRow(t.Context(), `
		SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
		WHERE c.conrelid = 'dps_exports'::regclass AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE '%status%'`).Scan(&def); err != nil {
		t.Fatal(err)
	}
	var inCheck []string
	for _, m := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(def, -1) {
		inCheck = append(inCheck, m[1])
	}
	var ours []string
	for _, s := range lifecycle.All() {
		ours = append(ours, s.String())
		w := newWorld(t, pool, s)
		if got := w.status(t); got != s {
			t.Errorf("wrote %v, read %v", s, got)
		}
	}
	slices.Sort(inCheck)
	slices.Sort(ours)
	if !slices.Equal(inCheck, ours) {
		t.Errorf("CHECK allows %v, lifecycle defines %v", inCheck, ours)
	}
	if _, err := lifecycle.StatusOf(t.Context(), pool, uuid.NewString()); err == nil {
		t.Error("StatusOf an unknown export: no error")
	}
}

// TestTransitionsCompareAndSet: each transition happens once, from the statuses it may start from,
// with its event in the outbox and (for a failure) the records queued again, all in one transaction.
func TestTransitionsCompareAndSet(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	inTx := func(t *testing.T, f func(tx pgx.Tx) error) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, f); err != nil {
			t.Fatal(err)
		}
	}
	outbox := func(t *testing.T, w world, subject string) int {
		return w.count(t, `SELECT count(*) FROM dps_outbox WHERE subject = $1 AND payload->>'export_id' = $2`, subject, w.exportID)
	}
	pending := func(t *testing.T, w world) int {
		return w.count(t, `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = $1`, w.recordID)
	}

	t.Run("created → accepted → acknowledged, each once", func(t *testing.T) {
		w := newWorld(t, pool, lifecycle.Created)
		acc := lifecycle.Acceptance{ExportID: w.exportID, Programme: "HPV", Filename: "Vaccinations-HPV-2024-08-23.csv", MessageID: "M1", LocalID: w.exportID + ".1", Attempt: 1}
		for i, want := range []bool{true, false} {
			inTx(t, func(tx pgx.Tx) error {
				changed, _, err := lifecycle.MarkAccepted(ctx, tx, acc)
				if changed != want {
					t.Errorf("accept %d: changed %v, want %v", i+1, changed, want)
				}
				return err
			})
		}
		if w.status(t) != lifecycle.Accepted || outbox(t, w, bus.SubjectExportSent) != 1 {
			t.Fatalf("status %v with %d sent events, want accepted with 1", w.status(t), outbox(t, w, bus.SubjectExportSent))
		}
		for i, want := range []bool{true, false} {
			inTx(t, func(tx pgx.Tx) error {
				changed, _, err := lifecycle.MarkAcknowledged(ctx, tx, w.exportID, "HPV", "M1")
				if changed != want {
					t.Errorf("acknowledge %d: changed %v, want %v", i+1, changed, want)
				}
				return err
			})
		}
		if w.status(t) != lifecycle.Acknowledged || outbox(t, w, bus.SubjectExportAcknowledged) != 1 {
			t.Fatalf("status %v with %d acknowledged events", w.status(t), outbox(t, w, bus.SubjectExportAcknowledged))
		}
		// A forced re-send is announced under its own id.
		acc.Forced, acc.MessageID, acc.LocalID, acc.Attempt = true, "M2", w.exportID+".2", 2
		inTx(t, func(tx pgx.Tx) error {
			changed, _, err := lifecycle.MarkAccepted(ctx, tx, acc)
			if !changed {
				t.Error("forced re-send of an acknowledged export did not change it")
			}
			return err
		})
		if w.status(t) != lifecycle.Accepted || outbox(t, w, bus.SubjectExportSent) != 2 {
			t.Errorf("after a forced re-send: %v with %d sent events", w.status(t), outbox(t, w, bus.SubjectExportSent))
		}
	})

	t.Run("failed releases the records, once", func(t *testing.T) {
		w := newWorld(t, pool, lifecycle.Accepted)
		f := lifecycle.Failure{ExportID: w.exportID, Programme: "HPV", From: lifecycle.Accepted, Stage: bus.StageTracker,
			Reason: "MESH reports the message undeliverable", Code: "14"}
		if pending(t, w) != 0 {
			t.Fatal("record queued before the failure")
		}
		for i, want := range []bool{true, false} {
			inTx(t, func(tx pgx.Tx) error {
				changed, _, err := lifecycle.MarkFailed(ctx, tx, f)
				if changed != want {
					t.Errorf("fail %d: changed %v, want %v", i+1, changed, want)
				}
				return err
			})
		}
		if w.status(t) != lifecycle.Failed || outbox(t, w, bus.SubjectExportFailed) != 1 || pending(t, w) != 1 {
			t.Errorf("status %v, %d failed events, %d pending, want failed, 1, 1", w.status(t), outbox(t, w, bus.SubjectExportFailed), pending(t, w))
		}
	})

	t.Run("a rolled-back transition leaves no event", func(t *testing.T) {
		w := newWorld(t, pool, lifecycle.Created)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := lifecycle.MarkFailed(ctx, tx, lifecycle.Failure{ExportID: w.exportID, Programme: "HPV",
			From: lifecycle.Created, Stage: bus.StageSender, Reason: "r", Code: "C"}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if w.status(t) != lifecycle.Created || outbox(t, w, bus.SubjectExportFailed) != 0 || pending(t, w) != 0 {
			t.Errorf("after rollback: %v, %d events, %d pending", w.status(t), outbox(t, w, bus.SubjectExportFailed), pending(t, w))
		}
	})

	t.Run("transitions the lifecycle forbids are refused before any SQL", func(t *testing.T) {
		w := newWorld(t, pool, lifecycle.Acknowledged)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, _, err := lifecycle.MarkFailed(ctx, tx, lifecycle.Failure{ExportID: w.exportID, From: lifecycle.Acknowledged, Stage: bus.StageTracker, Reason: "r"})
			return err
		})
		if err == nil {
			t.Error("acknowledged → failed allowed")
		}
	})

	t.Run("release refuses a live export", func(t *testing.T) {
		w := newWorld(t, pool, lifecycle.Accepted)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return lifecycle.Release(context.Background(), tx, w.exportID) })
		if err == nil || pending(t, w) != 0 {
			t.Errorf("release of an accepted export: %v, %d pending", err, pending(t, w))
		}
	})
}
