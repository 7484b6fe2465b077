package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// clearEnv unsets every variable this package reads so that the machine's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, typ := range []any{Producer{}, Sender{}, Tracker{}} {
		for _, f := range envFields(reflectType(typ)) {
			for _, name := range []string{f.name, f.name + "_FILE"} {
				if v, ok := os.LookupEnv(name); ok {
					os.Unsetenv(name)
					t.Cleanup(func() { os.Setenv(name, v) })
				}
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	clearEnv(t)
	t.Setenv("DPS_SENDER_ODS_CODE", "v0v8l")
	p, err := LoadProducer()
	if err != nil {
		t.Fatal(err)
	}
	if p.DatabaseURL != "postgres://postgres@127.0.0.1:5432/dps?sslmode=disable" || p.NATSURL != "nats://127.0.0.1:4222" ||
		p.Schedule != "0 2 * * *" || p.HTTPAddr != DefaultProducerHTTPAddr || p.LogFormat != "auto" || p.SenderODS != "V0V8L" {
		t.Errorf("unexpected defaults: %+v", p)
	}
	s, err := LoadSender()
	if err != nil {
		t.Fatalf("sender must start with the MESH gate off and no MESH settings: %v", err)
	}
	if s.JobsEnabled || s.ChunkSize != 20<<20 {
		t.Errorf("sender defaults: %+v", s.MESH)
	}
	tr, err := LoadTracker()
	if err != nil {
		t.Fatal(err)
	}
	if tr.PollInterval != time.Minute || tr.HandshakeInterval != 24*time.Hour {
		t.Errorf("tracker defaults: %+v", tr)
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	meshOn := map[string]string{
		"MESH_JOBS_ENABLED": "true", "MESH_MAILBOX": "X26ABC1", "MESH_PASSWORD": "pw-secret-value",
		"MESH_SHARED_KEY": "TestKey", "MESH_DPS_MAILBOX": "X26ABC2", "MESH_DPS_WORKFLOW_ID": "WF",
	}
	tests := []struct {
		name    string
		env     map[string]string
		load    func() error
		wantVar string
	}{
		{"gate not a bool", map[string]string{"MESH_JOBS_ENABLED": "maybe"}, loadSender, "MESH_JOBS_ENABLED"},
		{"gate not a bool tracker", map[string]string{"MESH_JOBS_ENABLED": "maybe"}, loadTracker, "MESH_JOBS_ENABLED"},
		{"gate not a bool producer", map[string]string{"MESH_JOBS_ENABLED": "maybe"}, loadProducer, "MESH_JOBS_ENABLED"},
		{"bad duration", map[string]string{"TRACKER_POLL_INTERVAL": "often"}, loadTracker, "TRACKER_POLL_INTERVAL"},
		{"bad log format", map[string]string{"LOG_FORMAT": "xml"}, loadProducer, "LOG_FORMAT"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, loadProducer, "LOG_LEVEL"},
		{"bad schedule", map[string]string{"PRODUCER_SCHEDULE": "every night"}, loadProducer, "PRODUCER_SCHEDULE"},
		{"bad database url", map[string]string{"DATABASE_URL": "mysql://x"}, loadProducer, "DATABASE_URL"},
		{"unparseable database url", map[string]string{"DATABASE_URL": "postgres://u:hunter22@[bad"}, loadSender, "DATABASE_URL"},
		{"database url bad port", map[string]string{"DATABASE_URL": "postgres://u:hunter22@db:notaport/dps"}, loadTracker, "DATABASE_URL"},
		{"database url bad sslmode", map[string]string{"DATABASE_URL": "postgres://db/dps?sslmode=sometimes"}, loadProducer, "DATABASE_URL"},
		{"nats url scheme", map[string]string{"NATS_URL": "http://127.0.0.1:4222"}, loadProducer, "NATS_URL"},
		{"nats url no host", map[string]string{"NATS_URL": "nats://:4222"}, loadSender, "NATS_URL"},
		{"nats url bad port", map[string]string{"NATS_URL": "nats://tok3n-secret@host:99999"}, loadTracker, "NATS_URL"},
		{"nats url empty entry", map[string]string{"NATS_URL": "nats://a:4222,,nats://b:4222"}, loadProducer, "NATS_URL"},
		{"http addr no port", map[string]string{"HTTP_ADDR": "nonsense"}, loadProducer, "HTTP_ADDR"},
		{"http addr bad port", map[string]string{"HTTP_ADDR": "127.0.0.1:http-ish"}, loadSender, "HTTP_ADDR"},
		{"gate on, no mailbox", map[string]string{"MESH_JOBS_ENABLED": "true"}, loadSender, "MESH_MAILBOX"},
		{"gate on, no workflow", without(meshOn, "MESH_DPS_WORKFLOW_ID"), loadSender, "MESH_DPS_WORKFLOW_ID"},
		{"chunk too large", with(meshOn, "MESH_CHUNK_SIZE", "200000000"), loadSender, "MESH_CHUNK_SIZE"},
		{"key without certificate", with(meshOn, "MESH_PRIVATE_KEY", "-----BEGIN"), loadSender, "MESH_CERTIFICATE"},
		{"operator command without password", map[string]string{"MESH_MAILBOX": "X26ABC1"}, loadMESH, "MESH_PASSWORD"},
		{"sender concurrency", map[string]string{"SENDER_CONCURRENCY": "0"}, loadSender, "SENDER_CONCURRENCY"},
		{"replicas", map[string]string{"NATS_STREAM_REPLICAS": "2"}, loadProducer, "NATS_STREAM_REPLICAS"},
		{"no sender ODS code where files are built", map[string]string{}, loadProducerForFiles, "DPS_SENDER_ODS_CODE"},
		{"sender ODS code with underscore", map[string]string{"DPS_SENDER_ODS_CODE": "V0_V8L"}, loadProducer, "DPS_SENDER_ODS_CODE"},
		{"sender ODS code too long", map[string]string{"DPS_SENDER_ODS_CODE": "ABCDEFGHIJK"}, loadProducer, "DPS_SENDER_ODS_CODE"},
		{"sender ODS code too short", map[string]string{"DPS_SENDER_ODS_CODE": "AB"}, loadProducer, "DPS_SENDER_ODS_CODE"},
		{"route to an unknown programme", with(meshOn, "MESH_ROUTES", "FLU=X26ABC2:FLUWORKFLOW,MMR=X26ABC4:IMMS"), loadSender, "MESH_ROUTES"},
		{"route without workflow", map[string]string{"MESH_ROUTES": "FLU=X26XYZ9"}, loadSender, "MESH_ROUTES"},
		{"route without programme", map[string]string{"MESH_ROUTES": "=X26ABC2:WF"}, loadSender, "MESH_ROUTES"},
		{"route twice", map[string]string{"MESH_ROUTES": "FLU=X26ABC2:WF,FLU=X26ABC3:WF"}, loadSender, "MESH_ROUTES"},
		{"route bad mailbox", map[string]string{"MESH_ROUTES": "FLU=X26 ABC2:WF"}, loadSender, "MESH_ROUTES"},
		{"route bad workflow", map[string]string{"MESH_ROUTES": "FLU=X26ABC2:W F"}, loadSender, "MESH_ROUTES"},
		{"programme code not vaccine type", map[string]string{"MESH_ROUTES": "3IN1=X26ABC2:WF"}, loadSender, "MESH_ROUTES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			err := tt.load()
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *config.Error, got %v", err)
			}
			if ce.Var != tt.wantVar || !strings.HasPrefix(err.Error(), tt.wantVar+": ") {
				t.Errorf("error %q names %s, want %s", err, ce.Var, tt.wantVar)
			}
			for _, v := range tt.env {
				if len(v) > 4 && strings.Contains(err.Error(), v) {
					t.Errorf("error %q quotes the value %q", err, v)
				}
			}
		})
	}
}

