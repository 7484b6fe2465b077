// Package config reads each process's settings from the environment with env/v11 and checks them once at
// start. It owns variable names, defaults and validation; it never logs, and it never puts the value of a
// secret into an error.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/robfig/cron/v3"
)

// Shared holds what every process needs.
type Shared struct {
	DatabaseURL    string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5432/dps?sslmode=disable" secret:"true"`
	NATSURL        string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222" secret:"true"` // may carry user:password
	NATSCreds      string `env:"NATS_CREDS"`
	NATSCAFile     string `env:"NATS_CA_FILE"`
	NATSCertFile   string `env:"NATS_CERT_FILE"`
	NATSKeyFile    string `env:"NATS_KEY_FILE"`
	StreamReplicas int    `env:"NATS_STREAM_REPLICAS" envDefault:"1"`
	LogLevel       string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat      string `env:"LOG_FORMAT" envDefault:"auto"`
	HTTPAddr       string `env:"HTTP_ADDR"`
	Health
}

// Health holds the bounds past which /healthz reports work as stuck (503 naming it).
type Health struct {
	// ConsumerStallAfter: the process's durable consumer has work and acknowledges nothing for this long.
	ConsumerStallAfter time.Duration `env:"HEALTH_CONSUMER_STALL_AFTER" envDefault:"30m"`
	// OutboxMaxAge: the oldest unpublished outbox event has waited this long.
	OutboxMaxAge time.Duration `env:"HEALTH_OUTBOX_MAX_AGE" envDefault:"5m"`
	// RelayMaxFailures: the outbox relay has failed this many times in a row.
	RelayMaxFailures int `env:"HEALTH_RELAY_MAX_FAILURES" envDefault:"5"`
}

// Defaults of Health, for services built without configuration (tests).
var DefaultHealth = Health{ConsumerStallAfter: 30 * time.Minute, OutboxMaxAge: 5 * time.Minute, RelayMaxFailures: 5}

// MESH holds the mailbox settings. The names follow the MESH settings teams keep today
// (Settings.mesh.*), one variable per setting.
type MESH struct {
	BaseURL                string        `env:"MESH_BASE_URL" envDefault:"https://localhost:8700"`
	Mailbox                string        `env:"MESH_MAILBOX"`
	Password               string        `env:"MESH_PASSWORD" secret:"true"`
	SharedKey              string        `env:"MESH_SHARED_KEY" secret:"true"`
	DPSMailbox             string        `env:"MESH_DPS_MAILBOX"`
	DPSWorkflowID          string        `env:"MESH_DPS_WORKFLOW_ID"`
	Certificate            string        `env:"MESH_CERTIFICATE"`
	PrivateKey             string        `env:"MESH_PRIVATE_KEY" secret:"true"`
	PrivateKeyPassphrase   string        `env:"MESH_PRIVATE_KEY_PASSPHRASE" secret:"true"`
	CABundle               string        `env:"MESH_CA_BUNDLE"`
	DisableSSLVerification bool          `env:"MESH_DISABLE_SSL_VERIFICATION" envDefault:"false"`
	JobsEnabled            bool          `env:"MESH_JOBS_ENABLED" envDefault:"false"`
	ChunkSize              int64         `env:"MESH_CHUNK_SIZE" envDefault:"20971520"`
	RetryBudget            time.Duration `env:"MESH_RETRY_BUDGET" envDefault:"2m"`
}

