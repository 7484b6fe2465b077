package export

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// enqueueMessages puts dps.export.ready and dps.export.created for res into the outbox, in the export's
// transaction: they are published if and only if the export commits.
func enqueueMessages(ctx context.Context, tx pgx.Tx, res Result, createdAt time.Time) error {
	ready := bus.ExportReady{
		ExportID:   res.ExportID,
		Programme:  res.Programme,
		Filename:   res.Filename,
		ObjectName: res.ExportID,
		SizeBytes:  res.SizeBytes,
		SHA256:     res.SHA256,
		Rows:       int64(res.Rows),
		CreatedAt:  createdAt.UTC(),
		RequestID:  res.RequestID,
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportReady, res.ExportID, ready); err != nil {
		return fmt.Errorf("enqueue ready of export %s: %w", res.ExportID, err)
	}
	created := bus.ExportCreated{
		EventID:   uuid.NewString(),
		ExportID:  res.ExportID,
		Programme: res.Programme,
		Filename:  res.Filename,
		Rows:      int64(res.Rows),
		SizeBytes: res.SizeBytes,
		SHA256:    res.SHA256,
		RequestID: res.RequestID,
		CreatedAt: createdAt.UTC(),
	}
	if err := outbox.Enqueue(ctx, tx, bus.SubjectExportCreated, bus.EventMsgID(bus.EventCreated, res.ExportID), created); err != nil {
		return fmt.Errorf("enqueue created of export %s: %w", res.ExportID, err)
	}
	return nil
}
