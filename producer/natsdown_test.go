package main

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

// natsDownFor is how long NATS stays away in TestServiceStartsWhileNATSIsDown: the minute of the
// issue, since nothing but the clock is spent on it.
const natsDownFor = 60 * time.Second

// TestServiceStartsWhileNATSIsDown starts `producer run` with nothing listening at NATS_URL. For a
// minute it keeps running, answers /healthz with 503 naming nats (connecting) and says in a WARN line
// every few seconds what it waits for; then NATS starts and the producer comes up by itself, declares
// the topology and answers 200, with no restart. It stops cleanly on SIGTERM.
func TestServiceStartsWhileNATSIsDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &stack{t: t, bin: producerBinary(t), dbURL: pgtest.NewDatabase(t), natsURL: "nats://127.0.0.1:" + strconv.Itoa(port)}

	addr := freeAddr(t)
	cmd := exec.Command(s.bin, "run")
	cmd.Env = s.env("HTTP_ADDR=" + addr)
	var stderr proctest.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()

	health := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	downUntil := time.Now().Add(natsDownFor)
	sawUnhealthy := 0
	for time.Now().Before(downUntil) {
		select {
		case err := <-exited:
			t.Fatalf("producer run exited while NATS was down: %v\n%s", err, stderr.String())
		case <-time.After(2 * time.Second):
		}
		code, body := health()
		if code == 0 {
			continue // not listening yet: the database is migrated first
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"nats":"waiting`) || !strings.Contains(body, "connecting to NATS at nats://127.0.0.1:") {
			t.Fatalf("/healthz while NATS is down: %d %s", code, body)
		}
		sawUnhealthy++
	}
	if sawUnhealthy < 10 {
		t.Fatalf("/healthz answered only %d times in %s", sawUnhealthy, natsDownFor)
	}
	if n := strings.Count(stderr.String(), `"msg":"waiting for NATS: not connected yet, retrying"`); n < 8 {
		t.Errorf("%d WARN lines in %s, want one every 5 s:\n%s", n, natsDownFor, stderr.String())
	}

	natstest.RunWithOptions(t, func(o *server.Options) { o.Port = port })
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := health()
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz a minute after NATS came back: %d %s\n%s", code, body, stderr.String())
		}
		select {
		case err := <-exited:
			t.Fatalf("producer run exited after NATS came back: %v\n%s", err, stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !strings.Contains(stderr.String(), `"msg":"producer started"`) {
		t.Errorf("no start line:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
