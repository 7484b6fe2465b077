package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// maxRefusalLogs bounds the WARN lines for refused records in one file; the count is always reported.
const maxRefusalLogs = 20

// writeFile streams the rows of an export, in file order, through a dps.Writer into w. pgx reads the
// result set from the socket as rows are consumed, so memory holds a few batches of rows plus buffers.
// Records the writer refuses (their row breaks one of the receiver's row rules) are left out of the file
// and returned with the rule; their refusal is logged by UUID, rule, field and reason only (never
// patient details). Records whose version is no longer the one linked (a writer changed them after they
// were decided) are left out too, and returned by id. linked, how many records the run linked, chooses
// the statement that reads them (fileRowsQuery).
func (e *Exporter) writeFile(ctx context.Context, q pgx.Tx, exportID string, linked int, w io.Writer) (fileStats, error) {
	st := fileStats{actions: map[string]int{}}
	dw := dps.NewWriter(w, dps.Options{UniqueIDURI: e.uniqueIDURI})
	ref, err := readReference(ctx, q)
	if err != nil {
		return st, err
	}
	err = withLocalSettings(ctx, q, fileSettings, func() error { return e.readRows(ctx, q, exportID, linked, ref, dw, &st) })
	if err != nil {
		return st, err
	}
	if err := dw.Close(); err != nil {
		return st, fmt.Errorf("write file of export %s: %w", exportID, err)
	}
	st.rows = dw.Rows()
	if n := len(st.refused); n > 0 {
		e.log.Warn("records left out of the DPS file; `producer refused` lists them", slog.String("export_id", exportID), slog.Int("refused", n))
	}
	return st, nil
}

// readRows streams the export's rows through dw, completing them from ref, noting in st what it refused
// and what changed. Two goroutines share the work: one reads rows from Postgres and completes them, the
// other formats, checks and writes them, so that decoding the next rows and formatting these run side
// by side (formatting alone is about half of the command's CPU). Rows go between them in batches, in
// file order; memory holds a few batches.
func (e *Exporter) readRows(ctx context.Context, q pgx.Tx, exportID string, linked int, ref *reference, dw *dps.Writer, st *fileStats) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	full, empty := make(chan []fileRow, rowBatches), make(chan []fileRow, rowBatches)
	for range rowBatches {
		empty <- make([]fileRow, 0, rowBatchSize)
	}
	scanned := make(chan error, 1)
	go func() {
		defer close(full)
		scanned <- scanRows(ctx, q, fileRowsQuery(linked), exportID, ref, empty, full)
	}()
	var werr error
	for batch := range full {
		if werr == nil {
			if werr = e.writeRows(exportID, batch, dw, st); werr != nil {
				cancel() // the reader stops at its next batch
			}
		}
		empty <- batch[:0]
	}
	if err := <-scanned; werr == nil && err != nil {
		return err
	}
	return werr
}

// rowBatches batches of rowBatchSize rows are in flight between the reader and the writer.
const (
	rowBatches   = 3
	rowBatchSize = 512
)

// fileRow is one row read for the file: a record to write, or the id of one that changed since it was
// linked.
type fileRow struct {
	id      int64
	changed bool
	rec     dps.Record
}

// scanRows reads the rows of query (a file's statement: see fileRowsQuery) into batches taken from empty and sent on full, in order.
func scanRows(ctx context.Context, q pgx.Tx, query, exportID string, ref *reference, empty <-chan []fileRow, full chan<- []fileRow) error {
	rows, err := q.Query(ctx, query, exportID)
	if err != nil {
		return fmt.Errorf("read rows of export %s: %w", exportID, err)
	}
	defer rows.Close()
	take := func() ([]fileRow, error) {
		select {
		case b := <-empty:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	send := func(b []fileRow) error {
		select {
		case full <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	batch, err := take()
	if err != nil {
		return err
	}
	var (
		linked, now time.Time
		gender      int16
		doseSeq     int32
		r           refs
	)
	for rows.Next() {
		batch = append(batch, fileRow{})
		row := &batch[len(batch)-1]
		rec := &row.rec
		if err := rows.Scan(&row.id, &linked, &now, &rec.NHSNumber, &rec.Forename, &rec.Surname, &rec.DateOfBirth, &gender,
			&rec.Postcode, &rec.PerformedAt, &rec.UUID, &rec.Action, &rec.CreatedAt,
			&doseSeq, &rec.DeliverySite, &rec.DeliveryMethod, &r.doseVolume,
			&r.team, &r.location, &r.vaccine, &r.batch, &r.vaccinator); err != nil {
			return fmt.Errorf("read rows of export %s: %w", exportID, err)
		}
		// Changed since it was decided: the change queued it again, for the next export.
		row.changed = !now.Equal(linked)
		rec.GenderCode, rec.DoseSequence = int(gender), int(doseSeq)
		if !row.changed {
			if err := ref.complete(rec, r); err != nil {
				return fmt.Errorf("read rows of export %s: %w", exportID, err)
			}
		}
		if len(batch) == cap(batch) {
			if err := send(batch); err != nil {
				return err
			}
			if batch, err = take(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rows of export %s: %w", exportID, err)
	}
	if len(batch) > 0 {
		return send(batch)
	}
	return nil
}

// writeRows writes a batch through dw, noting in st what it refused and what changed.
func (e *Exporter) writeRows(exportID string, batch []fileRow, dw *dps.Writer, st *fileStats) error {
	for i := range batch {
		row := &batch[i]
		if row.changed {
			st.changed = append(st.changed, row.id)
			continue
		}
		if err := dw.Write(row.rec); err != nil {
			var re *dps.RecordError
			if !errors.As(err, &re) {
				return fmt.Errorf("write file of export %s: %w", exportID, err)
			}
			if len(st.refused) < maxRefusalLogs {
				e.log.Warn("record left out of the DPS file: the receiver would refuse its row; it stays queued",
					slog.String("export_id", exportID), slog.String("record_uuid", re.UUID), slog.String("rule", string(re.Rule)),
					slog.String("field", re.Field), slog.String("reason", re.Reason))
			}
			st.refused = append(st.refused, refusal{recordID: row.id, action: row.rec.Action, rule: string(re.Rule), field: re.Field, reason: re.Reason})
			continue
		}
		st.actions[row.rec.Action]++
	}
	return nil
}
