package bus_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/schemas"
)

const (
	exportID = "2b0f4a9e-51c3-4b8e-a0f1-6c7d8e9f0a1b"
	eventID  = "e4f4b0a2-8f57-4d6e-9c1b-2a1f0c3d4e5f"
)

func setup(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	_, url := natstest.Run(t)
	nc, js := natstest.Connect(t, url)
	if err := bus.EnsureTopology(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func request(id string) bus.ExportRequest {
	return bus.ExportRequest{RequestID: id, Programme: "HPV", RequestedBy: "test", RequestedAt: time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)}
}

// TestSubjectsHaveSchemas: the bus subject table and the schemas package's
// subject map agree.
func TestSubjectsHaveSchemas(t *testing.T) {
	want := map[string]string{
		bus.SubjectExportRequest:      schemas.ExportRequest,
		bus.SubjectExportReady:        schemas.ExportReady,
		bus.SubjectExportCreated:      schemas.ExportCreated,
		bus.SubjectExportSent:         schemas.ExportSent,
		bus.SubjectExportAcknowledged: schemas.ExportAcknowledged,
		bus.SubjectExportFailed:       schemas.ExportFailed,
		bus.SubjectMailboxValidated:   schemas.MailboxValidated,
		bus.SubjectDeadLetterRequest:  schemas.DeadLetter,
		bus.SubjectDeadLetterSender:   schemas.DeadLetter,
		bus.SubjectDeadLetterTracker:  schemas.DeadLetter,
	}
	for subject, name := range want {
		if got, ok := schemas.ForSubject(subject); !ok || got != name {
			t.Errorf("schema of %s = %q, want %q", subject, got, name)
		}
	}
	// Every stream subject is covered.
	for _, s := range bus.NewTopology().Streams() {
		for _, subj := range s.Subjects {
			if _, ok := schemas.ForSubject(strings.ReplaceAll(subj, ">", "x")); !ok {
				t.Errorf("no schema for %s", subj)
			}
		}
	}
}

// TestMessagesMatchSchemas: a filled-in struct of every message type
// marshals to a payload its schema accepts (the json tags are right).
func TestMessagesMatchSchemas(t *testing.T) {
	at := time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)
	sha := strings.Repeat("ab", 32)
	tests := []struct {
		subject string
		v       any
	}{
		{bus.SubjectExportRequest, bus.ExportRequest{RequestID: "r", Programme: bus.ProgrammeAll, RequestedBy: "t", RequestedAt: at, DryRun: true}},
		{bus.SubjectExportReady, bus.ExportReady{ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", ObjectName: exportID, SizeBytes: 10, SHA256: sha, Rows: 1, CreatedAt: at}},
		{bus.SubjectExportCreated, bus.ExportCreated{EventID: eventID, ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", Rows: 1, SizeBytes: 10, SHA256: sha, RequestID: "r", CreatedAt: at}},
		{bus.SubjectExportSent, bus.ExportSent{EventID: eventID, ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", MeshMessageID: "m", LocalID: exportID + ".1", Attempt: 1, SentAt: at}},
		{bus.SubjectExportAcknowledged, bus.ExportAcknowledged{EventID: eventID, ExportID: exportID, Programme: "HPV", MeshMessageID: "m", AcknowledgedAt: at}},
		{bus.SubjectExportFailed, bus.ExportFailed{EventID: eventID, ExportID: exportID, Programme: "HPV", Stage: "sender", Reason: "x", MeshStatus: 417, MeshErrorCode: "EPL-151", FailedAt: at}},
		{bus.SubjectMailboxValidated, bus.MailboxValidated{EventID: eventID, Mailbox: "X26ABC1", Result: "ok", ValidatedAt: at}},
		{bus.SubjectDeadLetterSender, bus.DeadLetterMessage{Stage: "sender", Subject: "s", Reason: "r", PayloadBase64: "", Headers: map[string][]string{}, Stream: "S", StreamSeq: 1, Deliveries: 1, DeadLetteredAt: at}},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.Validate(tt.subject, b); err != nil {
			t.Errorf("%T: %v", tt.v, err)
		}
	}
}

func TestEnsureTopologyIdempotentAndConcurrent(t *testing.T) {
	_, url := natstest.Run(t)
	ctx := t.Context()

	// Many processes starting at once, each with its own connection.
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		_, js := natstest.Connect(t, url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = bus.EnsureTopology(ctx, js)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	_, js := natstest.Connect(t, url)
	// And again, sequentially: nothing changes.
	for range 2 {
		if err := bus.EnsureTopology(ctx, js); err != nil {
			t.Fatal(err)
		}
	}

	topo := bus.NewTopology()
	for _, want := range topo.Streams() {
		s, err := js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("stream %s: %v", want.Name, err)
		}
		got := s.CachedInfo().Config
		if !slices.Equal(got.Subjects, want.Subjects) || got.MaxAge != want.MaxAge || got.Duplicates != bus.DuplicateWindow ||
			got.Storage != jetstream.FileStorage || got.Retention != jetstream.LimitsPolicy {
			t.Errorf("stream %s config %+v", want.Name, got)
		}
	}
	wantConsumers := map[string]struct {
		stream, filter string
		ackWait        time.Duration
		maxDeliver     int
	}{
		bus.ConsumerProducer: {bus.StreamRequests, bus.SubjectExportRequest, 30 * time.Second, 10},
		bus.ConsumerSender:   {bus.StreamBatches, bus.SubjectExportReady, 30 * time.Second, 20},
		bus.ConsumerTracker:  {bus.StreamEvents, bus.SubjectExportSent, 30 * time.Second, 10},
	}
	for name, w := range wantConsumers {
		c, err := js.Consumer(ctx, w.stream, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		cfg := c.CachedInfo().Config
		if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait != w.ackWait || cfg.MaxDeliver != w.maxDeliver ||
			cfg.FilterSubject != w.filter || len(cfg.BackOff) == 0 || cfg.BackOff[0] != w.ackWait || cfg.MaxAckPending <= 0 {
			t.Errorf("consumer %s config %+v", name, cfg)
		}
	}
	if _, err := js.ObjectStore(ctx, bus.BucketExports); err != nil {
		t.Fatalf("object store: %v", err)
	}
	// Still exactly four streams plus the bucket's.
	names := js.StreamNames(ctx)
	var all []string
	for n := range names.Name() {
		all = append(all, n)
	}
	if len(all) != 5 {
		t.Errorf("streams %v", all)
	}
}

func TestPublishDedupe(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	ack1, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "req-1", request("req-1"))
	if err != nil {
		t.Fatal(err)
	}
	ack2, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "req-1", request("req-1"))
	if err != nil {
		t.Fatal(err)
	}
	if ack1.Duplicate || !ack2.Duplicate || ack1.Sequence != ack2.Sequence || ack1.Stream != bus.StreamRequests {
		t.Fatalf("acks %+v %+v", ack1, ack2)
	}
	s, _ := js.Stream(ctx, bus.StreamRequests)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages, want 1", info.State.Msgs)
	}
}

func TestPublishRefusesInvalid(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	bad := request("req-1")
	bad.Programme = "hpv"
	_, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "req-1", bad)
	var ime *bus.InvalidMessageError
	if !errors.As(err, &ime) || !strings.Contains(err.Error(), "programme: does not match pattern") {
		t.Fatalf("got %v", err)
	}
	if _, err := bus.Publish(ctx, js, "dps.export.unknown", "x", request("x")); !errors.Is(err, schemas.ErrUnknownSubject) {
		t.Fatalf("unknown subject: %v", err)
	}
	if _, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "", request("x")); err == nil {
		t.Fatal("empty msg id accepted")
	}
	if _, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "raw", []byte(`{"request_id":1}`)); !errors.As(err, &ime) {
		t.Fatalf("raw invalid: %v", err)
	}
	s, _ := js.Stream(ctx, bus.StreamRequests)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 0 {
		t.Fatalf("%d messages stored, want 0", info.State.Msgs)
	}
}

// TestPublishRetriesUntilStreamExists: with no stream (as while NATS
// restarts) there are no responders; Publish keeps trying and succeeds once
// the stream appears, or gives up when ctx ends.
func TestPublishRetriesUntilStreamExists(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)

	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := bus.Publish(short, js, bus.SubjectExportRequest, "r", request("r")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}

	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = bus.EnsureTopology(context.Background(), js)
	}()
	ctx, cancel2 := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel2()
	ack, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "r", request("r"))
	if err != nil || ack.Stream != bus.StreamRequests {
		t.Fatalf("publish: %+v %v", ack, err)
	}
}

