package delivery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/failpoint"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// FailpointAfterMESHAccept is where a test can kill the sender between MESH's 202 and the commit that
// records it: the case the local-id tracking exists for.
const FailpointAfterMESHAccept = "sender-after-mesh-accept"

// Outcome is what became of one batch.
type Outcome string

// Outcomes of Deliver.
const (
	// Sent: MESH accepted a new message for the export now.
	Sent Outcome = "sent"
	// Adopted: an earlier attempt, recorded but not known to have succeeded, turned out to be accepted
	// at MESH; its message id was recorded instead of sending again.
	Adopted Outcome = "adopted"
	// AlreadySent: the export was accepted before; nothing was sent (a duplicate avoided).
	AlreadySent Outcome = "already_sent"
	// AlreadyFailed: the export failed before; nothing was done.
	AlreadyFailed Outcome = "already_failed"
	// Failed: the export was marked failed now (or, for a batch naming no export, only dead-lettered).
	Failed Outcome = "failed"
	// Rejected: the batch disagrees with the export it names (object, size, SHA-256, file name, rows,
	// programme); it was dead-lettered and nothing else changed.
	Rejected Outcome = "rejected"
	// Retry: a transient problem; the batch should come back later.
	Retry Outcome = "retry"
	// Locked: another sender holds the export; the batch should come back later.
	Locked Outcome = "locked"
)

// Error codes the sender puts in dps_exports.last_error_code when MESH gave none.
const (
	CodeObjectMissing      = "OBJECT_MISSING"
	CodeObjectCorrupt      = "OBJECT_CORRUPT"
	CodeExhausted          = "DELIVERIES_EXHAUSTED"
	CodeNoExport           = "EXPORT_NOT_FOUND"
	CodeInvalidBatch       = "INVALID_BATCH"
	CodeBatchMismatch      = "BATCH_MISMATCH"
	codeMESHWithoutCodeFmt = "HTTP_%d"
)

// Batch is one export to deliver and what the caller allows.
type Batch struct {
	Ready bus.ExportReady
	// LastDelivery says no redelivery will follow: a transient failure becomes final.
	LastDelivery bool
	// Force re-sends an export MESH already accepted, as a new message with a new attempt (replay --force).
	Force bool
	// WaitForLock waits for another sender's lock on the export instead of returning Locked.
	WaitForLock bool
	// DeadLetter builds the dead letter for the batch with reason; it is enqueued in the same
	// transaction that marks the export failed. Nil: no dead letter (replay of a forced re-send).
	DeadLetter func(reason string) (subject, msgID string, v any, err error)
}

// Result says what Deliver did.
type Result struct {
	Outcome  Outcome
	ExportID string
	// Status is the export's status when the batch was looked at.
	Status lifecycle.Status
	// MessageID and LocalID name MESH's message (Sent, Adopted, AlreadySent).
	MessageID, LocalID string
	// PreviousMessageID is the message a forced re-send replaced.
	PreviousMessageID string
	Attempt           int
	Bytes             int64
	SendDuration      time.Duration
	// Err is the cause for Retry and Failed.
	Err error
	// Code is last_error_code for Failed.
	Code string
}

