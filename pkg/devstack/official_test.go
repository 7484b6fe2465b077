package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// Environment of the opt-in run against the official NHS MESH sandbox (github.com/NHSDigital/mesh-sandbox,
// AUTH_MODE=full, SHARED_KEY=TestKey). Its code is never part of this repository, so the test is skipped
// unless somebody started one and says where.
const (
	officialSandboxURLEnv = "MESH_OFFICIAL_SANDBOX_URL" // as pkg/mesh's interop test
	officialSandboxCAEnv  = "MESH_OFFICIAL_SANDBOX_CA"  // optional, https only: the CA that signed its certificate
)

// TestOfficialSandbox runs the whole pipeline against the official sandbox through the same flags an
// operator would give: every export must be acknowledged and every exportable record reach DPS once.
// A message already waiting in the DPS mailbox before the run must be left alone.
func TestOfficialSandbox(t *testing.T) {
	base := os.Getenv(officialSandboxURLEnv)
	if base == "" {
		t.Skipf("%s not set: this test needs a running official MESH sandbox (e.g. http://127.0.0.1:8700)", officialSandboxURLEnv)
	}
	args := []string{"--once", "--records", "300", "--senders", "2", "--mesh-url", base}
	if strings.HasPrefix(base, "https://") {
		// The official sandbox's own certificate has no subjectAltName, which Go never accepts.
		if ca := os.Getenv(officialSandboxCAEnv); ca != "" {
			args = append(args, "--mesh-ca", ca)
		} else {
			args = append(args, "--mesh-insecure")
		}
	}
	cfg, err := parseFlags(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	cfg.DatabaseURL, cfg.RecreateDatabase, cfg.Seed = pgtest.NewDatabase(t), false, 11

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	leftover := plantLeftover(t, ctx, cfg.MESH)

	cfg.Stdout, cfg.Stderr = stackOutput(t, 100)
	s, err := start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the stack against %s: %v", base, err)
	}
	t.Cleanup(s.Close)
	if s.sandbox != nil || !s.external {
		t.Fatal("the stack started its own sandbox")
	}
	requests, err := s.RequestAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(ctx, requests); err != nil {
		t.Fatalf("pipeline did not finish against %s: %v", base, err)
	}
	if err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	exports := requireAllAcknowledged(t, ctx, s)
	for _, f := range s.dps.received() {
		if f.MessageID == leftover {
			t.Errorf("DPS took message %s, which was in its inbox before the run", leftover)
		}
	}
	t.Logf("%s: %d exports %s, %d exportable records at DPS once each", base, exports, s.finalStatus(), s.seeded.Exportable)
}

// plantLeftover sends a message that is not a DPS file to the DPS mailbox, as an earlier run or another
// test could have, and acknowledges it at cleanup so that the sandbox is left as it was found.
func plantLeftover(t *testing.T, ctx context.Context, m ExternalMESH) string {
	t.Helper()
	var ca []byte
	if m.CAFile != "" {
		var err error
		if ca, err = os.ReadFile(m.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	tlsConfig, err := mesh.TLSConfig(mesh.TLSOptions{CABundlePEM: ca, InsecureSkipVerify: m.Insecure})
	if err != nil {
		t.Fatal(err)
	}
	client := func(mailbox string) *mesh.Client {
		c, err := mesh.New(mesh.Config{BaseURL: m.URL, Mailbox: mailbox, Password: m.Password, SharedKey: m.SharedKey,
			TLS: tlsConfig, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	id, err := client(m.OurMailbox).Send(ctx, mesh.OutboundMessage{To: m.DPSMailbox, WorkflowID: dpsWorkflowID,
		FileName: "not-a-dps-file.txt", LocalID: "devstack-leftover-" + randomSecret()[:8], Body: strings.NewReader("left over")})
	if err != nil {
		t.Fatalf("plant a leftover message in %s: %v", m.DPSMailbox, err)
	}
	dps := client(m.DPSMailbox)
	t.Cleanup(func() {
		if err := dps.Acknowledge(context.WithoutCancel(ctx), id); err != nil {
			t.Errorf("acknowledge the leftover message %s: %v", id, err)
		}
	})
	return id
}
