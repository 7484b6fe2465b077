package mesh_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// The expected HMAC was computed outside this code, once, with:
//
//	printf '%s' 'X26ABC1:00000000-0000-0000-0000-000000000000:0:password:202401020304' |
//	  openssl dgst -sha256 -hmac TestKey
const specVectorHMAC = "567d010b356536958a5c843b561f9c7d2648317d8653d29383b341444e92eb40"

func TestAuthorizationTokenSpecVector(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 59, 0, time.UTC)
	got := mesh.AuthorizationToken("X26ABC1", "password", "TestKey", "00000000-0000-0000-0000-000000000000", 0, at)
	want := "NHSMESH X26ABC1:00000000-0000-0000-0000-000000000000:0:202401020304:" + specVectorHMAC
	if got != want {
		t.Fatalf("token\n got %s\nwant %s", got, want)
	}
	// The timestamp is UTC whatever the zone of t.
	london := at.In(time.FixedZone("BST", 3600))
	if got := mesh.AuthorizationToken("X26ABC1", "password", "TestKey", "00000000-0000-0000-0000-000000000000", 0, london); got != want {
		t.Fatalf("token from a non-UTC time differs: %s", got)
	}
}

var tokenPattern = regexp.MustCompile(`^NHSMESH ([A-Z0-9]+):([0-9a-f-]{36}):0:(\d{12}):([0-9a-f]{64})$`)

func TestEveryRequestHasHeadersAndAFreshToken(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	ctx := t.Context()
	if err := sender.Handshake(ctx); err != nil {
		t.Fatal(err)
	}
	id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, FileName: "a.csv",
		LocalID: "local-1", ContentType: "text/csv", Compress: true, Body: strings.NewReader("a,b\n1,2\n")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sender.Track(ctx, id); err != nil {
		t.Fatal(err)
	}
	receiver := e.client(t, receiverMB, receiverPW)
	if _, err := receiver.Inbox(ctx); err != nil {
		t.Fatal(err)
	}

	reqs := e.rec.all()
	if len(reqs) < 4 {
		t.Fatalf("saw %d requests", len(reqs))
	}
	nonces := map[string]bool{}
	for _, r := range reqs {
		for _, h := range []string{"mex-ClientVersion", "mex-OSName", "mex-OSVersion", "mex-OSArchitecture", "User-Agent"} {
			if r.Header.Get(h) == "" {
				t.Errorf("%s %s: no %s", r.Method, r.Path, h)
			}
		}
		if got := r.Header.Get("Accept"); got != "application/vnd.mesh.v2+json" {
			t.Errorf("%s %s: Accept %q", r.Method, r.Path, got)
		}
		m := tokenPattern.FindStringSubmatch(r.Header.Get("Authorization"))
		if m == nil {
			t.Errorf("%s %s: Authorization %q does not match the NHSMESH form", r.Method, r.Path, r.Header.Get("Authorization"))
			continue
		}
		if nonces[m[2]] {
			t.Errorf("nonce %s used twice", m[2])
		}
		nonces[m[2]] = true
	}
	if !strings.HasPrefix(reqs[0].Header.Get("mex-ClientVersion"), "dps-pipeline==") {
		t.Errorf("mex-ClientVersion %q", reqs[0].Header.Get("mex-ClientVersion"))
	}
	e.assertNoSecrets(t)
}

// payload returns n deterministic bytes: random ones (incompressible) or CSV-like ones.
func payload(n int, random bool) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	if random {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "%d,9%09d,HPV,%d,administered,left arm,2024-09-%02d\n", i, r.IntN(1e9), r.IntN(3), 1+i%28)
	}
	return buf.Bytes()[:n]
}

