package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// Querier is what reads a status: a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrNoExport means dps_exports holds no export with that id.
var ErrNoExport = errors.New("no such export")

// StatusOf reads an export's status; ErrNoExport when there is no such export.
func StatusOf(ctx context.Context, q Querier, exportID string) (Status, error) {
	var s Status
	err := q.QueryRow(ctx, `SELECT status FROM dps_exports WHERE id = $1`, exportID).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("export %s: %w", exportID, ErrNoExport)
	}
	if err != nil {
		return 0, fmt.Errorf("export %s status: %w", exportID, err)
	}
	return s, nil
}

// checkFrom refuses a transition the lifecycle does not allow: a programming error, caught before any SQL.
func checkFrom(to Status, from []Status) error {
	if len(from) == 0 {
		return fmt.Errorf("transition to %s: no status to start from", to)
	}
	for _, f := range from {
		if !Allowed(f, to) {
			return fmt.Errorf("transition %s → %s is not allowed", f, to)
		}
	}
	return nil
}

// Acceptance is MESH's acceptance of one attempt at an export.
type Acceptance struct {
	ExportID, Programme, Filename string
	// MessageID is MESH's message id; LocalID and Attempt name our attempt (<export id>.<attempt>).
	MessageID, LocalID string
	Attempt            int
	// Adopted: found accepted at MESH after a crash, rather than sent now.
	Adopted bool
	// Forced: a re-send of an export already accepted or acknowledged (sender replay --force). It is
	// announced under its own event id, so that the stream's duplicate window does not swallow it.
	Forced bool
}

// MarkAccepted moves an export to Accepted with MESH's ids, clearing the tracker's bookkeeping, and
// enqueues dps.export.sent, in tx: from Created, or, when forced, from Accepted or Acknowledged. changed
// is false (and nothing is enqueued) when the export was in none of those statuses.
func MarkAccepted(ctx context.Context, tx pgx.Tx, a Acceptance) (changed bool, sentAt time.Time, err error) {
	from := []Status{Created}
	msgID := bus.EventMsgID(bus.EventSent, a.ExportID)
	if a.Forced {
		from = []Status{Accepted, Acknowledged}
		msgID = bus.EventSent + ":" + a.LocalID
	}
	if err := checkFrom(Accepted, from); err != nil {
		return false, sentAt, err
	}
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports SET status = $2, mesh_message_id = $3, mesh_local_id = $4, sent_at = now(),
			acknowledged_at = NULL, last_error = NULL, last_error_code = NULL,
			next_track_at = NULL, track_failures = 0, tracking_unknown_since = NULL, updated_at = now()
		WHERE id = $1 AND status = ANY($5)
		RETURNING sent_at`, a.ExportID, Accepted, a.MessageID, a.LocalID, Names(from)).Scan(&sentAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, sentAt, nil
	}
	if err != nil {
		return false, sentAt, fmt.Errorf("mark export %s accepted: %w", a.ExportID, err)
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportSent, msgID, bus.ExportSent{
		EventID:       uuid.NewString(),
		ExportID:      a.ExportID,
		Programme:     a.Programme,
		Filename:      a.Filename,
		MeshMessageID: a.MessageID,
		LocalID:       a.LocalID,
		Attempt:       a.Attempt,
		Adopted:       a.Adopted,
		SentAt:        sentAt.UTC(),
	}); err != nil {
		return false, sentAt, fmt.Errorf("mark export %s accepted: %w", a.ExportID, err)
	}
	return true, sentAt, nil
}

// MarkAcknowledged moves an export from Accepted to Acknowledged and enqueues dps.export.acknowledged,
// in tx. changed is false when the export was no longer accepted (another replica, or a replay, got
// there first): then nothing is enqueued, so the event exists once per transition.
func MarkAcknowledged(ctx context.Context, tx pgx.Tx, exportID, programme, meshMessageID string) (changed bool, at time.Time, err error) {
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = $2, acknowledged_at = now(), next_track_at = NULL,
		    tracking_unknown_since = NULL, updated_at = now()
		WHERE id = $1 AND status = $3
		RETURNING acknowledged_at`, exportID, Acknowledged, Accepted).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s acknowledged: %w", exportID, err)
	}
	ev := bus.ExportAcknowledged{
		EventID:        uuid.NewString(),
		ExportID:       exportID,
		Programme:      programme,
		MeshMessageID:  meshMessageID,
		AcknowledgedAt: at.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportAcknowledged, bus.EventMsgID(bus.EventAcknowledged, exportID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s acknowledged: %w", exportID, err)
	}
	return true, at, nil
}

