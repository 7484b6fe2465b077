package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
	"github.com/nhs-dps/dps-pipeline/schemas"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// producerBinary builds this command once per test run; the tests run it as a real process.
func producerBinary(t *testing.T) string {
	t.Helper()
	return proctest.Binary(t, "./producer")
}

type stack struct {
	t       *testing.T
	bin     string
	dbURL   string
	natsURL string
	js      jetstream.JetStream
	pool    *pgxpool.Pool
}

// newStack is a database and a NATS server with the topology declared, as a running service leaves it.
func newStack(t *testing.T) *stack {
	t.Helper()
	s := newBareStack(t)
	if err := bus.EnsureTopology(t.Context(), s.js); err != nil {
		t.Fatal(err)
	}
	return s
}

// newBareStack is newStack on a NATS server where nothing is declared yet.
func newBareStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, bin: producerBinary(t), dbURL: pgtest.NewDatabase(t)}
	_, s.natsURL = natstest.Run(t)
	_, s.js = natstest.Connect(t, s.natsURL)
	return s
}

func (s *stack) env(extra ...string) []string {
	return append(os.Environ(), append([]string{
		"DATABASE_URL=" + s.dbURL, "NATS_URL=" + s.natsURL, "LOG_FORMAT=json", "LOG_LEVEL=info", "DPS_FAILPOINT=",
		"DPS_SENDER_ODS_CODE=X26SBX",
	}, extra...)...)
}

// run runs the producer with args and returns stdout, stderr and the exit status.
func (s *stack) run(env []string, args ...string) (string, string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	code := 0
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		s.t.Fatalf("run producer %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

func (s *stack) mustRun(args ...string) string {
	s.t.Helper()
	out, errOut, code := s.run(s.env(), args...)
	if code != 0 {
		s.t.Fatalf("producer %v: exit %d\n%s", args, code, errOut)
	}
	return out
}

func (s *stack) db() *pgxpool.Pool {
	s.t.Helper()
	if s.pool == nil {
		pool, err := store.Connect(s.t.Context(), s.dbURL)
		if err != nil {
			s.t.Fatal(err)
		}
		s.t.Cleanup(pool.Close)
		s.pool = pool
	}
	return s.pool
}

func (s *stack) count(sql string) int {
	s.t.Helper()
	var n int
	if err := s.db().QueryRow(s.t.Context(), sql).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (s *stack) readyCount() uint64 {
	s.t.Helper()
	st, err := s.js.Stream(s.t.Context(), bus.StreamBatches)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs
}

type summary struct {
	Status    string `json:"status"`
	ExportID  string `json:"export_id"`
	Programme string `json:"programme"`
	Filename  string `json:"filename"`
	Rows      int    `json:"rows"`
	SizeBytes int64  `json:"size_bytes"`
	SHA256    string `json:"sha256"`
	Refused   int    `json:"refused"`
	// RefusedByRule counts refused records per rule.
	RefusedByRule map[string]int `json:"refused_by_rule"`
}

func parseSummaries(t *testing.T, out string) []summary {
	t.Helper()
	var res []summary
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var s summary
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("summary line %q: %v", sc.Text(), err)
		}
		res = append(res, s)
	}
	return res
}

func TestUsageErrors(t *testing.T) {
	s := &stack{t: t, bin: producerBinary(t), dbURL: "postgres://nobody@127.0.0.1:1/none", natsURL: "nats://127.0.0.1:1"}
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want int
	}{
		{"no command", nil, nil, 2},
		{"unknown command", nil, []string{"frobnicate"}, 2},
		{"export without programme", nil, []string{"export"}, 2},
		{"export with a bad programme", nil, []string{"export", "--programme", "hpv"}, 2},
		{"seed without records", nil, []string{"seed"}, 2},
		{"replay without a range", nil, []string{"replay"}, 2},
		{"unexpected argument", nil, []string{"migrate", "now"}, 2},
		{"bad schedule", []string{"PRODUCER_SCHEDULE=every night"}, []string{"run"}, 2},
		{"help", nil, []string{"export", "-h"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := s.run(s.env(c.env...), c.args...)
			if code != c.want {
				t.Fatalf("exit %d, want %d\n%s", code, c.want, errOut)
			}
		})
	}
}

