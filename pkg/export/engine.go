package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// AllProgrammes in a request means every programme in the programmes table.
const AllProgrammes = "ALL"

// Request is one export request, as carried on dps.export.request.
type Request struct {
	ID          string
	Programme   string // a programme code, or AllProgrammes
	RequestedBy string
	RequestedAt time.Time
	DryRun      bool
}

// Status says what an export run did for one programme.
type Status string

const (
	// Created: a new export was committed; its messages are in the outbox.
	Created Status = "created"
	// Existing: this request had already made an export for the programme; it is returned unchanged.
	Existing Status = "existing"
	// NothingToSend: no candidate needed sending; no file, no export.
	NothingToSend Status = "nothing_to_send"
	// DryRun: the export was built and rolled back; nothing was stored or published.
	DryRun Status = "dry_run"
)

// Result is what an export run did for one programme. The JSON form is the summary the export command
// prints.
type Result struct {
	Status    Status `json:"status"`
	ExportID  string `json:"export_id,omitempty"`
	Programme string `json:"programme"`
	Filename  string `json:"filename,omitempty"`
	Rows      int    `json:"rows"`
	SizeBytes int64  `json:"size_bytes"`
	SHA256    string `json:"sha256,omitempty"`
	RequestID string `json:"request_id"`
	// Actions counts rows per ACTION_FLAG (new, update, delete).
	Actions map[string]int `json:"actions,omitempty"`
	// Refused counts records left out of the file because the receiver would refuse their row; they stay
	// queued, listed with their reason by `producer refused`, and go out once put right.
	Refused int `json:"refused,omitempty"`
	// RefusedByRule counts them per broken rule (dps.Rule).
	RefusedByRule map[string]int `json:"refused_by_rule,omitempty"`
}

// UnknownProgrammeError is returned when a request names a programme the database does not know, or
// one the receiver has no vaccine type for (so no file of it could be named or taken). It is the
// requester's mistake, not an outage: the request consumer dead-letters it.
type UnknownProgrammeError struct {
	Programme     string
	NoVaccineType bool // known to the database, but not to the receiver
}

func (e *UnknownProgrammeError) Error() string {
	if e.NoVaccineType {
		return fmt.Sprintf("programme %q has no DPS vaccine type: nothing of it can be sent", e.Programme)
	}
	return fmt.Sprintf("unknown programme %q", e.Programme)
}

// RequestConflictError is returned when a request reuses the id of a recorded request with other
// content (programme, requester, time or dry run): a replay of the same request is idempotent, but this
// is another request under a taken id, and exporting it would put two exports under one request id or
// absorb it silently. The request consumer dead-letters it.
type RequestConflictError struct{ RequestID string }

func (e *RequestConflictError) Error() string {
	return fmt.Sprintf("request id %q is already recorded with other content (programme, requested_by, requested_at or dry_run); use a new request id", e.RequestID)
}

// Config wires an Exporter.
type Config struct {
	Pool *pgxpool.Pool
	// Objects is the "dps-exports" bucket; it may be nil only for an Exporter that runs dry runs alone.
	Objects jetstream.ObjectStore
	// UniqueIDURI is the DPS UNIQUE_ID_URI; dps.DefaultUniqueIDURI when empty.
	UniqueIDURI string
	// SenderODS is our organisation's ODS code, part of every file name (DPS_SENDER_ODS_CODE); Export
	// refuses to run without a valid one.
	SenderODS string
	// Logger; nil logs nothing. Metrics; nil means no metrics (a private set nobody scrapes).
	Logger  *slog.Logger
	Metrics *Metrics
}

// Exporter runs exports. It is safe for concurrent use, and any number of Exporters (in one process or
// many) may run against one database.
type Exporter struct {
	pool        *pgxpool.Pool
	objects     jetstream.ObjectStore
	log         *slog.Logger
	metrics     *Metrics
	uniqueIDURI string
	senderODS   string
}