// Producer is the producer's configuration.
type Producer struct {
	Shared
	Schedule    string `env:"PRODUCER_SCHEDULE" envDefault:"0 2 * * *"`
	UniqueIDURI string `env:"DPS_UNIQUE_ID_URI" envDefault:"https://manage-vaccinations-in-schools.nhs.uk/vaccination-records"`
	// ObjectRetention is how long an export's file stays in the Object Store after DPS acknowledged it.
	ObjectRetention time.Duration `env:"DPS_OBJECT_RETENTION" envDefault:"168h"`
	// SenderODS is our organisation's ODS code: the receiver reads it from every file name and maps it to
	// the supplier whose permissions apply. No default: a wrong one gets every file refused. Required by
	// the commands that build files (RequireSenderODS).
	SenderODS string `env:"DPS_SENDER_ODS_CODE"`
	// MESHJobsEnabled is read, though the producer never calls MESH, so that one environment shared by
	// all three processes is checked the same way by each: a typo in the gate stops every one of them.
	MESHJobsEnabled bool `env:"MESH_JOBS_ENABLED" envDefault:"false"`
}

// Sender is the sender's configuration.
type Sender struct {
	Shared
	MESH
	ShutdownGrace time.Duration `env:"SENDER_SHUTDOWN_GRACE" envDefault:"30s"`
	Concurrency   int           `env:"SENDER_CONCURRENCY" envDefault:"1"`
	// RoutesSpec is MESH_ROUTES as given; Routes is what it says, by programme code.
	RoutesSpec string `env:"MESH_ROUTES"`
	Routes     map[string]Route
}

// Route is where one programme's files go instead of MESH_DPS_MAILBOX and MESH_DPS_WORKFLOW_ID: NHS
// England routes some vaccine types to a mailbox of their own.
type Route struct {
	Mailbox    string
	WorkflowID string
}

// Tracker is the tracker's configuration.
type Tracker struct {
	Shared
	MESH
	PollInterval      time.Duration `env:"TRACKER_POLL_INTERVAL" envDefault:"1m"`
	HandshakeInterval time.Duration `env:"TRACKER_HANDSHAKE_INTERVAL" envDefault:"24h"`
	BatchSize         int           `env:"TRACKER_BATCH_SIZE" envDefault:"100"`
	MaxBackoff        time.Duration `env:"TRACKER_MAX_BACKOFF" envDefault:"1h"`
	UnknownTimeout    time.Duration `env:"TRACKER_UNKNOWN_TIMEOUT" envDefault:"1h"`
	// InboxInterval is how often our MESH inbox is read for reports and the receiver's replies.
	InboxInterval time.Duration `env:"TRACKER_INBOX_INTERVAL" envDefault:"5m"`
	// AckSenders are the mailboxes the receiver's acknowledgement files may come from; empty means
	// MESH_DPS_MAILBOX (when set). A DATA message from any other mailbox is held for a person.
	AckSenders []string `env:"TRACKER_ACK_SENDERS" envSeparator:","`
}

// Default HTTP addresses, distinct so that the three processes can share one host.
const (
	DefaultProducerHTTPAddr = "127.0.0.1:9101"
	DefaultSenderHTTPAddr   = "127.0.0.1:9102"
	DefaultTrackerHTTPAddr  = "127.0.0.1:9103"
)

// Error is a configuration problem with one variable. Its message names the variable and never quotes
// the value.
type Error struct {
	Var     string
	Problem string
}

func (e *Error) Error() string { return e.Var + ": " + e.Problem }

// LoadProducer reads and checks the producer's configuration.
func LoadProducer() (Producer, error) {
	c, err := load[Producer]()
	if err != nil {
		return c, err
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultProducerHTTPAddr
	}
	if err := c.Shared.validate(); err != nil {
		return c, err
	}
	if _, err := ParseSchedule(c.Schedule); err != nil {
		return c, &Error{Var: "PRODUCER_SCHEDULE", Problem: "must be a five-field cron expression such as \"0 2 * * *\""}
	}
	if c.UniqueIDURI == "" {
		return c, &Error{Var: "DPS_UNIQUE_ID_URI", Problem: "must not be empty"}
	}
	if c.ObjectRetention <= 0 {
		return c, &Error{Var: "DPS_OBJECT_RETENTION", Problem: "must be a positive duration such as 168h"}
	}
	if c.SenderODS != "" && !dps.ValidODSCode(c.SenderODS) {
		return c, &Error{Var: "DPS_SENDER_ODS_CODE", Problem: "must be 3 to 10 letters and digits"}
	}
	c.SenderODS = strings.ToUpper(c.SenderODS)
	return c, nil
}

