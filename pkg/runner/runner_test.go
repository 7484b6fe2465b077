package runner_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/runner"
)

const testConsumer = "runner-test"

// world is one test's NATS: the pipeline's topology plus a consumer of dps.export.request with the
// ack wait and delivery limit the test needs.
type world struct {
	t   *testing.T
	url string
	js  jetstream.JetStream
}

func newWorld(t *testing.T, ackWait time.Duration, maxDeliver int) *world {
	t.Helper()
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	if err := bus.EnsureTopology(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(t.Context(), bus.StreamRequests, jetstream.ConsumerConfig{
		Durable: testConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: maxDeliver,
		FilterSubject: bus.SubjectExportRequest,
	}); err != nil {
		t.Fatal(err)
	}
	return &world{t: t, url: url, js: js}
}

func (w *world) publish(payload string) {
	w.t.Helper()
	msg := &nats.Msg{Subject: bus.SubjectExportRequest, Data: []byte(payload), Header: nats.Header{}}
	msg.Header.Set("X-Origin", "runner-test")
	if _, err := w.js.PublishMsg(w.t.Context(), msg); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) config(js jetstream.JetStream, h runner.Handler) runner.Config {
	return runner.Config{JS: js, Stream: bus.StreamRequests, Consumer: testConsumer, Stage: bus.StageRequest,
		Handler: h, FetchWait: 200 * time.Millisecond, Backoff: runner.Steps(50 * time.Millisecond)}
}

// start runs a runner until the returned stop is called (or the test ends); stop waits for Run.
func (w *world) start(cfg runner.Config) (stop func()) {
	w.t.Helper()
	r, err := runner.New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			w.t.Errorf("run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	w.t.Cleanup(stop)
	return stop
}

func (w *world) consumerInfo() *jetstream.ConsumerInfo {
	w.t.Helper()
	c, err := w.js.Consumer(w.t.Context(), bus.StreamRequests, testConsumer)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := c.Info(w.t.Context())
	if err != nil {
		w.t.Fatal(err)
	}
	return info
}

// settledOK: every message delivered is acknowledged and none waits.
func (w *world) settledOK() bool {
	ci := w.consumerInfo()
	return ci.NumAckPending == 0 && ci.NumPending == 0
}

func (w *world) deadLetters() []bus.DeadLetterMessage {
	w.t.Helper()
	stored, err := bus.ListDeadLetters(w.t.Context(), w.js, bus.DeadLetterFilter{})
	if err != nil {
		w.t.Fatal(err)
	}
	var out []bus.DeadLetterMessage
	for _, s := range stored {
		out = append(out, s.Message)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder keeps the settlements the runner reports.
type recorder struct {
	mu  sync.Mutex
	got []runner.Settlement
}

func (r *recorder) observe(_ runner.Delivery, s runner.Settlement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

func (r *recorder) settlements() []runner.Settlement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]runner.Settlement(nil), r.got...)
}

// TestHeartbeatKeepsSlowMessage: a handler that works for several ack waits keeps its message: it is
// delivered once, even with a second worker free to take a redelivery.
func TestHeartbeatKeepsSlowMessage(t *testing.T) {
	const ackWait = 300 * time.Millisecond
	w := newWorld(t, ackWait, 5)
	var calls atomic.Int32
	cfg := w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		calls.Add(1)
		time.Sleep(5 * ackWait)
		return runner.Done()
	})
	cfg.Concurrency = 2
	w.start(cfg)
	w.publish(`{"slow": true}`)
	waitFor(t, "the slow message acknowledged", func() bool { return calls.Load() > 0 && w.settledOK() })
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1: the heartbeat did not keep the message", n)
	}
	if ci := w.consumerInfo(); ci.NumRedelivered != 0 {
		t.Fatalf("%d redeliveries, want 0", ci.NumRedelivered)
	}
}

