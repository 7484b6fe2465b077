package delivery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
)

const waitLong = 30 * time.Second

// harness runs senders and the outbox relay over a testenv.Env.
type harness struct {
	*testenv.Env
	t      *testing.T
	logBuf *proctest.Buffer
	log    *slog.Logger
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	buf := &proctest.Buffer{}
	h := &harness{Env: testenv.New(t, testenv.Options{}), t: t, logBuf: buf,
		log: slog.New(slog.NewJSONHandler(io.MultiWriter(buf, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: h.Pool, JS: h.JS, Logger: h.log, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = relay.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h
}

func (h *harness) config() Config {
	return Config{
		DPSMailbox: testenv.DPSMailbox, WorkflowID: testenv.WorkflowID, JobsEnabled: true,
		RetryDelays: []time.Duration{50 * time.Millisecond}, LockedDelay: 50 * time.Millisecond,
		RereadDelays: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond},
		FetchWait:    200 * time.Millisecond,
	}
}

// sender builds a Sender; maxRetries is the MESH client's (negative: none).
func (h *harness) sender(cfg Config, maxRetries int) *Sender {
	h.t.Helper()
	var client *mesh.Client
	if cfg.JobsEnabled {
		client = h.MESHClient(testenv.OurMailbox, testenv.OurPassword, maxRetries)
	}
	cfg.Pool, cfg.JS, cfg.Objects, cfg.MESH, cfg.Logger = h.Pool, h.JS, h.Objects, client, h.log
	s, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// start runs s until the test ends.
func (h *harness) start(s *Sender) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			h.t.Errorf("run: %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) waitStatus(id string, status lifecycle.Status) testenv.ExportState {
	h.t.Helper()
	var st testenv.ExportState
	h.WaitFor("export "+id+" "+status.String(), waitLong, func() bool {
		st = h.State(context.Background(), id)
		return st.Status == status
	})
	return st
}

func (h *harness) waitEvents(subject string, n int) {
	h.t.Helper()
	h.WaitFor(subject, waitLong, func() bool {
		return len(h.StreamMessages(context.Background(), streamFor(subject), subject)) >= n
	})
}

// recordFile writes r's size and SHA-256 into the export's row, as a producer that recorded them
// wrongly would have.
func (h *harness) recordFile(r bus.ExportReady) {
	h.t.Helper()
	if _, err := h.Pool.Exec(context.Background(), `UPDATE dps_exports SET size_bytes = $2, sha256 = $3 WHERE id = $1`,
		r.ExportID, r.SizeBytes, r.SHA256); err != nil {
		h.t.Fatal(err)
	}
}

func streamFor(subject string) string {
	if strings.HasPrefix(subject, bus.SubjectDeadLetterPrefix) {
		return bus.StreamDeadLetter
	}
	return bus.StreamEvents
}

func TestSendsEachExportOnceWithTheRightHeaders(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	var exports []testenv.Export
	for i := range 3 {
		exports = append(exports, h.AddExport(ctx, i+1))
	}
	s := h.sender(h.config(), 0)
	h.start(s)

	dps := h.MESHClient(testenv.DPSMailbox, testenv.DPSPassword, 0)
	byExport := map[string]testenv.Export{}
	for _, x := range exports {
		byExport[x.Ready.ExportID] = x
		st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
		if st.LocalID != x.Ready.ExportID+".1" || st.Attempts != 1 {
			t.Errorf("export %s: local id %q attempts %d, want %s.1 and 1", x.Ready.ExportID, st.LocalID, st.Attempts, x.Ready.ExportID)
		}
		m, ok := h.Sandbox.Message(st.MessageID)
		if !ok {
			t.Fatalf("sandbox does not hold %s", st.MessageID)
		}
		if m.To != testenv.DPSMailbox || m.WorkflowID != testenv.WorkflowID || m.FileName != x.Ready.Filename ||
			m.LocalID != st.LocalID || m.Status != meshsandbox.StatusAccepted || m.ContentEncoding != "gzip" {
			t.Errorf("sandbox message %+v", m)
		}
		body := download(t, dps, st.MessageID)
		if !bytes.Equal(body, x.Body) {
			t.Errorf("export %s: DPS received %q, want %q", x.Ready.ExportID, body, x.Body)
		}
	}
	if got := len(h.SandboxByExport()); got != 3 {
		t.Errorf("sandbox holds messages for %d exports, want 3", got)
	}
	h.waitEvents(bus.SubjectExportSent, 3)
	for _, ev := range testenv.Events[bus.ExportSent](h.Env, ctx, bus.StreamEvents, bus.SubjectExportSent) {
		x, ok := byExport[ev.ExportID]
		if !ok || ev.Adopted || ev.Attempt != 1 || ev.LocalID != ev.ExportID+".1" || ev.Filename != x.Ready.Filename || ev.Programme != testenv.Programme {
			t.Errorf("sent event %+v", ev)
		}
	}
	// The counters move once each batch's handler returns, just after its export is recorded accepted.
	h.WaitFor("the sends counted", waitLong, func() bool { return value(s.metrics.Sent.WithLabelValues("new")) >= 3 })
	if got := value(s.metrics.Sent.WithLabelValues("new")); got != 3 {
		t.Errorf("sent metric %v, want 3", got)
	}
	if got := value(s.metrics.BytesSent); got == 0 {
		t.Error("bytes metric not counted")
	}
	if err := s.HealthCheck().Probe(ctx); err != nil {
		t.Errorf("mesh health after sends: %v", err)
	}
}

func download(t *testing.T, c *mesh.Client, id string) []byte {
	t.Helper()
	d, err := c.Download(t.Context(), id)
	if err != nil {
		t.Fatalf("download %s: %v", id, err)
	}
	defer d.Body.Close()
	b, err := io.ReadAll(d.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRedeliveredAcceptedBatchIsAckedNotResent(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 2)
	s := h.sender(h.config(), 0)
	h.start(s)
	first := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)

	// The same batch again under another Nats-Msg-Id, as a replayed or re-published batch arrives.
	if _, err := bus.Publish(ctx, h.JS, bus.SubjectExportReady, x.Ready.ExportID+"-again", x.Ready); err != nil {
		t.Fatal(err)
	}
	h.WaitFor("duplicate avoided", waitLong, func() bool { return value(s.metrics.DuplicatesAvoided) == 1 })
	h.WaitFor("batches acked", waitLong, func() bool {
		info := h.SenderConsumerInfo(ctx)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	if got := h.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Errorf("sandbox holds %d messages for the export, want 1", len(got))
	}
	if st := h.State(ctx, x.Ready.ExportID); st.MessageID != first.MessageID || st.Attempts != 1 {
		t.Errorf("export changed: %+v, was %+v", st, first)
	}
}

func TestPermanentRefusalFailsTheExport(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 3)
	cfg := h.config()
	cfg.DPSMailbox = "X26NOBODY" // unknown recipient: 417, code 12
	s := h.sender(cfg, 0)
	h.start(s)

	st := h.waitStatus(x.Ready.ExportID, lifecycle.Failed)
	if st.LastErrorCode != "12" || !strings.Contains(st.LastError, "417") {
		t.Errorf("failed export: code %q error %q", st.LastErrorCode, st.LastError)
	}
	h.waitEvents(bus.SubjectExportFailed, 1)
	h.waitEvents(bus.SubjectDeadLetterSender, 1)
	h.WaitFor("batch acked", waitLong, func() bool {
		info := h.SenderConsumerInfo(ctx)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	failed := testenv.Events[bus.ExportFailed](h.Env, ctx, bus.StreamEvents, bus.SubjectExportFailed)
	if len(failed) != 1 || failed[0].ExportID != x.Ready.ExportID || failed[0].Stage != bus.StageSender ||
		failed[0].MeshStatus != http.StatusExpectationFailed || failed[0].MeshErrorCode != "12" {
		t.Errorf("failed events %+v", failed)
	}
	dls := testenv.Events[bus.DeadLetterMessage](h.Env, ctx, bus.StreamDeadLetter, bus.SubjectDeadLetterSender)
	if len(dls) != 1 || !strings.Contains(dls[0].Reason, "code 12") || dls[0].Stream != bus.StreamBatches || dls[0].Subject != bus.SubjectExportReady {
		t.Errorf("dead letters %+v", dls)
	}
	if len(dls) == 1 {
		payload, _, _ := dls[0].OriginalPayload()
		if !strings.Contains(string(payload), x.Ready.ExportID) {
			t.Errorf("dead letter payload %q does not carry the batch", payload)
		}
	}
	var pending int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, x.RecordIDs).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != len(x.RecordIDs) {
		t.Errorf("%d of %d records released", pending, len(x.RecordIDs))
	}
	if n := len(h.SandboxByExport()); n != 0 {
		t.Errorf("sandbox holds messages for %d exports, want none", n)
	}
	if got := value(s.metrics.Failures.WithLabelValues("mesh")); got != 1 {
		t.Errorf("failures metric %v, want 1", got)
	}
}

func TestUnusableObjectFailsWithoutSending(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(h *harness, x *testenv.Export)
		code   string
	}{
		// The export's row is what the sender checks the file against; the batch carries the same values.
		{"sha mismatch", func(h *harness, x *testenv.Export) {
			x.Ready.SHA256 = strings.Repeat("0", 64)
			h.recordFile(x.Ready)
		}, CodeObjectCorrupt},
		{"size mismatch", func(h *harness, x *testenv.Export) {
			x.Ready.SizeBytes++
			h.recordFile(x.Ready)
		}, CodeObjectCorrupt},
		{"object replaced", func(h *harness, x *testenv.Export) {
			if _, err := h.Objects.PutBytes(context.Background(), x.Ready.ObjectName, []byte("tampered\n")); err != nil {
				h.t.Fatal(err)
			}
		}, CodeObjectCorrupt},
		// The bytes in the store no longer match the digest it recorded when it stored them: every read
		// fails the store's own check, so the file is corrupt once the re-reads fail too.
		{"chunk changed in the store", func(h *harness, x *testenv.Export) {
			h.replaceChunk(x.Ready.ObjectName)
		}, CodeObjectCorrupt},
		{"object missing", func(h *harness, x *testenv.Export) {
			if err := h.Objects.Delete(context.Background(), x.Ready.ObjectName); err != nil {
				h.t.Fatal(err)
			}
		}, CodeObjectMissing},
	}
	h := newHarness(t)
	ctx := t.Context()
	var exports []testenv.Export
	for _, c := range cases {
		x := h.CreateExport(ctx, 2)
		c.tamper(h, &x)
		h.Publish(ctx, x.Ready)
		exports = append(exports, x)
	}
	h.start(h.sender(h.config(), 0))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := exports[i].Ready.ExportID
			st := h.waitStatus(id, lifecycle.Failed)
			// The attempt is recorded while the file is verified, and ends refused before any send.
			if st.LastErrorCode != c.code || st.Attempts != 1 {
				t.Errorf("code %q attempts %d, want %q and 1: %s", st.LastErrorCode, st.Attempts, c.code, st.LastError)
			}
			var outcome string
			if err := h.Pool.QueryRow(ctx, `SELECT outcome FROM dps_export_attempts WHERE export_id = $1 AND attempt = 1`, id).Scan(&outcome); err != nil || outcome != attemptPermanentError {
				t.Errorf("attempt 1 outcome %q (%v), want %q", outcome, err, attemptPermanentError)
			}
		})
	}
	h.waitEvents(bus.SubjectDeadLetterSender, len(cases))
	if n := h.Sandbox.Requests(meshsandbox.RouteSend); n != 0 {
		t.Errorf("%d sends reached MESH, want none", n)
	}
}

// replaceChunk swaps the last chunk of an object for one of the same size with other bytes, behind
// the Object Store's back, as a damaged store would hold it.
func (h *harness) replaceChunk(name string) {
	h.t.Helper()
	ctx := context.Background()
	info, err := h.Objects.GetInfo(ctx, name)
	if err != nil {
		h.t.Fatal(err)
	}
	stream, err := h.JS.Stream(ctx, "OBJ_"+bus.BucketExports)
	if err != nil {
		h.t.Fatal(err)
	}
	subject := "$O." + bus.BucketExports + ".C." + info.NUID
	chunk, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := stream.DeleteMsg(ctx, chunk.Sequence); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.JS.Publish(ctx, subject, bytes.Repeat([]byte("x"), len(chunk.Data))); err != nil {
		h.t.Fatal(err)
	}
}

// firstReadFails is the export bucket with the first read of each object failing as a cluster can
// make it fail for a moment: cut short with the store's digest error (a leader elected mid-read), or
// not found (a replica that has not caught up).
type firstReadFails struct {
	jetstream.ObjectStore
	notFound bool
	mu       sync.Mutex
	reads    map[string]int
}

func (c *firstReadFails) Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error) {
	c.mu.Lock()
	c.reads[name]++
	first := c.reads[name] == 1
	c.mu.Unlock()
	if first && c.notFound {
		return nil, jetstream.ErrObjectNotFound
	}
	res, err := c.ObjectStore.Get(ctx, name, opts...)
	if err != nil || !first {
		return res, err
	}
	return &cutShort{ObjectResult: res, left: 3}, nil
}