// RequireSenderODS says whether the configuration can name a DPS file: the commands that build files
// (the service, an export) need DPS_SENDER_ODS_CODE; the others (migrate, seed, topology, listings)
// name none and run without it. LoadProducer has checked its form when it is set.
func (c Producer) RequireSenderODS() error {
	if c.SenderODS == "" {
		return &Error{Var: "DPS_SENDER_ODS_CODE", Problem: "is required: our organisation's ODS code, part of every DPS file name"}
	}
	return nil
}

// LoadSender reads and checks the sender's configuration.
func LoadSender() (Sender, error) {
	c, err := load[Sender]()
	if err != nil {
		return c, err
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultSenderHTTPAddr
	}
	if err := c.Shared.validate(); err != nil {
		return c, err
	}
	if c.Routes, err = ParseRoutes(c.RoutesSpec); err != nil {
		return c, err
	}
	everyProgrammeRouted := len(c.Routes) == len(dps.Programmes())
	if err := c.MESH.validate(c.JobsEnabled, !everyProgrammeRouted); err != nil {
		return c, err
	}
	if c.ShutdownGrace <= 0 {
		return c, &Error{Var: "SENDER_SHUTDOWN_GRACE", Problem: "must be a positive duration"}
	}
	if c.Concurrency < 1 || c.Concurrency > 32 {
		return c, &Error{Var: "SENDER_CONCURRENCY", Problem: "must be between 1 and 32"}
	}
	return c, nil
}

// LoadTracker reads and checks the tracker's configuration.
func LoadTracker() (Tracker, error) {
	c, err := load[Tracker]()
	if err != nil {
		return c, err
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultTrackerHTTPAddr
	}
	if err := c.Shared.validate(); err != nil {
		return c, err
	}
	if err := c.MESH.validate(c.JobsEnabled, false); err != nil {
		return c, err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"TRACKER_POLL_INTERVAL", c.PollInterval},
		{"TRACKER_HANDSHAKE_INTERVAL", c.HandshakeInterval},
		{"TRACKER_MAX_BACKOFF", c.MaxBackoff},
		{"TRACKER_UNKNOWN_TIMEOUT", c.UnknownTimeout},
		{"TRACKER_INBOX_INTERVAL", c.InboxInterval},
	} {
		if d.v <= 0 {
			return c, &Error{Var: d.name, Problem: "must be a positive duration"}
		}
	}
	var senders []string
	for _, m := range c.AckSenders {
		if m = strings.ToUpper(strings.TrimSpace(m)); m != "" {
			senders = append(senders, m)
		}
	}
	if len(senders) == 0 && strings.TrimSpace(c.DPSMailbox) != "" {
		senders = []string{strings.ToUpper(strings.TrimSpace(c.DPSMailbox))}
	}
	c.AckSenders = senders
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		return c, &Error{Var: "TRACKER_BATCH_SIZE", Problem: "must be between 1 and 10000"}
	}
	return c, nil
}

// LoadShared reads and checks the settings every process shares, for the commands that read the
// database or the bus and need nothing else (tracker exports).
func LoadShared() (Shared, error) {
	c, err := load[Shared]()
	if err != nil {
		return c, err
	}
	return c, c.validate()
}

// LoadMESH reads the MESH settings alone, for the operator commands, which need a mailbox but no
// database or NATS. The mailbox credentials are required whatever MESH_JOBS_ENABLED says.
func LoadMESH() (MESH, error) {
	c, err := load[MESH]()
	if err != nil {
		return c, err
	}
	return c, c.validate(true, false)
}

