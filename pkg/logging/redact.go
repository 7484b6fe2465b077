package logging

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
)

// Redacted replaces the value of every masked attribute.
const Redacted = "[REDACTED]"

// RedactingHandler wraps another handler and masks, before anything reaches it:
//   - attributes whose key names a secret or a patient identifier, at any depth of groups;
//   - NHS numbers, URL passwords and MESH authorisation tokens inside any string or error value and
//     inside the message itself, because an error from a driver or an HTTP library may quote them;
//
// and leaves our own identifiers whole (IdentifierKey), so that a request or an export can be followed
// through the logs by its id.
//
// It sits below the logger every process builds, so no call site can bypass it.
type RedactingHandler struct {
	inner slog.Handler
}

// NewRedactingHandler wraps inner.
func NewRedactingHandler(inner slog.Handler) *RedactingHandler {
	return &RedactingHandler{inner: inner}
}

func (h *RedactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *RedactingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, ScrubString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *RedactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = redactAttr(a)
	}
	return &RedactingHandler{inner: h.inner.WithAttrs(clean)}
}

func (h *RedactingHandler) WithGroup(name string) slog.Handler {
	return &RedactingHandler{inner: h.inner.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	a.Value = a.Value.Resolve()
	if SensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	if IdentifierKey(a.Key) && a.Value.Kind() != slog.KindGroup {
		return a
	}
	switch a.Value.Kind() {
	case slog.KindGroup:
		attrs := a.Value.Group()
		clean := make([]slog.Attr, len(attrs))
		for i, g := range attrs {
			clean[i] = redactAttr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	case slog.KindString:
		return slog.String(a.Key, ScrubString(a.Value.String()))
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			return slog.String(a.Key, ScrubString(v.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, ScrubString(v.String()))
		case []byte:
			return slog.String(a.Key, ScrubString(string(v)))
		default:
			return slog.Any(a.Key, redactComposite(v))
		}
	}
	return a
}

// redactComposite masks a struct, map, slice or pointer logged with slog.Any. The handlers below would
// print its fields under their Go or JSON names (a Record's Forename, a map's "nhs_number"), so it is
// taken through its JSON form, where every object key is checked like an attribute key and every string
// is scrubbed. Unexported fields do not survive JSON, which is the safe direction; a value that cannot
// be marshalled is not logged at all.
func redactComposite(v any) any {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return Redacted
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return Redacted
	}
	return redactJSON(tree)
}

func redactJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			switch {
			case SensitiveKey(k):
				t[k] = Redacted
			case IdentifierKey(k):
				// A string is kept whole, like the attribute of the same name.
				if _, isString := e.(string); !isString {
					t[k] = redactJSON(e)
				}
			default:
				t[k] = redactJSON(e)
			}
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = redactJSON(e)
		}
		return t
	case string:
		return ScrubString(t)
	}
	return v
}

// Substrings that make a key sensitive wherever they appear in it.
var sensitiveFragments = []string{
	"password", "passwd", "passphrase", "secret", "token", "authorization", "apikey", "api_key",
	"sharedkey", "shared_key", "privatekey", "private_key", "credential",
	"nhs_number", "nhsnumber", "forename", "surname", "given_name", "givenname", "family_name",
	"familyname", "full_name", "fullname", "date_of_birth", "dateofbirth", "birth_date", "postcode",
	"post_code",
}

// Words that make a key sensitive when they are a whole word of it (split on _ - . and space), so that
// "key" masks "key" and "mesh.key" but not "monkey" or "keyboard".
var sensitiveWords = map[string]bool{
	"key": true, "pwd": true, "dob": true, "auth": true, "creds": true, "cookie": true, "pin": true,
}

// SensitiveKey reports whether an attribute key names a secret or a patient identifier.
func SensitiveKey(key string) bool {
	k := strings.ToLower(key)
	for _, f := range sensitiveFragments {
		if strings.Contains(k, f) {
			return true
		}
	}
	for _, w := range strings.FieldsFunc(k, func(r rune) bool { return r == '_' || r == '-' || r == '.' || r == ' ' }) {
		if sensitiveWords[w] {
			return true
		}
	}
	return false
}

