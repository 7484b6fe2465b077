package meshsandbox_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// The spec's test vector, computed once outside this code with:
//
//	printf '%s' 'X26ABC1:00000000-0000-0000-0000-000000000000:0:password:202401020304' | openssl dgst -sha256 -hmac TestKey
const vectorHMAC = "567d010b356536958a5c843b561f9c7d2648317d8653d29383b341444e92eb40"

func TestTokenVector(t *testing.T) {
	const nonce = "00000000-0000-0000-0000-000000000000"
	want := "NHSMESH X26ABC1:" + nonce + ":0:202401020304:" + vectorHMAC
	if got := nhsmesh("TestKey", "X26ABC1", "password", nonce, "0", "202401020304"); got != want {
		t.Fatalf("test helper token = %s, want %s", got, want)
	}
	at := time.Date(2024, 1, 2, 3, 4, 59, 0, time.UTC)
	if got := meshsandbox.Token("TestKey", "X26ABC1", "password", nonce, "0", at); got != want {
		t.Fatalf("Token = %s, want %s", got, want)
	}
}

func TestAuthFailures(t *testing.T) {
	fixed := time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC)
	at := func(d time.Duration) string { return fixed.Add(d).Format("200601021504") }
	const nonce = "6f2c86d8-7f5a-4c3e-9a53-3d1e0d7f1a11"
	tests := []struct {
		name     string
		path     string
		auth     string
		noAuth   bool
		tweak    func(*meshsandbox.Config)
		wantMsg  string
		wantCode string
	}{
		{name: "no header", path: mb1, noAuth: true, wantMsg: "Error reading from Authorization header"},
		{name: "four parts", path: mb1, auth: "NHSMESH X26ABC1:" + nonce + ":0:" + at(0), wantMsg: "Error reading from Authorization header"},
		{name: "non-digit nonce count", path: mb1, auth: nhsmesh(sharedKey, mb1, password, nonce, "x", at(0)), wantMsg: "Error reading from Authorization header"},
		{name: "token for another mailbox", path: mb1, auth: nhsmesh(sharedKey, mb2, password, nonce, "0", at(0)), wantMsg: "Mailbox id does not match token"},
		{name: "unknown mailbox", path: "X99XYZ9", auth: nhsmesh(sharedKey, "X99XYZ9", password, nonce, "0", at(0)), wantMsg: "No mailbox matched", wantCode: "EPL-151"},
		{name: "wrong password", path: mb1, auth: nhsmesh(sharedKey, mb1, "nope", nonce, "0", at(0)), wantMsg: "Invalid Authentication Token"},
		{name: "wrong shared key", path: mb1, auth: nhsmesh("OtherKey", mb1, password, nonce, "0", at(0)), wantMsg: "Invalid Authentication Token"},
		{name: "stale timestamp", path: mb1, auth: nhsmesh(sharedKey, mb1, password, nonce, "0", at(-3*time.Hour)), wantMsg: "Invalid Authentication Token"},
		{name: "future timestamp", path: mb1, auth: nhsmesh(sharedKey, mb1, password, nonce, "0", at(3*time.Hour)), wantMsg: "Invalid Authentication Token"},
		{name: "timestamp not a time", path: mb1, auth: nhsmesh(sharedKey, mb1, password, nonce, "0", "20241302xxxx"), wantMsg: "Invalid Authentication Token"},
		{name: "narrow window", path: mb1, auth: nhsmesh(sharedKey, mb1, password, nonce, "0", at(-10*time.Minute)),
			tweak: func(c *meshsandbox.Config) { c.TimestampWindow = 5 * time.Minute }, wantMsg: "Invalid Authentication Token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, func(c *meshsandbox.Config) {
				c.Now = func() time.Time { return fixed }
				if tt.tweak != nil {
					tt.tweak(c)
				}
			})
			r := s.do(t, req{method: "GET", path: tt.path, auth: tt.auth, noAuth: tt.noAuth})
			wantStatus(t, r, http.StatusForbidden)
			d := r.detail(t)
			if d["msg"] != tt.wantMsg || d["code"] != tt.wantCode {
				t.Fatalf("detail %v, want msg %q code %q", d, tt.wantMsg, tt.wantCode)
			}
			if ct := r.header.Get("Content-Type"); ct != v2 {
				t.Errorf("Content-Type %q, want %q", ct, v2)
			}
		})
	}
}

func TestAuthAccepted(t *testing.T) {
	fixed := time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC)
	at := func(d time.Duration) string { return fixed.Add(d).Format("200601021504") }
	tests := []struct {
		name  string
		auth  string
		tweak func(*meshsandbox.Config)
	}{
		{name: "fresh", auth: nhsmesh(sharedKey, mb1, password, "n1", "0", at(0))},
		{name: "upper-case hmac", auth: upperHMAC(nhsmesh(sharedKey, mb1, password, "n1", "0", at(0)))},
		{name: "no scheme", auth: strings.TrimPrefix(nhsmesh(sharedKey, mb1, password, "n1", "0", at(0)), "NHSMESH ")},
		{name: "edge of window", auth: nhsmesh(sharedKey, mb1, password, "n1", "0", at(-2*time.Hour))},
		{name: "stale with check off", auth: nhsmesh(sharedKey, mb1, password, "n1", "0", at(-48*time.Hour)),
			tweak: func(c *meshsandbox.Config) { c.DisableTimestampCheck = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, func(c *meshsandbox.Config) {
				c.Now = func() time.Time { return fixed }
				if tt.tweak != nil {
					tt.tweak(c)
				}
			})
			r := s.do(t, req{method: "GET", path: mb1, auth: tt.auth})
			wantStatus(t, r, http.StatusOK)
		})
	}
}

