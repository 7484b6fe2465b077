package bus

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
)

// TestConsumerProgress: a consumer with a message in hand and nothing acknowledged is stalled once
// the bound passes, and healthy again as soon as it acknowledges; idle, it is never stalled, however
// long ago it last acknowledged anything.
func TestConsumerProgress(t *testing.T) {
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx := t.Context()
	if err := EnsureTopology(ctx, js); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	advance := func(d time.Duration) {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
	}
	p := NewConsumerProgress(js, StreamOfConsumer(ConsumerProducer), ConsumerProducer, time.Minute)
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	// Idle for an hour: healthy.
	if err := p.Check(ctx); err != nil {
		t.Fatalf("idle consumer: %v", err)
	}
	advance(time.Hour)
	if err := p.Check(ctx); err != nil || p.Stalled() != 0 {
		t.Fatalf("idle consumer an hour later: %v, stalled %s", err, p.Stalled())
	}

	// Work arrives: its clock starts when it is first seen, not at the last ack an hour ago.
	if _, err := js.Publish(ctx, SubjectExportRequest, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx); err != nil {
		t.Fatalf("work just arrived: %v", err)
	}
	c, err := js.Consumer(ctx, StreamRequests, ConsumerProducer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	if msg == nil {
		t.Fatal("no message fetched")
	}
	advance(59 * time.Second)
	if err := p.Check(ctx); err != nil {
		t.Fatalf("in hand for 59 s with a 1 m bound: %v", err)
	}
	advance(2 * time.Second)
	err = p.Check(ctx)
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("in hand for 61 s: %v, want stalled", err)
	}
	want := "stalled: consumer producer on DPS_REQUESTS has 0 pending and 1 awaiting acknowledgement, and nothing was acknowledged for 1m1s (HEALTH_CONSUMER_STALL_AFTER=1m0s)"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}

	// It moves: healthy at once.
	if err := msg.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx); err != nil || p.Stalled() != 0 {
		t.Errorf("after the ack: %v, stalled %s", err, p.Stalled())
	}

	// Three in hand; the first is held (a long send) while the other two are acknowledged: the ack
	// floor stays, but the backlog shrinks, which is progress.
	for range 3 {
		if _, err := js.Publish(ctx, SubjectExportRequest, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	batch, err = c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d messages, want 3", len(msgs))
	}
	advance(50 * time.Second)
	for _, m := range msgs[1:] {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Check(ctx); err != nil {
		t.Fatalf("two of three acknowledged: %v", err)
	}
	advance(50 * time.Second)
	if err := p.Check(ctx); err != nil {
		t.Fatalf("50 s after the last acks: %v", err)
	}
	advance(20 * time.Second)
	if err := p.Check(ctx); !errors.Is(err, ErrStalled) {
		t.Fatalf("the first held 70 s after the last ack: %v, want stalled", err)
	}
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx); err != nil {
		t.Errorf("all acknowledged: %v", err)
	}
}
