package export

import (
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

// TestCrashAfterCommitBeforePublish: the export committed but its producer died before the relay ran.
// A new producer (new pool, new engine, new relay) publishes it once, and the redelivered request
// makes no second export.
func TestCrashAfterCommitBeforePublish(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	req := request("HPV")

	dying := e.newPool()
	res, err := e.exporter(dying).Export(t.Context(), req)
	if err != nil || len(res) != 1 || res[0].Status != Created {
		t.Fatalf("export: %+v, %v", res, err)
	}
	dying.Close() // the process is gone: no relay ever ran
	if n := e.streamCount(bus.StreamBatches, bus.SubjectExportReady); n != 0 {
		t.Fatalf("%d ready messages before any relay ran", n)
	}

	restarted := e.newPool()
	again, err := e.exporter(restarted).Export(t.Context(), req) // the request is redelivered
	if err != nil || len(again) != 1 || again[0].Status != Existing || again[0].ExportID != res[0].ExportID {
		t.Fatalf("redelivered request: %+v, %v; want the existing export %s", again, err, res[0].ExportID)
	}
	if _, err := e.relay(restarted).Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.assertOneExportOneReady(res[0])
}

// TestCrashAfterPublishBeforeMark: the relay published the ready message, then died before marking its
// outbox row. The next relay publishes it again under the same Nats-Msg-Id; the stream keeps one.
func TestCrashAfterPublishBeforeMark(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	res := e.exportOne(request("HPV"))

	// What the dying relay did: publish every pending row exactly as the relay does, and mark none.
	rows, err := e.pool.Query(t.Context(), `SELECT subject, msg_id, payload::text FROM dps_outbox WHERE published_at IS NULL ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type pending struct{ subject, msgID, payload string }
	var ps []pending
	for rows.Next() {
		var p pending
		if err := rows.Scan(&p.subject, &p.msgID, &p.payload); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("%d outbox rows, want ready and created", len(ps))
	}
	for _, p := range ps {
		if _, err := bus.Publish(t.Context(), e.js, p.subject, p.msgID, json.RawMessage(p.payload)); err != nil {
			t.Fatal(err)
		}
	}

	if n, err := e.relay(e.newPool()).Flush(t.Context()); err != nil || n != 2 {
		t.Fatalf("relay after restart published %d, %v; want 2 (both absorbed as duplicates)", n, err)
	}
	e.assertOneExportOneReady(res)
	if n := e.streamCount(bus.StreamEvents, bus.SubjectExportCreated); n != 1 {
		t.Fatalf("%d created events, want 1", n)
	}
}

func (e *env) assertOneExportOneReady(res Result) {
	e.t.Helper()
	if n := e.count(`SELECT count(*) FROM dps_exports`); n != 1 {
		e.t.Fatalf("%d exports, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM dps_outbox WHERE published_at IS NULL`); n != 0 {
		e.t.Fatalf("%d outbox rows still unpublished", n)
	}
	if n := e.streamCount(bus.StreamBatches, bus.SubjectExportReady); n != 1 {
		e.t.Fatalf("%d ready messages in %s, want 1", n, bus.StreamBatches)
	}
	s, err := e.js.Stream(e.t.Context(), bus.StreamBatches)
	if err != nil {
		e.t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(e.t.Context(), bus.SubjectExportReady)
	if err != nil {
		e.t.Fatal(err)
	}
	var ready bus.ExportReady
	if err := json.Unmarshal(msg.Data, &ready); err != nil {
		e.t.Fatal(err)
	}
	if ready.ExportID != res.ExportID || ready.ObjectName != res.ExportID || ready.SHA256 != res.SHA256 ||
		ready.SizeBytes != res.SizeBytes || ready.Rows != int64(res.Rows) || ready.Filename != res.Filename {
		e.t.Fatalf("ready message %+v does not describe export %+v", ready, res)
	}
	if got := msg.Header.Get("Nats-Msg-Id"); got != res.ExportID {
		e.t.Fatalf("ready Nats-Msg-Id %q, want the export id", got)
	}
	info, err := e.objects.GetInfo(e.t.Context(), ready.ObjectName)
	if err != nil {
		e.t.Fatal(err)
	}
	if sum, _ := bus.ObjectSHA256(info); sum != ready.SHA256 || int64(info.Size) != ready.SizeBytes {
		e.t.Fatalf("stored object (%d bytes, %s) differs from the ready message", info.Size, sum)
	}
	e.file(ready.ObjectName)
}

// TestRollbackLeavesNoTrace: an export that fails before commit leaves its candidates queued and no
// export; an object already stored is deleted at once (and SweepOrphans would catch one left behind).
func TestRollbackLeavesNoTrace(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	// A copy that cannot be closed makes the export fail after the file is stored.
	_, err := e.exporter(e.pool).Export(t.Context(), request("HPV"), WithCopy(func(Result) (io.WriteCloser, error) {
		return failingClose{}, nil
	}))
	if err == nil {
		t.Fatal("export with a failing copy succeeded")
	}
	if n := e.count(`SELECT count(*) FROM dps_exports`); n != 0 {
		t.Fatalf("%d exports after a rollback", n)
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != 1 {
		t.Fatalf("%d candidates after a rollback, want 1", n)
	}
	if n := e.count(`SELECT count(*) FROM dps_outbox`); n != 0 {
		t.Fatalf("%d outbox rows after a rollback", n)
	}
	if objs, _ := e.objects.List(t.Context()); len(objs) != 0 {
		t.Fatalf("%d objects left after a rollback", len(objs))
	}
	// The next run exports the record.
	if res := e.exportOne(request("HPV")); res.Status != Created || res.Rows != 1 {
		t.Fatalf("export after rollback: %+v", res)
	}
}

// TestSweepOrphans deletes old objects no export names and keeps exports' files and young objects.
func TestSweepOrphans(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	res := e.exportOne(request("HPV"))
	if _, err := e.objects.PutString(t.Context(), "11111111-2222-4333-8444-555555555555", "orphan"); err != nil {
		t.Fatal(err)
	}
	// Young: nothing goes.
	if n, err := SweepOrphans(t.Context(), e.pool, e.objects, OrphanAge, time.Now(), e.log); err != nil || n != 0 {
		t.Fatalf("sweep of young objects deleted %d, %v", n, err)
	}
	// Two hours on: the orphan goes, the export's file stays.
	if n, err := SweepOrphans(t.Context(), e.pool, e.objects, OrphanAge, time.Now().Add(2*time.Hour), e.log); err != nil || n != 1 {
		t.Fatalf("sweep deleted %d, %v; want 1", n, err)
	}
	e.file(res.ExportID)
}

type failingClose struct{}

func (failingClose) Write(p []byte) (int, error) { return len(p), nil }
func (failingClose) Close() error                { return errors.New("disk full") }
