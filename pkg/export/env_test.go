package export

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
)

// env is one test's real Postgres database and real NATS server with the production topology.
type env struct {
	t       *testing.T
	url     string
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream
	objects jetstream.ObjectStore
	log     *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Short ack waits: a lost ack under a loaded test machine is redelivered in seconds, not a minute.
	w := testenv.New(t, testenv.Options{SenderAckWait: 5 * time.Second, AckWait: 3 * time.Second})
	return &env{t: t, url: w.DBURL, pool: w.Pool, nc: w.NC, js: w.JS, objects: w.Objects, log: testLogger(t)}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// newPool opens a separate pool on the test database, as a second producer would.
func (e *env) newPool() *pgxpool.Pool {
	e.t.Helper()
	pool, err := store.Connect(e.t.Context(), e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return pool
}

func (e *env) exporter(pool *pgxpool.Pool) *Exporter {
	x, err := New(Config{Pool: pool, Objects: e.objects, Logger: e.log, SenderODS: testSenderODS})
	if err != nil {
		e.t.Fatal(err)
	}
	return x
}

func (e *env) relay(pool *pgxpool.Pool) *outbox.Relay {
	r, err := outbox.NewRelay(outbox.RelayConfig{Pool: pool, JS: e.js, Logger: e.log})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// testSenderODS is the sender's ODS code in every test file name.
const testSenderODS = "X26SBX"

// request makes a request with a fresh id.
func request(programme string) Request {
	return Request{ID: "test:" + uuid.NewString(), Programme: programme, RequestedBy: "test", RequestedAt: time.Now()}
}

func (e *env) exportOne(req Request) Result {
	e.t.Helper()
	res, err := e.exporter(e.pool).Export(e.t.Context(), req)
	if err != nil {
		e.t.Fatalf("export: %v", err)
	}
	if len(res) != 1 {
		e.t.Fatalf("export: %d results, want 1", len(res))
	}
	return res[0]
}

// file reads an export's stored file and checks it against the DPS format.
func (e *env) file(exportID string) []byte {
	e.t.Helper()
	b, err := e.objects.GetBytes(e.t.Context(), exportID)
	if err != nil {
		e.t.Fatalf("get object %s: %v", exportID, err)
	}
	if _, err := dps.Check(bytes.NewReader(b)); err != nil {
		e.t.Fatalf("file of export %s fails the DPS check: %v\n%s", exportID, err, b)
	}
	return b
}

// streamCount counts the messages a stream holds on subject.
func (e *env) streamCount(stream, subject string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(e.t.Context(), sql, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.t.Context(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) addRecord(spec demodata.RecordSpec) (int64, string) {
	e.t.Helper()
	id, u, err := demodata.AddRecord(e.t.Context(), e.pool, spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return id, u
}

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
