package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultChunkSize      int64 = 20 << 20
	DefaultMaxRetries           = 5
	DefaultRetryBudget          = 2 * time.Minute
	DefaultInitialBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff           = 30 * time.Second

	// MinChunkSize keeps a compressed chunk able to hold at least some data after gzip framing.
	MinChunkSize int64 = 1 << 10
	// MaxChunkSize is below MESH's 100 MB per-request limit.
	MaxChunkSize int64 = 100_000_000 - 1<<20

	mediaTypeV2 = "application/vnd.mesh.v2+json"
)

// Config describes one mailbox on one MESH environment.
type Config struct {
	// BaseURL is the scheme and host, e.g. https://msg.intspineservices.nhs.uk.
	BaseURL string
	// Mailbox is the mailbox id; it is upper-cased, as MESH does.
	Mailbox string
	// Password and SharedKey feed the NHSMESH token. Never logged.
	Password, SharedKey string
	// TLS is used for https; nil means system roots and no client certificate. Build it with TLSConfig.
	TLS *tls.Config
	// HTTPClient replaces the client New builds (tests). Its transport's TLS settings are then its own.
	HTTPClient *http.Client
	// ChunkSize is the most bytes one request body carries (the compressed bytes when compressing).
	ChunkSize int64
	// MaxRetries is how many times a request is retried after a transient failure; negative disables
	// retries. Zero means DefaultMaxRetries.
	MaxRetries int
	// RetryBudget bounds the total time one request spends retrying.
	RetryBudget time.Duration
	// InitialBackoff and MaxBackoff shape exponential backoff with full jitter; Retry-After wins when longer.
	InitialBackoff, MaxBackoff time.Duration
	// ClientVersion is sent as mex-ClientVersion; default "dps-pipeline==<module version>".
	ClientVersion string
	// Logger receives request retries and warnings; nil discards.
	Logger *slog.Logger
	// Now stamps tokens (tests); default time.Now.
	Now func() time.Time
	// SpoolDir is where the private spool directory (dps-spool-<uid>, mode 0700) of bodies that must be
	// read twice is made; default os.TempDir().
	SpoolDir string
	// OnError, when set, is told of every failed attempt of a request (each MESH error response and each
	// network failure, retried or not, but not the caller giving up), for metrics. It must be quick.
	OnError func(*Error)
}

// Client talks to one MESH mailbox. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	spoolDir string
	mailbox  string
	cfg      Config
	hc       *http.Client
	log      *slog.Logger
	headers  http.Header
}

// New validates cfg, applies defaults and returns a Client. It does not contact MESH (see Handshake).
func New(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.BaseURL) == "" {
		return nil, errors.New("mesh: base URL is required")
	}
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return nil, fmt.Errorf("mesh: base URL %q must be http(s)://host[:port]", cfg.BaseURL)
	}
	cfg.Mailbox = strings.ToUpper(strings.TrimSpace(cfg.Mailbox))
	if cfg.Mailbox == "" {
		return nil, errors.New("mesh: mailbox is required")
	}
	if strings.ContainsAny(cfg.Mailbox, ":/?#") {
		return nil, fmt.Errorf("mesh: mailbox %q contains a character MESH does not allow", cfg.Mailbox)
	}
	if cfg.Password == "" {
		return nil, errors.New("mesh: mailbox password is required")
	}
	if cfg.SharedKey == "" {
		return nil, errors.New("mesh: shared key is required")
	}
	switch {
	case cfg.ChunkSize == 0:
		cfg.ChunkSize = DefaultChunkSize
	case cfg.ChunkSize < MinChunkSize || cfg.ChunkSize > MaxChunkSize:
		return nil, fmt.Errorf("mesh: chunk size %d outside %d..%d", cfg.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.RetryBudget <= 0 {
		cfg.RetryBudget = DefaultRetryBudget
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.InitialBackoff {
		cfg.MaxBackoff = cfg.InitialBackoff
	}
	if cfg.ClientVersion == "" {
		cfg.ClientVersion = "dps-pipeline==" + moduleVersion()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(slog.String("mesh_mailbox", cfg.Mailbox))

	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: newTransport(cfg.TLS)}
	}
	if cfg.TLS != nil && cfg.TLS.InsecureSkipVerify {
		log.Warn("MESH TLS certificate verification is DISABLED: the server's identity is not checked",
			slog.String("mesh_url", base.Redacted()))
	}

	spoolDir, err := privateSpoolDir(cfg.SpoolDir)
	if err != nil {
		return nil, err
	}
	cleanSpoolDir(spoolDir, log)

	return &Client{
		base:     base,
		spoolDir: spoolDir,
		mailbox:  cfg.Mailbox,
		cfg:      cfg,
		hc:       hc,
		log:      log,
		headers:  staticHeaders(cfg.ClientVersion),
	}, nil
}

// newTransport is http.DefaultTransport's shape with MESH's TLS settings and a bound on how long a
// server may take to answer once a request is written, so a hung connection becomes a transient error.
func newTransport(tc *tls.Config) *http.Transport {
	if tc != nil {
		tc = tc.Clone()
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
}

// staticHeaders are the headers MESH wants on every request besides Authorization.
func staticHeaders(clientVersion string) http.Header {
	osVersion := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		osVersion = strings.TrimSpace(string(b))
	}
	h := http.Header{}
	h.Set("Accept", mediaTypeV2)
	h.Set("mex-ClientVersion", clientVersion)
	h.Set("mex-OSName", runtime.GOOS)
	h.Set("mex-OSVersion", osVersion)
	h.Set("mex-OSArchitecture", runtime.GOARCH)
	h.Set("User-Agent", strings.ReplaceAll(clientVersion, "==", "/")+" ("+runtime.GOOS+"; "+runtime.GOARCH+"; "+runtime.Version()+")")
	return h
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return strings.TrimPrefix(bi.Main.Version, "v")
	}
	return "0.0.0-dev"
}

