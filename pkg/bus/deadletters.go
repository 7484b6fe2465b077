package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/schemas"
)

// Operator access to DPS_DEADLETTER: listing what is there and re-driving a dead letter to the subject it
// came from. Both read the stream through an ordered consumer or a direct get, never a durable consumer,
// so looking at the dead letters never consumes or acknowledges them: they stay for the stream's 90 days.

// HeaderRedriveOf is set on a re-driven message to the DPS_DEADLETTER sequence it was re-driven from, so
// that a consumer's log (and anyone reading the stream) can tell a re-drive from the original.
const HeaderRedriveOf = "Dps-Redrive-Of"

// RedriveMsgID is the Nats-Msg-Id of a re-drive of dead letter seq: "redrive:<DPS_DEADLETTER seq>". Re-driving
// the same dead letter twice within the duplicate window stores it once.
func RedriveMsgID(seq uint64) string { return "redrive:" + strconv.FormatUint(seq, 10) }

// DeadLetterFilter selects dead letters for ListDeadLetters. The zero value selects all of them.
type DeadLetterFilter struct {
	// Stage is request, sender, tracker or inbox; empty for every stage.
	Stage string
	// Since keeps dead letters stored at or after this time; zero for all.
	Since time.Time
	// Limit keeps only the newest Limit dead letters (still returned oldest first); 0 for no limit.
	Limit int
}

// StoredDeadLetter is a dead letter as DPS_DEADLETTER holds it.
type StoredDeadLetter struct {
	Seq     uint64    // sequence in DPS_DEADLETTER: what RedriveDeadLetter takes
	Subject string    // dps.deadletter.<stage>
	Time    time.Time // when the stream stored it
	Size    int       // bytes of the stored dead letter
	// Message is the decoded dead letter. Valid only when Invalid is empty.
	Message DeadLetterMessage
	// Invalid says why the stored message could not be decoded as a dead letter (something other than
	// DeadLetter published on dps.deadletter.>). It is listed rather than hidden or failing the listing.
	Invalid string
}

// Stage is the dead letter's stage, from its subject.
func (d StoredDeadLetter) Stage() string {
	return strings.TrimPrefix(d.Subject, SubjectDeadLetterPrefix)
}

// ListDeadLetters returns the dead letters in DPS_DEADLETTER that filter selects, oldest first. It reads
// through an ordered consumer (ephemeral, no acks) up to the last message stored when it starts.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, filter DeadLetterFilter) ([]StoredDeadLetter, error) {
	subject := subjectDeadLetterWildcard
	if filter.Stage != "" {
		if strings.ContainsAny(filter.Stage, ".*> \t") {
			return nil, fmt.Errorf("list dead letters: stage %q is not a stage name", filter.Stage)
		}
		subject = DeadLetterSubject(filter.Stage)
	}
	if filter.Limit < 0 {
		return nil, fmt.Errorf("list dead letters: negative limit %d", filter.Limit)
	}
	s, err := js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	// Dead letters arriving while we read are for the next listing.
	end := info.State.LastSeq

	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if !filter.Since.IsZero() {
		since := filter.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: ordered consumer: %w", err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: consumer info: %w", err)
	}
	if ci.NumPending == 0 {
		return nil, nil
	}

	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return nil, fmt.Errorf("list dead letters: read: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stop()
		it.Stop()
	}()
	var out []StoredDeadLetter
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("list dead letters: %w", ctx.Err())
			}
			return nil, fmt.Errorf("list dead letters: read: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("list dead letters: metadata: %w", err)
		}
		if md.Sequence.Stream > end {
			return out, nil
		}
		out = append(out, storedDeadLetter(md.Sequence.Stream, msg.Subject(), md.Timestamp, msg.Data()))
		// Only the newest Limit are kept; the dead-letter stream is small enough to read whole.
		if filter.Limit > 0 && len(out) > filter.Limit {
			out = out[1:]
		}
		// NumPending counts the matching messages after this one: none left means we have them all.
		if md.NumPending == 0 || md.Sequence.Stream == end {
			return out, nil
		}
	}
}

func storedDeadLetter(seq uint64, subject string, at time.Time, data []byte) StoredDeadLetter {
	d := StoredDeadLetter{Seq: seq, Subject: subject, Time: at.UTC(), Size: len(data)}
	if err := schemas.Validate(subject, data); err != nil {
		d.Invalid = err.Error()
		return d
	}
	if err := json.Unmarshal(data, &d.Message); err != nil {
		d.Invalid = "decode: " + err.Error()
	}
	return d
}

// GetDeadLetter loads dead letter seq from DPS_DEADLETTER by a direct stream get (nothing is consumed).
func GetDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (StoredDeadLetter, error) {
	s, err := js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return StoredDeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return StoredDeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, ErrNoDeadLetter)
	}
	if err != nil {
		return StoredDeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return storedDeadLetter(raw.Sequence, raw.Subject, raw.Time, raw.Data), nil
}

