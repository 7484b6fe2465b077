package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/export"
	"github.com/nhs-dps/dps-pipeline/pkg/failpoint"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Failpoints for the crash tests (see pkg/failpoint).
const (
	failpointAfterCommit  = "producer.export.after-commit"  // exports committed, nothing published
	failpointAfterPublish = "producer.outbox.after-publish" // a message published, its outbox row not marked
)

// sweepEvery is how often `run` deletes orphaned export files.
const sweepEvery = 15 * time.Minute

// flushTimeout bounds the outbox flush `producer export` does before it exits.
const flushTimeout = 30 * time.Second

// runService is `producer run`: the request consumer, the schedule and the orphan sweep run inside
// process.Service (HTTP server, outbox relay) until SIGINT/SIGTERM; then the request in hand finishes,
// the outbox is flushed and NATS drained.
func runService(ctx context.Context, cfg config.Producer, _ command, log *slog.Logger, _ io.Writer) error {
	reg := health.NewRegistry()
	metrics := export.NewMetrics(reg)
	svc := process.Service{Name: "producer", HTTPAddr: cfg.HTTPAddr, Log: log, Registry: reg}
	deps, err := svc.Open(ctx, cfg.Shared)
	if err != nil {
		return err
	}
	defer deps.Close()
	objects, exporter, err := newExporter(ctx, cfg, deps, log, metrics)
	if err != nil {
		return err
	}
	if codes, err := exporter.ProgrammeCodes(ctx); err == nil {
		metrics.InitProgrammes(codes)
	}
	consumer, err := export.NewRequestConsumer(export.RequestConsumerConfig{Exporter: exporter, JS: deps.JS, Logger: log, Metrics: metrics})
	if err != nil {
		return err
	}
	schedule, err := export.NewSchedule(export.ScheduleConfig{Spec: cfg.Schedule, Pool: deps.Pool, Logger: log})
	if err != nil {
		return &config.Error{Var: "PRODUCER_SCHEDULE", Problem: err.Error()}
	}
	svc.Deps, svc.Consumer, svc.Health = deps, bus.ConsumerProducer, cfg.Health
	svc.Attrs = []slog.Attr{slog.String("schedule", cfg.Schedule), slog.Time("next_scheduled_export", schedule.Next(time.Now()))}
	err = svc.Run(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		// Any part failing for good stops the others: the process exits non-zero and is restarted.
		goPart := func(name string, f func(context.Context) error) {
			wg.Go(func() {
				if err := f(ctx); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					cancel()
				}
			})
		}
		goPart("request consumer", consumer.Run)
		goPart("schedule", schedule.Run)
		goPart("orphan sweep", func(ctx context.Context) error {
			sweepLoop(ctx, deps, objects, cfg.ObjectRetention, log)
			return nil
		})
		<-ctx.Done()
		log.Info("producer stopping: finishing the request in hand")
		wg.Wait()
		close(errs)
		return <-errs // the first part's error, or nil once they all stopped cleanly
	})
	if err != nil {
		return err
	}
	log.Info("producer stopped")
	return nil
}

// oneShotWait is the default --wait: how long `producer export`, `producer request` and `producer
// topology` wait for NATS and for the streams and bucket they use. Export and request never create
// them: the services or `producer topology` do.
const oneShotWait = 2 * time.Minute

// notDeclaredHint is the end of a one-shot command's error when what it needs is not there in time.
const notDeclaredHint = "NATS is unreachable or electing a leader, or the topology is not declared yet: " +
	"start a producer, sender or tracker service, or run `producer topology` as a user allowed to declare it"

