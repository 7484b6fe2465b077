package meshsandbox_test

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

var messageIDPattern = regexp.MustCompile(`^[0-9A-F]{32}$`)

func TestSend(t *testing.T) {
	s := startSandbox(t, nil)
	r := s.do(t, req{method: "POST", path: mb1 + "/outbox", body: []byte("a,b\n1,2\n"), header: map[string]string{
		"mex-To": "x26abc2", "mex-WorkflowID": "DPS", "mex-FileName": "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv",
		"mex-LocalID": "export-1.1", "mex-Subject": "HPV", "Content-Type": "text/csv",
	}})
	wantStatus(t, r, http.StatusAccepted)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	id := r.json(t)["message_id"].(string)
	if !messageIDPattern.MatchString(id) {
		t.Fatalf("message id %q is not 32 upper-case hex", id)
	}
	m, ok := s.Message(strings.ToLower(id))
	if !ok {
		t.Fatal("message not held")
	}
	want := meshsandbox.Message{ID: id, From: mb1, To: mb2, WorkflowID: "DPS", FileName: "HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv",
		LocalID: "export-1.1", Subject: "HPV", MessageType: "DATA", Status: "accepted", TotalChunks: 1, ReceivedChunks: 1, Size: 8,
		CreatedAt: m.CreatedAt, StatusAt: m.StatusAt}
	if m != want {
		t.Fatalf("message %+v, want %+v", m, want)
	}

	v1 := s.do(t, req{method: "POST", path: mb1 + "/outbox", body: []byte("x"), header: map[string]string{
		"Accept": "application/json", "mex-To": mb2, "mex-WorkflowID": "DPS"}})
	wantStatus(t, v1, http.StatusAccepted)
	if id, _ := v1.json(t)["messageID"].(string); !messageIDPattern.MatchString(id) {
		t.Fatalf("v1 send body %s", v1.body)
	}
}

