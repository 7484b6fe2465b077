package export

import "github.com/nhs-dps/dps-pipeline/pkg/lifecycle"

// The SQL of an export, in the order a run uses it. Every statement that changes export state runs inside
// the programme's transaction, after pg_advisory_xact_lock.

// lockClass is the first key of the two-key advisory lock; the second is the programme id. The two-key
// form keeps our locks apart from single-key ones (tern's migration lock, demodata's writer lock).
const lockClass = 0x445053 // "DPS"

const sqlLockProgramme = `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`

// sqlNow is read after the lock is held, from the database's clock, so that an export created later under
// the lock always has a later created_at than the one before it, whichever host runs the producer.
const sqlNow = `SELECT clock_timestamp()`

const sqlProgrammes = `SELECT id, code FROM programmes ORDER BY code`

const sqlProgrammeByCode = `SELECT id, code FROM programmes WHERE code = $1`

const sqlInsertRequest = `
INSERT INTO dps_export_requests (request_id, programme, requested_by, requested_at, dry_run)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (request_id) DO NOTHING`

// sqlSameRequest says whether the recorded request with id $1 is the one being handled.
const sqlSameRequest = `
SELECT programme = $2 AND requested_by = $3 AND requested_at = $4 AND dry_run = $5
FROM dps_export_requests WHERE request_id = $1`

const sqlExistingExport = `
SELECT id::text, filename, row_count, coalesce(size_bytes, 0), coalesce(sha256, ''), status
FROM dps_exports WHERE request_id = $1 AND programme_id = $2`

const sqlInsertExport = `
INSERT INTO dps_exports (id, programme_id, request_id, filename, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5)`

// sqlLockCandidates locks the programme's candidates and notes which ones this export will decide.
// SKIP LOCKED leaves out candidates a writer is re-queueing right now (they stay for the next run), so an
// export never waits for the recording application while holding candidates that application may wait
// for: writers can wait for an export, an export never waits for a writer, and the two cannot deadlock.
// Rows locked here cannot change until commit, and the next statement's snapshot, taken after this one,
// sees each of them with the record change that queued it.
const sqlLockCandidates = `
CREATE TEMP TABLE dps_export_taking ON COMMIT DROP AS
SELECT vaccination_record_id FROM dps_pending_records WHERE programme_id = $1 FOR UPDATE SKIP LOCKED`

const sqlAnalyzeCandidates = `ANALYZE dps_export_taking`

// sqlTakeCandidates decides every locked candidate, links the ones with something to send to the export,
// and removes the candidates it decided, all from one snapshot in one statement.
//
// Decision (the contract's eligibility rules): the last carriage is the newest link to the record in an
// export that has not released its records (lifecycle.LiveCondition: not failed).
// eligible = not draft, administered, not discarded.
//
//	no carriage, eligible                                → new
//	carriage new/update, not eligible                    → delete
//	carriage new/update, eligible, changed since it went → update
//	carriage delete, eligible again                      → new
//	anything else                                        → nothing; the candidate is just removed
//
// A candidate is deleted only while its queue_seq is the one read (the contract's rule; with the rows
// locked it always is, so this is a second guard, not the first).
//
// $1 export id.
var sqlTakeCandidates = `
WITH candidate AS (
    SELECT p.vaccination_record_id AS record_id, p.queue_seq, r.updated_at,
           (NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL) AS eligible,
           c.action AS carried_action, c.record_updated_at AS carried_version
    FROM dps_export_taking k
    JOIN dps_pending_records p ON p.vaccination_record_id = k.vaccination_record_id
    JOIN vaccination_records r ON r.id = p.vaccination_record_id
    LEFT JOIN LATERAL (
        SELECT er.action, er.record_updated_at
        FROM dps_export_records er
        JOIN dps_exports e ON e.id = er.export_id
        WHERE er.vaccination_record_id = p.vaccination_record_id AND ` + lifecycle.LiveCondition("e") + `
        ORDER BY e.created_at DESC, er.record_updated_at DESC
        LIMIT 1
    ) c ON true
),
decided AS MATERIALIZED (
    SELECT record_id, queue_seq, updated_at,
           CASE
               WHEN carried_action IS NULL AND eligible THEN 'new'
               WHEN carried_action = 'delete' AND eligible THEN 'new'
               WHEN carried_action IN ('new', 'update') AND NOT eligible THEN 'delete'
               WHEN carried_action IN ('new', 'update') AND eligible AND updated_at > carried_version THEN 'update'
           END AS action
    FROM candidate
),
taken AS (
    DELETE FROM dps_pending_records p
    USING decided d
    WHERE p.vaccination_record_id = d.record_id AND p.queue_seq = d.queue_seq
    RETURNING p.vaccination_record_id
),
linked AS (
    INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
    SELECT $1, record_id, updated_at, action FROM decided WHERE action IS NOT NULL
    RETURNING action
)
SELECT (SELECT count(*) FROM decided),
       (SELECT count(*) FROM taken),
       count(*) FILTER (WHERE action = 'new'),
       count(*) FILTER (WHERE action = 'update'),
       count(*) FILTER (WHERE action = 'delete')
FROM linked`

