package meshsandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault makes the sandbox misbehave on a route, to test a client's retries.
//
// Route is one of the Route* names ("" = every route); Method narrows it ("" = any).
// Count > 0 applies the fault to the next Count matching requests; Fraction > 0 to that
// share of them (decided by a generator seeded with Config.FaultSeed); with neither, to
// every matching request until ClearFaults. Latency delays the request; on its own it
// then lets the request through. Status answers with that status and an error body;
// Drop closes the connection without answering. RetryAfter sets Retry-After (whole
// seconds) on injected answers.
type Fault struct {
	Route      string        `json:"route,omitempty"`
	Method     string        `json:"method,omitempty"`
	Status     int           `json:"status,omitempty"`
	Count      int           `json:"count,omitempty"`
	Fraction   float64       `json:"fraction,omitempty"`
	Latency    time.Duration `json:"-"`
	RetryAfter time.Duration `json:"-"`
	Drop       bool          `json:"drop,omitempty"`
}

type faultJSON struct {
	Route      string  `json:"route,omitempty"`
	Method     string  `json:"method,omitempty"`
	Status     int     `json:"status,omitempty"`
	Count      int     `json:"count,omitempty"`
	Fraction   float64 `json:"fraction,omitempty"`
	Latency    string  `json:"latency,omitempty"`
	RetryAfter string  `json:"retry_after,omitempty"`
	Drop       bool    `json:"drop,omitempty"`
}

// MarshalJSON writes durations as Go duration strings ("250ms").
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Route: f.Route, Method: f.Method, Status: f.Status, Count: f.Count, Fraction: f.Fraction, Drop: f.Drop}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	if f.RetryAfter != 0 {
		j.RetryAfter = f.RetryAfter.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads durations as Go duration strings ("250ms", "2s").
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fault{Route: j.Route, Method: j.Method, Status: j.Status, Count: j.Count, Fraction: j.Fraction, Drop: j.Drop}
	var err error
	if j.Latency != "" {
		if f.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("fault latency: %w", err)
		}
	}
	if j.RetryAfter != "" {
		if f.RetryAfter, err = time.ParseDuration(j.RetryAfter); err != nil {
			return fmt.Errorf("fault retry_after: %w", err)
		}
	}
	return nil
}

func (f *Fault) validate() error {
	switch {
	case f.Route != "" && !knownRoute(f.Route):
		return fmt.Errorf("unknown route %q", f.Route)
	case f.Count < 0 || f.Fraction < 0 || f.Fraction > 1:
		return fmt.Errorf("count must be >= 0 and fraction within 0..1")
	case f.Status != 0 && (f.Status < 100 || f.Status > 599):
		return fmt.Errorf("status %d is not an HTTP status", f.Status)
	case f.Status == 0 && !f.Drop && f.Latency <= 0:
		return fmt.Errorf("a fault needs a status, drop or latency")
	}
	return nil
}

func knownRoute(r string) bool {
	switch r {
	case RouteHandshake, RouteSend, RouteSendChunk, RouteInbox, RouteCount, RouteDownload,
		RouteDownloadChunk, RouteAck, RouteTrack, RouteTrackLocal:
		return true
	}
	return false
}

// InjectFault adds a fault; faults are tried in the order they were added.
func (s *Server) InjectFault(f Fault) {
	f.Method = strings.ToUpper(f.Method)
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = nil
}

// Faults returns the faults still in force.
func (s *Server) Faults() []Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	out := make([]Fault, len(s.faults))
	for i, f := range s.faults {
		out[i] = *f
	}
	return out
}

// Requests returns how many MESH requests reached a route, faulted or not ("" = all).
func (s *Server) Requests(route string) int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if route == "" {
		n := 0
		for _, c := range s.requests {
			n += c
		}
		return n
	}
	return s.requests[route]
}

func (s *Server) requestCounts() map[string]int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

func (s *Server) countRequest(route string) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.requests[route]++
}

// pickFaults decides which faults fire for a request: the summed latency of those
// that fire and the first one that answers (status or drop), if any.
func (s *Server) pickFaults(route, method string) (latency time.Duration, action *Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	kept := s.faults[:0]
	for _, f := range s.faults {
		matches := (f.Route == "" || f.Route == route) && (f.Method == "" || f.Method == method)
		acts := f.Status != 0 || f.Drop
		if matches && !(acts && action != nil) {
			fires := true
			switch {
			case f.Count > 0:
				f.Count--
				if f.Count == 0 {
					f.Count = -1 // spent: dropped below
				}
			case f.Fraction > 0:
				fires = s.rng.Float64() < f.Fraction
			}
			if fires {
				latency += f.Latency
				if acts {
					c := *f
					action = &c
				}
			}
		}
		if f.Count >= 0 {
			kept = append(kept, f)
		}
	}
	clear(s.faults[len(kept):])
	s.faults = kept
	return latency, action
}

// applyFaults runs the faults for a request and reports whether it answered it.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, route string) bool {
	latency, f := s.pickFaults(route, r.Method)
	if latency > 0 {
		if !s.readBodyFirst(r) {
			return true // the client went away while sending; nobody reads an answer
		}
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return true
		}
	}
	if f == nil {
		return false
	}
	s.log.Info("mesh fault injected", slog.String("route", route), slog.Int("status", f.Status), slog.Bool("drop", f.Drop))
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		// HTTP/2 cannot hijack; aborting resets the stream instead.
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(f.RetryAfter.Seconds()))))
	}
	if f.Status >= 500 {
		failInternal(w, f.Status)
		return true
	}
	c := &call{w: w, r: r, version: lenientAPIVersion(r.Header.Get("Accept"))}
	c.fail(f.Status, statusErr(f.Status), "")
	return true
}

// readBodyFirst reads a request's body before a latency fault waits, and puts it back for the
// handler. net/http only watches a connection for the client hanging up once the body has been
// read to the end, so without this a client that gives up during the delay is not noticed: the
// handler sleeps out the whole latency and httptest.Server.Close blocks until it has. A body over
// MaxChunkBytes is left partly unread for the handler to refuse with 413, as without the fault.
// With DiscardBodies only the length is kept. false means the body could not be read.
func (s *Server) readBodyFirst(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	limit := s.cfg.MaxChunkBytes + 1
	if s.cfg.DiscardBodies {
		n, err := io.Copy(io.Discard, io.LimitReader(r.Body, limit))
		if err != nil {
			return false
		}
		r.Body = readCloser{io.MultiReader(io.LimitReader(zeros{}, n), r.Body), r.Body}
		return true
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength < limit {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, limit)); err != nil {
		return false
	}
	r.Body = readCloser{io.MultiReader(&buf, r.Body), r.Body}
	return true
}

// readCloser reads from Reader and closes the original body.
type readCloser struct {
	io.Reader
	io.Closer
}

// zeros stands in for a discarded body's bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
