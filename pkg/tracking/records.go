package tracking

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// Delivery is one carriage of one record: the export that carried it, what MESH and the receiver did
// with it. Records are named by UUID only: nothing here identifies a patient.
type Delivery struct {
	RecordUUID   string     `json:"record_uuid"`
	Programme    string     `json:"programme"`
	Action       string     `json:"action"` // new, update, delete
	ExportID     string     `json:"export_id"`
	ExportStatus string     `json:"export_status"`
	FileName     string     `json:"file_name"`
	MESHMessage  string     `json:"mesh_message_id,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	SentAt       *time.Time `json:"sent_at,omitempty"`
	DownloadedAt *time.Time `json:"downloaded_at,omitempty"`
	ReceivedAt   *time.Time `json:"received_at,omitempty"`
	ProcessedAt  *time.Time `json:"processed_at,omitempty"`
	// Outcome is the receiver's word on this record: accepted or refused (its BusAck); or, before one,
	// "awaiting", "export failed" or "file rejected".
	Outcome      string     `json:"outcome"`
	ResponseCode string     `json:"response_code,omitempty"`
	Diagnostic   string     `json:"diagnostic,omitempty"`
	OutcomeAt    *time.Time `json:"outcome_at,omitempty"`
	// Failure is why the export failed or was rejected, when it did.
	Failure string `json:"failure,omitempty"`
	// ChangedSince is true when the record has changed since this version went out: a refused record
	// that has changed goes in the next export.
	ChangedSince bool `json:"changed_since"`
	// Superseded is true when a later export that has not failed carries the record again.
	Superseded bool `json:"superseded"`
}

// Receiver outcomes of a Delivery that has no BusAck row.
const (
	OutcomeAccepted     = "accepted"
	OutcomeRefused      = "refused"
	OutcomeAwaiting     = "awaiting"
	OutcomeExportFailed = "export failed"
	OutcomeFileRejected = "file rejected"
)

// RecordFilter selects deliveries for Deliveries: exactly one of ExportID, RecordUUID or Refused.
type RecordFilter struct {
	ExportID   string
	RecordUUID string
	// Refused selects every record whose latest delivery the receiver refused and that no later live
	// export carries: what waits for a person to correct it. Since and Programme narrow it.
	Refused   bool
	Since     time.Time
	Programme string
	// Limit caps the rows (0: no limit).
	Limit int
}

// ErrBadFilter is returned (wrapped) for a filter that does not select exactly one way.
var ErrBadFilter = errors.New("bad record filter")

// Check says what is wrong with f, if anything: exactly one way of selecting, UUIDs that are UUIDs,
// since and programme only with refused.
func (f RecordFilter) Check() error {
	ways := 0
	for _, set := range []bool{f.ExportID != "", f.RecordUUID != "", f.Refused} {
		if set {
			ways++
		}
	}
	if ways != 1 {
		return fmt.Errorf("%w: give exactly one of --export ID, --record UUID or --refused", ErrBadFilter)
	}
	if (!f.Since.IsZero() || f.Programme != "") && !f.Refused {
		return fmt.Errorf("%w: --since and --programme narrow --refused only", ErrBadFilter)
	}
	if _, err := uuid.Parse(f.ExportID); f.ExportID != "" && err != nil {
		return fmt.Errorf("%w: export id %q is not a UUID", ErrBadFilter, f.ExportID)
	}
	if _, err := uuid.Parse(f.RecordUUID); f.RecordUUID != "" && err != nil {
		return fmt.Errorf("%w: record %q is not a UUID", ErrBadFilter, f.RecordUUID)
	}
	return nil
}

var deliveryColumns = `
SELECT r.uuid::text, p.code, er.action, e.id::text, e.status, e.filename, coalesce(e.mesh_message_id, ''),
       e.created_at, e.sent_at, e.acknowledged_at, e.received_at, e.processed_at,
       coalesce(er.outcome, CASE e.status WHEN ` + lifecycle.Failed.SQL() + ` THEN 'export failed' WHEN ` + lifecycle.Rejected.SQL() + ` THEN 'file rejected' ELSE 'awaiting' END),
       coalesce(er.response_code, ''), coalesce(er.diagnostic, ''), er.outcome_at,
       CASE WHEN NOT (` + lifecycle.LiveCondition("e") + `) THEN coalesce(e.last_error, '') ELSE '' END,
       r.updated_at > er.record_updated_at,
       EXISTS (SELECT 1 FROM dps_export_records later JOIN dps_exports le ON le.id = later.export_id
               WHERE later.vaccination_record_id = er.vaccination_record_id AND le.created_at > e.created_at
                 AND ` + lifecycle.LiveCondition("le") + `)
FROM dps_export_records er
JOIN dps_exports e ON e.id = er.export_id
JOIN programmes p ON p.id = e.programme_id
JOIN vaccination_records r ON r.id = er.vaccination_record_id`

// Deliveries returns the deliveries f selects: for an export, each of its records (file order is not
// kept: by record UUID); for a record, each export that carried it, oldest first; for refused, each
// waiting record, most recently refused first.
func Deliveries(ctx context.Context, pool *pgxpool.Pool, f RecordFilter) ([]Delivery, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	var sql string
	var args []any
	switch {
	case f.ExportID != "":
		sql, args = deliveryColumns+` WHERE er.export_id = $1 ORDER BY r.uuid`, []any{f.ExportID}
	case f.RecordUUID != "":
		sql, args = deliveryColumns+` WHERE r.uuid = $1 ORDER BY e.created_at`, []any{f.RecordUUID}
	default:
		sql = deliveryColumns + `
WHERE er.outcome = 'refused'
  AND ($1::timestamptz IS NULL OR er.outcome_at >= $1)
  AND ($2 = '' OR p.code = $2)
  AND NOT EXISTS (SELECT 1 FROM dps_export_records later JOIN dps_exports le ON le.id = later.export_id
                  WHERE later.vaccination_record_id = er.vaccination_record_id AND le.created_at > e.created_at
                    AND ` + lifecycle.LiveCondition("le") + `)
ORDER BY er.outcome_at DESC, r.uuid`
		var since *time.Time
		if !f.Since.IsZero() {
			since = &f.Since
		}
		args = []any{since, strings.ToUpper(strings.TrimSpace(f.Programme))}
	}
	if f.Limit > 0 {
		sql += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Delivery, error) {
		var d Delivery
		err := row.Scan(&d.RecordUUID, &d.Programme, &d.Action, &d.ExportID, &d.ExportStatus, &d.FileName, &d.MESHMessage,
			&d.CreatedAt, &d.SentAt, &d.DownloadedAt, &d.ReceivedAt, &d.ProcessedAt, &d.Outcome, &d.ResponseCode,
			&d.Diagnostic, &d.OutcomeAt, &d.Failure, &d.ChangedSince, &d.Superseded)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	return out, nil
}
