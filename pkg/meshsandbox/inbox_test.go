package meshsandbox_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestInboxMaxResults(t *testing.T) {
	tests := []struct {
		query    string
		want     int
		wantType string
	}{
		{query: "max_results=9", want: 400, wantType: "greater_than_equal"},
		{query: "max_results=5001", want: 400, wantType: "less_than_equal"},
		{query: "max_results=ten", want: 400, wantType: "int_parsing"},
		{query: "continue_from=short", want: 400, wantType: "string_too_short"},
		{query: "max_results=10", want: 200},
		{query: "max_results=5000", want: 200},
		{query: "", want: 200},
	}
	s := startSandbox(t, nil)
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := s.do(t, req{method: "GET", path: mb2 + "/inbox?" + tt.query})
			wantStatus(t, r, tt.want)
			if tt.want == 400 {
				e := r.json(t)["detail"].([]any)[0].(map[string]any)
				if e["type"] != tt.wantType || e["loc"].([]any)[0] != "query" {
					t.Fatalf("validation body %s", r.body)
				}
			}
		})
	}
}

func TestInboxPaging(t *testing.T) {
	s := startSandbox(t, nil)
	const total = 1200
	sent := make([]string, total)
	for i := range sent {
		sent[i] = s.sendMessage(t, mb1, mb2, []byte(fmt.Sprint(i)), nil)
	}
	// One message to another inbox and one still uploading must not show.
	s.sendMessage(t, mb1, mb3, []byte("elsewhere"), nil)
	startChunked(t, s, []byte("partial"))

	tests := []struct {
		name      string
		first     string
		wantPages []int
	}{
		{name: "default page size 500", first: mb2 + "/inbox", wantPages: []int{500, 500, 200}},
		{name: "max_results 1000", first: mb2 + "/inbox?max_results=1000", wantPages: []int{1000, 200}},
		{name: "max_results 5000", first: mb2 + "/inbox?max_results=5000", wantPages: []int{1200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var pages []int
			path := tt.first
			for path != "" {
				r := s.do(t, req{method: "GET", path: path, mailbox: mb2})
				wantStatus(t, r, 200)
				if ct := r.header.Get("Content-Type"); ct != v2 {
					t.Errorf("Content-Type %q", ct)
				}
				body := r.json(t)
				if n := body["approx_inbox_count"].(float64); n != total {
					t.Fatalf("approx_inbox_count %v, want %d", n, total)
				}
				links := body["links"].(map[string]any)
				if self := links["self"].(string); !strings.HasPrefix(self, "/messageexchange/X26ABC2/inbox") {
					t.Fatalf("links.self %q", self)
				}
				msgs := body["messages"].([]any)
				pages = append(pages, len(msgs))
				for _, m := range msgs {
					got = append(got, m.(string))
				}
				path = ""
				if next, ok := links["next"].(string); ok {
					u, err := url.Parse(next)
					if err != nil || u.Query().Get("continue_from") == "" {
						t.Fatalf("links.next %q has no continue_from", next)
					}
					path = strings.TrimPrefix(next, "/messageexchange/")
				}
			}
			if fmt.Sprint(pages) != fmt.Sprint(tt.wantPages) {
				t.Fatalf("pages %v, want %v", pages, tt.wantPages)
			}
			if strings.Join(got, ",") != strings.Join(sent, ",") {
				t.Fatal("paged ids are not the sent ids, oldest first")
			}
		})
	}

	t.Run("acknowledged between pages", func(t *testing.T) {
		r := s.do(t, req{method: "GET", path: mb2 + "/inbox?max_results=10"})
		first := r.json(t)
		next := first["links"].(map[string]any)["next"].(string)
		// Acknowledge the whole first page: the next page still starts after it.
		for _, id := range first["messages"].([]any) {
			wantStatus(t, s.do(t, req{method: "PUT", path: mb2 + "/inbox/" + id.(string) + "/status/acknowledged"}), 200)
		}
		r = s.do(t, req{method: "GET", path: strings.TrimPrefix(next, "/messageexchange/"), mailbox: mb2})
		if got := r.json(t)["messages"].([]any)[0]; got != sent[10] {
			t.Fatalf("after acks the next page starts at %v, want %s", got, sent[10])
		}
		c := s.do(t, req{method: "GET", path: mb2 + "/count"})
		if string(c.body) != fmt.Sprintf(`{"count":%d}`, total-10) {
			t.Fatalf("count %s", c.body)
		}
	})
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDownloadSingle(t *testing.T) {
	s := startSandbox(t, nil)
	plainCSV := []byte("nhs_number,date\n9999999999,2024-01-01\n")
	plainID := s.sendMessage(t, mb1, mb2, plainCSV, map[string]string{"mex-LocalID": "exp.1", "mex-Subject": "s"})
	gzID := s.sendMessage(t, mb1, mb2, gzipped(t, plainCSV), map[string]string{"Content-Encoding": "gzip", "mex-Content-Compressed": "Y"})

	tests := []struct {
		name           string
		id             string
		acceptEncoding string
		wantBody       []byte
		wantEncoding   string
	}{
		{name: "plain", id: plainID, wantBody: plainCSV},
		{name: "lower-case id", id: strings.ToLower(plainID), wantBody: plainCSV},
		{name: "gzip message, client does not accept gzip", id: gzID, wantBody: plainCSV},
		{name: "gzip message, client accepts gzip", id: gzID, acceptEncoding: "gzip", wantBody: gzipped(t, plainCSV), wantEncoding: "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.acceptEncoding != "" {
				h["Accept-Encoding"] = tt.acceptEncoding
			}
			r := s.do(t, req{method: "GET", path: mb2 + "/inbox/" + tt.id, header: h})
			wantStatus(t, r, http.StatusOK)
			if !bytes.Equal(r.body, tt.wantBody) {
				t.Fatalf("body %q, want %q", r.body, tt.wantBody)
			}
			if got := r.header.Get("Content-Encoding"); got != tt.wantEncoding {
				t.Fatalf("Content-Encoding %q, want %q", got, tt.wantEncoding)
			}
			wantHeaders := map[string]string{
				"mex-From": mb1, "mex-To": mb2, "mex-WorkflowID": "DPS", "mex-FileName": "file.csv",
				"mex-MessageID": strings.ToUpper(tt.id), "mex-MessageType": "DATA", "mex-Chunk-Range": "1:1",
				"mex-Total-Chunks": "1", "mex-StatusCode": "00", "mex-StatusEvent": "TRANSFER", "mex-StatusSuccess": "SUCCESS",
			}
			if strings.EqualFold(tt.id, plainID) {
				wantHeaders["mex-LocalID"] = "exp.1"
				wantHeaders["Content-Type"] = "text/csv; charset=utf-8"
			} else {
				wantHeaders["mex-Content-Compressed"] = "Y"
			}
			for k, v := range wantHeaders {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestDownloadChunked(t *testing.T) {
	s := startSandbox(t, nil)
	chunks := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000), []byte("c")}
	id := s.sendMessage(t, mb1, mb2, chunks[0], map[string]string{"mex-Chunk-Range": "1:3"})
	for i, c := range chunks[1:] {
		n := fmt.Sprint(i + 2)
		wantStatus(t, s.do(t, req{method: "POST", path: mb1 + "/outbox/" + id + "/" + n, header: map[string]string{"mex-Chunk-Range": n + ":3"}, body: c}), 202)
	}
	tests := []struct {
		path      string
		want      int
		wantRange string
		wantBody  []byte
	}{
		{path: id, want: 206, wantRange: "1:3", wantBody: chunks[0]},
		{path: id + "/1", want: 206, wantRange: "1:3", wantBody: chunks[0]},
		{path: id + "/2", want: 206, wantRange: "2:3", wantBody: chunks[1]},
		{path: strings.ToLower(id) + "/3", want: 200, wantRange: "3:3", wantBody: chunks[2]},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r := s.do(t, req{method: "GET", path: mb2 + "/inbox/" + tt.path})
			wantStatus(t, r, tt.want)
			if got := r.header.Get("mex-Chunk-Range"); got != tt.wantRange {
				t.Errorf("mex-Chunk-Range %q, want %q", got, tt.wantRange)
			}
			if r.header.Get("mex-Total-Chunks") != "3" || r.header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("headers %v", r.header)
			}
			if !bytes.Equal(r.body, tt.wantBody) {
				t.Errorf("body of %d bytes, want %d", len(r.body), len(tt.wantBody))
			}
		})
	}
}