type cutShort struct {
	jetstream.ObjectResult
	left int
}

func (c *cutShort) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, jetstream.ErrDigestMismatch
	}
	n, err := c.ObjectResult.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

func TestRereadsAFileAClusterFailedOnce(t *testing.T) {
	for _, c := range []struct {
		name     string
		notFound bool
	}{{"cut short", false}, {"not found", true}} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			ctx := t.Context()
			x := h.AddExport(ctx, 2)
			s := h.sender(h.config(), 0)
			objects := &firstReadFails{ObjectStore: h.Objects, notFound: c.notFound, reads: map[string]int{}}
			s.objects = objects
			h.start(s)

			st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
			if st.Attempts != 1 {
				t.Errorf("attempts %d, want 1", st.Attempts)
			}
			body := download(t, h.MESHClient(testenv.DPSMailbox, testenv.DPSPassword, 0), st.MessageID)
			if !bytes.Equal(body, x.Body) {
				t.Errorf("DPS received %q, want %q", body, x.Body)
			}
			objects.mu.Lock()
			reads := objects.reads[x.Ready.ObjectName]
			objects.mu.Unlock()
			if reads != 2 {
				t.Errorf("the file was read %d times, want 2 (one failed, one whole)", reads)
			}
			if !strings.Contains(h.logBuf.String(), "reading it again") {
				t.Error("the failed read was not logged")
			}
		})
	}
}

