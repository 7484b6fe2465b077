package tracking

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// StageTracker is the stage named in the failure events and dead letters this package writes.
const StageTracker = bus.StageTracker

// markAcknowledged moves e from accepted to acknowledged and enqueues dps.export.acknowledged, through
// the lifecycle. changed is false when the export was no longer accepted (another replica, or replay,
// got there first): then nothing is enqueued, so the event exists once per transition.
func (t *Tracker) markAcknowledged(ctx context.Context, tx pgx.Tx, e dueExport) (changed bool, at time.Time, err error) {
	return lifecycle.MarkAcknowledged(ctx, tx, e.ID, e.Programme, e.MessageID)
}

// failure is why an export failed, as MESH put it.
type failure struct {
	reason string
	// code and description are MESH's status_code and status_description (or error code).
	code, description string
	// httpStatus is the HTTP status of a failed MESH request, 0 when MESH answered normally.
	httpStatus int
}

// markFailed moves e from accepted to failed with MESH's reason, through the lifecycle: its records go
// back in the queue for the next export and dps.export.failed is enqueued, all in tx. changed is false
// when the export was no longer accepted.
func (t *Tracker) markFailed(ctx context.Context, tx pgx.Tx, e dueExport, f failure) (changed bool, err error) {
	changed, _, err = lifecycle.MarkFailed(ctx, tx, lifecycle.Failure{
		ExportID: e.ID, Programme: e.Programme, From: lifecycle.Accepted, Stage: StageTracker,
		Reason: f.reason, Code: f.code, MeshStatus: f.httpStatus, MeshErrorCode: f.code,
	})
	return changed, err
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
		WHERE id = $1 AND status = $5`, e.ID, after.Microseconds(), inc, int(clock), lifecycle.Accepted)
	if err != nil {
		return fmt.Errorf("reschedule tracking of export %s: %w", e.ID, err)
	}
	return nil
}
