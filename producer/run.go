package main

import (
	"context"
	"encoding/json"
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
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/export"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// Failpoints for the crash tests (see process.Failpoint).
const (
	failpointAfterCommit  = "producer.export.after-commit"  // exports committed, nothing published
	failpointAfterPublish = "producer.outbox.after-publish" // a message published, its outbox row not marked
)

// sweepEvery is how often `run` deletes orphaned export files.
const sweepEvery = 15 * time.Minute

// flushTimeout bounds the outbox flush a command or a draining service does before it exits.
const flushTimeout = 30 * time.Second

func run(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	switch cmd.name {
	case "run":
		return runService(ctx, cfg, log)
	case "migrate":
		return runMigrate(ctx, cfg, log)
	case "seed":
		return runSeed(ctx, cfg, cmd, stdout)
	case "export":
		return runExport(ctx, cfg, cmd, log, stdout)
	case "request":
		return runRequest(ctx, cfg, cmd, log, stdout)
	case "replay":
		return runReplay(ctx, cfg, cmd, log, stdout)
	case "dead-letters":
		return runDeadLetters(ctx, cfg, cmd, stdout)
	case "redrive":
		return runRedrive(ctx, cfg, cmd, log, stdout)
	}
	return process.Usagef("unknown command %q", cmd.name)
}

// runService is `producer run`: request consumer, schedule, outbox relay, orphan sweep and the HTTP
// server, until SIGINT/SIGTERM; then the request in hand finishes, the outbox is flushed and NATS drained.
func runService(ctx context.Context, cfg config.Producer, log *slog.Logger) error {
	reg := health.NewRegistry()
	metrics := export.NewMetrics(reg)
	deps, objects, exporter, err := openExporter(ctx, cfg, log, "producer", metrics)
	if err != nil {
		return err
	}
	defer deps.Close()
	if codes, err := exporter.ProgrammeCodes(ctx); err == nil {
		metrics.InitProgrammes(codes)
	}
	srv := health.NewServer(cfg.HTTPAddr, reg, log, deps.Checks()...)
	if err := srv.Listen(); err != nil {
		return &config.Error{Var: "HTTP_ADDR", Problem: "cannot listen: " + err.Error()}
	}
	consumer := export.NewRequestConsumer(exporter, deps.JS, log, metrics)
	schedule, err := export.NewSchedule(cfg.Schedule, deps.Pool, deps.JS, log)
	if err != nil {
		return &config.Error{Var: "PRODUCER_SCHEDULE", Problem: err.Error()}
	}
	relay := outbox.NewRelay(deps.Pool, deps.JS, log)
	log.Info("producer running", slog.String("http_addr", srv.Addr()), slog.String("schedule", cfg.Schedule),
		slog.Time("next_scheduled_export", schedule.Next(time.Now())))

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Any part failing for good stops the others: the process exits non-zero and is restarted.
	goPart := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	goPart("http", srv.Run)
	goPart("request consumer", consumer.Run)
	goPart("schedule", schedule.Run)
	goPart("outbox relay", relay.Run)
	goPart("orphan sweep", func(ctx context.Context) error {
		sweepLoop(ctx, deps, objects, log)
		return nil
	})
	<-ctx.Done()
	log.Info("producer stopping: finishing the request in hand")
	wg.Wait()
	// What the last export enqueued goes out now rather than at the next start.
	flushCtx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancelFlush()
	if n, err := relay.Flush(flushCtx); err != nil {
		log.Warn("outbox not fully flushed at shutdown; the next producer publishes the rest", slog.Any("error", err))
	} else if n > 0 {
		log.Info("outbox flushed at shutdown", slog.Int("published", n))
	}
	close(errs)
	for err := range errs {
		return err
	}
	log.Info("producer stopped")
	return nil
}

// openExporter opens the database and NATS (migrating and declaring the topology on the way), the
// export bucket, and an Exporter over them. metrics may be nil. The caller closes the Deps.
func openExporter(ctx context.Context, cfg config.Producer, log *slog.Logger, client string, metrics *export.Metrics) (*process.Deps, jetstream.ObjectStore, *export.Exporter, error) {
	deps, err := process.Open(ctx, log, cfg.Shared, client)
	if err != nil {
		return nil, nil, nil, err
	}
	objects, err := bus.ExportStore(ctx, deps.JS)
	if err != nil {
		deps.Close()
		return nil, nil, nil, err
	}
	exporter := export.New(deps.Pool, objects, export.Config{UniqueIDURI: cfg.UniqueIDURI, Logger: log, Metrics: metrics})
	return deps, objects, exporter, nil
}

func sweepLoop(ctx context.Context, deps *process.Deps, objects jetstream.ObjectStore, log *slog.Logger) {
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
	}
}

