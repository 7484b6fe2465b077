package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

// TestServiceRun: /healthz answers while the work drains after ctx ends, an event the drain enqueues
// is published before Run returns, the work's error comes back, and a busy HTTP_ADDR is a config error
// from Open, before anything connects.
func TestServiceRun(t *testing.T) {
	_, natsURL := natstest.Run(t)
	shared := config.Shared{DatabaseURL: pgtest.NewDatabase(t), NATSURL: natsURL, StreamReplicas: 1}
	var logs proctest.Buffer
	log, err := logging.New(&logs, 0, logging.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	svc := process.Service{Name: "svc", HTTPAddr: "127.0.0.1:0", Log: log, Registry: health.NewRegistry(),
		Checks: []health.Check{{Name: "work", Probe: func(context.Context) error { return nil }}}}
	deps, err := svc.Open(t.Context(), shared)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(deps.Close)
	svc.Deps = deps

	ctx, cancel := context.WithCancel(t.Context())
	workErr := errors.New("work stopped")
	eventID := uuid.NewString()
	var drainStatus int
	err = svc.Run(ctx, func(ctx context.Context) error {
		addr := startedAddr(t, &logs)
		cancel()
		<-ctx.Done()
		// Draining: health still answers, and what the last unit of work enqueues is still published.
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			drainStatus = resp.StatusCode
			resp.Body.Close()
		}
		tx, err := deps.Pool.Begin(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := outbox.Enqueue(context.WithoutCancel(ctx), tx, bus.SubjectMailboxValidated, "validated:"+eventID,
			bus.MailboxValidated{EventID: eventID, Mailbox: "X26OURS1", Result: "ok", ValidatedAt: time.Now().UTC()}); err != nil {
			return err
		}
		if err := tx.Commit(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
			return err
		}
		return workErr
	})
	if !errors.Is(err, workErr) {
		t.Errorf("Run returned %v, want the work's error", err)
	}
	if drainStatus != http.StatusOK {
		t.Errorf("/healthz during the drain: status %d, want 200", drainStatus)
	}
	s, err := deps.JS.Stream(t.Context(), bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(bus.SubjectMailboxValidated))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[bus.SubjectMailboxValidated]; n != 1 {
		t.Errorf("%d events published, want the one the drain enqueued", n)
	}

	// A busy address is a configuration error naming HTTP_ADDR, and the work never starts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	svc.HTTPAddr = ln.Addr().String()
	_, err = svc.Open(t.Context(), shared)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Var != "HTTP_ADDR" {
		t.Errorf("busy address: %v, want a config error naming HTTP_ADDR", err)
	}
}

// startedAddr waits for the "svc started" line and returns its http_addr.
func startedAddr(t *testing.T, logs *proctest.Buffer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var v struct {
				Msg  string `json:"msg"`
				Addr string `json:"http_addr"`
			}
			if json.Unmarshal([]byte(l), &v) == nil && v.Msg == "svc started" && v.Addr != "" {
				return v.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no start line in %s", logs.String())
	return ""
}
