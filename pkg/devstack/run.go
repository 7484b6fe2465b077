package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
)

// run is the devstack: start everything, ask for every programme's export, and either stop when
// they are all processed by the DPS player (acknowledged without its receiver mode) (--once) or keep
// running until ctx ends.
func run(ctx context.Context, cfg Config) error {
	s, err := start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if s.external {
			s.out.printf("stopping      children (SIGTERM, then SIGKILL after %s), NATS (MESH at %s is left running)", stopGrace, s.meshURL)
		} else {
			s.out.printf("stopping      children (SIGTERM, then SIGKILL after %s), NATS, MESH sandbox", stopGrace)
		}
		s.Close()
	}()
	s.out.printf("environment   source %s to run the processes' own commands against this stack", s.EnvFile())

	requests, err := s.RequestAll(ctx)
	if err != nil {
		return err
	}
	if cfg.KillNode {
		killCtx, stopKill := context.WithCancel(ctx)
		killed := make(chan struct{})
		go func() {
			defer close(killed)
			if err := s.killNodeMidRun(killCtx); err != nil {
				s.out.printf("PROBLEM       --kill-node: %v", err)
			}
		}()
		defer func() { stopKill(); <-killed }()
	}
	waitCtx := ctx
	if cfg.Once {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	err = s.Wait(waitCtx, requests)
	if err == nil {
		err = s.Verify(ctx)
	}
	if err == nil {
		err = s.VerifyOutcomes(ctx, nil)
	}
	s.printSummary()
	if cfg.Once {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("timed out after %s with %s", cfg.Timeout, s.board.counts())
		}
		return err
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		// Without --once the stack stays up so that the failure can be looked into.
		s.out.printf("PROBLEM       %v", err)
	} else {
		s.out.printf("done          every export %s; still running, Ctrl-C to stop", s.finalStatus())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-s.exited:
			s.out.printf("EXITED        %s: %v", e.name, e.err)
		}
	}
}

// exportRequest is the dps.export.request payload (schemas/export-request.schema.json), written here
// as any other system would write it.
type exportRequest struct {
	RequestID   string `json:"request_id"`
	Programme   string `json:"programme"`
	RequestedBy string `json:"requested_by"`
	RequestedAt string `json:"requested_at"`
}

// RequestAll publishes one export request per programme and returns their ids.
func (s *Stack) RequestAll(ctx context.Context) ([]string, error) {
	runID := time.Now().UTC().Format("20060102T150405") + "-" + randomSecret()[:6]
	var ids []string
	for _, p := range demodata.Programmes {
		req := exportRequest{
			RequestID:   "devstack-" + runID + "-" + p.Code,
			Programme:   p.Code,
			RequestedBy: "devstack",
			RequestedAt: time.Now().UTC().Format(time.RFC3339Nano),
		}
		payload, err := json.Marshal(req)
		if err != nil {
			return nil, err
		}
		if _, err := s.js.Publish(ctx, subjectRequest, payload, jetstream.WithMsgID(req.RequestID)); err != nil {
			return nil, fmt.Errorf("request %s export: %w", p.Code, err)
		}
		s.board.request(req.RequestID, p.Code)
		ids = append(ids, req.RequestID)
	}
	return ids, nil
}

// progressEvery is how long the stack stays silent before printing a progress line.
const progressEvery = 5 * time.Second

// eventGrace is how long Wait gives the lifecycle events to arrive once the database says every
// export is acknowledged: they leave through the outbox just after the commit.
const eventGrace = 15 * time.Second

// Wait returns nil when every request has been handled, nothing is left to export, and every export
// of those requests is acknowledged, both in the database and as an event on the bus. It returns an
// error as soon as an export fails, DPS rejects a file, or a child exits.
func (s *Stack) Wait(ctx context.Context, requests []string) error {
	started := time.Now()
	var dbDoneAt time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if msg := s.board.firstFailure(); msg != "" {
			return errors.New(msg)
		}
		if msg := s.dps.firstProblem(); msg != "" {
			return errors.New(msg)
		}
		st, err := s.databaseState(ctx, requests)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if st.failed != "" {
			return errors.New(st.failed)
		}
		c := s.board.counts()
		if st.complete() {
			if dbDoneAt.IsZero() {
				dbDoneAt = time.Now()
			}
			seen, subject := c.Acknowledged, subjectAcknowledge
			if s.dps.receiver {
				// Every export must also show received and processed on the bus.
				seen, subject = min(c.Acknowledged, c.Received, c.Processed), subjectProcessed
			}
			if seen >= st.exports {
				return nil
			}
			if time.Since(dbDoneAt) > eventGrace {
				return fmt.Errorf("%d exports %s in the database but only %d complete lifecycles (through %s) seen on the bus", st.exports, s.finalStatus(), seen, subject)
			}
		}
		if s.out.quietFor() >= progressEvery {
			s.out.printf("waiting       %s: %s; %s", time.Since(started).Round(time.Second), c, st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-s.exited:
			return fmt.Errorf("%s exited unexpectedly: %v (its log is above)", e.name, e.err)
		case <-tick.C:
		case <-s.board.changed:
		}
	}
}

// finalStatus is where every export should end: processed when DPS answers as the receiver does,
// acknowledged otherwise.
func (s *Stack) finalStatus() lifecycle.Status {
	if s.dps.receiver {
		return lifecycle.Processed
	}
	return lifecycle.Acknowledged
}

// dbState is the pipeline's progress as the database records it.
type dbState struct {
	requests, handled, pending, exports, done int
	final                                     lifecycle.Status
	failed                                    string
}

func (d dbState) complete() bool {
	return d.handled == d.requests && d.pending == 0 && d.done == d.exports
}

