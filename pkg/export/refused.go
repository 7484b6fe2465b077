package export

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Refused records: a record whose row the receiver would refuse is left out of the file as the file is
// built (dps.Writer applies the row rules to every row), taken back out of the export and queued again,
// and kept in dps_refused_records with the rule it broke. Each export tries it again; once its data is
// put right it goes out, and the export that carries it forgets the refusal. This is kept apart from
// candidate selection on purpose: the selection decides what should go, the row rules decide what can.

// refusal is one record the row rules refused while a file was built.
type refusal struct {
	recordID int64
	action   string
	rule     string
	field    string
	reason   string
}

func refusedByRule(refused []refusal) map[string]int {
	if len(refused) == 0 {
		return nil
	}
	m := map[string]int{}
	for _, r := range refused {
		m[r.rule]++
	}
	return m
}

// keepRefused takes the refused records back out of the export, queues them again and records why.
func keepRefused(ctx context.Context, tx pgx.Tx, exportID uuid.UUID, programmeID int64, refused []refusal) error {
	if len(refused) == 0 {
		return nil
	}
	ids := make([]int64, len(refused))
	for i, r := range refused {
		ids[i] = r.recordID
	}
	if _, err := tx.Exec(ctx, sqlUnlinkRefused, exportID, ids); err != nil {
		return fmt.Errorf("unlink refused records: %w", err)
	}
	actions, rules, fields, reasons := make([]string, len(refused)), make([]string, len(refused)),
		make([]string, len(refused)), make([]string, len(refused))
	for i, r := range refused {
		actions[i], rules[i], fields[i], reasons[i] = r.action, r.rule, r.field, r.reason
	}
	if _, err := tx.Exec(ctx, sqlKeepRefused, programmeID, ids, actions, rules, fields, reasons); err != nil {
		return fmt.Errorf("record refusals: %w", err)
	}
	return nil
}

// sqlKeepRefused records this run's refusals: a record refused again keeps its first time and counts.
const sqlKeepRefused = `
INSERT INTO dps_refused_records AS r (vaccination_record_id, programme_id, action, rule, field, reason)
SELECT u.id, $1, u.action, u.rule, u.field, u.reason
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u (id, action, rule, field, reason)
ON CONFLICT (vaccination_record_id) DO UPDATE
    SET programme_id = EXCLUDED.programme_id, action = EXCLUDED.action, rule = EXCLUDED.rule,
        field = EXCLUDED.field, reason = EXCLUDED.reason, last_refused_at = now(),
        times_refused = r.times_refused + 1`

// sqlForgetRefused drops the refusals of a programme's records that are no longer queued: they went out
// in this export, or no longer need sending. A refused record is queued again in the same run, so its
// refusal stays.
const sqlForgetRefused = `
DELETE FROM dps_refused_records r
WHERE r.programme_id = $1
  AND NOT EXISTS (SELECT 1 FROM dps_pending_records p WHERE p.vaccination_record_id = r.vaccination_record_id)`

// RefusedRecord is one record waiting because the receiver would refuse its row. It names the record by
// UUID only: never patient details.
type RefusedRecord struct {
	RecordUUID     string    `json:"record_uuid"`
	Programme      string    `json:"programme"`
	Action         string    `json:"action"`
	Rule           string    `json:"rule"`
	Field          string    `json:"field"`
	Reason         string    `json:"reason"`
	FirstRefusedAt time.Time `json:"first_refused_at"`
	LastRefusedAt  time.Time `json:"last_refused_at"`
	TimesRefused   int       `json:"times_refused"`
}

// ListRefused returns the records waiting because of a refusal, of one programme or of all (""), oldest
// refusal first.
func ListRefused(ctx context.Context, pool *pgxpool.Pool, programme string) ([]RefusedRecord, error) {
	rows, err := pool.Query(ctx, `
		SELECT v.uuid::text, p.code, r.action, r.rule, r.field, r.reason, r.first_refused_at, r.last_refused_at, r.times_refused
		FROM dps_refused_records r
		JOIN vaccination_records v ON v.id = r.vaccination_record_id
		JOIN programmes p ON p.id = r.programme_id
		WHERE $1 = '' OR p.code = $1
		ORDER BY r.first_refused_at, v.uuid`, programme)
	if err != nil {
		return nil, fmt.Errorf("list refused records: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RefusedRecord, error) {
		var r RefusedRecord
		err := row.Scan(&r.RecordUUID, &r.Programme, &r.Action, &r.Rule, &r.Field, &r.Reason,
			&r.FirstRefusedAt, &r.LastRefusedAt, &r.TimesRefused)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("list refused records: %w", err)
	}
	return out, nil
}