func TestAdoptsAnAttemptMESHAcceptedBeforeACrash(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.CreateExport(ctx, 2)
	localID := LocalID(x.Ready.ExportID, 1)
	// A sender recorded attempt 1, MESH accepted it, and the sender died before recording that.
	if _, err := h.Pool.Exec(ctx, `UPDATE dps_exports SET attempts = 1 WHERE id = $1`, x.Ready.ExportID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `INSERT INTO dps_export_attempts (export_id, attempt, local_id) VALUES ($1, 1, $2)`, x.Ready.ExportID, localID); err != nil {
		t.Fatal(err)
	}
	c := h.MESHClient(testenv.OurMailbox, testenv.OurPassword, 0)
	earlier, err := c.Send(ctx, mesh.OutboundMessage{To: testenv.DPSMailbox, WorkflowID: testenv.WorkflowID,
		FileName: x.Ready.Filename, LocalID: localID, ContentType: "text/csv", Compress: true, Body: bytes.NewReader(x.Body)})
	if err != nil {
		t.Fatal(err)
	}
	h.Publish(ctx, x.Ready)
	s := h.sender(h.config(), 0)
	h.start(s)

	st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	if st.MessageID != earlier || st.Attempts != 1 {
		t.Errorf("export %+v, want message %s from attempt 1", st, earlier)
	}
	if got := h.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Errorf("sandbox holds %d messages for the export, want 1", len(got))
	}
	h.waitEvents(bus.SubjectExportSent, 1)
	ev := testenv.Events[bus.ExportSent](h.Env, ctx, bus.StreamEvents, bus.SubjectExportSent)
	if len(ev) != 1 || !ev[0].Adopted || ev[0].MeshMessageID != earlier || ev[0].Attempt != 1 {
		t.Errorf("sent events %+v", ev)
	}
	var outcome string
	if err := h.Pool.QueryRow(ctx, `SELECT outcome FROM dps_export_attempts WHERE local_id = $1`, localID).Scan(&outcome); err != nil || outcome != attemptAdopted {
		t.Errorf("attempt outcome %q (%v), want adopted", outcome, err)
	}
}

