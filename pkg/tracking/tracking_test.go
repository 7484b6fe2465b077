package tracking_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// TestAcknowledged sends 50 exports, lets DPS acknowledge them through the MESH API, and checks that
// one tracker, then three replicas sharing the database, end every export acknowledged with exactly
// one dps.export.acknowledged event each.
func TestAcknowledged(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(map[int]string{1: "one tracker", 3: "three replicas"}[replicas], func(t *testing.T) {
			e := newEnv(t)
			const n = 50
			exports := make([]export, n)
			for i := range exports {
				exports[i] = e.sendExport(t, 1)
			}
			var trackers []*tracking.Tracker
			for range replicas {
				pool := e.newPool(t)
				trackers = append(trackers, e.start(t, e.trackerConfig(pool, slog.New(slog.DiscardHandler))))
			}
			// Tracking starts before DPS acts: every export is seen accepted first and backs off.
			for _, x := range exports[:n/2] {
				e.publishSent(t, x)
			}
			waitFor(t, "first polls", func() bool {
				var polled int
				_ = e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_exports WHERE track_failures > 0`).Scan(&polled)
				return polled == n
			})
			if got := e.actAsDPS(t); got != n {
				t.Fatalf("DPS acknowledged %d messages, want %d", got, n)
			}
			waitFor(t, "every export acknowledged", func() bool { return e.countStatus(t, "acknowledged") == n })
			waitFor(t, "events published", func() bool { return e.unpublished(t) == 0 })

			if got := e.outboxCount(t, bus.SubjectExportAcknowledged); got != n {
				t.Errorf("enqueued %d dps.export.acknowledged events, want %d", got, n)
			}
			if got := e.streamCount(t, bus.StreamEvents, bus.SubjectExportAcknowledged); got != n {
				t.Errorf("DPS_EVENTS holds %d dps.export.acknowledged events, want %d", got, n)
			}
			var transitions, observed float64
			for _, tr := range trackers {
				transitions += counterValue(t, tr.Metrics().Transitions, "acknowledged")
				observed += float64(histogramCount(t, tr.Metrics()))
			}
			if transitions != n || observed != n {
				t.Errorf("metrics: %v transitions and %v sent-to-acknowledged observations, want %d each", transitions, observed, n)
			}
			split := make([]float64, len(trackers))
			for i, tr := range trackers {
				split[i] = counterValue(t, tr.Metrics().Transitions, "acknowledged")
			}
			t.Logf("acknowledgements per replica: %v", split)
			var ackNull int
			_ = e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_exports WHERE acknowledged_at IS NULL OR next_track_at IS NOT NULL`).Scan(&ackNull)
			if ackNull != 0 {
				t.Errorf("%d acknowledged exports lack acknowledged_at or still have next_track_at", ackNull)
			}
		})
	}
}

