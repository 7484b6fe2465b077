package export

import "github.com/nhs-dps/dps-pipeline/pkg/lifecycle"

// The SQL of an export, in the order a run uses it. Every statement that changes export state runs inside
// the programme's transaction, after pg_advisory_xact_lock.

// lockClass is the first key of the two-key advisory lock; the second is the programme id. The two-key
// form keeps our locks apart from single-key ones (tern's migration lock, demodata's writer lock).
const lockClass = 0x445053 // "DPS"

const sqlLockProgramme = `SELECT pg_advisory_xact_lock($1::int4, $2::int4)`

// sqlNow is read after the lock is held, from the database's clock, so that an export created later under
// the lock always has a later created_at than the one before it, whichever host runs the producer. It
// also gives the instant the file is named after: this second, or one second after the programme's last
// name when that second is taken (two exports within one second), so a name is never used twice.
// $1 programme id.
const sqlNow = `
WITH c AS (SELECT clock_timestamp() AS now)
SELECT c.now,
       greatest(date_trunc('second', c.now),
                (SELECT max(file_time) + interval '1 second' FROM dps_exports WHERE programme_id = $1 AND file_time IS NOT NULL))
FROM c`

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
INSERT INTO dps_exports (id, programme_id, request_id, filename, created_at, updated_at, file_time)
VALUES ($1, $2, $3, $4, $5, $5, $6)`

// The candidates of a run are decided, linked and taken in three statements, in this order, so that no
// statement reads a table it is writing and the pending rows are locked only at the end:
//
//  1. sqlDecideCandidates reads every queued candidate of the programme with its record and its last
//     carriage, from one snapshot, and keeps the decision in a temporary table. It locks nothing, so
//     the recording application never waits for it.
//  2. sqlLinkDecided links the candidates with something to send to the export.
//  3. sqlTakeDecided, just before commit, deletes the decided candidates whose queue_seq is still the one
//     decided (the contract's rule: a record queued again since, by a writer or a release, stays queued
//     for the next run). An export must never wait long for the recording application, nor deadlock
//     with it: the delete runs in a savepoint under takeLockTimeout, so that a writer holding a queued
//     row makes it wait a few milliseconds at most (writers' transactions are short); if one holds it
//     longer, or the two would deadlock, the delete gives up before Postgres' deadlock check could cancel
//     the writer (deadlock_timeout, 1 s by default), and the run takes the candidates again with
//     sqlTakeDecidedSkipLocked, which leaves out the rows a writer has locked (it re-queues them, so they
//     stay queued anyway). The plain delete writes each row once; the other locks each row first and
//     then deletes it, twice the writes, so it is only the fallback. Writers can wait for an export from
//     this statement to commit (about a second for a year's backlog), never for the whole run.
//
// A writer that changes a linked record between 1 and the file query has re-queued it (its trigger runs
// in the same transaction as the change); the file query sees that the version it reads is not the one
// linked and leaves the record out (sqlUnlinkChanged), so the file carries exactly the versions linked
// and the change goes in the next export.

// sqlDecideCandidates decides every queued candidate of a programme (the contract's eligibility rules).
// The last carriage is the newest link to the record in an export that has not released its records
// (lifecycle.LiveCondition: not failed or rejected), and that the receiver did not refuse (its BusAck):
// a refused record is not in the receiver's hands, so once it changes it goes as new again, or as an
// update of the version the receiver last took. The record's version and eligibility (not draft,
// administered, not discarded: dps_record_eligible) are read from its queue row, which the transaction
// that changed the record wrote with them (migration 010), so deciding never reads the records table.
//
//	no carriage, eligible                                → new
//	carriage new/update, not eligible                    → delete
//	carriage new/update, eligible, changed since it went → update
//	carriage delete, eligible again                      → new
//	anything else                                        → nothing; the candidate is just taken
//
// The plan is fixed by the statement's shape, not left to statistics (an empty dps_export_records on a
// first export, stale figures right after one, a table the same run writes): each candidate's last
// carriage is a subquery with LIMIT 1, run once per candidate, which cannot become a join over the
// whole history; inside it the export of each link is a LATERAL behind OFFSET 0, which the planner
// cannot pull up or reorder, so the links are found from the record (dps_export_records_record_idx) and
// each link's export by its primary key, never the other way round; and the run disables sequential
// scans for this statement alone (decidePlanSettings), so that no table is scanned once per candidate.
//
// The subquery runs only for a record that has any link at all (the CASE evaluates it only then): the
// probe for that is one index-only lookup, where the subquery, with its sort of the record's links,
// costs three times as much even when it finds nothing. The probe's OFFSET 0 keeps it a lookup per
// candidate: without it, Postgres may instead hash the record ids of every link once (it did so on a
// first export), which in the steady state would read the whole history. Most candidates were never carried (records
// added since the last run, a first export's whole backlog): FLU's first export at 1,000,000 records
// decided in 0.42-0.49 s instead of 1.33-1.45 s. A candidate that was carried pays for both, a sixth
// more than the subquery alone (3.1-3.8 s against 2.6-3.4 s with all 450,000 carried). The candidate
// query sits behind OFFSET 0 so that the carriage is looked up once per candidate, not once for each
// of its fields the decision reads.
//
// $1 programme id.
var sqlDecideCandidates = `
CREATE TEMP TABLE dps_export_decided ON COMMIT DROP AS
SELECT record_id, queue_seq, updated_at,
       CASE
           WHEN (carried).action IS NULL AND eligible THEN 'new'
           WHEN (carried).action = 'delete' AND eligible THEN 'new'
           WHEN (carried).action IN ('new', 'update') AND NOT eligible THEN 'delete'
           WHEN (carried).action IN ('new', 'update') AND eligible AND updated_at > (carried).record_updated_at THEN 'update'
       END AS action
