package tracking_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const (
	sharedKey   = "TestKey"
	ourMailbox  = "X26OURS1"
	ourPassword = "our-password"
	dpsMailbox  = "X26DPS01"
	dpsPassword = "dps-password"
	workflowID  = "DPS_VACCINATIONS"
	// waitTimeout is generous: the race detector on two cores is slow, and nothing here measures speed.
	waitTimeout = 60 * time.Second
)

// env is one test's world: Postgres, NATS with the topology, the MESH sandbox with our mailbox and
// the DPS one, and a client for each.
type env struct {
	dbURL   string
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	sandbox *meshsandbox.Server
	meshURL string
	ours    *mesh.Client
	dps     *mesh.Client

	programmeID int64
	teamID      int64
	patientID   int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	e := &env{}
	e.dbURL, e.pool = pgtest.NewMigratedDatabase(t)
	_, natsURL := natstest.Run(t)
	_, e.js = natstest.Connect(t, natsURL)
	if err := bus.EnsureTopology(ctx, e.js); err != nil {
		t.Fatalf("ensure topology: %v", err)
	}

	e.sandbox = meshsandbox.New(meshsandbox.Config{
		SharedKey: sharedKey,
		Mailboxes: []meshsandbox.Mailbox{
			{ID: ourMailbox, Password: ourPassword},
			{ID: dpsMailbox, Password: dpsPassword, Workflows: []string{workflowID}},
		},
	})
	srv := httptest.NewServer(e.sandbox.Handler())
	t.Cleanup(srv.Close)
	e.meshURL = srv.URL
	e.ours = newClient(t, srv.URL, ourMailbox, ourPassword)
	e.dps = newClient(t, srv.URL, dpsMailbox, dpsPassword)

	err := e.pool.QueryRow(ctx, `INSERT INTO programmes (code, name) VALUES ('HPV', 'Human papillomavirus') RETURNING id`).Scan(&e.programmeID)
	if err != nil {
		t.Fatalf("insert programme: %v", err)
	}
	if err := e.pool.QueryRow(ctx, `INSERT INTO teams (name, ods_code) VALUES ('Test team', 'RYG') RETURNING id`).Scan(&e.teamID); err != nil {
		t.Fatalf("insert team: %v", err)
	}
	// A made-up patient: the tracker never reads patient data; the row exists for the foreign keys.
	if err := e.pool.QueryRow(ctx, `INSERT INTO patients (given_name, family_name, date_of_birth)
		VALUES ('Test', 'Patient', '2011-01-01') RETURNING id`).Scan(&e.patientID); err != nil {
		t.Fatalf("insert patient: %v", err)
	}
	return e
}