// TestBackoffOnRetry: each retry is naked with the backoff for its delivery number, and the message
// does not come back before that delay; a handler's own delay and lower bound win.
func TestBackoffOnRetry(t *testing.T) {
	w := newWorld(t, 30*time.Second, 10)
	var mu sync.Mutex
	var times []time.Time
	var rec recorder
	cfg := w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		switch d.Number() {
		case 1, 2:
			return runner.Retry(errors.New("database down"))
		case 3:
			return runner.RetryAfter(100*time.Millisecond, errors.New("locked"))
		case 4:
			return runner.Retry(errors.New("MESH busy")).NotBefore(500 * time.Millisecond)
		}
		return runner.Done()
	})
	cfg.Backoff = runner.Steps(200*time.Millisecond, 400*time.Millisecond)
	cfg.Observe = rec.observe
	w.start(cfg)
	w.publish(`{"retry": true}`)
	waitFor(t, "the fifth delivery acknowledged", func() bool { return len(rec.settlements()) == 5 && w.settledOK() })

	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond}
	got := rec.settlements()
	for i, d := range want {
		if got[i].Action != runner.Naked || got[i].Delay != d {
			t.Errorf("delivery %d: %v after %v, want naked after %v", i+1, got[i].Action, got[i].Delay, d)
		}
		// The server holds a naked message for at least its delay.
		if gap := times[i+1].Sub(times[i]); gap < d {
			t.Errorf("delivery %d came %v after the nak, before its %v delay", i+2, gap, d)
		}
	}
	if got[4].Action != runner.Acked {
		t.Errorf("last delivery %v, want acked", got[4].Action)
	}
}

func TestBackoffSchedules(t *testing.T) {
	tests := []struct {
		name string
		b    runner.Backoff
		want []time.Duration // for deliveries 1, 2, …
	}{
		{"exponential doubles up to its limit", runner.Exponential(10*time.Second, time.Minute),
			[]time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}},
		{"steps repeat the last", runner.Steps(time.Second, 5*time.Second),
			[]time.Duration{time.Second, 5 * time.Second, 5 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, want := range tt.want {
				if got := tt.b(uint64(i + 1)); got != want {
					t.Errorf("delivery %d: %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

// TestDeadLetterThenAck: a dead letter is stored with the original payload, headers and reason, and
// only then is the original acknowledged; while the dead letter cannot be stored the message is naked
// and comes back, never dropped.
func TestDeadLetterThenAck(t *testing.T) {
	w := newWorld(t, 30*time.Second, 100)
	dlStream, err := w.js.Stream(t.Context(), bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	dlConfig := dlStream.CachedInfo().Config
	if err := w.js.DeleteStream(t.Context(), bus.StreamDeadLetter); err != nil {
		t.Fatal(err)
	}

	terminated := natstest.CountTerminations(t, w.js.Conn(), bus.StreamRequests, testConsumer)
	var rec recorder
	cfg := w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		return runner.DeadLetter("invalid", "not a request: field x")
	})
	cfg.Observe = rec.observe
	cfg.AckTimeout = 300 * time.Millisecond
	w.start(cfg)
	w.publish(`{"x": 1}`)
	waitFor(t, "a nak while the dead-letter stream is missing", func() bool {
		s := rec.settlements()
		return len(s) > 0 && s[0].Action == runner.Naked && s[0].Err != nil
	})
	if w.settledOK() {
		t.Fatal("the message was acknowledged although its dead letter was not stored")
	}

	if _, err := w.js.CreateStream(t.Context(), dlConfig); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "dead letter stored and original acknowledged", func() bool {
		return len(w.deadLetters()) == 1 && w.settledOK()
	})
	dl := w.deadLetters()[0]
	if dl.Stage != bus.StageRequest || dl.Subject != bus.SubjectExportRequest || dl.Reason != "not a request: field x" ||
		dl.Payload != `{"x": 1}` || len(dl.Headers["X-Origin"]) != 1 || dl.Stream != bus.StreamRequests || dl.StreamSeq != 1 {
		t.Errorf("dead letter %+v", dl)
	}
	if n := terminated(); n != 0 {
		t.Errorf("%d terminations, want the original acknowledged", n)
	}
	last := rec.settlements()[len(rec.settlements())-1]
	if last.Action != runner.DeadLettered || last.Outcome.Label != "invalid" {
		t.Errorf("settlement %+v, want dead_lettered invalid", last)
	}
}

// TestRetryOnLastDeliveryDeadLetters: when the consumer will not deliver a message again, a retry
// becomes a dead letter naming the last error, then an ack: giving up is visible, not silent.
func TestRetryOnLastDeliveryDeadLetters(t *testing.T) {
	w := newWorld(t, 30*time.Second, 2)
	var lastSeen atomic.Bool
	cfg := w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		lastSeen.Store(d.Last)
		return runner.Retry(errors.New("database down"))
	})
	w.start(cfg)
	w.publish(`{"n": 1}`)
	waitFor(t, "dead letter after the last delivery", func() bool { return len(w.deadLetters()) == 1 && w.settledOK() })
	if !lastSeen.Load() {
		t.Error("the handler was not told the delivery was the last")
	}
	if r := w.deadLetters()[0].Reason; !strings.Contains(r, "gave up after 2 deliveries") || !strings.Contains(r, "database down") {
		t.Errorf("reason %q", r)
	}
}

// TestTerminal: a terminated message is neither redelivered nor dead-lettered.
func TestTerminal(t *testing.T) {
	w := newWorld(t, 200*time.Millisecond, 5)
	terminated := natstest.CountTerminations(t, w.js.Conn(), bus.StreamRequests, testConsumer)
	var calls atomic.Int32
	w.start(w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		calls.Add(1)
		return runner.Terminal("recorded elsewhere")
	}))
	w.publish(`{}`)
	waitFor(t, "terminated", func() bool { return calls.Load() == 1 && w.settledOK() && terminated() == 1 })
	time.Sleep(600 * time.Millisecond) // three ack waits: a redelivery would have come
	if n := calls.Load(); n != 1 || len(w.deadLetters()) != 0 {
		t.Errorf("%d deliveries and %d dead letters, want 1 and 0", n, len(w.deadLetters()))
	}
}