// onlyReader hides every interface but io.Reader, as a pipe or network stream would.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestSendAndDownloadAreByteIdentical(t *testing.T) {
	const chunk = 64 << 10
	cases := []struct {
		name       string
		size       int
		random     bool
		compress   bool
		seekable   bool
		chunkSize  int64
		wantChunks int // 0: more than one, exact number not fixed
	}{
		{"1 byte plain", 1, false, false, true, 0, 1},
		{"1 byte gzip", 1, false, true, false, 0, 1},
		{"1 MiB gzip", 1 << 20, false, true, true, 0, 1},
		{"1 MiB plain stream", 1 << 20, true, false, false, 0, 1},
		{"3 chunks plain seekable", 3*chunk - 100, true, false, true, chunk, 3},
		{"3 chunks plain stream", 3 * chunk, true, false, false, chunk, 3},
		{"chunked gzip incompressible", 3*chunk - 100, true, true, true, chunk, 0},
		{"chunked gzip csv", 2 << 20, false, true, false, chunk, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = tc.chunkSize })
			receiver := e.client(t, receiverMB, receiverPW)
			data := payload(tc.size, tc.random)
			var body io.Reader = bytes.NewReader(data)
			if !tc.seekable {
				body = onlyReader{body}
			}
			ctx := t.Context()
			id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow,
				FileName: "Vaccinations-HPV.csv", LocalID: "exp-1.1", Subject: "DPS", ContentType: "text/csv",
				Compress: tc.compress, Body: body})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			m, ok := e.sb.Message(id)
			if !ok {
				t.Fatalf("sandbox has no message %s", id)
			}
			if m.Status != meshsandbox.StatusAccepted {
				t.Errorf("status %q, want accepted", m.Status)
			}
			switch {
			case tc.wantChunks > 0 && m.TotalChunks != tc.wantChunks:
				t.Errorf("sandbox holds %d chunks, want %d", m.TotalChunks, tc.wantChunks)
			case tc.wantChunks == 0 && m.TotalChunks < 2:
				t.Errorf("sandbox holds %d chunks, want several", m.TotalChunks)
			}
			wantEncoding := ""
			if tc.compress {
				wantEncoding = "gzip"
			}
			if m.ContentEncoding != wantEncoding {
				t.Errorf("content encoding %q, want %q", m.ContentEncoding, wantEncoding)
			}
			limit := tc.chunkSize
			if limit == 0 {
				limit = mesh.DefaultChunkSize
			}
			sends := 0
			for _, r := range e.rec.all() {
				if r.Route == "send" || r.Route == "send_chunk" {
					sends++
					if r.Length > limit {
						t.Errorf("%s carried %d bytes, over the chunk size %d", r.Path, r.Length, limit)
					}
				}
			}
			if sends != m.TotalChunks {
				t.Errorf("%d send requests for %d chunks", sends, m.TotalChunks)
			}

			d, err := receiver.Download(ctx, id)
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			got, err := io.ReadAll(d.Body)
			d.Body.Close()
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("downloaded %d bytes (sha %x), sent %d (sha %x)", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
			}
			if d.From != senderMB || d.To != receiverMB || d.WorkflowID != workflow || d.FileName != "Vaccinations-HPV.csv" ||
				d.LocalID != "exp-1.1" || d.MessageID != id || d.TotalChunks != m.TotalChunks {
				t.Errorf("download metadata %+v", *d)
			}
		})
	}
}

