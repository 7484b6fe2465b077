package export

import (
	"context"
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

// laggingReplica is the bucket as a replica that has not caught up answers it: Delete finds no object.
type laggingReplica struct{ jetstream.ObjectStore }

func (laggingReplica) Delete(context.Context, string) error { return jetstream.ErrObjectNotFound }

// TestRetentionChecksANotFoundWithTheLeader: a file the Object Store says is not there, but still lists,
// is not recorded as deleted (it would stay until the bucket's TTL); the next sweep deletes it. A file
// that is really gone is recorded as deleted.
func TestRetentionChecksANotFoundWithTheLeader(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	e.addRecord(demodata.RecordSpec{})
	id := e.exportOne(request("HPV")).ExportID
	e.exec(`UPDATE dps_exports SET status = 'failed', failed_at = now() WHERE id = $1`, id)
	recorded := func() bool {
		return e.count(`SELECT count(*) FROM dps_exports WHERE id = $1 AND object_deleted_at IS NOT NULL`, id) == 1
	}

	n, err := SweepRetained(t.Context(), e.pool, laggingReplica{e.objects}, 7*24*time.Hour, now, e.log)
	if err != nil || n != 0 || recorded() {
		t.Fatalf("the sweep told \"not found\" deleted %d (%v), recorded %v; want 0 and not recorded", n, err, recorded())
	}
	if _, err := e.objects.GetInfo(t.Context(), id); err != nil {
		t.Fatalf("the file: %v", err)
	}
	if n, err := SweepRetained(t.Context(), e.pool, e.objects, 7*24*time.Hour, now, e.log); err != nil || n != 1 || !recorded() {
		t.Fatalf("the next sweep deleted %d (%v), recorded %v; want 1, recorded", n, err, recorded())
	}
	// Gone for good now: "not found" is the truth, and it is recorded as such.
	e.exec(`UPDATE dps_exports SET object_deleted_at = NULL WHERE id = $1`, id)
	if n, err := SweepRetained(t.Context(), e.pool, laggingReplica{e.objects}, 7*24*time.Hour, now, e.log); err != nil || n != 1 || !recorded() {
		t.Fatalf("a sweep of a file really gone deleted %d (%v), recorded %v; want 1, recorded", n, err, recorded())
	}
}
