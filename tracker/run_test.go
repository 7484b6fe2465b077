package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// trackerProcess is `tracker run` as a child process; its JSON log lines are collected.
type trackerProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs []string
	done chan struct{}
}

func startTracker(t *testing.T, env []string) *trackerProcess {
	t.Helper()
	p := &trackerProcess{cmd: exec.Command(proctest.Binary(t, "./tracker"), "run"), done: make(chan struct{})}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LOG_FORMAT=json", "HTTP_ADDR=127.0.0.1:0"}, env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs = append(p.logs, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("tracker log:\n%s", strings.Join(p.lines(""), "\n"))
		}
	})
	return p
}

// lines returns the log lines containing substr.
func (p *trackerProcess) lines(substr string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, l := range p.logs {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// httpAddr waits for the start line and returns the address /healthz is served on.
func (p *trackerProcess) httpAddr(t *testing.T) string {
	t.Helper()
	var addr string
	eventually(t, "tracker started", func() bool {
		for _, l := range p.lines(`"tracker started"`) {
			var v struct {
				Addr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(l), &v) == nil && v.Addr != "" {
				addr = v.Addr
				return true
			}
		}
		return false
	})
	return addr
}

// stop sends SIGTERM and returns the exit code.
func (p *trackerProcess) stop(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("tracker did not stop within 60 s of SIGTERM")
	}
	err := p.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunProcess runs `tracker run` as a process against embedded NATS, a fresh database (which it
// migrates) and the sandbox process: it validates the mailbox, tracks an export to acknowledged,
// serves /healthz and /metrics, and exits 0 on SIGTERM.
func TestRunProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs processes")
	}
	meshURL, ca := sandboxProcess(t)
	_, natsURL := natstest.Run(t)
	dbURL := pgtest.NewDatabase(t)
	env := append(meshEnv(meshURL, ca, cliOurMailbox, cliOurPass),
		"DATABASE_URL="+dbURL, "NATS_URL="+natsURL, "MESH_JOBS_ENABLED=true",
		"TRACKER_POLL_INTERVAL=100ms", "TRACKER_MAX_BACKOFF=200ms")

	p := startTracker(t, env)
	addr := p.httpAddr(t)
	eventually(t, "healthy", func() bool {
		code, body := get(t, "http://"+addr+"/healthz")
		return code == http.StatusOK && strings.Contains(body, `"mesh":"ok"`)
	})

	// An export the sender would have left accepted.
	ctx := t.Context()
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := mesh.TLSConfig(mesh.TLSOptions{CABundlePEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	client := func(mailbox, password string) *mesh.Client {
		c, err := mesh.New(mesh.Config{BaseURL: meshURL, Mailbox: mailbox, Password: password, SharedKey: cliSharedKey, TLS: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ours, dps := client(cliOurMailbox, cliOurPass), client(cliDPSMailbox, cliDPSPass)
	msgID, err := ours.Send(ctx, mesh.OutboundMessage{To: cliDPSMailbox, WorkflowID: cliWorkflow,
		FileName: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", Body: strings.NewReader("x\n")})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := store.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	exportID := uuid.NewString()
	if _, err := pool.Exec(ctx, `
		WITH p AS (INSERT INTO programmes (code, name) VALUES ('HPV', 'HPV') RETURNING id)
		INSERT INTO dps_exports (id, programme_id, filename, status, mesh_message_id, sent_at)
		SELECT $1, p.id, 'HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv', 'accepted', $2, now() FROM p`, exportID, msgID); err != nil {
		t.Fatal(err)
	}
	if err := dps.Acknowledge(ctx, msgID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "export acknowledged", func() bool {
		var s string
		_ = pool.QueryRow(ctx, `SELECT status FROM dps_exports WHERE id = $1`, exportID).Scan(&s)
		return s == "acknowledged"
	})
	eventually(t, "metrics", func() bool {
		_, body := get(t, "http://"+addr+"/metrics")
		return strings.Contains(body, `dps_exports_by_status{status="acknowledged"} 1`) &&
			strings.Contains(body, `dps_tracker_mailbox_handshakes_total{result="ok"} 1`) &&
			strings.Contains(body, `dps_tracker_sent_to_acknowledged_seconds_count 1`)
	})

	// The sender's announcement, late: the running tracker finds the export already acknowledged.
	_, js := natstest.Connect(t, natsURL)
	if _, err := bus.Publish(ctx, js, bus.SubjectExportSent, bus.EventMsgID(bus.EventSent, exportID), bus.ExportSent{
		EventID: uuid.NewString(), ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv",
		MeshMessageID: msgID, LocalID: exportID + ".1", Attempt: 1, SentAt: time.Now().UTC(),
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "dps.export.sent consumed", func() bool {
		c, err := js.Consumer(ctx, bus.StreamEvents, bus.ConsumerTracker)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer == 1
	})

	if code := p.stop(t); code != 0 {
		t.Errorf("tracker exited %d on SIGTERM, want 0", code)
	}
	if len(p.lines(`"tracker stopped"`)) != 1 {
		t.Error("no \"tracker stopped\" line")
	}

	// tracker replay over dps.export.sent: the export is past accepted, so it is skipped and counted;
	// --dry-run --force lists it; --force re-tracks it with MESH and leaves it acknowledged.
	trackerBin := proctest.Binary(t, "./tracker")
	replayEnv := append([]string{"LOG_FORMAT=json"}, env...)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"replay", "--since", "1h"}, "skipped  1"},
		{[]string{"replay", "--from-seq", "1", "--dry-run", "--force"}, "would ask MESH now and leave it acknowledged"},
		{[]string{"replay", "--from-seq", "1", "--force"}, "re-tracked: MESH says acknowledged; export stays acknowledged"},
	} {
		r := runCmd(t, trackerBin, replayEnv, tc.args...)
		if r.code != 0 || !strings.Contains(r.stdout, tc.want) {
			t.Errorf("tracker %v: exit %d, want 0 and %q in\n%s", tc.args, r.code, tc.want, r.stdout)
		}
	}
	r := runCmd(t, trackerBin, append(replayEnv, "MESH_JOBS_ENABLED=false"), "replay", "--since", "1h", "--force")
	if r.code != 2 || !strings.Contains(r.stderr, "MESH_JOBS_ENABLED") {
		t.Errorf("replay --force with the gate closed: exit %d, want 2 naming MESH_JOBS_ENABLED: %s", r.code, r.stderr)
	}
	if r := runCmd(t, trackerBin, replayEnv, "replay", "--since", "yesterday"); r.code != 2 {
		t.Errorf("replay --since yesterday: exit %d, want 2", r.code)
	}

	// The events left through the outbox.
	for _, subject := range []string{bus.SubjectExportAcknowledged, bus.SubjectMailboxValidated} {
		s, err := js.Stream(ctx, bus.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Subjects[subject] != 1 {
			t.Errorf("DPS_EVENTS holds %d %s events, want 1", info.State.Subjects[subject], subject)
		}
	}
}

// TestRunGateClosed: with MESH_JOBS_ENABLED=false the service starts without MESH credentials, says
// so at WARN, reports MESH "disabled" in /healthz and exits 0 on SIGTERM. The client certificate it is
// given, 20 days from its end, is warned of at start and its expiry is on /metrics.
func TestRunGateClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs processes")
	}
	_, natsURL := natstest.Run(t)
	dbURL := pgtest.NewDatabase(t)
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(20 * 24 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM, err := ca.IssueClientUntil(cliOurMailbox, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	p := startTracker(t, []string{"DATABASE_URL=" + dbURL, "NATS_URL=" + natsURL, "MESH_JOBS_ENABLED=false",
		"MESH_CERTIFICATE=" + string(certPEM), "MESH_PRIVATE_KEY=" + string(keyPEM)})
	addr := p.httpAddr(t)
	eventually(t, "healthz", func() bool {
		code, body := get(t, "http://"+addr+"/healthz")
		return code == http.StatusOK && strings.Contains(body, `"mesh":"disabled"`)
	})
	if len(p.lines(`"level":"WARN","msg":"MESH_JOBS_ENABLED is false`)) == 0 {
		t.Error("no WARN line about the closed gate")
	}
	if len(p.lines(`"level":"WARN","msg":"MESH client certificate expires within 30 days`)) != 1 {
		t.Error("no WARN at start about the client certificate expiring within 30 days")
	}
	if _, body := get(t, "http://"+addr+"/metrics"); !strings.Contains(body,
		"dps_mesh_client_certificate_expiry_timestamp_seconds "+strconv.FormatFloat(float64(notAfter.Unix()), 'g', -1, 64)) {
		t.Errorf("/metrics lacks the certificate's expiry %d", notAfter.Unix())
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("tracker exited %d on SIGTERM, want 0", code)
	}
}