// TestCommands runs migrate, seed, export (dry run, then real with --out) and request as processes.
func TestCommands(t *testing.T) {
	s := newStack(t)
	s.mustRun("migrate")
	out := s.mustRun("seed", "--records", "400", "--seed", "3")
	if !strings.Contains(out, "seeded 400 vaccination records") {
		t.Fatalf("seed printed %q", out)
	}

	dry := parseSummaries(t, s.mustRun("export", "--programme", "ALL", "--dry-run"))
	if len(dry) != 4 {
		t.Fatalf("dry run printed %d summaries, want one per programme: %+v", len(dry), dry)
	}
	for _, d := range dry {
		if d.Status != "dry_run" || d.Rows == 0 || len(d.SHA256) != 64 {
			t.Fatalf("dry run summary %+v", d)
		}
	}
	if n := s.count(`SELECT count(*) FROM dps_exports`); n != 0 {
		t.Fatalf("a dry run left %d exports", n)
	}

	file := filepath.Join(t.TempDir(), "hpv.csv")
	got := parseSummaries(t, s.mustRun("export", "--programme", "HPV", "--out", file))
	if len(got) != 1 || got[0].Status != "created" || got[0].Programme != "HPV" {
		t.Fatalf("export printed %+v", got)
	}
	var hpvDry summary
	for _, d := range dry {
		if d.Programme == "HPV" {
			hpvDry = d
		}
	}
	if got[0].Rows != hpvDry.Rows {
		t.Errorf("export has %d rows, its dry run had %d", got[0].Rows, hpvDry.Rows)
	}
	local, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--out file mode %v (%v), want 0600: it holds patient data", fi.Mode().Perm(), err)
	}
	if res, err := dps.Check(bytes.NewReader(local)); err != nil || res.Rows != got[0].Rows {
		t.Fatalf("--out file: %d rows, %v", res.Rows, err)
	}
	objects, err := bus.ExportStore(t.Context(), s.js)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := objects.GetBytes(t.Context(), got[0].ExportID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, local) || int64(len(stored)) != got[0].SizeBytes {
		t.Fatal("the stored file differs from the --out copy")
	}
	if n := s.readyCount(); n != 1 {
		t.Fatalf("%d ready messages after export, want 1 (the outbox is flushed before exit)", n)
	}

	reqOut := s.mustRun("request", "--programme", "FLU", "--requested-by", "ops", "--request-id", "req-42")
	if err := schemas.Validate(bus.SubjectExportRequest, []byte(strings.TrimSpace(reqOut))); err != nil {
		t.Fatalf("request printed %q: %v", reqOut, err)
	}
	st, err := s.js.Stream(t.Context(), bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(t.Context(), bus.SubjectExportRequest)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Nats-Msg-Id") != "req-42" || strings.TrimSpace(string(msg.Data)) != strings.TrimSpace(reqOut) {
		t.Fatalf("published %q (id %q), printed %q", msg.Data, msg.Header.Get("Nats-Msg-Id"), reqOut)
	}
}

// TestCrashAfterCommit: the process dies after committing exports and before publishing anything.
// The next producer command publishes them; each export ends with one ready message.
func TestCrashAfterCommit(t *testing.T) {
	s := newStack(t)
	s.mustRun("seed", "--records", "200")
	_, errOut, code := s.run(s.env("DPS_FAILPOINT="+failpointAfterCommit), "export", "--programme", "ALL")
	if code != 86 {
		t.Fatalf("exit %d, want the failpoint's 86\n%s", code, errOut)
	}
	exports := s.count(`SELECT count(*) FROM dps_exports`)
	if exports != 4 || s.readyCount() != 0 {
		t.Fatalf("after the crash: %d exports, %d ready messages; want 4 and 0", exports, s.readyCount())
	}
	again := parseSummaries(t, s.mustRun("export", "--programme", "ALL"))
	for _, r := range again {
		if r.Status != "nothing_to_send" {
			t.Fatalf("second export made %+v", r)
		}
	}
	if n := s.readyCount(); n != 4 {
		t.Fatalf("%d ready messages, want one per export (4)", n)
	}
}

