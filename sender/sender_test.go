package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/delivery"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
)

// These tests run the real sender binary, built once per test run.
func senderBinary(t *testing.T) string {
	t.Helper()
	return proctest.Binary(t, "./sender")
}

func TestMain(m *testing.M) { proctest.Main(m) }

// proc is one sender process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *proctest.Buffer
	done   chan struct{}
	err    error
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, stderr: &proctest.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(senderBinary(t), args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit", p.name)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return 0
}

func (p *proc) waitLog(t *testing.T, what string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stderr.String(), what) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before logging %q:\n%s", p.name, what, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q", p.name, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keepConsumerTuned gives the sender consumer a short ack wait for as long as the test runs. Every
// sender process re-applies pkg/bus's production topology (a 5-minute ack wait) when it starts, and
// process.Open has no setting for it, so the test puts its own back whenever it changes.
func keepConsumerTuned(t *testing.T, e *testenv.Env, ackWait time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		want := testenv.SenderConsumerConfig(ackWait, 0)
		for ctx.Err() == nil {
			if c, err := e.JS.Consumer(ctx, bus.StreamBatches, bus.ConsumerSender); err == nil {
				if info, err := c.Info(ctx); err == nil && info.Config.AckWait != ackWait {
					_, _ = e.JS.CreateOrUpdateConsumer(ctx, bus.StreamBatches, want)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestReplicasSurviveKillsAndSendEachExportOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and 200 exports: skipped with -short")
	}
	const exports, replicas, kills = 200, 3, 5
	e := testenv.New(t, testenv.Options{SenderAckWait: time.Second})
	ctx := t.Context()
	e.Sandbox.InjectFault(meshsandbox.Fault{Latency: 20 * time.Millisecond})
	e.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Status: 500, Fraction: 0.10})
	e.Sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteSend, Status: 429, Fraction: 0.03, RetryAfter: time.Second})
	ids := make([]string, 0, exports)
	for range exports {
		ids = append(ids, e.AddExport(ctx, 1).Ready.ExportID)
	}
	keepConsumerTuned(t, e, time.Second)

	env := e.ProcessEnv()
	procs := make([]*proc, replicas)
	for i := range procs {
		procs[i] = start(t, env, fmt.Sprintf("replica-%d", i), "run")
	}
	for _, p := range procs {
		p.waitLog(t, "sender consuming", 30*time.Second)
	}
	accepted := func() int { return e.CountStatus(ctx, lifecycle.Accepted) }

	// Kill replica 0 at fixed points of progress, so every kill lands while batches are in flight.
	for k := range kills {
		threshold := (k + 1) * exports / (kills + 2)
		e.WaitFor(fmt.Sprintf("%d exports accepted", threshold), 60*time.Second, func() bool { return accepted() >= threshold })
		procs[0].kill()
		t.Logf("kill %d: SIGKILL replica-0 at %d accepted", k+1, accepted())
		procs[0] = start(t, env, fmt.Sprintf("replica-0-restart-%d", k+1), "run")
		procs[0].waitLog(t, "sender consuming", 30*time.Second)
	}
	e.WaitFor("every export accepted", 60*time.Second, func() bool { return accepted() == exports })
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		if code := p.exitCode(t, 30*time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", p.name, code)
		}
	}

	byExport := e.SandboxByExport()
	adopted := 0
	for _, id := range ids {
		msgs := byExport[id]
		st := e.State(ctx, id)
		if len(msgs) != 1 || msgs[0].Status != meshsandbox.StatusAccepted {
			t.Errorf("export %s: sandbox holds %+v, want exactly one accepted message", id, msgs)
			continue
		}
		if st.Status != lifecycle.Accepted || st.MessageID != msgs[0].ID || st.LocalID != msgs[0].LocalID {
			t.Errorf("export %s: Postgres %+v, sandbox %s (%s)", id, st, msgs[0].ID, msgs[0].LocalID)
		}
	}
	if len(byExport) != exports {
		t.Errorf("sandbox holds messages for %d exports, want %d", len(byExport), exports)
	}
	if dl := e.StreamMessages(ctx, bus.StreamDeadLetter, ""); len(dl) != 0 {
		t.Errorf("%d dead letters, want none: %s", len(dl), dl[0].Data)
	}
	sent := testenv.Events[bus.ExportSent](e, ctx, bus.StreamEvents, bus.SubjectExportSent)
	seen := map[string]bool{}
	for _, ev := range sent {
		seen[ev.ExportID] = true
		if ev.Adopted {
			adopted++
		}
	}
	if len(seen) != exports || len(sent) != exports {
		t.Errorf("%d sent events for %d exports, want %d", len(sent), len(seen), exports)
	}
	var attempts int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM dps_export_attempts`).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d exports, %d attempts recorded, %d adopted after a kill, %d send requests reached the sandbox",
		exports, attempts, adopted, e.Sandbox.Requests(meshsandbox.RouteSend))
}

func TestKillBetweenMESHAcceptAndCommitAdoptsTheMessage(t *testing.T) {
	e := testenv.New(t, testenv.Options{SenderAckWait: time.Second})
	ctx := t.Context()
	x := e.AddExport(ctx, 2)
	keepConsumerTuned(t, e, time.Second)

	crashing := start(t, append(e.ProcessEnv(), "DPS_FAILPOINT="+delivery.FailpointAfterMESHAccept), "crashing", "run")
	if code := crashing.exitCode(t, 60*time.Second); code != 86 {
		t.Fatalf("sender with the failpoint exited %d, want 86:\n%s", code, crashing.stderr.String())
	}
	if got := e.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Fatalf("after the crash the sandbox holds %d messages, want 1", len(got))
	}
	if st := e.State(ctx, x.Ready.ExportID); st.Status != lifecycle.Created || st.Attempts != 1 {
		t.Fatalf("after the crash: %+v, want created with attempt 1", st)
	}

	restarted := start(t, e.ProcessEnv(), "restarted", "run")
	e.WaitFor("export accepted", 60*time.Second, func() bool {
		return e.State(ctx, x.Ready.ExportID).Status == lifecycle.Accepted
	})
	msgs := e.SandboxByExport()[x.Ready.ExportID]
	if len(msgs) != 1 {
		t.Fatalf("sandbox holds %d messages for the export, want 1", len(msgs))
	}
	if st := e.State(ctx, x.Ready.ExportID); st.MessageID != msgs[0].ID || st.Attempts != 1 {
		t.Errorf("export %+v, sandbox message %s", st, msgs[0].ID)
	}
	e.WaitFor("sent event", 30*time.Second, func() bool {
		return len(e.StreamMessages(ctx, bus.StreamEvents, bus.SubjectExportSent)) == 1
	})
	ev := testenv.Events[bus.ExportSent](e, ctx, bus.StreamEvents, bus.SubjectExportSent)
	if len(ev) != 1 || !ev[0].Adopted || ev[0].MeshMessageID != msgs[0].ID {
		t.Errorf("sent events %+v, want one adopted", ev)
	}
	_ = restarted.cmd.Process.Signal(syscall.SIGTERM)
	if code := restarted.exitCode(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}

	// sender replay: nothing is sent again by default; --dry-run --force lists it.
	rep := start(t, e.ProcessEnv(), "replay", "replay", "--since", "1h")
	if code := rep.exitCode(t, 60*time.Second); code != 0 {
		t.Fatalf("replay exited %d:\n%s", code, rep.stderr.String())
	}
	if out := rep.stderr.String(); !strings.Contains(out, "already sent as MESH message "+msgs[0].ID) || !regexpCount(out, "skipped", 1) {
		t.Errorf("replay summary:\n%s", out)
	}
	dry := start(t, e.ProcessEnv(), "replay-dry", "replay", "--from-seq", "1", "--dry-run", "--force")
	if code := dry.exitCode(t, 60*time.Second); code != 0 || !strings.Contains(dry.stderr.String(), "would RE-SEND") {
		t.Errorf("dry run exited %d:\n%s", code, dry.stderr.String())
	}
	if got := e.SandboxByExport()[x.Ready.ExportID]; len(got) != 1 {
		t.Errorf("after replays the sandbox holds %d messages, want 1", len(got))
	}
}

// regexpCount reports whether the summary line "  <outcome>  <n>" shows n.
func regexpCount(summary, outcome string, n int) bool {
	for _, line := range strings.Split(summary, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == outcome {
			return f[1] == fmt.Sprint(n)
		}
	}
	return false
}

func TestSendFile(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	file := filepath.Join(t.TempDir(), "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv")
	if err := os.WriteFile(file, []byte("a|b\n1|2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := e.ProcessEnv()
	cases := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"sent", []string{"--to", testenv.DPSMailbox, "--local-id", "op-1", file}, 0, `"message_id"`},
		{"unknown recipient", []string{"--to", "X26NOBODY", file}, 1, "Unregistered to address"},
		{"no recipient", []string{file}, 2, "--to is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := start(t, env, "send-file", append([]string{"send-file"}, c.args...)...)
			if code := p.exitCode(t, 30*time.Second); code != c.code || !strings.Contains(p.stderr.String(), c.out) {
				t.Errorf("exit %d, want %d; output:\n%s", code, c.code, p.stderr.String())
			}
		})
	}
	var sent []meshsandbox.Message
	for _, m := range e.Sandbox.Messages(testenv.OurMailbox) {
		if m.LocalID == "op-1" {
			sent = append(sent, m)
		}
	}
	if len(sent) != 1 || sent[0].WorkflowID != testenv.WorkflowID || sent[0].FileName != filepath.Base(file) {
		t.Errorf("sandbox holds %+v", sent)
	}
}

func TestUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
	}{
		{nil, 2}, {[]string{"help"}, 0}, {[]string{"bogus"}, 2}, {[]string{"run", "extra"}, 2},
		{[]string{"replay"}, 2}, {[]string{"replay", "--since", "yesterday"}, 2}, {[]string{"replay", "--help"}, 0},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		if got := dispatch(c.args, &out, &errOut); got != c.code {
			t.Errorf("sender %q: exit %d, want %d (%s)", c.args, got, c.code, errOut.String())
		}
	}
}
