package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// crashWorld is a database holding one export DPS has downloaded, and a sandbox whose inbox (ours)
// holds the receiver's InfAck and BusAck for it, one record refused.
type crashWorld struct {
	pool     *pgxpool.Pool
	env      []string
	exportID string
	refused  string // the refused record's UUID
	ours     *mesh.Client
}

func newCrashWorld(t *testing.T) *crashWorld {
	t.Helper()
	ctx := t.Context()
	w := &crashWorld{}
	var dbURL string
	dbURL, w.pool = pgtest.NewMigratedDatabase(t)
	_, natsURL := natstest.Run(t)
	sandbox := meshsandbox.New(meshsandbox.Config{SharedKey: cliSharedKey, Mailboxes: []meshsandbox.Mailbox{
		{ID: cliOurMailbox, Password: cliOurPass}, {ID: cliDPSMailbox, Password: cliDPSPass},
	}})
	srv := httptest.NewServer(sandbox.Handler())
	t.Cleanup(srv.Close)
	client := func(mb, pw string) *mesh.Client {
		c, err := mesh.New(mesh.Config{BaseURL: srv.URL, Mailbox: mb, Password: pw, SharedKey: cliSharedKey})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	w.ours = client(cliOurMailbox, cliOurPass)
	dpsClient := client(cliDPSMailbox, cliDPSPass)

	fileName := "HPV_Vaccinations_v5_X26_20261126T11412500.csv"
	msgID, err := w.ours.Send(ctx, mesh.OutboundMessage{To: cliDPSMailbox, WorkflowID: cliWorkflow, FileName: fileName, Body: strings.NewReader("x\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := dpsClient.Acknowledge(ctx, msgID); err != nil {
		t.Fatal(err)
	}
	w.exportID = uuid.NewString()
	var uuids []string
	rows, err := w.pool.Query(ctx, `
		WITH p AS (INSERT INTO programmes (code, name) VALUES ('HPV', 'HPV') RETURNING id),
		     tm AS (INSERT INTO teams (name, ods_code) VALUES ('Team', 'RYG') RETURNING id),
		     pa AS (INSERT INTO patients (given_name, family_name, date_of_birth) VALUES ('Test', 'Patient', '2011-01-01') RETURNING id),
		     x AS (INSERT INTO dps_exports (id, programme_id, filename, status, row_count, mesh_message_id, sent_at, acknowledged_at)
		           SELECT $1, p.id, $2, 'acknowledged', 3, $3, now(), now() FROM p RETURNING id, programme_id),
		     r AS (INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, outcome, performed_at)
		           SELECT gen_random_uuid(), x.programme_id, pa.id, tm.id, 'administered', now()
		           FROM x, pa, tm, generate_series(1, 3) RETURNING id, uuid, updated_at),
		     l AS (INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
		           SELECT $1, r.id, r.updated_at, 'new' FROM r RETURNING vaccination_record_id)
		SELECT r.uuid::text FROM r JOIN l ON l.vaccination_record_id = r.id ORDER BY r.id`,
		w.exportID, fileName, msgID)
	if err != nil {
		t.Fatal(err)
	}
	if uuids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || len(uuids) != 3 {
		t.Fatalf("fixture: %v (%d records)", err, len(uuids))
	}
	w.refused = uuids[1]

	var inf, busAck bytes.Buffer
	if err := dps.WriteInfAck(&inf, dps.InfAck{MessageHeaderID: "f1", Success: true, ResponseCode: dps.InfAckSuccessCode,
		ResponseDisplay: dps.InfAckSuccessDisplay, ReceivedTime: "20261126T11450000"}); err != nil {
		t.Fatal(err)
	}
	if err := dps.WriteBusAck(&busAck, "f1", "20261126T11450000", []dps.BusAckRow{{Row: 2, Refused: true, UniqueID: w.refused,
		UniqueIDURI: "https://example.org/vaccination-records", Diagnostic: "Immunization resource version mismatch"}}); err != nil {
		t.Fatal(err)
	}
	for _, reply := range []struct {
		kind string
		body []byte
	}{{dps.KindInfAck, inf.Bytes()}, {dps.KindBusAck, busAck.Bytes()}} { // in the receiver's order
		if _, err := dpsClient.Send(ctx, mesh.OutboundMessage{To: cliOurMailbox, WorkflowID: cliWorkflow,
			FileName: dps.AckFileNameFor(fileName, reply.kind, "20261126T11450000"), Body: bytes.NewReader(reply.body)}); err != nil {
			t.Fatal(err)
		}
	}
	w.env = []string{"DATABASE_URL=" + dbURL, "NATS_URL=" + natsURL, "MESH_JOBS_ENABLED=true",
		"MESH_BASE_URL=" + srv.URL, "MESH_MAILBOX=" + cliOurMailbox, "MESH_PASSWORD=" + cliOurPass,
		"MESH_SHARED_KEY=" + cliSharedKey, "MESH_DPS_MAILBOX=" + cliDPSMailbox,
		"TRACKER_INBOX_INTERVAL=200ms", "TRACKER_POLL_INTERVAL=1s"}
	return w
}

func (w *crashWorld) status(t *testing.T) string {
	t.Helper()
	var s string
	if err := w.pool.QueryRow(t.Context(), `SELECT status FROM dps_exports WHERE id = $1`, w.exportID).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (w *crashWorld) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(t.Context(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (w *crashWorld) inbox(t *testing.T) int {
	t.Helper()
	ids, err := w.ours.Inbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

// TestInboxCrashes SIGKILLs the tracker at each point where a crash could apply a reply twice or lose
// it (after downloading a reply and before recording it; after recording it and before acknowledging
// it in MESH), then runs two replicas: each reply is applied exactly once.
func TestInboxCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries and runs processes")
	}
	for _, tc := range []struct {
		failpoint string
		// atKill is the export's status when the tracker hangs at the failpoint (on the first message,
		// the InfAck): nothing recorded yet, or recorded but not acknowledged in MESH.
		atKill string
	}{
		{tracking.FailpointInboxAfterDownload, "acknowledged"},
		{tracking.FailpointInboxAfterRecord, "received"},
	} {
		t.Run(tc.failpoint, func(t *testing.T) {
			w := newCrashWorld(t)
			crashing := startTracker(t, append(w.env, "DPS_FAILPOINT="+tc.failpoint, "DPS_FAILPOINT_HANG=true"))
			eventually(t, "the tracker to stop at "+tc.failpoint, func() bool {
				return len(crashing.lines("failpoint "+tc.failpoint+": waiting for SIGKILL")) == 1
			})
			if got := w.status(t); got != tc.atKill {
				t.Fatalf("at the failpoint the export is %s, want %s", got, tc.atKill)
			}
			if n := w.inbox(t); n != 2 {
				t.Fatalf("at the failpoint our inbox lists %d messages, want both replies, unacknowledged", n)
			}
			if err := crashing.cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			<-crashing.done
			_ = crashing.cmd.Wait()

			a, b := startTracker(t, w.env), startTracker(t, w.env)
			eventually(t, "export processed and the inbox empty", func() bool {
				return w.status(t) == "processed" && w.inbox(t) == 0 &&
					w.count(t, `SELECT count(*) FROM dps_inbox_messages WHERE state <> 'acknowledged'`) == 0
			})
			for _, subject := range []string{bus.SubjectExportReceived, bus.SubjectExportProcessed} {
				if n := w.count(t, `SELECT count(*) FROM dps_outbox WHERE subject = $1`, subject); n != 1 {
					t.Errorf("%d %s events, want exactly 1", n, subject)
				}
			}
			if n := w.count(t, `SELECT count(*) FROM dps_export_records WHERE export_id = $1 AND outcome = 'refused'`, w.exportID); n != 1 {
				t.Errorf("%d refused records, want 1", n)
			}
			if n := w.count(t, `SELECT count(*) FROM dps_export_records WHERE export_id = $1 AND outcome = 'accepted'`, w.exportID); n != 2 {
				t.Errorf("%d accepted records, want 2", n)
			}
			if n := w.count(t, `SELECT rows_refused FROM dps_exports WHERE id = $1`, w.exportID); n != 1 {
				t.Errorf("rows_refused %d, want 1", n)
			}
			if code := a.stop(t); code != 0 {
				t.Errorf("replica exited %d", code)
			}
			if code := b.stop(t); code != 0 {
				t.Errorf("replica exited %d", code)
			}
		})
	}
}
