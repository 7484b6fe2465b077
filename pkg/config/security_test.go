package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmptyValueIsAnError: a variable set to nothing is refused, naming it, instead of meaning its
// default (DATABASE_URL= used to mean the default database).
func TestEmptyValueIsAnError(t *testing.T) {
	for _, name := range []string{"DATABASE_URL", "NATS_URL", "LOG_LEVEL", "HTTP_ADDR", "PRODUCER_SCHEDULE", "DPS_OBJECT_RETENTION", "MESH_BASE_URL"} {
		t.Run(name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(name, "  ")
			var err error
			if strings.HasPrefix(name, "MESH_") {
				_, err = LoadSender()
			} else {
				_, err = LoadProducer()
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Var != name || !strings.Contains(ce.Problem, "empty") {
				t.Fatalf("got %v, want an error naming %s as empty", err, name)
			}
		})
	}
}

// TestEmptySecretFileIsAnError: <NAME>_FILE naming an empty file is refused, naming the _FILE variable.
func TestEmptySecretFileIsAnError(t *testing.T) {
	clearEnv(t)
	f := filepath.Join(t.TempDir(), "db-url")
	if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL_FILE", f)
	_, err := LoadProducer()
	var ce *Error
	if !errors.As(err, &ce) || ce.Var != "DATABASE_URL_FILE" {
		t.Fatalf("got %v, want an error naming DATABASE_URL_FILE", err)
	}
}

// TestObjectRetention: DPS_OBJECT_RETENTION defaults to 7 days and must be a positive duration.
func TestObjectRetention(t *testing.T) {
	clearEnv(t)
	t.Setenv("DPS_SENDER_ODS_CODE", "X26SBX")
	p, err := LoadProducer()
	if err != nil || p.ObjectRetention.Hours() != 168 {
		t.Fatalf("default %v, %v; want 168h", p.ObjectRetention, err)
	}
	for _, v := range []string{"0s", "-1h", "a week"} {
		t.Setenv("DPS_OBJECT_RETENTION", v)
		_, err := LoadProducer()
		var ce *Error
		if !errors.As(err, &ce) || ce.Var != "DPS_OBJECT_RETENTION" {
			t.Errorf("%q: got %v, want an error naming DPS_OBJECT_RETENTION", v, err)
		}
	}
}

// TestNHSHostsNeedTLSVerified: plain http and disabled verification are refused for nhs.uk hosts,
// whatever the gate says, and allowed with a warning elsewhere.
func TestNHSHostsNeedTLSVerified(t *testing.T) {
	tests := []struct {
		name, url, disable, gate string
		wantVar                  string
		wantWarnings             int
	}{
		{"http to integration", "http://msg.intspineservices.nhs.uk", "false", "false", "MESH_BASE_URL", 0},
		{"http to live, gate open", "http://mesh-sync.spineservices.nhs.uk", "false", "true", "MESH_BASE_URL", 0},
		{"verification off for integration", "https://msg.intspineservices.nhs.uk", "true", "false", "MESH_DISABLE_SSL_VERIFICATION", 0},
		{"verification off for nhs.uk itself", "https://NHS.UK.", "true", "false", "MESH_DISABLE_SSL_VERIFICATION", 0},
		{"https verified to integration", "https://msg.intspineservices.nhs.uk", "false", "false", "", 0},
		{"a host that only ends like it", "http://notnhs.uk:8700", "false", "false", "", 1},
		{"http to a sandbox", "http://127.0.0.1:8700", "false", "false", "", 1},
		{"verification off for a sandbox", "https://localhost:8700", "true", "false", "", 1},
		{"not a URL", "msg.intspineservices.nhs.uk", "false", "false", "MESH_BASE_URL", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("MESH_BASE_URL", tt.url)
			t.Setenv("MESH_DISABLE_SSL_VERIFICATION", tt.disable)
			t.Setenv("MESH_JOBS_ENABLED", tt.gate)
			for k, v := range map[string]string{"MESH_MAILBOX": "X26ABC1", "MESH_PASSWORD": "pw", "MESH_SHARED_KEY": "k",
				"MESH_DPS_MAILBOX": "X26ABC2", "MESH_DPS_WORKFLOW_ID": "WF"} {
				t.Setenv(k, v)
			}
			c, err := LoadSender()
			var ce *Error
			switch {
			case tt.wantVar == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantVar != "" && (!errors.As(err, &ce) || ce.Var != tt.wantVar):
				t.Fatalf("got %v, want an error naming %s", err, tt.wantVar)
			}
			if err == nil && len(c.MESH.Warnings()) != tt.wantWarnings {
				t.Errorf("warnings %v, want %d", c.MESH.Warnings(), tt.wantWarnings)
			}
		})
	}
}
