package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrSeveralMessages is wrapped by the error TrackByLocalID returns when MESH answers 300: more than one
// message carries the local id, so the caller cannot tell which one to adopt.
var ErrSeveralMessages = errors.New("several messages share the local id")

// Error is every failure a Client method returns (apart from bad arguments). It carries what MESH said,
// and whether trying again later could help. Its text never includes credentials or tokens.
type Error struct {
	// Op names the client operation, e.g. "send", "send chunk 2/3", "download".
	Op string
	// StatusCode is the HTTP status, 0 when no response was received.
	StatusCode int
	// Event, Code and Description come from MESH's error body when it sent one
	// (v2 detail[0].event/code/msg, or v1 errorEvent/errorCode/errorDescription).
	Event, Code, Description string
	// MessageID is the message the error refers to, when known.
	MessageID string
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
	// Transient is true for network failures, timeouts, 429 and 500/502/503/504: trying again later may
	// succeed. It stays true on the error returned after retries are exhausted.
	Transient bool
	// Err is the underlying cause (network error, context error, ErrSeveralMessages), if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mesh ")
	b.WriteString(e.Op)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.Event != "" || e.Code != "" || e.Description != "" {
		b.WriteString(":")
		for _, s := range []string{e.Event, e.Code, e.Description} {
			if s != "" {
				b.WriteString(" ")
				b.WriteString(s)
			}
		}
	}
	if e.MessageID != "" {
		fmt.Fprintf(&b, " (message %s)", e.MessageID)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Operation is Op without its detail ("send chunk 2/3" is "send", "track by local id" is "track"): the
// kind of call, a small fixed set fit for a metric label.
func (e *Error) Operation() string {
	op, _, _ := strings.Cut(e.Op, " ")
	return op
}

// Operations are the values Error.Operation takes.
var Operations = []string{"handshake", "send", "track", "inbox", "download", "acknowledge"}

// IsTransient reports whether err is a MESH failure that may succeed if tried again later.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}

// IsNotFound reports whether MESH answered 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// IsPermanent reports whether err will not go away by retrying: a 4xx from MESH (403 after one retry
// with a fresh token), a TLS certificate failure, an unusable response, or a call the client refused
// (ErrInvalidArgument). Cancellation is neither transient nor permanent.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrInvalidArgument) {
		return true
	}
	var e *Error
	if !errors.As(err, &e) || e.Transient {
		return false
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// transientStatus lists the statuses the spec says to retry.
func transientStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// maxErrorBody bounds how much of an error response is read: MESH error bodies are small, and a proxy's
// HTML page must not be buffered whole.
const maxErrorBody = 64 << 10

// responseError turns a non-success response into an *Error and closes its body.
func responseError(op string, resp *http.Response, now time.Time) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	e := &Error{
		Op:         op,
		StatusCode: resp.StatusCode,
		Transient:  transientStatus(resp.StatusCode),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now),
	}
	parseErrorBody(e, body)
	return e
}

// parseErrorBody fills Event, Code, Description and MessageID from a v2 or v1 MESH error body, or from a
// plain {"detail": "text"} body. Anything else is left alone: some errors have no body.
func parseErrorBody(e *Error, body []byte) {
	var v map[string]json.RawMessage
	if len(body) == 0 || json.Unmarshal(body, &v) != nil {
		return
	}
	e.MessageID = firstString(v, "message_id", "messageID", "messageId")
	if d, ok := v["detail"]; ok {
		var items []map[string]json.RawMessage
		var one map[string]json.RawMessage
		var text string
		switch {
		case json.Unmarshal(d, &items) == nil && len(items) > 0:
			one = items[0]
		case json.Unmarshal(d, &one) == nil:
		case json.Unmarshal(d, &text) == nil:
			e.Description = text
		}
		if one != nil {
			e.Event = firstString(one, "event", "errorEvent")
			e.Code = firstString(one, "code", "errorCode")
			e.Description = firstString(one, "msg", "message", "errorDescription")
			// A request-validation 400 (the official sandbox is FastAPI) says "field required" and puts
			// the offending header or parameter in loc; without it the operator cannot tell which one.
			if loc := locationText(one["loc"]); loc != "" && e.Description != "" {
				e.Description += " (" + loc + ")"
			}
		}
	}
	if e.Code == "" && e.Description == "" {
		e.Event = firstString(v, "errorEvent")
		e.Code = firstString(v, "errorCode")
		e.Description = firstString(v, "errorDescription")
	}
	if e.Code == "" && e.Description == "" {
		// Errors raised without a MESH detail (e.g. 423, 500) carry only a generic text.
		e.Description = strings.Join(strings.Fields(firstString(v, "message")), " ")
	}
}

// locationText renders a validation error's loc, e.g. ["header", "mex-workflowid"] → "header mex-workflowid".
func locationText(raw json.RawMessage) string {
	var parts []json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var out []string
	for _, p := range parts {
		if s := scalarString(p); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// firstString returns the first of keys present in v as a string; numbers are kept as written.
func firstString(v map[string]json.RawMessage, keys ...string) string {
	for _, k := range keys {
		raw, ok := v[k]
		if !ok {
			continue
		}
		if s := scalarString(raw); s != "" {
			return s
		}
	}
	return ""
}

// scalarString renders a JSON string, number or boolean as text; null and containers give "".
func scalarString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	t := strings.TrimSpace(string(raw))
	if t == "" || t == "null" || t[0] == '{' || t[0] == '[' {
		return ""
	}
	return t
}

// parseRetryAfter reads delta-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// transportError classifies a failure to get a response. Certificate and TLS alert failures are
// permanent: retrying with the same certificate cannot fix them. Everything else (refused, reset,
// timeouts, EOF) is transient.
func transportError(op string, err error) *Error {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		recAlert *tls.RecordHeaderError
	)
	permanent := errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert) || errors.As(err, &recAlert) ||
		strings.Contains(err.Error(), "remote error: tls:")
	return &Error{Op: op, Transient: !permanent, Err: err}
}
