// Package bus owns everything JetStream in the pipeline: the subjects,
// streams, durable consumers and the Object Store bucket (declared once,
// here, and created or updated idempotently by whichever process starts
// first, and by `producer topology`), the message structs, validated and deduplicated publishing,
// decoding, dead-lettering and the export file helpers.
//
// It must not know about Postgres, MESH or the DPS file format: callers hand
// it values and readers. Payload rules live in /schemas, not here.
package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subjects.
const (
	SubjectExportRequest      = "dps.export.request"
	SubjectExportReady        = "dps.export.ready"
	SubjectExportCreated      = "dps.export.created"
	SubjectExportSent         = "dps.export.sent"
	SubjectExportAcknowledged = "dps.export.acknowledged"
	SubjectExportFailed       = "dps.export.failed"
	SubjectExportReceived     = "dps.export.received"
	SubjectExportProcessed    = "dps.export.processed"
	SubjectMailboxValidated   = "mesh.mailbox.validated"
	// SubjectDeadLetterPrefix + stage is a dead-letter subject.
	SubjectDeadLetterPrefix   = "dps.deadletter."
	SubjectDeadLetterRequest  = SubjectDeadLetterPrefix + StageRequest
	SubjectDeadLetterSender   = SubjectDeadLetterPrefix + StageSender
	SubjectDeadLetterTracker  = SubjectDeadLetterPrefix + StageTracker
	SubjectDeadLetterOutbox   = SubjectDeadLetterPrefix + StageOutbox
	SubjectDeadLetterInbox    = SubjectDeadLetterPrefix + StageInbox
	subjectDeadLetterWildcard = SubjectDeadLetterPrefix + ">"
)

// Dead-letter stages (the last token of a dead-letter subject).
const (
	StageRequest = "request"
	StageSender  = "sender"
	StageTracker = "tracker"
	// StageOutbox is a Postgres outbox row the stream could never take (invalid or too large).
	StageOutbox = "outbox"
	// StageInbox is the tracker reading our MESH inbox: its dead letters are MESH messages it could not
	// apply, which stay unacknowledged in MESH.
	StageInbox = "inbox"
)

// Streams.
const (
	StreamRequests   = "DPS_REQUESTS"
	StreamBatches    = "DPS_BATCHES"
	StreamEvents     = "DPS_EVENTS"
	StreamDeadLetter = "DPS_DEADLETTER"
)

// Durable consumers.
const (
	ConsumerProducer = "producer" // on DPS_REQUESTS
	ConsumerSender   = "sender"   // on DPS_BATCHES, shared by all sender replicas
	ConsumerTracker  = "tracker"  // on DPS_EVENTS, dps.export.sent only
)

// BucketExports is the Object Store bucket holding export files.
const BucketExports = "dps-exports"

// DuplicateWindow is every stream's Nats-Msg-Id deduplication window.
const DuplicateWindow = 24 * time.Hour

const day = 24 * time.Hour

// Topology holds the settings EnsureTopology applies. Every process must
// use the same settings, or they will keep "updating" each other's streams.
type Topology struct {
	// Replicas of every stream, consumer and the bucket: 1 for a single
	// server, 3 for a clustered JetStream.
	Replicas int
	// SenderAckWait is how long a batch may go unacknowledged (and without
	// an InProgress heartbeat) before it is redelivered to another sender.
	SenderAckWait time.Duration
	// AckWait is the same for the producer and tracker consumers.
	AckWait time.Duration
}

// Option adjusts the Topology.
type Option func(*Topology)

// WithReplicas sets the replica count (clustered NATS).
func WithReplicas(n int) Option { return func(t *Topology) { t.Replicas = n } }

// WithAckWait sets the ack waits: sender's, then producer's and tracker's.
// Tests that kill consumers use short waits so redelivery is quick.
func WithAckWait(sender, others time.Duration) Option {
	return func(t *Topology) { t.SenderAckWait, t.AckWait = sender, others }
}

// NewTopology returns the defaults with opts applied: 1 replica and an ack
// wait of 30 seconds. A long send or export is not cut short by it, because
// the sender and producer report InProgress every few seconds while they
// work; what the ack wait does decide is how soon a message lost with its
// consumer (a killed replica, a NATS restart mid-pull) is handed to another,
// and minutes there would stall a night's export for nothing.
func NewTopology(opts ...Option) Topology {
	t := Topology{Replicas: 1, SenderAckWait: 30 * time.Second, AckWait: 30 * time.Second}
	for _, o := range opts {
		o(&t)
	}
	if t.Replicas < 1 {
		t.Replicas = 1
	}
	return t
}