func TestAttemptLeftUploadingIsNotSentAndIsReplaced(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.CreateExport(ctx, 200) // several KiB of random text: more than one 1 KiB chunk once gzipped
	localID := LocalID(x.Ready.ExportID, 1)
	if _, err := h.Pool.Exec(ctx, `UPDATE dps_exports SET attempts = 1 WHERE id = $1`, x.Ready.ExportID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `INSERT INTO dps_export_attempts (export_id, attempt, local_id) VALUES ($1, 1, $2)`, x.Ready.ExportID, localID); err != nil {
		t.Fatal(err)
	}
	// Attempt 1 was cut off after its first chunk: MESH holds it as uploading.
	small, err := mesh.New(mesh.Config{BaseURL: h.MESHURL, Mailbox: testenv.OurMailbox, Password: testenv.OurPassword,
		SharedKey: testenv.SharedKey, ChunkSize: mesh.MinChunkSize, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	h.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSendChunk, Status: http.StatusBadRequest, Count: 1})
	if _, err := small.Send(ctx, mesh.OutboundMessage{To: testenv.DPSMailbox, WorkflowID: testenv.WorkflowID,
		FileName: x.Ready.Filename, LocalID: localID, ContentType: "text/csv", Compress: true, Body: bytes.NewReader(x.Body)}); err == nil {
		t.Fatal("the cut-off send succeeded")
	}
	msgs := h.SandboxByExport()[x.Ready.ExportID]
	if len(msgs) != 1 || msgs[0].Status != meshsandbox.StatusUploading {
		t.Fatalf("setup: sandbox holds %+v, want one uploading message", msgs)
	}

	h.Publish(ctx, x.Ready)
	h.start(h.sender(h.config(), 0))
	st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	if st.LocalID != LocalID(x.Ready.ExportID, 2) || st.Attempts != 2 {
		t.Errorf("export %+v, want attempt 2", st)
	}
	accepted := 0
	for _, m := range h.SandboxByExport()[x.Ready.ExportID] {
		if m.Status == meshsandbox.StatusAccepted {
			accepted++
		}
	}
	if accepted != 1 {
		t.Errorf("%d accepted messages for the export, want 1", accepted)
	}
}