func TestSecretsFromFiles(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESH_MAILBOX", "X26ABC1")
	t.Setenv("MESH_PASSWORD_FILE", pw)
	t.Setenv("MESH_SHARED_KEY", "TestKey")
	m, err := LoadMESH()
	if err != nil {
		t.Fatal(err)
	}
	if m.Password != "from-a-file" {
		t.Errorf("password from file = %q", m.Password)
	}

	t.Setenv("MESH_PASSWORD", "also-set")
	if _, err := LoadMESH(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("both set: err = %v", err)
	}
	os.Unsetenv("MESH_PASSWORD")
	t.Setenv("MESH_PASSWORD_FILE", filepath.Join(dir, "missing"))
	err = func() error { _, err := LoadMESH(); return err }()
	if err == nil || !strings.HasPrefix(err.Error(), "MESH_PASSWORD_FILE: ") {
		t.Errorf("missing file: err = %v", err)
	}
}

func loadProducer() error { _, err := LoadProducer(); return err }
func loadProducerForFiles() error {
	c, err := LoadProducer()
	if err != nil {
		return err
	}
	return c.RequireSenderODS()
}
func loadSender() error  { _, err := LoadSender(); return err }
func loadTracker() error { _, err := LoadTracker(); return err }
func loadMESH() error    { _, err := LoadMESH(); return err }

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for mk, mv := range m {
		if mk != k {
			out[mk] = mv
		}
	}
	return out
}

