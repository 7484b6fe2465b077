// Package deliverytest builds the world a sender test needs out of real parts: an embedded NATS
// server with the pipeline's topology, a fresh migrated Postgres database, and the MESH sandbox over
// httptest with our mailbox and the DPS one. It makes exports the way the producer leaves them (rows,
// linked records, the CSV in the Object Store, dps.export.ready published), so sender tests do not
// depend on the producer. It must only be imported by tests and benchmarks.
package deliverytest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// Sandbox identities. The shared key and passwords are test values, never real ones.
const (
	SharedKey   = "TestKey"
	OurMailbox  = "X26ABC1"
	OurPassword = "password"
	DPSMailbox  = "X26DPS1"
	DPSPassword = "dps-password"
	WorkflowID  = "DPSFULL"
	Programme   = "HPV"
	Filename    = "Vaccinations-HPV-2024-08-23.csv"
)

// Env is one test's world.
type Env struct {
	tb      testing.TB
	DBURL   string
	Pool    *pgxpool.Pool
	NATSURL string
	NC      *nats.Conn
	JS      jetstream.JetStream
	Objects jetstream.ObjectStore
	Sandbox *meshsandbox.Server
	MESHURL string

	programmeID, teamID, patientID int64
}

// Options adjust New.
type Options struct {
	// SenderAckWait is the sender consumer's ack wait (and so its first redelivery delay); default 2s.
	SenderAckWait time.Duration
}

// New starts NATS, makes the database and starts the sandbox; everything stops at cleanup.
func New(tb testing.TB, o Options) *Env {
	tb.Helper()
	if o.SenderAckWait <= 0 {
		o.SenderAckWait = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &Env{tb: tb}
	_, e.NATSURL = natstest.Run(tb)
	e.NC, e.JS = natstest.Connect(tb, e.NATSURL)
	if err := bus.EnsureTopology(ctx, e.JS, bus.WithAckWait(o.SenderAckWait, o.SenderAckWait)); err != nil {
		tb.Fatalf("topology: %v", err)
	}
	objects, err := bus.ExportStore(ctx, e.JS)
	if err != nil {
		tb.Fatal(err)
	}
	e.Objects = objects
	e.DBURL, e.Pool = pgtest.NewMigratedDatabase(tb)

	e.Sandbox = meshsandbox.New(meshsandbox.Config{
		SharedKey: SharedKey,
		Mailboxes: []meshsandbox.Mailbox{
			{ID: OurMailbox, Password: OurPassword, Name: "SAIS team"},
			{ID: DPSMailbox, Password: DPSPassword, Workflows: []string{WorkflowID}, Name: "DPS"},
		},
	})
	srv := httptest.NewServer(e.Sandbox.Handler())
	tb.Cleanup(srv.Close)
	e.MESHURL = srv.URL

	e.exec(ctx, &e.teamID, `INSERT INTO teams (name, ods_code) VALUES ('SAIS team', 'R1L') RETURNING id`)
	e.exec(ctx, &e.programmeID, `INSERT INTO programmes (code, name) VALUES ($1, 'Human papillomavirus') RETURNING id`, Programme)
	e.exec(ctx, &e.patientID, `INSERT INTO patients (given_name, family_name, date_of_birth) VALUES ('Test', 'Patient', '2010-01-01') RETURNING id`)
	return e
}

func (e *Env) exec(ctx context.Context, into *int64, sql string, args ...any) {
	e.tb.Helper()
	if err := e.Pool.QueryRow(ctx, sql, args...).Scan(into); err != nil {
		e.tb.Fatalf("fixture %q: %v", sql, err)
	}
}

// MESHClient is a client for mailbox on the sandbox with fast retries. maxRetries < 0 disables them.
func (e *Env) MESHClient(mailbox, password string, maxRetries int) *mesh.Client {
	e.tb.Helper()
	c, err := mesh.New(mesh.Config{
		BaseURL: e.MESHURL, Mailbox: mailbox, Password: password, SharedKey: SharedKey,
		MaxRetries: maxRetries, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		RetryBudget: 10 * time.Second,
	})
	if err != nil {
		e.tb.Fatal(err)
	}
	return c
}

// Export is an export made by CreateExport.
type Export struct {
	Ready     bus.ExportReady
	Body      []byte
	RecordIDs []int64
}

// CreateExport writes what the producer would: vaccination records, the export row, the links, the
// records taken out of the pending set, and the CSV in the Object Store. It does not publish.
func (e *Env) CreateExport(ctx context.Context, records int) Export {
	e.tb.Helper()
	id := uuid.NewString()
	var b strings.Builder
	b.WriteString("NHS_NUMBER|PERSON_FORENAME|UNIQUE_ID|ACTION_FLAG\n")
	noise := make([]byte, 8)
	for i := range records {
		_, _ = rand.Read(noise)
		fmt.Fprintf(&b, "999%07d|TEST|%s-%d-%x|new\n", i, id[:8], i, noise)
	}
	body := []byte(b.String())
	sum := sha256.Sum256(body)
	ready := bus.ExportReady{
		ExportID: id, Programme: Programme, Filename: Filename, ObjectName: id,
		SizeBytes: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), Rows: int64(records),
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
	}
	var ids []int64
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_exports (id, programme_id, filename, row_count, object_name, size_bytes, sha256)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			id, e.programmeID, ready.Filename, records, ready.ObjectName, ready.SizeBytes, ready.SHA256); err != nil {
			return err
		}
		for range records {
			var rid int64
			var updated time.Time
			if err := tx.QueryRow(ctx, `
				INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, outcome, performed_at)
				VALUES ($1, $2, $3, $4, 'administered', now()) RETURNING id, updated_at`,
				uuid.NewString(), e.programmeID, e.patientID, e.teamID).Scan(&rid, &updated); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
				VALUES ($1, $2, $3, 'new')`, id, rid, updated); err != nil {
				return err
			}
			ids = append(ids, rid)
		}
		_, err := tx.Exec(ctx, `DELETE FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, ids)
		return err
	})
	if err != nil {
		e.tb.Fatalf("create export: %v", err)
	}
	if _, err := bus.PutExport(ctx, e.Objects, ready.ObjectName, strings.NewReader(b.String()),
		bus.ExportMeta{ExportID: id, Programme: Programme, Filename: ready.Filename}); err != nil {
		e.tb.Fatalf("put export: %v", err)
	}
	return Export{Ready: ready, Body: body, RecordIDs: ids}
}