// A server that decompresses chunk by chunk (the official sandbox does, for clients that do not accept
// gzip) can only do so when each chunk is a whole gzip stream. This reads each chunk through raw
// net/http, without Accept-Encoding, and checks the pieces add up to the file.
func TestCompressedChunksAreWholeGzipStreams(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 32 << 10 })
	data := payload(200<<10, true)
	id, err := sender.Send(t.Context(), mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Compress: true, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := e.sb.Message(id)
	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	var got []byte
	for n := 1; n <= m.TotalChunks; n++ {
		url := e.srv.URL + "/messageexchange/" + receiverMB + "/inbox/" + id
		if n > 1 {
			url += fmt.Sprintf("/%d", n)
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		req.Header.Set("Authorization", mesh.AuthorizationToken(receiverMB, receiverPW, sharedKey, fmt.Sprintf("00000000-0000-0000-0000-%012d", n), 0, time.Now()))
		req.Header.Set("Accept", "application/vnd.mesh.v2+json")
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("chunk %d: HTTP %d %s", n, resp.StatusCode, b)
		}
		if ce := resp.Header.Get("Content-Encoding"); ce != "" {
			t.Fatalf("chunk %d still encoded %q", n, ce)
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("chunk-by-chunk decompression gave %d bytes, want %d", len(got), len(data))
	}
}

func TestInboxPagingOver1200Messages(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	receiver := e.client(t, receiverMB, receiverPW)
	ctx := t.Context()
	const total = 1200
	sent := make([]string, total)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow,
					LocalID: fmt.Sprintf("page-%d", i), Body: strings.NewReader(fmt.Sprintf("message %d\n", i))})
				if err != nil {
					errs <- err
					continue
				}
				sent[i] = id
			}
		})
	}
	for i := range total {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	first, err := receiver.InboxPage(ctx, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Messages) != 500 || first.Next == "" || first.ApproxInboxCount != total {
		t.Fatalf("first page: %d messages, next %q, approx %d", len(first.Messages), first.Next, first.ApproxInboxCount)
	}

	e.rec.reset()
	all, err := receiver.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != total {
		t.Fatalf("inbox listed %d messages, want %d", len(all), total)
	}
	if got := e.rec.count("inbox"); got < 3 {
		t.Errorf("listing 1200 messages took %d pages; expected links.next to be followed (default page 500)", got)
	}
	want := slices.Clone(sent)
	slices.Sort(want)
	got := slices.Clone(all)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatal("inbox ids differ from the sent ids (lost or duplicated across pages)")
	}

	// Pages of 10..5000, walked by hand, give the same list.
	var walked []string
	next := ""
	for {
		p, err := receiver.InboxPage(ctx, 350, next)
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, p.Messages...)
		if p.Next == "" {
			break
		}
		next = p.Next
	}
	if !slices.Equal(walked, all) {
		t.Fatalf("walking pages of 350 gave %d ids in another order than Inbox", len(walked))
	}
	if _, err := receiver.InboxPage(ctx, 5, ""); !errors.Is(err, mesh.ErrInvalidArgument) {
		t.Fatalf("max results 5: err %v, want ErrInvalidArgument", err)
	}
}

func TestAcknowledge(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	receiver := e.client(t, receiverMB, receiverPW)
	ctx := t.Context()
	id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "ack-1", Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.Acknowledge(ctx, id); err != nil {
		t.Fatal(err)
	}
	inbox, err := receiver.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(inbox, id) {
		t.Fatal("acknowledged message still listed")
	}
	if err := receiver.Acknowledge(ctx, id); err != nil {
		t.Fatalf("second acknowledge: %v", err)
	}
	tr, err := sender.Track(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != mesh.StatusAcknowledged {
		t.Fatalf("tracking status %q after ack", tr.Status)
	}
	// Only the recipient may acknowledge: MESH says 403, permanent after the one fresh-token retry.
	err = e.client(t, otherMB, otherPW).Acknowledge(ctx, id)
	if !mesh.IsPermanent(err) || statusOf(err) != http.StatusForbidden {
		t.Fatalf("ack by a stranger: %v", err)
	}
	if err := receiver.Acknowledge(ctx, "NOSUCHMESSAGE"); !mesh.IsNotFound(err) {
		t.Fatalf("ack unknown message: %v", err)
	}
}

func statusOf(err error) int {
	var e *mesh.Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

func TestTracking(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	ctx := t.Context()
	id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, FileName: "f.csv",
		LocalID: "export-7.1", Body: strings.NewReader("hello")})
	if err != nil {
		t.Fatal(err)
	}

	tr, err := sender.Track(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tr.MessageID != id || tr.LocalID != "export-7.1" || tr.WorkflowID != workflow || tr.FileName != "f.csv" ||
		tr.Recipient != receiverMB || tr.Status != mesh.StatusAccepted || len(tr.Raw) == 0 {
		t.Fatalf("tracking %+v", *tr)
	}
	if tr.StatusSuccess != nil && !*tr.StatusSuccess {
		t.Errorf("status_success false for an accepted message")
	}

	lt, err := sender.TrackByLocalID(ctx, "export-7.1")
	if err != nil {
		t.Fatal(err)
	}
	if lt.MessageID != id || lt.LocalID != "export-7.1" || lt.Status != mesh.StatusAccepted {
		t.Fatalf("tracking by local id %+v", *lt)
	}

	if _, err := sender.TrackByLocalID(ctx, "export-7.2"); !mesh.IsNotFound(err) {
		t.Fatalf("unknown local id: %v, want not found", err)
	}
	if _, err := sender.Track(ctx, "NOSUCHMESSAGE"); !mesh.IsNotFound(err) {
		t.Fatalf("unknown message: %v, want not found", err)
	}
	// Only the sender may track.
	if _, err := e.client(t, receiverMB, receiverPW).Track(ctx, id); !mesh.IsNotFound(err) {
		t.Fatalf("recipient tracking: %v, want not found", err)
	}

	if _, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "export-7.1", Body: strings.NewReader("again")}); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.TrackByLocalID(ctx, "export-7.1"); !errors.Is(err, mesh.ErrSeveralMessages) || mesh.IsTransient(err) {
		t.Fatalf("two messages with one local id: %v, want ErrSeveralMessages", err)
	}

	if err := e.sb.MarkUndeliverable(id); err != nil {
		t.Fatal(err)
	}
	tr, err = sender.Track(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != mesh.StatusUndeliverable || tr.StatusCode != "14" {
		t.Fatalf("undeliverable tracking: status %q code %q", tr.Status, tr.StatusCode)
	}
}

