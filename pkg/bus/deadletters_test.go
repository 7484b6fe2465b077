package bus_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/schemas"
)

// deadLetterRaw publishes data on subject as another system would (no validation, any headers), reads
// it back as a delivery and dead-letters it for stage with bus.DeadLetter, the function every stage
// uses. It returns the dead letter's DPS_DEADLETTER sequence.
func deadLetterRaw(t *testing.T, js jetstream.JetStream, stage, subject, msgID string, data []byte, header nats.Header, reason string) uint64 {
	t.Helper()
	ctx := t.Context()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	for k, vs := range header {
		msg.Header[k] = vs
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, ack.Stream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: ack.Sequence})
	if err != nil {
		t.Fatal(err)
	}
	delivery, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.DeadLetter(ctx, js, stage, delivery, reason); err != nil {
		t.Fatal(err)
	}
	return lastSeq(t, js, bus.StreamDeadLetter)
}

func lastSeq(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seqs(list []bus.StoredDeadLetter) []uint64 {
	out := make([]uint64, len(list))
	for i, d := range list {
		out[i] = d.Seq
	}
	return out
}

// TestListDeadLetters: stage, since and limit select from a stream holding dead letters of every
// stage, oldest first, and listing consumes nothing.
func TestListDeadLetters(t *testing.T) {
	_, js := setup(t)
	at := time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)
	ready := bus.ExportReady{ExportID: exportID, Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv",
		ObjectName: exportID, SizeBytes: 10, SHA256: strings.Repeat("ab", 32), Rows: 1, CreatedAt: at}
	sent := bus.ExportSent{EventID: eventID, ExportID: exportID, Programme: "HPV", Filename: ready.Filename,
		MeshMessageID: "m", LocalID: exportID + ".1", Attempt: 1, SentAt: at}

	var all []uint64
	byStage := map[string][]uint64{}
	add := func(stage, subject, msgID string, data []byte) {
		seq := deadLetterRaw(t, js, stage, subject, msgID, data, nil, stage+" test reason")
		all = append(all, seq)
		byStage[stage] = append(byStage[stage], seq)
	}
	add(bus.StageRequest, bus.SubjectExportRequest, "r1", mustJSON(t, request("r1")))
	add(bus.StageSender, bus.SubjectExportReady, exportID, mustJSON(t, ready))
	add(bus.StageRequest, bus.SubjectExportRequest, "r2", []byte("not json"))
	add(bus.StageTracker, bus.SubjectExportSent, "sent:"+exportID, mustJSON(t, sent))
	add(bus.StageRequest, bus.SubjectExportRequest, "r3", mustJSON(t, request("r3")))

	full, err := bus.ListDeadLetters(t.Context(), js, bus.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(full), all) {
		t.Fatalf("all: got %v, want %v", seqs(full), all)
	}
	// Since is the stream's own timestamp of the third dead letter: no wall clock involved.
	since := full[2].Time

	tests := []struct {
		name   string
		filter bus.DeadLetterFilter
		want   []uint64
	}{
		{"request", bus.DeadLetterFilter{Stage: bus.StageRequest}, byStage[bus.StageRequest]},
		{"sender", bus.DeadLetterFilter{Stage: bus.StageSender}, byStage[bus.StageSender]},
		{"tracker", bus.DeadLetterFilter{Stage: bus.StageTracker}, byStage[bus.StageTracker]},
		{"no such stage", bus.DeadLetterFilter{Stage: "nobody"}, nil},
		{"limit keeps the newest", bus.DeadLetterFilter{Limit: 2}, all[3:]},
		{"limit above count", bus.DeadLetterFilter{Limit: 50}, all},
		{"since", bus.DeadLetterFilter{Since: since}, all[2:]},
		{"since and stage", bus.DeadLetterFilter{Since: since, Stage: bus.StageRequest}, []uint64{all[2], all[4]}},
		{"since, stage and limit", bus.DeadLetterFilter{Since: since, Stage: bus.StageRequest, Limit: 1}, []uint64{all[4]}},
		{"since in the future", bus.DeadLetterFilter{Since: full[4].Time.Add(time.Hour)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bus.ListDeadLetters(t.Context(), js, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tt.want) {
				t.Fatalf("got %v, want %v", seqs(got), tt.want)
			}
		})
	}

	d := full[1]
	if d.Stage() != bus.StageSender || d.Subject != bus.SubjectDeadLetterSender || d.Invalid != "" || d.Size == 0 || d.Time.IsZero() {
		t.Fatalf("stored dead letter: %+v", d)
	}
	if m := d.Message; m.Subject != bus.SubjectExportReady || m.Stream != bus.StreamBatches || m.Reason != "sender test reason" || m.StreamSeq != 1 {
		t.Fatalf("decoded dead letter: %+v", m)
	}

	// Listing is read-only: the stream keeps everything and no durable consumer appeared.
	if n := lastSeq(t, js, bus.StreamDeadLetter); n != all[len(all)-1] {
		t.Fatalf("dead-letter stream last seq %d after listing", n)
	}
	s, _ := js.Stream(t.Context(), bus.StreamDeadLetter)
	for name := range s.ConsumerNames(t.Context()).Name() {
		info, err := s.Consumer(t.Context(), name)
		if err == nil && info.CachedInfo().Config.Durable != "" {
			t.Fatalf("listing left a durable consumer %q", name)
		}
	}

	for _, bad := range []bus.DeadLetterFilter{{Stage: "request.>"}, {Limit: -1}} {
		if _, err := bus.ListDeadLetters(t.Context(), js, bad); err == nil {
			t.Errorf("filter %+v: no error", bad)
		}
	}
}