// fetchOne fetches one message from a durable consumer.
func fetchOne(t *testing.T, js jetstream.JetStream, stream, consumer string) jetstream.Msg {
	t.Helper()
	c, err := js.Consumer(t.Context(), stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m
	}
	t.Fatalf("no message on %s/%s: %v", stream, consumer, batch.Error())
	return nil
}

func TestDecode(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	tests := []struct {
		name    string
		payload string
		reason  string // "" = valid
	}{
		{"valid", `{"request_id":"r1","programme":"HPV","requested_by":"t","requested_at":"2024-08-23T02:00:00Z","dry_run":true}`, ""},
		{"malformed", `{"request_id":`, "malformed JSON"},
		{"schema", `{"request_id":"r1","programme":"HPV","requested_at":"2024-08-23T02:00:00Z"}`, "requested_by: missing"},
		{"bad date", `{"request_id":"r1","programme":"HPV","requested_by":"t","requested_at":"yesterday"}`, "requested_at: is not a valid date-time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Raw publish: other systems do not go through bus.Publish.
			if _, err := js.Publish(ctx, bus.SubjectExportRequest, []byte(tt.payload)); err != nil {
				t.Fatal(err)
			}
			m := fetchOne(t, js, bus.StreamRequests, bus.ConsumerProducer)
			defer m.Ack()
			var req bus.ExportRequest
			err := bus.Decode(m, &req)
			if tt.reason == "" {
				if err != nil || req.RequestID != "r1" || !req.DryRun || !req.RequestedAt.Equal(time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)) {
					t.Fatalf("decode: %+v %v", req, err)
				}
				return
			}
			var ime *bus.InvalidMessageError
			if !errors.As(err, &ime) || !strings.Contains(ime.Reason, tt.reason) || ime.Subject != bus.SubjectExportRequest {
				t.Fatalf("got %v, want InvalidMessageError with %q", err, tt.reason)
			}
		})
	}
}