func TestTransientFailuresAreRetriedByRedelivery(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 2)
	// Two deliveries meet a 503 (the client itself does not retry here): the batch is naked twice.
	h.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Status: http.StatusServiceUnavailable, Count: 2})
	s := h.sender(h.config(), -1)
	h.start(s)
	st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	if st.Attempts != 3 {
		t.Errorf("attempts %d, want 3", st.Attempts)
	}
	if got := value(s.metrics.Retries.WithLabelValues("transient")); got != 2 {
		t.Errorf("retries metric %v, want 2", got)
	}
	if got := h.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Errorf("sandbox holds %d messages for the export, want 1", len(got))
	}
}

func TestExhaustedDeliveriesFailTheExport(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	h.TuneSenderConsumer(ctx, 2*time.Second, 3)
	x := h.AddExport(ctx, 1)
	h.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Status: http.StatusInternalServerError})
	s := h.sender(h.config(), -1)
	h.start(s)
	st := h.waitStatus(x.Ready.ExportID, lifecycle.Failed)
	if st.LastErrorCode != CodeExhausted || st.Attempts != 3 {
		t.Errorf("export %+v, want %s after 3 attempts", st, CodeExhausted)
	}
	h.waitEvents(bus.SubjectDeadLetterSender, 1)
	h.waitEvents(bus.SubjectExportFailed, 1)
}

func TestAnotherSendersLockMakesTheBatchWait(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.CreateExport(ctx, 1)
	other, held, err := tryLockExport(ctx, h.Pool, x.Ready.ExportID)
	if err != nil || held {
		t.Fatalf("lock: %v held=%v", err, held)
	}
	h.Publish(ctx, x.Ready)
	s := h.sender(h.config(), 0)
	h.start(s)
	h.WaitFor("a locked retry", waitLong, func() bool { return value(s.metrics.Retries.WithLabelValues("locked")) >= 1 })
	if st := h.State(ctx, x.Ready.ExportID); st.Status != lifecycle.Created || st.Attempts != 0 {
		t.Errorf("export touched while locked: %+v", st)
	}
	other.release(ctx)
	h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
}

