package tracking

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/failpoint"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// Reading our MESH inbox: MESH's reports about messages we sent, and the receiver's acknowledgement files.
// Each message is handled exactly once across replicas and crashes (dps_inbox_messages): a replica locks
// the message's row while it downloads and applies it, commits the effect together with state 'applied',
// and only then acknowledges it in MESH. What nobody can apply is held: left unacknowledged in MESH,
// dead-lettered on dps.deadletter.inbox once per reason, and looked at again at every pass.

// Failpoints of the inbox pass, for the crash tests (DPS_FAILPOINT).
const (
	// FailpointInboxAfterDownload is after a message is downloaded and understood, before the
	// transaction recording it commits.
	FailpointInboxAfterDownload = "tracker-inbox-after-download"
	// FailpointInboxAfterRecord is after the record commits, before the message is acknowledged in MESH.
	FailpointInboxAfterRecord = "tracker-inbox-after-record"
)

// Inbox message states in dps_inbox_messages.state.
const (
	inboxNew          = "new"
	inboxApplied      = "applied"
	inboxAcknowledged = "acknowledged"
	inboxHeld         = "held"
)

// Inbox message kinds in dps_inbox_messages.kind, and the metric's label.
const (
	KindReport        = "report"
	KindInfAck        = "infack"
	KindBusAck        = "busack"
	KindBusAckSummary = "busack_summary"
	KindUnknown       = "unknown"
)

// maxInboxDownload bounds what one inbox message may hold; a BusAck is a line per refused row, far
// below it even for a whole refused file of a million rows.
const maxInboxDownload = 1 << 30

// DefaultInboxInterval is TRACKER_INBOX_INTERVAL's default.
const DefaultInboxInterval = 5 * time.Minute

// DefaultBusAckWait is how long a BusAck waits for its file's InfAck before it is applied without one.
const DefaultBusAckWait = time.Hour

// InboxResult says what one ReadInbox pass did.
type InboxResult struct {
	// Listed is how many messages the inbox listed.
	Listed int
	// Applied counts messages this replica recorded (their effect committed), Acknowledged those it
	// then acknowledged in MESH (including ones recorded earlier whose acknowledgement had not happened).
	Applied, Acknowledged int
	// Held counts messages nobody can apply (dead-lettered once per reason, left in MESH).
	Held int
	// Deferred counts BusAcks waiting for their InfAck.
	Deferred int
	// Skipped counts messages another replica was handling.
	Skipped int
	// Errors counts messages that failed for a transient reason; they are tried at the next pass.
	Errors int
}

// inboxLoop runs ReadInbox every InboxInterval until ctx ends.
func (t *Tracker) inboxLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res, err := t.readInboxGraced(ctx)
		if err != nil {
			t.log.Error("read MESH inbox", slog.Any("error", err))
		} else if res.Listed > 0 {
			t.log.Debug("read MESH inbox", slog.Int("listed", res.Listed), slog.Int("applied", res.Applied),
				slog.Int("acknowledged", res.Acknowledged), slog.Int("held", res.Held), slog.Int("skipped", res.Skipped))
		}
		timer.Reset(t.cfg.InboxInterval)
	}
}

// readInboxGraced is ReadInbox that, once ctx ends, may finish the message in hand within ShutdownGrace.
func (t *Tracker) readInboxGraced(ctx context.Context) (InboxResult, error) {
	passCtx, cancel := t.graced(ctx)
	defer cancel()
	return t.readInbox(passCtx, ctx)
}

// ReadInbox lists our MESH inbox and handles every message in it once: see the top of this file.
// Replicas may run it at the same time; each message is handled by one of them.
func (t *Tracker) ReadInbox(ctx context.Context) (InboxResult, error) { return t.readInbox(ctx, ctx) }

