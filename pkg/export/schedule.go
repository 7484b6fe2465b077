package export

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// scheduledRequestID is the request id (and Nats-Msg-Id) of the schedule's request for a programme on a
// day: "schedule:<PROGRAMME>:<YYYY-MM-DD>:<random UUID>", the date in Europe/London. The random part
// is what matters: an id anyone could compute could be published first (as a dry run, say) and the
// stream's duplicate window would then drop the night's real request without a word. One request per
// programme and day is ensured by dps_scheduled_requests in Postgres, not by the id.
func scheduledRequestID(programme, day string) string {
	return "schedule:" + programme + ":" + day + ":" + uuid.NewString()
}

// Schedule requests one export per programme each time its cron expression fires, evaluated in
// Europe/London (so "0 2 * * *" is 02:00 UK time in summer and in winter).
type Schedule struct {
	spec  cron.Schedule
	pool  *pgxpool.Pool
	log   *slog.Logger
	clock func() time.Time
}

// ScheduleConfig wires a Schedule.
type ScheduleConfig struct {
	// Spec is a five-field cron expression (PRODUCER_SCHEDULE).
	Spec string
	Pool *pgxpool.Pool
	// Logger; nil logs nothing.
	Logger *slog.Logger
}

// NewSchedule parses cfg.Spec and returns the schedule. It contacts nothing.
func NewSchedule(cfg ScheduleConfig) (*Schedule, error) {
	s, err := cron.ParseStandard(cfg.Spec)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", cfg.Spec, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Schedule{spec: s, pool: cfg.Pool, log: cfg.Logger, clock: time.Now}, nil
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
				s.log.Info("scheduled export requests recorded", slog.Int("programmes", n), slog.Time("fired_at", next))
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

// Publish records the requests of the firing at firedAt, one per programme in the programmes table,
// in dps_scheduled_requests and, in the same transaction, in the outbox, whose relay publishes them.
// A (programme, day) already recorded (by another replica, or an earlier try of this firing) is
// skipped, so each programme is requested once a day however many producers fire. It returns how many
// requests this call recorded.
func (s *Schedule) Publish(ctx context.Context, firedAt time.Time) (int, error) {
	day := firedAt.In(dps.London()).Format("2006-01-02")
	recorded := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		recorded = 0
		rows, err := tx.Query(ctx, sqlProgrammes)
		if err != nil {
			return fmt.Errorf("read programmes: %w", err)
		}
		progs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (programme, error) {
			var p programme
			err := row.Scan(&p.id, &p.code)
			return p, err
		})
		if err != nil {
			return fmt.Errorf("read programmes: %w", err)
		}
		for _, p := range progs {
			id := scheduledRequestID(p.code, day)
			tag, err := tx.Exec(ctx, `
				INSERT INTO dps_scheduled_requests (programme, run_date, request_id, fired_at) VALUES ($1, $2, $3, $4)
				ON CONFLICT (programme, run_date) DO NOTHING`, p.code, day, id, firedAt)
			if err != nil {
				return fmt.Errorf("record scheduled request for %s on %s: %w", p.code, day, err)
			}
			if tag.RowsAffected() == 0 {
				continue
			}
			req := bus.ExportRequest{RequestID: id, Programme: p.code, RequestedBy: "schedule", RequestedAt: firedAt.UTC()}
			if err := outbox.Enqueue(ctx, tx, bus.SubjectExportRequest, id, req); err != nil {
				return fmt.Errorf("enqueue request %s: %w", id, err)
			}
			recorded++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return recorded, nil
}
