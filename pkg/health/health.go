// Package health serves a process's /healthz and /metrics. It knows nothing of what it checks: each
// process hands it named probes and a Prometheus registry.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probe reports whether one dependency is usable. It must return promptly when ctx ends.
type Probe func(ctx context.Context) error

// ErrDisabled is returned by a probe whose dependency is switched off on purpose (the MESH gate); it
// is reported but does not make the process unhealthy.
var ErrDisabled = errors.New("disabled")

// Check is a named probe.
type Check struct {
	Name  string
	Probe Probe
}

// NewRegistry returns a registry holding the Go runtime and process collectors, to which a process adds
// its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Timeouts bound how long one connection may hold the server, so that slow or idle clients (a
// misbehaving scraper, a port scan, many idle keep-alive connections) cannot pile up.
type Timeouts struct {
	// Read bounds reading a whole request, headers and body.
	Read time.Duration
	// Write bounds writing a response, from the end of the request's headers.
	Write time.Duration
	// Idle bounds how long a keep-alive connection waits for its next request.
	Idle time.Duration
}

// DefaultTimeouts suit /healthz and /metrics: both answer in well under a second.
var DefaultTimeouts = Timeouts{Read: 10 * time.Second, Write: 30 * time.Second, Idle: 60 * time.Second}

// Server serves /healthz and /metrics.
type Server struct {
	addr     string
	log      *slog.Logger
	mux      *http.ServeMux
	timeout  time.Duration
	timeouts Timeouts
	mu       sync.Mutex
	checks   []Check
	listener net.Listener
}

// NewServer builds a server for addr; Run starts it.
func NewServer(addr string, reg *prometheus.Registry, log *slog.Logger, checks ...Check) *Server {
	s := &Server{addr: addr, log: log, mux: http.NewServeMux(), timeout: 3 * time.Second, timeouts: DefaultTimeouts, checks: checks}
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return s
}

// SetTimeouts replaces DefaultTimeouts; call it before Run.
func (s *Server) SetTimeouts(t Timeouts) { s.timeouts = t }

// AddCheck adds a probe after construction, for dependencies that come up later.
func (s *Server) AddCheck(c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, c)
}

// Handler returns the HTTP handler, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

// Listen binds the address now, so that a port clash stops the process at start.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.listener = ln
	return nil
}

// Addr is the bound address once Listen has run.
func (s *Server) Addr() string {
	if s.listener == nil {
		return s.addr
	}
	return s.listener.Addr().String()
}

// Run serves until ctx ends, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	if s.listener == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	srv := s.httpServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	}
}

func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: min(5*time.Second, s.timeouts.Read),
		ReadTimeout:       s.timeouts.Read,
		WriteTimeout:      s.timeouts.Write,
		IdleTimeout:       s.timeouts.Idle,
		MaxHeaderBytes:    16 << 10,
	}
}

type report struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks := append([]Check(nil), s.checks...)
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	rep := report{Status: "ok", Checks: make(map[string]string, len(checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			err := c.Probe(ctx)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				rep.Checks[c.Name] = "ok"
			case errors.Is(err, ErrDisabled):
				rep.Checks[c.Name] = "disabled"
			default:
				rep.Checks[c.Name] = logging.ScrubString(err.Error())
				rep.Status = "unhealthy"
			}
		})
	}
	wg.Wait()
	w.Header().Set("Content-Type", "application/json")
	if rep.Status != "ok" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if err := json.NewEncoder(w).Encode(rep); err != nil {
		s.log.Debug("write health report", slog.Any("error", err))
	}
}
