// Package testenv builds the world a test of the pipeline's services needs, out of real parts: an
// embedded NATS server with the pipeline's topology, a fresh migrated Postgres database with the demo
// reference data, and our MESH sandbox over httptest with our mailbox and the DPS one. It makes the rows
// a test starts from the way the pipeline leaves them, with records from pkg/demodata: an export as the
// producer leaves it (CreateExport, AddExport) or as the sender leaves it (AcceptedExport). It is
// imported by tests and benchmarks only.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Sandbox identities. The shared key and passwords are test values, never real ones.
const (
	SharedKey   = "TestKey"
	OurMailbox  = "X26ABC1"
	OurPassword = "password"
	DPSMailbox  = "X26DPS1"
	DPSPassword = "dps-password"
	WorkflowID  = "DPSFULL"
	// RouteMailbox and RouteWorkflowID are a second DPS destination, for per-programme routes.
	RouteMailbox    = "X26DPS2"
	RoutePassword   = "dps2-password"
	RouteWorkflowID = "IMMS"
	Programme       = "HPV"
	Filename        = "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv"
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
}

// Options adjust New.
type Options struct {
	// SenderAckWait is the sender consumer's ack wait (and so its first redelivery delay); default 2s.
	SenderAckWait time.Duration
	// AckWait is the producer's and tracker's consumers'; default pkg/bus's.
	AckWait time.Duration
}

// New starts NATS, makes the database with the reference data and starts the sandbox; everything
// stops at cleanup.
func New(tb testing.TB, o Options) *Env {
	tb.Helper()
	if o.SenderAckWait <= 0 {
		o.SenderAckWait = 2 * time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = bus.NewTopology().AckWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &Env{tb: tb}
	_, e.NATSURL = natstest.Run(tb)
	e.NC, e.JS = natstest.Connect(tb, e.NATSURL)
	if err := bus.EnsureTopology(ctx, e.JS, bus.WithAckWait(o.SenderAckWait, o.AckWait)); err != nil {
		tb.Fatalf("testenv: topology: %v", err)
	}
	objects, err := bus.ExportStore(ctx, e.JS)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	e.Objects = objects
	e.DBURL, e.Pool = pgtest.NewMigratedDatabase(tb)
	if _, err := demodata.Reference(ctx, e.Pool); err != nil {
		tb.Fatalf("testenv: reference data: %v", err)
	}

	e.Sandbox = meshsandbox.New(meshsandbox.Config{
		SharedKey: SharedKey,
		Mailboxes: []meshsandbox.Mailbox{
			{ID: OurMailbox, Password: OurPassword, Name: "SAIS team"},
			{ID: DPSMailbox, Password: DPSPassword, Workflows: []string{WorkflowID}, Name: "DPS"},
			{ID: RouteMailbox, Password: RoutePassword, Workflows: []string{RouteWorkflowID}, Name: "DPS (routed)"},
		},
	})
	srv := httptest.NewServer(e.Sandbox.Handler())
	tb.Cleanup(srv.Close)
	e.MESHURL = srv.URL
	return e
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

// NewPool opens a separate pool on the test's database, as another replica would have.
func (e *Env) NewPool(ctx context.Context) *pgxpool.Pool {
	e.tb.Helper()
	p, err := store.Connect(ctx, e.DBURL)
	if err != nil {
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(p.Close)
	return p
}

// AddRecords adds n administered HPV vaccination records with pkg/demodata, in one transaction (the
// queue trigger makes each a candidate, as the recording application's writes do), and returns their
// ids.
func (e *Env) AddRecords(ctx context.Context, n int) []int64 {
	e.tb.Helper()
	ids, err := demodata.AddRecords(ctx, e.Pool, make([]demodata.RecordSpec, n))
	if err != nil {
		e.tb.Fatalf("testenv: %v", err)
	}
	return ids
}

// Export is an export made by CreateExport or AcceptedExport.
type Export struct {
	Ready     bus.ExportReady
	Body      []byte
	RecordIDs []int64
	// MessageID is MESH's message id, for an AcceptedExport.
	MessageID string
}

// ID is the export's id.
func (x Export) ID() string { return x.Ready.ExportID }

// CreateExport writes what the producer would: `records` new vaccination records, the export row,
// the links, the records taken out of the pending set, and a file in the Object Store. It does not
// publish.
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
	ids := e.AddRecords(ctx, records)
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_exports (id, programme_id, filename, row_count, object_name, size_bytes, sha256)
			SELECT $1, id, $3, $4, $5, $6, $7 FROM programmes WHERE code = $2`,
			id, Programme, ready.Filename, records, ready.ObjectName, ready.SizeBytes, ready.SHA256); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
			SELECT $1, id, updated_at, 'new' FROM vaccination_records WHERE id = ANY($2)`, id, ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, ids)
		return err
	})
	if err != nil {
		e.tb.Fatalf("testenv: create export: %v", err)
	}
	if _, err := bus.PutExport(ctx, e.Objects, ready.ObjectName, strings.NewReader(b.String()),
		bus.ExportMeta{ExportID: id, Programme: Programme, Filename: ready.Filename}); err != nil {
		e.tb.Fatalf("testenv: put export: %v", err)
	}
	return Export{Ready: ready, Body: body, RecordIDs: ids}
}

