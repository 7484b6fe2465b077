package outbox

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

// TestPoisonRowsSetAside: rows the stream can never take (a 1.17 MB dead letter, an event that breaks
// its schema) are set aside with the reason, counted and dead-lettered, while the rows after them are
// published; a set-aside row is never tried again.
func TestPoisonRowsSetAside(t *testing.T) {
	relay, _, js, ctx := setup(t)
	metrics := NewMetrics(prometheus.NewRegistry())
	relay.metrics = metrics
	pool := relay.pool

	insert := func(subject, msgID string, payload []byte) int64 {
		t.Helper()
		var id int64
		// Straight into the table, as a bug or an older release could have: Enqueue would refuse these.
		if err := pool.QueryRow(ctx, `INSERT INTO dps_outbox (subject, msg_id, payload) VALUES ($1, $2, $3) RETURNING id`,
			subject, msgID, payload).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	event := func(id string) []byte {
		b, err := json.Marshal(ackEvent(id))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	huge, err := json.Marshal(bus.DeadLetterMessage{Stage: "sender", Subject: bus.SubjectExportReady, Reason: "r",
		Payload: strings.Repeat("x", 1_170_000), Headers: map[string][]string{}, Stream: bus.StreamBatches, StreamSeq: 1, Deliveries: 1})
	if err != nil {
		t.Fatal(err)
	}
	insert(bus.SubjectExportAcknowledged, "acknowledged:"+exportIDs[0], event(exportIDs[0]))
	hugeID := insert(bus.SubjectDeadLetterSender, "sender:DPS_BATCHES:1", huge)
	invalidID := insert(bus.SubjectExportAcknowledged, "acknowledged:bad", []byte(`{"export_id":"not-a-uuid"}`))
	insert(bus.SubjectExportAcknowledged, "acknowledged:"+exportIDs[1], event(exportIDs[1]))

	if _, err := relay.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if n := streamCount(t, ctx, js, bus.SubjectExportAcknowledged); n != 2 {
		t.Fatalf("%d acknowledged events published, want both valid ones", n)
	}
	for _, id := range []int64{hugeID, invalidID} {
		var setAside bool
		var lastError string
		if err := pool.QueryRow(ctx, `SELECT set_aside_at IS NOT NULL, coalesce(last_error, '') FROM dps_outbox WHERE id = $1`, id).
			Scan(&setAside, &lastError); err != nil {
			t.Fatal(err)
		}
		if !setAside || !strings.Contains(lastError, "can never be published") {
			t.Errorf("row %d: set aside %v, last_error %q", id, setAside, lastError)
		}
	}
	if got := counterValue(t, metrics.SetAside.WithLabelValues(bus.SubjectDeadLetterSender)) +
		counterValue(t, metrics.SetAside.WithLabelValues(bus.SubjectExportAcknowledged)); got != 2 {
		t.Errorf("dps_outbox_set_aside_total = %v, want 2", got)
	}
	if n, err := Pending(ctx, pool); err != nil || n != 0 {
		t.Fatalf("pending %d, %v: want 0 (set-aside rows are not pending)", n, err)
	}

	// The invalid event has a dead letter keeping its payload; the oversized dead letter has none (it
	// would be one more of its kind), but its row and reason stay in the table.
	s, err := js.Stream(ctx, bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, bus.SubjectDeadLetterOutbox)
	if err != nil {
		t.Fatalf("no outbox dead letter: %v", err)
	}
	var dl bus.DeadLetterMessage
	if err := json.Unmarshal(raw.Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Stage != bus.StageOutbox || dl.Subject != bus.SubjectExportAcknowledged || dl.Stream != SetAsideOrigin ||
		dl.StreamSeq != uint64(invalidID) || dl.Payload != `{"export_id": "not-a-uuid"}` || !strings.Contains(dl.Reason, "export_id") {
		t.Errorf("dead letter %+v", dl)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("%d dead letters, want 1", info.State.Msgs)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRelayLeavesExceptedSubjects: a relay told that its process may not publish dps.export.request
// (the sender's, the tracker's) leaves the schedule's request to another relay and publishes the rows
// after it; the producer's relay then publishes the request.
func TestRelayLeavesExceptedSubjects(t *testing.T) {
	relay, _, js, ctx := setup(t)
	pool := relay.pool
	senderRelay, err := NewRelay(RelayConfig{Pool: pool, JS: js, Except: []string{bus.SubjectExportRequest}})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := bus.ExportRequest{RequestID: "schedule:HPV:2026-12-01:x", Programme: "HPV", RequestedBy: "schedule", RequestedAt: time.Now().UTC()}
	if err := Enqueue(ctx, tx, bus.SubjectExportRequest, req.RequestID, req); err != nil {
		t.Fatal(err)
	}
	if err := Enqueue(ctx, tx, bus.SubjectExportAcknowledged, "acknowledged:"+exportIDs[0], ackEvent(exportIDs[0])); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := senderRelay.Flush(ctx); err != nil || n != 1 {
		t.Fatalf("the sender's relay published %d, %v; want the acknowledged event only", n, err)
	}
	if n, err := Pending(ctx, pool); err != nil || n != 1 {
		t.Fatalf("pending %d, %v; want the request, left for the producer", n, err)
	}
	if n, err := relay.Flush(ctx); err != nil || n != 1 {
		t.Fatalf("the producer's relay published %d, %v; want the request", n, err)
	}
}
