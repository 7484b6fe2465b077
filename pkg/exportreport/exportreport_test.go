package exportreport_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/exportreport"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// TestStagesFollowTheLifecycle: every status of pkg/lifecycle is a stage of the listing, and its time
// column exists in dps_exports; a status added there without its column fails here.
func TestStagesFollowTheLifecycle(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	stages := exportreport.Stages()
	if len(stages) != len(lifecycle.All()) {
		t.Fatalf("%d stages for %d statuses", len(stages), len(lifecycle.All()))
	}
	for _, s := range stages {
		var n int
		if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.columns
			WHERE table_name = 'dps_exports' AND column_name = $1 AND data_type = 'timestamp with time zone'`, s.Column).Scan(&n); err != nil || n != 1 {
			t.Errorf("status %s: dps_exports has no timestamptz column %s (%v)", s.Status, s.Column, err)
		}
	}
}

// TestOldestAges: the age of the oldest export in each non-final status is measured from that
// status's own time, and is zero for a status no export is in.
func TestOldestAges(t *testing.T) {
	_, pool := pgtest.NewMigratedDatabase(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO programmes (code, name) VALUES ('HPV', 'HPV')`); err != nil {
		t.Fatal(err)
	}
	insert := func(status string, created, sent time.Duration) {
		t.Helper()
		var sentAt *time.Time
		if sent > 0 {
			at := time.Now().Add(-sent)
			sentAt = &at
		}
		if _, err := pool.Exec(ctx, `
			INSERT INTO dps_exports (id, programme_id, filename, status, created_at, sent_at)
			SELECT $1, id, 'f.csv', $2, $3, $4 FROM programmes`, uuid.New(), status, time.Now().Add(-created), sentAt); err != nil {
			t.Fatal(err)
		}
	}
	ages, err := exportreport.OldestAges(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	// received waits for the BusAck, so it is not final either.
	if ages["created"] != 0 || ages["accepted"] != 0 || ages["received"] != 0 || len(ages) != 3 {
		t.Fatalf("ages of an empty table: %v, want created, accepted and received at zero", ages)
	}
	insert("accepted", 30*time.Hour, 26*time.Hour) // sent 26 hours ago: the age counts from then
	insert("accepted", 3*time.Hour, 2*time.Hour)
	insert("created", 10*time.Minute, 0)
	insert("acknowledged", 100*time.Hour, 99*time.Hour) // final: not reported
	if ages, err = exportreport.OldestAges(ctx, pool); err != nil {
		t.Fatal(err)
	}
	near := func(got, want time.Duration) bool { return got > want-time.Minute && got < want+time.Minute }
	if !near(ages["accepted"], 26*time.Hour) || !near(ages["created"], 10*time.Minute) {
		t.Errorf("ages %v, want accepted 26h and created 10m", ages)
	}
	if _, ok := ages["acknowledged"]; ok {
		t.Errorf("a final status is reported: %v", ages)
	}
}
