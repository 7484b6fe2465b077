package export

import (
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// TestReplay: replaying handled requests creates no export; --dry-run says so; --force makes a fresh
// export under a derived request id.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	x := e.exporter(e.pool)
	for _, id := range []string{"r-1", "r-2"} {
		req := bus.ExportRequest{RequestID: id, Programme: "HPV", RequestedBy: "test", RequestedAt: time.Now()}
		if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, id, req); err != nil {
			t.Fatal(err)
		}
		if _, err := x.Export(t.Context(), requestFromWire(req)); err != nil {
			t.Fatal(err)
		}
	}
	e.publishRaw(`{"nope": true}`, "r-bad")
	all := replay.Range{FromSeq: 1}
	run := func(force, dryRun bool) replay.Summary {
		t.Helper()
		sum, err := replay.Run(t.Context(), e.js, bus.StreamRequests, bus.SubjectExportRequest, all, x.ReplayHandler(force, dryRun))
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	exports := func() int { return e.count(`SELECT count(*) FROM dps_exports`) }
	if exports() != 1 {
		t.Fatalf("%d exports before the replay, want 1 (the second request had nothing to send)", exports())
	}

	if sum := run(false, false); sum.Count(replay.Skipped) != 3 || len(sum.Entries) != 3 || exports() != 1 {
		t.Fatalf("replay: %+v, %d exports; want 3 skipped and no new export", sum.Entries, exports())
	}
	e.addRecord(demodata.RecordSpec{}) // something unsent, so a forced run has work
	if sum := run(false, true); sum.Count(replay.DryRun) != 2 || exports() != 1 {
		t.Fatalf("dry run: %+v, %d exports", sum.Entries, exports())
	}
	if sum := run(true, true); sum.Count(replay.DryRun) != 2 || exports() != 1 {
		t.Fatalf("forced dry run: %+v, %d exports", sum.Entries, exports())
	}
	sum := run(true, false)
	if sum.Count(replay.Forced) != 2 || exports() != 2 {
		t.Fatalf("forced replay: %+v, %d exports; want 2 forced and one new export", sum.Entries, exports())
	}
	for _, en := range sum.Entries {
		t.Logf("%d %s %s", en.Seq, en.Outcome, en.Detail)
	}
	if n := e.count(`SELECT count(*) FROM dps_export_requests WHERE request_id LIKE 'replay:%:r-_'`); n != 2 {
		t.Fatalf("%d derived requests recorded, want 2", n)
	}
}
