package meshsandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

func TestFaultCount(t *testing.T) {
	tests := []struct {
		name       string
		fault      meshsandbox.Fault
		requests   []string // method + path after /messageexchange/
		wantStatus []int
	}{
		{
			name:       "next two handshakes 503 then through",
			fault:      meshsandbox.Fault{Route: "handshake", Status: 503, Count: 2, RetryAfter: 1500 * time.Millisecond},
			requests:   []string{"GET " + mb1, "GET " + mb1, "GET " + mb1},
			wantStatus: []int{503, 503, 200},
		},
		{
			name:       "other routes untouched",
			fault:      meshsandbox.Fault{Route: "send", Status: 500, Count: 1},
			requests:   []string{"GET " + mb1, "GET " + mb1 + "/inbox", "GET " + mb1 + "/count"},
			wantStatus: []int{200, 200, 200},
		},
		{
			name:       "every route",
			fault:      meshsandbox.Fault{Status: 429, Count: 2, RetryAfter: 3 * time.Second},
			requests:   []string{"GET " + mb1 + "/inbox", "GET " + mb1 + "/count", "GET " + mb1},
			wantStatus: []int{429, 429, 200},
		},
		{
			name:       "method filter",
			fault:      meshsandbox.Fault{Route: "handshake", Method: "post", Status: 500},
			requests:   []string{"GET " + mb1, "POST " + mb1, "POST " + mb1},
			wantStatus: []int{200, 500, 500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, nil)
			s.InjectFault(tt.fault)
			for i, rq := range tt.requests {
				method, path, _ := strings.Cut(rq, " ")
				r := s.do(t, req{method: method, path: path})
				if r.status != tt.wantStatus[i] {
					t.Fatalf("request %d (%s): status %d, want %d", i, rq, r.status, tt.wantStatus[i])
				}
				if r.status != 200 && tt.fault.RetryAfter > 0 {
					want := map[time.Duration]string{1500 * time.Millisecond: "2", 3 * time.Second: "3"}[tt.fault.RetryAfter]
					if got := r.header.Get("Retry-After"); got != want {
						t.Fatalf("Retry-After %q, want %q", got, want)
					}
				}
			}
		})
	}
}

func TestFaultRequestsCounted(t *testing.T) {
	s := startSandbox(t, nil)
	s.InjectFault(meshsandbox.Fault{Route: "send", Status: 500, Count: 2})
	for range 3 {
		s.do(t, req{method: "POST", path: mb1 + "/outbox", body: []byte("x"), header: map[string]string{"mex-To": mb2, "mex-WorkflowID": "DPS"}})
	}
	if got := s.Requests("send"); got != 3 {
		t.Fatalf("Requests(send) = %d, want 3", got)
	}
	if got := len(s.Messages(mb1)); got != 1 {
		t.Fatalf("%d messages held, want 1 (two sends were faulted)", got)
	}
	if s.Requests("handshake") != 0 || s.Requests("") != 3 {
		t.Fatalf("counts %d %d", s.Requests("handshake"), s.Requests(""))
	}
}

func TestFaultFraction(t *testing.T) {
	pattern := func(seed uint64) string {
		s := startSandbox(t, func(c *meshsandbox.Config) { c.FaultSeed = seed })
		s.InjectFault(meshsandbox.Fault{Route: "count", Status: 503, Fraction: 0.3})
		var b strings.Builder
		for range 200 {
			if s.do(t, req{method: "GET", path: mb1 + "/count"}).status == 503 {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a, b := pattern(7), pattern(7)
	if a != b {
		t.Fatal("the same seed gave different fault patterns")
	}
	if n := strings.Count(a, "x"); n < 30 || n > 90 {
		t.Fatalf("%d of 200 requests faulted with fraction 0.3", n)
	}
	if pattern(8) == a {
		t.Fatal("different seeds gave the same pattern")
	}
}

func TestFaultLatency(t *testing.T) {
	s := startSandbox(t, nil)
	s.InjectFault(meshsandbox.Fault{Route: "inbox", Latency: time.Hour})
	// A request on a delayed route outlives a short deadline; others do not wait.
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/messageexchange/"+mb1+"/inbox", nil)
	if _, err := s.client.Do(hr); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delayed request: %v, want deadline exceeded", err)
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb1}), 200)

	s.ClearFaults()
	s.InjectFault(meshsandbox.Fault{Route: "inbox", Latency: time.Millisecond})
	wantStatus(t, s.do(t, req{method: "GET", path: mb1 + "/inbox"}), 200) // latency alone lets it through
}