func TestInvalidBatchAndUnknownExportAreDeadLettered(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	if _, err := h.JS.Publish(ctx, bus.SubjectExportReady, []byte(`{"export_id":"not a uuid"}`)); err != nil {
		t.Fatal(err)
	}
	ghost := h.CreateExport(ctx, 1).Ready
	ghost.ExportID = "00000000-0000-4000-8000-000000000001" // no such row
	h.Publish(ctx, ghost)
	terminated := natstest.CountTerminations(t, h.NC, bus.StreamBatches, bus.ConsumerSender)
	s := h.sender(h.config(), 0)
	h.start(s)
	h.waitEvents(bus.SubjectDeadLetterSender, 2)
	h.WaitFor("batches acked", waitLong, func() bool {
		info := h.SenderConsumerInfo(ctx)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	if n := terminated(); n != 0 {
		t.Errorf("%d batches terminated, want both acknowledged after their dead letters", n)
	}
	reasons := []string{}
	for _, dl := range testenv.Events[bus.DeadLetterMessage](h.Env, ctx, bus.StreamDeadLetter, bus.SubjectDeadLetterSender) {
		reasons = append(reasons, dl.Reason)
	}
	joined := strings.Join(reasons, "\n")
	if !strings.Contains(joined, CodeInvalidBatch) || !strings.Contains(joined, CodeNoExport) {
		t.Errorf("dead-letter reasons %q", reasons)
	}
}

func TestGateOffConsumesNothing(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 1)
	cfg := h.config()
	cfg.JobsEnabled = false
	cfg.GateWarnInterval = 20 * time.Millisecond
	s := h.sender(cfg, 0)
	if err := s.HealthCheck().Probe(ctx); !errors.Is(err, health.ErrDisabled) {
		t.Errorf("mesh health with the gate off: %v, want disabled", err)
	}
	stop := h.start(s)
	// Two warnings: the one at start and a periodic one.
	h.WaitFor("periodic gate warnings", waitLong, func() bool { return value(s.metrics.GateClosedWarnings) >= 2 })
	stop()
	if !strings.Contains(h.logBuf.String(), "MESH_JOBS_ENABLED=false") {
		t.Error("no WARN line names MESH_JOBS_ENABLED")
	}
	info := h.SenderConsumerInfo(ctx)
	if info.Delivered.Consumer != 0 || info.NumPending != 1 {
		t.Errorf("consumer delivered %d, pending %d; want 0 and 1", info.Delivered.Consumer, info.NumPending)
	}
	if st := h.State(ctx, x.Ready.ExportID); st.Status != lifecycle.Created {
		t.Errorf("export %+v", st)
	}
}

func TestShutdownCancelsASlowSendSafely(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 1)
	// The first send hangs until the sender gives up; it never reaches the sandbox's store.
	h.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Latency: time.Hour, Count: 1})
	cfg := h.config()
	cfg.ShutdownGrace = 50 * time.Millisecond
	stop := h.start(h.sender(cfg, 0))
	h.WaitFor("the send to start", waitLong, func() bool { return h.Sandbox.Requests(meshsandbox.RouteSend) == 1 })
	stop() // returns once the grace has passed and the send was cancelled

	st := h.State(ctx, x.Ready.ExportID)
	if st.Status != lifecycle.Created || st.Attempts != 1 {
		t.Fatalf("after shutdown: %+v, want created with attempt 1 recorded", st)
	}
	// The next sender asks MESH about attempt 1 (unknown there), then sends attempt 2.
	h.start(h.sender(h.config(), 0))
	st = h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	if st.Attempts != 2 {
		t.Errorf("attempts %d, want 2", st.Attempts)
	}
	if got := h.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Errorf("sandbox holds %d messages for the export, want 1", len(got))
	}
}

