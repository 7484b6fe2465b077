package export

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

func TestScheduleNextIsUKTime(t *testing.T) {
	s, err := NewSchedule(ScheduleConfig{Spec: "0 2 * * *"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ after, want time.Time }{
		{time.Date(2024, 7, 1, 12, 0, 0, 0, time.UTC), time.Date(2024, 7, 2, 1, 0, 0, 0, time.UTC)},   // BST
		{time.Date(2024, 12, 1, 12, 0, 0, 0, time.UTC), time.Date(2024, 12, 2, 2, 0, 0, 0, time.UTC)}, // GMT
	} {
		if got := s.Next(c.after); !got.Equal(c.want) {
			t.Errorf("next after %s: %s, want %s", c.after, got.UTC(), c.want)
		}
	}
	if _, err := NewSchedule(ScheduleConfig{Spec: "every night"}); err == nil {
		t.Error("a bad expression was accepted")
	}
}

// TestSchedulePublish: a firing records and publishes one valid request per programme under an id
// nobody can guess; a second replica firing at the same time adds nothing.
func TestSchedulePublish(t *testing.T) {
	e := newEnv(t)
	fired := time.Date(2024, 8, 23, 1, 0, 0, 0, time.UTC) // 02:00 in London
	total := 0
	for range 2 {
		s, err := NewSchedule(ScheduleConfig{Spec: "0 2 * * *", Pool: e.newPool(), Logger: e.log})
		if err != nil {
			t.Fatal(err)
		}
		n, err := s.Publish(t.Context(), fired)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 4 {
		t.Fatalf("recorded %d requests over two replicas, want 4", total)
	}
	if _, err := e.relay(e.pool).Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := e.streamCount(bus.StreamRequests, bus.SubjectExportRequest); n != 4 {
		t.Fatalf("%d requests in the stream, want 4", n)
	}
	st, err := e.js.Stream(t.Context(), bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var req bus.ExportRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		t.Fatal(err)
	}
	prefix := "schedule:" + req.Programme + ":2024-08-23:"
	if !strings.HasPrefix(req.RequestID, prefix) || len(req.RequestID) != len(prefix)+36 ||
		msg.Header.Get("Nats-Msg-Id") != req.RequestID || req.RequestedBy != "schedule" {
		t.Fatalf("request %+v with id %q, want %s<uuid>", req, msg.Header.Get("Nats-Msg-Id"), prefix)
	}
}

// TestPrePublishedScheduleIDChangesNothing: a dry run published first under the id the schedule used
// to use does not stop the night's export.
func TestPrePublishedScheduleIDChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.RecordSpec{})
	e.runConsumer()
	fired := time.Date(2024, 8, 23, 1, 0, 0, 0, time.UTC)
	for _, programme := range []string{"HPV", "FLU", "MENACWY", "TD_IPV"} {
		id := "schedule:" + programme + ":2024-08-23"
		forged := bus.ExportRequest{RequestID: id, Programme: programme, RequestedBy: "schedule", RequestedAt: fired, DryRun: true}
		if _, err := bus.Publish(t.Context(), e.js, bus.SubjectExportRequest, id, forged); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewSchedule(ScheduleConfig{Spec: "0 2 * * *", Pool: e.pool, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Publish(t.Context(), fired); err != nil || n != 4 {
		t.Fatalf("recorded %d, %v; want 4", n, err)
	}
	if _, err := e.relay(e.pool).Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the scheduled HPV export", func() bool {
		return e.count(`SELECT count(*) FROM dps_exports e JOIN dps_scheduled_requests s ON s.request_id = e.request_id
			WHERE s.programme = 'HPV' AND s.run_date = '2024-08-23'`) == 1
	})
}
