package export

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

func TestScheduleNextIsUKTime(t *testing.T) {
	s, err := NewSchedule("0 2 * * *", nil, nil, nil)
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
	if _, err := NewSchedule("every night", nil, nil, nil); err == nil {
		t.Error("a bad expression was accepted")
	}
}

// TestSchedulePublish: a firing publishes one valid request per programme with the day's ids; a second
// replica firing at the same time adds nothing.
func TestSchedulePublish(t *testing.T) {
	e := newEnv(t)
	s, err := NewSchedule("0 2 * * *", e.pool, e.js, e.log)
	if err != nil {
		t.Fatal(err)
	}
	fired := time.Date(2024, 8, 23, 1, 0, 0, 0, time.UTC) // 02:00 in London
	for range 2 {
		if n, err := s.Publish(t.Context(), fired); err != nil || n != 4 {
			t.Fatalf("published %d, %v; want 4", n, err)
		}
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
	want := "schedule:" + req.Programme + ":2024-08-23"
	if req.RequestID != want || msg.Header.Get("Nats-Msg-Id") != want || req.RequestedBy != "schedule" {
		t.Fatalf("request %+v with id %q, want %s", req, msg.Header.Get("Nats-Msg-Id"), want)
	}
}