func TestRetriesTransientFailures(t *testing.T) {
	cases := []struct {
		route  string
		status int
		call   func(ctx context.Context, sender, receiver *mesh.Client, id string) error
	}{
		{"send", 500, sendSmall},
		{"send", 503, sendSmall},
		{"send", 429, sendSmall},
		{"send_chunk", 503, sendChunked},
		{"handshake", 502, func(ctx context.Context, s, _ *mesh.Client, _ string) error { return s.Handshake(ctx) }},
		{"inbox", 504, func(ctx context.Context, _, r *mesh.Client, _ string) error { _, err := r.Inbox(ctx); return err }},
		{"download", 500, func(ctx context.Context, _, r *mesh.Client, id string) error {
			d, err := r.Download(ctx, id)
			if err == nil {
				_, err = io.Copy(io.Discard, d.Body)
				d.Body.Close()
			}
			return err
		}},
		{"ack", 503, func(ctx context.Context, _, r *mesh.Client, id string) error { return r.Acknowledge(ctx, id) }},
		{"track", 429, func(ctx context.Context, s, _ *mesh.Client, id string) error { _, err := s.Track(ctx, id); return err }},
		{"track_local", 500, func(ctx context.Context, s, _ *mesh.Client, _ string) error {
			_, err := s.TrackByLocalID(ctx, "seed.1")
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %d", tc.route, tc.status), func(t *testing.T) {
			e := newEnv(t)
			sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 4 << 10 })
			receiver := e.client(t, receiverMB, receiverPW)
			ctx := t.Context()
			id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "seed.1", Body: strings.NewReader("seed")})
			if err != nil {
				t.Fatal(err)
			}
			before := e.sb.Requests(tc.route)
			e.sb.InjectFault(meshsandbox.Fault{Route: tc.route, Status: tc.status, Count: 2})
			if err := tc.call(ctx, sender, receiver, id); err != nil {
				t.Fatalf("call failed despite retries: %v", err)
			}
			// Two failures then success: three attempts at the faulted route.
			if got := e.sb.Requests(tc.route) - before; got < 3 {
				t.Fatalf("sandbox saw %d %s requests, want at least 3", got, tc.route)
			}
			if tc.route == "send" {
				if got := e.sb.Requests(tc.route) - before; got != 3 {
					t.Fatalf("sandbox saw %d send requests, want 3", got)
				}
				if n := len(e.sb.Messages(receiverMB)); n != 2 {
					t.Fatalf("%d messages after a retried send, want 2 (seed + one)", n)
				}
			}
			e.assertNoSecrets(t)
		})
	}
}

func sendSmall(ctx context.Context, s, _ *mesh.Client, _ string) error {
	_, err := s.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "retry.1", Body: strings.NewReader("payload")})
	return err
}

func sendChunked(ctx context.Context, s, r *mesh.Client, _ string) error {
	data := payload(3*(4<<10), true)
	id, err := s.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "retry.2", Body: bytes.NewReader(data)})
	if err != nil {
		return err
	}
	d, err := r.Download(ctx, id)
	if err != nil {
		return err
	}
	defer d.Body.Close()
	got, err := io.ReadAll(d.Body)
	if err == nil && !bytes.Equal(got, data) {
		err = errors.New("chunked message changed by chunk retries")
	}
	return err
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	e.sb.InjectFault(meshsandbox.Fault{Route: "send", Status: 429, Count: 1, RetryAfter: time.Second})
	if err := sendSmall(t.Context(), sender, nil, ""); err != nil {
		t.Fatal(err)
	}
	var arrivals []time.Time
	for _, r := range e.rec.all() {
		if r.Route == "send" {
			arrivals = append(arrivals, r.Arrived)
		}
	}
	if len(arrivals) != 2 {
		t.Fatalf("%d send attempts, want 2", len(arrivals))
	}
	// Backoff is at most 5ms here, so only Retry-After explains a gap of a second. This is a lower
	// bound the client must respect, not a timing expectation.
	if gap := arrivals[1].Sub(arrivals[0]); gap < 900*time.Millisecond {
		t.Fatalf("retried after %v, before Retry-After: 1", gap)
	}
}

