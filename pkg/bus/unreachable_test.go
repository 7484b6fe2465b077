package bus_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

// noServer returns a local port nothing listens on (it was free a moment ago) and a JSON logger that
// writes to logs, for tests of Connect while NATS is away.
func noServer(t *testing.T) (port int, logs *proctest.Buffer, log *slog.Logger) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	logs = new(proctest.Buffer)
	if log, err = logging.New(logs, 0, logging.FormatJSON); err != nil {
		t.Fatal(err)
	}
	return port, logs, log
}

// TestUnreachableNATSWarnsWithoutThePassword: while NATS cannot be reached, Connect says so in a WARN
// every WarnEvery, naming the server it tries, never the user or password in NATS_URL.
func TestUnreachableNATSWarnsWithoutThePassword(t *testing.T) {
	port, logs, log := noServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	_, _, err := bus.Connect(ctx, bus.ConnectOptions{URL: fmt.Sprintf("nats://alice:s3cret-pw@127.0.0.1:%d", port),
		Name: "unreachable-test", Log: log, WarnEvery: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	out := logs.String()
	warns := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "waiting for NATS") {
			warns++
			if !strings.Contains(line, fmt.Sprintf("127.0.0.1:%d", port)) {
				t.Errorf("WARN does not name the server: %s", line)
			}
		}
	}
	if warns < 3 {
		t.Errorf("%d WARN lines in 1.5 s, want one every 200 ms:\n%s", warns, out)
	}
	if strings.Contains(out, "s3cret-pw") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("the password is in the logs or the error:\n%s\n%v", out, err)
	}
}