// TestUndeliverable: MESH gives up on a message; its export fails once and its records are queued again.
func TestUndeliverable(t *testing.T) {
	e := newEnv(t)
	doomed := e.sendExport(t, 3)
	fine := e.sendExport(t, 2)
	if err := e.sandbox.MarkUndeliverable(doomed.MessageID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.start(t, e.trackerConfig(e.newPool(t), slog.New(slog.DiscardHandler)))
	}
	waitFor(t, "undeliverable export failed", func() bool { return e.exportStatus(t, doomed.ID) == "failed" })
	waitFor(t, "events published", func() bool { return e.unpublished(t) == 0 })

	if got := e.outboxCount(t, bus.SubjectExportFailed); got != 1 {
		t.Errorf("enqueued %d dps.export.failed events, want 1", got)
	}
	if got := e.streamCount(t, bus.StreamEvents, bus.SubjectExportFailed); got != 1 {
		t.Errorf("DPS_EVENTS holds %d dps.export.failed events, want 1", got)
	}
	var payload []byte
	if err := e.pool.QueryRow(t.Context(), `SELECT payload::text FROM dps_outbox WHERE subject = $1`, bus.SubjectExportFailed).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	var ev bus.ExportFailed
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ExportID != doomed.ID || ev.Stage != "tracker" || ev.MeshErrorCode != "14" || !strings.Contains(ev.Reason, "undeliverable") {
		t.Errorf("failed event = %+v, want export %s, stage tracker, code 14, an undeliverable reason", ev, doomed.ID)
	}
	var lastErr, code string
	if err := e.pool.QueryRow(t.Context(), `SELECT last_error, last_error_code FROM dps_exports WHERE id = $1 AND failed_at IS NOT NULL`, doomed.ID).Scan(&lastErr, &code); err != nil {
		t.Fatal(err)
	}
	if code != "14" || !strings.Contains(lastErr, "undeliverable") {
		t.Errorf("export error = %q %q, want MESH's code 14 and its description", code, lastErr)
	}
	// The failed export's records are candidates again; the other export's are not.
	var requeued int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, doomed.RecordIDs).Scan(&requeued); err != nil {
		t.Fatal(err)
	}
	if requeued != len(doomed.RecordIDs) {
		t.Errorf("%d of %d records queued again", requeued, len(doomed.RecordIDs))
	}
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, fine.RecordIDs).Scan(&requeued); err != nil {
		t.Fatal(err)
	}
	if requeued != 0 {
		t.Errorf("%d records of the healthy export were queued again", requeued)
	}
	if got := e.exportStatus(t, fine.ID); got != "accepted" {
		t.Errorf("healthy export is %s, want accepted", got)
	}
}

// TestHandshakeFailure: the mailbox handshake keeps failing; that is an ERROR line and a metric, and
// exports are still tracked to the end.
func TestHandshakeFailure(t *testing.T) {
	e := newEnv(t)
	e.sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteHandshake, Status: http.StatusInternalServerError, Count: 1000})
	x := e.sendExport(t, 1)
	var logs logBuffer
	cfg := e.trackerConfig(e.pool, newJSONLogger(&logs))
	tr := e.start(t, cfg)

	waitFor(t, "handshake failure counted", func() bool { return counterValue(t, tr.Metrics().Handshakes, "failed") >= 1 })
	waitFor(t, "ERROR log line", func() bool { return len(logs.lines("ERROR", "handshake failed")) > 0 })
	if err := tr.MESHCheck().Probe(t.Context()); err == nil {
		t.Error("MESH health check passes after a failed handshake")
	}
	e.actAsDPS(t)
	waitFor(t, "export acknowledged despite the failing handshake", func() bool { return e.exportStatus(t, x.ID) == "acknowledged" })
	waitFor(t, "handshake retried", func() bool { return counterValue(t, tr.Metrics().Handshakes, "failed") >= 2 })

	// The failure is published too.
	waitFor(t, "mesh.mailbox.validated failed event", func() bool {
		return e.streamCount(t, bus.StreamEvents, bus.SubjectMailboxValidated) >= 1
	})

	// Once MESH answers again the handshake recovers.
	e.sandbox.ClearFaults()
	waitFor(t, "handshake ok", func() bool { return counterValue(t, tr.Metrics().Handshakes, "ok") >= 1 })
	if err := tr.MESHCheck().Probe(t.Context()); err != nil {
		t.Errorf("MESH health check after a good handshake: %v", err)
	}
}