func TestReplay(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 1)
	failedX := h.CreateExport(ctx, 1)
	failedX.Ready.SHA256 = strings.Repeat("0", 64)
	h.recordFile(failedX.Ready)
	h.Publish(ctx, failedX.Ready)
	stop := h.start(h.sender(h.config(), 0))
	first := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	h.waitStatus(failedX.Ready.ExportID, lifecycle.Failed)
	stop()

	s := h.sender(h.config(), 0)
	run := func(force, dryRun bool) replay.Summary {
		sum, err := replay.Run(ctx, h.JS, bus.StreamBatches, bus.SubjectExportReady, replay.Range{FromSeq: 1}, s.ReplayHandler(force, dryRun))
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	cases := []struct {
		name          string
		force, dryRun bool
		want          map[replay.Outcome]int
		detail        string
	}{
		{"idempotent", false, false, map[replay.Outcome]int{replay.Skipped: 2}, "already sent as MESH message " + first.MessageID},
		{"dry run force", true, true, map[replay.Outcome]int{replay.DryRun: 2}, "would RE-SEND"},
		{"force", true, false, map[replay.Outcome]int{replay.Forced: 1, replay.Skipped: 1}, "RE-SENT as NEW MESH message"},
	}
	for _, c := range cases {
		sum := run(c.force, c.dryRun)
		var out bytes.Buffer
		_ = sum.Print(&out)
		for o, n := range c.want {
			if sum.Count(o) != n {
				t.Errorf("%s: %d %s, want %d\n%s", c.name, sum.Count(o), o, n, out.String())
			}
		}
		if !strings.Contains(out.String(), c.detail) {
			t.Errorf("%s: summary lacks %q:\n%s", c.name, c.detail, out.String())
		}
	}
	st := h.State(ctx, x.Ready.ExportID)
	if st.Status != lifecycle.Accepted || st.MessageID == first.MessageID || st.Attempts != 2 {
		t.Errorf("after --force: %+v (first message %s)", st, first.MessageID)
	}
	if got := h.SandboxByExport()[x.Ready.ExportID]; len(got) != 2 {
		t.Errorf("sandbox holds %d messages for the forced export, want 2", len(got))
	}
	h.waitEvents(bus.SubjectExportSent, 2)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestConcurrentBatchesInOneReplica runs one sender with SENDER_CONCURRENCY > 1: every export is sent
// exactly once, and the race detector watches the shared state of the replica.
func TestConcurrentBatchesInOneReplica(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	const n = 12
	var ids []string
	for i := range n {
		ids = append(ids, h.AddExport(ctx, i+1).Ready.ExportID)
	}
	cfg := h.config()
	cfg.Concurrency = 4
	h.start(h.sender(cfg, 0))
	for _, id := range ids {
		if st := h.waitStatus(id, lifecycle.Accepted); st.Attempts != 1 {
			t.Errorf("export %s took %d attempts, want 1", id, st.Attempts)
		}
	}
	byExport := h.SandboxByExport()
	if len(byExport) != n {
		t.Fatalf("sandbox holds messages for %d exports, want %d", len(byExport), n)
	}
	for id, msgs := range byExport {
		if len(msgs) != 1 {
			t.Errorf("export %s reached MESH %d times", id, len(msgs))
		}
	}
}

// TestRoutesByProgramme: a programme with a route of its own (MESH_ROUTES) goes to that mailbox and
// workflow; the others keep the default.
func TestRoutesByProgramme(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	x := h.AddExport(ctx, 1)
	cfg := h.config()
	cfg.Routes = map[string]Route{testenv.Programme: {Mailbox: testenv.RouteMailbox, WorkflowID: testenv.RouteWorkflowID},
		"FLU": {Mailbox: testenv.DPSMailbox, WorkflowID: "ELSEWHERE"}}
	h.start(h.sender(cfg, 0))
	st := h.waitStatus(x.Ready.ExportID, lifecycle.Accepted)
	m, ok := h.Sandbox.Message(st.MessageID)
	if !ok {
		t.Fatalf("sandbox does not hold %s", st.MessageID)
	}
	if m.To != testenv.RouteMailbox || m.WorkflowID != testenv.RouteWorkflowID || m.FileName != x.Ready.Filename {
		t.Fatalf("routed message went to %s workflow %s (%s), want %s %s", m.To, m.WorkflowID, m.FileName,
			testenv.RouteMailbox, testenv.RouteWorkflowID)
	}
	if c := (Config{DPSMailbox: "D", WorkflowID: "W", Routes: cfg.Routes}).destination("MENACWY"); c != (Route{"D", "W"}) {
		t.Fatalf("unrouted programme goes to %+v", c)
	}
}
