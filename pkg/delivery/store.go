package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// Attempt outcomes in dps_export_attempts.outcome. An attempt with no outcome, or with a transient
// error, may have reached MESH: it is "unknown" until MESH is asked about its local id.
const (
	attemptAccepted       = "accepted"
	attemptAdopted        = "adopted"
	attemptNotSent        = "not_sent"
	attemptTransientError = "transient_error"
	attemptPermanentError = "permanent_error"
)

// lockClass is the first key of the two-key advisory lock an export is held with; the producer's
// per-programme locks use the one-bigint form, which Postgres keeps in a separate key space.
const lockClass = 0x44505331 // "DPS1"

// ErrNoExport means the batch names an export Postgres does not hold.
var ErrNoExport = errors.New("export not found")

// exportRow is what the sender needs from dps_exports: the facts it acts on come from here, never from
// the batch, which only names the export.
type exportRow struct {
	ID            string
	Programme     string
	Filename      string
	Status        lifecycle.Status
	Attempts      int
	MESHMessageID string
	MESHLocalID   string
	Rows          int64
	ObjectName    string
	SizeBytes     int64
	SHA256        string
}

// object is the export's file in the Object Store as Postgres records it.
func (e exportRow) object() objectRef {
	return objectRef{name: e.ObjectName, size: e.SizeBytes, sha256: e.SHA256}
}

// disagreement says how a batch differs from the export it names, or "" when it matches. A batch that
// differs was not written by the producer for this export (forged, or from another database): acting on
// it could send another export's file under this one's name, or fail this one for nothing.
func (e exportRow) disagreement(r bus.ExportReady) string {
	var diffs []string
	check := func(field string, batch, row any) {
		if batch != row {
			diffs = append(diffs, fmt.Sprintf("%s %v (Postgres: %v)", field, batch, row))
		}
	}
	check("programme", r.Programme, e.Programme)
	check("filename", r.Filename, e.Filename)
	check("object_name", r.ObjectName, e.ObjectName)
	check("size_bytes", r.SizeBytes, e.SizeBytes)
	check("sha256", r.SHA256, e.SHA256)
	check("rows", r.Rows, e.Rows)
	if len(diffs) == 0 {
		return ""
	}
	return strings.Join(diffs, "; ")
}

// attemptRow is one recorded attempt whose outcome MESH has to be asked about.
type attemptRow struct {
	Attempt int
	LocalID string
}

// exportLock is a session-level advisory lock on one export, held on a dedicated connection for the
// whole send. Every query of the send runs on that connection in short transactions, so the attempt
// can be committed before the send starts while the lock stays held. A process that dies loses its
// session and with it the lock, so a crash never leaves an export locked.
type exportLock struct {
	conn     *pgxpool.Conn
	exportID string
}

// tryLockExport takes the export's lock without waiting. held is false when another session has it.
func tryLockExport(ctx context.Context, pool *pgxpool.Pool, exportID string) (l *exportLock, held bool, err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock export %s: acquire connection: %w", exportID, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1::int4, hashtext($2::text))`, lockClass, exportID).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("lock export %s: %w", exportID, err)
	}
	if !ok {
		conn.Release()
		return nil, true, nil
	}
	return &exportLock{conn: conn, exportID: exportID}, false, nil
}

// lockExport waits for the export's lock until ctx ends.
func lockExport(ctx context.Context, pool *pgxpool.Pool, exportID string) (*exportLock, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock export %s: acquire connection: %w", exportID, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1::int4, hashtext($2::text))`, lockClass, exportID); err != nil {
		// A cancelled wait may leave the session in doubt; a fresh one is certain not to hold the lock.
		_ = conn.Conn().Close(context.WithoutCancel(ctx))
		conn.Release()
		return nil, fmt.Errorf("lock export %s: %w", exportID, err)
	}
	return &exportLock{conn: conn, exportID: exportID}, nil
}