// TestUnknownMessage: MESH tracking answers 404 for the message; past TRACKER_UNKNOWN_TIMEOUT the export
// fails with that reason.
func TestUnknownMessage(t *testing.T) {
	e := newEnv(t)
	x := e.sendExport(t, 2)
	if _, err := e.pool.Exec(t.Context(), `UPDATE dps_exports SET mesh_message_id = 'NOSUCHMESSAGE0000000000000000000' WHERE id = $1`, x.ID); err != nil {
		t.Fatal(err)
	}
	cfg := e.trackerConfig(e.pool, slog.New(slog.DiscardHandler))
	cfg.UnknownTimeout = 300 * time.Millisecond
	tr := e.start(t, cfg)

	waitFor(t, "unknown export failed", func() bool { return e.exportStatus(t, x.ID) == "failed" })
	var reason string
	var unknownSince *time.Time
	if err := e.pool.QueryRow(t.Context(), `SELECT last_error, tracking_unknown_since FROM dps_exports WHERE id = $1`, x.ID).Scan(&reason, &unknownSince); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reason, "TRACKER_UNKNOWN_TIMEOUT") || unknownSince == nil {
		t.Errorf("reason %q (unknown since %v), want the unknown timeout named and the clock kept", reason, unknownSince)
	}
	if counterValue(t, tr.Metrics().TrackingErrors, "unknown") < 1 {
		t.Error("no unknown tracking error counted")
	}
	waitFor(t, "events published", func() bool { return e.unpublished(t) == 0 })
	if got := e.outboxCount(t, bus.SubjectExportFailed); got != 1 {
		t.Errorf("enqueued %d dps.export.failed events, want 1", got)
	}
}

// TestGateClosed: with MESH_JOBS_ENABLED=false nothing reaches MESH, the WARN line says so, and
// dps.export.sent is still consumed.
func TestGateClosed(t *testing.T) {
	e := newEnv(t)
	x := e.sendExport(t, 1)
	e.actAsDPS(t)
	before := e.sandbox.Requests("")

	var logs logBuffer
	cfg := e.trackerConfig(e.pool, newJSONLogger(&logs))
	cfg.JobsEnabled = false
	cfg.GateWarnInterval = 50 * time.Millisecond
	tr := e.start(t, cfg)

	e.publishSent(t, x)
	waitFor(t, "dps.export.sent consumed", func() bool {
		var due bool
		_ = e.pool.QueryRow(t.Context(), `SELECT next_track_at IS NOT NULL FROM dps_exports WHERE id = $1`, x.ID).Scan(&due)
		return due
	})
	waitFor(t, "repeated WARN lines", func() bool { return len(logs.lines("WARN", "MESH_JOBS_ENABLED is false")) >= 3 })

	if got := e.sandbox.Requests("") - before; got != 0 {
		t.Errorf("%d MESH requests with the gate closed, want 0", got)
	}
	if got := e.exportStatus(t, x.ID); got != "accepted" {
		t.Errorf("export is %s with the gate closed, want accepted", got)
	}
	if err := tr.MESHCheck().Probe(t.Context()); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("MESH health check = %v, want disabled", err)
	}
}

// TestInvalidSentEvent: a dps.export.sent message that breaks its schema is dead-lettered with stage
// tracker, then acknowledged (not terminated), like every consumer's dead letters; and the consumer
// carries on with the next one.
func TestInvalidSentEvent(t *testing.T) {
	e := newEnv(t)
	terminated := natstest.CountTerminations(t, e.js.Conn(), bus.StreamEvents, bus.ConsumerTracker)
	e.start(t, e.trackerConfig(e.pool, slog.New(slog.DiscardHandler)))
	if _, err := e.js.Publish(t.Context(), bus.SubjectExportSent, []byte(`{"export_id": "not-a-uuid"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dead letter", func() bool {
		return e.streamCount(t, bus.StreamDeadLetter, "dps.deadletter.tracker") == 1
	})
	waitFor(t, "the invalid event acknowledged", func() bool {
		c, err := e.js.Consumer(t.Context(), bus.StreamEvents, bus.ConsumerTracker)
		if err != nil {
			return false
		}
		ci, err := c.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.NumRedelivered == 0
	})
	if n := terminated(); n != 0 {
		t.Fatalf("%d messages terminated, want the dead-lettered one acknowledged", n)
	}
	x := e.sendExport(t, 1)
	e.actAsDPS(t)
	e.publishSent(t, x)
	waitFor(t, "later export acknowledged", func() bool { return e.exportStatus(t, x.ID) == "acknowledged" })
}