// Failure is why an export failed.
type Failure struct {
	ExportID, Programme string
	// From is the status the export is expected in: Created (the sender gave up), Accepted (MESH gave
	// up on the message), or any status before Processed (a MESH non-delivery report in our inbox).
	From Status
	// Stage is the stage named in dps.export.failed: bus.StageSender or bus.StageTracker.
	Stage string
	// Reason is dps_exports.last_error and the event's reason.
	Reason string
	// Code is dps_exports.last_error_code; empty for none.
	Code string
	// MeshStatus and MeshErrorCode go into the event when MESH said why.
	MeshStatus    int
	MeshErrorCode string
}

// MarkFailed moves an export from f.From to Failed with its reason, releases its records for the next
// export, and enqueues dps.export.failed, all in tx. changed is false when the export was no longer in
// f.From; then nothing else is done.
func MarkFailed(ctx context.Context, tx pgx.Tx, f Failure) (changed bool, at time.Time, err error) {
	if err := checkFrom(Failed, []Status{f.From}); err != nil {
		return false, at, err
	}
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = $2, failed_at = now(), last_error = $3, last_error_code = nullif($4, ''),
		    next_track_at = NULL, updated_at = now()
		WHERE id = $1 AND status = $5
		RETURNING failed_at`, f.ExportID, Failed, f.Reason, f.Code, f.From).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s failed: %w", f.ExportID, err)
	}
	if err := Release(ctx, tx, f.ExportID); err != nil {
		return false, at, fmt.Errorf("mark export %s failed: %w", f.ExportID, err)
	}
	ev := bus.ExportFailed{
		EventID:       uuid.NewString(),
		ExportID:      f.ExportID,
		Programme:     f.Programme,
		Stage:         f.Stage,
		Reason:        f.Reason,
		MeshStatus:    f.MeshStatus,
		MeshErrorCode: f.MeshErrorCode,
		FailedAt:      at.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportFailed, bus.EventMsgID(bus.EventFailed, f.ExportID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s failed: %w", f.ExportID, err)
	}
	return true, at, nil
}

// sqlReleaseExport queues every record a failed (or rejected) export carried again. Its links stay (they are history);
// the carriage rule ignores released exports (LiveCondition), so each record is decided afresh against
// its last live one.
const sqlReleaseExport = `
INSERT INTO dps_pending_records (vaccination_record_id, programme_id)
SELECT er.vaccination_record_id, r.programme_id
FROM dps_export_records er JOIN vaccination_records r ON r.id = er.vaccination_record_id
WHERE er.export_id = $1
ON CONFLICT (vaccination_record_id) DO UPDATE
    SET programme_id = EXCLUDED.programme_id, queue_seq = EXCLUDED.queue_seq, queued_at = EXCLUDED.queued_at`

// Release makes the records of a released (failed or rejected) export candidates again, in the caller's
// transaction: MarkFailed calls it after its update, so that the two commit together. A record is then
// decided afresh by the next export against its last carriage in a live export: one that never went out
// goes as new, one whose update failed goes as an update, and so on.
//
// It needs no programme lock: an export running at the same moment either misses the re-queued
// candidates (they are newer than its snapshot) or finds their queue_seq changed and leaves them queued,
// so they are taken by the next run.
//
// It refuses an export whose status does not release its records: releasing a live export's records
// would let a second export carry what the first still carries.
func Release(ctx context.Context, tx pgx.Tx, exportID string) error {
	status, err := StatusOf(ctx, tx, exportID)
	if err != nil {
		return fmt.Errorf("release export %s: %w", exportID, err)
	}
	if !status.Released() {
		return fmt.Errorf("release export %s: status is %s; mark it failed or rejected first, in the same transaction", exportID, status)
	}
	if _, err := tx.Exec(ctx, sqlReleaseExport, exportID); err != nil {
		return fmt.Errorf("release export %s: %w", exportID, err)
	}
	return nil
}

// Receipt is the receiver's InfAck Success for an export.
type Receipt struct {
	ExportID, Programme, Filename string
	// ResponseCode and ResponseDisplay are the InfAck's RESPONSE_CODE and RESPONSE_DISPLAY.
	ResponseCode, ResponseDisplay string
	// InfAckMessageID is the MESH message that carried the InfAck.
	InfAckMessageID string
}

// MarkReceived moves an export from Acknowledged to Received with the InfAck's code, and enqueues
// dps.export.received, in tx. changed is false when the export was no longer acknowledged.
func MarkReceived(ctx context.Context, tx pgx.Tx, r Receipt) (changed bool, at time.Time, err error) {
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = $2, received_at = now(), receiver_code = $3, receiver_display = nullif($4, ''),
		    infack_message_id = $5, next_track_at = NULL, updated_at = now()
		WHERE id = $1 AND status = $6
		RETURNING received_at`, r.ExportID, Received, r.ResponseCode, r.ResponseDisplay, r.InfAckMessageID, Acknowledged).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s received: %w", r.ExportID, err)
	}
	ev := bus.ExportReceived{EventID: uuid.NewString(), ExportID: r.ExportID, Programme: r.Programme, Filename: r.Filename,
		ReceiverCode: r.ResponseCode, InfAckMessageID: r.InfAckMessageID, ReceivedAt: at.UTC()}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportReceived, bus.EventMsgID(bus.EventReceived, r.ExportID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s received: %w", r.ExportID, err)
	}
	return true, at, nil
}