func TestListDeadLettersEmpty(t *testing.T) {
	_, js := setup(t)
	got, err := bus.ListDeadLetters(t.Context(), js, bus.DeadLetterFilter{})
	if err != nil || len(got) != 0 {
		t.Fatalf("empty stream: %v, %v", got, err)
	}
}

// TestRedriveValidRequestOnce: a request dead-lettered for a cause since fixed (an unknown programme)
// goes back to dps.export.request byte for byte, with its headers, once even when re-driven twice.
func TestRedriveValidRequestOnce(t *testing.T) {
	_, js := setup(t)
	req := request("req-new-programme")
	req.Programme = "NEWPROG"
	payload := mustJSON(t, req)
	header := nats.Header{"Traceparent": []string{"00-abc-def-01"}}
	dlSeq := deadLetterRaw(t, js, bus.StageRequest, bus.SubjectExportRequest, req.RequestID, payload, header,
		"unknown programme NEWPROG")
	before := lastSeq(t, js, bus.StreamRequests)

	first, err := bus.RedriveDeadLetter(t.Context(), js, dlSeq)
	if err != nil {
		t.Fatal(err)
	}
	want := bus.RedriveResult{DeadLetterSeq: dlSeq, Stage: bus.StageRequest, Subject: bus.SubjectExportRequest,
		MsgID: fmt.Sprintf("redrive:%d", dlSeq), Stream: bus.StreamRequests, Seq: before + 1, Size: len(payload)}
	if first != want {
		t.Fatalf("first re-drive: got %+v, want %+v", first, want)
	}
	second, err := bus.RedriveDeadLetter(t.Context(), js, dlSeq)
	if err != nil {
		t.Fatal(err)
	}
	want.Duplicate = true
	if second != want {
		t.Fatalf("second re-drive: got %+v, want %+v", second, want)
	}
	if n := lastSeq(t, js, bus.StreamRequests); n != before+1 {
		t.Fatalf("DPS_REQUESTS last seq %d, want %d: re-driven more than once", n, before+1)
	}

	s, _ := js.Stream(t.Context(), bus.StreamRequests)
	got, err := s.GetMsg(t.Context(), first.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != string(payload) {
		t.Fatalf("payload changed: %s", got.Data)
	}
	if id := got.Header.Get(jetstream.MsgIDHeader); id != want.MsgID {
		t.Fatalf("Nats-Msg-Id %q, want %q", id, want.MsgID)
	}
	if v := got.Header.Get("Traceparent"); v != "00-abc-def-01" {
		t.Fatalf("original header lost: %v", got.Header)
	}
	if v := got.Header.Get(bus.HeaderRedriveOf); v != fmt.Sprint(dlSeq) {
		t.Fatalf("%s = %q", bus.HeaderRedriveOf, v)
	}
	// The dead letter itself stays: re-driving is not consuming.
	if _, err := bus.GetDeadLetter(t.Context(), js, dlSeq); err != nil {
		t.Fatal(err)
	}
}

// TestRedriveToOriginalStream: each stage's dead letter goes back to the stream it came from.
func TestRedriveToOriginalStream(t *testing.T) {
	_, js := setup(t)
	at := time.Date(2024, 8, 23, 2, 0, 0, 0, time.UTC)
	tests := []struct {
		stage, subject, msgID, stream string
		v                             any
	}{
		{bus.StageRequest, bus.SubjectExportRequest, "r1", bus.StreamRequests, request("r1")},
		{bus.StageSender, bus.SubjectExportReady, exportID, bus.StreamBatches, bus.ExportReady{ExportID: exportID, Programme: "HPV",
			Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", ObjectName: exportID, SizeBytes: 10, SHA256: strings.Repeat("ab", 32), Rows: 1, CreatedAt: at}},
		{bus.StageTracker, bus.SubjectExportSent, "sent:" + exportID, bus.StreamEvents, bus.ExportSent{EventID: eventID, ExportID: exportID,
			Programme: "HPV", Filename: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv", MeshMessageID: "m", LocalID: exportID + ".1", Attempt: 1, SentAt: at}},
	}
	for _, tt := range tests {
		t.Run(tt.stage, func(t *testing.T) {
			seq := deadLetterRaw(t, js, tt.stage, tt.subject, tt.msgID, mustJSON(t, tt.v), nil, "transient")
			res, err := bus.RedriveDeadLetter(t.Context(), js, seq)
			if err != nil {
				t.Fatal(err)
			}
			if res.Stream != tt.stream || res.Subject != tt.subject || res.Stage != tt.stage || res.Duplicate {
				t.Fatalf("got %+v", res)
			}
		})
	}
}

// TestRedriveRefused: what cannot succeed is refused with the reason, and nothing is published.
func TestRedriveRefused(t *testing.T) {
	_, js := setup(t)
	bad := request("r-bad")
	bad.Programme = "hpv" // breaks ^[A-Z][A-Z0-9_]*$
	invalidSeq := deadLetterRaw(t, js, bus.StageRequest, bus.SubjectExportRequest, "r-bad", mustJSON(t, bad), nil, "invalid")
	notJSONSeq := deadLetterRaw(t, js, bus.StageRequest, bus.SubjectExportRequest, "r-nj", []byte("{oops"), nil, "invalid")
	// Something on dps.deadletter.> that is not a dead letter (published around bus.DeadLetter).
	if _, err := js.Publish(t.Context(), bus.SubjectDeadLetterRequest, []byte(`{"hello":"world"}`)); err != nil {
		t.Fatal(err)
	}
	strangerSeq := lastSeq(t, js, bus.StreamDeadLetter)
	before := lastSeq(t, js, bus.StreamRequests)

	tests := []struct {
		name     string
		seq      uint64
		contains []string
		isSchema bool
	}{
		{"still invalid names the field", invalidSeq, []string{"programme", "still invalid"}, true},
		{"not JSON", notJSONSeq, []string{"still invalid", "malformed"}, false},
		{"not a dead letter", strangerSeq, []string{"not a dead letter"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bus.RedriveDeadLetter(t.Context(), js, tt.seq)
			var refused *bus.RedriveRefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("want *RedriveRefusedError, got %v", err)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
			var ve *schemas.ValidationError
			if errors.As(err, &ve) != tt.isSchema {
				t.Errorf("schema error %v, want %v", errors.As(err, &ve), tt.isSchema)
			}
		})
	}
	if n := lastSeq(t, js, bus.StreamRequests); n != before {
		t.Fatalf("a refused re-drive published: DPS_REQUESTS last seq %d, want %d", n, before)
	}
	// The stranger shows in a listing, marked, rather than failing it.
	list, err := bus.ListDeadLetters(t.Context(), js, bus.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if last := list[len(list)-1]; last.Seq != strangerSeq || last.Invalid == "" {
		t.Fatalf("stranger listed as %+v", last)
	}

	if _, err := bus.RedriveDeadLetter(t.Context(), js, 9999); !errors.Is(err, bus.ErrNoDeadLetter) {
		t.Fatalf("unknown sequence: %v", err)
	}
}