FROM (
    SELECT p.vaccination_record_id AS record_id, p.queue_seq, p.record_updated_at AS updated_at,
           p.record_eligible AS eligible,
           CASE WHEN EXISTS (SELECT FROM dps_export_records any_link WHERE any_link.vaccination_record_id = p.vaccination_record_id OFFSET 0)
           THEN (
               SELECT er
               FROM dps_export_records er
               CROSS JOIN LATERAL (
                   SELECT x.created_at FROM dps_exports x WHERE x.id = er.export_id AND ` + lifecycle.LiveCondition("x") + ` OFFSET 0
               ) e
               WHERE er.vaccination_record_id = p.vaccination_record_id AND er.outcome IS DISTINCT FROM 'refused'
               ORDER BY e.created_at DESC, er.record_updated_at DESC
               LIMIT 1
           ) END AS carried
    FROM dps_pending_records p
    WHERE p.programme_id = $1
    OFFSET 0
) candidate`

// decidePlanSettings are set (SET LOCAL) for sqlDecideCandidates alone and put back after it. Bitmap
// scans are off too: with dps_export_records not yet analysed (a first deployment), the planner took
// each candidate's probe for hundreds of links and built a bitmap for it, 12 % slower than the index
// scan that finds none or a few. JIT is off because disabling a plan type makes every cost look huge,
// which would otherwise compile the statement for longer than it runs.
var decidePlanSettings = [][2]string{{"enable_seqscan", "off"}, {"enable_bitmapscan", "off"}, {"jit", "off"}}

// candidateSetSettings are set for sqlLinkDecided (and, with more, sqlTakeDecided): each sorts the whole
// decision once (a year's backlog is a few hundred thousand narrow rows, 10 to 30 MB), which the default
// work_mem of 4 MB would spill to disk in batches.
var candidateSetSettings = [][2]string{{"work_mem", "64MB"}}

const sqlGetSetting = `SELECT current_setting($1)`

const sqlSetLocal = `SELECT set_config($1, $2, true)`

// sqlLinkDecided links the decided candidates that have something to send, in record order (the
// indexes of dps_export_records are then written mostly at their right edge). It returns nothing: the
// count of links is the statement's tag, and the file counts its rows per action as it writes them.
//
// $1 export id.
const sqlLinkDecided = `
INSERT INTO dps_export_records (export_id, vaccination_record_id, record_updated_at, action)
SELECT $1, record_id, updated_at, action FROM dps_export_decided WHERE action IS NOT NULL ORDER BY record_id`

// sqlTakeDecided removes the decided candidates from the queue; see above. A row whose queue_seq a
// writer changed while the delete waited for it is checked again as it now is, and stays. The delete
// is restricted to the programme, and takeSettings rules out a hash join: the queue is read in record
// order (by its primary key or the programme's index) and merged with the decision, or probed once per
// candidate when there are few. The hash join Postgres chose read every programme's queue rows to
// probe a hash of the decision (FLU's first export at 1,000,000 records: 1.6 s so, 0.9 s now).
//
// $1 programme id.
const sqlTakeDecided = `
DELETE FROM dps_pending_records p
USING dps_export_decided d
WHERE p.programme_id = $1 AND d.record_id = p.vaccination_record_id AND d.queue_seq = p.queue_seq`

// sqlTakeDecidedSkipLocked is sqlTakeDecided for when a writer holds some of the rows: it never waits.
//
// $1 programme id.
const sqlTakeDecidedSkipLocked = `
WITH locked AS (
    SELECT p.ctid AS row_id
    FROM dps_pending_records p
    JOIN dps_export_decided d ON d.record_id = p.vaccination_record_id AND d.queue_seq = p.queue_seq
    WHERE p.programme_id = $1
    FOR UPDATE OF p SKIP LOCKED
)
DELETE FROM dps_pending_records p USING locked WHERE p.ctid = locked.row_id`

// takeSettings are set for sqlTakeDecided and sqlTakeDecidedSkipLocked: see there, and
// candidateSetSettings.
var takeSettings = [][2]string{{"work_mem", "64MB"}, {"enable_hashjoin", "off"}}

// takeLockTimeout bounds how long sqlTakeDecided waits for a row a writer holds. It is well under
// Postgres' default deadlock_timeout (1 s), so a deadlock with a writer ends with the delete giving up,
// not with the writer's transaction cancelled.
const takeLockTimeout = "100ms"

// sqlUnlinkChanged takes records changed since they were decided back out of the export. They need no
// queueing: the change that made them differ queued them again, and sqlTakeDecided leaves them queued.
const sqlUnlinkChanged = `
DELETE FROM dps_export_records WHERE export_id = $1 AND vaccination_record_id = ANY($2::bigint[])`

const sqlDeleteExport = `DELETE FROM dps_exports WHERE id = $1`

// exportRowsFrom is an export's links joined to everything a DPS row is made of, in file order, as the
// simplest statement says it: the benchmark's COPY baseline and the tests that compare the file with
// SQL's own formatting read the rows through it. Records, patients and teams are required; the rest may
// be missing, and the writer refuses a row that needs what is missing.
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

// The file's rows are read by one of two statements, chosen by how many records the run linked
// (fileRowsQuery). Both return the rows of exportRowsFrom without the small tables, typed as the
// database holds them, each with the version linked and the version read; dps.Writer does every
// formatting decision. The team, location, vaccine, batch and vaccinator come as ids, which the file's
// side looks up in the reference (sqlReference*), read once per file: joining them here cost five index
// probes per row, a quarter of the statement's time (1.1 s of 4.4 s for a first export of 363,855 rows),
// for tables of a few hundred rows. The two differ in where each row is joined to its patient, which is
// most of the statement's work (a probe of the patients' index and heap per row, mostly cold):
//
//   - sqlExportRowsStreamed, for a large file, sorts the links and their records into file order first
//     (behind OFFSET 0, so that the sort stays there, holding the records' columns only) and joins each
//     sorted row to its patient as it streams out, which keeps the order and needs no sort at the end.
//     The sort must finish before the first row goes out; the patients' probes then run in the one
//     backend, side by side with the formatting in Go.
//   - sqlExportRowsJoined, for a small file, joins everything and then sorts, so that Postgres' parallel
//     workers share the patients' probes (the streamed shape cannot have them: the sort behind OFFSET 0
//     keeps the join above the workers). The formatting starts only once every row is sorted.
//
// Which is faster depends on how many rows there are, measured in the command (the file step, paired
// runs on copies of one database, 2026-12-01): at 10,000,000 records tonight's files of 13,000 to
// 40,000 rows took 11 to 27 % less time joined, by the means of three runs (TD_IPV 293 to 381 ms
// against 375 to 494 ms; FLU 823 to 1,075 ms against 1,005 to 1,113 ms); on a first export at
// 1,000,000 records the streamed one was as fast at 121,000 rows and faster above (HPV's 201,600 rows
// 3.5 s against 4.0 s, FLU's 363,830 rows 5.4 to 6.0 s against 7.1 to 7.5 s), where formatting after
// the last row costs more than the parallel probes save.
//
// fileSettings keeps both in their shape whatever the statistics say; TestFileQueryStreams checks them.
//
// $1 export id.
const (
	sqlExportRowsStreamed = `