// TestPanicRetried: a handler that panics does not stop the consumer; the message is retried.
func TestPanicRetried(t *testing.T) {
	w := newWorld(t, 30*time.Second, 5)
	var calls atomic.Int32
	w.start(w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return runner.Done()
	}))
	w.publish(`{}`)
	waitFor(t, "second delivery acknowledged", func() bool { return calls.Load() == 2 && w.settledOK() })
}

// TestDrainWithinGrace: when Run's context ends, the delivery in hand finishes and is acknowledged
// within the grace period; one that would run past it has its context cancelled, is settled as it says,
// and Run returns.
func TestDrainWithinGrace(t *testing.T) {
	tests := []struct {
		name       string
		work       time.Duration
		grace      time.Duration
		wantCancel bool
		wantAction runner.Action
	}{
		{"finishes within the grace", 300 * time.Millisecond, 10 * time.Second, false, runner.Acked},
		{"cut short after the grace", time.Hour, 200 * time.Millisecond, true, runner.Naked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, 30*time.Second, 5)
			started := make(chan struct{})
			var cancelled atomic.Bool
			var rec recorder
			cfg := w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
				close(started)
				select {
				case <-time.After(tt.work):
					return runner.Done()
				case <-ctx.Done():
					cancelled.Store(true)
					return runner.Retry(ctx.Err())
				}
			})
			cfg.Grace = tt.grace
			cfg.Observe = rec.observe
			stop := w.start(cfg)
			w.publish(`{}`)
			<-started
			stop() // returns only once Run has
			if cancelled.Load() != tt.wantCancel {
				t.Errorf("handler context cancelled: %v, want %v", cancelled.Load(), tt.wantCancel)
			}
			s := rec.settlements()
			if len(s) != 1 || s[0].Action != tt.wantAction {
				t.Fatalf("settlements %+v, want one %v", s, tt.wantAction)
			}
			if tt.wantAction == runner.Acked && !w.settledOK() {
				t.Error("the drained message is not acknowledged")
			}
		})
	}
}

// TestRedeliveryAfterCrash: a consumer that dies with a message in hand (its connection gone: no
// heartbeat, no ack) loses nothing: after the ack wait another runner gets it as a redelivery.
func TestRedeliveryAfterCrash(t *testing.T) {
	w := newWorld(t, 500*time.Millisecond, 5)
	crashedConn, crashedJS := natstest.Connect(t, w.url)
	inHand := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	w.start(w.config(crashedJS, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		close(inHand)
		<-release
		return runner.Done()
	}))
	w.publish(`{"crash": true}`)
	<-inHand
	crashedConn.Close() // the process is gone: nothing it does from now on reaches the server

	var got atomic.Uint64
	w.start(w.config(w.js, func(ctx context.Context, d runner.Delivery) runner.Outcome {
		got.Store(d.Number())
		return runner.Done()
	}))
	waitFor(t, "the redelivery handled by the survivor", func() bool { return got.Load() > 0 && w.settledOK() })
	if n := got.Load(); n != 2 {
		t.Errorf("survivor saw delivery %d, want 2", n)
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	h := func(context.Context, runner.Delivery) runner.Outcome { return runner.Done() }
	_, js := natstest.Connect(t, func() string { _, u := natstest.Run(t); return u }())
	tests := []struct {
		name string
		cfg  runner.Config
	}{
		{"no JetStream", runner.Config{Stream: "S", Consumer: "c", Stage: "s", Handler: h}},
		{"no consumer", runner.Config{JS: js, Stream: "S", Stage: "s", Handler: h}},
		{"no stage", runner.Config{JS: js, Stream: "S", Consumer: "c", Handler: h}},
		{"no handler", runner.Config{JS: js, Stream: "S", Consumer: "c", Stage: "s"}},
	}
	for _, tt := range tests {
		if _, err := runner.New(tt.cfg); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
