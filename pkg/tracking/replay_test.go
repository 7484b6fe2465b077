package tracking_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// TestReplay runs the tracker's replay handler over dps.export.sent: exports already past accepted are
// skipped and counted, an accepted one becomes due, --dry-run changes nothing, and --force asks MESH
// at once.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	acked := e.sendExport(t, 1)
	pending := e.sendExport(t, 1)
	// DPS acknowledges only the first.
	d, err := e.dps.Download(t.Context(), acked.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	d.Body.Close()
	if err := e.dps.Acknowledge(t.Context(), acked.MessageID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(t.Context(), `UPDATE dps_exports SET status = 'acknowledged', acknowledged_at = now() WHERE id = $1`, acked.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(t.Context(), `UPDATE dps_exports SET next_track_at = now() + interval '1 day' WHERE id = $1`, pending.ID); err != nil {
		t.Fatal(err)
	}
	e.publishSent(t, acked)
	e.publishSent(t, pending)
	all := replay.Range{FromSeq: 1}

	run := func(o tracking.ReplayOptions) replay.Summary {
		t.Helper()
		h, err := tracking.ReplayHandler(e.pool, o)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := replay.Run(t.Context(), e.js, bus.StreamEvents, bus.SubjectExportSent, all, h)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_ = sum.Print(&b)
		t.Logf("%+v\n%s", o, b.String())
		return sum
	}
	notDue := func() bool {
		var later bool
		_ = e.pool.QueryRow(t.Context(), `SELECT next_track_at > now() FROM dps_exports WHERE id = $1`, pending.ID).Scan(&later)
		return later
	}

	sum := run(tracking.ReplayOptions{DryRun: true})
	if sum.Count(replay.DryRun) != 2 || !notDue() {
		t.Errorf("dry run: %d dry-run entries, export left not due = %v", sum.Count(replay.DryRun), notDue())
	}

	sum = run(tracking.ReplayOptions{})
	if sum.Count(replay.Skipped) != 1 || sum.Count(replay.Done) != 1 || notDue() {
		t.Errorf("replay: skipped %d, done %d (want 1, 1); pending export due: %v", sum.Count(replay.Skipped), sum.Count(replay.Done), !notDue())
	}

	if _, err := tracking.ReplayHandler(e.pool, tracking.ReplayOptions{Force: true}); err == nil {
		t.Error("--force without a MESH client was accepted")
	}
	tr, err := tracking.New(e.trackerConfig(e.pool, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	// DPS now acknowledges the second too; --force finds it out at once, without a running tracker.
	e.actAsDPS(t)
	sum = run(tracking.ReplayOptions{Force: true, Tracker: tr})
	if sum.Count(replay.Forced) != 1 || sum.Count(replay.Done) != 1 {
		t.Errorf("force: forced %d, done %d, want 1 and 1", sum.Count(replay.Forced), sum.Count(replay.Done))
	}
	if got := e.exportStatus(t, pending.ID); got != "acknowledged" {
		t.Errorf("pending export is %s after --force, want acknowledged", got)
	}
	if got := e.outboxCount(t, bus.SubjectExportAcknowledged); got != 1 {
		t.Errorf("%d acknowledged events enqueued, want 1 (the forced re-track of the first changes nothing)", got)
	}
}