// ErrNoDeadLetter: DPS_DEADLETTER holds no message at that sequence (never, or expired after 90 days).
var ErrNoDeadLetter = errors.New("no such sequence in " + StreamDeadLetter + " (never stored, or expired)")

// RedriveRefusedError is a dead letter RedriveDeadLetter will not re-drive; nothing was published.
type RedriveRefusedError struct {
	Seq    uint64
	Reason string // for a payload that is still invalid, names the failing field(s)
	Err    error  // from schemas, when the payload breaks its schema
}

func (e *RedriveRefusedError) Error() string {
	return fmt.Sprintf("dead letter %d refused: %s", e.Seq, e.Reason)
}
func (e *RedriveRefusedError) Unwrap() error { return e.Err }

// RedriveResult says where a re-driven message went.
type RedriveResult struct {
	DeadLetterSeq uint64 // the DPS_DEADLETTER sequence re-driven
	Stage         string // request, sender or tracker
	Subject       string // the original subject, published to again
	MsgID         string // RedriveMsgID(DeadLetterSeq)
	Stream        string // where it is stored now
	Seq           uint64 // its sequence there; for a Duplicate, the earlier re-drive's
	Duplicate     bool   // this dead letter was already re-driven within the duplicate window: stored once
	Size          int    // payload bytes
}

// RedriveDeadLetter publishes the original message of dead letter seq to its original subject again, for
// the stage's durable consumer to handle as if it were new. The payload is the dead letter's
// payload_base64, byte for byte, checked against the subject's schema first: a payload that is still
// invalid is refused with a *RedriveRefusedError naming the field, and nothing is published. The headers
// are the original ones minus Nats-Msg-Id and the Nats-Expected-* publish preconditions (they held for the
// first publish, not now), plus Dps-Redrive-Of; the Nats-Msg-Id is RedriveMsgID(seq), so re-driving one
// dead letter twice within the 24 h duplicate window stores it once (Duplicate is then true).
//
// When it helps: a request dead-lettered for a cause since fixed (a programme added to the database, an
// outage that outlasted the retries), or a batch or sent event dead-lettered for a transient reason. When
// it does not: a sender dead letter of an export that is already failed. Failing an export released its
// records, so the next export carries them; the sender acks the re-driven batch as already failed and
// sends nothing (pkg/delivery, AlreadyFailed). Request a new export instead.
func RedriveDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (RedriveResult, error) {
	res := RedriveResult{DeadLetterSeq: seq, MsgID: RedriveMsgID(seq)}
	stored, err := GetDeadLetter(ctx, js, seq)
	if err != nil {
		return res, fmt.Errorf("redrive: %w", err)
	}
	res.Stage = stored.Stage()
	if stored.Invalid != "" {
		return res, &RedriveRefusedError{Seq: seq, Reason: "not a dead letter: " + stored.Invalid}
	}
	dl := stored.Message
	res.Subject = dl.Subject
	payload, whole, err := dl.OriginalPayload()
	if err != nil {
		return res, &RedriveRefusedError{Seq: seq, Reason: err.Error(), Err: err}
	}
	res.Size = len(payload)
	if dl.Stage == StageInbox {
		return res, &RedriveRefusedError{Seq: seq, Reason: "an inbox dead letter is a MESH message that is still in our MESH inbox, unacknowledged (its mex-MessageID header names it): " +
			"the tracker looks at it again at every inbox pass, so fix the cause and it is applied then, or, once a person has dealt with it, acknowledge it with tracker ack-message ID"}
	}
	if !whole {
		return res, &RedriveRefusedError{Seq: seq, Reason: fmt.Sprintf(
			"the dead letter keeps only the first %d of the original's %d bytes (SHA-256 %s); it cannot be re-driven",
			len(payload), dl.PayloadSize, dl.PayloadSHA256)}
	}
	if strings.HasPrefix(dl.Subject, SubjectDeadLetterPrefix) || streamOf(dl.Subject) == "" {
		return res, &RedriveRefusedError{Seq: seq, Reason: fmt.Sprintf("original subject %q is not one a stage consumes", dl.Subject)}
	}
	if err := schemas.Validate(dl.Subject, payload); err != nil {
		return res, &RedriveRefusedError{Seq: seq, Reason: "payload still invalid for " + dl.Subject + ": " + err.Error(), Err: err}
	}
	header := nats.Header{}
	for k, vs := range dl.Headers {
		if strings.EqualFold(k, jetstream.MsgIDHeader) || strings.HasPrefix(strings.ToLower(k), "nats-expected-") {
			continue
		}
		header[k] = append([]string(nil), vs...)
	}
	header.Set(HeaderRedriveOf, strconv.FormatUint(seq, 10))
	ack, err := publishData(ctx, js, dl.Subject, res.MsgID, payload, header, nil)
	if err != nil {
		return res, fmt.Errorf("redrive dead letter %d: %w", seq, err)
	}
	res.Stream, res.Seq, res.Duplicate = ack.Stream, ack.Sequence, ack.Duplicate
	return res, nil
}
