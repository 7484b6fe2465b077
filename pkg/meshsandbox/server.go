package meshsandbox

import (
	"crypto/x509"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Mailbox is a MESH mailbox the sandbox accepts: its id, password and the workflow
// ids it is registered to receive, plus the organisation details tracking reports.
type Mailbox struct {
	ID        string   `json:"id"`
	Password  string   `json:"password,omitempty"`
	Workflows []string `json:"workflows,omitempty"`
	Name      string   `json:"name,omitempty"`
	ODSCode   string   `json:"ods_code,omitempty"`
	OrgCode   string   `json:"org_code,omitempty"`
	OrgName   string   `json:"org_name,omitempty"`
}

// Config says how the sandbox checks requests. The zero value (plus mailboxes)
// behaves like the live service for authentication and like the official sandbox
// for everything else.
type Config struct {
	// SharedKey is the environment's HMAC key for the NHSMESH token.
	SharedKey string
	Mailboxes []Mailbox
	// DisableNonceCheck and DisableTimestampCheck turn off the checks the live
	// service makes and the official sandbox does not.
	DisableNonceCheck, DisableTimestampCheck bool
	// TimestampWindow is how far a token's timestamp may be from Now, either side
	// (default 2h).
	TimestampWindow time.Duration
	// ClientCAs, when set, makes TLSConfig require a client certificate signed by it.
	ClientCAs *x509.CertPool
	// CheckWorkflows makes a send fail (403, code 17) unless the recipient is
	// registered for mex-WorkflowID, as the live service does.
	CheckWorkflows bool
	// MaxChunkBytes is the largest request body accepted (413 above it), default 100 MB.
	MaxChunkBytes int64
	// DiscardBodies keeps only the size of each chunk, not its bytes, so that a
	// benchmark can push hundreds of MB through an in-process sandbox in bounded
	// memory. Downloads of such messages answer 410.
	DiscardBodies bool
	// FaultSeed seeds the generator deciding Fault.Fraction, so runs repeat (default 1).
	FaultSeed uint64
	Now       func() time.Time
	Logger    *slog.Logger
}

const (
	defaultTimestampWindow = 2 * time.Hour
	defaultMaxChunkBytes   = 100 * 1000 * 1000
	// inboxExpiry is how long a message waits in an inbox before it would be
	// undeliverable; tracking reports it as expiry_time.
	inboxExpiry = 5 * 24 * time.Hour
)

// Server is an in-memory MESH service. All methods are safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	mailboxes map[string]*mailbox
	messages  map[string]*message
	seq       uint64
	nonces    map[string]time.Time
	noncePrun time.Time

	faultMu  sync.Mutex
	faults   []*Fault
	rng      *rand.Rand
	requests map[string]int
}

type mailbox struct {
	Mailbox
	inbox    []*message // in the order messages were accepted
	outbox   []*message // in the order they were sent
	localIDs map[string][]*message
	inboxSeq uint64
}

// New returns a sandbox with cfg's mailboxes and defaults filled in.
func New(cfg Config) *Server {
	if cfg.TimestampWindow <= 0 {
		cfg.TimestampWindow = defaultTimestampWindow
	}
	if cfg.MaxChunkBytes <= 0 {
		cfg.MaxChunkBytes = defaultMaxChunkBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FaultSeed == 0 {
		cfg.FaultSeed = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       log,
		mailboxes: make(map[string]*mailbox),
		messages:  make(map[string]*message),
		nonces:    make(map[string]time.Time),
		rng:       rand.New(rand.NewPCG(cfg.FaultSeed, cfg.FaultSeed^0x9e3779b97f4a7c15)),
		requests:  make(map[string]int),
	}
	for _, m := range cfg.Mailboxes {
		s.AddMailbox(m)
	}
	return s
}

// AddMailbox registers m (its id upper-cased), replacing the details of an
// existing mailbox with the same id but keeping its messages.
func (s *Server) AddMailbox(m Mailbox) {
	m.ID = strings.ToUpper(strings.TrimSpace(m.ID))
	m.Workflows = append([]string(nil), m.Workflows...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb, ok := s.mailboxes[m.ID]; ok {
		mb.Mailbox = m
		return
	}
	s.mailboxes[m.ID] = &mailbox{Mailbox: m, localIDs: make(map[string][]*message)}
}

func (s *Server) now() time.Time { return s.cfg.Now().UTC() }

// Handler serves the MESH API under /messageexchange/ and the admin API under /admin/.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serveHTTP)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/messageexchange/admin/report" || r.URL.Path == "/admin/report":
		s.serveReportAdmin(w, r)
	case strings.HasPrefix(r.URL.Path, "/admin/"):
		s.serveAdmin(w, r)
	case strings.HasPrefix(r.URL.Path, "/messageexchange/"):
		s.serveMESH(w, r)
	default:
		writeJSON(w, http.StatusNotFound, "application/json", map[string]string{"detail": "Not Found"})
	}
}

// route is one MESH endpoint matched from a request.
type route struct {
	name    string
	mailbox string   // upper-cased mailbox id from the path
	params  []string // the remaining path parameters, unescaped
	handle  func(*call)
}

