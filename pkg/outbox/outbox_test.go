package outbox

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

func setup(t *testing.T) (*Relay, func() *Relay, jetstream.JetStream, context.Context) {
	t.Helper()
	ctx := t.Context()
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	if err := bus.EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	_, pool := pgtest.NewMigratedDatabase(t)
	newRelay := func() *Relay {
		r, err := NewRelay(RelayConfig{Pool: pool, JS: js, Logger: logging.Discard(), Interval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return newRelay(), newRelay, js, ctx
}

func ackEvent(id string) bus.ExportAcknowledged {
	return bus.ExportAcknowledged{EventID: uuid.NewString(), ExportID: id, Programme: "HPV",
		MeshMessageID: "MSG-" + id, AcknowledgedAt: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func streamCount(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

var exportIDs = []string{
	"6f1c0b0e-8a4e-4f3a-9d7e-1b2c3d4e5f60", "6f1c0b0e-8a4e-4f3a-9d7e-1b2c3d4e5f61",
	"6f1c0b0e-8a4e-4f3a-9d7e-1b2c3d4e5f62",
}

func TestCommittedMessagesArePublishedOnceRolledBackNever(t *testing.T) {
	relay, _, js, ctx := setup(t)
	pool := relay.pool

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := Enqueue(ctx, tx, bus.SubjectExportAcknowledged, "acknowledged:"+exportIDs[0], ackEvent(exportIDs[0])); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	tx, _ = pool.Begin(ctx)
	defer tx.Rollback(ctx)
	for _, id := range exportIDs[1:] {
		if err := Enqueue(ctx, tx, bus.SubjectExportAcknowledged, "acknowledged:"+id, ackEvent(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := relay.Flush(ctx)
	if err != nil || n != 2 {
		t.Fatalf("flush = %d, %v; want 2", n, err)
	}
	if got := streamCount(t, ctx, js, bus.SubjectExportAcknowledged); got != 2 {
		t.Fatalf("stream holds %d acknowledged events, want 2", got)
	}

	// A crash between the stream's ack and marking the row: the row is published again and the
	// stream's duplicate window absorbs it.
	if _, err := pool.Exec(ctx, `UPDATE dps_outbox SET published_at = NULL`); err != nil {
		t.Fatal(err)
	}
	if n, err := relay.Flush(ctx); err != nil || n != 2 {
		t.Fatalf("second flush = %d, %v", n, err)
	}
	if got := streamCount(t, ctx, js, bus.SubjectExportAcknowledged); got != 2 {
		t.Fatalf("after re-publish the stream holds %d, want still 2", got)
	}
	if pending, _ := Pending(ctx, pool); pending != 0 {
		t.Errorf("pending = %d, want 0", pending)
	}
}

func TestEnqueueRefusesInvalidPayload(t *testing.T) {
	relay, _, _, ctx := setup(t)
	tx, err := relay.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	bad := ackEvent("not-a-uuid")
	bad.MeshMessageID = ""
	if err := Enqueue(ctx, tx, bus.SubjectExportAcknowledged, "x", bad); err == nil {
		t.Fatal("want a schema error")
	}
}

func TestRunningRelaysShareTheWork(t *testing.T) {
	_, newRelay, js, ctx := setup(t)
	relays := []*Relay{newRelay(), newRelay(), newRelay()}
	pool := relays[0].pool

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range relays {
		wg.Go(func() {
			if err := r.Run(runCtx); err != nil {
				t.Error(err)
			}
		})
	}
	const total = 60
	for i := range total {
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		id := "6f1c0b0e-8a4e-4f3a-9d7e-" + pad12(i)
		if err := Enqueue(ctx, tx, bus.SubjectExportAcknowledged, "acknowledged:"+id, ackEvent(id)); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	// Wait for the marks too: cancelling between a stream ack and its mark is the crash case, covered above.
	pendingRows := func() int64 { n, _ := Pending(ctx, pool); return n }
	for (streamCount(t, ctx, js, bus.SubjectExportAcknowledged) < total || pendingRows() > 0) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if got := streamCount(t, ctx, js, bus.SubjectExportAcknowledged); got != total {
		t.Fatalf("stream holds %d events, want %d", got, total)
	}
	var published int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dps_outbox WHERE published_at IS NOT NULL`).Scan(&published); err != nil {
		t.Fatal(err)
	}
	if published != total {
		t.Errorf("%d rows marked published, want %d", published, total)
	}
}

func pad12(i int) string {
	s := "000000000000" + itoa(i)
	return s[len(s)-12:]
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
