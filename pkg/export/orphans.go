package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// OrphanAge is how old an object with no export row must be before SweepOrphans deletes it. An export's
// transaction commits seconds after its upload ends, so an hour-old object without a row belongs to a
// transaction that rolled back or a process that died.
const OrphanAge = time.Hour

// SweepOrphans deletes the objects in the bucket that no export row names and that were stored more
// than olderThan before now: the files of export transactions that rolled back after the upload. It
// returns how many it deleted. Safe to run from several producers at once.
func SweepOrphans(ctx context.Context, pool *pgxpool.Pool, objects jetstream.ObjectStore, olderThan time.Duration, now time.Time, log *slog.Logger) (int, error) {
	infos, err := listObjects(ctx, objects)
	if err != nil {
		return 0, fmt.Errorf("sweep orphans: list objects: %w", err)
	}
	var old []string
	for _, info := range infos {
		if !info.Deleted && info.ModTime.Before(now.Add(-olderThan)) {
			old = append(old, info.Name)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	rows, err := pool.Query(ctx, sqlExportIDsByName, old)
	if err != nil {
		return 0, fmt.Errorf("sweep orphans: %w", err)
	}
	known := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sweep orphans: %w", err)
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sweep orphans: %w", err)
	}
	deleted := 0
	for _, name := range old {
		if known[name] {
			continue
		}
		if err := objects.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return deleted, fmt.Errorf("sweep orphans: delete %s: %w", name, err)
		}
		deleted++
		log.Info("deleted orphan export file", slog.String("object", name))
	}
	return deleted, nil
}

// listObjects lists the bucket's objects (deleted ones left out); an empty bucket is an empty list, not
// jetstream.ErrNoObjectsFound. The listing is read by an ordered consumer, which the stream's leader
// serves, so it is current even when a replica is not.
func listObjects(ctx context.Context, objects jetstream.ObjectStore) ([]*jetstream.ObjectInfo, error) {
	infos, err := objects.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	return infos, err
}