// Publish publishes dps.export.ready for r, with the export id as Nats-Msg-Id.
func (e *Env) Publish(ctx context.Context, r bus.ExportReady) {
	e.tb.Helper()
	if _, err := bus.Publish(ctx, e.JS, bus.SubjectExportReady, r.ExportID, r); err != nil {
		e.tb.Fatalf("testenv: publish ready: %v", err)
	}
}

// AddExport is CreateExport then Publish.
func (e *Env) AddExport(ctx context.Context, records int) Export {
	e.tb.Helper()
	x := e.CreateExport(ctx, records)
	e.Publish(ctx, x.Ready)
	return x
}

// AcceptedExport is an export as the sender leaves it: CreateExport, its file sent from our mailbox
// to DPS's through the sandbox, and the export recorded accepted under MESH's message id with its
// first attempt. Neither dps.export.ready nor dps.export.sent is published or enqueued: the test
// announces what it needs.
func (e *Env) AcceptedExport(ctx context.Context, records int) Export {
	e.tb.Helper()
	x := e.CreateExport(ctx, records)
	client := e.MESHClient(OurMailbox, OurPassword, 2)
	localID := x.ID() + ".1"
	var err error
	x.MessageID, err = client.Send(ctx, mesh.OutboundMessage{
		To: DPSMailbox, WorkflowID: WorkflowID, FileName: x.Ready.Filename, LocalID: localID,
		ContentType: "text/csv", Body: strings.NewReader(string(x.Body)),
	})
	if err != nil {
		e.tb.Fatalf("testenv: send export file: %v", err)
	}
	err = pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_export_attempts (export_id, attempt, local_id, outcome, mesh_message_id, finished_at)
			VALUES ($1, 1, $2, 'accepted', $3, now())`, x.ID(), localID, x.MessageID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			UPDATE dps_exports SET status = $2, mesh_message_id = $3, mesh_local_id = $4, attempts = 1, sent_at = now()
			WHERE id = $1`, x.ID(), lifecycle.Accepted, x.MessageID, localID)
		return err
	})
	if err != nil {
		e.tb.Fatalf("testenv: record export accepted: %v", err)
	}
	return x
}

// ActAsDPS downloads and acknowledges every message in the DPS inbox, as DPS does, and returns how
// many it acknowledged.
func (e *Env) ActAsDPS(ctx context.Context) int {
	e.tb.Helper()
	dps := e.MESHClient(DPSMailbox, DPSPassword, 2)
	ids, err := dps.Inbox(ctx)
	if err != nil {
		e.tb.Fatalf("testenv: DPS inbox: %v", err)
	}
	for _, id := range ids {
		d, err := dps.Download(ctx, id)
		if err != nil {
			e.tb.Fatalf("testenv: DPS download %s: %v", id, err)
		}
		_, err = io.Copy(io.Discard, d.Body)
		d.Body.Close()
		if err != nil {
			e.tb.Fatalf("testenv: DPS download %s: %v", id, err)
		}
		if err := dps.Acknowledge(ctx, id); err != nil {
			e.tb.Fatalf("testenv: DPS acknowledge %s: %v", id, err)
		}
	}
	return len(ids)
}

// ExportState is an export's row as the services leave it.
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
		e.tb.Fatalf("testenv: export %s: %v", id, err)
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

// OutboxCount counts the events enqueued for subject: the transitions themselves, before any
// deduplication by the stream could hide a second one.
func (e *Env) OutboxCount(ctx context.Context, subject string) int {
	e.tb.Helper()
	var n int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM dps_outbox WHERE subject = $1`, subject).Scan(&n); err != nil {
		e.tb.Fatal(err)
	}
	return n
}

// Unpublished counts outbox rows not yet published.
func (e *Env) Unpublished(ctx context.Context) int64 {
	e.tb.Helper()
	n, err := outbox.Pending(ctx, e.Pool)
	if err != nil {
		e.tb.Fatal(err)
	}
	return n
}

// StreamCount counts the messages stream holds on subject.
func (e *Env) StreamCount(ctx context.Context, stream, subject string) uint64 {
	e.tb.Helper()
	s, err := e.JS.Stream(ctx, stream)
	if err != nil {
		e.tb.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.tb.Fatal(err)
	}
	return info.State.Subjects[subject]
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