func without(m map[string]string, k string) map[string]string {
	out := map[string]string{}
	for mk, mv := range m {
		if mk != k {
			out[mk] = mv
		}
	}
	return out
}

func reflectType(v any) reflect.Type { return reflect.TypeOf(v) }

// TestEverySecretFromFile: each secret variable may be given as <NAME>_FILE, and the value read (less a
// trailing newline) is the one used.
func TestEverySecretFromFile(t *testing.T) {
	tests := []struct {
		name  string
		value string
		get   func(Sender) string
	}{
		{"DATABASE_URL", "postgres://dps:file-pw@db:5432/dps?sslmode=disable", func(s Sender) string { return s.DatabaseURL }},
		{"NATS_URL", "nats://user:file-pw@nats:4222", func(s Sender) string { return s.NATSURL }},
		{"MESH_PASSWORD", "file-password", func(s Sender) string { return s.Password }},
		{"MESH_SHARED_KEY", "file-shared-key", func(s Sender) string { return s.SharedKey }},
		{"MESH_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----", func(s Sender) string { return s.PrivateKey }},
		{"MESH_PRIVATE_KEY_PASSPHRASE", "file-passphrase", func(s Sender) string { return s.PrivateKeyPassphrase }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			if tt.name == "MESH_PRIVATE_KEY" {
				t.Setenv("MESH_CERTIFICATE", "-----BEGIN CERTIFICATE-----")
			}
			path := filepath.Join(t.TempDir(), "secret")
			if err := os.WriteFile(path, []byte(tt.value+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv(tt.name+"_FILE", path)
			s, err := LoadSender()
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(s); got != tt.value {
				t.Errorf("%s from file = %q, want %q", tt.name, got, tt.value)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	clearEnv(t)
	t.Setenv("MESH_JOBS_ENABLED", "true")
	t.Setenv("MESH_MAILBOX", "X26ABC1")
	t.Setenv("MESH_PASSWORD", "pw")
	t.Setenv("MESH_SHARED_KEY", "TestKey")
	t.Setenv("MESH_DPS_MAILBOX", "X26ABC2")
	t.Setenv("MESH_DPS_WORKFLOW_ID", "DPSFULL")
	t.Setenv("MESH_ROUTES", " FLU=X26ABC2:FLUWORKFLOW , HPV=x26abc4:IMMS")
	s, err := LoadSender()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Route{"FLU": {"X26ABC2", "FLUWORKFLOW"}, "HPV": {"X26ABC4", "IMMS"}}
	if !reflect.DeepEqual(s.Routes, want) {
		t.Fatalf("routes %+v, want %+v", s.Routes, want)
	}
	// With a route for every programme, the default destination is not needed.
	os.Unsetenv("MESH_DPS_MAILBOX")
	os.Unsetenv("MESH_DPS_WORKFLOW_ID")
	if _, err := LoadSender(); err == nil || !strings.HasPrefix(err.Error(), "MESH_DPS_MAILBOX") {
		t.Fatalf("two programmes routed, no default: %v", err)
	}
	t.Setenv("MESH_ROUTES", "FLU=A1B:W,HPV=A1B:W,MENACWY=A1B:W,TD_IPV=A1B:W")
	if _, err := LoadSender(); err != nil {
		t.Fatalf("every programme routed, no default: %v", err)
	}
}
