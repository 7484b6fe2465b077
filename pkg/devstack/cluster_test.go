package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// TestCluster runs the whole pipeline (producer, two senders, tracker as real processes, each as its
// own NATS user of pkg/natsserver/conf/permissions.conf) on a JetStream cluster of real nats-server processes with R3
// streams, and SIGKILLs nodes while batches are in flight, with no supervisor:
//   - three nodes, the processes started while only one node runs (no meta leader: each must wait
//     with /healthz 503 naming nats), then the leader of DPS_BATCHES killed and restarted, with
//     `producer request` run as the requester user while the cluster re-elects;
//   - five nodes, the leader of DPS_BATCHES killed, then the leader of the sender consumer, both down
//     at once, then both restarted.
//
// Each ends with every export acknowledged, each file once at the MESH sandbox, every exportable record
// there once, no process exit, no failed command and no permission violation.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster: builds nats-server and runs every process (skipped with -short)")
	}
	tests := []struct {
		name  string
		nodes int
		cold  bool
		kills []string // what to kill, one after the other: "stream" (DPS_BATCHES) or "consumer" (sender)
	}{
		{"three nodes, cold start, DPS_BATCHES leader killed", 3, true, []string{"stream"}},
		{"five nodes, two killed one after the other", 5, false, []string{"stream", "consumer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testCluster(t, tt.nodes, tt.cold, tt.kills)
		})
	}
}

func testCluster(t *testing.T, nodes int, cold bool, kills []string) {
	dbURL := pgtest.NewDatabase(t)
	out, logs := stackOutput(t, 200)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	s, err := start(ctx, Config{
		Once: true, Records: 600, Seed: 16, Senders: 2,
		DatabaseURL: dbURL, LogLevel: "info",
		NATSCluster: nodes, ColdCluster: cold,
		// The receiver's replies are TestReceiverOutcomes' subject; here exports end acknowledged, so
		// that the run measures NATS faults alone.
		NoReceiver: true,
		Stdout:     out, Stderr: logs,
	})
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	t.Cleanup(s.Close)
	if cold && !strings.Contains(out.String(), "started the other") {
		t.Fatal("the cold start did not hold the other nodes back")
	}

	requests, err := s.RequestAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitForFirstExport(t, ctx, s)
	atKill := s.board.counts()
	var killed []int
	for _, what := range kills {
		consumer := ""
		if what == "consumer" {
			consumer = bus.ConsumerSender
		}
		i, err := s.KillLeader(ctx, bus.StreamBatches, consumer)
		if err != nil {
			t.Fatal(err)
		}
		killed = append(killed, i)
		time.Sleep(time.Second)
	}
	if atKill.Acknowledged >= len(requests) {
		t.Fatalf("nodes killed only after every export was acknowledged (%s): not mid-run", atKill)
	}
	if cold {
		// Another system asks for an export while the cluster re-elects: the requester's command waits
		// for the stream and succeeds.
		cmd := s.Command(ctx, "producer", []string{"request", "--programme", "HPV", "--request-id", "during-election", "--wait", "2m"},
			"NATS_URL="+s.natsURLFor("requester"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("producer request as the requester during the election: %v\n%s", err, b)
		}
		requests = append(requests, "during-election")
	}
	time.Sleep(3 * time.Second)
	for _, i := range killed {
		if err := s.RestartNode(i); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.Wait(ctx, requests); err != nil {
		t.Fatalf("pipeline did not finish: %v", err)
	}
	if err := s.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	exports := requireAllAcknowledged(t, ctx, s)
	files := s.dps.received()
	if len(files) != exports {
		t.Fatalf("the MESH sandbox received %d files for %d exports", len(files), exports)
	}
	select {
	case e := <-s.exited:
		t.Fatalf("%s exited: %v", e.name, e.err)
	default:
	}
	// Every stream, consumer and the bucket is R3 as declared by the services, and `producer topology
	// --dry-run` (as the producer user) finds nothing to change.
	for _, name := range []string{bus.StreamRequests, bus.StreamBatches, bus.StreamEvents, bus.StreamDeadLetter, "OBJ_" + bus.BucketExports} {
		st, err := streamInfo(ctx, s, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}
	cmd := s.Command(ctx, "producer", []string{"topology", "--dry-run"})
	plan, err := cmd.Output()
	if err != nil || strings.Count(string(plan), ": unchanged\n") != 8 {
		t.Errorf("producer topology --dry-run after the run: %v\n%s", err, plan)
	}
	if l := logs.String(); strings.Contains(l, "ermissions Violation") {
		t.Errorf("a process met a permission violation:\n%s", grep(l, "ermissions Violation"))
	}
	t.Logf("%d nodes, killed %v at %s: %d exports, each once at MESH, all acknowledged\n%s", nodes, kills, atKill, exports,
		grep(out.String(), "NATS "))
}

// streamInfo asks for a stream's info, one short attempt at a time: a request made while a restarted
// node catches up can go unanswered, and one lost request must not use up the whole test's deadline.
func streamInfo(ctx context.Context, s *Stack, name string) (jetstream.Stream, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := s.js.Stream(attempt, name)
		cancel()
		if err == nil || ctx.Err() != nil {
			return st, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