// TestCrashAfterPublish: the process dies after the stream acknowledged a message and before its
// outbox row was marked. The next flush publishes it again; the stream keeps one.
func TestCrashAfterPublish(t *testing.T) {
	s := newStack(t)
	s.mustRun("seed", "--records", "200")
	_, errOut, code := s.run(s.env("DPS_FAILPOINT="+failpointAfterPublish), "export", "--programme", "HPV")
	if code != 86 {
		t.Fatalf("exit %d, want the failpoint's 86\n%s", code, errOut)
	}
	if n := s.count(`SELECT count(*) FROM dps_outbox WHERE published_at IS NULL`); n != 2 {
		t.Fatalf("%d unmarked outbox rows after the crash, want 2", n)
	}
	if n := s.readyCount(); n != 1 {
		t.Fatalf("%d ready messages after the crash, want the one published", n)
	}
	s.mustRun("export", "--programme", "HPV")
	if n := s.count(`SELECT count(*) FROM dps_outbox WHERE published_at IS NULL`); n != 0 {
		t.Fatalf("%d outbox rows still unmarked", n)
	}
	if n, e := s.readyCount(), s.count(`SELECT count(*) FROM dps_exports`); n != 1 || e != 1 {
		t.Fatalf("%d ready messages for %d exports, want 1 and 1", n, e)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunService runs `producer run`, asks it for every programme with `producer request`, checks
// /healthz and /metrics, replays the requests (no new export), and stops it with SIGTERM.
func TestRunService(t *testing.T) {
	s := newStack(t)
	s.mustRun("seed", "--records", "300")
	addr := freeAddr(t)
	cmd := exec.Command(s.bin, "run")
	cmd.Env = s.env("HTTP_ADDR=" + addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()

	s.mustRun("request", "--programme", "ALL", "--request-id", "nightly-test")
	deadline := time.Now().Add(60 * time.Second)
	for s.readyCount() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("no exports after a minute\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := s.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'nightly-test'`); n != 4 {
		t.Fatalf("%d exports, want 4", n)
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, m := range []string{`dps_producer_exports_created_total{programme="HPV"} 1`, "dps_producer_rows_exported_total",
		`dps_producer_requests_received_total{outcome="exported"} 1`, "dps_producer_export_duration_seconds_bucket"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	out := s.mustRun("replay", "--from-seq", "1")
	if !regexp.MustCompile(`skipped\s+1\n`).MatchString(out) || s.count(`SELECT count(*) FROM dps_exports`) != 4 {
		t.Fatalf("replay made exports or skipped nothing:\n%s", out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("producer run exited with %v after SIGTERM\n%s", err, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("producer run did not stop after SIGTERM\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "9999") && strings.Contains(stderr.String(), "nhs_number") {
		t.Error("the log mentions NHS numbers")
	}
}

// TestDryRunOutAndRefused: `export --dry-run --out FILE` writes the file the receiver would get, under
// the name it would get, and stores nothing; a record the receiver would refuse is left out, stays
// queued and is listed by `producer refused`, by UUID only.
func TestDryRunOutAndRefused(t *testing.T) {
	s := newStack(t)
	s.mustRun("seed", "--records", "200", "--seed", "5")
	var refusedUUID, nhsNumber string
	if err := s.db().QueryRow(t.Context(), `
		UPDATE vaccination_records r SET dose_sequence = 12, updated_at = now()
		FROM programmes p, patients pa
		WHERE p.id = r.programme_id AND p.code = 'HPV' AND pa.id = r.patient_id
		  AND r.id = (SELECT min(r2.id) FROM vaccination_records r2 JOIN programmes p2 ON p2.id = r2.programme_id
		              WHERE p2.code = 'HPV' AND r2.outcome = 'administered' AND NOT r2.draft AND r2.discarded_at IS NULL)
		RETURNING r.uuid::text, pa.nhs_number`).Scan(&refusedUUID, &nhsNumber); err != nil {
		t.Fatal(err)
	}

	file := filepath.Join(t.TempDir(), "preview.csv")
	dry := parseSummaries(t, s.mustRun("export", "--programme", "HPV", "--dry-run", "--out", file))
	if len(dry) != 1 || dry[0].Status != "dry_run" || dry[0].Refused != 1 || dry[0].RefusedByRule["dose_sequence"] != 1 {
		t.Fatalf("dry run %+v", dry)
	}
	if p, err := dps.ParseFileName(dry[0].Filename); err != nil || p.Programme != "HPV" || p.SenderODS != "X26SBX" {
		t.Fatalf("dry run file name %q: %+v %v", dry[0].Filename, p, err)
	}
	local, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := dps.Check(bytes.NewReader(local)); err != nil || res.Rows != dry[0].Rows || bytes.Contains(local, []byte(refusedUUID)) {
		t.Fatalf("--dry-run --out file: %d rows, %v (refused record present: %v)", res.Rows, err, bytes.Contains(local, []byte(refusedUUID)))
	}
	if out := s.mustRun("refused"); !strings.Contains(out, "no refused records") {
		t.Fatalf("a dry run recorded a refusal: %s", out)
	}

	got := parseSummaries(t, s.mustRun("export", "--programme", "HPV"))
	if len(got) != 1 || got[0].Status != "created" || got[0].Refused != 1 || got[0].Rows != dry[0].Rows {
		t.Fatalf("export %+v, want the dry run's %d rows and 1 refused", got, dry[0].Rows)
	}
	lines := strings.Split(strings.TrimSpace(s.mustRun("refused", "--json")), "\n")
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil || len(lines) != 1 {
		t.Fatalf("refused --json: %q %v", lines, err)
	}
	if line["record_uuid"] != refusedUUID || line["programme"] != "HPV" || line["rule"] != "dose_sequence" || line["field"] != "DOSE_SEQUENCE" {
		t.Fatalf("refused --json: %v", line)
	}
	table := s.mustRun("refused", "--programme", "HPV")
	if !strings.Contains(table, refusedUUID) || !strings.Contains(table, "dose_sequence") || strings.Contains(table, nhsNumber) {
		t.Fatalf("refused table:\n%s", table)
	}
	if out := s.mustRun("refused", "--programme", "FLU"); !strings.Contains(out, "no refused records") {
		t.Fatalf("refused --programme FLU: %s", out)
	}
	if _, _, code := s.run(s.env(), "refused", "--programme", "hpv"); code != 2 {
		t.Fatalf("refused --programme hpv: exit %d, want 2", code)
	}
	if n := s.count(`SELECT count(*) FROM dps_pending_records p JOIN vaccination_records r ON r.id = p.vaccination_record_id WHERE r.uuid::text = '` + refusedUUID + `'`); n != 1 {
		t.Fatalf("refused record queued %d times, want 1", n)
	}
	if _, errOut, code := s.run(append(s.env(), "DPS_SENDER_ODS_CODE=X_1"), "export", "--programme", "HPV"); code != 2 || !strings.Contains(errOut, "DPS_SENDER_ODS_CODE") {
		t.Fatalf("bad DPS_SENDER_ODS_CODE: exit %d, %s", code, errOut)
	}
}

// TestSenderODSCodeOnlyWhereFilesAreBuilt: DPS_SENDER_ODS_CODE names every file, so the commands that
// build files refuse to start without it, before they connect to anything; the others (a new user's
// migrate and seed first of all) run without it.
func TestSenderODSCodeOnlyWhereFilesAreBuilt(t *testing.T) {
	s := newStack(t)
	noCode := slices.DeleteFunc(s.env(), func(kv string) bool { return strings.HasPrefix(kv, "DPS_SENDER_ODS_CODE=") })
	for _, args := range [][]string{{"migrate"}, {"seed", "--records", "20"}, {"topology"}, {"refused"}} {
		if _, errOut, code := s.run(noCode, args...); code != 0 {
			t.Errorf("producer %v without DPS_SENDER_ODS_CODE: exit %d\n%s", args, code, errOut)
		}
	}
	for _, args := range [][]string{{"export", "--programme", "HPV"}, {"export", "--programme", "HPV", "--dry-run"}, {"run"}} {
		if _, errOut, code := s.run(noCode, args...); code != 2 || !strings.Contains(errOut, "DPS_SENDER_ODS_CODE") {
			t.Errorf("producer %v without DPS_SENDER_ODS_CODE: exit %d, want 2 naming the variable\n%s", args, code, errOut)
		}
	}
	if n := s.count(`SELECT count(*) FROM dps_exports`); n != 0 {
		t.Errorf("%d exports made without a sender ODS code", n)
	}
}