func TestDeadLetter(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	payloads := [][]byte{[]byte(`{"programme":"nope"}`), {0xff, 0xfe, '{'}}
	for i, payload := range payloads {
		msg := &nats.Msg{Subject: bus.SubjectExportRequest, Data: payload, Header: nats.Header{"X-Origin": []string{"other-system"}}}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		m := fetchOne(t, js, bus.StreamRequests, bus.ConsumerProducer)
		err := bus.Decode(m, &bus.ExportRequest{})
		if err == nil {
			t.Fatal("invalid payload decoded")
		}
		reason := err.Error() + "\nsecond line"
		// Twice, as after a crash between dead-lettering and acking.
		for range 2 {
			if err := bus.DeadLetter(ctx, js, bus.StageRequest, m, reason); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}

		s, _ := js.Stream(ctx, bus.StreamDeadLetter)
		info, _ := s.Info(ctx)
		if info.State.Msgs != uint64(i+1) {
			t.Fatalf("%d dead letters, want %d", info.State.Msgs, i+1)
		}
		raw, err := s.GetLastMsgForSubject(ctx, bus.SubjectDeadLetterRequest)
		if err != nil {
			t.Fatal(err)
		}
		if got := raw.Header.Get(jetstream.MsgIDHeader); got != bus.DeadLetterMsgID(bus.StageRequest, bus.StreamRequests, uint64(i+1)) {
			t.Errorf("msg id %q", got)
		}
		if got := raw.Header.Get(bus.HeaderDeadLetterReason); !strings.Contains(got, "programme") && i == 0 || strings.ContainsAny(got, "\r\n") {
			t.Errorf("reason header %q", got)
		}
		if err := schemas.Validate(raw.Subject, raw.Data); err != nil {
			t.Fatal(err)
		}
		var dl bus.DeadLetterMessage
		if err := json.Unmarshal(raw.Data, &dl); err != nil {
			t.Fatal(err)
		}
		orig, whole, err := dl.OriginalPayload()
		if err != nil || !whole {
			t.Fatalf("payload: whole %v, %v", whole, err)
		}
		if (dl.Payload == "") == (dl.PayloadBase64 == "") && len(payload) > 0 {
			t.Errorf("payload kept twice or not at all: %q / %q", dl.Payload, dl.PayloadBase64)
		}
		if dl.PayloadSize != len(payload) {
			t.Errorf("payload size %d, want %d", dl.PayloadSize, len(payload))
		}
		if dl.Stage != bus.StageRequest || dl.Subject != bus.SubjectExportRequest || dl.Stream != bus.StreamRequests ||
			dl.StreamSeq != uint64(i+1) || dl.Deliveries != 1 || dl.Reason != reason || !bytes.Equal(orig, payload) ||
			dl.Headers["X-Origin"][0] != "other-system" || dl.DeadLetteredAt.IsZero() {
			t.Errorf("dead letter %+v", dl)
		}
		if wantText := i == 0; (dl.Payload != "") != wantText || (wantText && dl.Payload != string(payload)) {
			t.Errorf("payload text %q", dl.Payload)
		}
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		serveNATS(dir)
		return
	}
	os.Exit(m.Run())
}

