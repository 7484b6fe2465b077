package tracking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// BatchResult says what one TrackDue did.
type BatchResult struct {
	// Selected is how many due exports this replica locked.
	Selected int
	// Acknowledged and Failed count the transitions this replica made.
	Acknowledged, Failed int
	// Pending counts exports MESH still holds (or does not know yet, within the timeout); each is asked
	// again after its backoff.
	Pending int
	// Errors counts tracking requests that failed; those exports are asked again at the next poll.
	Errors int
	// Stopped is true when a transient MESH failure ended the batch early: the exports not yet asked
	// stay due for the next poll rather than each waiting out the client's retry budget.
	Stopped bool
}

// dueExport is an accepted export locked for tracking.
type dueExport struct {
	ID, Programme, MessageID string
	SentAt                   *time.Time
	TrackFailures            int
	// UnknownFor is how long MESH tracking has answered 404 for it; nil when it has not.
	UnknownFor *time.Duration
}

// dueColumns are the columns scanDue reads, from dps_exports e joined to programmes p.
const dueColumns = `e.id::text, p.code, coalesce(e.mesh_message_id, ''), e.sent_at, e.track_failures,
       extract(epoch FROM now() - e.tracking_unknown_since)::float8`

const selectDue = `
SELECT ` + dueColumns + `
FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
WHERE e.status = $2 AND (e.next_track_at IS NULL OR e.next_track_at <= now())
ORDER BY e.next_track_at NULLS FIRST
LIMIT $1
FOR UPDATE OF e SKIP LOCKED`

// scanDue reads dueColumns, then any columns the query adds after them into extra.
func scanDue(row pgx.Row, extra ...any) (dueExport, error) {
	var e dueExport
	var unknownSecs *float64
	dest := append([]any{&e.ID, &e.Programme, &e.MessageID, &e.SentAt, &e.TrackFailures, &unknownSecs}, extra...)
	if err := row.Scan(dest...); err != nil {
		return e, err
	}
	if unknownSecs != nil {
		d := secondsToDuration(*unknownSecs)
		e.UnknownFor = &d
	}
	return e, nil
}

// TrackDue takes up to BatchSize accepted exports that are due (other replicas skip the ones it
// locks), asks MESH about each, and moves each on in one transaction. Events are enqueued in that
// transaction, so they exist exactly when the transitions do. It calls MESH even when the gate is
// closed: Run is what honours the gate.
func (t *Tracker) TrackDue(ctx context.Context) (BatchResult, error) {
	var res BatchResult
	if t.cfg.MESH == nil {
		return res, errors.New("track due exports: no MESH client (MESH jobs disabled)")
	}
	tx, err := t.cfg.Pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit

	rows, err := tx.Query(ctx, selectDue, t.cfg.BatchSize, lifecycle.Accepted)
	if err != nil {
		return res, fmt.Errorf("select due exports: %w", err)
	}
	due, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (dueExport, error) { return scanDue(row) })
	if err != nil {
		return res, fmt.Errorf("select due exports: %w", err)
	}
	res.Selected = len(due)
	if len(due) == 0 {
		return res, tx.Commit(ctx)
	}

	var done []applied
	for _, e := range due {
		var tr *mesh.Tracking
		var trErr error
		if e.MessageID != "" {
			tr, trErr = t.cfg.MESH.Track(ctx, e.MessageID)
		}
		if trErr != nil && ctx.Err() != nil {
			// Shutdown grace ran out: nothing is committed, and every export stays due.
			return res, fmt.Errorf("track export %s: %w", e.ID, ctx.Err())
		}
		a, err := t.apply(ctx, tx, e, tr, trErr)
		if err != nil {
			return res, err
		}
		done = append(done, a)
		switch a.outcome {
		case outcomeAcknowledged:
			res.Acknowledged++
		case outcomeFailed:
			res.Failed++
		case outcomePending:
			res.Pending++
		case outcomeError:
			res.Errors++
		}
		if a.outcome == outcomeError && a.errKind == errTransient {
			res.Stopped = true
			break
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit tracking batch: %w", err)
	}
	for _, a := range done {
		t.record(a)
	}
	return res, nil
}

// outcome is what happened to one export.
type outcome int

const (
	outcomeUnchanged outcome = iota // another replica had already moved it on
	outcomeAcknowledged
	outcomeFailed
	outcomePending
	outcomeError
)

// applied is one export's result, recorded in logs and metrics once the transaction commits.
type applied struct {
	export       dueExport
	outcome      outcome
	errKind      string
	status       string // MESH's tracking status, when it answered
	reason       string
	sentToAckDur time.Duration
}

