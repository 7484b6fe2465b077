package export

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
)

func (e *env) publishRaw(data, msgID string) {
	e.t.Helper()
	msg := &nats.Msg{Subject: bus.SubjectExportRequest, Data: []byte(data), Header: nats.Header{}}
	msg.Header.Set("Nats-Msg-Id", msgID)
	msg.Header.Set("X-Origin", "test")
	if _, err := e.js.PublishMsg(e.t.Context(), msg); err != nil {
		e.t.Fatal(err)
	}
}

// requestConsumer builds a consumer over the test's NATS with the test's logger.
func (e *env) requestConsumer(cfg RequestConsumerConfig) *RequestConsumer {
	e.t.Helper()
	cfg.JS, cfg.Logger = e.js, e.log
	c, err := NewRequestConsumer(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or 45 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBadRequestsDeadLettered: every kind of bad request ends on dps.deadletter.request with its
// original payload, headers and reason, is acked, and the consumer goes on to export a good one.
func TestBadRequestsDeadLettered(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	terminated := natstest.CountTerminations(t, e.nc, bus.StreamRequests, bus.ConsumerProducer)
	c := e.requestConsumer(RequestConsumerConfig{Exporter: e.exporter(e.pool), Metrics: NewMetrics(prometheus.NewRegistry()),
		Heartbeat: time.Second, RetryDelay: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			t.Errorf("consumer: %v", err)
		}
	})
	defer wg.Wait()
	defer cancel()

	now := time.Now().UTC().Format(time.RFC3339)
	bad := []struct {
		name, payload, reason string
	}{
		{"malformed JSON", `{"request_id": "x1", "programme": "HPV"`, "JSON"},
		{"not an object", `"HPV"`, ""},
		{"missing field", `{"request_id": "x2", "programme": "HPV", "requested_at": "` + now + `"}`, "requested_by"},
		{"extra field", `{"request_id": "x3", "programme": "HPV", "requested_by": "t", "requested_at": "` + now + `", "urgent": true}`, "urgent"},
		{"bad programme pattern", `{"request_id": "x4", "programme": "hpv", "requested_by": "t", "requested_at": "` + now + `"}`, "programme"},
		{"bad date", `{"request_id": "x5", "programme": "HPV", "requested_by": "t", "requested_at": "yesterday"}`, "requested_at"},
		{"unknown programme", `{"request_id": "x6", "programme": "MMR", "requested_by": "t", "requested_at": "` + now + `"}`, "MMR"},
		{"not UTF-8", "\xff\xfe{}", ""},
	}
	for i, b := range bad {
		e.publishRaw(b.payload, "bad-"+string(rune('a'+i)))
	}
	good := bus.ExportRequest{RequestID: "good-1", Programme: "HPV", RequestedBy: "test", RequestedAt: time.Now()}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, good.RequestID, good); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "the good request's export", func() bool {
		return e.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'good-1'`) == 1
	})
	waitFor(t, "every dead letter", func() bool {
		return e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest) == uint64(len(bad))
	})
	dl, err := e.js.Stream(t.Context(), bus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bad {
		raw, err := dl.GetMsg(t.Context(), uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Stage, Subject, Reason, Payload string
			PayloadBase64                   string `json:"payload_base64"`
			Headers                         map[string][]string
		}
		if err := json.Unmarshal(raw.Data, &got); err != nil {
			t.Fatal(err)
		}
		if got.Stage != "request" || got.Subject != bus.SubjectExportRequest || got.Reason == "" {
			t.Errorf("%s: dead letter %+v", b.name, got)
		}
		if b.reason != "" && !strings.Contains(strings.ToLower(got.Reason), strings.ToLower(b.reason)) {
			t.Errorf("%s: reason %q does not mention %q", b.name, got.Reason, b.reason)
		}
		if b.name != "not UTF-8" && got.Payload != b.payload {
			t.Errorf("%s: payload %q, want the original %q", b.name, got.Payload, b.payload)
		}
		if len(got.Headers["X-Origin"]) != 1 {
			t.Errorf("%s: headers %v lack the original ones", b.name, got.Headers)
		}
	}
	waitFor(t, "every request acked", func() bool {
		info, err := e.js.Consumer(t.Context(), bus.StreamRequests, bus.ConsumerProducer)
		if err != nil {
			return false
		}
		ci, err := info.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	if n := e.count(`SELECT count(*) FROM dps_exports`); n != 1 {
		t.Fatalf("%d exports, want only the good request's", n)
	}
	if n := terminated(); n != 0 {
		t.Fatalf("%d requests terminated, want every dead-lettered one acknowledged", n)
	}
}

// TestOutageRetried: a request that fails because the database is unreachable is naked with a delay,
// not dead-lettered or dropped, and exported once the database is back.
func TestOutageRetried(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	down := e.newPool()
	down.Close()
	broken := e.requestConsumer(RequestConsumerConfig{Exporter: e.exporter(down), RetryDelay: 200 * time.Millisecond})

	req := bus.ExportRequest{RequestID: "outage-1", Programme: "HPV", RequestedBy: "test", RequestedAt: time.Now()}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, req.RequestID, req); err != nil {
		t.Fatal(err)
	}
	cons, err := e.js.Consumer(t.Context(), bus.StreamRequests, bus.ConsumerProducer)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func() jetstream.Msg {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			return m
		}
		t.Fatal("no message delivered")
		return nil
	}
	broken.Handle(t.Context(), fetch())
	if n := e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest); n != 0 {
		t.Fatalf("an outage dead-lettered the request")
	}

	healthy := e.requestConsumer(RequestConsumerConfig{Exporter: e.exporter(e.pool)})
	msg := fetch() // redelivered after the nak delay
	if md, _ := msg.Metadata(); md.NumDelivered != 2 {
		t.Fatalf("delivery %d, want the second", md.NumDelivered)
	}
	healthy.Handle(t.Context(), msg)
	if n := e.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'outage-1'`); n != 1 {
		t.Fatalf("%d exports after recovery, want 1", n)
	}
}

