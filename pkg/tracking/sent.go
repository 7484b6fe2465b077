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
)

// Export statuses as dps_exports spells them.
const (
	statusCreated      = "created"
	statusAccepted     = "accepted"
	statusAcknowledged = "acknowledged"
	statusFailed       = "failed"
)

// retryDelay is how long a dps.export.sent message waits before redelivery when the database could
// not be reached.
const retryDelay = 5 * time.Second

// StartTracking is the tracker's handling of dps.export.sent: an accepted export becomes due now. It
// returns the status the export has ("" when there is no such export); only "accepted" changed
// anything. It touches only next_track_at, so running it again, or for an export already past accepted,
// is harmless.
func StartTracking(ctx context.Context, pool *pgxpool.Pool, exportID string) (string, error) {
	var status string
	err := pool.QueryRow(ctx, `
		UPDATE dps_exports SET next_track_at = now(), updated_at = now()
		WHERE id = $1 AND status = 'accepted'
		RETURNING status`, exportID).Scan(&status)
	if err == nil {
		return status, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("start tracking export %s: %w", exportID, err)
	}
	err = pool.QueryRow(ctx, `SELECT status FROM dps_exports WHERE id = $1`, exportID).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("start tracking export %s: %w", exportID, err)
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

// sentConsumer is the running "tracker" durable consumer.
type sentConsumer struct{ cc jetstream.ConsumeContext }

func (c *sentConsumer) stop() {
	c.cc.Stop()
	<-c.cc.Closed()
}

// startSentConsumer consumes dps.export.sent with the shared durable consumer "tracker": replicas
// share the messages, and each one wakes the poller of the replica that received it.
func (t *Tracker) startSentConsumer(ctx context.Context) (*sentConsumer, error) {
	cons, err := t.cfg.JS.Consumer(ctx, bus.StreamEvents, bus.ConsumerTracker)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", bus.ConsumerTracker, bus.StreamEvents, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { t.handleSent(ctx, msg) })
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", bus.SubjectExportSent, err)
	}
	return &sentConsumer{cc: cc}, nil
}

// handleSent starts tracking the export a dps.export.sent message names. An invalid message goes to
// the dead-letter stream; a database failure is redelivered later.
func (t *Tracker) handleSent(ctx context.Context, msg jetstream.Msg) {
	ev, err := DecodeSent(msg)
	if err != nil {
		t.log.Error("dead-lettering an invalid dps.export.sent message", slog.Any("error", err))
		if dlErr := bus.DeadLetter(ctx, t.cfg.JS, StageTracker, msg, err.Error()); dlErr != nil {
			t.log.Error("dead-letter dps.export.sent message; it will be redelivered", slog.Any("error", dlErr))
			_ = msg.NakWithDelay(retryDelay)
			return
		}
		_ = msg.Term()
		return
	}
	log := t.log.With(slog.String("export_id", ev.ExportID), slog.String("mesh_message_id", ev.MeshMessageID))
	status, err := StartTracking(ctx, t.cfg.Pool, ev.ExportID)
	if err != nil {
		log.Warn("start tracking; the event will be redelivered", slog.Any("error", err))
		_ = msg.NakWithDelay(retryDelay)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("ack dps.export.sent", slog.Any("error", err))
	}
	switch status {
	case statusAccepted:
		log.Debug("tracking export now")
		t.Wake()
	case "":
		log.Warn("dps.export.sent names an export this database does not hold")
	case statusCreated:
		log.Warn("dps.export.sent arrived for an export not yet accepted in the database; the sender owns it")
	default:
		log.Debug("export already past accepted", slog.String("status", status))
	}
}
