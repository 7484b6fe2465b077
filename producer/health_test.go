package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

type healthReport struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// TestHealthzNamesStuckWork: `producer run` answers 503 naming each piece of work that stopped moving,
// and 200 again once it moves. Its request consumer is stalled by holding the programme's export lock
// while a request waits; the outbox is blocked by removing the stream its events go to, so that the
// relay keeps failing and the oldest event ages past its bound.
func TestHealthzNamesStuckWork(t *testing.T) {
	s := newStack(t)
	s.mustRun("seed", "--records", "60")
	addr := freeAddr(t)
	cmd := exec.Command(s.bin, "run")
	cmd.Env = s.env("HTTP_ADDR="+addr, "HEALTH_CONSUMER_STALL_AFTER=2s", "HEALTH_OUTBOX_MAX_AGE=2s", "HEALTH_RELAY_MAX_FAILURES=2")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("producer log:\n%s", stderr.String())
		}
	})

	healthz := func() (int, healthReport) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0, healthReport{}
		}
		defer resp.Body.Close()
		var rep healthReport
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		return resp.StatusCode, rep
	}
	waitFor := func(what string, cond func(int, healthReport) bool) healthReport {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			code, rep := healthz()
			if cond(code, rep) {
				return rep
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: last /healthz %d %+v", what, code, rep)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("healthy at start", func(code int, rep healthReport) bool {
		return code == http.StatusOK && rep.Checks["consumer"] == "ok" && rep.Checks["outbox"] == "ok" && rep.Checks["outbox_relay"] == "ok"
	})

	ctx := t.Context()
	// Stall the consumer: the HPV export waits for the programme's advisory lock (pkg/export's lock
	// class "DPS", 0x445053), which this transaction holds.
	lockTx, err := s.db().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lockTx.Rollback(ctx) //nolint:errcheck
	if _, err := lockTx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int4, id::int4) FROM programmes WHERE code = 'HPV'`, 0x445053); err != nil {
		t.Fatal(err)
	}
	s.mustRun("request", "--programme", "HPV", "--request-id", "stall-test")

	// Block the outbox: without DPS_EVENTS the relay cannot publish an event, however often it tries.
	if err := s.js.DeleteStream(ctx, bus.StreamEvents); err != nil {
		t.Fatal(err)
	}
	tx, err := s.db().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	if err := outbox.Enqueue(ctx, tx, bus.SubjectMailboxValidated, "validated:"+id,
		bus.MailboxValidated{EventID: id, Mailbox: "X26ABC1", Result: "ok", ValidatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	stuck := waitFor("503 naming the consumer, the outbox and the relay", func(code int, rep healthReport) bool {
		return code == http.StatusServiceUnavailable && strings.HasPrefix(rep.Checks["consumer"], "stalled") &&
			strings.HasPrefix(rep.Checks["outbox"], "stuck") && strings.HasPrefix(rep.Checks["outbox_relay"], "failing")
	})
	t.Logf("stuck: %+v", stuck)
	if stuck.Status != "unhealthy" || stuck.Checks["postgres"] != "ok" || stuck.Checks["nats"] != "ok" {
		t.Errorf("report %+v: want unhealthy with Postgres and NATS themselves ok", stuck)
	}
	for check, want := range map[string]string{
		"consumer":     `consumer producer on DPS_REQUESTS has 0 pending and 1 awaiting acknowledgement, and nothing was acknowledged for \d+s \(HEALTH_CONSUMER_STALL_AFTER=2s\)`,
		"outbox":       `\d+ events unpublished, the oldest for \d+s \(HEALTH_OUTBOX_MAX_AGE=2s\)`,
		"outbox_relay": `\d+ attempts in a row failed \(HEALTH_RELAY_MAX_FAILURES=2\), the last: .*mesh\.mailbox\.validated`,
	} {
		if !regexp.MustCompile(want).MatchString(stuck.Checks[check]) {
			t.Errorf("%s says %q, want it to match %q", check, stuck.Checks[check], want)
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	_, _ = metrics.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`dps_consumer_ack_pending_messages{consumer="producer",stream="DPS_REQUESTS"} 1`,
		`dps_outbox_backlog_messages 1`,
		`dps_export_oldest_age_seconds{status="created"} 0`,
		`dps_deadletter_messages{stage="request"} 0`,
	} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, want := range []string{`dps_consumer_stalled_seconds{consumer="producer",stream="DPS_REQUESTS"} [1-9]`, `dps_outbox_oldest_age_seconds [1-9]`, `dps_outbox_relay_consecutive_failures [1-9]`} {
		if !regexp.MustCompile(want).MatchString(metrics.String()) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Let both move: the stream is back and the lock released.
	if err := bus.EnsureTopology(ctx, s.js); err != nil {
		t.Fatal(err)
	}
	if err := lockTx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor("200 once the work moves", func(code int, rep healthReport) bool {
		return code == http.StatusOK && rep.Checks["consumer"] == "ok" && rep.Checks["outbox"] == "ok" && rep.Checks["outbox_relay"] == "ok"
	})
	if n := s.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'stall-test'`); n != 1 {
		t.Errorf("%d exports for the stalled request, want 1", n)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("producer run exited with %v after SIGTERM", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("producer run did not stop after SIGTERM")
	}
}
