package process

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/exportreport"
	"github.com/nhs-dps/dps-pipeline/pkg/health"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshwatch"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
)

// FlushTimeout bounds publishing, at exit, the events a service or command enqueued last.
const FlushTimeout = 10 * time.Second

// Service is the part of a long-running command's life that does not depend on its work: the
// /healthz and /metrics server, the outbox relay, and the flush of pending events at exit.
type Service struct {
	Name     string               // "sender": the start line is "<Name> started"
	HTTPAddr string               // HTTP_ADDR
	Log      *slog.Logger         // the process logger
	Deps     *Deps                // from Open; its NATS and Postgres probes are always served
	Registry *prometheus.Registry // served on /metrics
	Checks   []health.Check       // the work's own probes, after the connections'
	Attrs    []slog.Attr          // settings worth a line at start, after http_addr
	// RelayExcept lists outbox subjects this process's NATS user may not publish; its relay leaves
	// those rows to another process's (see outbox.RelayConfig.Except).
	RelayExcept []string
	// Consumer is the durable consumer the work reads (bus.ConsumerProducer, ...): its backlog is on
	// /metrics and /healthz reports it when its work stops moving. Empty for none.
	Consumer string
	// ConsumerPaused says the work does not consume on purpose (the sender with MESH_JOBS_ENABLED=false):
	// the consumer check reports "disabled" instead of a stall.
	ConsumerPaused bool
	// Health bounds what /healthz calls stuck; zero fields take config.DefaultHealth.
	Health config.Health
}

// Open is what a service does before its work can start, with /healthz already answering: it listens
// on HTTPAddr (a busy address is a configuration error) and serves /healthz and /metrics, answering
// 503 with what it waits for, then opens the database and NATS and declares the streams, consumers and
// bucket, waiting with backoff as long as NATS is slow, electing or unreachable, with a WARN every few
// seconds. Only a configuration error or a refusal that cannot heal ends it early. Run keeps the same
// server. The caller closes the Deps.
func (s Service) Open(ctx context.Context, shared config.Shared) (*Deps, error) {
	d := newDeps(s.Log)
	srv := health.NewServer(s.HTTPAddr, s.registry(), s.Log, d.Checks()...)
	if err := srv.Listen(); err != nil {
		return nil, &config.Error{Var: "HTTP_ADDR", Problem: fmt.Sprintf("cannot listen: %v", err)}
	}
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(hctx); err != nil {
			s.Log.Error("health server", slog.Any("error", err))
		}
	}()
	d.health = srv
	d.stopHealth = sync.OnceFunc(func() { stop(); <-done })
	if err := d.open(ctx, s.Log, shared, s.Name, true); err != nil {
		d.stopHealth()
		return nil, err
	}
	return d, nil
}

// OpenWithMESH is Open followed by NewJobsMESHClient, for the services that call MESH. It registers the
// MESH metrics (errors by code, certificate expiry) on the Registry, and the Deps then carry the
// certificate expiry warner that Run runs. The caller closes the Deps.
func (s Service) OpenWithMESH(ctx context.Context, shared config.Shared, meshCfg config.MESH) (*Deps, *mesh.Client, error) {
	// The TLS material is checked before anything is connected, whatever the gate says: a bad file
	// found only on the day the gate opens would stop the first night's export.
	if _, err := MESHTLSConfig(meshCfg); err != nil {
		return nil, nil, err
	}
	certs, err := MESHCertificates(meshCfg)
	if err != nil {
		return nil, nil, err
	}
	metrics := meshwatch.NewMetrics(s.Registry, certs)
	deps, err := s.Open(ctx, shared)
	if err != nil {
		return nil, nil, err
	}
	client, err := NewJobsMESHClient(meshCfg, s.Log, WithMESHErrors(metrics.ObserveError))
	if err != nil {
		deps.Close()
		return nil, nil, err
	}
	deps.certWarner = meshwatch.NewWarner(certs, s.Log, nil)
	return deps, client, nil
}

func (s Service) registry() *prometheus.Registry {
	if s.Registry == nil {
		return health.NewRegistry()
	}
	return s.Registry
}

// Run serves health and metrics and relays the outbox while work runs, until work returns (it is
// expected to drain once ctx ends), then publishes what is still pending. The health server and the
// relay outlive ctx until work has returned, so that the events of the last units of work are
// published and /healthz answers while the drain goes on. It returns work's error. When the Deps come
// from Service.Open, Run keeps the health server Open started and adds the work's checks to it.
func (s Service) Run(ctx context.Context, work func(context.Context) error) error {
	srv := s.Deps.health
	sideCtx, stopSide := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSide()
	var wg sync.WaitGroup
	if srv != nil {
		for _, c := range s.Checks {
			srv.AddCheck(c)
		}
	} else {
		srv = health.NewServer(s.HTTPAddr, s.registry(), s.Log, append(s.Deps.Checks(), s.Checks...)...)
		if err := srv.Listen(); err != nil {
			return &config.Error{Var: "HTTP_ADDR", Problem: fmt.Sprintf("cannot listen: %v", err)}
		}
		wg.Go(func() {
			if err := srv.Run(sideCtx); err != nil {
				s.Log.Error("health server", slog.Any("error", err))
			}
		})
	}
	outboxMetrics := outbox.NewMetrics(s.Registry)
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: s.Deps.Pool, JS: s.Deps.JS, Logger: s.Log, Metrics: outboxMetrics, Except: s.RelayExcept})
	if err != nil {
		return err
	}
	checks, progress := s.progressChecks(relay)
	for _, c := range checks {
		srv.AddCheck(c)
	}
	attrs := append([]any{slog.String("http_addr", srv.Addr())}, attrsToAny(s.Attrs)...)
	s.Log.Info(s.Name+" started", attrs...)
	if s.Deps.certWarner != nil {
		// Checked once before the work starts, so that an expired certificate is the first thing in the log.
		s.Deps.certWarner.Check(ctx)
	}

	wg.Go(func() {
		if err := relay.Run(sideCtx); err != nil {
			s.Log.Error("outbox relay", slog.Any("error", err))
		}
	})
	if s.Deps.certWarner != nil {
		wg.Go(func() { s.Deps.certWarner.RunDaily(sideCtx) })
	}
	if progress != nil {
		wg.Go(func() { progress.Run(sideCtx) })
	}
	err = work(ctx)
	stopSide()
	wg.Wait()

	FlushOutbox(ctx, s.Deps, s.Log, outboxMetrics, s.RelayExcept...)
	if s.Deps.stopHealth != nil {
		s.Deps.stopHealth()
	}
	return err
}

