package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// maxRefusalLogs bounds the WARN lines for refused records in one file; the count is always reported.
const maxRefusalLogs = 20

// writeFile streams the rows of an export, in file order, through a dps.Writer into w. pgx reads the
// result set from the socket as rows are consumed, so memory holds one row at a time plus buffers.
// Records the writer refuses (their row breaks one of the receiver's row rules) are left out of the file
// and returned with the rule; their refusal is logged by UUID, rule, field and reason only (never
// patient details). Records whose version is no longer the one linked (a writer changed them after they
// were decided) are left out too, and returned by id.
func (e *Exporter) writeFile(ctx context.Context, q pgx.Tx, exportID string, w io.Writer) (fileStats, error) {
	st := fileStats{actions: map[string]int{}}
	dw := dps.NewWriter(w, dps.Options{UniqueIDURI: e.uniqueIDURI})
	err := withLocalSettings(ctx, q, fileSettings, func() error { return e.readRows(ctx, q, exportID, dw, &st) })
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

// readRows streams the export's rows through dw, noting in st what it refused and what changed.
func (e *Exporter) readRows(ctx context.Context, q pgx.Tx, exportID string, dw *dps.Writer, st *fileStats) error {
	rows, err := q.Query(ctx, sqlExportRows, exportID)
	if err != nil {
		return fmt.Errorf("read rows of export %s: %w", exportID, err)
	}
	defer rows.Close()

	var (
		id          int64
		linked, now time.Time
		rec         dps.Record
		gender      int16
		doseSeq     int32
		batchExpiry pgtype.Date
	)
	for rows.Next() {
		if err := rows.Scan(&id, &linked, &now, &rec.NHSNumber, &rec.Forename, &rec.Surname, &rec.DateOfBirth, &gender,
			&rec.Postcode, &rec.PerformedAt, &rec.SiteODSCode, &rec.UUID, &rec.Action,
			&rec.VaccinatorFullName, &rec.CreatedAt,
			&rec.ProcedureCode, &rec.ProcedureTerm, &doseSeq,
			&rec.ProductCode, &rec.ProductTerm, &rec.Manufacturer,
			&rec.BatchName, &batchExpiry,
			&rec.DeliverySite, &rec.DeliveryMethod, &rec.DoseAmount,
			&rec.SchoolURN, &rec.LocationODSCode); err != nil {
			return fmt.Errorf("read rows of export %s: %w", exportID, err)
		}
		if !now.Equal(linked) {
			// Changed since it was decided: the change queued it again, for the next export.
			st.changed = append(st.changed, id)
			continue
		}
		rec.GenderCode, rec.DoseSequence = int(gender), int(doseSeq)
		rec.BatchExpiry = batchExpiry.Time // zero when NULL: written as ""
		if err := dw.Write(rec); err != nil {
			var re *dps.RecordError
			if !errors.As(err, &re) {
				return fmt.Errorf("write file of export %s: %w", exportID, err)
			}
			if len(st.refused) < maxRefusalLogs {
				e.log.Warn("record left out of the DPS file: the receiver would refuse its row; it stays queued",
					slog.String("export_id", exportID), slog.String("record_uuid", re.UUID), slog.String("rule", string(re.Rule)),
					slog.String("field", re.Field), slog.String("reason", re.Reason))
			}
			st.refused = append(st.refused, refusal{recordID: id, action: rec.Action, rule: string(re.Rule), field: re.Field, reason: re.Reason})
			continue
		}
		st.actions[rec.Action]++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read rows of export %s: %w", exportID, err)
	}
	return nil
}
