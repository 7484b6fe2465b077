// Package natstest runs a real, embedded NATS server with JetStream for tests (pkg/natsserver, in a
// private store directory on a free port) and shuts it down, with the client connections, when the
// test ends. It is imported by tests only. It must not know about DPS streams, subjects or payloads:
// pkg/bus owns the topology, and tests create it with bus.EnsureTopology like production does.
package natstest

import (
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
)

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
	opts := natsserver.DefaultOptions()
	opts.StoreDir = t.TempDir()
	if configure != nil {
		configure(opts)
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	srv, err := natsserver.Start(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv, srv.ClientURL()
}

// DefaultOptions are the options Run starts from (natsserver.DefaultOptions), for a test that starts
// a server itself with Start.
func DefaultOptions() *server.Options { return natsserver.DefaultOptions() }

// Start is natsserver.Start, for tests that restart a server on the same port and store; the test
// owns its shutdown.
func Start(opts *server.Options) (*server.Server, error) { return natsserver.Start(opts) }

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
