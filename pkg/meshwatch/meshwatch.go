// Package meshwatch is what an operator watches of our side of MESH: the expiry of the mailbox's client
// certificate and of the CA bundle (a WARN at start and daily as it nears, an ERROR once expired, and
// gauges on /metrics), and MESH errors by operation, HTTP status and MESH error code. It reads
// certificates and counts; it never calls MESH itself.
package meshwatch

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// WarnDays are the thresholds, in days before expiry, at which the client certificate is warned of.
// MESH certificates are issued for a fixed term and an expired one stops every send, so the first
// warning leaves time to request a new one from the NHS.
var WarnDays = []int{60, 30, 7}

// CheckInterval is how often the expiry is checked again after the check at start.
const CheckInterval = 24 * time.Hour

const day = 24 * time.Hour

// Certificates are the TLS certificates a MESH process relies on.
type Certificates struct {
	// Client is the mailbox's client certificate (MESH_CERTIFICATE); nil when none is configured.
	Client *x509.Certificate
	// CABundle holds the certificates of MESH_CA_BUNDLE; empty when the system roots are used.
	CABundle []*x509.Certificate
}

// ParseCertificates reads every CERTIFICATE block of PEM data (a certificate with its intermediates, a
// CA bundle). Empty data gives none; data with no certificate in it is an error.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, nil
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// EarliestCA is the certificate of the CA bundle that expires first, nil for an empty bundle.
func (c Certificates) EarliestCA() *x509.Certificate {
	var first *x509.Certificate
	for _, ca := range c.CABundle {
		if first == nil || ca.NotAfter.Before(first.NotAfter) {
			first = ca
		}
	}
	return first
}

// Expiry describes how far a certificate is from its end, as warnings and validate-mailbox say it.
type Expiry struct {
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	// DaysLeft is whole days until NotAfter, negative once expired.
	DaysLeft int `json:"days_left"`
	// Expired is true once NotAfter has passed.
	Expired bool `json:"expired"`
	// WithinDays is the smallest of WarnDays the expiry falls within, 0 when none (or expired).
	WithinDays int `json:"warn_within_days,omitempty"`
}

// ExpiryOf describes cert at now.
func ExpiryOf(cert *x509.Certificate, now time.Time) Expiry {
	left := cert.NotAfter.Sub(now)
	e := Expiry{Subject: cert.Subject.String(), NotAfter: cert.NotAfter.UTC(), Expired: left <= 0}
	e.DaysLeft = int(left / day)
	if left < 0 && left%day != 0 {
		e.DaysLeft-- // an hour past expiry is day -1, not day 0
	}
	if !e.Expired {
		for _, d := range WarnDays {
			if left <= time.Duration(d)*day && (e.WithinDays == 0 || d < e.WithinDays) {
				e.WithinDays = d
			}
		}
	}
	return e
}

// Warner logs the expiry of the certificates at start and every CheckInterval.
type Warner struct {
	certs Certificates
	log   *slog.Logger
	now   func() time.Time
	// Interval between two checks of RunDaily; CheckInterval unless a test shortens it.
	Interval time.Duration
}

// NewWarner builds a Warner. now is time.Now outside tests.
func NewWarner(certs Certificates, log *slog.Logger, now func() time.Time) *Warner {
	if now == nil {
		now = time.Now
	}
	return &Warner{certs: certs, log: log, now: now, Interval: CheckInterval}
}

// Check logs once: an ERROR for an expired client certificate, a WARN for one within WarnDays of its
// end, and the same for the earliest certificate of the CA bundle. A certificate far from expiry is
// not logged.
func (w *Warner) Check(ctx context.Context) {
	now := w.now()
	if w.certs.Client != nil {
		w.logExpiry(ctx, "client certificate", "MESH_CERTIFICATE", ExpiryOf(w.certs.Client, now),
			"every MESH request is refused until a renewed certificate is installed",
			"request a renewed certificate for the mailbox before then")
	}
	if ca := w.certs.EarliestCA(); ca != nil {
		w.logExpiry(ctx, "CA bundle certificate", "MESH_CA_BUNDLE", ExpiryOf(ca, now),
			"MESH's server certificate can no longer be verified with it",
			"install the NHS CA chain that replaces it before then")
	}
}

