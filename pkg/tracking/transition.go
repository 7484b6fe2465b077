package tracking

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/export"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// StageTracker is the stage named in the failure events and dead letters this package writes.
const StageTracker = bus.StageTracker

// markAcknowledged moves e from accepted to acknowledged and enqueues dps.export.acknowledged. changed
// is false when the export was no longer accepted (another replica, or replay, got there first): then
// nothing is enqueued, so the event exists once per transition.
func (t *Tracker) markAcknowledged(ctx context.Context, tx pgx.Tx, e dueExport) (changed bool, at time.Time, err error) {
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = 'acknowledged', acknowledged_at = now(), next_track_at = NULL,
		    tracking_unknown_since = NULL, updated_at = now()
		WHERE id = $1 AND status = 'accepted'
		RETURNING acknowledged_at`, e.ID).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, at, nil
	}
	if err != nil {
		return false, at, fmt.Errorf("mark export %s acknowledged: %w", e.ID, err)
	}
	ev := bus.ExportAcknowledged{
		EventID:        uuid.NewString(),
		ExportID:       e.ID,
		Programme:      e.Programme,
		MeshMessageID:  e.MessageID,
		AcknowledgedAt: at.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportAcknowledged, bus.EventMsgID(bus.EventAcknowledged, e.ID), ev); err != nil {
		return false, at, fmt.Errorf("mark export %s acknowledged: %w", e.ID, err)
	}
	return true, at, nil
}

// failure is why an export failed, as MESH put it.
type failure struct {
	reason string
	// code and description are MESH's status_code and status_description (or error code).
	code, description string
	// httpStatus is the HTTP status of a failed MESH request, 0 when MESH answered normally.
	httpStatus int
}

// markFailed moves e from accepted to failed with MESH's reason, puts its records back in the queue
// for the next export, and enqueues dps.export.failed, all in tx. changed is false when the export was
// no longer accepted.
func (t *Tracker) markFailed(ctx context.Context, tx pgx.Tx, e dueExport, f failure) (changed bool, err error) {
	lastError := f.reason
	var at time.Time
	err = tx.QueryRow(ctx, `
		UPDATE dps_exports
		SET status = 'failed', failed_at = now(), last_error = $2, last_error_code = nullif($3, ''),
		    next_track_at = NULL, updated_at = now()
		WHERE id = $1 AND status = 'accepted'
		RETURNING failed_at`, e.ID, lastError, f.code).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mark export %s failed: %w", e.ID, err)
	}
	// The producer's own release, so that "failed export → records queued again" has one definition.
	if err := export.Release(ctx, tx, e.ID); err != nil {
		return false, fmt.Errorf("mark export %s failed: %w", e.ID, err)
	}
	ev := bus.ExportFailed{
		EventID:       uuid.NewString(),
		ExportID:      e.ID,
		Programme:     e.Programme,
		Stage:         StageTracker,
		Reason:        f.reason,
		MeshErrorCode: f.code,
		FailedAt:      at.UTC(),
	}
	ev.MeshStatus = f.httpStatus
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportFailed, bus.EventMsgID(bus.EventFailed, e.ID), ev); err != nil {
		return false, fmt.Errorf("mark export %s failed: %w", e.ID, err)
	}
	return true, nil
}

// unknownClock says what a reschedule does to tracking_unknown_since.
type unknownClock int

const (
	unknownKeep  unknownClock = iota // a failed request says nothing either way
	unknownStart                     // MESH answered 404: start the clock, or keep it running
	unknownClear                     // MESH knows the message
)

// reschedule sets when e is next asked about. countFailure adds one to track_failures (the backoff's
// exponent).
func (t *Tracker) reschedule(ctx context.Context, tx pgx.Tx, e dueExport, after time.Duration, countFailure bool, clock unknownClock) error {
	inc := 0
	if countFailure {
		inc = 1
	}
	_, err := tx.Exec(ctx, `
		UPDATE dps_exports
		SET next_track_at = now() + $2 * interval '1 microsecond',
		    track_failures = track_failures + $3,
		    tracking_unknown_since = CASE $4::int
		        WHEN 1 THEN coalesce(tracking_unknown_since, now())
		        WHEN 2 THEN NULL
		        ELSE tracking_unknown_since END,
		    updated_at = now()
		WHERE id = $1 AND status = 'accepted'`, e.ID, after.Microseconds(), inc, int(clock))
	if err != nil {
		return fmt.Errorf("reschedule tracking of export %s: %w", e.ID, err)
	}
	return nil
}