// Streams returns the stream definitions: the contract's table, in code.
func (t Topology) Streams() []jetstream.StreamConfig {
	stream := func(name, desc string, maxAge time.Duration, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      maxAge,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			Duplicates:  DuplicateWindow,
		}
	}
	return []jetstream.StreamConfig{
		stream(StreamRequests, "DPS export requests; kept for replay", 30*day, SubjectExportRequest),
		stream(StreamBatches, "DPS export batches ready to send; kept for replay", 30*day, SubjectExportReady),
		stream(StreamEvents, "DPS export lifecycle events and MESH handshakes", 90*day,
			SubjectExportCreated, SubjectExportSent, SubjectExportAcknowledged, SubjectExportFailed,
			SubjectExportReceived, SubjectExportProcessed, SubjectMailboxValidated),
		stream(StreamDeadLetter, "messages a stage could not process, with the reason", 90*day, subjectDeadLetterWildcard),
	}
}

// ConsumerDef is a durable consumer and the stream it reads.
type ConsumerDef struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// MaxAckPending is every durable consumer's limit of messages delivered and not yet acknowledged. A
// message waiting for a delayed redelivery (a nak with delay after a transient failure) holds one of
// these slots for the whole delay, and once they are all held the server delivers nothing else: with
// the 16 the producer had, 16 requests failing for a while stalled every export behind them. Handlers
// work one message at a time per replica and dead-letter at once what can never succeed, so only
// messages that may still succeed wait here; 1000 of them is far more than a night's traffic.
const MaxAckPending = 1000

// Consumers returns the durable pull consumer definitions.
//
// BackOff governs redelivery after an ack timeout (a crashed or stuck
// worker); the server makes AckWait equal to BackOff[0], so the schedule
// starts at the ack wait and grows. Handlers that fail on purpose should
// NakWithDelay: a plain Nak redelivers at once and ignores BackOff.
func (t Topology) Consumers() []ConsumerDef {
	schedule := func(base time.Duration, factors ...int) []time.Duration {
		out := make([]time.Duration, len(factors))
		for i, f := range factors {
			out[i] = base * time.Duration(f)
		}
		return out
	}
	consumer := func(stream, name, desc, filter string, ackWait time.Duration, maxDeliver, maxAckPending int, backoff []time.Duration) ConsumerDef {
		return ConsumerDef{Stream: stream, Config: jetstream.ConsumerConfig{
			Durable:       name,
			Description:   desc,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxDeliver:    maxDeliver,
			BackOff:       backoff,
			FilterSubject: filter,
			MaxAckPending: maxAckPending,
			Replicas:      t.Replicas,
		}}
	}
	return []ConsumerDef{
		consumer(StreamRequests, ConsumerProducer, "producer: export requests", SubjectExportRequest,
			t.AckWait, 10, MaxAckPending, schedule(t.AckWait, 1, 2, 5, 10)),
		consumer(StreamBatches, ConsumerSender, "sender: batches to deliver to MESH, shared by all replicas", SubjectExportReady,
			t.SenderAckWait, 20, MaxAckPending, schedule(t.SenderAckWait, 1, 1, 2, 2, 3, 6)),
		consumer(StreamEvents, ConsumerTracker, "tracker: exports accepted by MESH", SubjectExportSent,
			t.AckWait, 10, MaxAckPending, schedule(t.AckWait, 1, 2, 5, 10)),
	}
}

// ObjectStore returns the export bucket definition.
func (t Topology) ObjectStore() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      BucketExports,
		Description: "DPS export files, one object per export id",
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		TTL:         90 * day, // as long as the events that refer to them
	}
}

// EnsureTopology creates or updates every stream, durable consumer and the export bucket, waiting
// with backoff while NATS is slow, electing or unreachable (see Retry) until ctx ends. It is
// idempotent and safe when several processes call it at once. It fails at once, with a
// *ConflictError, when something exists with a configuration it may not change.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, opts ...Option) error {
	_, err := DeclareTopology(ctx, js, NewTopology(opts...), Retry{}, false)
	return err
}

// DeadLetterSubject is the dead-letter subject of a stage.
func DeadLetterSubject(stage string) string { return SubjectDeadLetterPrefix + stage }

// streamOf returns the stream that captures subject, for WithExpectStream.
func streamOf(subject string) string {
	switch subject {
	case SubjectExportRequest:
		return StreamRequests
	case SubjectExportReady:
		return StreamBatches
	case SubjectExportCreated, SubjectExportSent, SubjectExportAcknowledged, SubjectExportFailed,
		SubjectExportReceived, SubjectExportProcessed, SubjectMailboxValidated:
		return StreamEvents
	}
	if len(subject) > len(SubjectDeadLetterPrefix) && subject[:len(SubjectDeadLetterPrefix)] == SubjectDeadLetterPrefix {
		return StreamDeadLetter
	}
	return ""
}
