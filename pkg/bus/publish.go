package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/schemas"
)

// HeaderDeadLetterReason carries the reason on a dead letter.
const HeaderDeadLetterReason = "Dps-Deadletter-Reason"

// attemptTimeout bounds one publish attempt, so that a request lost while
// the connection is down is retried rather than awaited forever.
const attemptTimeout = 5 * time.Second

// Publish marshals v (or takes it as is when it is []byte or
// json.RawMessage), validates it against the schema of subject, and
// publishes it with Nats-Msg-Id msgID, waiting for the stream's ack.
//
// Transient failures (no responders or timeouts while NATS restarts or a
// stream leader is elected) are retried with backoff until ctx ends; msgID
// makes the retries safe. A payload that breaks its schema is refused with
// an *InvalidMessageError and nothing is published. ack.Duplicate is true
// when the stream already held msgID within its window: the message is
// stored once, and that is success.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, v any) (*jetstream.PubAck, error) {
	data, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("publish %s: marshal: %w", subject, err)
	}
	return publishData(ctx, js, subject, msgID, data, nil, nil)
}

// PublishTracked is Publish that also says whether an attempt before the one that was acknowledged may
// have been stored all the same (it timed out, or the connection dropped while it waited): then an ack
// with Duplicate set may be for that attempt of this very call, not for an earlier message with the
// same id. A caller retrying PublishTracked passes the same ambiguous flag to every call.
func PublishTracked(ctx context.Context, js jetstream.JetStream, subject, msgID string, v any, ambiguous *bool) (*jetstream.PubAck, error) {
	data, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("publish %s: marshal: %w", subject, err)
	}
	return publishData(ctx, js, subject, msgID, data, nil, ambiguous)
}

func marshal(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case json.RawMessage:
		return b, nil
	}
	return json.Marshal(v)
}

// publishData validates data against subject's schema and publishes it with retries; ambiguous, when
// set, becomes true once an attempt ends in a way that does not tell whether the stream stored it.
func publishData(ctx context.Context, js jetstream.JetStream, subject, msgID string, data []byte, header nats.Header, ambiguous *bool) (*jetstream.PubAck, error) {
	if msgID == "" {
		return nil, fmt.Errorf("publish %s: empty Nats-Msg-Id", subject)
	}
	if err := schemas.Validate(subject, data); err != nil {
		return nil, fmt.Errorf("publish %s: %w", subject, &InvalidMessageError{Subject: subject, Reason: err.Error(), Err: err})
	}
	ack, err := publishRetrying(ctx, js, streamOf(subject), subject, msgID, data, header, ambiguous, 0)
	if err != nil {
		return nil, fmt.Errorf("publish %s %s: %w", subject, msgID, err)
	}
	return ack, nil
}