// release unlocks and returns the connection to the pool. When unlocking fails the connection is
// closed instead, which releases the lock just as surely.
func (l *exportLock) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1::int4, hashtext($2::text))`, lockClass, l.exportID); err != nil {
		_ = l.conn.Conn().Close(ctx)
	}
	l.conn.Release()
}

// inTx runs f in a transaction on the lock's connection.
func (l *exportLock) inTx(ctx context.Context, f func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, l.conn, f)
}

func (l *exportLock) loadExport(ctx context.Context) (exportRow, error) {
	var e exportRow
	var msgID, localID *string
	err := l.conn.QueryRow(ctx, `
		SELECT e.id::text, p.code, e.filename, e.status, e.attempts, e.mesh_message_id, e.mesh_local_id,
			e.row_count, coalesce(e.object_name, ''), coalesce(e.size_bytes, -1), coalesce(e.sha256, '')
		FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.id = $1`, l.exportID).Scan(&e.ID, &e.Programme, &e.Filename, &e.Status, &e.Attempts, &msgID, &localID,
		&e.Rows, &e.ObjectName, &e.SizeBytes, &e.SHA256)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, fmt.Errorf("load export %s: %w", l.exportID, ErrNoExport)
	}
	if err != nil {
		return e, fmt.Errorf("load export %s: %w", l.exportID, err)
	}
	if msgID != nil {
		e.MESHMessageID = *msgID
	}
	if localID != nil {
		e.MESHLocalID = *localID
	}
	return e, nil
}

// unknownAttempts lists the attempts that may have reached MESH, oldest first.
func (l *exportLock) unknownAttempts(ctx context.Context) ([]attemptRow, error) {
	rows, err := l.conn.Query(ctx, `
		SELECT attempt, local_id FROM dps_export_attempts
		WHERE export_id = $1 AND (outcome IS NULL OR outcome = $2)
		ORDER BY attempt`, l.exportID, attemptTransientError)
	if err != nil {
		return nil, fmt.Errorf("list attempts of export %s: %w", l.exportID, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attemptRow])
	if err != nil {
		return nil, fmt.Errorf("list attempts of export %s: %w", l.exportID, err)
	}
	return out, nil
}

// setAttemptOutcome records what became of an attempt outside the accept and fail transactions.
func (l *exportLock) setAttemptOutcome(ctx context.Context, attempt int, outcome, errText string) error {
	_, err := l.conn.Exec(ctx, `
		UPDATE dps_export_attempts SET outcome = $3, error = NULLIF($4, ''), finished_at = now()
		WHERE export_id = $1 AND attempt = $2`, l.exportID, attempt, outcome, errText)
	if err != nil {
		return fmt.Errorf("record outcome of attempt %d of export %s: %w", attempt, l.exportID, err)
	}
	return nil
}

// recordAttempt commits a new attempt and returns its number and local id. fromStatuses are the
// statuses the export may be in (created; or accepted/acknowledged for a forced re-send); errStale
// means it is in none of them any more.
func (l *exportLock) recordAttempt(ctx context.Context, fromStatuses []lifecycle.Status) (int, string, error) {
	// One statement, so one round trip: bump the counter (never below an attempt already recorded) and
	// insert the attempt it names, committed together before the send starts.
	var n int
	var localID string
	err := l.conn.QueryRow(ctx, `
		WITH bumped AS (
			UPDATE dps_exports e SET
				attempts = GREATEST(e.attempts, COALESCE((SELECT max(a.attempt) FROM dps_export_attempts a WHERE a.export_id = e.id), 0)) + 1,
				updated_at = now()
			WHERE e.id = $1 AND e.status = ANY($2)
			RETURNING e.id, e.attempts
		)
		INSERT INTO dps_export_attempts (export_id, attempt, local_id)
		SELECT id, attempts, id::text || '.' || attempts FROM bumped
		RETURNING attempt, local_id`, l.exportID, lifecycle.Names(fromStatuses)).Scan(&n, &localID)
	if errors.Is(err, pgx.ErrNoRows) {
		err = errStale
	}
	if err != nil {
		return 0, "", fmt.Errorf("record attempt of export %s: %w", l.exportID, err)
	}
	if localID != LocalID(l.exportID, n) {
		return 0, "", fmt.Errorf("record attempt of export %s: local id %q is not %q", l.exportID, localID, LocalID(l.exportID, n))
	}
	return n, localID, nil
}

// errStale means the export left the state the sender expected while it held the lock, which only an
// operator editing rows by hand can cause; the batch is looked at again on its next delivery.
var errStale = errors.New("export changed state under the sender's lock")

// LocalID is the mex-LocalID of an attempt: "<export id>.<attempt>".
func LocalID(exportID string, attempt int) string {
	return fmt.Sprintf("%s.%d", exportID, attempt)
}