func newClient(t *testing.T, url, mailbox, password string) *mesh.Client {
	t.Helper()
	c, err := mesh.New(mesh.Config{
		BaseURL: url, Mailbox: mailbox, Password: password, SharedKey: sharedKey,
		MaxRetries: 2, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("mesh client: %v", err)
	}
	return c
}

// export is a fixture: an export MESH accepted, as the sender leaves it.
type export struct {
	ID, MessageID string
	RecordIDs     []int64
}

// sendExport sends a small file from our mailbox to DPS through the sandbox and records the export as
// the sender would: status accepted with MESH's message id, carrying `records` new records (taken out
// of dps_pending_records, as the producer does).
func (e *env) sendExport(t *testing.T, records int) export {
	t.Helper()
	ctx := t.Context()
	x := export{ID: uuid.NewString()}
	var err error
	x.MessageID, err = e.ours.Send(ctx, mesh.OutboundMessage{
		To: dpsMailbox, WorkflowID: workflowID, FileName: "Vaccinations-HPV-2024-08-23.csv",
		LocalID: x.ID + ".1", ContentType: "text/csv", Body: strings.NewReader("HEADER\nrow\n"),
	})
	if err != nil {
		t.Fatalf("send export file: %v", err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck
	if _, err := tx.Exec(ctx, `
		INSERT INTO dps_exports (id, programme_id, filename, status, row_count, mesh_message_id, mesh_local_id,
		                         attempts, sent_at)
		VALUES ($1, $2, $3, 'accepted', $4, $5, $6, 1, now())`,
		x.ID, e.programmeID, "Vaccinations-HPV-2024-08-23.csv", records, x.MessageID, x.ID+".1"); err != nil {
		t.Fatalf("insert export: %v", err)
	}
	for range records {
		var id int64
		if err := tx.QueryRow(ctx, `
			INSERT INTO vaccination_records (uuid, programme_id, patient_id, team_id, outcome, performed_at)
			VALUES ($1, $2, $3, $4, 'administered', now()) RETURNING id`,
			uuid.NewString(), e.programmeID, e.patientID, e.teamID).Scan(&id); err != nil {
			t.Fatalf("insert record: %v", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
			SELECT $1, id, updated_at, 'new' FROM vaccination_records WHERE id = $2`, x.ID, id); err != nil {
			t.Fatalf("link record: %v", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM dps_pending_records WHERE vaccination_record_id = $1`, id); err != nil {
			t.Fatalf("dequeue record: %v", err)
		}
		x.RecordIDs = append(x.RecordIDs, id)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return x
}

// publishSent announces the export as the sender's relay would.
func (e *env) publishSent(t *testing.T, x export) {
	t.Helper()
	ev := bus.ExportSent{
		EventID: uuid.NewString(), ExportID: x.ID, Programme: "HPV", Filename: "Vaccinations-HPV-2024-08-23.csv",
		MeshMessageID: x.MessageID, LocalID: x.ID + ".1", Attempt: 1, SentAt: time.Now().UTC(),
	}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportSent, "sent:"+x.ID, ev); err != nil {
		t.Fatalf("publish sent: %v", err)
	}
}

// trackerConfig is a fast configuration for tests: polls every 50 ms, backs off to 200 ms at most.
func (e *env) trackerConfig(pool *pgxpool.Pool, log *slog.Logger) tracking.Config {
	return tracking.Config{
		Pool: pool, JS: e.js, MESH: e.ours, JobsEnabled: true,
		PollInterval: 50 * time.Millisecond, HandshakeInterval: time.Hour, BatchSize: 10,
		MaxBackoff: 200 * time.Millisecond, UnknownTimeout: time.Hour,
		HandshakeRetry: 20 * time.Millisecond, ShutdownGrace: 10 * time.Second,
		Logger: log, Metrics: tracking.NewMetrics(prometheus.NewRegistry(), pool, log),
	}
}

// start runs the tracker and an outbox relay (as `tracker run` does) until the test ends; the test
// fails if Run returns an error.
func (e *env) start(t *testing.T, cfg tracking.Config) *tracking.Tracker {
	t.Helper()
	tr, err := tracking.New(cfg)
	if err != nil {
		t.Fatalf("new tracker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	relay := outbox.NewRelay(cfg.Pool, e.js, slog.New(slog.DiscardHandler), outbox.WithInterval(50*time.Millisecond))
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = tr.Run(ctx) })
	wg.Go(func() { _ = relay.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("tracker run: %v", runErr)
		}
	})
	return tr
}

// newPool opens a separate pool on the test database, as a separate replica would have.
func (e *env) newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	p, err := store.Connect(t.Context(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// actAsDPS downloads and acknowledges every message in the DPS inbox, as DPS does, and returns how
// many it acknowledged.
func (e *env) actAsDPS(t *testing.T) int {
	t.Helper()
	ctx := t.Context()
	ids, err := e.dps.Inbox(ctx)
	if err != nil {
		t.Fatalf("DPS inbox: %v", err)
	}
	for _, id := range ids {
		d, err := e.dps.Download(ctx, id)
		if err != nil {
			t.Fatalf("DPS download %s: %v", id, err)
		}
		if _, err := io.Copy(io.Discard, d.Body); err != nil {
			t.Fatalf("DPS download %s: %v", id, err)
		}
		d.Body.Close()
		if err := e.dps.Acknowledge(ctx, id); err != nil {
			t.Fatalf("DPS acknowledge %s: %v", id, err)
		}
	}
	return len(ids)
}

func (e *env) countStatus(t *testing.T, status string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_exports WHERE status = $1`, status).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) exportStatus(t *testing.T, id string) string {
	t.Helper()
	var s string
	if err := e.pool.QueryRow(t.Context(), `SELECT status FROM dps_exports WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// outboxCount counts the events enqueued for subject: the transitions themselves, before any
// deduplication by the stream could hide a second one.
func (e *env) outboxCount(t *testing.T, subject string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_outbox WHERE subject = $1`, subject).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// unpublished counts outbox rows not yet published.
func (e *env) unpublished(t *testing.T) int64 {
	t.Helper()
	n, err := outbox.Pending(t.Context(), e.pool)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// streamCount counts the messages DPS_EVENTS holds on subject.
func (e *env) streamCount(t *testing.T, stream, subject string) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// waitFor polls cond until it holds or the generous timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counterValue reads one counter of a vector.
func counterValue(t *testing.T, c *prometheus.CounterVec, label string) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.WithLabelValues(label).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// logBuffer is a goroutine-safe log sink for asserting on log lines.
type logBuffer struct{ proctest.Buffer }

// lines returns the JSON log lines at level that contain substr.
func (b *logBuffer) lines(level, substr string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, fmt.Sprintf(`"level":%q`, level)) && strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

func newJSONLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// histogramCount reads how many observations the sent-to-acknowledged histogram holds.
func histogramCount(t *testing.T, m *tracking.Metrics) uint64 {
	t.Helper()
	var d dto.Metric
	if err := m.SentToAcknowledged.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetHistogram().GetSampleCount()
}