// readInbox is ReadInbox; between messages it stops when stopCtx ends.
func (t *Tracker) readInbox(ctx, stopCtx context.Context) (InboxResult, error) {
	var res InboxResult
	if t.cfg.MESH == nil {
		return res, errors.New("read inbox: no MESH client (MESH jobs disabled)")
	}
	ids, err := t.cfg.MESH.Inbox(ctx)
	if err != nil {
		return res, fmt.Errorf("list inbox: %w", err)
	}
	res.Listed = len(ids)
	if len(ids) == 0 {
		return res, nil
	}
	if _, err := t.cfg.Pool.Exec(ctx, `
		INSERT INTO dps_inbox_messages (mesh_message_id) SELECT unnest($1::text[])
		ON CONFLICT (mesh_message_id) DO NOTHING`, ids); err != nil {
		return res, fmt.Errorf("register inbox messages: %w", err)
	}
	for _, id := range ids {
		if stopCtx.Err() != nil {
			return res, nil
		}
		out, err := t.handleInboxMessage(ctx, id)
		if err != nil {
			if errors.Is(err, errPostgres) {
				return res, err
			}
			res.Errors++
			t.log.Warn("inbox message not handled; it is tried again at the next pass",
				slog.String("mesh_message_id", id), slog.Any("error", err))
			if mesh.IsTransient(err) {
				return res, nil // MESH is struggling: the rest waits for the next pass
			}
			continue
		}
		switch out {
		case inboxOutApplied:
			res.Applied++
			res.Acknowledged++
		case inboxOutAppliedNotAcked:
			res.Applied++
		case inboxOutAcked:
			res.Acknowledged++
		case inboxOutHeld:
			res.Held++
		case inboxOutDeferred:
			res.Deferred++
		case inboxOutSkipped:
			res.Skipped++
		}
	}
	return res, nil
}

// errPostgres marks a database failure, which ends the pass.
var errPostgres = errors.New("postgres")

type inboxOutcome int

const (
	inboxOutSkipped inboxOutcome = iota
	inboxOutApplied
	inboxOutAppliedNotAcked
	inboxOutAcked
	inboxOutHeld
	inboxOutDeferred
)

// inboxMessage is what a downloaded message says about itself.
type inboxMessage struct {
	id        string
	dl        *mesh.Download
	firstSeen time.Time
	// head is the first bytes of the body, kept for a dead letter.
	head *cappedBuffer
}

// applyResult is what applying one message did, recorded in dps_inbox_messages and logged after commit.
type applyResult struct {
	kind     string
	exportID string
	effect   string
	// held is why nobody can apply the message; empty when it was applied.
	held string
	// deferred is true for a BusAck waiting for its InfAck: nothing is recorded.
	deferred bool
	// transition is the status the export reached (0 when it did not move), for the metrics.
	transition lifecycle.Status
	refused    []refusal // for the refused-rows metric and log
	log        []slog.Attr
}

// handleInboxMessage handles one listed message; see the top of this file.
func (t *Tracker) handleInboxMessage(ctx context.Context, id string) (inboxOutcome, error) {
	tx, err := t.cfg.Pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: begin: %w", errPostgres, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit

	var state, deadLettered string
	var firstSeen time.Time
	err = tx.QueryRow(ctx, `
		SELECT state, coalesce(dead_lettered_reason, ''), first_seen_at FROM dps_inbox_messages
		WHERE mesh_message_id = $1 FOR UPDATE SKIP LOCKED`, id).Scan(&state, &deadLettered, &firstSeen)
	if errors.Is(err, pgx.ErrNoRows) {
		return inboxOutSkipped, nil // another replica holds it
	}
	if err != nil {
		return 0, fmt.Errorf("%w: lock inbox message %s: %w", errPostgres, id, err)
	}
	if state == inboxApplied || state == inboxAcknowledged {
		// Recorded before (a crash, or MESH still listing it): only the acknowledgement is repeated.
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("%w: commit: %w", errPostgres, err)
		}
		if err := t.acknowledgeInbox(ctx, id); err != nil {
			return 0, err
		}
		return inboxOutAcked, nil
	}

	dl, err := t.cfg.MESH.Download(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("download inbox message %s: %w", id, err)
	}
	defer dl.Body.Close()
	msg := inboxMessage{id: id, dl: dl, firstSeen: firstSeen, head: &cappedBuffer{max: bus.MaxDeadLetterPayload}}
	body := io.TeeReader(io.LimitReader(dl.Body, maxInboxDownload), msg.head)

	res, err := t.applyInboxMessage(ctx, tx, msg, body)
	if err != nil {
		return 0, err
	}
	if res.deferred {
		return inboxOutDeferred, nil // rolled back: the BusAck stays new and unacknowledged
	}
	failpoint.Reach(FailpointInboxAfterDownload)

	if res.held != "" {
		if err := t.holdInbox(ctx, tx, msg, res, deadLettered); err != nil {
			return 0, err
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("%w: commit: %w", errPostgres, err)
		}
		t.m.InboxMessages.WithLabelValues(res.kind, "held").Inc()
		if res.held != deadLettered {
			t.m.InboxDeadLetters.Inc()
		}
		t.log.Warn("MESH inbox message held: left unacknowledged in MESH for a person to look at",
			slog.String("mesh_message_id", id), slog.String("kind", res.kind), slog.String("file_name", dl.FileName),
			slog.String("reason", res.held), slog.Bool("dead_lettered", res.held != deadLettered))
		return inboxOutHeld, nil
	}

	_, err = tx.Exec(ctx, `
		UPDATE dps_inbox_messages
		SET state = 'applied', kind = $2, message_type = nullif($3, ''), sender = nullif($4, ''),
		    file_name = nullif($5, ''), local_id = nullif($6, ''), linked_message_id = nullif($7, ''),
		    export_id = nullif($8, '')::uuid, effect = $9, held_reason = NULL, applied_at = now(),
		    seen_count = seen_count + 1, updated_at = now()
		WHERE mesh_message_id = $1`, id, res.kind, dl.MessageType, dl.From, dl.FileName, dl.LocalID,
		dl.LinkedMessageID, res.exportID, res.effect)
	if err != nil {
		return 0, fmt.Errorf("%w: record inbox message %s: %w", errPostgres, id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("%w: commit inbox message %s: %w", errPostgres, id, err)
	}
	t.recordInbox(id, dl, res)
	failpoint.Reach(FailpointInboxAfterRecord)

	if err := t.acknowledgeInbox(ctx, id); err != nil {
		t.log.Warn("acknowledge inbox message in MESH; it is acknowledged at the next pass", slog.String("mesh_message_id", id), slog.Any("error", err))
		return inboxOutAppliedNotAcked, nil
	}
	return inboxOutApplied, nil
}

