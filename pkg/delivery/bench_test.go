package delivery

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
)

// benchFiles is how many exports one benchmark iteration delivers.
const benchFiles = 100

type benchWorld struct {
	*testenv.Env
	b *testing.B
}

func newBenchWorld(b *testing.B, latency time.Duration) *benchWorld {
	w := &benchWorld{Env: testenv.New(b, testenv.Options{}), b: b}
	if latency > 0 {
		w.Sandbox.InjectFault(meshsandbox.Fault{Latency: latency})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: w.Pool, JS: w.JS, Interval: 50 * time.Millisecond})
		if err == nil {
			_ = relay.Run(ctx)
		}
	})
	b.Cleanup(func() { cancel(); wg.Wait() })
	return w
}

// makeExports creates n exports of 20 rows each, unpublished.
func (w *benchWorld) makeExports(n int) []testenv.Export {
	out := make([]testenv.Export, n)
	for i := range out {
		out[i] = w.CreateExport(context.Background(), 20)
	}
	return out
}

// deliver publishes the exports and runs replicas senders until all are accepted; it returns the time
// from the first publish to the last acceptance.
func (w *benchWorld) deliver(xs []testenv.Export, replicas int) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range replicas {
		client := w.MESHClient(testenv.OurMailbox, testenv.OurPassword, 0)
		s, err := New(Config{Pool: w.Pool, JS: w.JS, Objects: w.Objects, MESH: client,
			DPSMailbox: testenv.DPSMailbox, WorkflowID: testenv.WorkflowID, JobsEnabled: true, FetchWait: 100 * time.Millisecond})
		if err != nil {
			w.b.Fatal(err)
		}
		wg.Go(func() { _ = s.Run(ctx) })
	}
	before := w.CountStatus(ctx, lifecycle.Accepted)
	started := time.Now()
	for _, x := range xs {
		w.Publish(ctx, x.Ready)
	}
	for w.CountStatus(ctx, lifecycle.Accepted) < before+len(xs) {
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(started)
	cancel()
	wg.Wait()
	return elapsed
}

// bareLoop sends the same files with pkg/mesh alone, one after another.
func (w *benchWorld) bareLoop(xs []testenv.Export) time.Duration {
	client := w.MESHClient(testenv.OurMailbox, testenv.OurPassword, 0)
	started := time.Now()
	for _, x := range xs {
		if _, err := client.Send(context.Background(), mesh.OutboundMessage{
			To: testenv.DPSMailbox, WorkflowID: testenv.WorkflowID, FileName: x.Ready.Filename,
			LocalID: "bare-" + x.Ready.ExportID, ContentType: "text/csv", Compress: true, Body: bytes.NewReader(x.Body),
		}); err != nil {
			w.b.Fatal(err)
		}
	}
	return time.Since(started)
}

// BenchmarkSenderVsBareLoop compares one sender (concurrency 1) delivering exports end to end (lock,
// attempt ledger, object read twice, send, commit, outbox, ack) with a bare loop of mesh.Client.Send of
// the same files to the same sandbox. Goal: sender time ≤ 1.2 × the loop's.
func BenchmarkSenderVsBareLoop(b *testing.B) {
	for _, latency := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%s", latency), func(b *testing.B) {
			w := newBenchWorld(b, latency)
			var bare, sender time.Duration
			for b.Loop() {
				b.StopTimer()
				xs := w.makeExports(benchFiles)
				b.StartTimer()
				bare += w.bareLoop(xs)
				sender += w.deliver(xs, 1)
			}
			n := float64(b.N * benchFiles)
			b.ReportMetric(n/bare.Seconds(), "bare_files/s")
			b.ReportMetric(n/sender.Seconds(), "sender_files/s")
			b.ReportMetric(sender.Seconds()/bare.Seconds(), "sender/bare_time")
		})
	}
}

// BenchmarkReplicas compares 1 and 3 senders sharing the consumer, with 20 ms added to every MESH
// request. Goal: 3 replicas ≥ 2.5 × the throughput of 1.
func BenchmarkReplicas(b *testing.B) {
	w := newBenchWorld(b, 20*time.Millisecond)
	var one, three time.Duration
	for b.Loop() {
		b.StopTimer()
		xs1, xs3 := w.makeExports(benchFiles), w.makeExports(benchFiles)
		b.StartTimer()
		one += w.deliver(xs1, 1)
		three += w.deliver(xs3, 3)
	}
	n := float64(b.N * benchFiles)
	b.ReportMetric(n/one.Seconds(), "1_replica_files/s")
	b.ReportMetric(n/three.Seconds(), "3_replicas_files/s")
	b.ReportMetric(one.Seconds()/three.Seconds(), "speedup")
}