SELECT o.id, o.record_updated_at, o.updated_at, coalesce(pa.nhs_number, ''), pa.given_name, pa.family_name, pa.date_of_birth,
       pa.gender_code, coalesce(pa.address_postcode, ''), o.performed_at, o.uuid::text, o.action, o.created_at,
       coalesce(o.dose_sequence, 0), coalesce(o.delivery_site, ''), coalesce(o.delivery_method, ''), o.dose_volume_ml::text,
       o.team_id, o.location_id, o.vaccine_id, o.batch_id, o.vaccinator_id
FROM (
    SELECT r.id, er.record_updated_at, er.action, r.updated_at, r.performed_at, r.uuid, r.created_at, r.patient_id, r.team_id,
           r.location_id, r.vaccine_id, r.batch_id, r.vaccinator_id, r.dose_sequence, r.delivery_site, r.delivery_method,
           r.dose_volume_ml
    FROM dps_export_records er
    JOIN vaccination_records r ON r.id = er.vaccination_record_id
    WHERE er.export_id = $1
    ORDER BY r.performed_at, r.uuid
    OFFSET 0
) o
JOIN patients pa ON pa.id = o.patient_id
ORDER BY o.performed_at, o.uuid`

	sqlExportRowsJoined = `
SELECT r.id, er.record_updated_at, r.updated_at, coalesce(pa.nhs_number, ''), pa.given_name, pa.family_name, pa.date_of_birth,
       pa.gender_code, coalesce(pa.address_postcode, ''), r.performed_at, r.uuid::text, er.action, r.created_at,
       coalesce(r.dose_sequence, 0), coalesce(r.delivery_site, ''), coalesce(r.delivery_method, ''), r.dose_volume_ml::text,
       r.team_id, r.location_id, r.vaccine_id, r.batch_id, r.vaccinator_id