// TestLastDeliveryDeadLettered: a request that still fails on the consumer's last delivery is
// dead-lettered with its error and acked, so that giving up is visible, not silent; earlier
// deliveries are naked for a retry.
func TestLastDeliveryDeadLettered(t *testing.T) {
	tests := []struct {
		name       string
		maxDeliver int
		wantDead   int
	}{
		{"first of several deliveries is retried", 3, 0},
		{"last delivery is dead-lettered", 1, 1},
		{"no limit known: retried", 0, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			down := e.newPool()
			down.Close()
			c := e.requestConsumer(RequestConsumerConfig{Exporter: e.exporter(down), RetryDelay: time.Hour, MaxDeliver: tt.maxDeliver})
			id := fmt.Sprintf("exhausted-%d", i)
			req := bus.ExportRequest{RequestID: id, Programme: "HPV", RequestedBy: "test", RequestedAt: time.Now()}
			if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, id, req); err != nil {
				t.Fatal(err)
			}
			cons, err := e.js.Consumer(t.Context(), bus.StreamRequests, bus.ConsumerProducer)
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			msg := <-batch.Messages()
			if msg == nil {
				t.Fatal("no message delivered")
			}
			c.Handle(t.Context(), msg)
			if n := e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest); n != uint64(tt.wantDead) {
				t.Fatalf("%d dead letters, want %d", n, tt.wantDead)
			}
			if tt.wantDead == 0 {
				return
			}
			s, _ := e.js.Stream(t.Context(), bus.StreamDeadLetter)
			raw, err := s.GetLastMsgForSubject(t.Context(), bus.SubjectDeadLetterRequest)
			if err != nil {
				t.Fatal(err)
			}
			var dl bus.DeadLetterMessage
			if err := json.Unmarshal(raw.Data, &dl); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(dl.Reason, "gave up after 1 deliveries") || dl.Payload == "" {
				t.Errorf("dead letter %+v", dl)
			}
		})
	}
}
