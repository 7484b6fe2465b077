package meshcli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshcli"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

const (
	sharedKey  = "CLISharedKey"
	senderMB   = "X26ABC1"
	senderPW   = "sender-pw"
	receiverMB = "X26ABC2"
	receiverPW = "receiver-pw"
	workflow   = "DPS_CLI_TEST"
)

type fixture struct {
	sb       *meshsandbox.Server
	url      string
	sender   *mesh.Client
	receiver *mesh.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	sb := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, Mailboxes: []meshsandbox.Mailbox{
		{ID: senderMB, Password: senderPW, Workflows: []string{workflow}},
		{ID: receiverMB, Password: receiverPW, Workflows: []string{workflow}},
	}})
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(srv.Close)
	f := &fixture{sb: sb, url: srv.URL}
	f.sender = f.client(t, senderMB, senderPW)
	f.receiver = f.client(t, receiverMB, receiverPW)
	return f
}

func (f *fixture) client(t *testing.T, mailbox, password string) *mesh.Client {
	t.Helper()
	c, err := mesh.New(mesh.Config{BaseURL: f.url, Mailbox: mailbox, Password: password, SharedKey: sharedKey,
		InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, cmd meshcli.Command, c *mesh.Client, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cmd(t.Context(), c, args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func (r result) expect(t *testing.T, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOperatorSessionEndToEnd(t *testing.T) {
	f := newFixture(t)
	csv := []byte(strings.Repeat("NHS_NUMBER,DATE_AND_TIME\n9000000009,20240901T10000000\n", 2000))
	file := writeFile(t, "Vaccinations-HPV-2024-09-01.csv", csv)

	r := run(t, meshcli.ValidateMailbox, f.sender)
	r.expect(t, 0)
	if !strings.Contains(r.stdout, `"result": "ok"`) || !strings.Contains(r.stdout, senderMB) {
		t.Errorf("validate-mailbox output %s", r.stdout)
	}

	// Flags after the file work too, as an operator may type them.
	r = run(t, meshcli.SendFile, f.sender, "--to", strings.ToLower(receiverMB), "--workflow", workflow, file, "--local-id", "manual-1", "--subject", "resend")
	r.expect(t, 0)
	var sent struct {
		MessageID string `json:"message_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sent); err != nil || sent.MessageID == "" {
		t.Fatalf("send-file output %q: %v", r.stdout, err)
	}
	m, ok := f.sb.Message(sent.MessageID)
	if !ok || m.LocalID != "manual-1" || m.FileName != "Vaccinations-HPV-2024-09-01.csv" || m.ContentEncoding != "gzip" ||
		m.WorkflowID != workflow || m.To != receiverMB || m.Subject != "resend" {
		t.Fatalf("sandbox message %+v", m)
	}

	r = run(t, meshcli.SendFile, f.sender, "--to", receiverMB, "--workflow", workflow, "--no-compress", file)
	r.expect(t, 0)
	var plain struct {
		MessageID string `json:"message_id"`
	}
	_ = json.Unmarshal([]byte(r.stdout), &plain)
	if m, _ := f.sb.Message(plain.MessageID); m.ContentEncoding != "" {
		t.Errorf("--no-compress sent encoding %q", m.ContentEncoding)
	}

	r = run(t, meshcli.CheckInbox, f.receiver)
	r.expect(t, 0)
	var inbox struct {
		Messages []string `json:"messages"`
		Count    int      `json:"count"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &inbox); err != nil {
		t.Fatal(err)
	}
	if inbox.Count != 2 || !slices.Contains(inbox.Messages, sent.MessageID) || !slices.Contains(inbox.Messages, plain.MessageID) {
		t.Fatalf("check-inbox %s", r.stdout)
	}

	r = run(t, meshcli.GetMessage, f.receiver, sent.MessageID)
	r.expect(t, 0)
	if r.stdout != string(csv) {
		t.Fatalf("get-message wrote %d bytes to stdout, want the %d-byte file", len(r.stdout), len(csv))
	}
	out := filepath.Join(t.TempDir(), "got.csv")
	r = run(t, meshcli.GetMessage, f.receiver, "--out", out, plain.MessageID)
	r.expect(t, 0)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, csv) {
		t.Fatalf("--out file has %d bytes, want %d", len(got), len(csv))
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--out file mode %v (%v), want 0600: a DPS file holds patient data", fi.Mode().Perm(), err)
	}
	if !strings.Contains(r.stdout, `"bytes": `+fmt.Sprint(len(csv))) || !strings.Contains(r.stdout, plain.MessageID) {
		t.Errorf("--out summary %s", r.stdout)
	}

	run(t, meshcli.AckMessage, f.receiver, sent.MessageID).expect(t, 0)
	r = run(t, meshcli.CheckInbox, f.receiver, "--max-results", "10")
	r.expect(t, 0)
	if strings.Contains(r.stdout, sent.MessageID) || !strings.Contains(r.stdout, `"count": 1`) {
		t.Fatalf("inbox after ack: %s", r.stdout)
	}

	r = run(t, meshcli.Track, f.sender, sent.MessageID)
	r.expect(t, 0)
	var tr map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &tr); err != nil {
		t.Fatal(err)
	}
	if tr["status"] != "acknowledged" || tr["message_id"] != sent.MessageID || tr["local_id"] != "manual-1" {
		t.Fatalf("track output %s", r.stdout)
	}
	r = run(t, meshcli.Track, f.sender, "--local-id", "manual-1")
	r.expect(t, 0)
	if !strings.Contains(r.stdout, sent.MessageID) {
		t.Fatalf("track --local-id output %s", r.stdout)
	}
}

func TestMESHRefusalsExitOneWithCodeAndText(t *testing.T) {
	f := newFixture(t)
	file := writeFile(t, "x.csv", []byte("a\n"))
	wrong := f.client(t, senderMB, "not-the-password")
	cases := []struct {
		name      string
		cmd       meshcli.Command
		c         *mesh.Client
		args      []string
		stderrHas []string
	}{
		{"validate with a bad password", meshcli.ValidateMailbox, wrong, nil, []string{"403", "Invalid Authentication Token"}},
		{"send to an unknown mailbox", meshcli.SendFile, f.sender, []string{"--to", "X26NOPE", "--workflow", workflow, file},
			[]string{"417", `mesh_code="12"`, "Unregistered to address"}},
		{"get an unknown message", meshcli.GetMessage, f.receiver, []string{"NOSUCHMESSAGE"}, []string{"404"}},
		{"ack an unknown message", meshcli.AckMessage, f.receiver, []string{"NOSUCHMESSAGE"}, []string{"404"}},
		{"track an unknown message", meshcli.Track, f.sender, []string{"NOSUCHMESSAGE"}, []string{"404"}},
		{"check inbox with a bad password", meshcli.CheckInbox, wrong, nil, []string{"403"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.cmd, tc.c, tc.args...)
			r.expect(t, 1, tc.stderrHas...)
			if r.stdout != "" {
				t.Errorf("stdout on failure: %q", r.stdout)
			}
			if strings.Contains(r.stderr, "not-the-password") || strings.Contains(r.stderr, sharedKey) || strings.Contains(r.stderr, "NHSMESH") {
				t.Errorf("stderr leaks a secret: %s", r.stderr)
			}
		})
	}
}

func TestBadUsageExitsTwo(t *testing.T) {
	f := newFixture(t)
	file := writeFile(t, "x.csv", []byte("a\n"))
	cases := []struct {
		name string
		cmd  meshcli.Command
		args []string
	}{
		{"validate with an argument", meshcli.ValidateMailbox, []string{"extra"}},
		{"check-inbox with an argument", meshcli.CheckInbox, []string{"extra"}},
		{"check-inbox page too small", meshcli.CheckInbox, []string{"--max-results", "3"}},
		{"get-message without id", meshcli.GetMessage, nil},
		{"get-message two ids", meshcli.GetMessage, []string{"A", "B"}},
		{"ack-message without id", meshcli.AckMessage, nil},
		{"track without id", meshcli.Track, nil},
		{"unknown flag", meshcli.Track, []string{"--bogus", "ID"}},
		{"send-file without file", meshcli.SendFile, []string{"--to", receiverMB, "--workflow", workflow}},
		{"send-file without --to", meshcli.SendFile, []string{"--workflow", workflow, file}},
		{"send-file missing file", meshcli.SendFile, []string{"--to", receiverMB, "--workflow", workflow, filepath.Join(t.TempDir(), "nope.csv")}},
		{"send-file a directory", meshcli.SendFile, []string{"--to", receiverMB, "--workflow", workflow, t.TempDir()}},
	}
	t.Setenv(meshcli.WorkflowEnv, "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.cmd, f.sender, tc.args...)
			r.expect(t, 2, "usage:")
		})
	}
	t.Run("send-file without a workflow anywhere", func(t *testing.T) {
		run(t, meshcli.SendFile, f.sender, "--to", receiverMB, file).expect(t, 2, meshcli.WorkflowEnv)
	})
	if n := len(f.sb.Messages(senderMB)); n != 0 {
		t.Fatalf("bad usage sent %d messages", n)
	}
	t.Run("help exits zero", func(t *testing.T) {
		run(t, meshcli.SendFile, f.sender, "-h").expect(t, 0, "--to")
	})
}

