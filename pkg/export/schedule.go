package export

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

// ScheduledRequestID is the request id (and Nats-Msg-Id) of the schedule's request for a programme on
// a day: "schedule:<PROGRAMME>:<YYYY-MM-DD>", the date in Europe/London. Every replica's schedule
// publishes the same ids, so the stream's duplicate window keeps one of each, and the request table
// keeps a late duplicate from exporting twice.
func ScheduledRequestID(programme string, firedAt time.Time) string {
	return "schedule:" + programme + ":" + firedAt.In(dps.London()).Format("2006-01-02")
}

// Schedule publishes one export request per programme each time its cron expression fires, evaluated
// in Europe/London (so "0 2 * * *" is 02:00 UK time in summer and in winter).
type Schedule struct {
	spec  cron.Schedule
	pool  *pgxpool.Pool
	js    jetstream.JetStream
	log   *slog.Logger
	clock func() time.Time
}

// NewSchedule parses spec, a five-field cron expression.
func NewSchedule(spec string, pool *pgxpool.Pool, js jetstream.JetStream, log *slog.Logger) (*Schedule, error) {
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", spec, err)
	}
	return &Schedule{spec: s, pool: pool, js: js, log: log, clock: time.Now}, nil
}

// Next is the first firing after t.
func (s *Schedule) Next(t time.Time) time.Time { return s.spec.Next(t.In(dps.London())) }

// Run fires until ctx ends. A firing whose publication fails is retried until it succeeds or the next
// firing is due; publishing the same ids again is harmless.
func (s *Schedule) Run(ctx context.Context) error {
	for {
		next := s.Next(s.clock())
		s.log.Info("next scheduled export", slog.Time("at", next))
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		deadline := s.Next(next)
		for wait := time.Second; ; wait = min(wait*2, time.Minute) {
			n, err := s.Publish(ctx, next)
			if err == nil {
				s.log.Info("scheduled export requests published", slog.Int("programmes", n), slog.Time("fired_at", next))
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if s.clock().Add(wait).After(deadline) {
				s.log.Error("scheduled export requests not published before the next firing", slog.Any("error", err))
				break
			}
			s.log.Warn("could not publish scheduled export requests; will retry", slog.Any("error", err), slog.Duration("retry_in", wait))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
}

// Publish publishes the requests of the firing at firedAt, one per programme in the programmes table,
// and returns how many.
func (s *Schedule) Publish(ctx context.Context, firedAt time.Time) (int, error) {
	rows, err := s.pool.Query(ctx, sqlProgrammes)
	if err != nil {
		return 0, fmt.Errorf("read programmes: %w", err)
	}
	progs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (programme, error) {
		var p programme
		return p, row.Scan(&p.id, &p.code)
	})
	if err != nil {
		return 0, fmt.Errorf("read programmes: %w", err)
	}
	for _, p := range progs {
		id := ScheduledRequestID(p.code, firedAt)
		req := bus.ExportRequest{RequestID: id, Programme: p.code, RequestedBy: "schedule", RequestedAt: firedAt.UTC()}
		if _, err := bus.Publish(ctx, s.js, bus.SubjectExportRequest, id, req); err != nil {
			return 0, fmt.Errorf("publish request %s: %w", id, err)
		}
	}
	return len(progs), nil
}
