package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/gobuild"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// shippedPermissions is pkg/natsserver/conf/permissions.conf, the users and permissions the project ships.
func shippedPermissions(t *testing.T) []byte {
	t.Helper()
	root, err := gobuild.ModuleRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "pkg", "natsserver", "conf", "permissions.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// userURL puts user:password into a nats:// URL.
func userURL(url, user, password string) string {
	return strings.Replace(url, "nats://", "nats://"+user+":"+password+"@", 1)
}

// TestRequesterMayOnlyRequest runs a server with the shipped pkg/natsserver/conf/permissions.conf. The producer user
// declares the topology; the requester user can run `producer request` and subscribe to the events,
// and nothing else: `producer topology`, `producer export`, `producer run` and `producer
// dead-letters` exit 2 naming the permission violation, and publishing anything but
// dps.export.request or reading any other subject is refused.
func TestRequesterMayOnlyRequest(t *testing.T) {
	passwords := map[string]string{"producer": "p-secret-1", "sender": "s-secret-2", "tracker": "t-secret-3", "requester": "r-secret-4"}
	for user, pw := range passwords {
		t.Setenv("NATS_"+strings.ToUpper(user)+"_PASSWORD", pw)
	}
	_, url := natstest.RunConfig(t, "include ./permissions.conf\n", map[string][]byte{"permissions.conf": shippedPermissions(t)})
	s := &stack{t: t, bin: producerBinary(t), dbURL: pgtest.NewDatabase(t), natsURL: userURL(url, "producer", passwords["producer"])}
	s.mustRun("topology")
	s.mustRun("seed", "--records", "20")

	requester := userURL(url, "requester", passwords["requester"])
	asRequester := func(args ...string) (string, string, int) {
		return s.run(s.env("NATS_URL="+requester, "HTTP_ADDR="+freeAddr(t)), args...)
	}
	out, stderr, code := asRequester("request", "--programme", "HPV", "--request-id", "req-perm-1", "--wait", "20s")
	if code != 0 || !strings.Contains(out, `"request_id":"req-perm-1"`) {
		t.Fatalf("producer request as the requester: exit %d\n%s%s", code, out, stderr)
	}

	for _, args := range [][]string{
		{"topology", "--wait", "20s"},
		{"export", "--programme", "HPV", "--wait", "20s"},
		{"run"},
		{"dead-letters"},
	} {
		_, stderr, code := asRequester(args...)
		if code != 2 || !strings.Contains(stderr, "ermissions violation") {
			t.Errorf("producer %v as the requester: exit %d, want 2 and the permission violation\n%s", args, code, stderr)
		}
		if strings.Contains(stderr, passwords["requester"]) {
			t.Errorf("producer %v printed the password", args)
		}
	}

	// A client of another system, as the requester: its request and the events, nothing more.
	denied := make(chan error, 16)
	nc, err := nats.Connect(requester, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := nc.SubscribeSync(bus.SubjectExportAcknowledged)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		t.Fatalf("subscribing to %s: %v", bus.SubjectExportAcknowledged, err)
	case <-time.After(300 * time.Millisecond):
	}
	_ = events.Unsubscribe()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, bus.SubjectExportReady, []byte(`{}`)); err == nil {
		t.Error("the requester published on dps.export.ready")
	}
	wantDenied(t, denied, `Publish to "dps.export.ready"`)
	if _, err := nc.SubscribeSync(bus.SubjectExportReady); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	wantDenied(t, denied, `Subscription to "dps.export.ready"`)
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "MINE", Subjects: []string{"mine.>"}}); err == nil {
		t.Error("the requester created a stream")
	}
	wantDenied(t, denied, `Publish to "$JS.API.STREAM.CREATE.MINE"`)
}

func wantDenied(t *testing.T, denied <-chan error, what string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-denied:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
				t.Logf("refused, as it should be: %v", err)
				return
			}
		case <-deadline:
			t.Errorf("no permission violation for %s", what)
			return
		}
	}
}