// newExporter opens the export bucket, waiting while NATS is unavailable (the service until ctx ends,
// a command as long as its context allows), and builds an Exporter over it and deps. metrics may be nil.
func newExporter(ctx context.Context, cfg config.Producer, deps *process.Deps, log *slog.Logger, metrics *export.Metrics) (jetstream.ObjectStore, *export.Exporter, error) {
	var objects jetstream.ObjectStore
	err := deps.Retry.Do(ctx, "object store "+bus.BucketExports, func(ctx context.Context) (err error) {
		objects, err = bus.ExportStore(ctx, deps.JS)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	exporter, err := export.New(export.Config{Pool: deps.Pool, Objects: objects, UniqueIDURI: cfg.UniqueIDURI, SenderODS: cfg.SenderODS, Logger: log, Metrics: metrics})
	return objects, exporter, err
}

func sweepLoop(ctx context.Context, deps *process.Deps, objects jetstream.ObjectStore, retention time.Duration, log *slog.Logger) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := export.SweepOrphans(ctx, deps.Pool, objects, export.OrphanAge, time.Now(), log); err != nil {
			log.Warn("orphan sweep", slog.Any("error", err))
		} else if n > 0 {
			log.Info("orphan sweep", slog.Int("deleted", n))
		}
		if n, err := export.SweepRetained(ctx, deps.Pool, objects, retention, time.Now(), log); err != nil {
			log.Warn("retention sweep", slog.Any("error", err))
		} else if n > 0 {
			log.Info("retention sweep", slog.Int("deleted", n))
		}
	}
}

// runMigrate is `producer migrate`: it applies the migrations to the database DATABASE_URL names,
// creating that database first only with --create-database.
func runMigrate(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, _ io.Writer) error {
	if cmd.createDatabase {
		if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	}
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return process.DatabaseError(err)
	}
	log.Info("database migrated", slog.Int("version", int(store.LatestVersion())))
	return nil
}

func runSeed(ctx context.Context, cfg config.Producer, cmd command, _ *slog.Logger, stdout io.Writer) error {
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return process.DatabaseError(err)
	}
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return process.DatabaseError(err)
	}
	defer pool.Close()
	sum, err := demodata.Seed(ctx, pool, demodata.Options{Records: cmd.records, Seed: cmd.seed})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeded %d vaccination records for %d patients; %d exportable\n", sum.Records, sum.Patients, sum.Exportable)
	fmt.Fprintf(stdout, "%-10s %8s %10s %7s %16s %9s\n", "PROGRAMME", "RECORDS", "EXPORTABLE", "DRAFTS", "NOT_ADMINISTERED", "DISCARDED")
	for _, p := range demodata.Programmes {
		s, ok := sum.Programmes[p.Code]
		if !ok {
			continue
		}
		fmt.Fprintf(stdout, "%-10s %8d %10d %7d %16d %9d\n", p.Code, s.Records, s.Exportable, s.Drafts, s.NotAdministered, s.Discarded)
	}
	return nil
}

// runExport is `producer export`: the service's work once, then the outbox flushed.
func runExport(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	openCopy, err := copyOpener(cmd)
	if err != nil {
		return err
	}
	// Connecting and finding the bucket are bounded; the export itself is not.
	waitCtx, cancelWait := context.WithTimeout(ctx, cmd.wait)
	defer cancelWait()
	deps, err := process.Open(waitCtx, log, cfg.Shared, "producer-export")
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	defer deps.Close()
	_, exporter, err := newExporter(waitCtx, cfg, deps, log, nil)
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	req := export.Request{
		ID:          "export:" + uuid.NewString(),
		Programme:   cmd.programme,
		RequestedBy: "producer export (" + defaultRequester() + ")",
		RequestedAt: time.Now().UTC(),
		DryRun:      cmd.dryRun,
	}
	var opts []export.Option
	if openCopy != nil {
		opts = append(opts, export.WithCopy(openCopy))
	}
	results, err := exporter.Export(ctx, req, opts...)
	if werr := cli.WriteJSONLines(stdout, results); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if cmd.dryRun {
		return nil
	}
	failpoint.Reach(failpointAfterCommit)
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: deps.Pool, JS: deps.JS, Logger: log,
		OnPublished: func(string) { failpoint.Reach(failpointAfterPublish) }})
	if err != nil {
		return err
	}
	flushCtx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if _, err := relay.Flush(flushCtx); err != nil {
		return fmt.Errorf("exports committed, but their messages are not all published yet (the running producer's relay will publish them): %w", err)
	}
	return nil
}

