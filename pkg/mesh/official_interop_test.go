package mesh_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// The official NHS MESH sandbox (github.com/NHSDigital/mesh-sandbox) run with AUTH_MODE=full,
// STORE_MODE=memory and SHARED_KEY=TestKey ships these mailboxes. Its code is never vendored here:
// OfficialSandboxURLEnv points the test at one started by hand (see the package's report), and the test
// is skipped without it so CI does not depend on Python.
const (
	OfficialSandboxURLEnv = "MESH_OFFICIAL_SANDBOX_URL"

	officialSharedKey = "TestKey"
	officialSender    = "X26ABC1"
	officialRecipient = "X26ABC2"
	officialPassword  = "password"
	officialWorkflow  = "TEST_WORKFLOW"
)

// countingTransport counts the requests that reach the network, so tests can see retries.
type countingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *countingTransport) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func officialURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(OfficialSandboxURLEnv)
	if u == "" {
		t.Skipf("%s not set: the official MESH sandbox interop test needs a running NHSDigital/mesh-sandbox", OfficialSandboxURLEnv)
	}
	return u
}

// officialClient builds a client for one official-sandbox mailbox; the sandbox's certificate is
// self-signed, so verification is off when it is reached over https.
func officialClient(t *testing.T, base, mailbox, password string, chunkSize int64) (*mesh.Client, *countingTransport) {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // self-signed local sandbox only
	ct := &countingTransport{next: tr}
	c, err := mesh.New(mesh.Config{
		BaseURL:        base,
		Mailbox:        mailbox,
		Password:       password,
		SharedKey:      officialSharedKey,
		ChunkSize:      chunkSize,
		MaxRetries:     2,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     50 * time.Millisecond,
		HTTPClient:     &http.Client{Transport: ct, Timeout: time.Minute},
	})
	if err != nil {
		t.Fatalf("mesh.New(%s): %v", mailbox, err)
	}
	return c, ct
}

// drainInbox acknowledges whatever an earlier run left, so paging counts below are exact.
func drainInbox(ctx context.Context, t *testing.T, c *mesh.Client) {
	t.Helper()
	for range 100 {
		ids, err := c.Inbox(ctx)
		if err != nil {
			t.Fatalf("list inbox to drain it: %v", err)
		}
		if len(ids) == 0 {
			return
		}
		for _, id := range ids {
			if err := c.Acknowledge(ctx, id); err != nil {
				t.Fatalf("acknowledge %s while draining: %v", id, err)
			}
		}
	}
	t.Fatal("inbox did not drain")
}

type sentMessage struct {
	name     string
	id       string
	localID  string
	fileName string
	subject  string
	body     []byte
	compress bool
	chunks   int // expected number of chunks MESH holds
}