func (s Shared) validate() error {
	if s.DatabaseURL == "" {
		return &Error{Var: "DATABASE_URL", Problem: "must not be empty"}
	}
	if !strings.HasPrefix(s.DatabaseURL, "postgres://") && !strings.HasPrefix(s.DatabaseURL, "postgresql://") {
		return &Error{Var: "DATABASE_URL", Problem: "must be a postgres:// URL"}
	}
	// Parsed here as the pool will parse it, so that a typo stops the process at start with exit code 2
	// instead of failing later as an outage. pgx's message quotes the URL, so it is not passed on.
	if _, err := pgxpool.ParseConfig(s.DatabaseURL); err != nil {
		return &Error{Var: "DATABASE_URL", Problem: "is not a valid postgres:// URL (check host, port, escaping and parameters)"}
	}
	if s.NATSURL == "" {
		return &Error{Var: "NATS_URL", Problem: "must not be empty"}
	}
	if problem := checkNATSURLs(s.NATSURL); problem != "" {
		return &Error{Var: "NATS_URL", Problem: problem}
	}
	if s.HTTPAddr != "" {
		if problem := checkListenAddr(s.HTTPAddr); problem != "" {
			return &Error{Var: "HTTP_ADDR", Problem: problem}
		}
	}
	if err := s.validateNATSAuth(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"HEALTH_CONSUMER_STALL_AFTER", s.ConsumerStallAfter}, {"HEALTH_OUTBOX_MAX_AGE", s.OutboxMaxAge}} {
		if d.v <= 0 {
			return &Error{Var: d.name, Problem: "must be a positive duration"}
		}
	}
	if s.RelayMaxFailures < 1 {
		return &Error{Var: "HEALTH_RELAY_MAX_FAILURES", Problem: "must be at least 1"}
	}
	if s.StreamReplicas != 1 && s.StreamReplicas != 3 && s.StreamReplicas != 5 {
		return &Error{Var: "NATS_STREAM_REPLICAS", Problem: "must be 1, 3 or 5"}
	}
	if _, err := logging.ParseLevel(s.LogLevel); err != nil {
		return &Error{Var: "LOG_LEVEL", Problem: err.Error()}
	}
	switch s.LogFormat {
	case "auto", "text", "json":
	default:
		return &Error{Var: "LOG_FORMAT", Problem: "must be one of auto, text, json"}
	}
	return nil
}

// checkNATSURLs checks a comma-separated list of server URLs as nats.Connect reads it (a bare host:port
// means nats://). It returns what is wrong, never the value: a URL may carry a user and password.
func checkNATSURLs(list string) string {
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return "has an empty entry in its comma-separated list"
		}
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil {
			return "is not a valid URL such as nats://127.0.0.1:4222"
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return "must use the nats://, tls://, ws:// or wss:// scheme"
		}
		if u.Hostname() == "" {
			return "has no host, e.g. nats://127.0.0.1:4222"
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return "has a port that is not between 1 and 65535"
			}
		}
	}
	return ""
}

// checkListenAddr checks a host:port to listen on, as net.Listen reads it.
func checkListenAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "must be host:port, e.g. 127.0.0.1:9101 or :9101"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "must end in a port number between 0 and 65535"
	}
	return ""
}

// nhsHost reports whether host is nhs.uk or under it: real MESH (integration and live) and every other
// NHS service, where a plain or unverified connection would expose a mailbox password and patient data.
func nhsHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "nhs.uk" || strings.HasSuffix(host, ".nhs.uk")
}

// Warning is a setting that is allowed but weakens security; the process logs it as a WARN at start.
type Warning struct {
	Var     string
	Message string
}

// Warnings lists the MESH settings that weaken the connection: plain http, and server verification
// turned off. validate refuses both for nhs.uk hosts, so these are for sandboxes.
func (m MESH) Warnings() []Warning {
	var out []Warning
	if strings.HasPrefix(strings.ToLower(m.BaseURL), "http://") {
		out = append(out, Warning{"MESH_BASE_URL", "MESH_BASE_URL uses plain http://: the mailbox password and every file travel unencrypted (sandbox only)"})
	}
	if m.DisableSSLVerification {
		out = append(out, Warning{"MESH_DISABLE_SSL_VERIFICATION", "MESH_DISABLE_SSL_VERIFICATION is true: MESH's server certificate is not checked (sandbox only)"})
	}
	return out
}