// New checks cfg and returns an Exporter. It contacts nothing.
func New(cfg Config) (*Exporter, error) {
	if cfg.Pool == nil {
		return nil, errors.New("exporter: a Postgres pool is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Exporter{pool: cfg.Pool, objects: cfg.Objects, log: cfg.Logger, metrics: cfg.Metrics, uniqueIDURI: cfg.UniqueIDURI,
		senderODS: cfg.SenderODS}, nil
}

// Option adjusts one Export call.
type Option func(*runOptions)

type runOptions struct {
	copyTo func(r Result) (io.WriteCloser, error)
}

// WithCopy also writes each file to the writer open returns (the export command's --out). open is
// called once per file about to be built, with the export id, programme and filename set; the file is
// closed when the file is complete. A copy of an export that is then rolled back stays on disk.
func WithCopy(open func(r Result) (io.WriteCloser, error)) Option {
	return func(o *runOptions) { o.copyTo = open }
}

type programme struct {
	id   int64
	code string
}

// Export runs req: one transaction per programme (all programmes, in code order, for ALL). It returns
// one Result per programme done before the first error. An *UnknownProgrammeError means nothing was
// done; other errors are outages or bugs, and retrying the same request is safe.
func (e *Exporter) Export(ctx context.Context, req Request, opts ...Option) ([]Result, error) {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	if req.ID == "" {
		return nil, errors.New("export: request has no id")
	}
	if !req.DryRun && e.objects == nil {
		return nil, errors.New("export: no object store configured")
	}
	if !dps.ValidODSCode(e.senderODS) {
		return nil, errors.New("export: no valid sender ODS code configured (DPS_SENDER_ODS_CODE)")
	}
	progs, err := e.programmes(ctx, req.Programme)
	if err != nil {
		return nil, err
	}
	results := make([]Result, 0, len(progs))
	for _, p := range progs {
		start := time.Now()
		res, err := e.exportProgramme(ctx, req, p, o)
		e.metrics.observe(res, req.DryRun, err, time.Since(start))
		if err != nil {
			return results, fmt.Errorf("export %s for request %s: %w", p.code, req.ID, err)
		}
		e.log.Info("export run",
			slog.String("request_id", req.ID), slog.String("programme", p.code), slog.String("status", string(res.Status)),
			slog.String("export_id", res.ExportID), slog.Int("rows", res.Rows), slog.Int("refused", res.Refused),
			slog.Duration("took", time.Since(start)))
		results = append(results, res)
	}
	return results, nil
}

// ProgrammeCodes returns the code of every programme in the database, in code order.
func (e *Exporter) ProgrammeCodes(ctx context.Context) ([]string, error) {
	progs, err := e.programmes(ctx, AllProgrammes)
	if err != nil {
		return nil, err
	}
	codes := make([]string, len(progs))
	for i, p := range progs {
		codes[i] = p.code
	}
	return codes, nil
}

// programmes resolves a request's programme to the rows it names.
func (e *Exporter) programmes(ctx context.Context, code string) ([]programme, error) {
	var rows pgx.Rows
	var err error
	if code == AllProgrammes {
		rows, err = e.pool.Query(ctx, sqlProgrammes)
	} else {
		rows, err = e.pool.Query(ctx, sqlProgrammeByCode, code)
	}
	if err != nil {
		return nil, fmt.Errorf("export: read programmes: %w", err)
	}
	progs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (programme, error) {
		var p programme
		err := row.Scan(&p.id, &p.code)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("export: read programmes: %w", err)
	}
	if len(progs) == 0 && code != AllProgrammes {
		return nil, &UnknownProgrammeError{Programme: code}
	}
	// A programme the receiver has no vaccine type for is refused before anything is built. In ALL it is
	// left out, loudly: its records stay queued until the table in pkg/dps learns it.
	known := progs[:0]
	for _, p := range progs {
		if _, ok := dps.VaccineType(p.code); ok {
			known = append(known, p)
			continue
		}
		if code != AllProgrammes {
			return nil, &UnknownProgrammeError{Programme: code, NoVaccineType: true}
		}
		e.log.Warn("programme left out of the export: DPS has no vaccine type for it", slog.String("programme", p.code))
	}
	return known, nil
}

// exportProgramme is the transaction described in the package documentation.
func (e *Exporter) exportProgramme(ctx context.Context, req Request, p programme, o runOptions) (Result, error) {
	res := Result{Programme: p.code, RequestID: req.ID}
	tx, err := e.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	// Until commit is attempted, any return rolls back, and an object already stored is an orphan to
	// delete. After a failed commit the outcome is unknown, so the object is left to the sweep.
	var storedObject string
	committing := false
	defer func() {
		if committing {
			return
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if storedObject != "" {
			e.deleteObject(ctx, storedObject)
		}
	}()

	if _, err := tx.Exec(ctx, sqlLockProgramme, lockClass, p.id); err != nil {
		return res, fmt.Errorf("lock programme: %w", err)
	}
	lockedAt := time.Now()
	if _, err := tx.Exec(ctx, sqlInsertRequest, req.ID, req.Programme, req.RequestedBy, req.RequestedAt, req.DryRun); err != nil {
		return res, fmt.Errorf("record request: %w", err)
	}
	var same bool
	if err := tx.QueryRow(ctx, sqlSameRequest, req.ID, req.Programme, req.RequestedBy, req.RequestedAt, req.DryRun).Scan(&same); err != nil {
		return res, fmt.Errorf("compare request with the one recorded: %w", err)
	}
	if !same {
		return res, &RequestConflictError{RequestID: req.ID}
	}
	var status string
	err = tx.QueryRow(ctx, sqlExistingExport, req.ID, p.id).
		Scan(&res.ExportID, &res.Filename, &res.Rows, &res.SizeBytes, &res.SHA256, &status)
	switch {
	case err == nil:
		res.Status = Existing
		if req.DryRun {
			return res, nil
		}
		committing = true
		if err := tx.Commit(ctx); err != nil {
			return res, fmt.Errorf("commit: %w", err)
		}
		return res, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return res, fmt.Errorf("look for an existing export: %w", err)
	}

	var now, fileTime time.Time
	if err := tx.QueryRow(ctx, sqlNow, p.id).Scan(&now, &fileTime); err != nil {
		return res, fmt.Errorf("read clock: %w", err)
	}
	id := uuid.New()
	res.ExportID = id.String()
	if res.Filename, err = dps.FileName(p.code, e.senderODS, fileTime); err != nil {
		return res, fmt.Errorf("name the file: %w", err)
	}
	if _, err := tx.Exec(ctx, sqlInsertExport, id, p.id, req.ID, res.Filename, now, fileTime); err != nil {
		return res, fmt.Errorf("insert export: %w", err)
	}
	t := newRunTimer(lockedAt)
	decided, err := decideCandidates(ctx, tx, p.id)
	if err != nil {
		return res, err
	}
	t.mark("decide")
	linked, err := linkDecided(ctx, tx, id)
	if err != nil {
		return res, err
	}
	t.mark("link")
	e.log.Debug("candidates decided", slog.String("programme", p.code), slog.Int64("candidates", decided),
		slog.Int("linked", linked))
	if linked == 0 {
		return e.finishEmpty(ctx, tx, req, p, res, t, &committing)
	}

	copyTo, err := openCopy(o, res)
	if err != nil {
		return res, err
	}
	var built fileStats
	if req.DryRun {
		built, err = e.buildFile(ctx, tx, res.ExportID, linked, copyTo)
	} else {
		built, err = e.storeFile(ctx, tx, res, linked, copyTo)
		if built.objectStored {
			storedObject = res.ExportID
		}
	}
	if err != nil {
		return res, err
	}
	t.mark("file")
	if read := built.rows + len(built.refused) + len(built.changed); read != linked {
		// A linked record was hard-deleted after it was decided (the delete trigger cannot see links that
		// are not committed yet). Nothing is lost by starting again: the retry decides without it.
		return res, fmt.Errorf("%d records linked but %d read back: a record was deleted while the export ran; retry", linked, read)
	}
	res.Rows, res.SizeBytes, res.SHA256 = built.rows, built.size, built.sha256
	res.Refused, res.RefusedByRule = len(built.refused), refusedByRule(built.refused)
	if len(built.changed) > 0 {
		e.log.Info("records changed while their export was built are left for the next export",
			slog.String("export_id", res.ExportID), slog.Int("changed", len(built.changed)))
		if _, err := tx.Exec(ctx, sqlUnlinkChanged, id, built.changed); err != nil {
			return res, fmt.Errorf("unlink changed records: %w", err)
		}
	}
	if err := keepRefused(ctx, tx, id, p.id, built.refused); err != nil {
		return res, err
	}
	if built.rows == 0 {
		// Every record was refused (or changed since it was decided): no file, and the export row goes,
		// but the refusals are committed so that they are listed and counted; the records stay queued.
		if storedObject != "" {
			e.deleteObject(ctx, storedObject)
			storedObject = ""
		}
		return e.finishEmpty(ctx, tx, req, p, res, t, &committing)
	}
	res.Actions = built.actions
	if req.DryRun {
		res.Status = DryRun
		return res, nil
	}
	if _, err := tx.Exec(ctx, sqlFinishExport, id, res.ExportID, res.SizeBytes, res.SHA256, res.Rows, res.Refused); err != nil {
		return res, fmt.Errorf("finish export: %w", err)
	}
	if err := enqueueMessages(ctx, tx, res, now); err != nil {
		return res, err
	}
	t.mark("finish")
	if err := e.takeAndCommit(ctx, tx, p, res, t, &committing); err != nil {
		return res, fmt.Errorf("commit export %s: %w", res.ExportID, err)
	}
	res.Status = Created
	return res, nil
}

// decideCandidates runs sqlDecideCandidates under decidePlanSettings and returns how many candidates
// it decided.
func decideCandidates(ctx context.Context, tx pgx.Tx, programmeID int64) (int64, error) {
	var decided int64
	err := withLocalSettings(ctx, tx, decidePlanSettings, func() error {
		tag, err := tx.Exec(ctx, sqlDecideCandidates, programmeID)
		decided = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("decide candidates: %w", err)
	}
	return decided, nil
}

// linkDecided runs sqlLinkDecided and returns how many links it made.
func linkDecided(ctx context.Context, tx pgx.Tx, exportID any) (linked int, err error) {
	err = withLocalSettings(ctx, tx, candidateSetSettings, func() error {
		tag, err := tx.Exec(ctx, sqlLinkDecided, exportID)
		linked = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("link candidates: %w", err)
	}
	return linked, nil
}

// takeDecided takes the decided candidates off the queue (see sqlTakeDecided) and returns how many it
// took.
func takeDecided(ctx context.Context, tx pgx.Tx, programmeID int64) (int64, error) {
	var taken int64
	err := withLocalSettings(ctx, tx, takeSettings, func() error {
		var err error
		taken, err = takePlain(ctx, tx, programmeID)
		if errors.Is(err, errTakeWouldWait) {
			tag, err := tx.Exec(ctx, sqlTakeDecidedSkipLocked, programmeID)
			taken = tag.RowsAffected()
			return err
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("take candidates: %w", err)
	}
	return taken, nil
}

// The SQLSTATEs of a delete that gave up waiting (lock_timeout) or was chosen to end a deadlock.
const (
	sqlstateLockNotAvailable = "55P03"
	sqlstateDeadlockDetected = "40P01"
)

// errTakeWouldWait says that sqlTakeDecided gave up on a row a writer holds; nothing was taken.
var errTakeWouldWait = errors.New("a writer holds a queued row")

// takePlain runs sqlTakeDecided in a savepoint under takeLockTimeout. When the delete gives up waiting
// for a writer (or would deadlock with one), it is rolled back to the savepoint and errTakeWouldWait is
// returned; the transaction goes on.
func takePlain(ctx context.Context, tx pgx.Tx, programmeID int64) (int64, error) {
	sp, err := tx.Begin(ctx) // a savepoint
	if err != nil {
		return 0, err
	}
	var tag pgconn.CommandTag
	err = withLocalSettings(ctx, sp, [][2]string{{"lock_timeout", takeLockTimeout}}, func() error {
		var err error
		tag, err = sp.Exec(ctx, sqlTakeDecided, programmeID)
		return err
	})
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return 0, fmt.Errorf("%w (and roll back to the savepoint: %v)", err, rerr)
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == sqlstateLockNotAvailable || pgErr.Code == sqlstateDeadlockDetected) {
			return 0, errTakeWouldWait
		}
		return 0, err
	}
	return tag.RowsAffected(), sp.Commit(ctx)
}

// withLocalSettings runs fn with the settings (name, value) set for the transaction, then puts back
// what they were, so that they apply to fn's statements alone. Reading and setting them is one batch,
// one round trip, and so is putting them back: a run changes settings for four statements, and one
// statement per read and per set was 36 round trips (a few milliseconds here, tens against a database
// a millisecond away).
func withLocalSettings(ctx context.Context, tx pgx.Tx, settings [][2]string, fn func() error) error {
	restore := make([][2]string, len(settings))
	set := &pgx.Batch{}
	for i, s := range settings {
		restore[i][0] = s[0]
		set.Queue(sqlGetSetting, s[0]).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(&restore[i][1]); err != nil {
				return fmt.Errorf("read %s: %w", s[0], err)
			}
			return nil
		})
		queueSet(set, s, "set")
	}
	if err := tx.SendBatch(ctx, set).Close(); err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	back := &pgx.Batch{}
	for _, s := range restore {
		queueSet(back, s, "put back")
	}
	return tx.SendBatch(ctx, back).Close()
}

// queueSet queues in b the SET LOCAL of setting (name, value); what names the step in its error.
func queueSet(b *pgx.Batch, setting [2]string, what string) {
	b.Queue(sqlSetLocal, setting[0], setting[1]).QueryRow(func(row pgx.Row) error {
		var now string
		if err := row.Scan(&now); err != nil {
			return fmt.Errorf("%s %s: %w", what, setting[0], err)
		}
		return nil
	})
}

// takeAndCommit takes the decided candidates off the queue and commits. The candidates' row locks are
// held from here to the end of the commit, the programme's advisory lock from the start of the run; both
// are logged, with the time of each step.
func (e *Exporter) takeAndCommit(ctx context.Context, tx pgx.Tx, p programme, res Result, t *runTimer, committing *bool) error {
	taken, err := takeDecided(ctx, tx, p.id)
	if err != nil {
		return err
	}
	t.mark("take")
	// Refusals of records no longer queued are done with: the records went out in this export, or no
	// longer need sending. A record refused in this run was queued again, so its refusal stays.
	if _, err := tx.Exec(ctx, sqlForgetRefused, p.id); err != nil {
		return fmt.Errorf("forget refusals: %w", err)
	}
	*committing = true
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	t.mark("commit")
	attrs := []any{slog.String("programme", res.Programme), slog.String("export_id", res.ExportID),
		slog.Int64("taken", taken),
		slog.Duration("programme_lock_held", t.total()), slog.Duration("candidate_locks_held", t.step("take")+t.step("commit"))}
	e.log.Info("export committed", append(attrs, t.attrs()...)...)
	return nil
}

// finishEmpty ends a run that put no row in a file: the export row goes, the candidates it decided are
// taken (they needed nothing; refused ones were queued again), and no file is made.
func (e *Exporter) finishEmpty(ctx context.Context, tx pgx.Tx, req Request, p programme, res Result, t *runTimer, committing *bool) (Result, error) {
	if _, err := tx.Exec(ctx, sqlDeleteExport, res.ExportID); err != nil {
		return res, fmt.Errorf("drop empty export: %w", err)
	}
	res.ExportID, res.Filename, res.SizeBytes, res.SHA256 = "", "", 0, ""
	res.Status = NothingToSend
	if req.DryRun {
		return res, nil
	}
	if err := e.takeAndCommit(ctx, tx, p, res, t, committing); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

func openCopy(o runOptions, res Result) (io.WriteCloser, error) {
	if o.copyTo == nil {
		return nil, nil
	}
	w, err := o.copyTo(res)
	if err != nil {
		return nil, fmt.Errorf("open copy of %s: %w", res.Filename, err)
	}
	return w, nil
}

// fileStats describes a built file.
type fileStats struct {
	rows         int
	size         int64
	sha256       string
	actions      map[string]int
	refused      []refusal // records the row rules refused, in file order
	changed      []int64   // record ids changed since they were decided
	objectStored bool
}

// digestWriter counts what is written to it and, when it has a hash, hashes it.
type digestWriter struct {
	h hash.Hash // nil: count only
	n int64
}

func newDigestWriter() *digestWriter { return &digestWriter{h: sha256.New()} }

func (d *digestWriter) Write(p []byte) (int, error) {
	if d.h != nil {
		d.h.Write(p) // hash.Hash never returns an error
	}
	d.n += int64(len(p))
	return len(p), nil
}

func (d *digestWriter) sum() []byte { return d.h.Sum(nil) }

// buildFile writes the export's file to its digest (and the copy, if any) without storing it.
func (e *Exporter) buildFile(ctx context.Context, tx pgx.Tx, exportID string, linked int, copyTo io.WriteCloser) (fileStats, error) {
	d := newDigestWriter()
	var w io.Writer = d
	if copyTo != nil {
		w = io.MultiWriter(d, copyTo)
	}
	st, err := e.writeFile(ctx, tx, exportID, linked, w)
	if copyTo != nil {
		if cerr := copyTo.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close copy: %w", cerr)
		}
	}
	if err != nil {
		return st, err
	}
	st.size, st.sha256 = d.n, hex.EncodeToString(d.sum())
	return st, nil
}

// storeFile streams the export's file into the Object Store under the export id: the rows go through
// dps.Writer and an io.Pipe to the store's Put, which uploads chunk by chunk, so memory stays flat
// whatever the file's size. The file's SHA-256 is the one Put computes over the bytes it stored (hashing
// them here as well would be a second pass over every byte, a sixth of the command's own CPU); what this
// side checks is that the store holds as many bytes as were written.
func (e *Exporter) storeFile(ctx context.Context, tx pgx.Tx, res Result, linked int, copyTo io.WriteCloser) (fileStats, error) {
	pr, pw := io.Pipe()
	type putResult struct {
		info *jetstream.ObjectInfo
		err  error
	}
	done := make(chan putResult, 1)
	go func() {
		info, err := bus.PutExport(ctx, e.objects, res.ExportID, pr,
			bus.ExportMeta{ExportID: res.ExportID, Programme: res.Programme, Filename: res.Filename})
		// Unblocks the writer if Put stopped reading early.
		pr.CloseWithError(putStopped(err))
		done <- putResult{info, err}
	}()

	written := &digestWriter{} // counts only: Put hashes
	writers := []io.Writer{written, pw}
	if copyTo != nil {
		writers = append(writers, copyTo)
	}
	st, err := e.writeFile(ctx, tx, res.ExportID, linked, io.MultiWriter(writers...))
	if copyTo != nil {
		if cerr := copyTo.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close copy: %w", cerr)
		}
	}
	if err != nil {
		pw.CloseWithError(err)
	} else {
		pw.Close()
	}
	put := <-done
	// Put may have stored the object even when it then reported an error (a lost ack): the caller
	// deletes it on any failure before commit.
	st.objectStored = true
	if err != nil {
		return st, err
	}
	if put.err != nil {
		return st, fmt.Errorf("store file %s: %w", res.ExportID, put.err)
	}
	if put.info.Size != uint64(written.n) {
		return st, fmt.Errorf("store file %s: the stored object has %d bytes, the file built %d", res.ExportID, put.info.Size, written.n)
	}
	if st.sha256, err = bus.ObjectSHA256(put.info); err != nil {
		return st, fmt.Errorf("store file %s: %w", res.ExportID, err)
	}
	st.size = written.n
	return st, nil
}

func putStopped(err error) error {
	if err == nil {
		return io.ErrClosedPipe
	}
	return fmt.Errorf("object store put: %w", err)
}

func (e *Exporter) deleteObject(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := e.objects.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		e.log.Warn("could not delete the object of a rolled-back export; the orphan sweep will",
			slog.String("object", name), slog.Any("error", err))
	}
}