func (d dbState) String() string {
	return fmt.Sprintf("database: %d/%d requests handled, %d records pending, %d/%d exports %s", d.handled, d.requests, d.pending, d.done, d.exports, d.final)
}

func (s *Stack) databaseState(ctx context.Context, requests []string) (dbState, error) {
	st := dbState{requests: len(requests), final: s.finalStatus()}
	err := s.pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM dps_export_requests WHERE request_id = ANY($1)),
		       (SELECT count(*) FROM dps_pending_records),
		       (SELECT count(*) FROM dps_exports WHERE request_id = ANY($1)),
		       (SELECT count(*) FROM dps_exports WHERE request_id = ANY($1) AND status = $2)`,
		requests, st.final).Scan(&st.handled, &st.pending, &st.exports, &st.done)
	if err != nil {
		return st, fmt.Errorf("read progress: %w", err)
	}
	var id, programme, reason string
	err = s.pool.QueryRow(ctx, `
		SELECT e.id::text, p.code, coalesce(e.last_error, '')
		FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
		WHERE e.request_id = ANY($1) AND e.status = ANY($2) ORDER BY coalesce(e.failed_at, e.rejected_at) LIMIT 1`,
		requests, lifecycle.Names([]lifecycle.Status{lifecycle.Failed, lifecycle.Rejected})).Scan(&id, &programme, &reason)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("read failed exports: %w", err)
	default:
		st.failed = fmt.Sprintf("export %s (%s) failed: %s", id, programme, reason)
	}
	return st, nil
}

// Verify checks what DPS received against the database: every exportable record (not a draft,
// administered, not discarded) arrived exactly once, and nothing else arrived.
func (s *Stack) Verify(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `
		SELECT uuid::text FROM vaccination_records
		WHERE NOT draft AND outcome = 'administered' AND discarded_at IS NULL`)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	seen := map[string]int{}
	files := 0
	for _, f := range s.dps.received() {
		if f.Problem != "" || f.Rejected || f.Uncollected {
			continue // its records go again, in a later export
		}
		files++
		for _, id := range f.UniqueIDs {
			seen[strings.ToLower(id)]++
		}
	}
	var missing, twice []string
	for _, id := range want {
		switch n := seen[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			twice = append(twice, id)
		}
		delete(seen, id)
	}
	var extra []string
	for id := range seen {
		extra = append(extra, id)
	}
	if len(missing)+len(twice)+len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("verify: of %d exportable records, %d never reached DPS, %d arrived more than once, and %d unexpected ids arrived (first: %s)",
			len(want), len(missing), len(twice), len(extra), first(missing, twice, extra))
	}
	s.out.printf("verified      all %d exportable records reached DPS exactly once, in %d files that pass the DPS check", len(want), files)
	return nil
}

func first(lists ...[]string) string {
	for _, l := range lists {
		if len(l) > 0 {
			return l[0]
		}
	}
	return "-"
}

// VerifyOutcomes checks the receiver's word on every exportable record (receiver mode only): the
// latest delivery of each has an accepted outcome. allowRefused names records the test expects to stay
// refused.
func (s *Stack) VerifyOutcomes(ctx context.Context, allowRefused map[string]bool) error {
	if !s.dps.receiver {
		return nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT r.uuid::text, coalesce(last.outcome, 'none')
		FROM vaccination_records r
		LEFT JOIN LATERAL (
		    SELECT er.outcome FROM dps_export_records er JOIN dps_exports e ON e.id = er.export_id
		    WHERE er.vaccination_record_id = r.id AND `+lifecycle.LiveCondition("e")+`
		    ORDER BY e.created_at DESC LIMIT 1
		) last ON true
		WHERE NOT r.draft AND r.outcome = 'administered' AND r.discarded_at IS NULL`)
	if err != nil {
		return fmt.Errorf("verify outcomes: %w", err)
	}
	type outcome struct{ id, outcome string }
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (outcome, error) {
		var o outcome
		err := row.Scan(&o.id, &o.outcome)
		return o, err
	})
	if err != nil {
		return fmt.Errorf("verify outcomes: %w", err)
	}
	bad := map[string][]string{}
	accepted := 0
	for _, o := range all {
		switch {
		case o.outcome == "accepted":
			accepted++
		case o.outcome == "refused" && allowRefused[o.id]:
		default:
			bad[o.outcome] = append(bad[o.outcome], o.id)
		}
	}
	if len(bad) > 0 {
		var parts []string
		for k, ids := range bad {
			parts = append(parts, fmt.Sprintf("%d %s (first %s)", len(ids), k, ids[0]))
		}
		sort.Strings(parts)
		return fmt.Errorf("verify outcomes: of %d exportable records, %d accepted by the receiver; not accepted: %s", len(all), accepted, strings.Join(parts, ", "))
	}
	s.out.printf("verified      all %d exportable records have an accepted outcome at the receiver (%d expected refusals)", len(all), len(all)-accepted)
	return nil
}

// printSummary prints one line per export the lifecycle showed.
func (s *Stack) printSummary() {
	exports := s.board.snapshot()
	if len(exports) == 0 {
		return
	}
	s.out.printf("summary       %s", s.board.counts())
	for _, e := range exports {
		status := lifecycle.Created.String()
		switch {
		case e.Rejected:
			status = "REJECTED " + e.FailReason
		case e.Failed:
			status = "FAILED " + e.FailReason
		case e.Processed:
			status = fmt.Sprintf("processed     %d accepted, %d refused", e.RowsAccepted, e.RowsRefused)
		case e.Received:
			status = "received"
		case e.Acknowledged:
			status = lifecycle.Acknowledged.String()
		case e.Sent:
			status = bus.EventSent
		}
		s.out.printf("  %-8s export %s  %5d rows  %-13s %s", e.Programme, e.ID, e.Rows, e.MeshMessageID, status)
	}
}
