package tracking

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// TrackNow asks MESH about one export at once, whatever its next_track_at, waiting for a replica that
// holds it. An export still accepted is moved on exactly as a poll would; one already past accepted is
// left as it is (transitions only start from accepted) and the answer says what MESH reports now.
func (t *Tracker) TrackNow(ctx context.Context, exportID string) (string, error) {
	if t.cfg.MESH == nil {
		return "", errors.New("track export: no MESH client (MESH jobs disabled)")
	}
	tx, err := t.cfg.Pool.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("track export %s: begin: %w", exportID, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit

	var status lifecycle.Status
	// FOR UPDATE without SKIP LOCKED: wait for a running tracker's batch that holds the export.
	e, err := scanDue(tx.QueryRow(ctx, `
		SELECT `+dueColumns+`, e.status
		FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.id = $1
		FOR UPDATE OF e`, exportID), &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("track export %s: no such export", exportID)
	}
	if err != nil {
		return "", fmt.Errorf("track export %s: %w", exportID, err)
	}
	if e.MessageID == "" && status != lifecycle.Accepted {
		return "export " + status.String() + ", no MESH message id to track", nil
	}
	var tr *mesh.Tracking
	var trErr error
	if e.MessageID != "" {
		tr, trErr = t.cfg.MESH.Track(ctx, e.MessageID)
	}
	if status != lifecycle.Accepted {
		if trErr != nil {
			return "", fmt.Errorf("track export %s: %w", exportID, trErr)
		}
		return fmt.Sprintf("MESH says %s; export stays %s", tr.Status, status), nil
	}
	a, err := t.apply(ctx, tx, e, tr, trErr)
	if err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("track export %s: commit: %w", exportID, err)
	}
	t.record(a)
	switch a.outcome {
	case outcomeAcknowledged:
		return "acknowledged now", nil
	case outcomeFailed:
		return "failed now: " + a.reason, nil
	case outcomePending:
		return "MESH says " + a.status + "; still tracking", nil
	case outcomeError:
		return "", fmt.Errorf("track export %s: %s", exportID, a.reason)
	}
	return "moved on by another tracker meanwhile", nil
}

// ReplayOptions shape the replay handler.
type ReplayOptions struct {
	// Force asks MESH at once (through Tracker, which must then be set) instead of leaving the export
	// due for the running trackers, including exports already past accepted, which it reports on
	// without changing.
	Force bool
	// DryRun reports what would happen and changes nothing.
	DryRun bool
	// Tracker does the tracking for Force. It is not run; only TrackNow is called.
	Tracker *Tracker
}

// ReplayHandler re-runs the handling of dps.export.sent for `tracker replay`. By default an export
// still accepted becomes due now (the running trackers pick it up at their next poll) and one already
// acknowledged or failed is skipped and counted. An invalid message is reported as failed; replay
// never dead-letters.
func ReplayHandler(pool *pgxpool.Pool, o ReplayOptions) (replay.Handler, error) {
	if o.Force && !o.DryRun && o.Tracker == nil {
		return nil, errors.New("tracking replay: --force needs a MESH client (MESH_JOBS_ENABLED=true)")
	}
	return func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		ev, err := DecodeSent(msg)
		if err != nil {
			return replay.Failed, "", err
		}
		status, err := lifecycle.StatusOf(ctx, pool, ev.ExportID)
		if errors.Is(err, lifecycle.ErrNoExport) {
			return replay.Failed, "", fmt.Errorf("export %s: no such export in this database", ev.ExportID)
		}
		if err != nil {
			return replay.Failed, "", err
		}
		past := status != lifecycle.Accepted
		id := "export " + ev.ExportID
		switch {
		case o.DryRun && o.Force && past:
			return replay.DryRun, id + ": " + status.String() + "; would ask MESH now and leave it " + status.String(), nil
		case o.DryRun && o.Force:
			return replay.DryRun, id + ": accepted; would ask MESH now and move it on", nil
		case o.DryRun && past:
			return replay.DryRun, id + ": already " + status.String() + "; would skip", nil
		case o.DryRun:
			return replay.DryRun, id + ": accepted; would make it due for tracking now", nil
		case o.Force:
			detail, err := o.Tracker.TrackNow(ctx, ev.ExportID)
			if err != nil {
				return replay.Failed, "", err
			}
			if past {
				return replay.Forced, id + ": re-tracked: " + detail, nil
			}
			return replay.Done, id + ": tracked: " + detail, nil
		case past:
			return replay.Skipped, id + ": already " + status.String(), nil
		}
		now, err := StartTracking(ctx, pool, ev.ExportID)
		if err != nil {
			return replay.Failed, "", err
		}
		if now != lifecycle.Accepted {
			return replay.Skipped, id + ": already " + now.String(), nil
		}
		return replay.Done, id + ": due for tracking now", nil
	}, nil
}