// progressChecks registers the metrics of what may be stuck (the consumer's backlog, the outbox's,
// exports waiting, dead letters) and returns the /healthz probes that report it: "consumer", "outbox"
// and "outbox_relay". The consumer's progress is returned for sampling, nil without a consumer.
func (s Service) progressChecks(relay *outbox.Relay) ([]health.Check, *bus.ConsumerProgress) {
	bounds := s.Health
	if bounds.ConsumerStallAfter <= 0 {
		bounds.ConsumerStallAfter = config.DefaultHealth.ConsumerStallAfter
	}
	if bounds.OutboxMaxAge <= 0 {
		bounds.OutboxMaxAge = config.DefaultHealth.OutboxMaxAge
	}
	if bounds.RelayMaxFailures <= 0 {
		bounds.RelayMaxFailures = config.DefaultHealth.RelayMaxFailures
	}
	s.Registry.MustRegister(
		outbox.BacklogCollector{Pool: s.Deps.Pool, Log: s.Log},
		bus.DeadLetterCollector{JS: s.Deps.JS, Log: s.Log},
		exportreport.AgeCollector{Pool: s.Deps.Pool, Log: s.Log},
	)
	checks := []health.Check{
		{Name: "outbox", Probe: func(ctx context.Context) error {
			rows, oldest, err := outbox.Backlog(ctx, s.Deps.Pool)
			if err != nil {
				return nil // the postgres check says so
			}
			if oldest > bounds.OutboxMaxAge {
				return fmt.Errorf("stuck: %d events unpublished, the oldest for %s (HEALTH_OUTBOX_MAX_AGE=%s)",
					rows, oldest.Round(time.Second), bounds.OutboxMaxAge)
			}
			return nil
		}},
		{Name: "outbox_relay", Probe: func(context.Context) error {
			if n, err := relay.Failing(); n >= bounds.RelayMaxFailures {
				return fmt.Errorf("failing: %d attempts in a row failed (HEALTH_RELAY_MAX_FAILURES=%d), the last: %w",
					n, bounds.RelayMaxFailures, err)
			}
			return nil
		}},
	}
	if s.Consumer == "" {
		return checks, nil
	}
	progress := bus.NewConsumerProgress(s.Deps.JS, bus.StreamOfConsumer(s.Consumer), s.Consumer, bounds.ConsumerStallAfter)
	s.Registry.MustRegister(progress)
	checks = append(checks, health.Check{Name: "consumer", Probe: func(ctx context.Context) error {
		if s.ConsumerPaused {
			return health.ErrDisabled
		}
		return progress.Check(ctx)
	}})
	return checks, progress
}

// FlushOutbox publishes the events still pending in the outbox within FlushTimeout, even when ctx has
// ended, rather than leaving them to the next process to start; a failure is only logged, since that
// next process will publish them. metrics may be nil.
func FlushOutbox(ctx context.Context, deps *Deps, log *slog.Logger, metrics *outbox.Metrics, except ...string) {
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FlushTimeout)
	defer cancel()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: deps.Pool, JS: deps.JS, Logger: log, Metrics: metrics, Except: except})
	if err == nil {
		_, err = relay.Flush(flushCtx)
	}
	if err != nil {
		log.Warn("publish pending events at exit; the next process to start will", slog.Any("error", err))
	}
}

// NewJobsMESHClient is NewMESHClient when MESH_JOBS_ENABLED is true and nil otherwise: with the gate
// closed a service runs without MESH credentials and must not call MESH.
//
// Either way the TLS material is read and checked now, so that a bad certificate, key, passphrase or CA
// bundle stops the process at start (exit 2, naming its variable) rather than on the day the gate
// opens, and settings that weaken the connection to MESH are named in a WARN.
func NewJobsMESHClient(cfg config.MESH, log *slog.Logger, opts ...MESHOption) (*mesh.Client, error) {
	if _, err := MESHTLSConfig(cfg); err != nil {
		return nil, err
	}
	WarnWeakMESH(cfg, log)
	if !cfg.JobsEnabled {
		return nil, nil
	}
	return NewMESHClient(cfg, log, opts...)
}

// WarnWeakMESH logs a WARN for each MESH setting that weakens the connection where it is allowed
// (configuration refuses both for an nhs.uk host): plain http, and certificate verification turned
// off (once a client is built, mesh.New says that one itself, with the URL).
func WarnWeakMESH(cfg config.MESH, log *slog.Logger) {
	for _, w := range cfg.Warnings() {
		if w.Var == "MESH_DISABLE_SSL_VERIFICATION" && cfg.JobsEnabled {
			continue
		}
		log.Warn(w.Message, slog.String("variable", w.Var))
	}
}

func attrsToAny(attrs []slog.Attr) []any {
	out := make([]any, len(attrs))
	for i, a := range attrs {
		out[i] = a
	}
	return out
}
