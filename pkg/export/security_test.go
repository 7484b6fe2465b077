package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

// runConsumer runs a request consumer with production settings until the test ends.
func (e *env) runConsumer() *RequestConsumer {
	e.t.Helper()
	c := e.requestConsumer(RequestConsumerConfig{Exporter: e.exporter(e.pool), Metrics: NewMetrics(prometheus.NewRegistry())})
	ctx, cancel := context.WithCancel(e.t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := c.Run(ctx); err != nil {
			e.t.Errorf("consumer: %v", err)
		}
	})
	e.t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// deadLetters reads every request dead letter.
func (e *env) deadLetters() []bus.DeadLetterMessage {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), bus.StreamDeadLetter)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []bus.DeadLetterMessage
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(e.t.Context(), seq)
		if err != nil {
			continue
		}
		var dl bus.DeadLetterMessage
		if err := json.Unmarshal(raw.Data, &dl); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, dl)
	}
	return out
}

// TestPoisonRequestsDoNotStall: 100 requests that Postgres refuses for good (a NUL byte in requested_by,
// SQLSTATE 22021) are dead-lettered at once with their SQLSTATE, and a valid request published after
// them is exported within seconds, with the production consumer and retry settings.
func TestPoisonRequestsDoNotStall(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	const poison = 100
	for i := range poison {
		id := fmt.Sprintf("poison-%03d", i)
		e.publishRaw(`{"request_id":"`+id+`","programme":"HPV","requested_by":"evil\u0000","requested_at":"2026-11-25T09:00:00Z"}`, id)
	}
	good := bus.ExportRequest{RequestID: "after-poison", Programme: "HPV", RequestedBy: "test", RequestedAt: time.Now()}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, good.RequestID, good); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	e.runConsumer()
	deadline := time.Now().Add(20 * time.Second)
	for e.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'after-poison'`) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the valid request was not exported within 20 s of 100 poison ones (%d dead letters so far)",
				e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the valid request was exported %v after the consumer started, behind 100 poison requests", time.Since(started).Round(time.Millisecond))
	waitFor(t, "every poison request dead-lettered", func() bool {
		return e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest) == poison
	})
	for _, dl := range e.deadLetters() {
		if dl.Deliveries != 1 || !strings.Contains(dl.Reason, "SQLSTATE 22021") {
			t.Fatalf("dead letter after %d deliveries with reason %q, want at once with SQLSTATE 22021", dl.Deliveries, dl.Reason)
		}
	}
}

// TestOversizedRequestDeadLetteredTruncated: a 600 KB invalid request (over the message size limit,
// which is checked before anything else) is dead-lettered on its first delivery; the dead letter keeps
// the payload once, cut to the bound, with the original size and SHA-256.
func TestOversizedRequestDeadLetteredTruncated(t *testing.T) {
	e := newEnv(t)
	big := `{"request_id":"big","programme":"HPV","requested_by":"` + strings.Repeat("x", 600_000) + `","requested_at":"2026-11-25T09:00:00Z"}`
	e.publishRaw(big, "big")
	e.runConsumer()
	waitFor(t, "the dead letter", func() bool {
		return e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest) == 1
	})
	dl := e.deadLetters()[0]
	sum := sha256.Sum256([]byte(big))
	if !dl.PayloadTruncated || dl.PayloadSize != len(big) || dl.PayloadSHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("truncated %v, size %d, sha256 %s; want true, %d, %x", dl.PayloadTruncated, dl.PayloadSize, dl.PayloadSHA256, len(big), sum)
	}
	if len(dl.Payload) != bus.MaxDeadLetterPayload || !strings.HasPrefix(big, dl.Payload) || dl.PayloadBase64 != "" {
		t.Fatalf("kept %d bytes of text and %d of base64, want the first %d bytes once", len(dl.Payload), len(dl.PayloadBase64), bus.MaxDeadLetterPayload)
	}
	if dl.Deliveries != 1 || !strings.Contains(dl.Reason, "too large") {
		t.Fatalf("deliveries %d, reason %q", dl.Deliveries, dl.Reason)
	}
}

// TestConflictingRequestID: a request reusing a handled request's id with other content is
// dead-lettered as a conflict and exports nothing; the same request again exports nothing new and is
// not a conflict.
func TestConflictingRequestID(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	e.runConsumer()
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	first := bus.ExportRequest{RequestID: "req-1", Programme: "HPV", RequestedBy: "system-a", RequestedAt: at}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, "req-1", first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first request's export", func() bool {
		return e.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'req-1'`) == 1
	})
	e.addRecord(demodata.RecordSpec{Programme: "FLU"})
	other := first
	other.Programme = "FLU"
	// Another Nats-Msg-Id, so the stream does not absorb it.
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, "req-1-again", other); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, "req-1-replayed", first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the conflict dead-lettered", func() bool {
		return e.streamCount(bus.StreamDeadLetter, bus.SubjectDeadLetterRequest) == 1
	})
	waitFor(t, "every request settled", func() bool {
		c, err := e.js.Consumer(t.Context(), bus.StreamRequests, bus.ConsumerProducer)
		if err != nil {
			return false
		}
		ci, err := c.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	dl := e.deadLetters()[0]
	if !strings.Contains(dl.Reason, "already recorded with other content") || !strings.Contains(dl.Payload, `"FLU"`) {
		t.Fatalf("dead letter %q for %q", dl.Reason, dl.Payload)
	}
	if n := e.count(`SELECT count(*) FROM dps_exports WHERE request_id = 'req-1'`); n != 1 {
		t.Fatalf("%d exports under request id req-1, want 1", n)
	}
}
