package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// What is stuck on the bus, for /metrics and /healthz: a durable consumer's backlog read from its info
// at scrape time, whether its work moves, and the dead letters stored per stage.

// StreamOfConsumer is the stream a durable consumer of the topology reads, "" for an unknown name.
func StreamOfConsumer(name string) string {
	for _, c := range NewTopology().Consumers() {
		if c.Config.Durable == name {
			return c.Stream
		}
	}
	return ""
}

// ConsumerProgress follows one durable consumer and tells when it has work that does not move: messages
// pending or awaiting their ack while its ack floor stays where it is and its backlog does not shrink,
// for longer than StallAfter. The consumer is shared by every replica, so the verdict is the consumer's,
// not this process's share of it. Sample it regularly (Run does); each scrape and probe samples too.
type ConsumerProgress struct {
	js         jetstream.JetStream
	stream     string
	consumer   string
	stallAfter time.Duration
	now        func() time.Time

	mu          sync.Mutex
	sampled     bool
	outstanding uint64    // pending + ack pending at the last sample
	ackFloor    uint64    // stream sequence of the ack floor at the last sample
	movedAt     time.Time // the last sign of progress, or when work appeared
	last        *jetstream.ConsumerInfo
	lastErr     error
}

// NewConsumerProgress watches consumer on stream. stallAfter is HEALTH_CONSUMER_STALL_AFTER.
func NewConsumerProgress(js jetstream.JetStream, stream, consumer string, stallAfter time.Duration) *ConsumerProgress {
	return &ConsumerProgress{js: js, stream: stream, consumer: consumer, stallAfter: stallAfter, now: time.Now}
}

// Name is the consumer's durable name.
func (p *ConsumerProgress) Name() string { return p.consumer }

// Sample reads the consumer's info and updates the progress it has seen.
func (p *ConsumerProgress) Sample(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	info, err := p.info(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	if err != nil {
		return nil, err
	}
	now := p.now()
	outstanding := info.NumPending + uint64(info.NumAckPending)
	switch {
	case !p.sampled, outstanding == 0, p.outstanding == 0:
		// Nothing to do, or work that has just appeared: its clock starts now.
		p.movedAt = now
	case info.AckFloor.Stream > p.ackFloor, outstanding < p.outstanding:
		p.movedAt = now
	}
	p.sampled = true
	p.outstanding = outstanding
	p.ackFloor = info.AckFloor.Stream
	p.last = info
	return info, nil
}

func (p *ConsumerProgress) info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := p.js.Consumer(ctx, p.stream, p.consumer)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", p.consumer, p.stream, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", p.consumer, p.stream, err)
	}
	return info, nil
}

// Stalled is how long the consumer's work has not moved, zero when it has none or it moves.
func (p *ConsumerProgress) Stalled() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.sampled || p.outstanding == 0 {
		return 0
	}
	return p.now().Sub(p.movedAt)
}

// ErrStalled is wrapped by Check's error when the consumer's work has not moved for StallAfter.
var ErrStalled = errors.New("stalled")

// Check samples the consumer and returns an error naming it when its work has not moved for longer
// than StallAfter: the /healthz probe. Failing to read the consumer is not a stall (the nats check
// reports NATS itself), so it passes.
func (p *ConsumerProgress) Check(ctx context.Context) error {
	info, err := p.Sample(ctx)
	if err != nil {
		return nil
	}
	stalled := p.Stalled()
	if stalled <= p.stallAfter {
		return nil
	}
	return fmt.Errorf("%w: consumer %s on %s has %d pending and %d awaiting acknowledgement, and nothing was acknowledged for %s (HEALTH_CONSUMER_STALL_AFTER=%s)",
		ErrStalled, p.consumer, p.stream, info.NumPending, info.NumAckPending, stalled.Round(time.Second), p.stallAfter)
}

// SampleInterval is how often Run samples for a given stall bound: often enough that a stall is seen
// within a tenth of the bound, at most every 30 s and at least every 100 ms.
func SampleInterval(stallAfter time.Duration) time.Duration {
	return min(max(stallAfter/10, 100*time.Millisecond), 30*time.Second)
}

