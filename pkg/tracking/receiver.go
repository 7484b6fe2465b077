package tracking

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
)

// What the receiver's replies and MESH's reports do to an export, past the tracking poll's accepted →
// acknowledged | failed: acknowledged → received (InfAck Success) → processed (BusAck), and failed (a
// report) or rejected (InfAck Failure) from any point before processed. The moves are pkg/lifecycle's;
// the export row is locked FOR UPDATE here first, so each starts from the status read.

// inboxExport is an export an inbox message is about, locked FOR UPDATE.
type inboxExport struct {
	ID, Programme, Filename, MessageID string
	Status                             lifecycle.Status
	Rows                               int
	SentAt                             *time.Time
}

func (e inboxExport) due() dueExport {
	return dueExport{ID: e.ID, Programme: e.Programme, MessageID: e.MessageID, SentAt: e.SentAt}
}

const inboxExportColumns = `e.id::text, p.code, e.status, e.filename, coalesce(e.mesh_message_id, ''), e.row_count, e.sent_at`

func scanInboxExport(row pgx.Row) (inboxExport, error) {
	var e inboxExport
	err := row.Scan(&e.ID, &e.Programme, &e.Status, &e.Filename, &e.MessageID, &e.Rows, &e.SentAt)
	return e, err
}

// awaiting is, per acknowledgement kind, the statuses of an export that still waits for it.
var awaiting = map[string][]lifecycle.Status{
	KindInfAck:        {lifecycle.Accepted, lifecycle.Acknowledged},
	KindBusAck:        {lifecycle.Accepted, lifecycle.Acknowledged, lifecycle.Received},
	KindBusAckSummary: {lifecycle.Processed},
}

// exportByFileName finds and locks the export an acknowledgement names, by the file name stored when
// the export was created, whatever its shape. Two exports may share a name (file names made by date):
// the oldest sent of those still waiting for this kind of reply is the one answered, the receiver
// answering files in the order it took them; when none waits, the newest, for an "already done".
func (t *Tracker) exportByFileName(ctx context.Context, tx pgx.Tx, fileName, kind string) (inboxExport, bool, error) {
	e, err := scanInboxExport(tx.QueryRow(ctx, `
		SELECT `+inboxExportColumns+`
		FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.filename = $1 AND e.sent_at IS NOT NULL
		ORDER BY (e.status = ANY($2)) DESC,
		         CASE WHEN e.status = ANY($2) THEN e.sent_at END ASC,
		         e.sent_at DESC
		LIMIT 1
		FOR UPDATE OF e`, fileName, lifecycle.Names(awaiting[kind])))
	if errors.Is(err, pgx.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("%w: find export of file %s: %w", errPostgres, fileName, err)
	}
	return e, true, nil
}

// exportByID locks an export by id.
func exportByID(ctx context.Context, tx pgx.Tx, id string) (inboxExport, error) {
	e, err := scanInboxExport(tx.QueryRow(ctx, `
		SELECT `+inboxExportColumns+`
		FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.id = $1 FOR UPDATE OF e`, id))
	if err != nil {
		return e, fmt.Errorf("%w: lock export %s: %w", errPostgres, id, err)
	}
	return e, nil
}