func TestDownloadErrors(t *testing.T) {
	s := startSandbox(t, nil)
	id := s.sendMessage(t, mb1, mb2, []byte("x"), nil)
	uploading := startChunked(t, s, []byte("partial"))
	undeliverable := s.sendMessage(t, mb1, mb2, []byte("y"), nil)
	if err := s.MarkUndeliverable(undeliverable); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		want     int
		wantCode string
		wantMsg  string
	}{
		{name: "unknown message", path: mb2 + "/inbox/" + strings.Repeat("0", 32), want: 404, wantCode: "20", wantMsg: "Message does not exist"},
		{name: "chunk out of range", path: mb2 + "/inbox/" + id + "/2", want: 404, wantCode: "20", wantMsg: "Message does not exist"},
		{name: "not the recipient", path: mb3 + "/inbox/" + id, want: 403, wantMsg: "Forbidden"},
		{name: "the sender", path: mb1 + "/inbox/" + id, want: 403, wantMsg: "Forbidden"},
		{name: "still uploading", path: mb2 + "/inbox/" + uploading, want: 410, wantCode: "Message already accepted", wantMsg: "Message no longer available for download"},
		{name: "undeliverable", path: mb2 + "/inbox/" + undeliverable, want: 410, wantCode: "Message already accepted", wantMsg: "Message no longer available for download"},
		{name: "ack unknown", path: mb2 + "/inbox/" + strings.Repeat("0", 32) + "/status/acknowledged", want: 404, wantCode: "20", wantMsg: "Message does not exist"},
		{name: "ack by non-recipient", path: mb3 + "/inbox/" + id + "/status/acknowledged", want: 403, wantMsg: "Forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := "GET"
			if strings.HasSuffix(tt.path, "acknowledged") {
				method = "PUT"
			}
			r := s.do(t, req{method: method, path: tt.path})
			wantStatus(t, r, tt.want)
			if d := r.detail(t); d["code"] != tt.wantCode || d["msg"] != tt.wantMsg {
				t.Fatalf("detail %v", d)
			}
		})
	}
	t.Run("chunk zero", func(t *testing.T) {
		r := s.do(t, req{method: "GET", path: mb2 + "/inbox/" + id + "/0"})
		wantStatus(t, r, 400)
	})
}

func TestAcknowledge(t *testing.T) {
	s := startSandbox(t, nil)
	id := s.sendMessage(t, mb1, mb2, []byte("x"), nil)
	for i := range 2 { // acking twice is still 200
		r := s.do(t, req{method: "PUT", path: mb2 + "/inbox/" + strings.ToLower(id) + "/status/acknowledged"})
		wantStatus(t, r, 200)
		if len(r.body) != 0 {
			t.Fatalf("ack %d body %q, want empty", i, r.body)
		}
	}
	if m, _ := s.Message(id); m.Status != "acknowledged" {
		t.Fatalf("status %s", m.Status)
	}
	if msgs := s.do(t, req{method: "GET", path: mb2 + "/inbox"}).json(t)["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("acknowledged message still listed: %v", msgs)
	}
	wantStatus(t, s.do(t, req{method: "GET", path: mb2 + "/inbox/" + id}), 200) // still downloadable
	v1 := s.do(t, req{method: "PUT", path: mb2 + "/inbox/" + id + "/status/acknowledged", header: map[string]string{"Accept": "application/json"}})
	if string(v1.body) != `{"messageId":"`+id+`"}` {
		t.Fatalf("v1 ack body %s", v1.body)
	}
}
