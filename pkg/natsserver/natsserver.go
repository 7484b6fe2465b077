// Package natsserver runs an embedded nats-server with JetStream in this process, for the local
// development stack and (through pkg/natstest) the tests: start it with options, wait until clients and
// JetStream can use it. It also runs a JetStream cluster of real nats-server processes (Cluster), whose
// nodes can be SIGKILLed as a crash would end them. It must not know about DPS streams, subjects or payloads: pkg/bus owns the
// topology. The caller owns shutdown.
package natsserver

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startTimeout bounds how long Start waits for the server to accept clients and for JetStream to
// become current. Generous because machines running the race detector on two cores can be slow.
const startTimeout = 30 * time.Second

// DefaultOptions: JetStream on, localhost, a random port, no logging, no
// signal handling (the test binary or the program owns signals).
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
// and waits until it accepts clients and, if enabled, JetStream is ready.
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