// matchRoute maps method and path segments (after /messageexchange/) to an endpoint.
// ok is false with status 404 or 405 when nothing matches, as FastAPI answers.
func (s *Server) matchRoute(method string, segs []string) (rt route, status int) {
	if len(segs) == 0 || segs[0] == "" {
		return rt, http.StatusNotFound
	}
	rt.mailbox = strings.ToUpper(segs[0])
	rest := segs[1:]
	want := func(methods ...string) int {
		for _, m := range methods {
			if method == m {
				return 0
			}
		}
		return http.StatusMethodNotAllowed
	}
	switch {
	case len(rest) == 0:
		rt.name, rt.handle = RouteHandshake, s.handshake
		return rt, want(http.MethodGet, http.MethodPost)
	case len(rest) == 1 && rest[0] == "count":
		rt.name, rt.handle = RouteCount, s.count
		return rt, want(http.MethodGet)
	case len(rest) == 1 && rest[0] == "update":
		rt.name, rt.handle = "update", func(c *call) { c.w.WriteHeader(http.StatusOK) }
		return rt, want(http.MethodPost)
	case len(rest) == 1 && rest[0] == "inbox":
		rt.name, rt.handle = RouteInbox, s.listInbox
		return rt, want(http.MethodGet)
	case len(rest) == 2 && rest[0] == "inbox":
		rt.params = rest[1:]
		if method == http.MethodHead {
			rt.name, rt.handle = RouteDownload, s.headMessage
			return rt, 0
		}
		rt.name, rt.handle = RouteDownload, s.download
		return rt, want(http.MethodGet)
	case len(rest) == 3 && rest[0] == "inbox":
		rt.params = rest[1:]
		rt.name, rt.handle = RouteDownloadChunk, s.download
		return rt, want(http.MethodGet)
	case len(rest) == 4 && rest[0] == "inbox" && rest[2] == "status" && rest[3] == "acknowledged":
		rt.params = rest[1:2]
		rt.name, rt.handle = RouteAck, s.acknowledge
		return rt, want(http.MethodPut)
	case len(rest) == 1 && rest[0] == "outbox":
		rt.name, rt.handle = RouteSend, s.send
		return rt, want(http.MethodPost)
	case len(rest) == 2 && rest[0] == "outbox" && rest[1] == "tracking":
		rt.name, rt.handle = RouteTrack, s.track
		return rt, want(http.MethodGet)
	case len(rest) == 3 && rest[0] == "outbox" && rest[1] == "tracking" && method == http.MethodGet:
		rt.params = rest[2:]
		rt.name, rt.handle = RouteTrackLocal, s.trackLocal
		return rt, 0
	case len(rest) == 3 && rest[0] == "outbox":
		rt.params = rest[1:]
		rt.name, rt.handle = RouteSendChunk, s.sendChunk
		return rt, want(http.MethodPost)
	}
	return rt, http.StatusNotFound
}

// Route names for Fault.Route and Requests.
const (
	RouteHandshake     = "handshake"
	RouteSend          = "send"
	RouteSendChunk     = "send_chunk"
	RouteInbox         = "inbox"
	RouteCount         = "count"
	RouteDownload      = "download"
	RouteDownloadChunk = "download_chunk"
	RouteAck           = "ack"
	RouteTrack         = "track"
	RouteTrackLocal    = "track_local"
)

// call is one authorised MESH request on its way through a handler.
type call struct {
	w       http.ResponseWriter
	r       *http.Request
	route   route
	mailbox Mailbox // the authorised mailbox
	// version is the API version errors are rendered in: 2 when the client accepts
	// application/vnd.mesh.v2+json, else 1 (as the official sandbox decides).
	version int
}

func (s *Server) serveMESH(w http.ResponseWriter, r *http.Request) {
	segs, err := pathSegments(strings.TrimPrefix(r.URL.EscapedPath(), "/messageexchange/"))
	if err != nil {
		writeJSON(w, http.StatusNotFound, "application/json", map[string]string{"detail": "Not Found"})
		return
	}
	rt, status := s.matchRoute(r.Method, segs)
	switch status {
	case http.StatusNotFound:
		writeJSON(w, status, "application/json", map[string]string{"detail": "Not Found"})
		return
	case http.StatusMethodNotAllowed:
		writeJSON(w, status, "application/json", map[string]string{"detail": "Method Not Allowed"})
		return
	}
	s.countRequest(rt.name)
	if s.applyFaults(w, r, rt.name) {
		return
	}
	c := &call{w: w, r: r, route: rt, version: lenientAPIVersion(r.Header.Get("Accept"))}
	mb, ok := s.authorise(c)
	if !ok {
		return
	}
	c.mailbox = mb
	rt.handle(c)
}

func pathSegments(escaped string) ([]string, error) {
	escaped = strings.TrimSuffix(escaped, "/")
	parts := strings.Split(escaped, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = u
	}
	return parts, nil
}

// lookupMailbox returns a copy of the mailbox's details.
func (s *Server) lookupMailbox(id string) (Mailbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, ok := s.mailboxes[id]
	if !ok {
		return Mailbox{}, false
	}
	return mb.Mailbox, true
}

// handshake is GET or POST /messageexchange/{mb}: validates the mailbox. MESH wants
// the client to say what it is, so these headers are required.
func (s *Server) handshake(c *call) {
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	var verrs []ValidationError
	for _, name := range []string{"mex-ClientVersion", "mex-OSName", "mex-OSVersion"} {
		if _, present := header(c.r, name); !present {
			verrs = append(verrs, missingField("header", strings.ToLower(name)))
		}
	}
	if len(verrs) > 0 {
		failValidation(c.w, verrs)
		return
	}
	s.log.Debug("mesh handshake", slog.String("mailbox", c.mailbox.ID), slog.String("client", c.r.Header.Get("mex-ClientVersion")))
	if version < 2 {
		writeJSON(c.w, http.StatusOK, mediaJSON, map[string]string{"mailboxId": c.mailbox.ID})
		return
	}
	c.w.WriteHeader(http.StatusOK)
}
