package export

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Release makes the records of a failed export candidates again, in the caller's transaction: the one
// that marks the export failed (status = 'failed') must call it after that update, so that the two
// commit together. A record is then decided afresh by the next export against its last carriage in an
// export that has not failed: one that never went out live goes as new, one whose update failed goes as
// an update, and so on.
//
// It needs no programme lock: an export running at the same moment either misses the re-queued
// candidates (they are newer than its snapshot) or finds their queue_seq changed and leaves them queued,
// so they are taken by the next run.
//
// It refuses an export that is not failed: releasing a live export's records would let a second export
// carry what the first still carries.
func Release(ctx context.Context, tx pgx.Tx, exportID string) error {
	var status string
	err := tx.QueryRow(ctx, sqlExportStatus, exportID).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("release export %s: no such export", exportID)
	}
	if err != nil {
		return fmt.Errorf("release export %s: %w", exportID, err)
	}
	if status != "failed" {
		return fmt.Errorf("release export %s: status is %s; mark it failed first, in the same transaction", exportID, status)
	}
	if _, err := tx.Exec(ctx, sqlReleaseExport, exportID); err != nil {
		return fmt.Errorf("release export %s: %w", exportID, err)
	}
	return nil
}