// Publish publishes dps.export.ready for r, with the export id as Nats-Msg-Id.
func (e *Env) Publish(ctx context.Context, r bus.ExportReady) {
	e.tb.Helper()
	if _, err := bus.Publish(ctx, e.JS, bus.SubjectExportReady, r.ExportID, r); err != nil {
		e.tb.Fatalf("publish ready: %v", err)
	}
}

// AddExport is CreateExport then Publish.
func (e *Env) AddExport(ctx context.Context, records int) Export {
	e.tb.Helper()
	x := e.CreateExport(ctx, records)
	e.Publish(ctx, x.Ready)
	return x
}

// ExportState is an export's row as the sender leaves it.
type ExportState struct {
	Status                                       lifecycle.Status
	MessageID, LocalID, LastError, LastErrorCode string
	Attempts                                     int
}

// State reads an export's row.
func (e *Env) State(ctx context.Context, id string) ExportState {
	e.tb.Helper()
	var s ExportState
	var mid, lid, lerr, lcode *string
	if err := e.Pool.QueryRow(ctx, `SELECT status, mesh_message_id, mesh_local_id, last_error, last_error_code, attempts
		FROM dps_exports WHERE id = $1`, id).Scan(&s.Status, &mid, &lid, &lerr, &lcode, &s.Attempts); err != nil {
		e.tb.Fatalf("export %s: %v", id, err)
	}
	for _, p := range []struct {
		dst *string
		src *string
	}{{&s.MessageID, mid}, {&s.LocalID, lid}, {&s.LastError, lerr}, {&s.LastErrorCode, lcode}} {
		if p.src != nil {
			*p.dst = *p.src
		}
	}
	return s
}