func TestSendErrors(t *testing.T) {
	base := map[string]string{"mex-To": mb2, "mex-WorkflowID": "DPS", "mex-FileName": "f.csv"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	tests := []struct {
		name      string
		header    map[string]string
		body      []byte
		tweak     func(*meshsandbox.Config)
		want      int
		wantEvent string
		wantCode  string
		wantMsg   string
		wantLoc   string // a 400 validation body naming this header
	}{
		{name: "mex-To absent", header: with("mex-To", "<absent>"), want: 400, wantLoc: "mex-to"},
		{name: "mex-To empty", header: with("mex-To", ""), want: 400, wantEvent: "SEND", wantCode: "08", wantMsg: "TO_DTS missing"},
		{name: "mex-To unknown", header: with("mex-To", "X99NOPE"), want: 417, wantEvent: "SEND", wantCode: "12", wantMsg: "Unregistered to address"},
		{name: "mex-To too long", header: with("mex-To", strings.Repeat("X", 101)), want: 400, wantLoc: "mex-to"},
		{name: "mex-To a URL", header: with("mex-To", "https://example.org"), want: 400, wantEvent: "TRANSFER", wantCode: "06", wantMsg: "MalformedControlFile"},
		{name: "workflow absent", header: with("mex-WorkflowID", "<absent>"), want: 400, wantLoc: "mex-workflowid"},
		{name: "checksum with odd characters", header: with("mex-Content-Checksum", "md5:abc$"), want: 400, wantEvent: "SEND", wantCode: "Invalid checksum", wantMsg: "Invalid checksum"},
		{name: "encoding not gzip", header: with("Content-Encoding", "br"), want: 422, wantEvent: "SEND", wantCode: "UnsupportedContentEncoding", wantMsg: "Unsupported content encoding"},
		{name: "empty body", body: []byte{}, want: 417, wantEvent: "COLLECT", wantCode: "02", wantMsg: "Data file is missing or inaccessible."},
		{name: "first request says chunk 2", header: with("mex-Chunk-Range", "2:3"), want: 417, wantEvent: "SEND", wantCode: "InvalidHeaderChunks", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header"},
		{name: "chunk range not numbers", header: with("mex-Chunk-Range", "a:b"), want: 417, wantCode: "InvalidHeaderChunks", wantEvent: "SEND", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header"},
		{name: "chunk range zero", header: with("mex-Chunk-Range", "0:1"), want: 417, wantCode: "InvalidHeaderChunks", wantEvent: "SEND", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header"},
		{name: "recipient not registered for workflow", header: with("mex-To", mb3), tweak: func(c *meshsandbox.Config) { c.CheckWorkflows = true },
			want: 403, wantEvent: "SEND", wantCode: "17", wantMsg: "Workflow ID not registered for mailbox"},
		{name: "over the size limit", body: bytes.Repeat([]byte("x"), 2000), tweak: func(c *meshsandbox.Config) { c.MaxChunkBytes = 1000 },
			want: 413, wantMsg: "Request Entity Too Large"},
		{name: "unregistered workflow passes by default", header: with("mex-To", mb3), want: 202},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, tt.tweak)
			h := tt.header
			if h == nil {
				h = base
			}
			body := tt.body
			if body == nil {
				body = []byte("data")
			}
			r := s.do(t, req{method: "POST", path: mb1 + "/outbox", header: h, body: body})
			wantStatus(t, r, tt.want)
			switch {
			case tt.want == 202:
			case tt.wantLoc != "":
				found := false
				for _, d := range r.json(t)["detail"].([]any) {
					if loc := d.(map[string]any)["loc"].([]any); loc[0] == "header" && loc[1] == tt.wantLoc {
						found = true
					}
				}
				if !found {
					t.Fatalf("validation body %s does not name %s", r.body, tt.wantLoc)
				}
			default:
				d := r.detail(t)
				if d["event"] != tt.wantEvent || d["code"] != tt.wantCode || d["msg"] != tt.wantMsg {
					t.Fatalf("detail %v, want %s/%s/%s", d, tt.wantEvent, tt.wantCode, tt.wantMsg)
				}
				if len(s.Messages(mb1)) != 0 {
					t.Fatal("a refused send left a message")
				}
			}
		})
	}
}

// startChunked sends chunk 1 of a 3-chunk gzip message from X26ABC1 to X26ABC2.
func startChunked(t *testing.T, s *sandbox, chunk1 []byte) string {
	t.Helper()
	return s.sendMessage(t, mb1, mb2, chunk1, map[string]string{"mex-Chunk-Range": "1:3", "Content-Encoding": "gzip", "mex-LocalID": "chunked.1"})
}

func TestChunkUploadErrors(t *testing.T) {
	tests := []struct {
		name        string
		mailbox     string
		chunk       string
		header      map[string]string
		complete    bool // finish the message first
		unknown     bool
		want        int
		wantMsg     string
		wantCode    string
		wantMsgID   bool
		wantGeneric bool // the official sandbox's no-detail body
	}{
		{name: "chunk range absent", chunk: "2", header: map[string]string{"mex-Chunk-Range": "<absent>"}, want: 417,
			wantCode: "InvalidHeaderChunks", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header", wantMsgID: true},
		{name: "chunk range names another chunk", chunk: "2", header: map[string]string{"mex-Chunk-Range": "3:3"}, want: 417,
			wantCode: "InvalidHeaderChunks", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header", wantMsgID: true},
		{name: "chunk range past its own total", chunk: "2", header: map[string]string{"mex-Chunk-Range": "2:1"}, want: 417,
			wantCode: "InvalidHeaderChunks", wantMsg: "Invalid chunk values sent in mex-Chunk-Range header", wantMsgID: true},
		{name: "encoding changed", chunk: "2", header: map[string]string{"mex-Chunk-Range": "2:3", "Content-Encoding": "<absent>"}, want: 417,
			wantMsg: "cannot change content encoding"},
		{name: "not the sender", mailbox: mb2, chunk: "2", header: map[string]string{"mex-Chunk-Range": "2:3"}, want: 403, wantMsg: "Forbidden"},
		{name: "chunk past total", chunk: "4", header: map[string]string{"mex-Chunk-Range": "4:4"}, want: 406, wantGeneric: true},
		{name: "message complete", chunk: "3", header: map[string]string{"mex-Chunk-Range": "3:3"}, complete: true, want: 423, wantGeneric: true},
		{name: "unknown message", chunk: "2", header: map[string]string{"mex-Chunk-Range": "2:3"}, unknown: true, want: 404, wantMsg: "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startSandbox(t, nil)
			id := startChunked(t, s, []byte("chunk-one"))
			chunkHeader := func(n string) map[string]string {
				return map[string]string{"mex-Chunk-Range": n + ":3", "Content-Encoding": "gzip"}
			}
			if tt.complete {
				wantStatus(t, s.do(t, req{method: "POST", path: mb1 + "/outbox/" + id + "/2", header: chunkHeader("2"), body: []byte("two")}), 202)
				wantStatus(t, s.do(t, req{method: "POST", path: mb1 + "/outbox/" + id + "/3", header: chunkHeader("3"), body: []byte("three")}), 202)
			}
			target := id
			if tt.unknown {
				target = strings.Repeat("A", 32)
			}
			h := map[string]string{"Content-Encoding": "gzip"}
			for k, v := range tt.header {
				h[k] = v
			}
			mailbox := tt.mailbox
			if mailbox == "" {
				mailbox = mb1
			}
			r := s.do(t, req{method: "POST", path: mailbox + "/outbox/" + target + "/" + tt.chunk, header: h, body: []byte("x")})
			wantStatus(t, r, tt.want)
			body := r.json(t)
			if tt.wantGeneric {
				if body["message"] != "An internal error occurred.\n\nPlease contact support." {
					t.Fatalf("body %s", r.body)
				}
				return
			}
			d := r.detail(t)
			if d["msg"] != tt.wantMsg || (tt.wantCode != "" && d["code"] != tt.wantCode) {
				t.Fatalf("detail %v", d)
			}
			if gotID, _ := body["message_id"].(string); (gotID == id) != tt.wantMsgID {
				t.Fatalf("message_id %q in %s, want present=%v", gotID, r.body, tt.wantMsgID)
			}
		})
	}
}

func TestChunkedSendStates(t *testing.T) {
	s := startSandbox(t, nil)
	id := startChunked(t, s, []byte("one"))
	if m, _ := s.Message(id); m.Status != "uploading" || m.ReceivedChunks != 1 || m.TotalChunks != 3 {
		t.Fatalf("after chunk 1: %+v", m)
	}
	r := s.do(t, req{method: "GET", path: mb2 + "/inbox"})
	if msgs := r.json(t)["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("uploading message listed: %s", r.body)
	}
	for _, n := range []string{"2", "3"} {
		r := s.do(t, req{method: "POST", path: mb1 + "/outbox/" + strings.ToLower(id) + "/" + n,
			header: map[string]string{"mex-Chunk-Range": n + ":3", "Content-Encoding": "GZIP "}, body: []byte("chunk" + n)})
		wantStatus(t, r, http.StatusAccepted)
		if string(r.body) != "null" {
			t.Fatalf("chunk %s body %q, want null", n, r.body)
		}
	}
	m, _ := s.Message(id)
	if m.Status != "accepted" || m.ReceivedChunks != 3 || m.Size != int64(len("one")+2*len("chunk2")) {
		t.Fatalf("after chunk 3: %+v", m)
	}
}
