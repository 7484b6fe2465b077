// Package export is the producer's engine: it turns an export request into at most one DPS file per
// programme, records which exact record versions the file carries, stores the file in the Object Store
// and enqueues dps.export.ready and dps.export.created through the transactional outbox. It also owns
// the orphan-object sweep, the handler of dps.export.request (run by pkg/runner), the nightly schedule
// that publishes requests, and the replay of requests. An export's status after it is created, and the
// release of a failed export's records, belong to pkg/lifecycle.
//
// It must not publish an export's messages itself (the outbox relay does, after commit), must not hold
// a file in memory (rows stream from Postgres through dps.Writer into the Object Store), and must not
// send anything to MESH.
//
// # Why a crash cannot double or lose an export
//
// Everything that makes an export happens in one Postgres transaction per programme, holding
// pg_advisory_xact_lock(DPS, programme id) from its first statement to commit:
//
//  1. the request row is inserted (ON CONFLICT DO NOTHING) and, if an export for (request, programme)
//     already exists, it is returned unchanged: a redelivered request, a replay, or two producers given
//     the same request make one export (the second waits for the lock, then sees the first's commit,
//     because under READ COMMITTED every statement after the lock takes a fresh snapshot; the unique
//     index on (request_id, programme_id) backs this up);
//  2. one statement decides every queued candidate of the programme from one snapshot, locking
//     nothing, and keeps the decision in a temporary table; the next links the ones to send to the new
//     export with their exact updated_at and action; two exports of one programme never overlap
//     because they are serialised by the lock and the second sees the first's links and taken
//     candidates;
//  3. the file is streamed from the links into the bucket under the export id, the export row gets the
//     object name, size, SHA-256 and row count, and the ready and created messages go into dps_outbox;
//     then the decided candidates are taken off the queue (only those whose queue_seq is still the one
//     decided, so a record queued again meanwhile stays queued), by a delete that waits at most 100 ms
//     for a writer's row lock and otherwise takes them again with FOR UPDATE SKIP LOCKED, so the
//     export never waits long for a writer and cannot deadlock with one;
//  4. commit.
//
// A crash (or any error) before commit rolls everything back: no export row, no links, the candidates
// are still queued, nothing in the outbox. At most an object was stored under an id no export row will
// ever name; SweepOrphans deletes such objects once they are an hour old (no transaction holds an
// export that long after its upload). A crash after commit leaves the outbox rows, which the relay of
// any producer publishes; a crash between the stream's ack and the relay marking its row re-publishes
// with the same Nats-Msg-Id (the export id), which the stream's 24 h duplicate window drops. So every
// committed export ends with exactly one dps.export.ready, and no record version is in two live exports.
//
// The file carries exactly the versions linked: the file query reads each record's version beside the
// version linked, and a record a writer changed after the decision is left out of the file and its link
// removed. The writer's change queued it again (the trigger runs in the writer's transaction), and the
// take leaves it queued because its queue_seq moved, so the next export carries it. Writers therefore
// never wait for the export's file: a writer changing a queued record waits at most for the take and
// the commit (about a second for a year's backlog), and one inserting a record never waits. The
// producer logs both lock durations with every committed export ("export committed":
// programme_lock_held, candidate_locks_held).
package export
