package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/prometheus/client_golang/prometheus"
)

func TestHealthz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("dial postgres://u:secret@db/dps: refused") }
	off := func(context.Context) error { return ErrDisabled }
	tests := []struct {
		name       string
		checks     []Check
		wantStatus int
		want       map[string]string
	}{
		{"all ok", []Check{{"nats", ok}, {"postgres", ok}}, 200, map[string]string{"nats": "ok", "postgres": "ok"}},
		{"gate off is healthy", []Check{{"nats", ok}, {"mesh", off}}, 200, map[string]string{"nats": "ok", "mesh": "disabled"}},
		{"one down", []Check{{"nats", ok}, {"postgres", down}}, 503, map[string]string{"nats": "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer("127.0.0.1:0", NewRegistry(), logging.Discard(), tt.checks...)
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			var rep report
			if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if rep.Checks[k] != v {
					t.Errorf("check %s = %q, want %q", k, rep.Checks[k], v)
				}
			}
			if strings.Contains(rec.Body.String(), "secret") {
				t.Errorf("health report leaks a password: %s", rec.Body)
			}
		})
	}
}

func TestMetricsServedOverHTTP(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "dps_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s := NewServer("127.0.0.1:0", reg, logging.Discard())
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "dps_test_total 3") || !strings.Contains(string(body), "go_goroutines") {
		t.Errorf("metrics body lacks counters:\n%.500s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
