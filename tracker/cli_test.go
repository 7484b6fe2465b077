package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

// The operator commands as a new user runs them: built binaries, against the sandbox running as its
// own process over TLS, configured only through MESH_* variables.

const (
	cliOurMailbox = "X26OURS1"
	cliOurPass    = "ours-password"
	cliDPSMailbox = "X26DPS01"
	cliDPSPass    = "dps-password"
	cliWorkflow   = "DPSVACC"
	cliSharedKey  = "CliTestKey"
)

// The binaries are built once per test binary run.
func TestMain(m *testing.M) { proctest.Main(m) }

// sandboxProcess starts mesh-sandbox with our mailbox and the DPS one, and returns its URL and the CA
// file its certificate is signed by.
func sandboxProcess(t *testing.T) (url, caFile string) {
	t.Helper()
	caFile = filepath.Join(t.TempDir(), "sandbox-ca.pem")
	cmd := exec.Command(proctest.Binary(t, "./pkg/meshsandbox/cmd/mesh-sandbox"),
		"-addr", "127.0.0.1:0", "-tls", "-ca-out", caFile, "-shared-key", cliSharedKey,
		"-mailboxes", cliOurMailbox+":"+cliOurPass+";"+cliDPSMailbox+":"+cliDPSPass+":"+cliWorkflow)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	select {
	case line := <-lines:
		m := regexp.MustCompile(`https://\S+`).FindString(line)
		if m == "" {
			t.Fatalf("mesh-sandbox printed %q, want its URL", line)
		}
		return m, caFile
	case <-time.After(30 * time.Second):
		t.Fatalf("mesh-sandbox did not print its URL; stderr: %s", stderr.String())
	}
	return "", ""
}