// acknowledgeInbox acknowledges a recorded message in MESH and notes it.
func (t *Tracker) acknowledgeInbox(ctx context.Context, id string) error {
	if err := t.cfg.MESH.Acknowledge(ctx, id); err != nil {
		return fmt.Errorf("acknowledge inbox message %s: %w", id, err)
	}
	if _, err := t.cfg.Pool.Exec(ctx, `
		UPDATE dps_inbox_messages SET state = 'acknowledged', acknowledged_at = now(), updated_at = now()
		WHERE mesh_message_id = $1 AND state IN ('applied', 'acknowledged')`, id); err != nil {
		return fmt.Errorf("%w: note acknowledgement of %s: %w", errPostgres, id, err)
	}
	return nil
}

// holdInbox records a message nobody can apply and, when the reason is new, enqueues its dead letter.
func (t *Tracker) holdInbox(ctx context.Context, tx pgx.Tx, msg inboxMessage, res applyResult, deadLettered string) error {
	dl := msg.dl
	_, err := tx.Exec(ctx, `
		UPDATE dps_inbox_messages
		SET state = 'held', kind = $2, message_type = nullif($3, ''), sender = nullif($4, ''),
		    file_name = nullif($5, ''), local_id = nullif($6, ''), linked_message_id = nullif($7, ''),
		    export_id = nullif($8, '')::uuid, held_reason = $9, dead_lettered_reason = $9,
		    seen_count = seen_count + 1, updated_at = now()
		WHERE mesh_message_id = $1`, msg.id, res.kind, dl.MessageType, dl.From, dl.FileName, dl.LocalID,
		dl.LinkedMessageID, res.exportID, res.held)
	if err != nil {
		return fmt.Errorf("%w: hold inbox message %s: %w", errPostgres, msg.id, err)
	}
	if res.held == deadLettered {
		return nil // reported already; a person is looking
	}
	var row, seen uint64
	if err := tx.QueryRow(ctx, `SELECT seq, seen_count FROM dps_inbox_messages WHERE mesh_message_id = $1`, msg.id).Scan(&row, &seen); err != nil {
		return fmt.Errorf("%w: hold inbox message %s: %w", errPostgres, msg.id, err)
	}
	headers := nats.Header{}
	for k, v := range map[string]string{
		"mex-MessageID": msg.id, "mex-MessageType": dl.MessageType, "mex-From": dl.From, "mex-To": t.mailbox(),
		"mex-WorkflowID": dl.WorkflowID, "mex-FileName": dl.FileName, "mex-LocalID": dl.LocalID,
		"mex-LinkedMsgID": dl.LinkedMessageID, "mex-StatusCode": dl.Status.Code,
		"mex-StatusDescription": dl.Status.Description, "mex-StatusSuccess": dl.Status.Success,
	} {
		if v != "" {
			headers[k] = []string{v}
		}
	}
	letter := bus.NewInboxDeadLetter(row, seen, headers, msg.head.Bytes(), res.held)
	if err := outbox.Enqueue(ctx, tx, bus.SubjectDeadLetterInbox, bus.InboxDeadLetterMsgID(msg.id, res.held), letter); err != nil {
		return fmt.Errorf("%w: dead-letter inbox message %s: %w", errPostgres, msg.id, err)
	}
	return nil
}