func TestRetriesStopWithinLimits(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.MaxRetries = 2 })
	e.sb.InjectFault(meshsandbox.Fault{Route: "handshake", Status: 503, Count: 100})
	err := sender.Handshake(t.Context())
	if !mesh.IsTransient(err) || mesh.IsPermanent(err) || statusOf(err) != 503 {
		t.Fatalf("err %v, want transient 503", err)
	}
	if got := e.sb.Requests("handshake"); got != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", got)
	}

	// A Retry-After longer than the budget ends the call at once rather than sleeping past it.
	e.sb.ClearFaults()
	e.sb.InjectFault(meshsandbox.Fault{Route: "handshake", Status: 429, Count: 100, RetryAfter: time.Hour})
	before := e.sb.Requests("handshake")
	tight := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.RetryBudget = time.Minute })
	if err := tight.Handshake(t.Context()); !mesh.IsTransient(err) || statusOf(err) != 429 {
		t.Fatalf("err %v, want transient 429", err)
	}
	if got := e.sb.Requests("handshake") - before; got != 1 {
		t.Fatalf("%d attempts, want 1", got)
	}
	var me *mesh.Error
	if errors.As(err, &me); me != nil && me.RetryAfter != 0 {
		t.Logf("retry after %v", me.RetryAfter)
	}
}

func TestNoRetryOnPermanentErrors(t *testing.T) {
	cases := []struct {
		name         string
		fault        *meshsandbox.Fault
		msg          mesh.OutboundMessage
		password     string
		wantStatus   int
		wantAttempts int
		wantCode     string
	}{
		{name: "400 injected", fault: &meshsandbox.Fault{Route: "send", Status: 400, Count: 5}, wantStatus: 400, wantAttempts: 1},
		{name: "417 unregistered recipient", msg: mesh.OutboundMessage{To: "X26NOPE"}, wantStatus: 417, wantAttempts: 1, wantCode: "12"},
		{name: "403 injected, one fresh-token retry", fault: &meshsandbox.Fault{Route: "send", Status: 403, Count: 5}, wantStatus: 403, wantAttempts: 2},
		{name: "403 wrong password, one fresh-token retry", password: "wrong", wantStatus: 403, wantAttempts: 2},
		{name: "422 injected", fault: &meshsandbox.Fault{Route: "send", Status: 422, Count: 5}, wantStatus: 422, wantAttempts: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pw := senderPW
			if tc.password != "" {
				pw = tc.password
			}
			sender := e.client(t, senderMB, pw)
			if tc.fault != nil {
				e.sb.InjectFault(*tc.fault)
			}
			m := tc.msg
			if m.To == "" {
				m.To = receiverMB
			}
			m.WorkflowID, m.Body = workflow, strings.NewReader("payload")
			_, err := sender.Send(t.Context(), m)
			if !mesh.IsPermanent(err) || mesh.IsTransient(err) {
				t.Fatalf("err %v, want permanent", err)
			}
			var me *mesh.Error
			if !errors.As(err, &me) || me.StatusCode != tc.wantStatus {
				t.Fatalf("err %v, want status %d", err, tc.wantStatus)
			}
			if tc.wantCode != "" && me.Code != tc.wantCode {
				t.Errorf("MESH code %q, want %q (%v)", me.Code, tc.wantCode, err)
			}
			if got := e.sb.Requests("send"); got != tc.wantAttempts {
				t.Fatalf("sandbox saw %d send attempts, want %d", got, tc.wantAttempts)
			}
			text := err.Error()
			t.Logf("error text: %s", text)
			if !strings.Contains(text, "send") || !strings.Contains(text, fmt.Sprint(tc.wantStatus)) {
				t.Errorf("error text %q lacks op or status", text)
			}
			if tc.wantCode != "" && (!strings.Contains(text, tc.wantCode) || !strings.Contains(text, me.Description) || me.Description == "") {
				t.Errorf("error text %q lacks MESH code and description", text)
			}
			if strings.Contains(text, pw) || strings.Contains(text, sharedKey) {
				t.Errorf("error text leaks a secret: %q", text)
			}
			e.assertNoSecrets(t)
		})
	}
}

