package bus

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConnectOptions say how to reach NATS and as whom.
type ConnectOptions struct {
	URL   string // one server or a comma-separated list (NATS_URL)
	Name  string // the client name the server shows
	Creds string // credentials file: user JWT and nkey seed (NATS_CREDS)
	// TLS: the CA bundle that signs the servers' certificates, and our client certificate and key for
	// servers that verify clients. Empty means the system roots and no client certificate.
	CAFile, CertFile, KeyFile string
	// Status, when set, is kept up to date with what the connection waits for, for /healthz.
	Status *Status
	// Log receives connection events and the WARN lines while NATS cannot be reached; default
	// slog.Default(). Server URLs are redacted, credentials never logged.
	Log *slog.Logger
	// WarnEvery is how often a WARN says that NATS is still being waited for; default WarnInterval.
	WarnEvery time.Duration
}

// WarnInterval is how often a process waiting for NATS says so.
const WarnInterval = 5 * time.Second

// RefusedError is NATS refusing us in a way that waiting will not mend: the credentials are refused,
// the server's certificate does not verify, or the user may not do what the process must. A process
// exits with code 2 on it (a configuration error) instead of retrying forever.
type RefusedError struct {
	What string // what was refused, e.g. "NATS refused the credentials"
	Hint string // which setting to look at
	Err  error
}

func (e *RefusedError) Error() string {
	msg := e.What
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *RefusedError) Unwrap() error { return e.Err }

// ConfigurationProblem marks the refusal as something an operator must fix: a command exits 2 on it.
func (e *RefusedError) ConfigurationProblem() bool { return true }

// Connect connects to NATS and returns the connection and a JetStream handle. It keeps trying until
// connected or ctx ends, so a process may start before NATS, and says every WarnEvery what it waits
// for; once connected it reconnects forever. It gives up at once, with a *RefusedError, when NATS
// refuses the credentials or its certificate does not verify.
func Connect(ctx context.Context, o ConnectOptions) (*nats.Conn, jetstream.JetStream, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With(slog.String("component", "nats"), slog.String("client", o.Name))
	status := o.Status
	if status == nil {
		status = &Status{}
	}
	warnEvery := o.WarnEvery
	if warnEvery <= 0 {
		warnEvery = WarnInterval
	}
	servers := redactedServers(o.URL)
	status.Waiting("connecting to NATS at "+servers, nil)

	connected := make(chan struct{})
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", slog.String("server", nc.ConnectedUrlRedacted()))
			close(connected)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.String("error", err.Error()))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				status.setErr(err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", slog.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Info("nats connection closed")
			close(closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				status.denied(err)
			}
			attrs := []any{slog.String("error", err.Error())}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			log.Error("nats async error", attrs...)
		}),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats: %w", err)
	}
	started := time.Now()
	warn := time.NewTicker(warnEvery)
	defer warn.Stop()
wait:
	for !nc.IsConnected() {
		select {
		case <-connected:
			break wait
		case <-closed:
			// nats.go closes the connection when the same server refuses the same credentials twice.
			return nil, nil, refusal(nc.LastError(), status.lastErr())
		case <-warn.C:
			last := status.lastErr()
			if last == nil {
				last = nc.LastError()
			}
			if r := refusal(last, nil); isRefusal(r) {
				nc.Close()
				return nil, nil, r
			}
			attrs := []any{slog.String("servers", servers), slog.Duration("waited", time.Since(started).Round(time.Second))}
			if last != nil {
				attrs = append(attrs, slog.String("error", last.Error()))
			}
			log.Warn("waiting for NATS: not connected yet, retrying", attrs...)
		case <-ctx.Done():
			nc.Close()
			return nil, nil, fmt.Errorf("connect nats at %s: not connected: %w", servers, ctx.Err())
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	status.Ready()
	return nc, js, nil
}

// refusal turns the error a connection attempt ended with into a *RefusedError when it is one that
// retrying will not mend, and into a plain error otherwise.
func refusal(errs ...error) error {
	for _, err := range errs {
		if err == nil {
			continue
		}
		var unknownCA x509.UnknownAuthorityError
		var hostname x509.HostnameError
		var invalid x509.CertificateInvalidError
		switch {
		case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
			errors.Is(err, nats.ErrAccountAuthExpired):
			return &RefusedError{What: "NATS refused the credentials", Hint: "check the user and password in NATS_URL, or NATS_CREDS", Err: err}
		case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid):
			return &RefusedError{What: "NATS server certificate not trusted", Hint: "check NATS_CA_FILE and the host names in NATS_URL", Err: err}
		case strings.Contains(err.Error(), "tls: bad certificate"), strings.Contains(err.Error(), "tls: certificate required"),
			strings.Contains(err.Error(), "tls: unknown certificate authority"):
			// The server refused our client certificate during the handshake, and said why.
			return &RefusedError{What: "NATS refused our client certificate", Hint: "check NATS_CERT_FILE, NATS_KEY_FILE and the CA the servers trust", Err: err}
		}
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("connect nats: connection closed: %w", err)
		}
	}
	return errors.New("connect nats: connection closed")
}

func isRefusal(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// redactedServers lists the servers of a NATS_URL without any user or password, for logs and health.
func redactedServers(list string) string {
	var out []string
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			scheme := ""
			if i := strings.Index(raw, "://"); i >= 0 && i < at {
				scheme = raw[:i+3]
			}
			raw = scheme + raw[at+1:]
		}
		out = append(out, raw)
	}
	return strings.Join(out, ",")
}