func TestOfficialSandboxInterop(t *testing.T) {
	base := officialURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// 64 KiB chunks: the 150 KiB plain payload is 3 chunks; the 1 MiB random (incompressible) payload is
	// 17 chunks plain and at least as many gzip members compressed.
	const chunkSize = 64 << 10
	sender, _ := officialClient(t, base, officialSender, officialPassword, chunkSize)
	recipient, _ := officialClient(t, base, officialRecipient, officialPassword, chunkSize)

	t.Run("handshake", func(t *testing.T) {
		for _, c := range []*mesh.Client{sender, recipient} {
			if err := c.Handshake(ctx); err != nil {
				t.Fatalf("handshake %s: %v", c.Mailbox(), err)
			}
		}
	})

	drainInbox(ctx, t, recipient)

	run := uuid.NewString()[:8]
	cases := []struct {
		name     string
		body     []byte
		compress bool
		reader   bool // hide io.ReaderAt so the body is spooled
		chunks   int
	}{
		{"1 byte plain", []byte{'x'}, false, false, 1},
		{"1 byte gzip", []byte{'y'}, true, false, 1},
		{"1 MiB plain", payload(1<<20, true), false, false, 16},
		{"1 MiB csv gzip", payload(1<<20, false), true, true, 0},
		{"3 chunks plain", payload(150<<10, true), false, true, 3},
		{"3+ chunks gzip", payload(150<<10, true), true, false, 0},
	}
	var sent []sentMessage
	for i, tc := range cases {
		m := sentMessage{
			name:     tc.name,
			localID:  fmt.Sprintf("interop-%s.%d", run, i),
			fileName: fmt.Sprintf("Vaccinations-HPV-%s-%d.csv", run, i),
			subject:  "interop " + tc.name,
			body:     tc.body,
			compress: tc.compress,
			chunks:   tc.chunks,
		}
		var body io.Reader = bytes.NewReader(tc.body)
		if tc.reader {
			body = onlyReader{r: body}
		}
		id, err := sender.Send(ctx, mesh.OutboundMessage{
			To: officialRecipient, WorkflowID: officialWorkflow, FileName: m.fileName, LocalID: m.localID,
			Subject: m.subject, ContentType: "text/csv", Compress: tc.compress, Body: body,
		})
		if err != nil {
			t.Fatalf("send %s: %v", tc.name, err)
		}
		m.id = id
		sent = append(sent, m)
	}
	// Filler so the inbox needs three pages of 10.
	for i := len(sent); i < 25; i++ {
		m := sentMessage{name: fmt.Sprintf("filler %d", i), localID: fmt.Sprintf("interop-%s.%d", run, i),
			fileName: fmt.Sprintf("filler-%d.csv", i), body: payload(100+i, false), chunks: 1}
		id, err := sender.Send(ctx, mesh.OutboundMessage{
			To: officialRecipient, WorkflowID: officialWorkflow, FileName: m.fileName, LocalID: m.localID,
			ContentType: "text/csv", Body: bytes.NewReader(m.body),
		})
		if err != nil {
			t.Fatalf("send filler %d: %v", i, err)
		}
		m.id = id
		sent = append(sent, m)
	}

	t.Run("inbox paging", func(t *testing.T) {
		var ids []string
		next := ""
		pages := 0
		for {
			page, err := recipient.InboxPage(ctx, 10, next)
			if err != nil {
				t.Fatalf("inbox page %d: %v", pages+1, err)
			}
			pages++
			if len(page.Messages) > 10 {
				t.Fatalf("page %d has %d messages, max_results was 10", pages, len(page.Messages))
			}
			if page.ApproxInboxCount != len(sent) {
				t.Errorf("approx_inbox_count = %d, want %d", page.ApproxInboxCount, len(sent))
			}
			ids = append(ids, page.Messages...)
			if page.Next == "" {
				break
			}
			if !strings.Contains(page.Next, "continue_from=") {
				t.Errorf("links.next %q carries no continue_from", page.Next)
			}
			next = page.Next
		}
		if pages != 3 {
			t.Errorf("%d pages for %d messages at 10 a page, want 3", pages, len(sent))
		}
		want := make([]string, len(sent))
		for i, m := range sent {
			want[i] = m.id
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("inbox = %v\nwant (oldest first) %v", ids, want)
		}
		all, err := recipient.Inbox(ctx)
		if err != nil || !slices.Equal(all, want) {
			t.Fatalf("Inbox() = %v, %v; want %v", all, err, want)
		}
	})

	t.Run("download is byte-identical", func(t *testing.T) {
		for _, m := range sent[:len(cases)] {
			d, err := recipient.Download(ctx, m.id)
			if err != nil {
				t.Fatalf("download %s: %v", m.name, err)
			}
			got, err := io.ReadAll(d.Body)
			d.Body.Close()
			if err != nil {
				t.Fatalf("read %s: %v", m.name, err)
			}
			if !bytes.Equal(got, m.body) {
				t.Fatalf("%s: downloaded %d bytes, sent %d; not identical", m.name, len(got), len(m.body))
			}
			if d.MessageID != m.id || d.From != officialSender || d.To != officialRecipient ||
				d.WorkflowID != officialWorkflow || d.FileName != m.fileName || d.LocalID != m.localID {
				t.Errorf("%s: download metadata %+v", m.name, *d)
			}
			t.Logf("%s: %d bytes in %d chunk(s), message %s", m.name, len(got), d.TotalChunks, m.id)
			if m.chunks > 0 && d.TotalChunks != m.chunks {
				t.Errorf("%s: %d chunks, want %d", m.name, d.TotalChunks, m.chunks)
			}
			if m.compress && len(m.body) > 100<<10 && d.TotalChunks < 3 {
				t.Errorf("%s: compressed into %d chunks, want 3 or more", m.name, d.TotalChunks)
			}
		}
	})

	t.Run("tracking and acknowledgement", func(t *testing.T) {
		for _, m := range sent[:len(cases)] {
			tr, err := sender.Track(ctx, m.id)
			if err != nil {
				t.Fatalf("track %s: %v", m.name, err)
			}
			if tr.Status != mesh.StatusAccepted || tr.MessageID != m.id || tr.LocalID != m.localID ||
				tr.WorkflowID != officialWorkflow || tr.FileName != m.fileName || tr.Recipient != officialRecipient {
				t.Errorf("%s: tracking before ack %+v (raw %s)", m.name, *tr, tr.Raw)
			}
			if tr.StatusSuccess == nil || !*tr.StatusSuccess {
				t.Errorf("%s: status_success %v, want true", m.name, tr.StatusSuccess)
			}
			lt, err := sender.TrackByLocalID(ctx, m.localID)
			if err != nil {
				t.Fatalf("track by local id %s: %v", m.localID, err)
			}
			if lt.MessageID != m.id || lt.LocalID != m.localID || lt.Status != mesh.StatusAccepted {
				t.Errorf("%s: tracking by local id %+v (raw %s)", m.name, *lt, lt.Raw)
			}
			if _, err := recipient.Track(ctx, m.id); !mesh.IsNotFound(err) {
				t.Errorf("%s: recipient tracking a message it did not send: %v, want 404", m.name, err)
			}

			for i := range 2 {
				if err := recipient.Acknowledge(ctx, m.id); err != nil {
					t.Fatalf("acknowledge %s (#%d): %v", m.name, i+1, err)
				}
			}
			tr, err = sender.Track(ctx, m.id)
			if err != nil {
				t.Fatalf("track %s after ack: %v", m.name, err)
			}
			if tr.Status != mesh.StatusAcknowledged {
				t.Errorf("%s: status after ack %q, want %q (raw %s)", m.name, tr.Status, mesh.StatusAcknowledged, tr.Raw)
			}
			lt, err = sender.TrackByLocalID(ctx, m.localID)
			if err != nil || lt.Status != mesh.StatusAcknowledged {
				t.Errorf("%s: tracking by local id after ack %+v, %v", m.name, lt, err)
			}
			// An acknowledged message can still be downloaded.
			d, err := recipient.Download(ctx, m.id)
			if err != nil {
				t.Fatalf("download %s after ack: %v", m.name, err)
			}
			d.Body.Close()
		}
		ids, err := recipient.Inbox(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range sent[:len(cases)] {
			if slices.Contains(ids, m.id) {
				t.Errorf("%s still in the inbox after acknowledgement", m.name)
			}
		}
		if len(ids) != len(sent)-len(cases) {
			t.Errorf("inbox has %d messages after acking %d of %d", len(ids), len(cases), len(sent))
		}
	})

	t.Run("tracking unknown", func(t *testing.T) {
		if _, err := sender.TrackByLocalID(ctx, "interop-unknown-"+run); !mesh.IsNotFound(err) {
			t.Errorf("track by unknown local id: %v, want 404", err)
		}
		if _, err := sender.Track(ctx, strings.ToUpper(strings.ReplaceAll(uuid.NewString(), "-", ""))); !mesh.IsNotFound(err) {
			t.Errorf("track unknown message id: %v, want 404", err)
		}
		if _, err := recipient.Download(ctx, "00000000000000000000000000000000"); !mesh.IsNotFound(err) {
			t.Errorf("download unknown message: %v, want 404", err)
		}
	})

	t.Run("unknown recipient is permanent with code 12", func(t *testing.T) {
		c, ct := officialClient(t, base, officialSender, officialPassword, chunkSize)
		_, err := c.Send(ctx, mesh.OutboundMessage{To: "X26ZZZ9", WorkflowID: officialWorkflow,
			FileName: "x.csv", LocalID: "interop-unknown-to-" + run, Body: strings.NewReader("a,b\n")})
		var e *mesh.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusExpectationFailed || e.Code != "12" || !mesh.IsPermanent(err) {
			t.Fatalf("send to unknown mailbox: %v (%+v), want permanent 417 code 12", err, e)
		}
		if !strings.Contains(err.Error(), "12") || !strings.Contains(err.Error(), "Unregistered to address") {
			t.Errorf("error text %q does not show MESH's code and description", err)
		}
		if n := ct.count(); n != 1 {
			t.Errorf("%d requests for a permanent failure, want 1", n)
		}
	})

	t.Run("missing workflow", func(t *testing.T) {
		_, err := sender.Send(ctx, mesh.OutboundMessage{To: officialRecipient, Body: strings.NewReader("a")})
		if !errors.Is(err, mesh.ErrInvalidArgument) {
			t.Fatalf("send without workflow: %v, want ErrInvalidArgument before contacting MESH", err)
		}
		// And the server agrees: a raw send with no mex-WorkflowID is refused with 400.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/messageexchange/"+officialSender+"/outbox", strings.NewReader("a"))
		req.Header.Set("Authorization", mesh.AuthorizationToken(officialSender, officialPassword, officialSharedKey, uuid.NewString(), 0, time.Now()))
		req.Header.Set("Accept", "application/vnd.mesh.v2+json")
		req.Header.Set("mex-To", officialRecipient)
		req.Header.Set("Content-Type", "text/csv")
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // local sandbox
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("raw send without mex-WorkflowID: %d, want 400", resp.StatusCode)
		}
	})

	t.Run("wrong password is 403 permanent after one retry", func(t *testing.T) {
		c, ct := officialClient(t, base, officialSender, "not-the-password", chunkSize)
		err := c.Handshake(ctx)
		var e *mesh.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusForbidden || !mesh.IsPermanent(err) || mesh.IsTransient(err) {
			t.Fatalf("handshake with a wrong password: %v, want permanent 403", err)
		}
		if n := ct.count(); n != 2 {
			t.Errorf("%d requests, want 2 (one fresh-token retry)", n)
		}
		ct2 := ct.count()
		_, err = c.Send(ctx, mesh.OutboundMessage{To: officialRecipient, WorkflowID: officialWorkflow, Body: strings.NewReader("a")})
		if !errors.As(err, &e) || e.StatusCode != http.StatusForbidden || !mesh.IsPermanent(err) {
			t.Fatalf("send with a wrong password: %v, want permanent 403", err)
		}
		if n := ct.count() - ct2; n != 2 {
			t.Errorf("send: %d requests, want 2", n)
		}
	})

	t.Run("an independent client can read our chunked gzip", func(t *testing.T) {
		// A client written from the spec may download without Accept-Encoding: gzip, chunk by chunk; the
		// official sandbox then gunzips each chunk on its own, which only works because each of our
		// chunks is a whole gzip member.
		body := payload(200<<10, true)
		id, err := sender.Send(ctx, mesh.OutboundMessage{To: officialRecipient, WorkflowID: officialWorkflow,
			FileName: "raw.csv", Compress: true, Body: bytes.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for n := 1; ; n++ {
			path := "/inbox/" + id
			if n > 1 {
				path += fmt.Sprintf("/%d", n)
			}
			resp, b := officialRaw(ctx, t, base, officialRecipient, http.MethodGet, path, map[string]string{"Accept-Encoding": "identity"}, nil)
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("raw download chunk %d: %d %s", n, resp.StatusCode, b)
			}
			got = append(got, b...)
			if resp.StatusCode == http.StatusOK {
				if n < 3 {
					t.Errorf("only %d chunks", n)
				}
				break
			}
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("raw per-chunk download differs from what was sent (%d vs %d bytes)", len(got), len(body))
		}
		if err := recipient.Acknowledge(ctx, id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("we can read one gzip stream split across chunks", func(t *testing.T) {
		// Another sender may gzip the whole file once and cut the stream into chunks.
		body := payload(100<<10, false)
		var zb bytes.Buffer
		zw := gzip.NewWriter(&zb)
		zw.Write(body)
		zw.Close()
		z := zb.Bytes()
		parts := [][]byte{z[:len(z)/3], z[len(z)/3 : 2*len(z)/3], z[2*len(z)/3:]}
		hdr := map[string]string{"mex-To": officialRecipient, "mex-WorkflowID": officialWorkflow, "mex-FileName": "split.csv",
			"mex-Chunk-Range": "1:3", "Content-Encoding": "gzip", "mex-Content-Compressed": "Y", "Content-Type": "text/csv"}
		resp, b := officialRaw(ctx, t, base, officialSender, http.MethodPost, "/outbox", hdr, parts[0])
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("raw send: %d %s", resp.StatusCode, b)
		}
		var out struct {
			MessageID string `json:"message_id"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.MessageID == "" {
			t.Fatalf("raw send answer %s: %v", b, err)
		}
		id := out.MessageID

		// While uploading: tracked as uploading, not listed, download refused with 410.
		tr, err := sender.Track(ctx, id)
		if err != nil || tr.Status != mesh.StatusUploading {
			t.Errorf("tracking mid-upload: %+v, %v; want uploading", tr, err)
		}
		if ids, err := recipient.Inbox(ctx); err != nil || slices.Contains(ids, id) {
			t.Errorf("inbox mid-upload: %v, %v; must not list an uploading message", ids, err)
		}
		_, err = recipient.Download(ctx, id)
		var e *mesh.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusGone || !mesh.IsPermanent(err) {
			t.Errorf("download mid-upload: %v, want permanent 410", err)
		}

		for n := 2; n <= 3; n++ {
			resp, b := officialRaw(ctx, t, base, officialSender, http.MethodPost, fmt.Sprintf("/outbox/%s/%d", id, n),
				map[string]string{"mex-Chunk-Range": fmt.Sprintf("%d:3", n), "Content-Encoding": "gzip"}, parts[n-1])
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("raw chunk %d: %d %s", n, resp.StatusCode, b)
			}
		}
		d, err := recipient.Download(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(d.Body)
		d.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("download of a split gzip stream: %d bytes, %v; want %d identical bytes", len(got), err, len(body))
		}
		if err := recipient.Acknowledge(ctx, id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("local id shared by two messages", func(t *testing.T) {
		local := "interop-dup-" + run
		for range 2 {
			if _, err := sender.Send(ctx, mesh.OutboundMessage{To: officialRecipient, WorkflowID: officialWorkflow,
				LocalID: local, Body: strings.NewReader("dup")}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sender.TrackByLocalID(ctx, local); !errors.Is(err, mesh.ErrSeveralMessages) {
			t.Errorf("track by a shared local id: %v, want ErrSeveralMessages", err)
		}
	})

	t.Run("empty body is refused permanently", func(t *testing.T) {
		c, ct := officialClient(t, base, officialSender, officialPassword, chunkSize)
		_, err := c.Send(ctx, mesh.OutboundMessage{To: officialRecipient, WorkflowID: officialWorkflow, Body: strings.NewReader("")})
		var e *mesh.Error
		if !errors.As(err, &e) || e.StatusCode != http.StatusExpectationFailed || e.Code != "02" || !mesh.IsPermanent(err) {
			t.Errorf("send empty body: %v, want permanent 417 code 02", err)
		}
		if n := ct.count(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})

	t.Run("another mailbox cannot download or acknowledge", func(t *testing.T) {
		id, err := sender.Send(ctx, mesh.OutboundMessage{To: officialRecipient, WorkflowID: officialWorkflow, Body: strings.NewReader("private")})
		if err != nil {
			t.Fatal(err)
		}
		other, _ := officialClient(t, base, "X26ABC3", officialPassword, chunkSize)
		_, err = other.Download(ctx, id)
		if statusOf(err) != http.StatusForbidden || !mesh.IsPermanent(err) {
			t.Errorf("download by another mailbox: %v, want permanent 403", err)
		}
		if err := other.Acknowledge(ctx, id); statusOf(err) != http.StatusForbidden {
			t.Errorf("acknowledge by another mailbox: %v, want 403", err)
		}
	})

	// Leave the sandbox as we found it.
	drainInbox(ctx, t, recipient)
}

// officialRaw makes one authenticated request the way a client written from the spec would, for the
// checks our client cannot express (a body split differently, no Accept-Encoding).
func officialRaw(ctx context.Context, t *testing.T, base, mailbox, method, path string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+"/messageexchange/"+mailbox+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", mesh.AuthorizationToken(mailbox, officialPassword, officialSharedKey, uuid.NewString(), 0, time.Now()))
	req.Header.Set("Accept", "application/vnd.mesh.v2+json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableCompression: true} //nolint:gosec // local sandbox
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}