// result is one command's outcome.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs a binary with exactly env (plus PATH) and returns its exit code and output.
func runCmd(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run %s %v: %v", filepath.Base(bin), args, err)
		}
		code = ee.ExitCode()
	}
	t.Logf("$ %s %s  → exit %d\n%s%s", filepath.Base(bin), strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func meshEnv(url, caFile, mailbox, password string, extra ...string) []string {
	return append([]string{
		"MESH_BASE_URL=" + url,
		"MESH_MAILBOX=" + mailbox,
		"MESH_PASSWORD=" + password,
		"MESH_SHARED_KEY=" + cliSharedKey,
		"MESH_CA_BUNDLE=" + caFile,
	}, extra...)
}

func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	url, ca := sandboxProcess(t)
	tracker, sender := proctest.Binary(t, "./tracker"), proctest.Binary(t, "./sender")
	ours := meshEnv(url, ca, cliOurMailbox, cliOurPass)
	dps := meshEnv(url, ca, cliDPSMailbox, cliDPSPass)

	expect := func(r result, code int, what string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.stdout, r.stderr)
		}
	}
	decode := func(r result, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
		}
	}

	// Bad usage and configuration: exit 2, naming what is wrong.
	r := runCmd(t, tracker, ours)
	expect(r, 2, "no command")
	if !strings.Contains(r.stderr, "usage: tracker") {
		t.Errorf("no usage text: %q", r.stderr)
	}
	expect(runCmd(t, tracker, ours, "frobnicate"), 2, "unknown command")
	r = runCmd(t, tracker, append(ours, "MESH_JOBS_ENABLED=maybe"), "check-inbox")
	expect(r, 2, "MESH_JOBS_ENABLED=maybe")
	if !strings.Contains(r.stderr, "MESH_JOBS_ENABLED") {
		t.Errorf("the error does not name MESH_JOBS_ENABLED: %q", r.stderr)
	}
	r = runCmd(t, tracker, meshEnv(url, ca, "", cliOurPass), "validate-mailbox")
	expect(r, 2, "no mailbox")
	if !strings.Contains(r.stderr, "MESH_MAILBOX") {
		t.Errorf("the error does not name MESH_MAILBOX: %q", r.stderr)
	}
	if strings.Contains(r.stderr, cliOurPass) {
		t.Errorf("the error prints the password: %q", r.stderr)
	}

	// validate-mailbox (mesh:validate_mailbox).
	r = runCmd(t, tracker, ours, "validate-mailbox")
	expect(r, 0, "validate-mailbox")
	var validated map[string]string
	decode(r, &validated)
	if validated["result"] != "ok" || validated["mailbox"] != cliOurMailbox {
		t.Errorf("validate-mailbox printed %v", validated)
	}
	r = runCmd(t, tracker, meshEnv(url, ca, cliOurMailbox, "wrong-password"), "validate-mailbox")
	expect(r, 1, "validate-mailbox with a wrong password")
	if !strings.Contains(r.stderr, "403") {
		t.Errorf("MESH's refusal is not printed: %q", r.stderr)
	}

	// send-file (mesh:send_file) from our mailbox to DPS.
	file := filepath.Join(t.TempDir(), "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv")
	body := "NHS_NUMBER|PERSON_FORENAME\n9000000009|TEST\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(t, sender, ours, "send-file", "--to", cliDPSMailbox, "--workflow", cliWorkflow, file)
	expect(r, 0, "sender send-file")
	var sent struct {
		MessageID string `json:"message_id"`
	}
	decode(r, &sent)
	if sent.MessageID == "" {
		t.Fatalf("send-file printed no message id: %s", r.stdout)
	}

	// check-inbox (mesh:check_inbox) as DPS.
	r = runCmd(t, tracker, dps, "check-inbox")
	expect(r, 0, "check-inbox")
	var inbox struct {
		Messages []string `json:"messages"`
	}
	decode(r, &inbox)
	if len(inbox.Messages) != 1 || inbox.Messages[0] != sent.MessageID {
		t.Errorf("inbox = %v, want [%s]", inbox.Messages, sent.MessageID)
	}

	// get-message (mesh:get_message), to stdout and to a file.
	r = runCmd(t, tracker, dps, "get-message", sent.MessageID)
	expect(r, 0, "get-message")
	if r.stdout != body {
		t.Errorf("get-message printed %q, want the file %q", r.stdout, body)
	}
	out := filepath.Join(t.TempDir(), "downloaded.csv")
	expect(runCmd(t, tracker, dps, "get-message", sent.MessageID, "--out", out), 0, "get-message --out")
	if got, err := os.ReadFile(out); err != nil || string(got) != body {
		t.Errorf("get-message --out wrote %q (%v), want %q", got, err, body)
	}
	expect(runCmd(t, tracker, dps, "get-message"), 2, "get-message without an id")
	r = runCmd(t, tracker, dps, "get-message", "00000000000000000000000000000000")
	expect(r, 1, "get-message of an unknown message")
	if !strings.Contains(r.stderr, "404") {
		t.Errorf("MESH's 404 is not printed: %q", r.stderr)
	}

	// track (tracking by message id) as the sender: accepted, then acknowledged after ack-message.
	track := func(want string) {
		t.Helper()
		r := runCmd(t, tracker, ours, "track", sent.MessageID)
		expect(r, 0, "track")
		var tr map[string]any
		decode(r, &tr)
		if tr["status"] != want || tr["message_id"] != sent.MessageID {
			t.Errorf("tracking = %v, want status %s for %s", tr, want, sent.MessageID)
		}
	}
	track("accepted")
	r = runCmd(t, tracker, dps, "ack-message", sent.MessageID)
	expect(r, 0, "ack-message")
	track("acknowledged")
	r = runCmd(t, tracker, dps, "check-inbox")
	expect(r, 0, "check-inbox after ack")
	decode(r, &inbox)
	if len(inbox.Messages) != 0 {
		t.Errorf("inbox after ack = %v, want empty", inbox.Messages)
	}
	expect(runCmd(t, tracker, ours, "track"), 2, "track without an id")
	r = runCmd(t, tracker, dps, "track", sent.MessageID)
	expect(r, 1, "track by a mailbox that did not send it")
	if !strings.Contains(r.stderr, "404") {
		t.Errorf("MESH's 404 is not printed: %q", r.stderr)
	}
}