// CountStatus counts exports in a status.
func (e *Env) CountStatus(ctx context.Context, status lifecycle.Status) int {
	e.tb.Helper()
	var n int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM dps_exports WHERE status = $1`, status).Scan(&n); err != nil {
		e.tb.Fatal(err)
	}
	return n
}

// WaitFor polls cond every 20 ms until it holds or the timeout passes (a safety net for a broken
// run, not a performance assertion).
func (e *Env) WaitFor(what string, timeout time.Duration, cond func() bool) {
	e.tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StreamMessages returns every message stored on subject in stream, oldest first.
func (e *Env) StreamMessages(ctx context.Context, stream, subject string) []*jetstream.RawStreamMsg {
	e.tb.Helper()
	s, err := e.JS.Stream(ctx, stream)
	if err != nil {
		e.tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.tb.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		if subject == "" || m.Subject == subject {
			out = append(out, m)
		}
	}
	return out
}

// Events decodes the JSON payloads of StreamMessages into T.
func Events[T any](e *Env, ctx context.Context, stream, subject string) []T {
	e.tb.Helper()
	var out []T
	for _, m := range e.StreamMessages(ctx, stream, subject) {
		var v T
		if err := json.Unmarshal(m.Data, &v); err != nil {
			e.tb.Fatalf("decode %s: %v", subject, err)
		}
		out = append(out, v)
	}
	return out
}

// SandboxByExport groups the messages the sandbox holds from our mailbox by export id (the local id
// before its last dot).
func (e *Env) SandboxByExport() map[string][]meshsandbox.Message {
	out := map[string][]meshsandbox.Message{}
	for _, m := range e.Sandbox.Messages(OurMailbox) {
		if m.From != OurMailbox {
			continue
		}
		id := m.LocalID
		if i := strings.LastIndexByte(id, '.'); i > 0 {
			id = id[:i]
		}
		out[id] = append(out[id], m)
	}
	return out
}

// SenderConsumerConfig is pkg/bus's sender consumer with another ack wait and, when not zero,
// another MaxDeliver.
func SenderConsumerConfig(ackWait time.Duration, maxDeliver int) jetstream.ConsumerConfig {
	for _, c := range bus.NewTopology(bus.WithAckWait(ackWait, ackWait)).Consumers() {
		if c.Config.Durable != bus.ConsumerSender {
			continue
		}
		if maxDeliver != 0 {
			c.Config.MaxDeliver = maxDeliver
			if len(c.Config.BackOff) >= maxDeliver {
				c.Config.BackOff = c.Config.BackOff[:maxDeliver-1]
			}
		}
		return c.Config
	}
	panic("pkg/bus defines no sender consumer")
}

// TuneSenderConsumer updates the sender consumer's ack wait and max deliveries, keeping the rest of
// its definition from pkg/bus.
func (e *Env) TuneSenderConsumer(ctx context.Context, ackWait time.Duration, maxDeliver int) {
	e.tb.Helper()
	if _, err := e.JS.CreateOrUpdateConsumer(ctx, bus.StreamBatches, SenderConsumerConfig(ackWait, maxDeliver)); err != nil {
		e.tb.Fatalf("tune sender consumer: %v", err)
	}
}

// SenderConsumerInfo returns the sender consumer's state.
func (e *Env) SenderConsumerInfo(ctx context.Context) *jetstream.ConsumerInfo {
	e.tb.Helper()
	c, err := e.JS.Consumer(ctx, bus.StreamBatches, bus.ConsumerSender)
	if err != nil {
		e.tb.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.tb.Fatal(err)
	}
	return info
}

// ProcessEnv is the environment for a sender process in this world.
func (e *Env) ProcessEnv() []string {
	return []string{
		"DATABASE_URL=" + e.DBURL,
		"NATS_URL=" + e.NATSURL,
		"HTTP_ADDR=127.0.0.1:0",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"MESH_BASE_URL=" + e.MESHURL,
		"MESH_MAILBOX=" + OurMailbox,
		"MESH_PASSWORD=" + OurPassword,
		"MESH_SHARED_KEY=" + SharedKey,
		"MESH_DPS_MAILBOX=" + DPSMailbox,
		"MESH_DPS_WORKFLOW_ID=" + WorkflowID,
		"MESH_JOBS_ENABLED=true",
	}
}