// oneShotError explains a one-shot command's wait that ran out (not one interrupted by a signal).
func oneShotError(ctx context.Context, cmd command, err error) error {
	if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("gave up after --wait %s: %w (%s)", cmd.wait, err, notDeclaredHint)
	}
	return err
}

// copyOpener turns --out into the export's copy writer: a file path for one programme, or a directory
// (required for ALL) that gets each file under its DPS name.
func copyOpener(cmd command) (func(export.Result) (io.WriteCloser, error), error) {
	if cmd.out == "" {
		return nil, nil
	}
	dir := false
	if fi, err := os.Stat(cmd.out); err == nil && fi.IsDir() {
		dir = true
	}
	if cmd.programme == export.AllProgrammes && !dir {
		return nil, cli.Usagef("with --programme ALL, --out must be an existing directory")
	}
	return func(r export.Result) (io.WriteCloser, error) {
		path := cmd.out
		if dir {
			path = filepath.Join(cmd.out, r.Filename)
		}
		return createPrivate(path)
	}, nil
}

// createPrivate creates (or truncates) path for the owner alone: an export file holds patient data.
// A file that already existed with wider permissions is narrowed before anything is written to it.
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// runRequest is `producer request`: publish a request exactly as another system would.
func runRequest(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	waitCtx, cancel := context.WithTimeout(ctx, cmd.wait)
	defer cancel()
	status := &bus.Status{}
	nc, js, err := bus.Connect(waitCtx, process.NATSOptions(cfg.Shared, "producer-request", log, status))
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	defer nc.Close()
	id := cmd.requestID
	if id == "" {
		id = uuid.NewString()
	}
	req := bus.ExportRequest{RequestID: id, Programme: cmd.programme, RequestedBy: cmd.requestedBy,
		RequestedAt: time.Now().UTC(), DryRun: cmd.dryRun}
	// Only publish: the stream must exist. While it does not, or has no leader, the publish is retried
	// (the request id makes that safe) until oneShotWait has passed.
	var ack *jetstream.PubAck
	ambiguous := false // an attempt may have been stored although its ack never came
	retry := bus.Retry{Log: log, Status: status, AttemptTimeout: 5 * time.Second}
	err = retry.Do(waitCtx, "stream "+bus.StreamRequests+" to store the request", func(ctx context.Context) (err error) {
		ack, err = bus.PublishTracked(ctx, js, bus.SubjectExportRequest, id, req, &ambiguous)
		return err
	})
	if err != nil {
		return oneShotError(ctx, cmd, err)
	}
	if ack.Duplicate && ambiguous {
		// During an election an attempt can be stored and its ack lost: the duplicate is then most likely
		// our own. (With a --request-id reused within the duplicate window it could be someone else's;
		// without reading the stream, which the requester may not, the two cannot be told apart.)
		log.Info("export request stored by an earlier attempt whose acknowledgement was lost", slog.String("request_id", id),
			slog.Uint64("stream_seq", ack.Sequence))
		return json.NewEncoder(stdout).Encode(req)
	}
	if ack.Duplicate {
		// The stream kept the first message with this id and dropped this one: saying "published" would
		// hide that this request, with its own content, will never be handled.
		return fmt.Errorf("request id %q was already published in the last %s; the stream kept the first and dropped this one (use another --request-id)",
			id, bus.DuplicateWindow)
	}
	log.Info("export request published", slog.String("request_id", id), slog.Uint64("stream_seq", ack.Sequence))
	return json.NewEncoder(stdout).Encode(req)
}