// applyReport handles a MESH report: the export whose message it is about (mex-LinkedMsgID, else the
// mex-LocalID attempt) fails with MESH's code and description, and its records are released.
func (t *Tracker) applyReport(ctx context.Context, tx pgx.Tx, msg inboxMessage) (applyResult, error) {
	dl := msg.dl
	res := applyResult{kind: KindReport}
	var exportID, attemptMessageID string
	matchedBy := ""
	if linked := strings.TrimSpace(dl.LinkedMessageID); linked != "" {
		err := tx.QueryRow(ctx, `
			SELECT id::text, coalesce(mesh_message_id, '') FROM (
			    SELECT id, mesh_message_id, 1 AS pref FROM dps_exports WHERE upper(mesh_message_id) = upper($1)
			    UNION ALL
			    SELECT export_id, mesh_message_id, 2 FROM dps_export_attempts WHERE upper(mesh_message_id) = upper($1)
			) m ORDER BY pref LIMIT 1`, linked).Scan(&exportID, &attemptMessageID)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return res, fmt.Errorf("%w: match report %s: %w", errPostgres, msg.id, err)
		}
		matchedBy = "mex-LinkedMsgID " + linked
	}
	if exportID == "" && strings.TrimSpace(dl.LocalID) != "" {
		err := tx.QueryRow(ctx, `
			SELECT id::text, coalesce(mesh_message_id, '') FROM (
			    SELECT id, mesh_message_id, 1 AS pref FROM dps_exports WHERE mesh_local_id = $1
			    UNION ALL
			    SELECT export_id, mesh_message_id, 2 FROM dps_export_attempts WHERE local_id = $1
			) m ORDER BY pref LIMIT 1`, strings.TrimSpace(dl.LocalID)).Scan(&exportID, &attemptMessageID)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return res, fmt.Errorf("%w: match report %s: %w", errPostgres, msg.id, err)
		}
		matchedBy = "mex-LocalID " + dl.LocalID
	}
	if exportID == "" {
		res.held = fmt.Sprintf("MESH report (status %s %s) about a message we never sent (mex-LinkedMsgID %q, mex-LocalID %q)",
			dl.Status.Code, dl.Status.Description, dl.LinkedMessageID, dl.LocalID)
		return res, nil
	}
	e, err := exportByID(ctx, tx, exportID)
	if err != nil {
		return res, err
	}
	res.exportID = e.ID
	res.log = []slog.Attr{slog.String("programme", e.Programme), slog.String("matched_by", matchedBy),
		slog.String("mesh_status_code", dl.Status.Code)}
	if attemptMessageID != "" && e.MessageID != "" && !strings.EqualFold(attemptMessageID, e.MessageID) {
		res.effect = fmt.Sprintf("report about MESH message %s, an earlier attempt of export %s, which was sent again as %s: nothing changed",
			attemptMessageID, e.ID, e.MessageID)
		return res, nil
	}
	reason := reportReason(dl.Status.Code, dl.Status.Description, msg.id)
	switch e.Status {
	case lifecycle.Failed, lifecycle.Rejected:
		res.effect = "export already " + e.Status.String() + ": nothing changed"
		return res, nil
	case lifecycle.Processed:
		// The receiver has answered row by row; a report now contradicts that and is recorded only.
		res.effect = "export already processed by the receiver: nothing changed"
		t.log.Warn("MESH report about an export the receiver has processed; nothing changed",
			slog.String("export_id", e.ID), slog.String("mesh_message_id", msg.id), slog.String("reason", reason))
		return res, nil
	}
	changed, _, err := lifecycle.MarkFailed(ctx, tx, lifecycle.Failure{
		ExportID: e.ID, Programme: e.Programme, From: e.Status, Stage: StageTracker,
		Reason: truncateText(reason, 4096), Code: dl.Status.Code, MeshErrorCode: truncateText(dl.Status.Code, 64),
	})
	if err != nil {
		return res, fmt.Errorf("%w: %w", errPostgres, err)
	}
	if !changed {
		res.effect = "export no longer " + e.Status.String() + ": nothing changed"
		return res, nil
	}
	if _, err := tx.Exec(ctx, `UPDATE dps_exports SET report_message_id = $2 WHERE id = $1`, e.ID, msg.id); err != nil {
		return res, fmt.Errorf("%w: note report of export %s: %w", errPostgres, e.ID, err)
	}
	res.transition = lifecycle.Failed
	res.effect = "export failed: " + reason
	return res, nil
}

func reportReason(code, description, reportID string) string {
	s := "MESH non-delivery report " + reportID
	if code != "" || description != "" {
		s += ":"
		if code != "" {
			s += " " + code
		}
		if description != "" {
			s += " " + description
		}
	} else {
		s += " (no status code given)"
	}
	return s
}

