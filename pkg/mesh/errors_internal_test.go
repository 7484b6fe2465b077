package mesh

import "testing"

// Bodies below were captured verbatim from the official NHSDigital/mesh-sandbox (v2 Accept unless noted),
// so the parser is pinned to what MESH really sends, not to what our own sandbox sends.
func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name                         string
		body                         string
		event, code, desc, messageID string
	}{
		{"v2 unregistered recipient",
			`{"detail":[{"event":"SEND","code":"12","msg":"Unregistered to address"}]}`,
			"SEND", "12", "Unregistered to address", ""},
		{"v2 with message id",
			`{"message_id":"ABC","detail":[{"event":"SEND","code":"InvalidHeaderChunks","msg":"Invalid chunk values sent in mex-Chunk-Range header"}]}`,
			"SEND", "InvalidHeaderChunks", "Invalid chunk values sent in mex-Chunk-Range header", "ABC"},
		{"v2 auth failure",
			`{"detail":[{"event":"","code":"","msg":"Invalid Authentication Token"}]}`,
			"", "", "Invalid Authentication Token", ""},
		{"v1",
			`{"messageID":"X1","errorEvent":"SEND","errorCode":"12","errorDescription":"Unregistered to address"}`,
			"SEND", "12", "Unregistered to address", "X1"},
		{"v1 handshake without detail",
			`{"errorEvent":"","errorCode":"","errorDescription":"Error reading from Authorization header"}`,
			"", "", "Error reading from Authorization header", ""},
		{"validation error, pydantic 1",
			`{"detail":[{"loc":["header","mex-workflowid"],"msg":"field required","type":"value_error.missing"}]}`,
			"", "", "field required (header mex-workflowid)", ""},
		{"validation error, pydantic 2",
			`{"detail":[{"type":"greater_than_equal","loc":["query","max_results"],"msg":"Input should be greater than or equal to 10","input":"5","ctx":{"ge":10}}]}`,
			"", "", "Input should be greater than or equal to 10 (query max_results)", ""},
		{"generic 423",
			`{"message":"An internal error occurred.\n\nPlease contact support."}`,
			"", "", "An internal error occurred. Please contact support.", ""},
		{"plain detail", `{"detail":"Accept header api format incorrect"}`, "", "", "Accept header api format incorrect", ""},
		{"empty", ``, "", "", "", ""},
		{"not json", `<html>bad gateway</html>`, "", "", "", ""},
		{"null", `null`, "", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e Error
			parseErrorBody(&e, []byte(tc.body))
			if e.Event != tc.event || e.Code != tc.code || e.Description != tc.desc || e.MessageID != tc.messageID {
				t.Errorf("got event=%q code=%q desc=%q id=%q; want %q %q %q %q",
					e.Event, e.Code, e.Description, e.MessageID, tc.event, tc.code, tc.desc, tc.messageID)
			}
		})
	}
}
