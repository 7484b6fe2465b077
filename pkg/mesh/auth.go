package mesh

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// authScheme is the Authorization scheme MESH expects.
const authScheme = "NHSMESH"

// timestampLayout is MESH's yyyyMMddHHmm, always in UTC.
const timestampLayout = "200601021504"

// AuthorizationToken builds the value of the Authorization header for one request:
//
//	NHSMESH {mailbox}:{nonce}:{nonce_count}:{timestamp}:{hmac}
//
// where hmac is the lower-case hex HMAC-SHA256, keyed by the environment's shared key, of
// "{mailbox}:{nonce}:{nonce_count}:{password}:{timestamp}". A token must be used for one request only:
// the live service refuses a nonce it has seen before.
func AuthorizationToken(mailbox, password, sharedKey, nonce string, nonceCount int, t time.Time) string {
	ts := t.UTC().Format(timestampLayout)
	count := strconv.Itoa(nonceCount)
	mac := hmac.New(sha256.New, []byte(sharedKey))
	// hash.Hash writes never fail.
	mac.Write([]byte(mailbox + ":" + nonce + ":" + count + ":" + password + ":" + ts))
	return authScheme + " " + mailbox + ":" + nonce + ":" + count + ":" + ts + ":" + hex.EncodeToString(mac.Sum(nil))
}