// applyInfAck handles the receiver's file-level acknowledgement.
func (t *Tracker) applyInfAck(ctx context.Context, tx pgx.Tx, msg inboxMessage, e inboxExport, body io.Reader) (applyResult, error) {
	res := applyResult{kind: KindInfAck, exportID: e.ID, log: []slog.Attr{slog.String("programme", e.Programme)}}
	ack, err := dps.ParseInfAck(body)
	if err != nil {
		var ae *dps.AckError
		if errors.As(err, &ae) {
			res.held = fmt.Sprintf("InfAck %s for export %s is unreadable: %v", msg.dl.FileName, e.ID, err)
			return res, drainFor(body)
		}
		return res, fmt.Errorf("download InfAck %s: %w", msg.id, err)
	}
	display := logging.ScrubString(ack.ResponseDisplay)
	res.log = append(res.log, slog.Bool("success", ack.Success), slog.String("receiver_code", ack.ResponseCode))
	switch e.Status {
	case lifecycle.Accepted, lifecycle.Acknowledged:
	case lifecycle.Failed, lifecycle.Rejected, lifecycle.Received, lifecycle.Processed:
		if !ack.Success && (e.Status == lifecycle.Received || e.Status == lifecycle.Processed) {
			res.held = fmt.Sprintf("InfAck Failure (%s %s) for export %s, which is already %s: contradictory, for a person to look at",
				ack.ResponseCode, display, e.ID, e.Status)
			return res, nil
		}
		res.effect = "export already " + e.Status.String() + ": nothing changed"
		return res, nil
	default:
		res.held = fmt.Sprintf("InfAck for export %s, which is %s (not sent yet)", e.ID, e.Status)
		return res, nil
	}
	if err := t.passAcknowledged(ctx, tx, &e); err != nil {
		return res, err
	}
	if !ack.Success {
		reason := fmt.Sprintf("the receiver rejected the file (InfAck %s %s)", ack.ResponseCode, display)
		changed, _, err := lifecycle.MarkRejected(ctx, tx, lifecycle.Rejection{
			ExportID: e.ID, Programme: e.Programme, From: e.Status, Reason: truncateText(reason, 4096),
			ResponseCode: truncateText(ack.ResponseCode, 64), ResponseDisplay: truncateText(display, 1024), InfAckMessageID: msg.id,
		})
		if err != nil {
			return res, fmt.Errorf("%w: %w", errPostgres, err)
		}
		if changed {
			res.transition, res.effect = lifecycle.Rejected, "export rejected: "+reason
		}
		return res, nil
	}
	changed, _, err := lifecycle.MarkReceived(ctx, tx, lifecycle.Receipt{
		ExportID: e.ID, Programme: e.Programme, Filename: e.Filename,
		ResponseCode: truncateText(ack.ResponseCode, 64), ResponseDisplay: truncateText(display, 1024), InfAckMessageID: msg.id,
	})
	if err != nil {
		return res, fmt.Errorf("%w: %w", errPostgres, err)
	}
	if !changed {
		res.effect = "export no longer acknowledged: nothing changed"
		return res, nil
	}
	res.transition, res.effect = lifecycle.Received, "export received: InfAck "+ack.ResponseCode
	return res, nil
}

// passAcknowledged moves an export still accepted to acknowledged first: a reply from the receiver
// proves it downloaded the file, whether or not the tracking poll has seen it yet, and the
// acknowledged event is then published as for any other export.
func (t *Tracker) passAcknowledged(ctx context.Context, tx pgx.Tx, e *inboxExport) error {
	if e.Status != lifecycle.Accepted {
		return nil
	}
	changed, _, err := t.markAcknowledged(ctx, tx, e.due())
	if err != nil {
		return fmt.Errorf("%w: %w", errPostgres, err)
	}
	if changed {
		t.m.Transitions.WithLabelValues(lifecycle.Acknowledged.String()).Inc()
	}
	e.Status = lifecycle.Acknowledged
	return nil
}

// truncateText cuts s to at most n bytes on a rune boundary.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}

// refusal is one refused row as recorded.
type refusal struct {
	line                 int
	uuid, code, diagnose string
}

// maxStoredDiagnostic bounds the diagnostic kept per record.
const maxStoredDiagnostic = 2000