// publishRetrying publishes data with Nats-Msg-Id msgID (and, when stream is set, the expectation that
// it lands there), trying again with backoff while the error is transient, until ctx ends or, when
// giveUp is positive, the attempts have failed for that long. The id makes the retries safe: a retry of
// a message the stream stored before its ack was lost is acknowledged as a duplicate, not stored again.
func publishRetrying(ctx context.Context, js jetstream.JetStream, stream, subject, msgID string, data []byte, header nats.Header,
	ambiguous *bool, giveUp time.Duration) (*jetstream.PubAck, error) {
	opts := publishOpts(stream, msgID)
	started := time.Now()
	wait := 50 * time.Millisecond
	for {
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		for k, vs := range header {
			msg.Header[k] = vs
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		ack, err := js.PublishMsg(actx, msg, opts...)
		cancel()
		if err == nil {
			return ack, nil
		}
		if ambiguous != nil && !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			// No responders means no stream took it; anything else (a timeout, a dropped connection)
			// may have come after the stream stored it.
			*ambiguous = true
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if !transient(err) {
			return nil, err
		}
		if giveUp > 0 && time.Since(started) >= giveUp {
			return nil, fmt.Errorf("still failing after %s: %w", time.Since(started).Round(time.Millisecond), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// publishOpts are the options of every publish of ours: the Nats-Msg-Id, the stream it must land in
// (when stream is set), and no retries inside jetstream, since the caller owns them with its own
// timeout and backoff (publishRetrying, and the object store's chunks, which must never be published
// again behind a later one).
func publishOpts(stream, msgID string) []jetstream.PublishOpt {
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID), jetstream.WithRetryAttempts(0)}
	if stream != "" {
		opts = append(opts, jetstream.WithExpectStream(stream))
	}
	return opts
}

// transient reports whether a publish error may go away by itself.
func transient(err error) bool {
	switch {
	case errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), // our per-attempt timeout
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled): // JetStream still starting
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 { // e.g. no stream leader yet
		return true
	}
	return false
}

// Unpublishable reports whether a publish error can never go away by retrying the same message: it
// breaks its schema or the size limit, or the server refused its size. Other errors (an outage, a
// permission an operator can grant) may pass.
func Unpublishable(err error) bool {
	var invalid *InvalidMessageError
	return errors.As(err, &invalid) || errors.Is(err, nats.ErrMaxPayload)
}

// InvalidMessageError is a message that can never be processed: not JSON,
// not valid against its subject's schema, or on a subject without one. The
// consumer should dead-letter it (and ack), not retry it.
type InvalidMessageError struct {
	Subject string
	Reason  string // names the failing field(s)
	Err     error  // from schemas: wraps schemas.ErrMalformed, *schemas.ValidationError or schemas.ErrUnknownSubject
}

func (e *InvalidMessageError) Error() string {
	return "invalid message on " + e.Subject + ": " + e.Reason
}
func (e *InvalidMessageError) Unwrap() error { return e.Err }

// Decode validates msg against the schema of its subject and unmarshals it
// into v. Any failure is an *InvalidMessageError.
func Decode(msg jetstream.Msg, v any) error {
	subject := msg.Subject()
	if err := schemas.Validate(subject, msg.Data()); err != nil {
		return &InvalidMessageError{Subject: subject, Reason: err.Error(), Err: err}
	}
	if err := json.Unmarshal(msg.Data(), v); err != nil {
		// Valid per schema but not for v: a caller decoding into the wrong
		// type, or a schema looser than the struct.
		return &InvalidMessageError{Subject: subject, Reason: "decode: " + err.Error(), Err: err}
	}
	return nil
}

// maxReason bounds a dead-letter reason (the schema's maxLength).
const maxReason = 4096

// Bounds of what a dead letter keeps of the original (the dead-letter schema's limits). With them a
// dead letter always fits under NATS's max_payload, however large or odd the original was.
const (
	// MaxDeadLetterPayload is how many bytes of the original payload a dead letter keeps; beyond it the
	// payload is cut, and its original size and SHA-256 recorded.
	MaxDeadLetterPayload = schemas.MaxMessageBytes
	maxHeaders           = 32
	maxHeaderName        = 256
	maxHeaderValue       = 1024
)

// NewDeadLetter builds the dead letter of msg for stage: its payload kept once (as text when valid
// UTF-8, otherwise as base64; cut to MaxDeadLetterPayload bytes, with the original's size and SHA-256
// always recorded), its headers (bounded likewise), origin (stream, sequence, deliveries) and reason,
// cut to the schema's 4096 bytes. It is the one place a dead letter is shaped, for DeadLetter and for a
// consumer that must enqueue the dead letter through the outbox in the transaction that records the
// failure. Publish it on DeadLetterSubject(stage) with Nats-Msg-Id dl.MsgID().
func NewDeadLetter(stage string, msg jetstream.Msg, reason string) (DeadLetterMessage, error) {
	md, err := msg.Metadata()
	if err != nil {
		return DeadLetterMessage{}, fmt.Errorf("dead-letter %s: message metadata: %w", stage, err)
	}
	dl := NewDeadLetterOf(stage, msg.Subject(), md.Stream, md.Sequence.Stream, md.NumDelivered, msg.Data(), msg.Headers(), reason)
	return dl, nil
}

// NewDeadLetterOf is NewDeadLetter for something that is not a JetStream message (an outbox row that
// can never be published): origin names where it was (stream, or the table, and the sequence or row id).
func NewDeadLetterOf(stage, subject, origin string, seq, deliveries uint64, data []byte, headers nats.Header, reason string) DeadLetterMessage {
	reason = truncate(strings.ToValidUTF8(reason, "?"), maxReason)
	if reason == "" {
		reason = "unspecified"
	}
	sum := sha256.Sum256(data)
	dl := DeadLetterMessage{
		Stage:          stage,
		Subject:        truncate(strings.ToValidUTF8(subject, "?"), 255),
		Reason:         reason,
		PayloadSize:    len(data),
		PayloadSHA256:  hex.EncodeToString(sum[:]),
		Headers:        map[string][]string{},
		Stream:         truncate(origin, 64),
		StreamSeq:      max(seq, 1),
		Deliveries:     max(deliveries, 1),
		DeadLetteredAt: time.Now().UTC(),
	}
	kept := data
	if len(kept) > MaxDeadLetterPayload {
		kept, dl.PayloadTruncated = kept[:MaxDeadLetterPayload], true
	}
	if utf8.Valid(data) {
		// Cut on a rune boundary, so the text stays valid.
		dl.Payload = truncate(string(data), len(kept))
	} else {
		dl.PayloadBase64 = base64.StdEncoding.EncodeToString(kept)
	}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if len(dl.Headers) == maxHeaders || len(k) > maxHeaderName || !utf8.ValidString(k) {
			dl.HeadersTruncated = true
			continue
		}
		for _, v := range headers[k] {
			cut := truncate(strings.ToValidUTF8(v, "?"), maxHeaderValue)
			if cut != v {
				dl.HeadersTruncated = true
			}
			dl.Headers[k] = append(dl.Headers[k], cut)
		}
		if len(dl.Headers[k]) > 8 {
			dl.Headers[k], dl.HeadersTruncated = dl.Headers[k][:8], true
		}
	}
	return dl
}

// OriginalPayload is the payload the dead letter keeps, as bytes, and whether it is the whole original.
// Dead letters written before payloads were kept once carry both forms; base64 is then the exact one.
func (dl DeadLetterMessage) OriginalPayload() (payload []byte, whole bool, err error) {
	if dl.PayloadBase64 != "" {
		payload, err = base64.StdEncoding.DecodeString(dl.PayloadBase64)
		if err != nil {
			return nil, false, fmt.Errorf("payload_base64 is not base64: %w", err)
		}
	} else {
		payload = []byte(dl.Payload)
	}
	return payload, !dl.PayloadTruncated, nil
}

// MsgID is the dead letter's Nats-Msg-Id, "<stage>:<stream>:<stream seq>": dead-lettering one delivery
// twice (a crash before the ack) leaves one dead letter.
func (dl DeadLetterMessage) MsgID() string { return DeadLetterMsgID(dl.Stage, dl.Stream, dl.StreamSeq) }

// DeadLetter publishes msg on dps.deadletter.<stage> as NewDeadLetter shapes it, deduplicated by
// dl.MsgID(). It does not ack msg: the caller acks once DeadLetter returns nil, so that a crash in
// between re-dead-letters the same delivery (absorbed by the Nats-Msg-Id) rather than losing it.
func DeadLetter(ctx context.Context, js jetstream.JetStream, stage string, msg jetstream.Msg, reason string) error {
	dl, err := NewDeadLetter(stage, msg, reason)
	if err != nil {
		return err
	}
	body, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("dead-letter %s: marshal: %w", stage, err)
	}
	// Header values cannot hold line breaks.
	h := nats.Header{HeaderDeadLetterReason: []string{strings.NewReplacer("\r", " ", "\n", " ").Replace(dl.Reason)}}
	msgID := dl.MsgID()
	if _, err := publishData(ctx, js, DeadLetterSubject(stage), msgID, body, h, nil); err != nil {
		return fmt.Errorf("dead-letter %s: %w", msgID, err)
	}
	return nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// SubjectMESHInbox is the Subject of an inbox dead letter: not a NATS subject but where the message
// was, our MESH inbox.
const SubjectMESHInbox = "mesh.inbox"

// InboxOrigin is an inbox dead letter's "stream": the table that tracks each MESH inbox message; its
// stream_seq is the message's row there.
const InboxOrigin = "dps_inbox_messages"

// NewInboxDeadLetter shapes the dead letter of a MESH message the tracker could not apply: its mex-*
// headers (mex-MessageID names it), its payload (cut as every dead letter's is) and the reason. The
// message itself stays unacknowledged in the MESH inbox, so nothing is lost. row is its row in
// dps_inbox_messages, seen how many times it has been looked at. Publish it on SubjectDeadLetterInbox
// with Nats-Msg-Id InboxDeadLetterMsgID.
func NewInboxDeadLetter(row, seen uint64, headers nats.Header, payload []byte, reason string) DeadLetterMessage {
	return NewDeadLetterOf(StageInbox, SubjectMESHInbox, InboxOrigin, row, seen, payload, headers, reason)
}

// InboxDeadLetterMsgID is an inbox dead letter's Nats-Msg-Id, "inbox:<MESH message id>:<hash of the
// reason>": the same message held for the same reason is reported once.
func InboxDeadLetterMsgID(meshMessageID, reason string) string {
	sum := sha256.Sum256([]byte(reason))
	return StageInbox + ":" + meshMessageID + ":" + hex.EncodeToString(sum[:6])
}