const serveEnv = "BUS_TEST_SERVE_NATS"

// serveNATS runs in the child process: start a server, print its URL, and
// stop when the parent closes stdin.
func serveNATS(dir string) {
	opts := natstest.DefaultOptions()
	opts.StoreDir = dir
	srv, err := natstest.Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(srv.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Shutdown()
	srv.WaitForShutdown()
}

// serverProcess starts a JetStream server in a child process (this test
// binary re-executed) and returns its URL.
func serverProcess(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("nats server process: %v", err)
		}
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("nats server process: %v", err)
	}
	return strings.TrimSpace(url)
}

// patternReader yields n deterministic bytes without holding them.
type patternReader struct{ left, i int }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	for k := range n {
		p[k] = byte(r.i*31 + r.i>>8)
		r.i++
	}
	r.left -= n
	return n, nil
}

// TestObjectStoreRoundTrip streams 50 MB in and out and checks the bytes and
// that the heap never held anything close to the whole file.
func TestObjectStoreRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("50 MB round trip")
	}
	// The server runs in a child process so that the heap measured here is
	// the client's alone: an embedded server's ingest queues would count.
	_, js := natstest.Connect(t, serverProcess(t))
	ctx := t.Context()
	if err := bus.EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(20)) // keep garbage from masking live memory
	obs, err := bus.ExportStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	const size = 50 << 20

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // sample the heap while data flows
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	want := sha256.New()
	info, err := bus.PutExport(ctx, obs, exportID, io.TeeReader(&patternReader{left: size}, want),
		bus.ExportMeta{ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv"})
	if err != nil {
		t.Fatal(err)
	}
	wantHex := hex.EncodeToString(want.Sum(nil))
	if info.Size != size {
		t.Fatalf("size %d", info.Size)
	}
	if got, err := bus.ObjectSHA256(info); err != nil || got != wantHex {
		t.Fatalf("ObjectSHA256 = %s, %v; want %s", got, err, wantHex)
	}

	res, err := bus.GetExport(ctx, obs, exportID)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, res)
	res.Close()
	close(stop)
	<-done
	if err != nil || n != size || hex.EncodeToString(got.Sum(nil)) != wantHex {
		t.Fatalf("read back %d bytes, err %v", n, err)
	}
	ri, _ := res.Info()
	if ri.Metadata["filename"] != "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv" || ri.Metadata["export_id"] != exportID {
		t.Errorf("metadata %v", ri.Metadata)
	}
	grew := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("client heap in use grew by at most %.1f MiB for a %d MiB object", float64(grew)/(1<<20), size>>20)
	if grew > 16<<20 {
		t.Errorf("heap grew by %d MiB: the file is being held in memory", grew>>20)
	}

	if _, err := bus.GetExport(ctx, obs, "missing"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("missing object: %v", err)
	}
}

