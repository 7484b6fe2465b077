package meshsandbox_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// adminPost posts JSON to an admin path (no MESH authentication, as in the official sandbox).
func (s *sandbox) adminPost(t *testing.T, path string, body any) response {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Post(s.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: buf.Bytes()}
}

// TestCreateReportAsTheOfficialSandbox: POST /messageexchange/admin/report puts a REPORT in the named
// inbox; it is listed, downloaded (headers only, empty body, no sender) and acknowledged like any
// message, and only an "error" report carries the linked id and the status code.
func TestCreateReportAsTheOfficialSandbox(t *testing.T) {
	s := startSandbox(t, nil)
	for _, tc := range []struct {
		status string
		linked bool
	}{{meshsandbox.ReportStatusError, true}, {meshsandbox.ReportStatusUndeliverable, false}, {"", false}} {
		r := s.adminPost(t, "/messageexchange/admin/report", map[string]any{
			"mailbox_id": mb1, "code": "14", "description": "Message not collected by recipient after 5 days",
			"workflow_id": "DPS", "status": tc.status, "local_id": "export-1.1", "linked_message_id": "ABC123",
		})
		if r.status != http.StatusOK {
			t.Fatalf("status %q: %d %s", tc.status, r.status, r.body)
		}
		id := r.json(t)["message_id"].(string)
		if !messageIDPattern.MatchString(id) {
			t.Fatalf("report id %q", id)
		}
		list := s.do(t, req{method: "GET", path: mb1 + "/inbox"}).json(t)["messages"].([]any)
		if len(list) != 1 || list[0] != id {
			t.Fatalf("inbox %v, want the report %s", list, id)
		}
		d := s.do(t, req{method: "GET", path: mb1 + "/inbox/" + id})
		h := d.header
		if d.status != http.StatusOK || len(d.body) != 0 || h.Get("mex-MessageType") != "REPORT" || h.Get("mex-From") != "" ||
			h.Get("mex-To") != mb1 || h.Get("mex-StatusSuccess") != "ERROR" || h.Get("mex-LocalID") != "export-1.1" ||
			h.Get("mex-Chunk-Range") != "1:0" || h.Get("mex-Total-Chunks") != "0" || h.Get("Content-Encoding") != "" ||
			h.Get("mex-FileName") != id+".dat" || h.Get("mex-StatusTimestamp") == "" {
			t.Errorf("status %q: download %d %q headers %v", tc.status, d.status, d.body, h)
		}
		wantLinked, wantCode := "", ""
		if tc.linked {
			wantLinked, wantCode = "ABC123", "14"
		}
		if h.Get("mex-LinkedMsgID") != wantLinked || h.Get("mex-StatusCode") != wantCode {
			t.Errorf("status %q: mex-LinkedMsgID %q, mex-StatusCode %q; want %q, %q", tc.status,
				h.Get("mex-LinkedMsgID"), h.Get("mex-StatusCode"), wantLinked, wantCode)
		}
		if a := s.do(t, req{method: "PUT", path: mb1 + "/inbox/" + id + "/status/acknowledged"}); a.status != http.StatusOK {
			t.Fatalf("ack: %d", a.status)
		}
	}

	if r := s.adminPost(t, "/admin/report", map[string]any{"mailbox_id": "NOSUCH", "code": "14", "description": "x", "workflow_id": "W"}); r.status != http.StatusNotFound {
		t.Errorf("unknown mailbox: %d %s", r.status, r.body)
	}
	if r := s.adminPost(t, "/admin/report", map[string]any{"mailbox_id": mb1}); r.status != http.StatusBadRequest {
		t.Errorf("missing fields: %d %s", r.status, r.body)
	}
	if r := s.adminPost(t, "/admin/report", map[string]any{"mailbox_id": mb1, "code": "14", "description": "x", "workflow_id": "W", "status": "lost"}); r.status != http.StatusInternalServerError {
		t.Errorf("bad status: %d %s", r.status, r.body)
	}
}

// TestReportUndelivered: the admin call turns an accepted message into a non-delivery report in its
// sender's inbox, linked to it, and tracking the message shows it undeliverable with code 14.
func TestReportUndelivered(t *testing.T) {
	s := startSandbox(t, nil)
	sent := s.do(t, req{method: "POST", path: mb1 + "/outbox", body: []byte("a,b\n"), header: map[string]string{
		"mex-To": mb2, "mex-WorkflowID": "DPS", "mex-FileName": "Vaccinations-HPV-2024-08-23.csv", "mex-LocalID": "export-9.1",
	}})
	if sent.status != http.StatusAccepted {
		t.Fatalf("send: %d %s", sent.status, sent.body)
	}
	id := sent.json(t)["message_id"].(string)
	r := s.adminPost(t, "/admin/messages/"+id+"/report", nil)
	if r.status != http.StatusOK {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	reportID := r.json(t)["message_id"].(string)
	h := s.do(t, req{method: "GET", path: mb1 + "/inbox/" + reportID}).header
	if h.Get("mex-MessageType") != "REPORT" || h.Get("mex-LinkedMsgID") != id || h.Get("mex-LocalID") != "export-9.1" ||
		h.Get("mex-StatusCode") != "14" || h.Get("mex-StatusEvent") != "TRANSFER" || h.Get("mex-StatusSuccess") != "ERROR" ||
		h.Get("mex-FileName") != "Vaccinations-HPV-2024-08-23.csv" || h.Get("mex-WorkflowID") != "DPS" {
		t.Errorf("report headers %v", h)
	}
	tr := s.do(t, req{method: "GET", path: mb1 + "/outbox/tracking?messageID=" + id}).json(t)
	if tr["status"] != "undeliverable" || tr["status_code"] != "14" {
		t.Errorf("tracking %v", tr)
	}
	// The recipient no longer has it to collect.
	if d := s.do(t, req{method: "GET", path: mb2 + "/inbox/" + id}); d.status != http.StatusGone {
		t.Errorf("recipient download after the report: %d", d.status)
	}
	if r := s.adminPost(t, "/admin/messages/"+id+"/report", nil); r.status != http.StatusConflict {
		t.Errorf("second report: %d %s", r.status, r.body)
	}
	if r := s.adminPost(t, "/admin/messages/NOSUCH/report", nil); r.status != http.StatusNotFound {
		t.Errorf("unknown message: %d", r.status)
	}
}
