package tracking_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

// TestForgedSentEventsDeadLettered: dps.export.sent events that name an export Postgres does not hold,
// or a real export under another MESH message id, are dead-lettered and change nothing; the real event
// is tracked as usual.
func TestForgedSentEventsDeadLettered(t *testing.T) {
	e := newEnv(t)
	x := e.sendExport(t, 1)
	unknown := export{ID: uuid.NewString(), MessageID: "20260101000000000000_FORGED"}
	otherMessage := export{ID: x.ID, MessageID: "20260101000000000000_OTHER1"}
	e.publishSent(t, unknown)
	// Another Nats-Msg-Id, as a forger could choose; publishSent uses the sender's.
	ev := bus.ExportSent{EventID: uuid.NewString(), ExportID: otherMessage.ID, Programme: "HPV",
		Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", MeshMessageID: otherMessage.MessageID, LocalID: x.ID + ".1",
		Attempt: 1, SentAt: time.Now().UTC()}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportSent, "forged-sent", ev); err != nil {
		t.Fatal(err)
	}
	e.start(t, e.trackerConfig(e.pool, slog.New(slog.DiscardHandler)))
	waitFor(t, "two dead letters", func() bool {
		return e.streamCount(t, bus.StreamDeadLetter, bus.SubjectDeadLetterTracker) == 2
	})
	if st := e.exportStatus(t, x.ID); st != "accepted" {
		t.Fatalf("export %s after forged events, want accepted", st)
	}
	e.actAsDPS(t)
	e.publishSent(t, x)
	waitFor(t, "the real export acknowledged", func() bool { return e.exportStatus(t, x.ID) == "acknowledged" })
}
