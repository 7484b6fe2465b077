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
//     inside the message itself, because an error from a driver or an HTTP library may quote them.
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
			if SensitiveKey(k) {
				t[k] = Redacted
			} else {
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

var (
	// Ten digits, optionally written 3-3-4 with spaces or dashes, not part of a longer number.
	nhsNumberPattern = regexp.MustCompile(`(^|[^0-9])([0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4})([^0-9]|$)`)
	urlPassword      = regexp.MustCompile(`(://[^/:@\s]*:)[^@\s/]+@`)
	meshToken        = regexp.MustCompile(`NHSMESH\s+\S+`)
	keyValueSecret   = regexp.MustCompile(`(?i)\b(password|passphrase|secret|token|shared_key|sharedkey)\s*[=:]\s*\S+`)
)

// ScrubString masks NHS numbers (any ten-digit number with a valid mod-11 check digit), passwords in
// URLs, MESH authorisation tokens and key=value secrets inside free text.
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
	// ReplaceAllStringFunc cannot see overlapping boundaries, so loop until stable.
	for range 4 {
		next := nhsNumberPattern.ReplaceAllStringFunc(s, func(m string) string {
			sub := nhsNumberPattern.FindStringSubmatch(m)
			digits := strings.NewReplacer(" ", "", "-", "").Replace(sub[2])
			if !validNHSNumber(digits) {
				return m
			}
			return sub[1] + "[REDACTED-NHS-NUMBER]" + sub[3]
		})
		if next == s {
			break
		}
		s = next
	}
	return s
}

func hasTenDigits(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			run++
			if run >= 10 {
				return true
			}
		} else if s[i] != ' ' && s[i] != '-' {
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