// applyBusAck handles the receiver's row-level acknowledgement: every row must name a record the export
// carried (by LOCAL_ID's UNIQUE_ID); refused rows record their diagnostic, every other record of the
// export is accepted, and the export becomes processed with its counts.
func (t *Tracker) applyBusAck(ctx context.Context, tx pgx.Tx, msg inboxMessage, e inboxExport, body io.Reader) (applyResult, error) {
	res := applyResult{kind: KindBusAck, exportID: e.ID, log: []slog.Attr{slog.String("programme", e.Programme)}}
	switch e.Status {
	case lifecycle.Accepted, lifecycle.Acknowledged:
		if time.Since(msg.firstSeen) < t.cfg.BusAckWait {
			// Its InfAck is usually in the same inbox, just behind or being applied by another replica.
			res.deferred = true
			return res, nil
		}
	case lifecycle.Received:
	case lifecycle.Processed, lifecycle.Failed, lifecycle.Rejected:
		res.effect = "export already " + e.Status.String() + ": nothing changed"
		return res, drainFor(body)
	default:
		res.held = fmt.Sprintf("BusAck for export %s, which is %s (not sent yet)", e.ID, e.Status)
		return res, drainFor(body)
	}

	var rows []dps.BusAckRow
	n, err := dps.ReadBusAck(body, func(r dps.BusAckRow) error {
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		var ae *dps.AckError
		if errors.As(err, &ae) {
			res.held = fmt.Sprintf("BusAck %s for export %s is unreadable: %v", msg.dl.FileName, e.ID, err)
			return res, drainFor(body)
		}
		return res, fmt.Errorf("download BusAck %s: %w", msg.id, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE dps_busack_rows (line int, unique_id text, refused bool, code text, diagnostic text) ON COMMIT DROP`); err != nil {
		return res, fmt.Errorf("%w: busack rows: %w", errPostgres, err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"dps_busack_rows"}, []string{"line", "unique_id", "refused", "code", "diagnostic"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := rows[i]
			return []any{r.Line, strings.ToLower(strings.TrimSpace(r.UniqueID)), r.Refused, r.ResponseCode,
				truncateText(logging.ScrubString(r.Diagnostic), maxStoredDiagnostic)}, nil
		})); err != nil {
		return res, fmt.Errorf("%w: busack rows: %w", errPostgres, err)
	}
	// Every row must answer a record the export carried, once.
	var badLine int
	var badID, badWhy string
	err = tx.QueryRow(ctx, `
		SELECT b.line, b.unique_id,
		       CASE WHEN er.vaccination_record_id IS NULL THEN 'not carried by the export' ELSE 'answered twice' END
		FROM dps_busack_rows b
		LEFT JOIN vaccination_records r ON r.uuid::text = b.unique_id
		LEFT JOIN dps_export_records er ON er.export_id = $1 AND er.vaccination_record_id = r.id
		WHERE er.vaccination_record_id IS NULL
		   OR (SELECT count(*) FROM dps_busack_rows b2 WHERE b2.unique_id = b.unique_id) > 1
		ORDER BY b.line LIMIT 1`, e.ID).Scan(&badLine, &badID, &badWhy)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return res, fmt.Errorf("%w: match busack rows: %w", errPostgres, err)
	default:
		res.held = fmt.Sprintf("BusAck %s line %d: LOCAL_ID names record %s, %s %s", msg.dl.FileName, badLine, badID, badWhy, e.ID)
		return res, nil
	}

	var refusedRows int
	err = tx.QueryRow(ctx, `
		WITH answered AS (
		    UPDATE dps_export_records er
		    SET outcome = CASE WHEN b.refused THEN 'refused' ELSE 'accepted' END,
		        response_code = nullif(b.code, ''), diagnostic = CASE WHEN b.refused THEN nullif(b.diagnostic, '') END,
		        outcome_at = now()
		    FROM dps_busack_rows b JOIN vaccination_records r ON r.uuid::text = b.unique_id
		    WHERE er.export_id = $1 AND er.vaccination_record_id = r.id
		    RETURNING er.outcome
		)
		SELECT count(*) FILTER (WHERE outcome = 'refused') FROM answered`, e.ID).Scan(&refusedRows)
	if err != nil {
		return res, fmt.Errorf("%w: record busack rows: %w", errPostgres, err)
	}
	// A record with no row was taken: the receiver writes rows for what it could not take.
	if _, err := tx.Exec(ctx, `
		UPDATE dps_export_records SET outcome = 'accepted', outcome_at = now()
		WHERE export_id = $1 AND outcome IS NULL`, e.ID); err != nil {
		return res, fmt.Errorf("%w: record accepted rows: %w", errPostgres, err)
	}
	var sent int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM dps_export_records WHERE export_id = $1`, e.ID).Scan(&sent); err != nil {
		return res, fmt.Errorf("%w: count rows: %w", errPostgres, err)
	}
	accepted := sent - refusedRows

	refusedQuery, err := tx.Query(ctx, `
		SELECT b.line, b.unique_id, coalesce(b.code, ''), coalesce(b.diagnostic, '')
		FROM dps_busack_rows b WHERE b.refused ORDER BY b.line`)
	if err != nil {
		return res, fmt.Errorf("%w: read refused rows: %w", errPostgres, err)
	}
	refused, err := pgx.CollectRows(refusedQuery, func(row pgx.CollectableRow) (refusal, error) {
		var r refusal
		err := row.Scan(&r.line, &r.uuid, &r.code, &r.diagnose)
		return r, err
	})
	if err != nil {
		return res, fmt.Errorf("%w: read refused rows: %w", errPostgres, err)
	}
	p := lifecycle.Processing{
		ExportID: e.ID, Programme: e.Programme, Filename: e.Filename, From: e.Status, BusAckMessageID: msg.id,
		RowsSent: sent, RowsAccepted: accepted, RowsRefused: refusedRows,
	}
	for i, r := range refused {
		if i == bus.MaxRefusedListed {
			p.RefusedTruncated = true
			break
		}
		p.Refused = append(p.Refused, bus.RefusedRecord{RecordUUID: r.uuid, ResponseCode: truncateText(r.code, 64),
			Diagnostic: truncateText(r.diagnose, bus.MaxDiagnosticLength)})
	}
	changed, _, err := lifecycle.MarkProcessed(ctx, tx, p)
	if err != nil {
		return res, fmt.Errorf("%w: %w", errPostgres, err)
	}
	if !changed {
		// Cannot happen with the row locked; the outcomes written above roll back with the caller's transaction.
		return res, fmt.Errorf("%w: export %s was not %s when its BusAck was applied", errPostgres, e.ID, e.Status)
	}
	res.transition = lifecycle.Processed
	res.refused = refused
	res.effect = fmt.Sprintf("export processed: %d rows sent, %d accepted, %d refused (%d BusAck rows)", sent, accepted, refusedRows, n)
	res.log = append(res.log, slog.Int("rows_sent", sent), slog.Int("rows_accepted", accepted), slog.Int("rows_refused", refusedRows))
	return res, nil
}

// applyBusAckSummary records the BusAck's JSON summary; the CSV is what moves the export. A summary
// whose counts differ from what the CSV gave is logged.
func (t *Tracker) applyBusAckSummary(msg inboxMessage, e inboxExport, body io.Reader) (applyResult, error) {
	res := applyResult{kind: KindBusAckSummary, exportID: e.ID}
	sum, err := dps.ParseBusAckSummary(body)
	if err != nil {
		var ae *dps.AckError
		if errors.As(err, &ae) {
			res.held = fmt.Sprintf("BusAck summary %s for export %s is unreadable: %v", msg.dl.FileName, e.ID, err)
			return res, drainFor(body)
		}
		return res, fmt.Errorf("download BusAck summary %s: %w", msg.id, err)
	}
	res.effect = fmt.Sprintf("BusAck summary: %d records, %d succeeded, %d failed (the CSV BusAck is what is recorded)",
		sum.Summary.TotalRecords, sum.Summary.Succeeded, sum.Summary.Failed)
	return res, drainFor(body)
}