func (t *Tracker) mailbox() string {
	if t.cfg.Mailbox != "" {
		return t.cfg.Mailbox
	}
	return "unknown"
}

// applyInboxMessage works out what a downloaded message is and applies it in tx.
func (t *Tracker) applyInboxMessage(ctx context.Context, tx pgx.Tx, msg inboxMessage, body io.Reader) (applyResult, error) {
	dl := msg.dl
	if dl.MessageType == mesh.MessageTypeReport {
		_, _ = io.Copy(io.Discard, body) // a report's body is empty or a line of text, kept for the dead letter
		return t.applyReport(ctx, tx, msg)
	}
	if dl.MessageType != "" && dl.MessageType != mesh.MessageTypeData {
		return applyResult{kind: KindUnknown, held: fmt.Sprintf("mex-MessageType %q is neither DATA nor REPORT", dl.MessageType)}, drainFor(body)
	}
	name, ok := dps.ParseAckFileName(dl.FileName)
	if !ok {
		return applyResult{kind: KindUnknown, held: fmt.Sprintf("mex-FileName %q is not a receiver acknowledgement (NAME_InfAck_STAMP.csv or NAME_BusAck_STAMP.csv)", dl.FileName)}, drainFor(body)
	}
	kind := KindInfAck
	switch {
	case name.Kind == dps.KindBusAck && name.JSON:
		kind = KindBusAckSummary
	case name.Kind == dps.KindBusAck:
		kind = KindBusAck
	}
	if len(t.cfg.AckSenders) > 0 && !slices.Contains(t.cfg.AckSenders, strings.ToUpper(strings.TrimSpace(dl.From))) {
		return applyResult{kind: kind, held: fmt.Sprintf("acknowledgement %s came from mailbox %q, not from %s (TRACKER_ACK_SENDERS)",
			dl.FileName, dl.From, strings.Join(t.cfg.AckSenders, ", "))}, drainFor(body)
	}
	e, found, err := t.exportByFileName(ctx, tx, name.FileName, kind)
	if err != nil {
		return applyResult{}, err
	}
	if !found {
		return applyResult{kind: kind, held: fmt.Sprintf("acknowledgement %s names file %s, which no export of ours has", dl.FileName, name.FileName)}, drainFor(body)
	}
	switch kind {
	case KindInfAck:
		return t.applyInfAck(ctx, tx, msg, e, body)
	case KindBusAck:
		return t.applyBusAck(ctx, tx, msg, e, body)
	default:
		return t.applyBusAckSummary(msg, e, body)
	}
}

// drainFor reads the rest of a held message's body, so that its dead letter carries its first bytes.
func drainFor(body io.Reader) error {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	return nil
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// recordInbox logs and counts an applied message once it is committed.
func (t *Tracker) recordInbox(id string, dl *mesh.Download, res applyResult) {
	t.m.InboxMessages.WithLabelValues(res.kind, "applied").Inc()
	if res.transition != 0 {
		t.m.Transitions.WithLabelValues(res.transition.String()).Inc()
	}
	attrs := []any{slog.String("mesh_message_id", id), slog.String("kind", res.kind), slog.String("file_name", dl.FileName),
		slog.String("export_id", res.exportID), slog.String("effect", res.effect)}
	for _, a := range res.log {
		attrs = append(attrs, a)
	}
	switch res.transition {
	case lifecycle.Failed, lifecycle.Rejected:
		t.log.Error("export "+res.transition.String()+" by the reply in our MESH inbox; its records are queued for the next export", attrs...)
	default:
		t.log.Info("MESH inbox message applied", attrs...)
	}
}