func TestConnect(t *testing.T) {
	_, url := natstest.Run(t)
	nc, js, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: url, Name: "bus-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := bus.EnsureTopology(t.Context(), js); err != nil {
		t.Fatal(err)
	}

	// Nothing listening: gives up when ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, _, err := bus.Connect(ctx, bus.ConnectOptions{URL: "nats://127.0.0.1:1", Name: "bus-test"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

// TestPublishAcrossServerRestart: a publish made while the server is down
// completes once it is back (same port, same store), stored exactly once.
func TestPublishAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv, url := natstest.RunWithOptions(t, func(o *server.Options) { o.StoreDir = dir })
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := bus.EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()

	result := make(chan error, 1)
	go func() {
		_, err := bus.Publish(ctx, js, bus.SubjectExportRequest, "during-restart", request("during-restart"))
		result <- err
	}()
	time.Sleep(500 * time.Millisecond)
	opts := natstest.DefaultOptions()
	opts.StoreDir, opts.Port = dir, port
	srv2, err := natstest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })
	if err := <-result; err != nil {
		t.Fatalf("publish across restart: %v", err)
	}
	s, err := js.Stream(ctx, bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages, want 1", info.State.Msgs)
	}
}

// TestNewDeadLetter: the builder other stages enqueue through the outbox shapes the same dead letter
// that DeadLetter publishes, cuts the reason to the schema's limit on a rune boundary, and names an
// empty reason.
func TestNewDeadLetter(t *testing.T) {
	_, js := setup(t)
	ctx := t.Context()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: bus.SubjectExportRequest, Data: []byte(`{"x":1}`),
		Header: nats.Header{"X-Origin": []string{"a", "b"}}}); err != nil {
		t.Fatal(err)
	}
	m := fetchOne(t, js, bus.StreamRequests, bus.ConsumerProducer)
	tests := []struct {
		name, reason, want string
	}{
		{"plain", "bad programme", "bad programme"},
		{"empty", "", "unspecified"},
		{"cut on a rune boundary", strings.Repeat("a", 4095) + "é", strings.Repeat("a", 4095)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dl, err := bus.NewDeadLetter(bus.StageSender, m, tt.reason)
			if err != nil {
				t.Fatal(err)
			}
			if dl.Reason != tt.want {
				t.Errorf("reason %q (%d bytes), want %d bytes", dl.Reason, len(dl.Reason), len(tt.want))
			}
			if dl.MsgID() != bus.DeadLetterMsgID(bus.StageSender, bus.StreamRequests, 1) || dl.Stage != bus.StageSender ||
				dl.Payload != `{"x":1}` || dl.PayloadBase64 != "" || dl.PayloadSize != 7 ||
				len(dl.Headers["X-Origin"]) != 2 || dl.StreamSeq != 1 || dl.Deliveries != 1 {
				t.Errorf("dead letter %+v", dl)
			}
			body, err := json.Marshal(dl)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemas.Validate(bus.DeadLetterSubject(bus.StageSender), body); err != nil {
				t.Fatal(err)
			}
		})
	}
}