// A client that gives up on a delayed send is noticed at once, body or not: the send is not stored,
// the handler returns, and closing the server does not wait out the delay. Bodies and
// oversized-body refusals still reach the handler as without the fault.
func TestFaultLatencyNoticesAClientThatGivesUp(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run(fmt.Sprintf("discard_bodies=%v", discard), func(t *testing.T) {
			srv := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, Mailboxes: defaultMailboxes(),
				DiscardBodies: discard, MaxChunkBytes: 1 << 10})
			hs := httptest.NewServer(srv.Handler())
			s := &sandbox{Server: srv, url: hs.URL, client: &http.Client{Transport: &http.Transport{}}, now: time.Now}
			send := func(ctx context.Context, body []byte) (response, error) {
				return s.sendCtx(t, ctx, sendReq(body))
			}

			srv.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Latency: time.Hour, Count: 1})
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			if _, err := send(ctx, []byte("a,b\n1,2\n")); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("delayed send: %v, want deadline exceeded", err)
			}
			if n := len(srv.Messages(mb1)); n != 0 {
				t.Errorf("sandbox holds %d messages after a send the client gave up on, want 0", n)
			}

			srv.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Latency: time.Millisecond})
			r, err := send(t.Context(), []byte("a,b\n1,2\n"))
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, r, http.StatusAccepted)
			id, _ := r.json(t)["message_id"].(string)
			if m, ok := srv.Message(id); !ok || m.Size != 8 {
				t.Errorf("delayed send stored %+v, want 8 bytes", m)
			}
			r, err = send(t.Context(), bytes.Repeat([]byte("x"), 2<<10))
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, r, http.StatusRequestEntityTooLarge)

			// Close waits for every handler; with the hour-long delay still running it would hang.
			s.client.CloseIdleConnections()
			closed := make(chan struct{})
			go func() { hs.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(30 * time.Second): // a safety net for a broken fix, not a timing assertion
				t.Fatal("httptest.Server.Close still waiting for the delayed handler")
			}
		})
	}
}

func sendReq(body []byte) req {
	return req{method: "POST", path: mb1 + "/outbox", body: body, header: map[string]string{
		"mex-To": mb2, "mex-WorkflowID": "DPS", "mex-FileName": "f.csv", "Content-Type": "text/csv"}}
}

func TestFaultDrop(t *testing.T) {
	s := startSandbox(t, nil)
	s.InjectFault(meshsandbox.Fault{Route: "download", Drop: true, Count: 1})
	id := s.sendMessage(t, mb1, mb2, []byte("x"), nil)
	// Go's transport silently retries an idempotent request once when a reused
	// connection drops, so the dropped request goes over a fresh one.
	s.client.CloseIdleConnections()
	if _, err := s.send(t, req{method: "GET", path: mb2 + "/inbox/" + id}); err == nil {
		t.Fatal("dropped request got a response")
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb2 + "/inbox/" + id}), 200)
	if got := s.Requests("download"); got != 2 {
		t.Fatalf("Requests(download) = %d", got)
	}
}

