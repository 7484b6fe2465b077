package natstest_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
)

func TestRunPublishConsume(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "t.x")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "hello" {
		t.Fatalf("got %q", m.Data)
	}
}

// TestStartRestartSamePort checks the pieces restart tests elsewhere rely on:
// a server restarted with Start on the same port and store keeps its streams,
// and a client from Connect reconnects by itself.
func TestStartRestartSamePort(t *testing.T) {
	dir := t.TempDir()
	srv, url := natstest.RunWithOptions(t, func(o *server.Options) { o.StoreDir = dir })
	_, js := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r"}}); err != nil {
		t.Fatal(err)
	}
	port := srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()

	opts := natstest.DefaultOptions()
	opts.StoreDir = dir
	opts.Port = port
	srv2, err := natstest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Shutdown(); srv2.WaitForShutdown() })

	// Publish retries until the client has reconnected; the stream must
	// have survived the restart.
	for {
		_, err := js.Publish(ctx, "r", []byte("after restart"))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