FROM dps_export_records er
JOIN vaccination_records r ON r.id = er.vaccination_record_id
JOIN patients pa ON pa.id = r.patient_id
WHERE er.export_id = $1
ORDER BY r.performed_at, r.uuid`
)

// streamRowsFrom is the number of linked records from which a file's rows are read streamed, between
// the sizes measured above. The count is the run's own (the link's tag), not an estimate, so the
// choice never depends on the statistics.
const streamRowsFrom = 100_000

// fileRowsQuery is the statement that reads the rows of a file of linked records.
func fileRowsQuery(linked int) string {
	if linked >= streamRowsFrom {
		return sqlExportRowsStreamed
	}
	return sqlExportRowsJoined
}

// fileSettings are set for the file's statement alone: joins by primary key only (a hash join would read the
// whole of records or patients for a nightly file of a few thousand rows), no sequential scan of the
// links (a first export's links are not in the statistics yet, and a full scan of a year's links would
// cost more than the file), no JIT (see decidePlanSettings), and room to sort a year's backlog in
// memory (about 100 MB of rows for a first export of a million records, split between parallel
// workers when Postgres uses them).
var fileSettings = [][2]string{
	{"enable_hashjoin", "off"}, {"enable_mergejoin", "off"}, {"enable_seqscan", "off"}, {"jit", "off"}, {"work_mem", "64MB"},
}

// The reference a file's rows are completed from (see fileRowsQuery), read after the candidates are
// linked: every linked record version references rows that existed when it was decided, and rows a
// record references cannot be deleted, so each one is there. A location's LOCATION_CODE is its URN at a
// school; a dose volume is the record's, else its vaccine's, as text as Postgres formats numeric.
const (
	sqlReferenceTeams       = `SELECT id, ods_code FROM teams`
	sqlReferenceLocations   = `SELECT id, type = 'school', coalesce(urn, '') FROM locations`
	sqlReferenceVaccines    = `SELECT id, snomed_procedure_code, snomed_procedure_term, snomed_product_code, snomed_product_term, manufacturer, dose_volume_ml::text FROM vaccines`
	sqlReferenceBatches     = `SELECT id, name, expiry FROM batches`
	sqlReferenceVaccinators = `SELECT id, full_name FROM vaccinators`
)

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