const sqlDeleteExport = `DELETE FROM dps_exports WHERE id = $1`

// exportRowsFrom is the FROM clause shared by the file query and the benchmark's COPY baseline: an
// export's links joined to everything a DPS row is made of. Records, patients and teams are required;
// the rest may be missing, and the writer refuses a row that needs what is missing.
const exportRowsFrom = `
FROM dps_export_records er
JOIN vaccination_records r ON r.id = er.vaccination_record_id
JOIN patients pa ON pa.id = r.patient_id
JOIN teams t ON t.id = r.team_id
LEFT JOIN locations l ON l.id = r.location_id
LEFT JOIN vaccines v ON v.id = r.vaccine_id
LEFT JOIN batches b ON b.id = r.batch_id
LEFT JOIN vaccinators va ON va.id = r.vaccinator_id
WHERE er.export_id = $1
ORDER BY r.performed_at, r.uuid`

// sqlExportRows reads an export's rows in file order (time given, then UNIQUE_ID), typed as the
// database holds them; dps.Writer does every formatting decision. LOCATION_CODE is the school's URN at a
// school and otherwise the team's ODS code, as the DPS spec says, even where a clinic has an ODS code of
// its own. DOSE_AMOUNT is the record's volume as
// held, else its vaccine's (a record made before volumes were recorded per dose has none).
const sqlExportRows = `
SELECT r.id, coalesce(pa.nhs_number, ''), pa.given_name, pa.family_name, pa.date_of_birth, pa.gender_code,
       coalesce(pa.address_postcode, ''), r.performed_at, t.ods_code, r.uuid::text, er.action,
       coalesce(va.full_name, ''), r.created_at,
       coalesce(v.snomed_procedure_code, ''), coalesce(v.snomed_procedure_term, ''), coalesce(r.dose_sequence, 0),
       coalesce(v.snomed_product_code, ''), coalesce(v.snomed_product_term, ''), coalesce(v.manufacturer, ''),
       coalesce(b.name, ''), b.expiry,
       coalesce(r.delivery_site, ''), coalesce(r.delivery_method, ''),
       coalesce(coalesce(r.dose_volume_ml, v.dose_volume_ml)::text, ''),
       CASE WHEN l.type = 'school' THEN l.urn ELSE '' END,
       CASE WHEN l.type IS DISTINCT FROM 'school' THEN t.ods_code ELSE '' END
` + exportRowsFrom

// sqlUnlinkRefused takes records the writer refused back out of the export and queues them again, so
// that they are tried again once their data is put right and the file's row count stays exact.
const sqlUnlinkRefused = `
WITH unlinked AS (
    DELETE FROM dps_export_records WHERE export_id = $1 AND vaccination_record_id = ANY($2::bigint[])
    RETURNING vaccination_record_id
)
INSERT INTO dps_pending_records (vaccination_record_id, programme_id)
SELECT u.vaccination_record_id, r.programme_id FROM unlinked u JOIN vaccination_records r ON r.id = u.vaccination_record_id
ON CONFLICT (vaccination_record_id) DO UPDATE
    SET programme_id = EXCLUDED.programme_id, queue_seq = EXCLUDED.queue_seq, queued_at = EXCLUDED.queued_at`

const sqlFinishExport = `
UPDATE dps_exports SET object_name = $2, size_bytes = $3, sha256 = $4, row_count = $5, refused_rows = $6, updated_at = clock_timestamp()
WHERE id = $1`

const sqlExportIDsByName = `SELECT id::text FROM dps_exports WHERE id::text = ANY($1::text[])`

const sqlRequestExports = `
SELECT EXISTS (SELECT 1 FROM dps_export_requests WHERE request_id = $1),
       coalesce(array_agg(id::text ORDER BY created_at) FILTER (WHERE id IS NOT NULL), '{}')
FROM dps_exports WHERE request_id = $1`