// validate checks the MESH settings. Credentials are only demanded when the process will talk to MESH,
// so that a sender with the feature gate off starts and waits instead of failing.
func (m MESH) validate(required, needsDPS bool) error {
	if m.ChunkSize < 1<<20 || m.ChunkSize > 100_000_000 {
		return &Error{Var: "MESH_CHUNK_SIZE", Problem: "must be between 1048576 and 100000000 bytes (MESH refuses requests over 100 MB)"}
	}
	if m.RetryBudget <= 0 {
		return &Error{Var: "MESH_RETRY_BUDGET", Problem: "must be a positive duration"}
	}
	if (m.PrivateKey == "") != (m.Certificate == "") {
		if m.Certificate == "" {
			return &Error{Var: "MESH_CERTIFICATE", Problem: "must be set when MESH_PRIVATE_KEY is"}
		}
		return &Error{Var: "MESH_PRIVATE_KEY", Problem: "must be set when MESH_CERTIFICATE is"}
	}
	// Checked whatever the gate says: a setting that would expose real MESH traffic is wrong even
	// before anything is sent.
	u, err := url.Parse(m.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return &Error{Var: "MESH_BASE_URL", Problem: "must be an http(s)://host[:port] URL"}
	}
	if nhsHost(u.Hostname()) {
		if u.Scheme != "https" {
			return &Error{Var: "MESH_BASE_URL", Problem: "must use https:// for an nhs.uk host"}
		}
		if m.DisableSSLVerification {
			return &Error{Var: "MESH_DISABLE_SSL_VERIFICATION", Problem: "must not be true for an nhs.uk host (MESH_BASE_URL): real MESH is always verified"}
		}
	}
	if !required {
		return nil
	}
	for _, r := range []struct{ name, v string }{
		{"MESH_MAILBOX", m.Mailbox},
		{"MESH_PASSWORD", m.Password},
		{"MESH_SHARED_KEY", m.SharedKey},
	} {
		if r.v == "" {
			return &Error{Var: r.name, Problem: "is required when MESH is used"}
		}
	}
	if needsDPS {
		if m.DPSMailbox == "" {
			return &Error{Var: "MESH_DPS_MAILBOX", Problem: "is required when MESH_JOBS_ENABLED is true"}
		}
		if m.DPSWorkflowID == "" {
			return &Error{Var: "MESH_DPS_WORKFLOW_ID", Problem: "is required when MESH_JOBS_ENABLED is true"}
		}
	}
	return nil
}

// ParseRoutes reads MESH_ROUTES: comma-separated PROGRAMME=MAILBOX:WORKFLOW entries, e.g.
// "FLU=X26ABC2:FLUWORKFLOW,HPV=X26ABC4:IMMS". Each programme is one the receiver has a vaccine type
// for, named once. An empty spec means no routes.
func ParseRoutes(spec string) (map[string]Route, error) {
	routes := map[string]Route{}
	if strings.TrimSpace(spec) == "" {
		return routes, nil
	}
	bad := func(problem string) error { return &Error{Var: "MESH_ROUTES", Problem: problem} }
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		programme, dest, ok := strings.Cut(entry, "=")
		mailbox, workflow, ok2 := strings.Cut(dest, ":")
		programme, mailbox, workflow = strings.TrimSpace(programme), strings.TrimSpace(mailbox), strings.TrimSpace(workflow)
		if !ok || !ok2 || programme == "" {
			return nil, bad("each entry must be PROGRAMME=MAILBOX:WORKFLOW, e.g. FLU=X26ABC2:FLUWORKFLOW")
		}
		if _, known := dps.VaccineType(programme); !known {
			return nil, bad(fmt.Sprintf("routes programme %q, which is not one of %s", programme, strings.Join(dps.Programmes(), ", ")))
		}
		if _, dup := routes[programme]; dup {
			return nil, bad(fmt.Sprintf("routes programme %s twice", programme))
		}
		if !validMailboxID(mailbox) {
			return nil, bad(fmt.Sprintf("the mailbox of %s must be a MESH mailbox id (letters and digits)", programme))
		}
		if !validWorkflowID(workflow) {
			return nil, bad(fmt.Sprintf("the workflow of %s must be letters, digits, '_' or '-'", programme))
		}
		routes[programme] = Route{Mailbox: strings.ToUpper(mailbox), WorkflowID: workflow}
	}
	return routes, nil
}

