package meshsandbox_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// These tests speak raw HTTP written from the MESH spec (docs/shared/spec/mesh-api.md),
// never through pkg/mesh, so client and sandbox cannot be wrong in the same way.

const (
	sharedKey = "TestKey"
	password  = "password"
	mb1       = "X26ABC1"
	mb2       = "X26ABC2"
	mb3       = "X26ABC3"
	v2        = "application/vnd.mesh.v2+json"
)

// nhsmesh computes the Authorization header the way the spec describes it, without
// the code under test.
func nhsmesh(key, mailbox, pass, nonce, count, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(mailbox + ":" + nonce + ":" + count + ":" + pass + ":" + timestamp))
	return "NHSMESH " + mailbox + ":" + nonce + ":" + count + ":" + timestamp + ":" + hex.EncodeToString(mac.Sum(nil))
}

type sandbox struct {
	*meshsandbox.Server
	url    string
	client *http.Client
	now    func() time.Time
}

func defaultMailboxes() []meshsandbox.Mailbox {
	return []meshsandbox.Mailbox{
		{ID: mb1, Password: password, Name: "TESTMB1", ODSCode: "X26", OrgCode: "X26", Workflows: []string{"DPS"}},
		{ID: mb2, Password: password, Name: "TESTMB2", ODSCode: "X26", OrgCode: "X26", Workflows: []string{"DPS"}},
		{ID: mb3, Password: password, Name: "TESTMB3", ODSCode: "X27", OrgCode: "X27", OrgName: "Org 3"},
	}
}

// startSandbox runs a sandbox over plain HTTP with the default mailboxes; tweak
// adjusts the config first.
func startSandbox(t *testing.T, tweak func(*meshsandbox.Config)) *sandbox {
	t.Helper()
	cfg := meshsandbox.Config{SharedKey: sharedKey, Mailboxes: defaultMailboxes()}
	if tweak != nil {
		tweak(&cfg)
	}
	srv := meshsandbox.New(cfg)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// DisableCompression: these tests look at exactly what the server sends.
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)
	return &sandbox{Server: srv, url: hs.URL, client: client, now: now}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// detail returns the single v2 error detail of a response.
func (r response) detail(t *testing.T) map[string]any {
	t.Helper()
	d, ok := r.json(t)["detail"].([]any)
	if !ok || len(d) != 1 {
		t.Fatalf("body %s: want one detail entry", r.body)
	}
	return d[0].(map[string]any)
}

type req struct {
	method, path string // path after /messageexchange/
	mailbox      string // authenticates as; "" = the path's first segment
	header       map[string]string
	body         []byte
	noAuth       bool
	auth         string // a ready-made Authorization header
}

func (s *sandbox) do(t *testing.T, r req) response {
	t.Helper()
	resp, err := s.send(t, r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return resp
}

func (s *sandbox) send(t *testing.T, r req) (response, error) {
	t.Helper()
	return s.sendCtx(t, t.Context(), r)
}

func (s *sandbox) sendCtx(t *testing.T, ctx context.Context, r req) (response, error) {
	t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr, err := http.NewRequestWithContext(ctx, r.method, s.url+"/messageexchange/"+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Accept", v2)
	hr.Header.Set("mex-ClientVersion", "dps-pipeline-test==1.0")
	hr.Header.Set("mex-OSName", "Linux")
	hr.Header.Set("mex-OSVersion", "6.1")
	mailbox := r.mailbox
	if mailbox == "" {
		mailbox = strings.ToUpper(strings.SplitN(r.path, "/", 2)[0])
	}
	switch {
	case r.auth != "":
		hr.Header.Set("Authorization", r.auth)
	case !r.noAuth:
		hr.Header.Set("Authorization", nhsmesh(sharedKey, mailbox, password, uuid.NewString(), "0", s.now().UTC().Format("200601021504")))
	}
	for k, v := range r.header {
		if v == "<absent>" {
			hr.Header.Del(k)
			continue
		}
		hr.Header.Set(k, v)
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// sendMessage posts a one-chunk message and returns its id.
func (s *sandbox) sendMessage(t *testing.T, from, to string, body []byte, header map[string]string) string {
	t.Helper()
	h := map[string]string{"mex-To": to, "mex-WorkflowID": "DPS", "mex-FileName": "file.csv", "Content-Type": "text/csv"}
	for k, v := range header {
		h[k] = v
	}
	r := s.do(t, req{method: "POST", path: from + "/outbox", header: h, body: body})
	if r.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", r.status, r.body)
	}
	id, _ := r.json(t)["message_id"].(string)
	if id == "" {
		t.Fatalf("send: no message_id in %s", r.body)
	}
	return id
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}