// Mailbox returns the (upper-cased) mailbox id this client acts as.
func (c *Client) Mailbox() string { return c.mailbox }

// ClientCertificate is the client certificate this client presents for mutual TLS, nil when it has
// none (or when Config.HTTPClient replaced the transport).
func (c *Client) ClientCertificate() *x509.Certificate {
	if c.cfg.HTTPClient != nil || c.cfg.TLS == nil || len(c.cfg.TLS.Certificates) == 0 {
		return nil
	}
	cert := c.cfg.TLS.Certificates[0]
	if cert.Leaf != nil {
		return cert.Leaf
	}
	if len(cert.Certificate) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// ChunkSize returns the effective chunk size.
func (c *Client) ChunkSize() int64 { return c.cfg.ChunkSize }

// url builds an absolute URL for a path under /messageexchange/{mailbox}; rest must already be escaped.
func (c *Client) url(rest string) string {
	return c.base.String() + "/messageexchange/" + url.PathEscape(c.mailbox) + rest
}

// resolve turns a server-relative link (links.next) into an absolute URL on the configured host.
func (c *Client) resolve(link string) (string, error) {
	ref, err := url.Parse(link)
	if err != nil {
		return "", fmt.Errorf("mesh: bad link %q: %w", link, err)
	}
	if ref.IsAbs() {
		// Never follow a link to another host with our credentials.
		if ref.Host != c.base.Host {
			return "", fmt.Errorf("mesh: link to another host %q refused", ref.Host)
		}
		return ref.String(), nil
	}
	return c.base.ResolveReference(ref).String(), nil
}

// request is one logical MESH call: build makes a fresh *http.Request (with a fresh body) per attempt.
type request struct {
	op    string
	build func(ctx context.Context) (*http.Request, error)
	// ok reports the statuses that mean success; nil means 2xx.
	ok func(status int, attempt int) bool
	// beforeRetry, when set, runs before each retry of a transient failure; a non-nil error ends the
	// call with that error (send uses it to adopt a message an ambiguous failure may have created).
	beforeRetry func(ctx context.Context, last *Error) error
}

// do runs r with authentication, headers, classification and retries. On success the caller owns the
// response body. Every failure is an *Error.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	started := time.Now()
	retries := 0
	forbiddenRetried := false
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, &Error{Op: r.op, Err: err}
		}
		req, err := r.build(ctx)
		if err != nil {
			return nil, &Error{Op: r.op, Err: err}
		}
		for k, v := range c.headers {
			// Cloned so nothing appending to a request's header can touch the shared set.
			req.Header[k] = slices.Clone(v)
		}
		req.Header.Set("Authorization", AuthorizationToken(c.mailbox, c.cfg.Password, c.cfg.SharedKey,
			uuid.NewString(), 0, c.cfg.Now()))

		resp, err := c.hc.Do(req)
		var merr *Error
		switch {
		case err != nil:
			if ctxErr := ctx.Err(); ctxErr != nil {
				return nil, &Error{Op: r.op, Err: ctxErr}
			}
			merr = transportError(r.op, err)
		case r.ok != nil && r.ok(resp.StatusCode, attempt), r.ok == nil && resp.StatusCode >= 200 && resp.StatusCode < 300:
			return resp, nil
		default:
			merr = responseError(r.op, resp, time.Now())
		}
		if c.cfg.OnError != nil {
			c.cfg.OnError(merr)
		}

		if merr.StatusCode == http.StatusForbidden && !forbiddenRetried {
			// A 403 may be a token the server judged stale (clock skew at a minute boundary, a nonce
			// collision); one retry with a fresh token settles it.
			forbiddenRetried = true
			c.log.Warn("MESH refused authentication; retrying once with a fresh token",
				slog.String("op", r.op), slog.Int("status", merr.StatusCode))
			continue
		}
		if !merr.Transient {
			return nil, merr
		}
		retries++
		if c.cfg.MaxRetries < 0 || retries > c.cfg.MaxRetries {
			return nil, merr
		}
		delay := c.backoff(retries)
		if merr.RetryAfter > delay {
			delay = merr.RetryAfter
		}
		if time.Since(started)+delay > c.cfg.RetryBudget {
			return nil, merr
		}
		if r.beforeRetry != nil {
			if err := r.beforeRetry(ctx, merr); err != nil {
				return nil, err
			}
		}
		c.log.Warn("MESH request failed; retrying",
			slog.String("op", r.op), slog.Int("status", merr.StatusCode), slog.Int("retry", retries),
			slog.Duration("delay", delay), slog.String("error", errorText(merr)))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, &Error{Op: r.op, Err: ctx.Err()}
		case <-t.C:
		}
	}
}

// errorText is what a retry log line says: MESH's code and text, or the network error.
func errorText(e *Error) string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return strings.TrimSpace(e.Code + " " + e.Description)
}

// backoff is exponential with full jitter: uniform in [0, min(max, initial·2^(n-1))].
func (c *Client) backoff(n int) time.Duration {
	ceiling := c.cfg.InitialBackoff
	for i := 1; i < n && ceiling < c.cfg.MaxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, c.cfg.MaxBackoff)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// drain reads and closes a body so the connection can be reused.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	body.Close()
}

// Handshake validates the mailbox: MESH checks the token and records the client's mex-* headers.
func (c *Client) Handshake(ctx context.Context) error {
	resp, err := c.do(ctx, request{
		op: "handshake",
		build: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, c.url(""), nil)
		},
	})
	if err != nil {
		return err
	}
	drain(resp.Body)
	return nil
}
