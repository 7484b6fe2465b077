package tracking_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// TestStopMidBatch cancels Run's context, as SIGTERM does through cli.SignalContext, while a
// batch is waiting on MESH. Within the shutdown grace the batch in hand finishes: every export it
// locked is moved on and its event enqueued. Past the grace nothing of the batch is committed, so
// every export stays accepted and due, and no event exists for a transition that did not happen.
func TestStopMidBatch(t *testing.T) {
	const exports = 4
	tests := []struct {
		name         string
		grace        time.Duration
		acknowledged int
	}{
		{name: "batch finishes within the grace", grace: time.Minute, acknowledged: exports},
		{name: "grace runs out", grace: time.Millisecond, acknowledged: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for range exports {
				e.sendExport(t, 1)
			}
			if got := e.actAsDPS(t); got != exports {
				t.Fatalf("DPS acknowledged %d messages, want %d", got, exports)
			}
			// Each tracking request is slow, so the batch is still asking MESH when the stop comes.
			e.sandbox.InjectFault(meshsandbox.Fault{Route: meshsandbox.RouteTrack, Latency: 300 * time.Millisecond})

			cfg := e.trackerConfig(e.pool, slog.New(slog.DiscardHandler))
			cfg.BatchSize = exports
			cfg.ShutdownGrace = tt.grace
			tr, err := tracking.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(t.Context())
			defer stop()
			done := make(chan error, 1)
			go func() { done <- tr.Run(ctx) }()

			// The first tracking request has reached MESH: the batch is locked and in hand.
			waitFor(t, "first tracking request", func() bool { return e.sandbox.Requests(meshsandbox.RouteTrack) >= 1 })
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after the stop: %v", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Run did not return after the stop")
			}

			if got := e.countStatus(t, "acknowledged"); got != tt.acknowledged {
				t.Errorf("%d exports acknowledged after the stop, want %d", got, tt.acknowledged)
			}
			if got := e.countStatus(t, "accepted"); got != exports-tt.acknowledged {
				t.Errorf("%d exports still accepted after the stop, want %d", got, exports-tt.acknowledged)
			}
			if got := e.outboxCount(t, bus.SubjectExportAcknowledged); got != tt.acknowledged {
				t.Errorf("%d dps.export.acknowledged events enqueued, want %d (one per committed transition)", got, tt.acknowledged)
			}
			if tt.acknowledged == exports {
				if got := e.sandbox.Requests(meshsandbox.RouteTrack); got != exports {
					t.Errorf("MESH was asked %d times, want once per export of the batch (%d)", got, exports)
				}
			}
		})
	}
}
