package meshsandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

const (
	mediaJSON   = "application/json"
	mediaMESHv2 = "application/vnd.mesh.v2+json"
)

// meshErr is one entry of MESH's error table: event, code and text. Errors the
// official sandbox raises with a bare description have an empty event and code.
type meshErr struct {
	event, code, msg string
	// known marks entries of the official error-code table; only those carry the
	// message id in the body.
	known bool
}

func known(event, code, msg string) meshErr {
	return meshErr{event: event, code: code, msg: msg, known: true}
}
func plain(msg string) meshErr { return meshErr{msg: msg} }

// The error texts and codes below are MESH's (the DTS error-code table as the
// official sandbox carries it).
var (
	errMissingTo           = known("SEND", "08", "TO_DTS missing")
	errUnregisteredTo      = known("SEND", "12", "Unregistered to address")
	errInvalidChunks       = known("SEND", "InvalidHeaderChunks", "Invalid chunk values sent in mex-Chunk-Range header")
	errUnsupportedEncoding = known("SEND", "UnsupportedContentEncoding", "Unsupported content encoding")
	errMissingDataFile     = known("COLLECT", "02", "Data file is missing or inaccessible.")
	errWorkflowNotAllowed  = known("SEND", "17", "Workflow ID not registered for mailbox")
	errNoMailbox           = known("SEND", "EPL-151", "No mailbox matched")
	errMessageGone         = known("SEND", "Message already accepted", "Message no longer available for download")
	errMessageNotExist     = known("RECEIVE", "20", "Message does not exist")
	errMalformedControl    = known("TRANSFER", "06", "MalformedControlFile")
	errInvalidChecksum     = known("SEND", "Invalid checksum", "Invalid checksum")

	errReadingAuthHeader  = plain("Error reading from Authorization header")
	errMailboxTokenMatch  = plain("Mailbox id does not match token")
	errInvalidAuthToken   = plain("Invalid Authentication Token")
	errDuplicatedAuth     = plain("Error Duplicated Authentication Token")
	errEncodingChanged    = plain("cannot change content encoding")
	errAcceptHeaderFormat = plain("Accept header api format incorrect")
)

// undeliverable is the status MESH reports for a message not collected in time.
var errUndelivered = known("SEND", "14", "Message not collected by recipient after 5 days")

// statusErr is the body the official sandbox gives an HTTP error raised without a
// description: the status phrase ("Not Found", "Forbidden").
func statusErr(status int) meshErr { return plain(http.StatusText(status)) }

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	// No HTML escaping: links.next carries '&' and Python's json writes it as is.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type errorV1 struct {
	MessageID        string `json:"messageID,omitempty"`
	ErrorEvent       string `json:"errorEvent"`
	ErrorCode        string `json:"errorCode"`
	ErrorDescription string `json:"errorDescription"`
}

// ErrorDetail is one entry of a v2 error body's detail list.
type ErrorDetail struct {
	Event string `json:"event"`
	Code  string `json:"code"`
	Msg   string `json:"msg"`
}

// ErrorV2 is the v2 error body: {"message_id", "internal_id", "detail": [...]},
// with absent ids left out.
type ErrorV2 struct {
	MessageID  string        `json:"message_id,omitempty"`
	InternalID string        `json:"internal_id,omitempty"`
	Detail     []ErrorDetail `json:"detail"`
}

// fail writes a MESH error body in the client's API version.
func (c *call) fail(status int, e meshErr, messageID string) {
	if !e.known {
		messageID = ""
	}
	if c.version < 2 {
		writeJSON(c.w, status, mediaJSON, errorV1{MessageID: messageID, ErrorEvent: e.event, ErrorCode: e.code, ErrorDescription: e.msg})
		return
	}
	writeJSON(c.w, status, mediaMESHv2, ErrorV2{MessageID: messageID, Detail: []ErrorDetail{{Event: e.event, Code: e.code, Msg: e.msg}}})
}

// failInternal writes the body the official sandbox gives errors raised with no
// detail at all (its 406 and 423 on chunk uploads, and 500s).
func failInternal(w http.ResponseWriter, status int) {
	writeJSON(w, status, mediaJSON, map[string]string{"message": "An internal error occurred.\n\nPlease contact support."})
}

