package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/export"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// unreachableDB proves the dead-letter commands never touch Postgres: nothing listens there.
const unreachableDB = "postgres://nobody@127.0.0.1:1/none?sslmode=disable"

// payloadMarker is in every request payload the tests dead-letter; the table and plain --json must never
// print it.
const payloadMarker = "payload-marker-7f3a"

// runDL runs the built producer with NATS at natsURL and an unreachable database.
func runDL(t *testing.T, natsURL string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, producerBinary(t), args...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+unreachableDB, "NATS_URL="+natsURL, "LOG_FORMAT=json", "LOG_LEVEL=warn", "DPS_FAILPOINT=", "DPS_SENDER_ODS_CODE=X26SBX")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("run producer %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func TestDeadLetterUsageErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"unknown stage", []string{"dead-letters", "--stage", "exporter"}, 2},
		{"payload without json", []string{"dead-letters", "--show-payload"}, 2},
		{"bad since", []string{"dead-letters", "--since", "yesterday"}, 2},
		{"negative since", []string{"dead-letters", "--since", "-1h"}, 2},
		{"negative limit", []string{"dead-letters", "--limit", "-1"}, 2},
		{"unexpected argument", []string{"dead-letters", "5"}, 2},
		{"redrive nothing", []string{"redrive"}, 2},
		{"redrive not a number", []string{"redrive", "12", "abc"}, 2},
		{"redrive zero", []string{"redrive", "0"}, 2},
		{"help", []string{"dead-letters", "-h"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := runDL(t, "nats://127.0.0.1:1", c.args...)
			if code != c.want {
				t.Fatalf("exit %d, want %d\n%s", code, c.want, errOut)
			}
		})
	}
}

// dlFixture is a NATS server and a migrated database with dead letters made by the real request
// consumer (an unknown programme, an invalid request) and a sender dead letter.
type dlFixture struct {
	natsURL  string
	js       jetstream.JetStream
	consumer *export.RequestConsumer
	pool     *pgxpool.Pool

	unknownSeq, invalidSeq, senderSeq uint64
	unknownID                         string
}

func newDLFixture(t *testing.T) *dlFixture {
	t.Helper()
	ctx := t.Context()
	_, natsURL := natstest.Run(t)
	_, js := natstest.Connect(t, natsURL)
	if err := bus.EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	_, pool := pgtest.NewMigratedDatabase(t)
	objects, err := bus.ExportStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	exporter, err := export.New(export.Config{Pool: pool, Objects: objects, SenderODS: "X26SBX"})
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := export.NewRequestConsumer(export.RequestConsumerConfig{Exporter: exporter, JS: js,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f := &dlFixture{natsURL: natsURL, js: js, unknownID: "req-unknown-programme", pool: pool, consumer: consumer}
	at := time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)

	// A valid request for a programme the database does not know yet (one DPS has a vaccine type for):
	// the consumer dead-letters it.
	req := bus.ExportRequest{RequestID: f.unknownID, Programme: "MENACWY", RequestedBy: payloadMarker, RequestedAt: at}
	if _, err := bus.Publish(ctx, js, bus.SubjectExportRequest, req.RequestID, req); err != nil {
		t.Fatal(err)
	}
	f.handleNextRequest(t)
	f.unknownSeq = lastSeqOf(t, js, bus.StreamDeadLetter)

	// A request that breaks the schema (lower-case programme), published around bus.Publish's check.
	bad := fmt.Appendf(nil, `{"request_id":"req-bad","programme":"hpv","requested_by":%q,"requested_at":"2024-08-23T02:00:00Z"}`, payloadMarker)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: bus.SubjectExportRequest, Data: bad}, jetstream.WithMsgID("req-bad")); err != nil {
		t.Fatal(err)
	}
	f.handleNextRequest(t)
	f.invalidSeq = lastSeqOf(t, js, bus.StreamDeadLetter)

	// A batch the sender gave up on.
	exportID := "2b0f4a9e-51c3-4b8e-a0f1-6c7d8e9f0a1b"
	ready := bus.ExportReady{ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv",
		ObjectName: exportID, SizeBytes: 10, SHA256: strings.Repeat("ab", 32), Rows: 1, CreatedAt: at}
	if _, err := bus.Publish(ctx, js, bus.SubjectExportReady, exportID, ready); err != nil {
		t.Fatal(err)
	}
	msg := nextMsg(t, js, bus.StreamBatches, bus.ConsumerSender)
	if err := bus.DeadLetter(ctx, js, bus.StageSender, msg, "MESH refused the file: status 417"); err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
	f.senderSeq = lastSeqOf(t, js, bus.StreamDeadLetter)
	if f.unknownSeq != 1 || f.invalidSeq != 2 || f.senderSeq != 3 {
		t.Fatalf("dead letters at %d, %d, %d; want 1, 2, 3", f.unknownSeq, f.invalidSeq, f.senderSeq)
	}
	return f
}

