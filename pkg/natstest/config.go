package natstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
)

// RunConfig starts an embedded server from a nats-server configuration text, as `nats-server -c`
// would read it, with files (name → content) written next to it for its include directives, and
// returns it with its client URL. The listen address, store directory, logging and signals are
// overridden as Run sets them. Variables the configuration takes from the environment ($NAME) must
// be set before the call. The server is shut down when the test ends.
func RunConfig(t testing.TB, conf string, files map[string][]byte) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatalf("natstest: %v", err)
		}
	}
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("natstest: %s: %v", path, err)
	}
	def := natsserver.DefaultOptions()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = def.Host, def.Port, true, true
	opts.JetStream, opts.StoreDir = true, filepath.Join(dir, "store")
	opts.JetStreamMaxMemory, opts.JetStreamMaxStore = def.JetStreamMaxMemory, def.JetStreamMaxStore
	srv, err := natsserver.Start(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv, srv.ClientURL()
}