func (w *Warner) logExpiry(ctx context.Context, what, variable string, e Expiry, expired, advice string) {
	attrs := []slog.Attr{
		slog.String("certificate", what), slog.String("variable", variable), slog.String("subject", e.Subject),
		slog.Time("not_after", e.NotAfter), slog.Int("days_left", e.DaysLeft),
	}
	switch {
	case e.Expired:
		w.log.LogAttrs(ctx, slog.LevelError, "MESH "+what+" has EXPIRED: "+expired, attrs...)
	case e.WithinDays > 0:
		attrs = append(attrs, slog.Int("within_days", e.WithinDays))
		w.log.LogAttrs(ctx, slog.LevelWarn,
			"MESH "+what+" expires within "+strconv.Itoa(e.WithinDays)+" days: "+advice, attrs...)
	}
}

// RunDaily checks every CheckInterval until ctx ends; the check at start is the caller's (Check), so
// that it comes before anything else the process logs.
func (w *Warner) RunDaily(ctx context.Context) {
	tick := time.NewTicker(w.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.Check(ctx)
		}
	}
}

var (
	clientExpiryDesc = prometheus.NewDesc("dps_mesh_client_certificate_expiry_timestamp_seconds",
		"When the MESH client certificate (MESH_CERTIFICATE) expires, as a Unix time. Absent when none is configured.", nil, nil)
	caExpiryDesc = prometheus.NewDesc("dps_mesh_ca_bundle_earliest_expiry_timestamp_seconds",
		"When the first certificate of the MESH CA bundle (MESH_CA_BUNDLE) expires, as a Unix time. Absent with the system roots.", nil, nil)
)

// expiryCollector exports the expiry times of Certificates.
type expiryCollector struct{ certs Certificates }

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- clientExpiryDesc
	ch <- caExpiryDesc
}

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	if c.certs.Client != nil {
		ch <- prometheus.MustNewConstMetric(clientExpiryDesc, prometheus.GaugeValue, float64(c.certs.Client.NotAfter.Unix()))
	}
	if ca := c.certs.EarliestCA(); ca != nil {
		ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, float64(ca.NotAfter.Unix()))
	}
}

// Metrics are the MESH series of a process that talks to MESH.
type Metrics struct {
	// Errors counts failed MESH requests by operation, HTTP status and MESH error code.
	Errors *prometheus.CounterVec
}

// NoValue is the status or code label of an error that has none (a network failure has no HTTP
// status; many HTTP errors carry no MESH code).
const NoValue = "none"

// NewMetrics registers the MESH error counter and the certificate expiry gauges on reg.
func NewMetrics(reg prometheus.Registerer, certs Certificates) *Metrics {
	m := &Metrics{Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dps_mesh_errors_total",
		Help: "Failed MESH requests, every attempt counted, by operation, HTTP status and MESH error code (none when absent).",
	}, []string{"operation", "status", "code"})}
	// The network-failure series of every operation exists from the start, so that the metric is on
	// /metrics before the first error and rate() sees its first increment.
	for _, op := range mesh.Operations {
		m.Errors.WithLabelValues(op, NoValue, NoValue)
	}
	reg.MustRegister(m.Errors, expiryCollector{certs: certs})
	return m
}

// ObserveError counts one failed MESH attempt; it is the mesh.Config OnError hook.
func (m *Metrics) ObserveError(e *mesh.Error) {
	if m == nil || e == nil {
		return
	}
	status, code := NoValue, NoValue
	if e.StatusCode != 0 {
		status = strconv.Itoa(e.StatusCode)
	}
	if c := strings.TrimSpace(e.Code); c != "" && len(c) <= 16 {
		code = c
	}
	m.Errors.WithLabelValues(e.Operation(), status, code).Inc()
}