// Rejection is the receiver's InfAck Failure: it refused the whole file.
type Rejection struct {
	ExportID, Programme string
	// From is the status the export is in (locked by the caller): Accepted or Acknowledged.
	From Status
	// Reason is dps_exports.last_error and the event's reason.
	Reason string
	// ResponseCode and ResponseDisplay are the InfAck's; InfAckMessageID the MESH message that carried it.
	ResponseCode, ResponseDisplay, InfAckMessageID string
}

// MarkRejected moves an export from r.From to Rejected, releases its records for the next export and
// enqueues dps.export.failed (status rejected, with the receiver's code and display), all in tx.
// changed is false when the export was no longer in r.From.
func MarkRejected(ctx context.Context, tx pgx.Tx, r Rejection) (changed bool, at time.Time, err error) {
	if err := checkFrom(Rejected, []Status{r.From}); err != nil {
		return false, at, err
	}
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = $2, rejected_at = now(), last_error = $3, last_error_code = nullif($4, ''),
		    receiver_code = nullif($4, ''), receiver_display = nullif($5, ''), infack_message_id = $6,
		    next_track_at = NULL, updated_at = now()
		WHERE id = $1 AND status = $7
		RETURNING rejected_at`, r.ExportID, Rejected, r.Reason, r.ResponseCode, r.ResponseDisplay, r.InfAckMessageID, r.From).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s rejected: %w", r.ExportID, err)
	}
	if err := Release(ctx, tx, r.ExportID); err != nil {
		return false, at, fmt.Errorf("mark export %s rejected: %w", r.ExportID, err)
	}
	ev := bus.ExportFailed{
		EventID: uuid.NewString(), ExportID: r.ExportID, Programme: r.Programme, Stage: bus.StageTracker,
		Reason: r.Reason, Status: bus.StatusRejected, ReceiverCode: r.ResponseCode, ReceiverDisplay: r.ResponseDisplay,
		FailedAt: at.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportFailed, bus.EventMsgID(bus.EventFailed, r.ExportID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s rejected: %w", r.ExportID, err)
	}
	return true, at, nil
}

// Processing is the receiver's BusAck for an export, once each record's outcome is recorded on its link.
type Processing struct {
	ExportID, Programme, Filename string
	// From is the status the export is in (locked by the caller): Accepted, Acknowledged or Received.
	From Status
	// BusAckMessageID is the MESH message that carried the BusAck.
	BusAckMessageID string
	// RowsSent, RowsAccepted and RowsRefused are the counts; Refused lists refused records (at most
	// bus.MaxRefusedListed), RefusedTruncated says when there were more.
	RowsSent, RowsAccepted, RowsRefused int
	Refused                             []bus.RefusedRecord
	RefusedTruncated                    bool
}

// MarkProcessed moves an export from p.From to Processed with its counts and enqueues
// dps.export.processed, in tx. An export that skipped Acknowledged or Received (its InfAck never came)
// gets those times too: the BusAck proves both. changed is false when the export was no longer in p.From.
func MarkProcessed(ctx context.Context, tx pgx.Tx, p Processing) (changed bool, at time.Time, err error) {
	if err := checkFrom(Processed, []Status{p.From}); err != nil {
		return false, at, err
	}
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = $2, processed_at = now(), received_at = coalesce(received_at, now()),
		    acknowledged_at = coalesce(acknowledged_at, now()),
		    rows_accepted = $3, rows_refused = $4, busack_message_id = $5, next_track_at = NULL, updated_at = now()
		WHERE id = $1 AND status = $6
		RETURNING processed_at`, p.ExportID, Processed, p.RowsAccepted, p.RowsRefused, p.BusAckMessageID, p.From).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s processed: %w", p.ExportID, err)
	}
	refused := p.Refused
	if refused == nil {
		refused = []bus.RefusedRecord{}
	}
	ev := bus.ExportProcessed{
		EventID: uuid.NewString(), ExportID: p.ExportID, Programme: p.Programme, Filename: p.Filename,
		BusAckMessageID: p.BusAckMessageID, RowsSent: p.RowsSent, RowsAccepted: p.RowsAccepted, RowsRefused: p.RowsRefused,
		Refused: refused, RefusedTruncated: p.RefusedTruncated, ProcessedAt: at.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportProcessed, bus.EventMsgID(bus.EventProcessed, p.ExportID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s processed: %w", p.ExportID, err)
	}
	return true, at, nil
}
