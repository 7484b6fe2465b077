package meshwatch_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/meshwatch"
)

// clientCertificate issues a client certificate from a fresh CA expiring at notAfter, and returns it
// with the CA's PEM.
func clientCertificate(t *testing.T, notAfter time.Time) (meshwatch.Certificates, []byte) {
	t.Helper()
	ca, err := meshsandbox.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.IssueClientUntil("X26ABC1", notAfter)
	if err != nil {
		t.Fatal(err)
	}
	client, err := meshwatch.ParseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := meshwatch.ParseCertificates(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return meshwatch.Certificates{Client: client[0], CABundle: bundle}, certPEM
}

// TestExpiryWarnings: at start (and every day, which is the same Check) a certificate within 60, 30 or
// 7 days of its end gives one WARN naming the threshold, an expired one an ERROR, a distant one nothing.
func TestExpiryWarnings(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		left       time.Duration
		wantLevel  string // "" for no line
		wantWithin int
		wantDays   int
	}{
		{"90 days", 90 * 24 * time.Hour, "", 0, 89},
		{"45 days", 45 * 24 * time.Hour, "WARN", 60, 44},
		{"20 days", 20 * 24 * time.Hour, "WARN", 30, 19},
		{"3 days", 3 * 24 * time.Hour, "WARN", 7, 2},
		{"expired", -2 * time.Hour, "ERROR", 0, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The certificate ends a minute before the nominal time, so "45 days" is 44 whole days away.
			certs, _ := clientCertificate(t, now.Add(tt.left-time.Minute))
			var buf bytes.Buffer
			log, err := logging.New(&buf, slog.LevelInfo, logging.FormatJSON)
			if err != nil {
				t.Fatal(err)
			}
			meshwatch.NewWarner(meshwatch.Certificates{Client: certs.Client}, log, func() time.Time { return now }).Check(t.Context())

			lines := nonEmptyLines(buf.String())
			if tt.wantLevel == "" {
				if len(lines) != 0 {
					t.Fatalf("want no line, got %q", lines)
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("want one line, got %q", lines)
			}
			var line map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
				t.Fatal(err)
			}
			if line["level"] != tt.wantLevel {
				t.Errorf("level %v, want %s: %s", line["level"], tt.wantLevel, lines[0])
			}
			if line["subject"] != "CN=X26ABC1" || line["variable"] != "MESH_CERTIFICATE" {
				t.Errorf("line does not name the certificate and its variable: %s", lines[0])
			}
			if got := int(line["days_left"].(float64)); got != tt.wantDays {
				t.Errorf("days_left %d, want %d", got, tt.wantDays)
			}
			if tt.wantWithin != 0 {
				if got, _ := line["within_days"].(float64); int(got) != tt.wantWithin {
					t.Errorf("within_days %v, want %d", line["within_days"], tt.wantWithin)
				}
				if !strings.Contains(line["msg"].(string), "within "+strconv.Itoa(tt.wantWithin)+" days") {
					t.Errorf("message %q does not say the threshold", line["msg"])
				}
			} else if !strings.Contains(line["msg"].(string), "EXPIRED") {
				t.Errorf("message %q does not say it expired", line["msg"])
			}
			notAfter, err := time.Parse(time.RFC3339Nano, line["not_after"].(string))
			if err != nil || !notAfter.Equal(certs.Client.NotAfter) {
				t.Errorf("not_after %v, want %s", line["not_after"], certs.Client.NotAfter)
			}
		})
	}
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestExpiryWarnedDaily: RunDaily repeats the check every interval until its context ends.
func TestExpiryWarnedDaily(t *testing.T) {
	certs, _ := clientCertificate(t, time.Now().Add(3*24*time.Hour))
	var buf syncBuffer
	log, _ := logging.New(&buf, slog.LevelInfo, logging.FormatJSON)
	w := meshwatch.NewWarner(meshwatch.Certificates{Client: certs.Client}, log, nil)
	w.Interval = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { w.RunDaily(ctx); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(buf.String(), "within 7 days") < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than three repeated warnings: %s", buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCABundleExpiryWarned: the CA bundle's first certificate to expire is warned of like the client's.
func TestCABundleExpiryWarned(t *testing.T) {
	now := time.Now()
	soon, _ := clientCertificate(t, now.Add(20*24*time.Hour))
	later, _ := clientCertificate(t, now.Add(200*24*time.Hour))
	var buf bytes.Buffer
	log, _ := logging.New(&buf, slog.LevelInfo, logging.FormatJSON)
	// A bundle of two "CAs": the one ending in 20 days is the one reported.
	certs := meshwatch.Certificates{CABundle: []*x509.Certificate{later.Client, soon.Client}}
	if got := certs.EarliestCA(); got != soon.Client {
		t.Fatalf("EarliestCA is %s, want the one ending first", got.NotAfter)
	}
	meshwatch.NewWarner(certs, log, func() time.Time { return now }).Check(t.Context())
	if out := buf.String(); !strings.Contains(out, `"variable":"MESH_CA_BUNDLE"`) || !strings.Contains(out, `"within_days":30`) {
		t.Errorf("want a WARN naming MESH_CA_BUNDLE within 30 days: %s", out)
	}
}

// gauge returns the value of the one series of the named family, and whether it is there.
func gauge(t *testing.T, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			m := f.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics: the expiry gauges carry the certificates' NotAfter, and MESH errors are counted by
// operation, status and code, with the network series there from the start.
func TestMetrics(t *testing.T) {
	certs, _ := clientCertificate(t, time.Now().Add(45*24*time.Hour))
	reg := prometheus.NewPedanticRegistry()
	m := meshwatch.NewMetrics(reg, certs)
	if v, ok := gauge(t, reg, "dps_mesh_client_certificate_expiry_timestamp_seconds"); !ok || v != float64(certs.Client.NotAfter.Unix()) {
		t.Errorf("client certificate expiry %v (%v), want %d", v, ok, certs.Client.NotAfter.Unix())
	}
	if v, ok := gauge(t, reg, "dps_mesh_ca_bundle_earliest_expiry_timestamp_seconds"); !ok || v != float64(certs.CABundle[0].NotAfter.Unix()) {
		t.Errorf("CA bundle expiry %v (%v), want %d", v, ok, certs.CABundle[0].NotAfter.Unix())
	}

	count := func(op, status, code string) float64 {
		var out dto.Metric
		if err := m.Errors.WithLabelValues(op, status, code).Write(&out); err != nil {
			t.Fatal(err)
		}
		return out.GetCounter().GetValue()
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "dps_mesh_errors_total" && len(f.GetMetric()) != len(mesh.Operations) {
			t.Errorf("%d error series at start, want one per operation (%d)", len(f.GetMetric()), len(mesh.Operations))
		}
	}
	m.ObserveError(&mesh.Error{Op: "send chunk 2/3", StatusCode: 417, Code: "12"})
	m.ObserveError(&mesh.Error{Op: "track by local id", StatusCode: 503})
	m.ObserveError(&mesh.Error{Op: "handshake", Err: errors.New("connection refused")})
	for _, c := range []struct {
		op, status, code string
	}{{"send", "417", "12"}, {"track", "503", "none"}, {"handshake", "none", "none"}} {
		if got := count(c.op, c.status, c.code); got != 1 {
			t.Errorf("errors{%s,%s,%s} = %v, want 1", c.op, c.status, c.code, got)
		}
	}

	// Without certificates the gauges are absent rather than zero, which would read as long expired.
	empty := prometheus.NewPedanticRegistry()
	meshwatch.NewMetrics(empty, meshwatch.Certificates{})
	for _, name := range []string{"dps_mesh_client_certificate_expiry_timestamp_seconds", "dps_mesh_ca_bundle_earliest_expiry_timestamp_seconds"} {
		if _, ok := gauge(t, empty, name); ok {
			t.Errorf("%s exported without a certificate", name)
		}
	}
}