// handleNextRequest runs the producer's request consumer on the next request, as `producer run` does.
func (f *dlFixture) handleNextRequest(t *testing.T) {
	t.Helper()
	f.consumer.Handle(t.Context(), nextMsg(t, f.js, bus.StreamRequests, bus.ConsumerProducer))
}

func nextMsg(t *testing.T, js jetstream.JetStream, stream, consumer string) jetstream.Msg {
	t.Helper()
	c, err := js.Consumer(t.Context(), stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("next on %s/%s: %v", stream, consumer, err)
	}
	return msg
}

func lastSeqOf(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestDeadLettersCommand(t *testing.T) {
	f := newDLFixture(t)

	out, errOut, code := runDL(t, f.natsURL, "dead-letters")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	t.Logf("producer dead-letters:\n%s", out)
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 5 || !strings.HasPrefix(rows[0], "SEQ") || !strings.HasPrefix(rows[4], "note: ") {
		t.Fatalf("want header, 3 rows and the failed-export note:\n%s", out)
	}
	for i, want := range []string{
		"1 request dps.export.request DPS_REQUESTS/1 " + `unknown programme "MENACWY"`,
		"2 request dps.export.request DPS_REQUESTS/2 invalid message on dps.export.request",
		"3 sender dps.export.ready DPS_BATCHES/1 MESH refused the file",
	} {
		fields := strings.Fields(rows[i+1])
		// Drop TIME (column 2) and BYTES (column 6) to compare the rest.
		got := strings.Join(append([]string{fields[0]}, append(fields[2:5], fields[6:]...)...), " ")
		if !strings.HasPrefix(got, want) {
			t.Errorf("row %d: %q, want prefix %q", i+1, got, want)
		}
	}
	if strings.Contains(out, payloadMarker) {
		t.Fatalf("the table printed payload content:\n%s", out)
	}

	tests := []struct {
		name      string
		args      []string
		wantSeqs  []float64
		payload   bool
		emptyText bool
	}{
		{"request stage", []string{"--stage", "request", "--json"}, []float64{1, 2}, false, false},
		{"sender stage", []string{"--stage", "sender", "--json"}, []float64{3}, false, false},
		{"tracker stage is empty", []string{"--stage", "tracker", "--json"}, nil, false, false},
		{"limit keeps the newest", []string{"--limit", "2", "--json"}, []float64{2, 3}, false, false},
		{"since a duration", []string{"--since", "1h", "--json"}, []float64{1, 2, 3}, false, false},
		{"since a future time", []string{"--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--json"}, nil, false, false},
		{"show payload", []string{"--stage", "request", "--json", "--show-payload"}, []float64{1, 2}, true, false},
		{"nothing in the table", []string{"--stage", "tracker"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runDL(t, f.natsURL, append([]string{"dead-letters"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, errOut)
			}
			if tt.emptyText {
				if strings.TrimSpace(out) != "no dead letters match" {
					t.Fatalf("got %q", out)
				}
				return
			}
			lines := jsonLines(t, out)
			var seqs []float64
			for _, l := range lines {
				seqs = append(seqs, l["seq"].(float64))
				if _, ok := l["payload_bytes"]; !ok || l["original_stream"] == nil {
					t.Errorf("line lacks fields: %v", l)
				}
			}
			if fmt.Sprint(seqs) != fmt.Sprint(tt.wantSeqs) {
				t.Fatalf("seqs %v, want %v", seqs, tt.wantSeqs)
			}
			if got := strings.Contains(out, payloadMarker); got != tt.payload {
				t.Fatalf("payload printed %v, want %v:\n%s", got, tt.payload, out)
			}
		})
	}
}

// TestRedriveCommand: an invalid request is refused (exit 1, nothing published); a valid one
// dead-lettered for an unknown programme goes back once, however often it is re-driven, and once the
// programme exists the producer exports it instead of dead-lettering it again.
func TestRedriveCommand(t *testing.T) {
	f := newDLFixture(t)
	requestsBefore := lastSeqOf(t, f.js, bus.StreamRequests)

	out, errOut, code := runDL(t, f.natsURL, "redrive", fmt.Sprint(f.invalidSeq))
	t.Logf("producer redrive %d:\n%s%s", f.invalidSeq, out, errOut)
	if code != 1 {
		t.Fatalf("invalid request: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if !strings.HasPrefix(out, "2: refused: payload still invalid for dps.export.request") || !strings.Contains(out, "programme") {
		t.Fatalf("refusal does not name the field: %q", out)
	}
	if !strings.Contains(errOut, "1 of 1 dead letters not re-driven") {
		t.Fatalf("stderr: %q", errOut)
	}
	if n := lastSeqOf(t, f.js, bus.StreamRequests); n != requestsBefore {
		t.Fatalf("refused re-drive published (DPS_REQUESTS at %d, was %d)", n, requestsBefore)
	}

	// The cause is fixed: the programme is added. Re-drive twice in one call, then again in another.
	if _, err := f.pool.Exec(t.Context(), `INSERT INTO programmes (code, name) VALUES ('MENACWY', 'MenACWY')`); err != nil {
		t.Fatal(err)
	}
	seq := fmt.Sprint(f.unknownSeq)
	out, errOut, code = runDL(t, f.natsURL, "redrive", seq, seq)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("producer redrive %s %s:\n%s", seq, seq, out)
	want := fmt.Sprintf("1: published to dps.export.request as DPS_REQUESTS seq %d (", requestsBefore+1)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], want) ||
		lines[1] != fmt.Sprintf("1: duplicate: already re-driven to dps.export.request as DPS_REQUESTS seq %d within the duplicate window; not published again", requestsBefore+1) {
		t.Fatalf("got:\n%s\nwant first line prefix %q then a duplicate", out, want)
	}
	if out, _, code := runDL(t, f.natsURL, "redrive", seq); code != 0 || !strings.Contains(out, "duplicate") {
		t.Fatalf("third re-drive: exit %d: %s", code, out)
	}
	if n := lastSeqOf(t, f.js, bus.StreamRequests); n != requestsBefore+1 {
		t.Fatalf("DPS_REQUESTS at %d, want %d: re-driven more than once", n, requestsBefore+1)
	}

	// The producer's durable consumer gets it and now handles it: recorded, not dead-lettered again.
	deadBefore := lastSeqOf(t, f.js, bus.StreamDeadLetter)
	f.handleNextRequest(t)
	if n := lastSeqOf(t, f.js, bus.StreamDeadLetter); n != deadBefore {
		t.Fatalf("the re-driven request was dead-lettered again")
	}
	var programme string
	if err := f.pool.QueryRow(t.Context(), `SELECT programme FROM dps_export_requests WHERE request_id = $1`, f.unknownID).Scan(&programme); err != nil || programme != "MENACWY" {
		t.Fatalf("request %s not recorded by the producer: %q, %v", f.unknownID, programme, err)
	}

	// Sender dead letters get the failed-export note; an unknown sequence fails; mixed runs exit 1.
	out, errOut, code = runDL(t, f.natsURL, "redrive", fmt.Sprint(f.senderSeq), "999")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	t.Logf("producer redrive %d 999:\n%s%s", f.senderSeq, out, errOut)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "3: published to dps.export.ready as DPS_BATCHES seq 2") ||
		!strings.HasPrefix(lines[1], "3: note: if this export is already failed, the sender acks the batch as already failed") ||
		!strings.HasPrefix(lines[2], "999: failed: ") || !strings.Contains(lines[2], "no such sequence") {
		t.Fatalf("got:\n%s", out)
	}
}