func runMigrate(ctx context.Context, cfg config.Producer, log *slog.Logger) error {
	if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	log.Info("database migrated", slog.Int("version", int(store.LatestVersion())))
	return nil
}

func runSeed(ctx context.Context, cfg config.Producer, cmd command, stdout io.Writer) error {
	if err := store.EnsureDatabase(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	if err := store.Migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
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
	deps, _, exporter, err := openExporter(ctx, cfg, log, "producer-export", nil)
	if err != nil {
		return err
	}
	defer deps.Close()
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
	enc := json.NewEncoder(stdout)
	for _, r := range results {
		if eerr := enc.Encode(r); eerr != nil {
			return eerr
		}
	}
	if err != nil {
		return err
	}
	if cmd.dryRun {
		return nil
	}
	process.Failpoint(failpointAfterCommit)
	relay := outbox.NewRelay(deps.Pool, deps.JS, log, outbox.OnPublished(func(string) { process.Failpoint(failpointAfterPublish) }))
	flushCtx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if _, err := relay.Flush(flushCtx); err != nil {
		return fmt.Errorf("exports committed, but their messages are not all published yet (the running producer's relay will publish them): %w", err)
	}
	return nil
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
		return nil, process.Usagef("export: with --programme ALL, --out must be an existing directory")
	}
	return func(r export.Result) (io.WriteCloser, error) {
		path := cmd.out
		if dir {
			path = filepath.Join(cmd.out, r.Filename)
		}
		return os.Create(path)
	}, nil
}

// runRequest is `producer request`: publish a request exactly as another system would.
func runRequest(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	nc, js, err := bus.Connect(ctx, cfg.NATSURL, cfg.NATSCreds, "producer-request")
	if err != nil {
		return err
	}
	defer nc.Close()
	// The streams normally exist already; making sure costs little and saves a request that would
	// otherwise wait for a stream nobody has created.
	if err := bus.EnsureTopology(ctx, js, bus.WithReplicas(cfg.StreamReplicas)); err != nil {
		return err
	}
	id := cmd.requestID
	if id == "" {
		id = uuid.NewString()
	}
	req := bus.ExportRequest{RequestID: id, Programme: cmd.programme, RequestedBy: cmd.requestedBy,
		RequestedAt: time.Now().UTC(), DryRun: cmd.dryRun}
	ack, err := bus.Publish(ctx, js, bus.SubjectExportRequest, id, req)
	if err != nil {
		return err
	}
	log.Info("export request published", slog.String("request_id", id), slog.Uint64("stream_seq", ack.Sequence),
		slog.Bool("duplicate", ack.Duplicate))
	return json.NewEncoder(stdout).Encode(req)
}

// runReplay is `producer replay`.
func runReplay(ctx context.Context, cfg config.Producer, cmd command, log *slog.Logger, stdout io.Writer) error {
	deps, _, exporter, err := openExporter(ctx, cfg, log, "producer-replay", nil)
	if err != nil {
		return err
	}
	defer deps.Close()
	sum, err := replay.Run(ctx, deps.JS, bus.StreamRequests, bus.SubjectExportRequest, cmd.replayRange,
		exporter.ReplayHandler(cmd.replay.Force, cmd.replay.DryRun))
	if perr := sum.Print(stdout); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	if !cmd.replay.DryRun {
		flushCtx, cancel := context.WithTimeout(ctx, flushTimeout)
		defer cancel()
		if _, err := outbox.NewRelay(deps.Pool, deps.JS, log).Flush(flushCtx); err != nil {
			return fmt.Errorf("replayed exports committed, but their messages are not all published yet: %w", err)
		}
	}
	return sum.Err()
}
