package mesh_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// Mailboxes every test uses. Passwords and the shared key are test values, never real ones.
const (
	sharedKey  = "TestSharedKey"
	senderMB   = "X26ABC1"
	senderPW   = "sender-password"
	receiverMB = "X26ABC2"
	receiverPW = "receiver-password"
	otherMB    = "X26ABC3"
	otherPW    = "other-password"
	workflow   = "DPS_TEST_WORKFLOW"
)

func sandboxConfig() meshsandbox.Config {
	return meshsandbox.Config{
		SharedKey: sharedKey,
		Mailboxes: []meshsandbox.Mailbox{
			{ID: senderMB, Password: senderPW, Workflows: []string{workflow}},
			{ID: receiverMB, Password: receiverPW, Workflows: []string{workflow}},
			{ID: otherMB, Password: otherPW, Workflows: []string{workflow}},
		},
	}
}

// seen is one request as it reached the sandbox.
type seen struct {
	Route   string
	Method  string
	Path    string
	Header  http.Header
	Length  int64
	Arrived time.Time
}

// recorder wraps the sandbox handler and keeps every request it sees, so tests can count attempts
// per route and inspect headers as the server received them.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
	// hook, when set, may answer a request itself (returning true) instead of the sandbox.
	hook func(w http.ResponseWriter, r *http.Request, next http.Handler) bool
}

func (rec *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{Route: routeOf(r), Method: r.Method, Path: r.URL.Path,
			Header: r.Header.Clone(), Length: r.ContentLength, Arrived: time.Now()})
		hook := rec.hook
		rec.mu.Unlock()
		if hook != nil && hook(w, r, next) {
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (rec *recorder) setHook(h func(w http.ResponseWriter, r *http.Request, next http.Handler) bool) {
	rec.mu.Lock()
	rec.hook = h
	rec.mu.Unlock()
}

func (rec *recorder) all() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

func (rec *recorder) count(route string) int {
	n := 0
	for _, s := range rec.all() {
		if s.Route == route {
			n++
		}
	}
	return n
}

func (rec *recorder) reset() {
	rec.mu.Lock()
	rec.reqs = nil
	rec.mu.Unlock()
}

// routeOf names a request with the sandbox's fault route names.
func routeOf(r *http.Request) string {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "messageexchange" {
		return "other"
	}
	p := parts[2:]
	switch {
	case len(p) == 0:
		return "handshake"
	case p[0] == "outbox" && len(p) == 1:
		return "send"
	case p[0] == "outbox" && len(p) == 2 && p[1] == "tracking":
		return "track"
	case p[0] == "outbox" && len(p) == 3 && p[1] == "tracking":
		return "track_local"
	case p[0] == "outbox" && len(p) == 3:
		return "send_chunk"
	case p[0] == "inbox" && len(p) == 1:
		return "inbox"
	case p[0] == "inbox" && len(p) == 2:
		return "download"
	case p[0] == "inbox" && len(p) == 3:
		return "download_chunk"
	case p[0] == "inbox" && len(p) == 4 && p[3] == "acknowledged":
		return "ack"
	}
	return "other"
}

type env struct {
	sb  *meshsandbox.Server
	srv *httptest.Server
	rec *recorder
	log *lockedWriter
}

func newEnv(t testing.TB, mutate ...func(*meshsandbox.Config)) *env {
	t.Helper()
	cfg := sandboxConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	sb := meshsandbox.New(cfg)
	rec := &recorder{}
	srv := httptest.NewServer(rec.wrap(sb.Handler()))
	t.Cleanup(srv.Close)
	return &env{sb: sb, srv: srv, rec: rec, log: &lockedWriter{w: &bytes.Buffer{}}}
}

// client builds a client for mailbox with fast backoff; logs go to e.log so tests can check that no
// secret is ever written.
func (e *env) client(t testing.TB, mailbox, password string, mutate ...func(*mesh.Config)) *mesh.Client {
	t.Helper()
	cfg := mesh.Config{
		BaseURL:        e.srv.URL,
		Mailbox:        mailbox,
		Password:       password,
		SharedKey:      sharedKey,
		HTTPClient:     e.srv.Client(),
		InitialBackoff: time.Millisecond,
		MaxBackoff:     5 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := mesh.New(cfg)
	if err != nil {
		t.Fatalf("mesh.New: %v", err)
	}
	return c
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// assertNoSecrets fails if a password, the shared key or a token reached the log.
func (e *env) assertNoSecrets(t testing.TB) {
	t.Helper()
	logs := e.log.String()
	for _, s := range []string{senderPW, receiverPW, otherPW, sharedKey, "NHSMESH"} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains secret %q", s)
		}
	}
}