// ValidationError is one entry of the 400 body FastAPI (pydantic 2) gives a request
// whose headers, query or path parameters fail validation.
type ValidationError struct {
	Type  string         `json:"type"`
	Loc   []string       `json:"loc"`
	Msg   string         `json:"msg"`
	Input any            `json:"input,omitempty"`
	Ctx   map[string]any `json:"ctx,omitempty"`
	URL   string         `json:"url,omitempty"`
}

func pydanticURL(typ string) string { return "https://errors.pydantic.dev/2.5/v/" + typ }

func missingField(where, name string) ValidationError {
	return ValidationError{Type: "missing", Loc: []string{where, name}, Msg: "Field required", URL: pydanticURL("missing")}
}

func tooLong(where, name, value string, max int) ValidationError {
	return ValidationError{
		Type: "string_too_long", Loc: []string{where, name}, Input: value,
		Msg: fmt.Sprintf("String should have at most %d characters", max),
		Ctx: map[string]any{"max_length": max}, URL: pydanticURL("string_too_long"),
	}
}

func tooShort(where, name, value string, min int) ValidationError {
	noun := "characters"
	if min == 1 {
		noun = "character"
	}
	return ValidationError{
		Type: "string_too_short", Loc: []string{where, name}, Input: value,
		Msg: fmt.Sprintf("String should have at least %d %s", min, noun),
		Ctx: map[string]any{"min_length": min}, URL: pydanticURL("string_too_short"),
	}
}

// parseIntParam validates an integer parameter with optional bounds as FastAPI does.
func parseIntParam(where, name, raw string, ge, le *int) (int, *ValidationError) {
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, &ValidationError{
			Type: "int_parsing", Loc: []string{where, name}, Input: raw,
			Msg: "Input should be a valid integer, unable to parse string as an integer", URL: pydanticURL("int_parsing"),
		}
	}
	if ge != nil && n < *ge {
		return 0, &ValidationError{
			Type: "greater_than_equal", Loc: []string{where, name}, Input: raw,
			Msg: fmt.Sprintf("Input should be greater than or equal to %d", *ge),
			Ctx: map[string]any{"ge": *ge}, URL: pydanticURL("greater_than_equal"),
		}
	}
	if le != nil && n > *le {
		return 0, &ValidationError{
			Type: "less_than_equal", Loc: []string{where, name}, Input: raw,
			Msg: fmt.Sprintf("Input should be less than or equal to %d", *le),
			Ctx: map[string]any{"le": *le}, URL: pydanticURL("less_than_equal"),
		}
	}
	return n, nil
}

func failValidation(w http.ResponseWriter, errs []ValidationError) {
	writeJSON(w, http.StatusBadRequest, mediaJSON, map[string]any{"detail": errs})
}

var acceptVersion = regexp.MustCompile(`^application/vnd\.mesh\.v(\d+)\+json$`)

// parseAcceptVersion reads the MESH API version from Accept the way the official
// sandbox does (it splits on ';' and looks at the first vnd.mesh entry). ok is false
// when a vnd.mesh entry is malformed.
func parseAcceptVersion(accept string) (version int, ok bool) {
	if accept == "" {
		return 1, true
	}
	for _, part := range strings.Split(accept, ";") {
		part = strings.TrimSpace(part)
		if part == "" || !strings.Contains(part, "vnd.mesh") {
			continue
		}
		m := acceptVersion.FindStringSubmatch(part)
		if m == nil {
			return 0, false
		}
		v, err := strconv.Atoi(m[1])
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 1, true
}

func lenientAPIVersion(accept string) int {
	v, ok := parseAcceptVersion(accept)
	if !ok || v < 1 {
		return 1
	}
	return v
}

// apiVersion is the endpoint-level Accept check: 400 when malformed.
func (c *call) apiVersion() (int, bool) {
	v, ok := parseAcceptVersion(c.r.Header.Get("Accept"))
	if !ok {
		c.fail(http.StatusBadRequest, errAcceptHeaderFormat, "")
		return 0, false
	}
	return v, true
}
