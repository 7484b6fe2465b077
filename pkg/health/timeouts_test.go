package health

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDefaultTimeouts: the server the process runs has read, write and idle timeouts.
func TestDefaultTimeouts(t *testing.T) {
	srv := NewServer("127.0.0.1:0", prometheus.NewRegistry(), slog.New(slog.DiscardHandler)).httpServer()
	if srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.ReadHeaderTimeout <= 0 {
		t.Fatalf("timeouts read %v, write %v, idle %v, read header %v: want all set",
			srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.ReadHeaderTimeout)
	}
}

// TestIdleAndSlowConnectionsClosed: 50 idle keep-alive connections and a client that never finishes its
// request are all closed by the server once their timeout passes.
func TestIdleAndSlowConnectionsClosed(t *testing.T) {
	s := NewServer("127.0.0.1:0", prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	s.SetTimeouts(Timeouts{Read: 300 * time.Millisecond, Write: time.Second, Idle: 300 * time.Millisecond})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	dial := func() net.Conn {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reads until the server closes the connection, failing after limit.
	closedWithin := func(c net.Conn, r *bufio.Reader, limit time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(limit))
		for {
			if _, err := r.ReadByte(); err != nil {
				ne, ok := err.(net.Error)
				return !ok || !ne.Timeout()
			}
		}
	}

	var wg sync.WaitGroup
	for range 50 {
		c := dial()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		wg.Go(func() {
			if !closedWithin(c, r, 5*time.Second) {
				t.Error("an idle keep-alive connection stayed open")
			}
		})
	}
	slow := dial()
	if _, err := slow.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil { // headers never end
		t.Fatal(err)
	}
	if !closedWithin(slow, bufio.NewReader(slow), 5*time.Second) {
		t.Error("a request whose headers never end kept its connection open")
	}
	wg.Wait()
}
