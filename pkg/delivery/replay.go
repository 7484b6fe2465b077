package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// ReplayHandler re-runs the sender over past batches (sender replay). Idempotent by default: an export
// already accepted is skipped and reported with its MESH message id. force re-sends such an export to
// MESH as a NEW message, with a new attempt and local id, and says so loudly; an export that failed is
// never re-sent, because its records were released to a later export. dryRun changes nothing and says
// what would happen.
func (s *Sender) ReplayHandler(force, dryRun bool) replay.Handler {
	return func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		var ready bus.ExportReady
		if err := bus.Decode(msg, &ready); err != nil {
			return replay.Failed, "", fmt.Errorf("invalid batch: %w", err)
		}
		if dryRun {
			return s.replayDryRun(ctx, ready, force)
		}
		if !s.cfg.JobsEnabled || s.mesh == nil {
			return replay.Failed, "", errors.New("MESH_JOBS_ENABLED is false: nothing can be sent (use --dry-run to look)")
		}
		res := s.Deliver(ctx, Batch{Ready: ready, Force: force, WaitForLock: true, DeadLetter: deadLetterFor(msg)})
		id := ready.ExportID
		switch res.Outcome {
		case Sent:
			if res.Status != lifecycle.Created {
				s.log.Warn("REPLAY --force RE-SENT an export MESH had already accepted, as a NEW MESH message",
					slog.String("export_id", id), slog.String("mesh_message_id", res.MessageID),
					slog.String("previous_mesh_message_id", res.PreviousMessageID))
				return replay.Forced, fmt.Sprintf("export %s RE-SENT as NEW MESH message %s (attempt %d; was %s)",
					id, res.MessageID, res.Attempt, res.PreviousMessageID), nil
			}
			return replay.Done, fmt.Sprintf("export %s sent as MESH message %s (attempt %d)", id, res.MessageID, res.Attempt), nil
		case Adopted:
			return replay.Done, fmt.Sprintf("export %s: attempt %d found accepted at MESH as %s; adopted", id, res.Attempt, res.MessageID), nil
		case AlreadySent:
			return replay.Skipped, fmt.Sprintf("export %s already sent as MESH message %s (%s)", id, res.MessageID, res.Status), nil
		case AlreadyFailed:
			return replay.Skipped, fmt.Sprintf("export %s failed earlier; its records were released to a later export, not re-sent", id), nil
		case Failed:
			return replay.Failed, "", fmt.Errorf("export %s failed: %w", id, res.Err)
		case Rejected:
			return replay.Failed, "", fmt.Errorf("batch dead-lettered, nothing sent: %w", res.Err)
		case Locked:
			return replay.Failed, "", fmt.Errorf("export %s is locked by another sender", id)
		default:
			return replay.Failed, "", fmt.Errorf("export %s: transient failure, not sent: %w", id, res.Err)
		}
	}
}

func (s *Sender) replayDryRun(ctx context.Context, ready bus.ExportReady, force bool) (replay.Outcome, string, error) {
	id := ready.ExportID
	var status lifecycle.Status
	var messageID *string
	err := s.pool.QueryRow(ctx, `SELECT status, mesh_message_id FROM dps_exports WHERE id = $1`, id).Scan(&status, &messageID)
	if errors.Is(err, pgx.ErrNoRows) {
		return replay.DryRun, fmt.Sprintf("export %s is not in Postgres: would dead-letter the batch", id), nil
	}
	if err != nil {
		return replay.Failed, "", fmt.Errorf("look up export %s: %w", id, err)
	}
	mid := ""
	if messageID != nil {
		mid = *messageID
	}
	switch status {
	case lifecycle.Accepted, lifecycle.Acknowledged:
		if force {
			return replay.DryRun, fmt.Sprintf("export %s (%s as %s): would RE-SEND to MESH as a NEW message", id, status, mid), nil
		}
		return replay.DryRun, fmt.Sprintf("export %s already sent as MESH message %s (%s): would skip", id, mid, status), nil
	case lifecycle.Received, lifecycle.Processed:
		return replay.DryRun, fmt.Sprintf("export %s already taken by the receiver as MESH message %s (%s): would skip, even forced", id, mid, status), nil
	case lifecycle.Failed, lifecycle.Rejected:
		return replay.DryRun, fmt.Sprintf("export %s failed earlier: would skip (its records were released)", id), nil
	}
	return replay.DryRun, fmt.Sprintf("export %s not yet sent: would check earlier attempts at MESH, then send %s", id, ready.Filename), nil
}