func TestAdminAPI(t *testing.T) {
	s := startSandbox(t, nil)
	id := s.sendMessage(t, mb1, mb2, []byte("hello"), map[string]string{"mex-LocalID": "exp-1.1"})
	s.sendMessage(t, mb3, mb3, []byte("other"), nil)

	admin := func(method, path string, body string) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		hr, _ := http.NewRequestWithContext(t.Context(), method, s.url+"/admin/"+path, rd)
		resp, err := s.client.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	status, body := admin("GET", "messages?mailbox=x26abc2", "")
	var msgs []meshsandbox.Message
	if err := json.Unmarshal(body, &msgs); status != 200 || err != nil || len(msgs) != 1 || msgs[0].ID != id || msgs[0].LocalID != "exp-1.1" {
		t.Fatalf("GET messages: %d %s", status, body)
	}
	var raw []map[string]any
	_ = json.Unmarshal(body, &raw)
	if raw[0]["local_id"] != "exp-1.1" || raw[0]["status"] != "accepted" {
		t.Fatalf("admin JSON %s", body)
	}
	if status, body = admin("GET", "messages/"+strings.ToLower(id), ""); status != 200 || !bytes.Contains(body, []byte(id)) {
		t.Fatalf("GET message: %d %s", status, body)
	}
	if status, _ = admin("GET", "messages/NOPE", ""); status != 404 {
		t.Fatalf("GET unknown message: %d", status)
	}
	if status, body = admin("POST", "messages/"+id+"/undeliverable", ""); status != 200 || !bytes.Contains(body, []byte(`"status":"undeliverable"`)) {
		t.Fatalf("POST undeliverable: %d %s", status, body)
	}
	tr := s.do(t, req{method: "GET", path: mb1 + "/outbox/tracking?messageID=" + id}).json(t)
	if tr["status"] != "undeliverable" || tr["status_code"] != "14" {
		t.Fatalf("tracking after undeliverable: %v", tr)
	}

	if status, body = admin("POST", "faults", `{"route":"handshake","status":500,"count":1,"retry_after":"3s","latency":"1ms"}`); status != 201 {
		t.Fatalf("POST faults: %d %s", status, body)
	}
	if status, _ = admin("POST", "faults", `{"route":"nowhere","status":500}`); status != 400 {
		t.Fatalf("POST bad fault: %d", status)
	}
	if status, _ = admin("POST", "faults", `{"route":"send","latency":"soon"}`); status != 400 {
		t.Fatalf("POST bad duration: %d", status)
	}
	r := s.do(t, req{method: "GET", path: mb1})
	if r.status != 500 || r.header.Get("Retry-After") != "3" {
		t.Fatalf("injected handshake: %d %v", r.status, r.header)
	}
	if status, _ = admin("POST", "faults", `{"status":503}`); status != 201 {
		t.Fatalf("POST fault for every route: %d", status)
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb1 + "/count"}), 503)
	if status, _ = admin("DELETE", "faults", ""); status != 204 {
		t.Fatalf("DELETE faults: %d", status)
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb1}), 200)

	status, body = admin("GET", "requests", "")
	var counts map[string]int
	if err := json.Unmarshal(body, &counts); status != 200 || err != nil || counts["handshake"] != 2 || counts["send"] != 2 || counts["track"] != 1 {
		t.Fatalf("GET requests: %d %s", status, body)
	}

	if status, _ = admin("POST", "mailboxes", `{"id":"x26new1","password":"pw2"}`); status != 201 {
		t.Fatalf("POST mailboxes: %d", status)
	}
	hr, _ := http.NewRequestWithContext(t.Context(), "GET", s.url+"/messageexchange/X26NEW1", nil)
	hr.Header.Set("Accept", v2)
	hr.Header.Set("mex-ClientVersion", "t")
	hr.Header.Set("mex-OSName", "t")
	hr.Header.Set("mex-OSVersion", "t")
	hr.Header.Set("Authorization", nhsmesh(sharedKey, "X26NEW1", "pw2", "n", "0", time.Now().UTC().Format("200601021504")))
	resp, err := s.client.Do(hr)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("handshake of added mailbox: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestFaultJSON(t *testing.T) {
	f := meshsandbox.Fault{Route: "send", Method: "POST", Status: 503, Count: 2, Fraction: 0.5, Latency: 250 * time.Millisecond, RetryAfter: 2 * time.Second, Drop: true}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"route":"send","method":"POST","status":503,"count":2,"fraction":0.5,"latency":"250ms","retry_after":"2s","drop":true}`
	if string(b) != want {
		t.Fatalf("json %s, want %s", b, want)
	}
	var back meshsandbox.Fault
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Fatalf("round trip %+v %v", back, err)
	}
}
