package meshsandbox

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

const authScheme = "NHSMESH"

// Token computes the NHSMESH Authorization header value for a request, as a MESH
// client does: HMAC-SHA256 (hex) over "{mailbox}:{nonce}:{nonce_count}:{password}:{timestamp}".
func Token(sharedKey, mailboxID, password, nonce, nonceCount string, at time.Time) string {
	ts := at.UTC().Format("200601021504")
	return authScheme + " " + mailboxID + ":" + nonce + ":" + nonceCount + ":" + ts + ":" +
		tokenHMAC(sharedKey, mailboxID, password, nonce, nonceCount, ts)
}

func tokenHMAC(sharedKey, mailboxID, password, nonce, nonceCount, timestamp string) string {
	mac := hmac.New(sha256.New, []byte(sharedKey))
	mac.Write([]byte(mailboxID + ":" + nonce + ":" + nonceCount + ":" + password + ":" + timestamp))
	return hex.EncodeToString(mac.Sum(nil))
}

type authToken struct {
	mailboxID, nonce, nonceCount, timestamp, hmac string
	parts                                         int
	hasScheme                                     bool
}

// parseToken splits the header the official sandbox's way: an optional NHSMESH
// scheme, then five colon-separated parts.
func parseToken(header string) authToken {
	header = strings.TrimSpace(header)
	var t authToken
	if strings.HasPrefix(strings.ToUpper(header), authScheme) {
		t.hasScheme = true
		if len(header) > len(authScheme) {
			header = header[len(authScheme)+1:]
		} else {
			header = ""
		}
	}
	parts := strings.Split(header, ":")
	t.parts = len(parts)
	get := func(i int) string {
		if i < len(parts) {
			return parts[i]
		}
		return ""
	}
	t.mailboxID, t.nonce, t.nonceCount, t.timestamp, t.hmac = get(0), get(1), get(2), get(3), get(4)
	return t
}

func (t authToken) wellFormed() bool {
	if t.parts != 5 || t.nonceCount == "" || strings.Contains(t.mailboxID, " ") {
		return false
	}
	for _, r := range t.nonceCount {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// authorise checks the Authorization header against the path's mailbox, writing the
// 403 itself on failure. The order of checks is the official sandbox's, with the live
// service's timestamp and replay checks last so a bad token never burns a nonce.
func (s *Server) authorise(c *call) (Mailbox, bool) {
	header := strings.TrimSpace(c.r.Header.Get("Authorization"))
	deny := func(e meshErr, reason string) (Mailbox, bool) {
		s.log.Warn("mesh request refused", slog.String("route", c.route.name),
			slog.String("mailbox", c.route.mailbox), slog.String("reason", reason))
		c.fail(http.StatusForbidden, e, "")
		return Mailbox{}, false
	}
	if header == "" {
		return deny(errReadingAuthHeader, "no Authorization header")
	}
	t := parseToken(header)
	if t.mailboxID != c.route.mailbox {
		return deny(errMailboxTokenMatch, "token mailbox differs from path")
	}
	if !t.wellFormed() {
		return deny(errReadingAuthHeader, "malformed token")
	}
	mb, ok := s.lookupMailbox(c.route.mailbox)
	if !ok {
		return deny(errNoMailbox, "unknown mailbox")
	}
	want := tokenHMAC(s.cfg.SharedKey, t.mailboxID, mb.Password, t.nonce, t.nonceCount, t.timestamp)
	if !hmac.Equal([]byte(strings.ToLower(t.hmac)), []byte(want)) {
		return deny(errInvalidAuthToken, "hmac mismatch")
	}
	now := s.now()
	if !s.cfg.DisableTimestampCheck {
		at, err := time.ParseInLocation("200601021504", t.timestamp, time.UTC)
		if err != nil {
			return deny(errInvalidAuthToken, "timestamp not yyyyMMddHHmm")
		}
		if d := now.Sub(at); d > s.cfg.TimestampWindow || d < -s.cfg.TimestampWindow {
			return deny(errInvalidAuthToken, "timestamp outside window")
		}
	}
	if !s.cfg.DisableNonceCheck && !s.useNonce(mb.ID+":"+t.nonce+":"+t.nonceCount, now) {
		return deny(errDuplicatedAuth, "nonce reused")
	}
	return mb, true
}

// useNonce records a nonce and reports whether it was fresh. Nonces are kept for
// twice the timestamp window (a token older than that is refused anyway), or an
// hour when the timestamp check is off.
func (s *Server) useNonce(key string, now time.Time) bool {
	keep := 2 * s.cfg.TimestampWindow
	if s.cfg.DisableTimestampCheck {
		keep = time.Hour
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.noncePrun) > time.Minute {
		for k, at := range s.nonces {
			if now.Sub(at) > keep {
				delete(s.nonces, k)
			}
		}
		s.noncePrun = now
	}
	if at, seen := s.nonces[key]; seen && now.Sub(at) <= keep {
		return false
	}
	s.nonces[key] = now
	return true
}
