package tracking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/runner"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// retryDelay is how long a dps.export.sent message waits before redelivery when the database could
// not be reached.
const retryDelay = 5 * time.Second

// checkSent compares a dps.export.sent event with the export it names and says what is wrong, or ""
// when Postgres agrees: the export exists, was accepted by MESH (or went further), under the message
// id the event carries.
func checkSent(ctx context.Context, pool *pgxpool.Pool, ev bus.ExportSent) (string, error) {
	var status lifecycle.Status
	var programme string
	var messageID *string
	err := pool.QueryRow(ctx, `
		SELECT e.status, p.code, e.mesh_message_id FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.id = $1`, ev.ExportID).Scan(&status, &programme, &messageID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "EXPORT_NOT_FOUND: dps.export.sent names export " + ev.ExportID + ", which Postgres does not hold", nil
	}
	if err != nil {
		return "", fmt.Errorf("load export %s: %w", ev.ExportID, err)
	}
	switch {
	case status == lifecycle.Created:
		return fmt.Sprintf("EVENT_MISMATCH: dps.export.sent for export %s, which Postgres records as %s, not sent", ev.ExportID, status), nil
	case status == lifecycle.Failed:
		// A failed export is past tracking whatever the event says; nothing to do, nothing to flag.
		return "", nil
	case messageID == nil || *messageID != ev.MeshMessageID:
		return fmt.Sprintf("EVENT_MISMATCH: dps.export.sent for export %s names MESH message %s; Postgres records another",
			ev.ExportID, ev.MeshMessageID), nil
	case programme != ev.Programme:
		return fmt.Sprintf("EVENT_MISMATCH: dps.export.sent for export %s names programme %s; Postgres records %s",
			ev.ExportID, ev.Programme, programme), nil
	}
	return "", nil
}

// StartTracking is the tracker's handling of dps.export.sent: an accepted export becomes due now. It
// returns the status the export has (0 when there is no such export); only Accepted changed anything. It touches only next_track_at, so running it again, or for an export already past accepted,
// is harmless.
func StartTracking(ctx context.Context, pool *pgxpool.Pool, exportID string) (lifecycle.Status, error) {
	var status lifecycle.Status
	err := pool.QueryRow(ctx, `
		UPDATE dps_exports SET next_track_at = now(), updated_at = now()
		WHERE id = $1 AND status = $2
		RETURNING status`, exportID, lifecycle.Accepted).Scan(&status)
	if err == nil {
		return status, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("start tracking export %s: %w", exportID, err)
	}
	status, err = lifecycle.StatusOf(ctx, pool, exportID)
	if errors.Is(err, lifecycle.ErrNoExport) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("start tracking export %s: %w", exportID, err)
	}
	return status, nil
}

// DecodeSent validates a dps.export.sent message against its schema and decodes it.
func DecodeSent(msg jetstream.Msg) (bus.ExportSent, error) {
	var ev bus.ExportSent
	if err := bus.Decode(msg, &ev); err != nil {
		return ev, err
	}
	if _, err := uuid.Parse(ev.ExportID); err != nil {
		return ev, &bus.InvalidMessageError{Subject: msg.Subject(), Reason: fmt.Sprintf("export_id %q is not a UUID", ev.ExportID), Err: err}
	}
	return ev, nil
}

// newSentRunner runs startTracking over the shared durable consumer "tracker": replicas share the
// messages, and each one wakes the poller of the replica that received it.
func (t *Tracker) newSentRunner() (*runner.Runner, error) {
	return runner.New(runner.Config{
		JS: t.cfg.JS, Stream: bus.StreamEvents, Consumer: bus.ConsumerTracker, Stage: StageTracker,
		Handler: t.startTracking,
		Backoff: runner.Steps(retryDelay),
		Grace:   t.cfg.ShutdownGrace,
		Logger:  t.log,
	})
}

// startTracking is the handler of dps.export.sent: the export it names becomes due for tracking now.
// An invalid message is dead-lettered (and then acknowledged, like every consumer's); a database
// failure is retried.
func (t *Tracker) startTracking(ctx context.Context, d runner.Delivery) runner.Outcome {
	ev, err := DecodeSent(d.Msg)
	if err != nil {
		return runner.DeadLetter("invalid", err.Error())
	}
	log := d.Log.With(slog.String("export_id", ev.ExportID), slog.String("mesh_message_id", ev.MeshMessageID))
	problem, err := checkSent(ctx, t.cfg.Pool, ev)
	if dbErr, permanent := store.IsPermanent(err); permanent {
		return runner.DeadLetter("database_refused", fmt.Sprintf("Postgres refused the event for good (SQLSTATE %s): %v", dbErr.SQLState, err))
	}
	if err != nil {
		return runner.Retry(err)
	}
	if problem != "" {
		// The event is only a pointer: one that disagrees with the export it names was not written by
		// our sender, and acting on it (or acking it with a WARN) would hide that.
		return runner.DeadLetter("mismatch", problem)
	}
	status, err := StartTracking(ctx, t.cfg.Pool, ev.ExportID)
	if err != nil {
		return runner.Retry(err)
	}
	switch status {
	case lifecycle.Accepted:
		log.Debug("tracking export now")
		t.Wake()
	case 0:
		log.Warn("dps.export.sent names an export this database does not hold")
	case lifecycle.Created:
		log.Warn("dps.export.sent arrived for an export not yet accepted in the database; the sender owns it")
	default:
		log.Debug("export already past accepted", slog.String("status", status.String()))
	}
	return runner.Done()
}
