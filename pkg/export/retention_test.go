package export

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

// TestObjectRetention: the file of an export acknowledged longer ago than the retention, and that of a
// failed export, are deleted and recorded as such; files still needed (recently acknowledged, not yet
// sent) stay.
func TestObjectRetention(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	exportIn := func(state string) string {
		e.addRecord(demodata.RecordSpec{})
		id := e.exportOne(request("HPV")).ExportID
		e.exec(state, id)
		return id
	}
	old := exportIn(`UPDATE dps_exports SET status = 'acknowledged', sent_at = now() - interval '9 days', acknowledged_at = now() - interval '8 days' WHERE id = $1`)
	recent := exportIn(`UPDATE dps_exports SET status = 'acknowledged', sent_at = now() - interval '2 days', acknowledged_at = now() - interval '1 day' WHERE id = $1`)
	failed := exportIn(`UPDATE dps_exports SET status = 'failed', failed_at = now() WHERE id = $1`)
	waiting := exportIn(`SELECT $1::uuid`)

	n, err := SweepRetained(t.Context(), e.pool, e.objects, 7*24*time.Hour, now, e.log)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d, %v; want 2", n, err)
	}
	for id, wantGone := range map[string]bool{old: true, failed: true, recent: false, waiting: false} {
		_, err := e.objects.GetInfo(t.Context(), id)
		gone := errors.Is(err, jetstream.ErrObjectNotFound)
		if gone != wantGone {
			t.Errorf("export %s: file gone %v (%v), want %v", id, gone, err, wantGone)
		}
		recorded := e.count(`SELECT count(*) FROM dps_exports WHERE id = $1 AND object_deleted_at IS NOT NULL`, id) == 1
		if recorded != wantGone {
			t.Errorf("export %s: deletion recorded %v, want %v", id, recorded, wantGone)
		}
	}
	if n, err := SweepRetained(t.Context(), e.pool, e.objects, 7*24*time.Hour, now, e.log); err != nil || n != 0 {
		t.Fatalf("second sweep deleted %d, %v; want 0", n, err)
	}
}
