package store_test

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// TestExportedRowsCannotBeDeleted: dps_export_records has no foreign keys (linking a backlog would pay a
// check per row), so the delete guards keep what the keys kept: a record or an export that a link names
// cannot be deleted, with the foreign-key SQLSTATE, and one that no link names can.
func TestExportedRowsCannotBeDeleted(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	exported, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{})
	if err != nil {
		t.Fatal(err)
	}
	unexported, _, err := demodata.AddRecord(ctx, pool, demodata.RecordSpec{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO dps_exports (id, programme_id, filename) SELECT '6d1f3c1e-8a43-4c5e-9a55-1f0b8f2c7e10', programme_id, 'f.csv' FROM vaccination_records WHERE id = $1`,
		`INSERT INTO dps_exports (id, programme_id, filename) SELECT '6d1f3c1e-8a43-4c5e-9a55-1f0b8f2c7e11', programme_id, 'g.csv' FROM vaccination_records WHERE id = $1`,
		`INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		 SELECT '6d1f3c1e-8a43-4c5e-9a55-1f0b8f2c7e10', id, updated_at, 'new' FROM vaccination_records WHERE id = $1`,
		`DELETE FROM dps_pending_records WHERE vaccination_record_id = $1`,
	} {
		if _, err := pool.Exec(ctx, sql, exported); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if _, err := pool.Exec(ctx, `DELETE FROM dps_pending_records WHERE vaccination_record_id = $1`, unexported); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		sql     string
		arg     any
		refused bool
	}{
		{"exported record", `DELETE FROM vaccination_records WHERE id = $1`, exported, true},
		{"export with records", `DELETE FROM dps_exports WHERE id = $1`, "6d1f3c1e-8a43-4c5e-9a55-1f0b8f2c7e10", true},
		{"record never exported", `DELETE FROM vaccination_records WHERE id = $1`, unexported, false},
		{"export without records", `DELETE FROM dps_exports WHERE id = $1`, "6d1f3c1e-8a43-4c5e-9a55-1f0b8f2c7e11", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag, err := pool.Exec(ctx, tt.sql, tt.arg)
			var pgErr *pgconn.PgError
			switch {
			case tt.refused && (!errors.As(err, &pgErr) || pgErr.Code != "23503"):
				t.Fatalf("delete: %v; want SQLSTATE 23503", err)
			case !tt.refused && (err != nil || tag.RowsAffected() != 1):
				t.Fatalf("delete: %v (%d rows); want one row deleted", err, tag.RowsAffected())
			}
		})
	}
}
