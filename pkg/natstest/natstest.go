// Package natstest runs a real, embedded NATS server with JetStream for tests
// and for the local development stack.
//
// It owns only the lifecycle of an in-process nats-server: start it in a
// private store directory on a free port, wait until JetStream is usable,
// and shut it down (and close client connections) when the test ends. It
// must not know about DPS streams, subjects or payloads: pkg/bus owns the
// topology, and tests create it with bus.EnsureTopology like production does.
package natstest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startTimeout bounds how long we wait for the server to accept clients and
// for JetStream to become current. Generous because CI machines running the
// race detector on two cores can be slow.
const startTimeout = 30 * time.Second

// Run starts an embedded JetStream server whose store lives in t.TempDir(),
// listening on a random localhost port, and returns it with its client URL.
// The server is shut down when the test ends.
func Run(t testing.TB) (*server.Server, string) {
	t.Helper()
	return RunWithOptions(t, nil)
}

// RunWithOptions is Run with a hook to adjust the server options (for
// example limits, authorisation or a fixed port for restart tests) before the
// server starts. StoreDir, if left empty by the hook, is t.TempDir().
func RunWithOptions(t testing.TB, configure func(*server.Options)) (*server.Server, string) {
	t.Helper()
	opts := DefaultOptions()
	opts.StoreDir = t.TempDir()
	if configure != nil {
		configure(opts)
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	srv, err := Start(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv, srv.ClientURL()
}

// DefaultOptions are the options Run uses: JetStream on, localhost, a random
// port, no logging, no signal handling (the test binary owns signals).
func DefaultOptions() *server.Options {
	return &server.Options{
		ServerName: "natstest",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		NoLog:      true,
		NoSigs:     true,
		// Bounded so that a runaway test cannot fill the disk, but far above
		// what the 50 MB object-store test needs.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  4 << 30,
	}
}

// Start starts a NATS server with the given options (DefaultOptions when nil)
// and waits until it accepts clients and, if enabled, JetStream is ready. It
// needs no testing.TB, so the local development stack can embed a server.
// The caller owns shutdown: srv.Shutdown(); srv.WaitForShutdown().
func Start(opts *server.Options) (*server.Server, error) {
	if opts == nil {
		opts = DefaultOptions()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	if !opts.NoLog {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(startTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("nats server not ready for connections")
	}
	if opts.JetStream {
		if err := waitForJetStream(srv, startTimeout); err != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, err
		}
	}
	return srv, nil
}

// waitForJetStream polls until the JetStream subsystem reports itself
// enabled; ReadyForConnections alone can return before the meta layer is up.
func waitForJetStream(srv *server.Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if srv.JetStreamEnabled() && srv.JetStreamIsCurrent() {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("jetstream not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Connect opens a client connection to url and a JetStream context on it;
// both are closed when the test ends. Reconnects are allowed forever so that
// tests restarting the server on the same port exercise client recovery.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// CountTerminations counts the messages the durable consumer terminates (msg.Term) from now on, from
// the server's MSG_TERMINATED advisories: a test that expects every message acknowledged checks that
// the count stays 0, since an ack and a term both leave nothing pending.
func CountTerminations(t testing.TB, nc *nats.Conn, stream, consumer string) (count func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+stream+"."+consumer, func(*nats.Msg) {
		mu.Lock()
		n++
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("natstest: subscribe to terminations: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("natstest: flush: %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func() int {
		// Advisories are published as the server acts; a flush round trip lets any in flight arrive.
		_ = nc.Flush()
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}