func validMailboxID(s string) bool {
	if len(s) < 3 || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func validWorkflowID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseSchedule parses a five-field cron expression (minute hour day-of-month month day-of-week).
func ParseSchedule(spec string) (cron.Schedule, error) {
	return cron.ParseStandard(spec)
}

// load parses T from the environment, first resolving <NAME>_FILE for every secret, and turns env/v11's
// errors into ones that name the variable without quoting its value.
func load[T any]() (T, error) {
	var zero T
	fields := envFields(reflect.TypeOf(zero))
	environ := env.ToMap(os.Environ())
	for _, f := range fields {
		if !f.secret {
			continue
		}
		path, ok := environ[f.name+"_FILE"]
		if !ok {
			continue
		}
		if _, both := environ[f.name]; both {
			return zero, &Error{Var: f.name, Problem: "set either " + f.name + " or " + f.name + "_FILE, not both"}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return zero, &Error{Var: f.name + "_FILE", Problem: "cannot read the file it names"}
		}
		if strings.TrimSpace(string(b)) == "" {
			return zero, &Error{Var: f.name + "_FILE", Problem: "names an empty file"}
		}
		environ[f.name] = strings.TrimRight(string(b), "\r\n")
	}
	// env/v11 takes an empty value for the default, so DATABASE_URL= would quietly mean the default
	// database: a variable that is set must say something.
	for _, f := range fields {
		if v, ok := environ[f.name]; ok && strings.TrimSpace(v) == "" {
			problem := "is set but empty; give it a value, or unset it"
			if f.def != "" {
				problem += " to use the default"
			}
			return zero, &Error{Var: f.name, Problem: problem}
		}
	}
	c, err := env.ParseAsWithOptions[T](env.Options{Environment: environ})
	if err != nil {
		return zero, describe(err, fields)
	}
	return c, nil
}

type envField struct {
	field  string
	name   string
	kind   reflect.Type
	secret bool
	def    string // envDefault
}

func envFields(t reflect.Type) []envField {
	var out []envField
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			out = append(out, envFields(sf.Type)...)
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("env"), ",")
		if name == "" {
			continue
		}
		out = append(out, envField{field: sf.Name, name: name, kind: sf.Type, secret: sf.Tag.Get("secret") == "true",
			def: sf.Tag.Get("envDefault")})
	}
	return out
}

func describe(err error, fields []envField) error {
	var agg env.AggregateError
	if errors.As(err, &agg) && len(agg.Errors) > 0 {
		err = agg.Errors[0]
	}
	var pe env.ParseError
	if errors.As(err, &pe) {
		for _, f := range fields {
			if f.field == pe.Name {
				return &Error{Var: f.name, Problem: expectation(f.kind)}
			}
		}
	}
	var notSet env.VarIsNotSetError
	if errors.As(err, &notSet) {
		return &Error{Var: notSet.Key, Problem: "is required"}
	}
	// Other env/v11 errors concern the struct definitions, not the values, so they cannot leak one.
	return fmt.Errorf("configuration: %w", err)
}

func expectation(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "must be a duration such as 30s, 5m or 24h"
	case t.Kind() == reflect.Bool:
		return "must be true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "must be a whole number"
	}
	return "has an invalid value"
}
