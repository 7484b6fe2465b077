package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// retentionBatch bounds one sweep's deletions, so that a backlog is worked off over a few sweeps
// rather than in one long query.
const retentionBatch = 500

// SweepRetained deletes the files (patient data) that are no longer needed and records that they are
// gone: those of exports acknowledged more than retention (DPS_OBJECT_RETENTION, 7 days by default:
// long enough to look into a query about a file, far short of the bucket's 90-day backstop) before now,
// and those of failed exports, which are never sent again (their records go in a later export with its
// own file). It returns how many it deleted.
// Safe to run from several producers at once: a file already deleted counts as deleted.
func SweepRetained(ctx context.Context, pool *pgxpool.Pool, objects jetstream.ObjectStore, retention time.Duration, now time.Time, log *slog.Logger) (int, error) {
	rows, err := pool.Query(ctx, `
		SELECT id::text, object_name FROM dps_exports
		WHERE object_deleted_at IS NULL AND object_name IS NOT NULL
		  AND ((acknowledged_at IS NOT NULL AND acknowledged_at < $1) OR status = $2)
		ORDER BY created_at LIMIT $3`, now.Add(-retention), lifecycle.Failed, retentionBatch)
	if err != nil {
		return 0, fmt.Errorf("sweep retained files: %w", err)
	}
	type due struct{ id, object string }
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (due, error) {
		var d due
		err := row.Scan(&d.id, &d.object)
		return d, err
	})
	if err != nil {
		return 0, fmt.Errorf("sweep retained files: %w", err)
	}
	deleted := 0
	var held map[string]bool // what the bucket lists, read at the first "not found"
	for _, d := range list {
		err := objects.Delete(ctx, d.object)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Delete reads the object's info with a direct get, which any replica may answer, and one
			// that has not caught up answers "not found" for a file that exists (seen in
			// bus.TestPutSurvivesLeaderLoss). Recorded as deleted, the file would stay until the
			// bucket's TTL; so the listing, which the stream's leader serves, has the last word, and a
			// file still listed is deleted at a later sweep.
			if held == nil {
				infos, err := listObjects(ctx, objects)
				if err != nil {
					return deleted, fmt.Errorf("sweep retained files: check %s is gone: %w", d.object, err)
				}
				held = map[string]bool{}
				for _, info := range infos {
					held[info.Name] = true
				}
			}
			if held[d.object] {
				log.Warn("the Object Store said an export file was not there, but still lists it; deleting it at a later sweep",
					slog.String("export_id", d.id), slog.String("object", d.object))
				continue
			}
			err = nil
		}
		if err != nil {
			return deleted, fmt.Errorf("sweep retained files: delete %s: %w", d.object, err)
		}
		if _, err := pool.Exec(ctx, `UPDATE dps_exports SET object_deleted_at = now() WHERE id = $1`, d.id); err != nil {
			return deleted, fmt.Errorf("sweep retained files: record %s deleted: %w", d.id, err)
		}
		deleted++
		log.Info("deleted an export file no longer needed", slog.String("export_id", d.id), slog.String("object", d.object))
	}
	return deleted, nil
}
