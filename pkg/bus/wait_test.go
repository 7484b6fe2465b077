package bus_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

func TestPermanent(t *testing.T) {
	api := func(code int, errCode jetstream.ErrorCode) error {
		return fmt.Errorf("wrapped: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: "x"})
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"timeout", context.DeadlineExceeded, false},
		{"no responders", nats.ErrNoResponders, false},
		{"js temporarily unavailable", api(503, 10008), false},
		{"no stream leader / offline", api(500, 10118), false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"bucket not found", jetstream.ErrBucketNotFound, false},
		{"cluster member change in flight", api(400, 10202), false},
		{"storage type change", api(500, 10052), true},
		{"replicas on a single server", api(500, 10074), true},
		{"subjects overlap", api(400, 10065), true},
		{"other bad request", api(400, 10999), true},
		{"authorization", nats.ErrAuthorization, true},
		{"conflict", &bus.ConflictError{Kind: "stream", Name: "X"}, true},
		{"refused", &bus.RefusedError{What: "no"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bus.Permanent(tt.err); got != tt.want {
				t.Errorf("Permanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestRetryWaitsAndWarns: a call that keeps failing transiently is retried with a WARN every
// WarnEvery naming what is waited for, while Status reports it; it returns once the call succeeds,
// and at once on a permanent error.
func TestRetryWaitsAndWarns(t *testing.T) {
	var logs proctest.Buffer
	log, err := logging.New(&logs, 0, logging.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	status := &bus.Status{}
	r := bus.Retry{Log: log, Status: status, WarnEvery: 100 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	calls := 0
	var sawStatus error
	err = r.Do(t.Context(), "stream DPS_BATCHES", func(context.Context) error {
		calls++
		if calls == 10 {
			sawStatus = status.Err()
		}
		if calls < 20 {
			return jetstream.ErrStreamNotFound
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sawStatus == nil || !strings.Contains(sawStatus.Error(), "stream DPS_BATCHES") || !strings.Contains(sawStatus.Error(), "stream not found") {
		t.Errorf("status while waiting: %v", sawStatus)
	}
	if status.Err() != nil {
		t.Errorf("status after success: %v", status.Err())
	}
	if n := strings.Count(logs.String(), `"msg":"waiting for NATS: stream DPS_BATCHES not available yet, retrying"`); n < 1 {
		t.Errorf("no WARN while waiting:\n%s", logs.String())
	}

	calls = 0
	err = r.Do(t.Context(), "stream X", func(context.Context) error {
		calls++
		return &bus.ConflictError{Kind: "stream", Name: "X"}
	})
	var conflict *bus.ConflictError
	if !errors.As(err, &conflict) || calls != 1 {
		t.Errorf("permanent error: %v after %d calls, want it at once", err, calls)
	}
}

// TestConnectWaitsForServer: Connect started with no server listening keeps trying, says so in a
// WARN and on the Status, and connects by itself when the server comes.
func TestConnectWaitsForServer(t *testing.T) {
	port, logs, log := noServer(t)
	status := &bus.Status{}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, _, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Name: "wait-test",
			Status: status, Log: log, WarnEvery: 200 * time.Millisecond})
		done <- result{nc, err}
	}()
	time.Sleep(700 * time.Millisecond)
	if err := status.Err(); err == nil || !strings.Contains(err.Error(), "connecting to NATS at nats://127.0.0.1:") {
		t.Errorf("status while NATS is down: %v", err)
	}
	if !strings.Contains(logs.String(), "waiting for NATS: not connected yet, retrying") {
		t.Errorf("no WARN while NATS is down:\n%s", logs.String())
	}
	natstest.RunWithOptions(t, func(o *server.Options) { o.Port = port })
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.nc.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("not connected 30 s after the server started")
	}
	if err := status.Err(); err != nil {
		t.Errorf("status once connected: %v", err)
	}
}

// TestConnectRefusals: wrong credentials and an untrusted server certificate end Connect at once
// with a *RefusedError that says which settings to check, and TLS with the right CA and client
// certificate connects. (A server that drops a client without a certificate says only "connection
// closed", which could be anything: that one is waited for, with the error in the WARN lines.)
func TestConnectRefusals(t *testing.T) {
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	write(t, caFile, ca.CertPEM())
	certPEM, keyPEM, err := ca.IssueClient("sender")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	write(t, certFile, certPEM)
	write(t, keyFile, keyPEM)
	otherCA, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	otherCAFile := filepath.Join(dir, "other-ca.pem")
	write(t, otherCAFile, otherCA.CertPEM())

	tlsConfig, err := ca.ServerTLSConfig("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig.ClientCAs = ca.Pool()
	tlsConfig.ClientAuth = tls.RequireAndVerifyClientCert
	_, tlsURL := natstest.RunWithOptions(t, func(o *server.Options) {
		o.TLSConfig, o.TLSVerify, o.TLS = tlsConfig, true, true
	})
	tlsURL = strings.Replace(tlsURL, "nats://", "tls://", 1)
	_, pwURL := natstest.RunWithOptions(t, func(o *server.Options) { o.Username, o.Password = "producer", "right" })

	tests := []struct {
		name     string
		o        bus.ConnectOptions
		wantWhat string // empty: connects
	}{
		{"mutual TLS", bus.ConnectOptions{URL: tlsURL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}, ""},
		{"untrusted server", bus.ConnectOptions{URL: tlsURL, CAFile: otherCAFile, CertFile: certFile, KeyFile: keyFile}, "NATS server certificate not trusted"},
		{"right password", bus.ConnectOptions{URL: strings.Replace(pwURL, "nats://", "nats://producer:right@", 1)}, ""},
		{"wrong password", bus.ConnectOptions{URL: strings.Replace(pwURL, "nats://", "nats://producer:wrong@", 1)}, "NATS refused the credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Name, tt.o.WarnEvery = "refusal-test", 200*time.Millisecond
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			nc, _, err := bus.Connect(ctx, tt.o)
			if tt.wantWhat == "" {
				if err != nil {
					t.Fatal(err)
				}
				nc.Close()
				return
			}
			var refused *bus.RefusedError
			if !errors.As(err, &refused) || refused.What != tt.wantWhat {
				t.Fatalf("got %v, want a refusal %q", err, tt.wantWhat)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPublishTrackedNoResponders: a publish retried while no stream answers (no responders: nothing can
// have been stored) is not ambiguous, so a duplicate would really be an earlier message's.
func TestPublishTrackedNoResponders(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ambiguous := false
	done := make(chan error, 1)
	go func() {
		ack, err := bus.PublishTracked(t.Context(), js, bus.SubjectExportRequest, "tracked-1", request("tracked-1"), &ambiguous)
		if err == nil && ack.Duplicate {
			err = errors.New("duplicate on the first store")
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := bus.EnsureTopology(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ambiguous {
		t.Error("a publish that only met no responders is marked ambiguous")
	}
}