// Run samples every SampleInterval until ctx ends.
func (p *ConsumerProgress) Run(ctx context.Context) {
	tick := time.NewTicker(SampleInterval(p.stallAfter))
	defer tick.Stop()
	for {
		sampleCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _ = p.Sample(sampleCtx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

var (
	consumerLabels      = []string{"stream", "consumer"}
	consumerPendingDesc = prometheus.NewDesc("dps_consumer_pending_messages",
		"Messages of the consumer's stream not yet delivered to it (its lag), read from the consumer's info at scrape time.", consumerLabels, nil)
	consumerAckPendingDesc = prometheus.NewDesc("dps_consumer_ack_pending_messages",
		"Messages delivered to the consumer and not yet acknowledged, read at scrape time.", consumerLabels, nil)
	consumerRedeliveredDesc = prometheus.NewDesc("dps_consumer_redelivered_messages",
		"Messages awaiting acknowledgement that have been delivered more than once, read at scrape time.", consumerLabels, nil)
	consumerStalledDesc = prometheus.NewDesc("dps_consumer_stalled_seconds",
		"How long the consumer has had work that did not move (nothing acknowledged, backlog not shrinking); 0 when it moves or has none.", consumerLabels, nil)
)

// Describe and Collect make ConsumerProgress a collector of the consumer's gauges. Every replica reports
// the same consumer, since the durable consumer is shared.
func (p *ConsumerProgress) Describe(ch chan<- *prometheus.Desc) {
	ch <- consumerPendingDesc
	ch <- consumerAckPendingDesc
	ch <- consumerRedeliveredDesc
	ch <- consumerStalledDesc
}

func (p *ConsumerProgress) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := p.Sample(ctx)
	if err != nil {
		// No gauges rather than made-up zeros while NATS cannot be asked.
		return
	}
	labels := []string{p.stream, p.consumer}
	ch <- prometheus.MustNewConstMetric(consumerPendingDesc, prometheus.GaugeValue, float64(info.NumPending), labels...)
	ch <- prometheus.MustNewConstMetric(consumerAckPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending), labels...)
	ch <- prometheus.MustNewConstMetric(consumerRedeliveredDesc, prometheus.GaugeValue, float64(info.NumRedelivered), labels...)
	ch <- prometheus.MustNewConstMetric(consumerStalledDesc, prometheus.GaugeValue, p.Stalled().Seconds(), labels...)
}

// DeadLetterStages are the stages every process reports in dps_deadletter_messages, at zero until one
// is stored; a stage that appears on the stream later is reported too.
var DeadLetterStages = []string{StageRequest, StageSender, StageTracker, StageOutbox}

var deadLettersDesc = prometheus.NewDesc("dps_deadletter_messages",
	"Dead letters stored in DPS_DEADLETTER (kept 90 days), by stage, read from the stream at scrape time.", []string{"stage"}, nil)

// DeadLetterCollector exports the dead letters stored per stage at scrape time.
type DeadLetterCollector struct {
	JS  jetstream.JetStream
	Log *slog.Logger
}

func (c DeadLetterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deadLettersDesc }

func (c DeadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := DeadLetterCounts(ctx, c.JS)
	if err != nil {
		c.Log.Debug("read dead letter counts for metrics", slog.Any("error", err))
		return
	}
	for stage, n := range counts {
		ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(n), stage)
	}
}

// DeadLetterCounts returns the dead letters stored per stage, every stage of DeadLetterStages included.
func DeadLetterCounts(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	s, err := js.Stream(ctx, StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("dead letter counts: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subjectDeadLetterWildcard))
	if err != nil {
		return nil, fmt.Errorf("dead letter counts: %w", err)
	}
	counts := make(map[string]uint64, len(DeadLetterStages))
	for _, stage := range DeadLetterStages {
		counts[stage] = 0
	}
	for subject, n := range info.State.Subjects {
		counts[strings.TrimPrefix(subject, SubjectDeadLetterPrefix)] += n
	}
	return counts, nil
}