func TestNonceReplay(t *testing.T) {
	tests := []struct {
		name       string
		disable    bool
		second     string // Authorization of the second request, given the first
		wantSecond int
	}{
		{name: "same token twice", second: "same", wantSecond: http.StatusForbidden},
		{name: "same nonce, next count", second: "next", wantSecond: http.StatusOK},
		{name: "check off", disable: true, second: "same", wantSecond: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, func(c *meshsandbox.Config) { c.DisableNonceCheck = tt.disable })
			ts := s.now().UTC().Format("200601021504")
			first := nhsmesh(sharedKey, mb1, password, "replayed-nonce", "0", ts)
			wantStatus(t, s.do(t, req{method: "GET", path: mb1, auth: first}), http.StatusOK)
			second := first
			if tt.second == "next" {
				second = nhsmesh(sharedKey, mb1, password, "replayed-nonce", "1", ts)
			}
			r := s.do(t, req{method: "GET", path: mb1, auth: second})
			wantStatus(t, r, tt.wantSecond)
			if tt.wantSecond == http.StatusForbidden {
				if msg := r.detail(t)["msg"]; msg != "Error Duplicated Authentication Token" {
					t.Fatalf("msg %v", msg)
				}
			}
		})
	}
}

func TestBadTokenDoesNotBurnNonce(t *testing.T) {
	s := startSandbox(t, nil)
	ts := s.now().UTC().Format("200601021504")
	wantStatus(t, s.do(t, req{method: "GET", path: mb1, auth: nhsmesh(sharedKey, mb1, "wrong", "n", "0", ts)}), http.StatusForbidden)
	wantStatus(t, s.do(t, req{method: "GET", path: mb1, auth: nhsmesh(sharedKey, mb1, password, "n", "0", ts)}), http.StatusOK)
}

func TestHandshake(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		want     int
		wantBody string
		wantLoc  []string // headers named in a 400 validation body
	}{
		{name: "v2 get", method: "GET", path: mb1, want: 200, wantBody: ""},
		{name: "v2 post", method: "POST", path: mb1, want: 200, wantBody: ""},
		{name: "lower-case mailbox in path", method: "GET", path: "x26abc1", want: 200},
		{name: "v1", method: "GET", path: mb1, header: map[string]string{"Accept": "application/json"}, want: 200, wantBody: `{"mailboxId":"X26ABC1"}`},
		{name: "no Accept is v1", method: "GET", path: mb1, header: map[string]string{"Accept": "<absent>"}, want: 200, wantBody: `{"mailboxId":"X26ABC1"}`},
		{name: "bad Accept", method: "GET", path: mb1, header: map[string]string{"Accept": "application/vnd.mesh.vX+json"}, want: 400,
			wantBody: `{"errorEvent":"","errorCode":"","errorDescription":"Accept header api format incorrect"}`},
		{name: "missing client headers", method: "GET", path: mb1,
			header: map[string]string{"mex-ClientVersion": "<absent>", "mex-OSName": "<absent>", "mex-OSVersion": "<absent>"},
			want:   400, wantLoc: []string{"mex-clientversion", "mex-osname", "mex-osversion"}},
		{name: "missing OS version", method: "GET", path: mb1, header: map[string]string{"mex-OSVersion": "<absent>"}, want: 400, wantLoc: []string{"mex-osversion"}},
		{name: "wrong method", method: "DELETE", path: mb1, want: 405, wantBody: `{"detail":"Method Not Allowed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, nil)
			r := s.do(t, req{method: tt.method, path: tt.path, mailbox: mb1, header: tt.header})
			wantStatus(t, r, tt.want)
			if tt.wantLoc == nil && tt.want != 400 || tt.wantBody != "" {
				if string(r.body) != tt.wantBody {
					t.Fatalf("body %q, want %q", r.body, tt.wantBody)
				}
			}
			if tt.wantLoc != nil {
				var got []string
				for _, d := range r.json(t)["detail"].([]any) {
					e := d.(map[string]any)
					loc := e["loc"].([]any)
					if loc[0] != "header" || e["type"] != "missing" || e["msg"] != "Field required" {
						t.Fatalf("validation entry %v", e)
					}
					got = append(got, loc[1].(string))
				}
				if strings.Join(got, ",") != strings.Join(tt.wantLoc, ",") {
					t.Fatalf("missing headers %v, want %v", got, tt.wantLoc)
				}
			}
		})
	}
}

func upperHMAC(token string) string {
	i := strings.LastIndex(token, ":")
	return token[:i] + strings.ToUpper(token[i:])
}
