package meshsandbox_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

func TestTracking(t *testing.T) {
	s := startSandbox(t, nil)
	accepted := s.sendMessage(t, mb1, mb3, []byte("x"), map[string]string{"mex-LocalID": "exp-a.1", "mex-FileName": "a.csv"})
	acked := s.sendMessage(t, mb1, mb3, []byte("x"), nil)
	wantStatus(t, s.do(t, req{method: "PUT", path: mb3 + "/inbox/" + acked + "/status/acknowledged"}), 200)
	undeliverable := s.sendMessage(t, mb1, mb3, []byte("x"), nil)
	if err := s.MarkUndeliverable(undeliverable); err != nil {
		t.Fatal(err)
	}
	uploading := startChunked(t, s, []byte("partial"))

	tests := []struct {
		name    string
		id      string
		mailbox string
		want    int
		fields  map[string]any // expected values; nil value = must be absent
	}{
		{name: "accepted", id: accepted, want: 200, fields: map[string]any{
			"message_id": accepted, "local_id": "exp-a.1", "workflow_id": "DPS", "filename": "a.csv",
			"recipient": mb3, "recipient_name": "TESTMB3", "recipient_ods_code": "X27", "recipient_org_code": "X27",
			"recipient_org_name": "Org 3", "status": "accepted", "status_success": true,
			"status_code": nil, "status_event": nil, "status_description": nil, "sender": nil,
		}},
		{name: "lower-case id", id: strings.ToLower(accepted), want: 200, fields: map[string]any{"message_id": accepted}},
		{name: "acknowledged", id: acked, want: 200, fields: map[string]any{"status": "acknowledged", "status_success": true}},
		{name: "undeliverable", id: undeliverable, want: 200, fields: map[string]any{
			"status": "undeliverable", "status_code": "14", "status_success": false, "status_event": "SEND",
		}},
		{name: "uploading", id: uploading, want: 200, fields: map[string]any{"status": "uploading", "recipient": mb2}},
		{name: "recipient may not track", id: accepted, mailbox: mb3, want: 404},
		{name: "unknown", id: strings.Repeat("F", 32), want: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mailbox := tt.mailbox
			if mailbox == "" {
				mailbox = mb1
			}
			r := s.do(t, req{method: "GET", path: mailbox + "/outbox/tracking?messageID=" + tt.id})
			wantStatus(t, r, tt.want)
			if tt.want != 200 {
				if d := r.detail(t); d["msg"] != "Not Found" {
					t.Fatalf("detail %v", d)
				}
				return
			}
			if ct := r.header.Get("Content-Type"); ct != v2 {
				t.Errorf("Content-Type %q", ct)
			}
			if bytes.Contains(r.body, []byte("null")) {
				t.Fatalf("null fields are not left out: %s", r.body)
			}
			body := r.json(t)
			for k, want := range tt.fields {
				got, present := body[k]
				if want == nil {
					if present {
						t.Errorf("%s present (%v), want absent", k, got)
					}
					continue
				}
				if got != want {
					t.Errorf("%s = %v, want %v", k, got, want)
				}
			}
			for _, k := range []string{"expiry_time", "upload_timestamp"} {
				if _, ok := body[k].(string); !ok {
					t.Errorf("%s missing in %s", k, r.body)
				}
			}
		})
	}
	t.Run("messageID missing", func(t *testing.T) {
		wantStatus(t, s.do(t, req{method: "GET", path: mb1 + "/outbox/tracking"}), http.StatusBadRequest)
	})
}

func TestTrackingByLocalID(t *testing.T) {
	s := startSandbox(t, nil)
	id := s.sendMessage(t, mb1, mb2, []byte("x"), map[string]string{"mex-LocalID": "export-7.1"})
	s.sendMessage(t, mb1, mb2, []byte("x"), map[string]string{"mex-LocalID": "dup"})
	s.sendMessage(t, mb1, mb2, []byte("x"), map[string]string{"mex-LocalID": "dup"})
	s.sendMessage(t, mb3, mb2, []byte("x"), map[string]string{"mex-LocalID": "theirs"})

	tests := []struct {
		name    string
		localID string
		want    int
		wantMsg string
	}{
		{name: "one message", localID: "export-7.1", want: 200},
		{name: "several share it", localID: "dup", want: 300, wantMsg: "Multiple Choices"},
		{name: "none", localID: "export-8.1", want: 404, wantMsg: "Not Found"},
		{name: "another sender's", localID: "theirs", want: 404, wantMsg: "Not Found"},
		{name: "case matters", localID: "EXPORT-7.1", want: 404, wantMsg: "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(t, req{method: "GET", path: mb1 + "/outbox/tracking/" + tt.localID})
			wantStatus(t, r, tt.want)
			if tt.want != 200 {
				if d := r.detail(t); d["msg"] != tt.wantMsg {
					t.Fatalf("detail %v", d)
				}
				return
			}
			body := r.json(t)
			want := map[string]any{"messageId": id, "localId": "export-7.1", "status": "Accepted", "statusSuccess": "SUCCESS",
				"recipient": mb2, "sender": mb1, "dtsId": id, "workflowId": "DPS", "fileSize": float64(1), "messageType": "Data"}
			for k, v := range want {
				if body[k] != v {
					t.Errorf("%s = %v, want %v", k, body[k], v)
				}
			}
			if bytes.Contains(r.body, []byte("null")) {
				t.Fatalf("null fields: %s", r.body)
			}
		})
	}

	t.Run("acknowledged is capitalised", func(t *testing.T) {
		wantStatus(t, s.do(t, req{method: "PUT", path: mb2 + "/inbox/" + id + "/status/acknowledged"}), 200)
		body := s.do(t, req{method: "GET", path: mb1 + "/outbox/tracking/export-7.1"}).json(t)
		if body["status"] != "Acknowledged" || body["downloadTimestamp"] == "" {
			t.Fatalf("tracking %v", body)
		}
	})
}