func TestSendFileWorkflowFromEnvironment(t *testing.T) {
	f := newFixture(t)
	t.Setenv(meshcli.WorkflowEnv, workflow)
	r := run(t, meshcli.SendFile, f.sender, "--to", receiverMB, writeFile(t, "y.dat", []byte("payload")))
	r.expect(t, 0)
	msgs := f.sb.Messages(senderMB)
	if len(msgs) != 1 || msgs[0].WorkflowID != workflow {
		t.Fatalf("messages %+v", msgs)
	}
}

// TestSendFileDefaultWorkflow: the default a program passes (the sender's MESH_DPS_WORKFLOW_ID) comes
// after --workflow and MESH_WORKFLOW_ID.
func TestSendFileDefaultWorkflow(t *testing.T) {
	cases := []struct {
		name, def, env string
		args           []string
	}{
		{"default alone", workflow, "", nil},
		{"environment before the default", "DEFAULT_WF", workflow, nil},
		{"flag before both", "DEFAULT_WF", "ENV_WF", []string{"--workflow", workflow}},
		{"flag with = before both", "DEFAULT_WF", "ENV_WF", []string{"--workflow=" + workflow}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			t.Setenv(meshcli.WorkflowEnv, c.env)
			args := append([]string{"--to", receiverMB}, c.args...)
			r := run(t, meshcli.SendFileWithDefault(c.def), f.sender, append(args, writeFile(t, "y.dat", []byte("payload")))...)
			r.expect(t, 0)
			msgs := f.sb.Messages(senderMB)
			if len(msgs) != 1 || msgs[0].WorkflowID != workflow {
				t.Fatalf("messages %+v, want one with workflow %s", msgs, workflow)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{fmt.Errorf("send: %w", mesh.ErrInvalidArgument), 2},
		{&mesh.Error{Op: "send", StatusCode: 417, Code: "12"}, 1},
		{&mesh.Error{Op: "send", StatusCode: 503, Transient: true}, 1},
		{&mesh.Error{Op: "send", Err: context.Canceled}, 1},
		{errors.New("disk full"), 1},
	}
	for _, tc := range cases {
		if got := meshcli.ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if len(meshcli.Commands()) != 6 || len(meshcli.CommandNames()) != 6 {
		t.Errorf("commands %v", meshcli.CommandNames())
	}
}

// TestValidateMailboxShowsCertificateExpiry: over mutual TLS, validate-mailbox prints the client
// certificate's subject and expiry, warns on stderr within 60, 30 and 7 days of its end, and names the
// expired certificate when MESH refuses it.
func TestValidateMailboxShowsCertificateExpiry(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	sb := meshsandbox.New(meshsandbox.Config{SharedKey: sharedKey, ClientCAs: ca.Pool(),
		Mailboxes: []meshsandbox.Mailbox{{ID: senderMB, Password: senderPW}}})
	srv := httptest.NewUnstartedServer(sb.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused expired certificate is expected
	if srv.TLS, err = sb.TLSConfig(ca, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	now := time.Now()
	tests := []struct {
		name       string
		left       time.Duration
		code       int
		wantStderr string
	}{
		{"in a year", 365 * 24 * time.Hour, 0, ""},
		{"in 45 days", 45 * 24 * time.Hour, 0, "expires at"},
		{"in 20 days", 20 * 24 * time.Hour, 0, "in 19 days"},
		{"in 3 days", 3 * 24 * time.Hour, 0, "in 2 days"},
		{"expired", -time.Hour, 1, "EXPIRED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			notAfter := now.Add(tt.left - time.Minute).Truncate(time.Second)
			certPEM, keyPEM, err := ca.IssueClientUntil(senderMB, notAfter)
			if err != nil {
				t.Fatal(err)
			}
			tc, err := mesh.TLSConfig(mesh.TLSOptions{CertificatePEM: certPEM, PrivateKeyPEM: keyPEM, CABundlePEM: ca.CertPEM()})
			if err != nil {
				t.Fatal(err)
			}
			c, err := mesh.New(mesh.Config{BaseURL: srv.URL, Mailbox: senderMB, Password: senderPW, SharedKey: sharedKey,
				TLS: tc, MaxRetries: -1})
			if err != nil {
				t.Fatal(err)
			}
			r := run(t, meshcli.ValidateMailbox, c)
			r.expect(t, tt.code, tt.wantStderr)
			if tt.wantStderr == "" && r.stderr != "" {
				t.Errorf("stderr %q, want nothing for a certificate far from expiry", r.stderr)
			}
			if !strings.Contains(r.stderr+r.stdout, "CN="+senderMB) {
				t.Errorf("the certificate's subject is not printed:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
			}
			if tt.code != 0 {
				return
			}
			var out struct {
				Result            string
				ClientCertificate struct {
					Subject  string    `json:"subject"`
					NotAfter time.Time `json:"not_after"`
					DaysLeft int       `json:"days_left"`
				} `json:"client_certificate"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("stdout is not JSON: %v: %s", err, r.stdout)
			}
			if out.Result != "ok" || out.ClientCertificate.Subject != "CN="+senderMB || !out.ClientCertificate.NotAfter.Equal(notAfter) {
				t.Errorf("printed %s; want ok, CN=%s and expiry %s", r.stdout, senderMB, notAfter.UTC().Format(time.RFC3339))
			}
			if want := int(tt.left/(24*time.Hour)) - 1; out.ClientCertificate.DaysLeft != want {
				t.Errorf("days_left %d, want %d", out.ClientCertificate.DaysLeft, want)
			}
		})
	}
}