// The lost-response case: MESH stored the message but the answer never reached us. With a local id the
// client asks MESH before sending again, and adopts the stored message instead of duplicating it.
func TestSendAdoptsMessageWhenResponseIsLost(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			e := newEnv(t)
			sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 4 << 10 })
			var once sync.Once
			e.rec.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
				hit := false
				if routeOf(r) == "send" {
					once.Do(func() {
						hit = true
						next.ServeHTTP(httptest.NewRecorder(), r) // stored, answer discarded
						w.WriteHeader(http.StatusBadGateway)
					})
				}
				return hit
			})
			size := 100
			if chunked {
				size = 3 * (4 << 10)
			}
			data := payload(size, true)
			id, err := sender.Send(t.Context(), mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "exp-9.1", Body: bytes.NewReader(data)})
			if err != nil {
				t.Fatal(err)
			}
			msgs := e.sb.Messages(receiverMB)
			if len(msgs) != 1 || msgs[0].ID != id || msgs[0].Status != meshsandbox.StatusAccepted {
				t.Fatalf("sandbox messages %+v, want exactly %s accepted", msgs, id)
			}
			if got := e.sb.Requests("send"); got != 1 {
				t.Fatalf("%d first-chunk sends, want 1 (adopted, not resent)", got)
			}
			d, err := e.client(t, receiverMB, receiverPW).Download(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(d.Body)
			d.Body.Close()
			if !bytes.Equal(got, data) {
				t.Fatal("adopted message body differs")
			}
		})
	}
}

func TestCancellationMidSend(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 16 << 10 })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e.rec.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if routeOf(r) != "send_chunk" {
			return false
		}
		// Cancel while chunk 2 is on the wire, and hold the request until the client has gone.
		cancel()
		_, _ = io.Copy(io.Discard, r.Body) // the server notices the client left only once the body is read
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return true
	})
	_, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, LocalID: "cancel.1",
		Body: bytes.NewReader(payload(5*(16<<10), true))})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if mesh.IsTransient(err) || mesh.IsPermanent(err) {
		t.Fatalf("cancellation classified as transient/permanent: %v", err)
	}
	if got := e.rec.count("send_chunk"); got != 1 {
		t.Fatalf("%d chunk requests after cancellation, want 1", got)
	}
	msgs := e.sb.Messages(senderMB)
	if len(msgs) != 1 || msgs[0].Status != meshsandbox.StatusUploading {
		t.Fatalf("messages %+v, want one still uploading", msgs)
	}
}

func TestCancellationDuringBackoff(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW)
	e.sb.InjectFault(meshsandbox.Fault{Route: "send", Status: 503, Count: 100, RetryAfter: 60 * time.Second})
	ctx, cancel := context.WithCancel(t.Context())
	e.rec.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		return false
	})
	done := make(chan error, 1)
	go func() { done <- sendSmall(ctx, sender, nil, "") }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Send kept waiting out Retry-After after its context was cancelled")
	}
	if got := e.sb.Requests("send"); got != 1 {
		t.Fatalf("%d attempts, want 1", got)
	}
}

func TestClientRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, senderMB, senderPW)
	ctx := t.Context()
	for name, m := range map[string]mesh.OutboundMessage{
		"no recipient": {WorkflowID: workflow, Body: strings.NewReader("x")},
		"no workflow":  {To: receiverMB, Body: strings.NewReader("x")},
		"no body":      {To: receiverMB, WorkflowID: workflow},
	} {
		if _, err := c.Send(ctx, m); !errors.Is(err, mesh.ErrInvalidArgument) {
			t.Errorf("%s: err %v, want ErrInvalidArgument", name, err)
		}
	}
	if got := len(e.rec.all()); got != 0 {
		t.Errorf("bad input reached the server %d times", got)
	}
	for name, cfg := range map[string]mesh.Config{
		"no url":      {Mailbox: "X", Password: "p", SharedKey: "k"},
		"bad url":     {BaseURL: "ftp://x", Mailbox: "X", Password: "p", SharedKey: "k"},
		"no mailbox":  {BaseURL: "https://x", Password: "p", SharedKey: "k"},
		"no password": {BaseURL: "https://x", Mailbox: "X", SharedKey: "k"},
		"no key":      {BaseURL: "https://x", Mailbox: "X", Password: "p"},
		"tiny chunks": {BaseURL: "https://x", Mailbox: "X", Password: "p", SharedKey: "k", ChunkSize: 10},
	} {
		if _, err := mesh.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	lower, err := mesh.New(mesh.Config{BaseURL: "https://x", Mailbox: "x26abc1", Password: "p", SharedKey: "k"})
	if err != nil || lower.Mailbox() != "X26ABC1" {
		t.Errorf("mailbox not upper-cased: %v %v", lower, err)
	}
}