// permanentError is a failure that no redelivery will cure.
type permanentError struct {
	code string
	err  error
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Deliver hands one export to MESH exactly once in effect: under the export's lock it skips an export
// already accepted, adopts an earlier attempt MESH accepted, and otherwise records a new attempt,
// verifies the file and sends it. It never returns an error: Result.Outcome says what the caller should
// do with the batch, Result.Err why.
func (s *Sender) Deliver(ctx context.Context, b Batch) Result {
	id := b.Ready.ExportID
	res := Result{ExportID: id}
	log := s.log.With(slog.String("export_id", id))

	lock, held, err := tryLockExport(ctx, s.pool, id)
	if err == nil && held && b.WaitForLock {
		lock, err = lockExport(ctx, s.pool, id)
	}
	switch {
	case err != nil:
		return s.retry(res, err)
	case lock == nil:
		res.Outcome = Locked
		return res
	}
	defer lock.release(ctx)

	exp, err := lock.loadExport(ctx)
	if errors.Is(err, ErrNoExport) {
		return s.failWithoutExport(ctx, b, res, err)
	}
	if err != nil {
		return s.retry(res, err)
	}
	res.Status = exp.Status
	log = log.With(slog.String("programme", exp.Programme))
	if diff := exp.disagreement(b.Ready); diff != "" {
		return s.rejectBatch(ctx, b, res, diff)
	}

	fromStatuses := []lifecycle.Status{lifecycle.Created}
	switch exp.Status {
	case lifecycle.Accepted, lifecycle.Acknowledged:
		if !b.Force {
			res.Outcome, res.MessageID, res.LocalID = AlreadySent, exp.MESHMessageID, exp.MESHLocalID
			return res
		}
		res.PreviousMessageID = exp.MESHMessageID
		fromStatuses = []lifecycle.Status{lifecycle.Accepted, lifecycle.Acknowledged}
	case lifecycle.Received, lifecycle.Processed:
		// The receiver has the file (its InfAck said so), and refuses a file name it has seen: even a
		// forced re-send would only be rejected, so nothing is sent.
		res.Outcome, res.MessageID, res.LocalID = AlreadySent, exp.MESHMessageID, exp.MESHLocalID
		return res
	case lifecycle.Failed, lifecycle.Rejected:
		res.Outcome = AlreadyFailed
		return res
	}

	if exp.Status == lifecycle.Created && exp.Attempts > 0 {
		adopted, err := s.adoptEarlierAttempt(ctx, lock, exp, log)
		if err != nil {
			return s.transientOrFinal(ctx, lock, b, exp, res, 0, err)
		}
		if adopted != nil {
			return *adopted
		}
	}

	// The file is read and verified while Postgres commits the attempt: the two are independent, and
	// the commit's fsync is the longest wait of a small file's delivery. Nothing is sent before both
	// are done, so a corrupt or missing file still never reaches MESH.
	verifying := s.verifyObjectAsync(ctx, exp.object())
	defer verifying.stop()

	attempt, localID, err := lock.recordAttempt(ctx, fromStatuses)
	if err != nil {
		return s.retry(res, err)
	}
	res.Attempt, res.LocalID = attempt, localID
	log = log.With(slog.String("mesh_local_id", localID), slog.Int("attempt", attempt))

	file, err := verifying.wait()
	if err != nil {
		// The attempt is recorded but certainly not sent: say so, so that no later delivery asks MESH.
		_ = lock.setAttemptOutcome(ctx, attempt, attemptNotSent, err.Error())
		return s.transientOrFinal(ctx, lock, b, exp, res, attempt, err)
	}
	res.Bytes = file.size

	started := time.Now()
	to := s.cfg.destination(exp.Programme)
	log.Debug("sending", slog.String("mesh_to", to.Mailbox), slog.String("workflow_id", to.WorkflowID))
	messageID, err := s.send(ctx, exp.object(), file, to, exp.Filename, localID)
	res.SendDuration = time.Since(started)
	s.recordMESHResult(err)
	if err != nil {
		if ctx.Err() != nil {
			// Cancelled mid-send (shutdown): the attempt stays without an outcome, so the next
			// delivery asks MESH about it by its local id before sending again.
			return s.retry(res, fmt.Errorf("send export %s: %w", id, err))
		}
		if mesh.IsPermanent(err) {
			return s.fail(ctx, lock, b, exp, res, attempt, &permanentError{code: meshCode(err), err: err})
		}
		_ = lock.setAttemptOutcome(ctx, attempt, attemptTransientError, err.Error())
		if b.LastDelivery {
			// The last try failed ambiguously: MESH may still hold it. Ask once more before failing.
			if adopted, terr := s.adoptAttempt(ctx, lock, exp, attemptRow{Attempt: attempt, LocalID: localID}, log); terr == nil && adopted != nil {
				return *adopted
			}
		}
		return s.transientOrFinal(ctx, lock, b, exp, res, attempt, fmt.Errorf("send export %s: %w", id, err))
	}

	failpoint.Reach(FailpointAfterMESHAccept)

	if err := s.markAccepted(ctx, lock, exp, attempt, localID, messageID, false, b.Force); err != nil {
		// MESH holds the message but Postgres does not know: the next delivery adopts it by local id.
		return s.retry(res, err)
	}
	res.Outcome, res.MessageID = Sent, messageID
	if b.Force {
		log.Warn("export RE-SENT to MESH as a NEW message (forced)", slog.String("mesh_message_id", messageID),
			slog.String("previous_mesh_message_id", res.PreviousMessageID))
	} else {
		log.Info("export sent", slog.String("mesh_message_id", messageID), slog.Int64("bytes", file.size),
			slog.Duration("duration", res.SendDuration))
	}
	return res
}

// adoptEarlierAttempt asks MESH about every recorded attempt whose outcome is unknown. It returns the
// Adopted result when one was accepted, nil when none was (each is then marked not sent).
func (s *Sender) adoptEarlierAttempt(ctx context.Context, lock *exportLock, exp exportRow, log *slog.Logger) (*Result, error) {
	attempts, err := lock.unknownAttempts(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range attempts {
		res, err := s.adoptAttempt(ctx, lock, exp, a, log)
		if err != nil || res != nil {
			return res, err
		}
	}
	return nil, nil
}

// adoptAttempt asks MESH about one attempt by its local id. A message MESH accepted (or that went
// further) is adopted; one still uploading never reaches the recipient and expires, so, like a local
// id MESH does not know, it counts as not sent.
func (s *Sender) adoptAttempt(ctx context.Context, lock *exportLock, exp exportRow, a attemptRow, log *slog.Logger) (*Result, error) {
	lt, err := s.mesh.TrackByLocalID(ctx, a.LocalID)
	switch {
	case mesh.IsNotFound(err):
		return nil, lock.setAttemptOutcome(ctx, a.Attempt, attemptNotSent, "MESH does not know the local id")
	case err != nil:
		s.recordMESHResult(err)
		return nil, fmt.Errorf("track attempt %s: %w", a.LocalID, err)
	}
	switch lt.Status {
	case mesh.StatusAccepted, mesh.StatusAcknowledged, mesh.StatusUndeliverable:
		if lt.MessageID == "" {
			return nil, fmt.Errorf("track attempt %s: MESH reports %s without a message id", a.LocalID, lt.Status)
		}
		if err := s.markAccepted(ctx, lock, exp, a.Attempt, a.LocalID, lt.MessageID, true, false); err != nil {
			return nil, err
		}
		log.Warn("earlier attempt found accepted at MESH; adopted it instead of sending again",
			slog.String("mesh_local_id", a.LocalID), slog.String("mesh_message_id", lt.MessageID),
			slog.String("mesh_status", lt.Status))
		return &Result{Outcome: Adopted, ExportID: exp.ID, Status: exp.Status, MessageID: lt.MessageID,
			LocalID: a.LocalID, Attempt: a.Attempt}, nil
	default:
		return nil, lock.setAttemptOutcome(ctx, a.Attempt, attemptNotSent, "MESH status "+lt.Status)
	}
}

// maxInMemory is the largest file read once into memory, verified, and sent from the very bytes that
// were verified. A larger file is streamed twice, once to verify and once into MESH, so that memory
// stays bounded whatever the size (the Object Store checks its own digest on the second read too).
const maxInMemory = 8 << 20

// objectRef names an export's file and what it must be: from Postgres, never from the batch.
type objectRef struct {
	name   string
	size   int64
	sha256 string
}

// verifiedFile is a file whose size and SHA-256 match its export's row.
type verifiedFile struct {
	size int64
	data []byte // the whole file when it is at most maxInMemory; nil: stream it again
}

// verifyObject reads the file, comparing its size and SHA-256 with the export's row, so that a corrupt
// or truncated file is never sent. The Object Store checks every read against the digest it recorded
// when it stored the file (jetstream.ErrDigestMismatch). In a cluster, a read made while a stream
// leader is being elected can fail that check, and one answered by a replica that has not caught up
// can find no object at all, even for a file stored moments before (both seen in
// bus.TestPutSurvivesLeaderLoss): such a read is tried again after each of RereadDelays, and the file
// is corrupt, or missing, only if every read says so. A file that passes the store's check but not
// Postgres' record is corrupt at once: reading it again gives the same bytes.
func (s *Sender) verifyObject(ctx context.Context, r objectRef) (*verifiedFile, error) {
	for reads := 1; ; reads++ {
		f, err := s.readObject(ctx, r)
		unsure := errors.Is(err, jetstream.ErrDigestMismatch) || errors.Is(err, jetstream.ErrObjectNotFound)
		if !unsure || reads > len(s.cfg.RereadDelays) {
			return f, err
		}
		delay := s.cfg.RereadDelays[reads-1]
		s.log.Warn("the file's read failed in a way a cluster can cause for a moment; reading it again",
			slog.String("object", r.name), slog.Int("read", reads), slog.Duration("delay", delay), slog.Any("error", err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// readObject reads the file once; see verifyObject.
func (s *Sender) readObject(ctx context.Context, r objectRef) (*verifiedFile, error) {
	if r.name == "" || r.size < 0 {
		return nil, &permanentError{code: CodeObjectMissing, err: errors.New("the export records no stored file")}
	}
	obj, err := s.objects.Get(ctx, r.name)
	if err != nil {
		return nil, objectError(r, err)
	}
	defer obj.Close()
	h := sha256.New()
	var w io.Writer = h
	var buf *bytes.Buffer
	if r.size <= maxInMemory {
		buf = bytes.NewBuffer(make([]byte, 0, r.size+1))
		w = io.MultiWriter(h, buf)
	}
	// One byte past the recorded size is enough to know the file is longer than it should be.
	n, err := io.Copy(w, io.LimitReader(obj, r.size+1))
	if err != nil {
		return nil, objectError(r, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if n != r.size || sum != r.sha256 {
		return nil, &permanentError{code: CodeObjectCorrupt, err: fmt.Errorf(
			"object %s does not match its export: %d bytes with SHA-256 %s, Postgres records %d bytes with SHA-256 %s",
			r.name, n, sum, r.size, r.sha256)}
	}
	f := &verifiedFile{size: n}
	if buf != nil {
		f.data = buf.Bytes()
	}
	return f, nil
}

// pendingFile is a verifyObject running alongside the rest of a delivery.
type pendingFile struct {
	done   chan struct{}
	cancel context.CancelFunc
	file   *verifiedFile
	err    error
}

// verifyObjectAsync starts verifyObject; wait returns its result, stop abandons it and waits until it
// has let go of the object.
func (s *Sender) verifyObjectAsync(ctx context.Context, r objectRef) *pendingFile {
	ctx, cancel := context.WithCancel(ctx)
	p := &pendingFile{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		p.file, p.err = s.verifyObject(ctx, r)
	}()
	return p
}

func (p *pendingFile) wait() (*verifiedFile, error) {
	<-p.done
	return p.file, p.err
}

func (p *pendingFile) stop() {
	p.cancel()
	<-p.done
}

func objectError(r objectRef, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
		return &permanentError{code: CodeObjectMissing, err: fmt.Errorf("object %s: %w", r.name, err)}
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return &permanentError{code: CodeObjectCorrupt, err: fmt.Errorf("object %s: %w", r.name, err)}
	}
	return fmt.Errorf("read object %s: %w", r.name, err)
}

// send hands the verified file to MESH: from memory, or streamed from the Object Store again.
func (s *Sender) send(ctx context.Context, r objectRef, f *verifiedFile, to Route, filename, localID string) (string, error) {
	var body io.Reader
	if f.data != nil {
		body = bytes.NewReader(f.data)
	} else {
		obj, err := s.objects.Get(ctx, r.name)
		if err != nil {
			return "", objectError(r, err)
		}
		defer obj.Close()
		body = obj
	}
	return s.mesh.Send(ctx, mesh.OutboundMessage{
		To:          to.Mailbox,
		WorkflowID:  to.WorkflowID,
		FileName:    filename,
		LocalID:     localID,
		ContentType: "text/csv",
		Compress:    true,
		Body:        body,
	})
}

// markAccepted records MESH's message id and announces it, in one transaction: the lifecycle's
// compare-and-set (created → accepted, or accepted/acknowledged → accepted for a forced re-send) with
// its dps.export.sent event, and the attempt's outcome.
func (s *Sender) markAccepted(ctx context.Context, lock *exportLock, exp exportRow, attempt int, localID, messageID string, adopted, forced bool) error {
	outcome := attemptAccepted
	if adopted {
		outcome = attemptAdopted
	}
	err := lock.inTx(ctx, func(tx pgx.Tx) error {
		changed, _, err := lifecycle.MarkAccepted(ctx, tx, lifecycle.Acceptance{
			ExportID: exp.ID, Programme: exp.Programme, Filename: exp.Filename,
			MessageID: messageID, LocalID: localID, Attempt: attempt, Adopted: adopted, Forced: forced,
		})
		if err != nil {
			return err
		}
		if !changed {
			return errStale
		}
		_, err = tx.Exec(ctx, `
			UPDATE dps_export_attempts SET outcome = $3, mesh_message_id = $4, error = NULL, finished_at = now()
			WHERE export_id = $1 AND attempt = $2`, exp.ID, attempt, outcome, messageID)
		return err
	})
	if err != nil {
		return fmt.Errorf("record export %s accepted as %s: %w", exp.ID, messageID, err)
	}
	return nil
}

// transientOrFinal turns a failure into Retry, or into Failed when it is permanent or when no
// redelivery will follow.
func (s *Sender) transientOrFinal(ctx context.Context, lock *exportLock, b Batch, exp exportRow, res Result, attempt int, err error) Result {
	var pe *permanentError
	if errors.As(err, &pe) {
		return s.fail(ctx, lock, b, exp, res, attempt, pe)
	}
	if b.LastDelivery {
		return s.fail(ctx, lock, b, exp, res, attempt, &permanentError{code: CodeExhausted,
			err: fmt.Errorf("deliveries exhausted; last error: %w", err)})
	}
	return s.retry(res, err)
}

func (s *Sender) retry(res Result, err error) Result {
	res.Outcome, res.Err = Retry, err
	return res
}

// fail marks the export failed (the lifecycle's compare-and-set from created, which releases its records
// and enqueues dps.export.failed), records the attempt's outcome and enqueues the dead letter, all in one
// transaction. A forced re-send of an export MESH accepted before is not failed: the earlier message
// stands.
func (s *Sender) fail(ctx context.Context, lock *exportLock, b Batch, exp exportRow, res Result, attempt int, pe *permanentError) Result {
	res.Outcome, res.Err, res.Code = Failed, pe.err, pe.code
	if exp.Status != lifecycle.Created {
		if attempt > 0 {
			_ = lock.setAttemptOutcome(ctx, attempt, attemptPermanentError, pe.Error())
		}
		return res
	}
	reason := failureReason(pe)
	f := lifecycle.Failure{ExportID: exp.ID, Programme: exp.Programme, From: lifecycle.Created, Stage: bus.StageSender,
		Reason: truncate(reason, 4096), Code: pe.code}
	var me *mesh.Error
	if errors.As(pe.err, &me) && me.StatusCode != 0 {
		f.MeshStatus, f.MeshErrorCode = me.StatusCode, me.Code
	}
	err := lock.inTx(ctx, func(tx pgx.Tx) error {
		changed, _, err := lifecycle.MarkFailed(ctx, tx, f)
		if err != nil {
			return err
		}
		if !changed {
			return errStale
		}
		if attempt > 0 {
			if _, err := tx.Exec(ctx, `
				UPDATE dps_export_attempts SET outcome = $3, error = $4, finished_at = now()
				WHERE export_id = $1 AND attempt = $2`, exp.ID, attempt, attemptPermanentError, truncate(pe.Error(), 4096)); err != nil {
				return err
			}
		}
		if b.DeadLetter != nil {
			subject, msgID, v, err := b.DeadLetter(reason)
			if err != nil {
				return err
			}
			return outbox.Enqueue(ctx, tx, subject, msgID, v)
		}
		return nil
	})
	if err != nil {
		return s.retry(res, fmt.Errorf("mark export %s failed: %w", exp.ID, err))
	}
	s.log.Error("export failed", slog.String("export_id", exp.ID), slog.String("programme", exp.Programme),
		slog.String("code", pe.code), slog.String("reason", reason))
	return res
}

// failWithoutExport dead-letters a batch that names an export Postgres does not hold: there is no
// row to mark failed and no records to release, but the batch must not vanish silently.
func (s *Sender) failWithoutExport(ctx context.Context, b Batch, res Result, cause error) Result {
	res.Outcome, res.Err, res.Code = Failed, cause, CodeNoExport
	if b.DeadLetter == nil {
		return res
	}
	reason := CodeNoExport + ": " + cause.Error()
	subject, msgID, v, err := b.DeadLetter(reason)
	if err == nil {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, tx, subject, msgID, v) })
	}
	if err != nil {
		return s.retry(res, fmt.Errorf("dead-letter batch for missing export %s: %w", res.ExportID, err))
	}
	s.log.Error("batch names an export Postgres does not hold; dead-lettered", slog.String("export_id", res.ExportID))
	return res
}

// rejectBatch dead-letters a batch that disagrees with the export it names and changes nothing else:
// the export keeps its status, attempts and records, and its own batch is delivered as usual.
func (s *Sender) rejectBatch(ctx context.Context, b Batch, res Result, diff string) Result {
	res.Outcome, res.Code = Rejected, CodeBatchMismatch
	res.Err = fmt.Errorf("the batch does not match export %s: %s", res.ExportID, diff)
	if b.DeadLetter == nil {
		return res
	}
	reason := CodeBatchMismatch + ": " + res.Err.Error()
	subject, msgID, v, err := b.DeadLetter(reason)
	if err == nil {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return outbox.Enqueue(ctx, tx, subject, msgID, v) })
	}
	if err != nil {
		return s.retry(res, fmt.Errorf("dead-letter a batch that does not match export %s: %w", res.ExportID, err))
	}
	s.log.Error("batch does not match the export it names; dead-lettered, nothing changed",
		slog.String("export_id", res.ExportID), slog.String("differences", diff))
	return res
}

// failureReason says why, in words, with MESH's status and code first when MESH refused.
func failureReason(pe *permanentError) string {
	var me *mesh.Error
	if errors.As(pe.err, &me) && me.StatusCode != 0 && pe.code != CodeExhausted {
		return fmt.Sprintf("MESH refused the file: status %d, code %s: %s", me.StatusCode, orDash(me.Code), pe.err.Error())
	}
	return pe.code + ": " + pe.err.Error()
}

// meshCode is last_error_code for a MESH refusal: MESH's own code, else the HTTP status.
func meshCode(err error) string {
	var me *mesh.Error
	if errors.As(err, &me) {
		if me.Code != "" {
			return me.Code
		}
		if me.StatusCode != 0 {
			return fmt.Sprintf(codeMESHWithoutCodeFmt, me.StatusCode)
		}
	}
	return "MESH"
}

// recordMESHResult feeds the health probe: only failures that say MESH itself is unreachable or
// refusing us count, not a refusal of one file.
func (s *Sender) recordMESHResult(err error) {
	var me *mesh.Error
	switch {
	case err == nil:
		s.meshHealth.set(nil)
	case errors.Is(err, context.Canceled):
	case mesh.IsTransient(err):
		s.meshHealth.set(err)
	case errors.As(err, &me) && (me.StatusCode == http.StatusForbidden || me.StatusCode == http.StatusUnauthorized || me.StatusCode == 0):
		s.meshHealth.set(err)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
