package delivery

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// TestForgedReadyChangesNothing: batches naming a real export but another export's object (with its
// true size and SHA-256), a wrong size, or a missing object are dead-lettered without touching either
// export; the export's own batch then sends its own file, once.
func TestForgedReadyChangesNothing(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	hpv := h.CreateExport(ctx, 5)
	flu := h.CreateExport(ctx, 40)

	otherObject := hpv.Ready
	otherObject.ObjectName, otherObject.SizeBytes, otherObject.SHA256, otherObject.Rows =
		flu.Ready.ObjectName, flu.Ready.SizeBytes, flu.Ready.SHA256, flu.Ready.Rows
	wrongSize := hpv.Ready
	wrongSize.SizeBytes++
	missing := hpv.Ready
	missing.ObjectName = "no-such-object"
	otherName := hpv.Ready
	otherName.Filename = "HPV_Vaccinations_v5_V0V8L_20240824T02000301.csv"
	forged := []bus.ExportReady{otherObject, wrongSize, missing, otherName}
	for i, r := range forged {
		// Another Nats-Msg-Id than the producer's, as anyone able to publish could choose.
		msgID := "forged-" + string(rune('a'+i))
		if _, err := bus.Publish(ctx, h.JS, bus.SubjectExportReady, msgID, r); err != nil {
			t.Fatal(err)
		}
	}
	h.Publish(ctx, hpv.Ready)

	s := h.sender(h.config(), 0)
	h.start(s)
	st := h.waitStatus(hpv.Ready.ExportID, lifecycle.Accepted)
	h.waitEvents(bus.SubjectDeadLetterSender, len(forged))

	if st.Attempts != 1 || st.LocalID != hpv.Ready.ExportID+".1" {
		t.Errorf("export sent with %d attempts as %s, want once as %s.1", st.Attempts, st.LocalID, hpv.Ready.ExportID)
	}
	sent := h.SandboxByExport()[hpv.Ready.ExportID]
	if len(sent) != 1 {
		t.Fatalf("MESH holds %d messages for the export, want 1", len(sent))
	}
	dps := h.MESHClient(testenv.DPSMailbox, testenv.DPSPassword, 0)
	if body := download(t, dps, st.MessageID); !bytes.Equal(body, hpv.Body) {
		t.Fatalf("DPS received %d bytes, want the export's own %d-byte file", len(body), len(hpv.Body))
	}
	if err := dps.Acknowledge(ctx, st.MessageID); err != nil {
		t.Fatalf("DPS acknowledges: %v", err)
	}
	// The tracker, asked about the export, finds DPS's acknowledgement of its own file.
	tr, err := tracking.New(tracking.Config{Pool: h.Pool, JS: h.JS, JobsEnabled: true,
		MESH: h.MESHClient(testenv.OurMailbox, testenv.OurPassword, 0), Logger: h.log,
		PollInterval: time.Second, HandshakeInterval: time.Hour, InboxInterval: time.Hour, BatchSize: 10, MaxBackoff: time.Second, UnknownTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.TrackNow(ctx, hpv.Ready.ExportID); err != nil {
		t.Fatalf("track: %v", err)
	}
	if got := h.State(ctx, hpv.Ready.ExportID); got.Status != lifecycle.Acknowledged || got.MessageID != st.MessageID {
		t.Fatalf("export %s as %s after DPS acknowledged, want acknowledged as %s", got.Status, got.MessageID, st.MessageID)
	}
	if other := h.State(ctx, flu.Ready.ExportID); other.Status != lifecycle.Created || other.Attempts != 0 {
		t.Errorf("the other export was touched: %+v", other)
	}
	if n := len(h.StreamMessages(ctx, bus.StreamEvents, bus.SubjectExportFailed)); n != 0 {
		t.Errorf("%d failed events, want none", n)
	}
	var pending int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`,
		append(hpv.RecordIDs, flu.RecordIDs...)).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d records released, want none", pending)
	}
	dls := testenv.Events[bus.DeadLetterMessage](h.Env, ctx, bus.StreamDeadLetter, bus.SubjectDeadLetterSender)
	if len(dls) != len(forged) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(forged))
	}
	for _, dl := range dls {
		if !strings.HasPrefix(dl.Reason, CodeBatchMismatch) || dl.Headers[nats.MsgIdHdr][0] == hpv.Ready.ExportID {
			t.Errorf("dead letter %q for %v", dl.Reason, dl.Headers[nats.MsgIdHdr])
		}
	}
	if got := value(s.metrics.Failures.WithLabelValues("mismatch")); got != float64(len(forged)) {
		t.Errorf("mismatch failures %v, want %d", got, len(forged))
	}
}

// TestLongSendAckedOnce: a send that takes longer than the old 10-second ack context (which started
// with the handling) is acknowledged after it, once: the batch is not redelivered.
func TestLongSendAckedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for 11 seconds")
	}
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 1)
	h.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Count: 1, Latency: 11 * time.Second})
	s := h.sender(h.config(), 0)
	h.start(s)
	h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	h.WaitFor("the batch acknowledged", waitLong, func() bool {
		info := h.SenderConsumerInfo(ctx)
		return info.NumAckPending == 0 && info.AckFloor.Stream == 1
	})
	if info := h.SenderConsumerInfo(ctx); info.NumRedelivered != 0 || info.Delivered.Consumer != 1 {
		t.Fatalf("batch delivered %d times (%d redelivered), want once", info.Delivered.Consumer, info.NumRedelivered)
	}
	if n := value(s.metrics.DuplicatesAvoided); n != 0 {
		t.Errorf("%v redeliveries found the export already sent", n)
	}
}

// TestHugeReadyDeadLetteredAndNothingStalls: a ready message with a 500,000-character file name (valid
// for the old schema) is refused before it is parsed and dead-lettered with its payload cut to the bound,
// and the batch after it is sent: neither the consumer nor the outbox stalls behind it.
func TestHugeReadyDeadLetteredAndNothingStalls(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.CreateExport(ctx, 1)
	huge := `{"export_id":"` + x.Ready.ExportID + `","programme":"HPV","filename":"Vaccinations-` + strings.Repeat("A", 500_000) +
		`-2024-08-23.csv","object_name":"` + x.Ready.ObjectName + `","size_bytes":1,"sha256":"` + x.Ready.SHA256 + `","rows":1,"created_at":"2024-08-23T02:00:00Z"}`
	if _, err := h.JS.Publish(ctx, bus.SubjectExportReady, []byte(huge)); err != nil {
		t.Fatal(err)
	}
	h.Publish(ctx, x.Ready)
	h.start(h.sender(h.config(), 0))
	h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	h.waitEvents(bus.SubjectDeadLetterSender, 1)
	h.waitEvents(bus.SubjectExportSent, 1)
	dls := testenv.Events[bus.DeadLetterMessage](h.Env, ctx, bus.StreamDeadLetter, bus.SubjectDeadLetterSender)
	if len(dls) != 1 || !dls[0].PayloadTruncated || dls[0].PayloadSize != len(huge) || len(dls[0].Payload) != bus.MaxDeadLetterPayload {
		t.Fatalf("dead letters %d; want one keeping %d of %d bytes", len(dls), bus.MaxDeadLetterPayload, len(huge))
	}
}