// identifierKeys name attributes that hold our own identifiers: request and export ids, MESH message and
// local ids, file names, record UUIDs. They are passed untouched, because an operator follows a request or
// an export through the logs by them, and ten digits inside one (a timestamp in a request id, the last
// group of a UUID) are not an NHS number. Nothing in them comes from a patient's record.
var identifierKeys = map[string]bool{
	"request_id": true, "export_id": true, "mesh_message_id": true, "previous_mesh_message_id": true,
	"message_id": true, "filename": true, "mesh_local_id": true, "local_id": true, "record_uuid": true,
}

// IdentifierKey reports whether an attribute key names one of our identifiers, which redaction leaves
// whole.
func IdentifierKey(key string) bool { return identifierKeys[strings.ToLower(key)] }

var (
	// An NHS number as a value: ten digits, or 3-3-4 with single spaces. Whether it stands alone is
	// decided by standsAlone, since Go's regexp has no look-around.
	nhsNumberPattern = regexp.MustCompile(`[0-9]{3} [0-9]{3} [0-9]{4}|[0-9]{10}`)
	urlPassword      = regexp.MustCompile(`(://[^/:@\s]*:)[^@\s/]+@`)
	meshToken        = regexp.MustCompile(`NHSMESH\s+\S+`)
	keyValueSecret   = regexp.MustCompile(`(?i)\b(password|passphrase|secret|token|shared_key|sharedkey)\s*[=:]\s*\S+`)
)

// ScrubString masks NHS numbers, passwords in URLs, MESH authorisation tokens and key=value secrets
// inside free text. An NHS number is masked only where it is a value of its own: ten digits with a valid
// mod-11 check digit, or the same written 3-3-4 with spaces, standing alone. Digits inside a longer token
// (a request id, a UUID, a MESH message id, a file name) are left as they are.
func ScrubString(s string) string {
	if s == "" {
		return s
	}
	s = urlPassword.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = meshToken.ReplaceAllString(s, "NHSMESH "+Redacted)
	s = keyValueSecret.ReplaceAllString(s, "${1}="+Redacted)
	if !hasTenDigits(s) {
		return s
	}
	matches := nhsNumberPattern.FindAllStringIndex(s, -1)
	if matches == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		digits := strings.ReplaceAll(s[m[0]:m[1]], " ", "")
		if !standsAlone(s, m[0], m[1]) || !validNHSNumber(digits) {
			continue
		}
		b.WriteString(s[last:m[0]])
		b.WriteString(RedactedNHSNumber)
		last = m[1]
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// RedactedNHSNumber replaces an NHS number found in text.
const RedactedNHSNumber = "[REDACTED-NHS-NUMBER]"

// standsAlone reports whether s[start:end] is a token of its own: not touching a letter or digit, and
// not joined to one by a character that makes one token of several parts (the "-" of a UUID or a request
// id, the "_" of a MESH message id, the "." of a file name, the "/" of a path).
func standsAlone(s string, start, end int) bool {
	if start > 0 {
		c := s[start-1]
		if isAlnum(c) {
			return false
		}
		if isJoiner(c) && start > 1 && isAlnum(s[start-2]) {
			return false
		}
	}
	if end < len(s) {
		c := s[end]
		if isAlnum(c) {
			return false
		}
		if isJoiner(c) && end+1 < len(s) && isAlnum(s[end+1]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isJoiner(c byte) bool {
	switch c {
	case '-', '_', '.', '/', '\\', '+', '^', '~', '#', '@':
		return true
	}
	return false
}

func hasTenDigits(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			run++
			if run >= 10 {
				return true
			}
		} else if s[i] != ' ' {
			run = 0
		}
	}
	return false
}

// validNHSNumber applies the NHS number modulus 11 check. It is repeated here rather than imported so
// that logging depends on nothing of the domain.
func validNHSNumber(d string) bool {
	if len(d) != 10 {
		return false
	}
	sum := 0
	for i := 0; i < 9; i++ {
		sum += int(d[i]-'0') * (10 - i)
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(d[9]-'0')
}