// apply moves one locked export on according to MESH's answer (tr) or failure (trErr).
func (t *Tracker) apply(ctx context.Context, tx pgx.Tx, e dueExport, tr *mesh.Tracking, trErr error) (applied, error) {
	a := applied{export: e}
	switch {
	case e.MessageID == "" || mesh.IsNotFound(trErr):
		return t.applyUnknown(ctx, tx, e, a)
	case trErr != nil:
		a.outcome = outcomeError
		a.errKind = errPermanent
		if mesh.IsTransient(trErr) {
			a.errKind = errTransient
		}
		a.reason = trErr.Error()
		// Asked again at the next poll; moving next_track_at keeps one export that always fails from
		// standing at the head of the queue.
		if err := t.reschedule(ctx, tx, e, t.cfg.PollInterval, false, unknownKeep); err != nil {
			return a, err
		}
		return a, nil
	}
	a.status = tr.Status
	switch tr.Status {
	case mesh.StatusAcknowledged:
		changed, ackAt, err := t.markAcknowledged(ctx, tx, e)
		if err != nil || !changed {
			return a, err
		}
		a.outcome = outcomeAcknowledged
		if e.SentAt != nil {
			a.sentToAckDur = ackAt.Sub(*e.SentAt)
		}
		return a, nil
	case mesh.StatusUndeliverable, mesh.StatusError:
		a.reason = trackingReason(tr)
		changed, err := t.markFailed(ctx, tx, e, failure{
			reason: a.reason, code: tr.StatusCode, description: tr.StatusDescription,
		})
		if err != nil || !changed {
			return a, err
		}
		a.outcome = outcomeFailed
		return a, nil
	default:
		// accepted, uploading, or a status this code does not know yet: ask again later.
		if err := t.reschedule(ctx, tx, e, t.backoff(e.TrackFailures+1), true, unknownClear); err != nil {
			return a, err
		}
		a.outcome = outcomePending
		return a, nil
	}
}

// applyUnknown handles MESH answering 404 for the message (or the export having no message id): the
// first time, the clock starts; past UnknownTimeout the export fails with that reason.
func (t *Tracker) applyUnknown(ctx context.Context, tx pgx.Tx, e dueExport, a applied) (applied, error) {
	if e.UnknownFor != nil && *e.UnknownFor > t.cfg.UnknownTimeout {
		a.reason = fmt.Sprintf("MESH tracking has not known message %q for %s (more than TRACKER_UNKNOWN_TIMEOUT %s)",
			e.MessageID, e.UnknownFor.Round(time.Second), t.cfg.UnknownTimeout)
		if e.MessageID == "" {
			a.reason = fmt.Sprintf("export has no MESH message id to track after %s (TRACKER_UNKNOWN_TIMEOUT %s)",
				e.UnknownFor.Round(time.Second), t.cfg.UnknownTimeout)
		}
		changed, err := t.markFailed(ctx, tx, e, failure{reason: a.reason, httpStatus: 404, code: "404"})
		if err != nil || !changed {
			return a, err
		}
		a.outcome = outcomeFailed
		return a, nil
	}
	a.outcome = outcomeError
	a.errKind = errUnknown
	// Never wait longer than the timeout itself, so the export fails about when it should.
	if err := t.reschedule(ctx, tx, e, min(t.backoff(e.TrackFailures+1), t.cfg.UnknownTimeout), true, unknownStart); err != nil {
		return a, err
	}
	return a, nil
}

// trackingReason is the failure reason for a tracking status MESH will not move on from.
func trackingReason(tr *mesh.Tracking) string {
	s := "MESH reports the message " + tr.Status
	if tr.StatusCode != "" || tr.StatusDescription != "" {
		s += ":"
		if tr.StatusCode != "" {
			s += " " + tr.StatusCode
		}
		if tr.StatusDescription != "" {
			s += " " + tr.StatusDescription
		}
	}
	return s
}

// backoff is the wait before asking again about an export MESH has answered for n times without a final
// status: PollInterval doubled n-1 times, at most MaxBackoff.
func (t *Tracker) backoff(n int) time.Duration {
	d := t.cfg.PollInterval
	for i := 1; i < n && d < t.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxBackoff)
}

// record logs and counts a committed result.
func (t *Tracker) record(a applied) {
	log := t.log.With(slog.String("export_id", a.export.ID), slog.String("programme", a.export.Programme),
		slog.String("mesh_message_id", a.export.MessageID))
	switch a.outcome {
	case outcomeAcknowledged:
		t.m.Transitions.WithLabelValues(lifecycle.Acknowledged.String()).Inc()
		if a.sentToAckDur > 0 {
			t.m.SentToAcknowledged.Observe(a.sentToAckDur.Seconds())
		}
		log.Info("export acknowledged by DPS", slog.Duration("since_sent", a.sentToAckDur))
	case outcomeFailed:
		t.m.Transitions.WithLabelValues(lifecycle.Failed.String()).Inc()
		log.Error("export failed in MESH; its records are queued for the next export", slog.String("reason", a.reason))
	case outcomePending:
		log.Debug("export still waiting for DPS", slog.String("mesh_status", a.status))
	case outcomeError:
		t.m.TrackingErrors.WithLabelValues(a.errKind).Inc()
		switch a.errKind {
		case errUnknown:
			log.Warn("MESH tracking does not know the message; asking again later",
				slog.Duration("unknown_timeout", t.cfg.UnknownTimeout))
		case errTransient:
			log.Warn("MESH tracking failed; asking again at the next poll", slog.String("error", a.reason))
		default:
			log.Error("MESH tracking refused; asking again at the next poll", slog.String("error", a.reason))
		}
	}
}

func secondsToDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