func TestDownloadErrors(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 4 << 10 })
	receiver := e.client(t, receiverMB, receiverPW)
	ctx := t.Context()
	if _, err := receiver.Download(ctx, "NOSUCHMESSAGE"); !mesh.IsNotFound(err) || mesh.IsTransient(err) {
		t.Fatalf("unknown message: %v", err)
	}
	id, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(t, otherMB, otherPW).Download(ctx, id); statusOf(err) != http.StatusForbidden || !mesh.IsPermanent(err) {
		t.Fatalf("download by a stranger: %v", err)
	}
	// A message still uploading is gone (410) to the recipient.
	e.rec.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if routeOf(r) == "send_chunk" {
			w.WriteHeader(http.StatusBadRequest)
			return true
		}
		return false
	})
	_, err = sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Body: bytes.NewReader(payload(10<<10, true))})
	if statusOf(err) != http.StatusBadRequest {
		t.Fatalf("chunk refused: %v", err)
	}
	var uploading string
	for _, m := range e.sb.Messages(receiverMB) {
		if m.Status == meshsandbox.StatusUploading {
			uploading = m.ID
		}
	}
	if uploading == "" {
		t.Fatal("no uploading message")
	}
	if _, err := receiver.Download(ctx, uploading); statusOf(err) != http.StatusGone {
		t.Fatalf("download while uploading: %v, want 410", err)
	}
}

// A connection that breaks off in the middle of a chunk is resumed by fetching the chunk again.
func TestDownloadResumesABrokenChunk(t *testing.T) {
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 64 << 10 })
	receiver := e.client(t, receiverMB, receiverPW)
	data := payload(3*(64<<10)-1, true)
	id, err := sender.Send(t.Context(), mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	e.rec.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		hit := false
		if routeOf(r) == "download_chunk" {
			once.Do(func() {
				hit = true
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.Header().Set("Content-Length", fmt.Sprint(rec.Body.Len()))
				w.WriteHeader(rec.Code)
				w.Write(rec.Body.Bytes()[:1000])
				panic(http.ErrAbortHandler) // the connection drops after 1000 bytes
			})
		}
		return hit
	})
	d, err := receiver.Download(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.Body)
	d.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("resumed download differs: %d bytes vs %d", len(got), len(data))
	}
}

func TestSendLeavesNoSpoolFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	e := newEnv(t)
	sender := e.client(t, senderMB, senderPW, func(c *mesh.Config) { c.ChunkSize = 8 << 10 })
	ctx := t.Context()
	for _, compress := range []bool{true, false} {
		if _, err := sender.Send(ctx, mesh.OutboundMessage{To: receiverMB, WorkflowID: workflow, Compress: compress,
			Body: onlyReader{bytes.NewReader(payload(50<<10, true))}}); err != nil {
			t.Fatal(err)
		}
		if _, err := sender.Send(ctx, mesh.OutboundMessage{To: "X26NOPE", WorkflowID: workflow, Compress: compress,
			Body: onlyReader{bytes.NewReader(payload(50<<10, true))}}); !mesh.IsPermanent(err) {
			t.Fatalf("send to unknown mailbox: %v", err)
		}
	}
	// Only the private spool directory is made in TMPDIR, and it is empty.
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || !left[0].IsDir() {
		t.Fatalf("TMPDIR holds %v, want only the spool directory", left)
	}
	spooled, err := os.ReadDir(filepath.Join(dir, left[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if len(spooled) != 0 {
		t.Fatalf("spool files left behind: %v", spooled)
	}
}
