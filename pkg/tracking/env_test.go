package tracking_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// waitTimeout is generous: the race detector on two cores is slow, and nothing here measures speed.
const waitTimeout = 60 * time.Second

// env is one test's world (pkg/testenv: Postgres, NATS with the topology, the MESH sandbox with our
// mailbox and the DPS one) with a client for each mailbox, under the names these tests use.
type env struct {
	*testenv.Env
	dbURL   string
	pool    *pgxpool.Pool
	js      jetstream.JetStream
	sandbox *meshsandbox.Server
	ours    *mesh.Client
	dps     *mesh.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	w := testenv.New(t, testenv.Options{})
	return &env{Env: w, dbURL: w.DBURL, pool: w.Pool, js: w.JS, sandbox: w.Sandbox,
		ours: w.MESHClient(testenv.OurMailbox, testenv.OurPassword, 2),
		dps:  w.MESHClient(testenv.DPSMailbox, testenv.DPSPassword, 2)}
}

// export is a fixture: an export MESH accepted, as the sender leaves it.
type export struct {
	ID, MessageID string
	RecordIDs     []int64
}

// sendExport sends an export's file from our mailbox to DPS through the sandbox and records the
// export as the sender would: accepted with MESH's message id, carrying `records` new records.
func (e *env) sendExport(t *testing.T, records int) export {
	t.Helper()
	x := e.AcceptedExport(t.Context(), records)
	return export{ID: x.ID(), MessageID: x.MessageID, RecordIDs: x.RecordIDs}
}

// publishSent announces the export as the sender's relay would.
func (e *env) publishSent(t *testing.T, x export) {
	t.Helper()
	ev := bus.ExportSent{
		EventID: uuid.NewString(), ExportID: x.ID, Programme: testenv.Programme, Filename: testenv.Filename,
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
		MaxBackoff: 200 * time.Millisecond, UnknownTimeout: time.Hour, InboxInterval: time.Hour,
		Mailbox: ourMailbox, AckSenders: []string{dpsMailbox},
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
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: cfg.Pool, JS: e.js, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
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
func (e *env) newPool(t *testing.T) *pgxpool.Pool { return e.NewPool(t.Context()) }

// actAsDPS downloads and acknowledges every message in the DPS inbox, as DPS does, and returns how
// many it acknowledged.
func (e *env) actAsDPS(t *testing.T) int { return e.ActAsDPS(t.Context()) }

func (e *env) countStatus(t *testing.T, status string) int {
	t.Helper()
	st, err := lifecycle.Parse(status)
	if err != nil {
		t.Fatal(err)
	}
	return e.CountStatus(t.Context(), st)
}

func (e *env) exportStatus(t *testing.T, id string) string {
	t.Helper()
	return e.State(t.Context(), id).Status.String()
}

// outboxCount counts the events enqueued for subject: the transitions themselves, before any
// deduplication by the stream could hide a second one.
func (e *env) outboxCount(t *testing.T, subject string) int {
	return e.OutboxCount(t.Context(), subject)
}

// unpublished counts outbox rows not yet published.
func (e *env) unpublished(t *testing.T) int64 { return e.Unpublished(t.Context()) }

// streamCount counts the messages stream holds on subject.
func (e *env) streamCount(t *testing.T, stream, subject string) uint64 {
	return e.StreamCount(t.Context(), stream, subject)
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
