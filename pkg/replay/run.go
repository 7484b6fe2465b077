package replay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Outcome is what a handler did with one replayed message.
type Outcome string

// The outcomes a handler reports. Done means the work was (re)done because it had not been done
// before; Skipped means it was already done and left alone; Forced means it was already done and
// re-done because of --force; DryRun means nothing was changed and the detail says what would have
// happened; Failed means the handler returned an error (Run records it and carries on).
const (
	Done    Outcome = "done"
	Skipped Outcome = "skipped"
	Forced  Outcome = "forced"
	DryRun  Outcome = "dry-run"
	Failed  Outcome = "failed"
)

// Outcomes lists every outcome in the order the summary prints them.
var Outcomes = []Outcome{Done, Skipped, Forced, DryRun, Failed}

// Handler re-runs a process's handling of one message. It reports the outcome and a short detail
// for the summary (an export id, "already sent as <mesh id>", ...). A returned error counts the
// message as Failed with the error as its detail; it does not stop the replay. The message comes
// from an ordered consumer: it needs no ack and must not be acked, naked or termed.
type Handler func(ctx context.Context, msg jetstream.Msg) (Outcome, string, error)

// Entry is one replayed message in a Summary.
type Entry struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Outcome Outcome
	Detail  string
}

// Summary is what a replay did, message by message.
type Summary struct {
	Stream  string
	Filter  string
	Range   Range
	Entries []Entry
}

// Count returns how many messages ended with outcome o.
func (s Summary) Count(o Outcome) int {
	n := 0
	for _, e := range s.Entries {
		if e.Outcome == o {
			n++
		}
	}
	return n
}

// Err is non-nil when any message failed, so a replay command can exit non-zero after printing.
func (s Summary) Err() error {
	if n := s.Count(Failed); n > 0 {
		return fmt.Errorf("replay %s: %d of %d messages failed", s.Stream, n, len(s.Entries))
	}
	return nil
}

// fetchIdle bounds one wait for the next message. The end of the range is known before the first
// message arrives, so this only matters when the server is slow or restarting.
const fetchIdle = 5 * time.Second

// Run replays the messages of stream (only those matching filterSubject, if not empty) that fall in
// r, oldest first, through an ordered consumer, calling handle for each. It stops at the range's end
// or at the last message the stream held when Run started, whichever comes first, so it never
// waits for messages that have not been published yet. It returns early only when ctx ends or the
// stream cannot be read; handler failures are recorded in the summary.
func Run(ctx context.Context, js jetstream.JetStream, stream, filterSubject string, r Range, handle Handler) (Summary, error) {
	sum := Summary{Stream: stream, Filter: filterSubject, Range: r}
	if err := r.Validate(); err != nil {
		return sum, fmt.Errorf("replay %s: %w", stream, err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return sum, fmt.Errorf("replay %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return sum, fmt.Errorf("replay %s: stream info: %w", stream, err)
	}
	// The end is fixed now: messages published while we replay belong to the live consumers.
	end := info.State.LastSeq
	if r.ToSeq != 0 && r.ToSeq < end {
		end = r.ToSeq
	}
	if info.State.Msgs == 0 || (!r.ByTime() && r.FromSeq > end) {
		return sum, nil
	}

	// No NamePrefix: the library's unique prefix keeps two replays of one stream from colliding.
	cfg := jetstream.OrderedConsumerConfig{}
	if filterSubject != "" {
		cfg.FilterSubjects = []string{filterSubject}
	}
	if r.ByTime() {
		since := r.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	} else {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = r.FromSeq
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return sum, fmt.Errorf("replay %s: create ordered consumer: %w", stream, err)
	}
	// The server-side consumer exists from creation, so its pending count says whether anything
	// matches at all; without this check an empty range would wait for a message that never comes.
	ci, err := cons.Info(ctx)
	if err != nil {
		return sum, fmt.Errorf("replay %s: consumer info: %w", stream, err)
	}
	if ci.NumPending == 0 {
		return sum, nil
	}

	it, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.PullExpiry(fetchIdle))
	if err != nil {
		return sum, fmt.Errorf("replay %s: read: %w", stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stop()
		it.Stop()
	}()

	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return sum, fmt.Errorf("replay %s: %w", stream, ctx.Err())
			}
			return sum, fmt.Errorf("replay %s: read: %w", stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return sum, fmt.Errorf("replay %s: message metadata: %w", stream, err)
		}
		seq := md.Sequence.Stream
		if seq > end || (!r.Until.IsZero() && !md.Timestamp.Before(r.Until)) {
			return sum, nil
		}
		outcome, detail, herr := handle(ctx, msg)
		if herr != nil {
			if ctx.Err() != nil && errors.Is(herr, ctx.Err()) {
				return sum, fmt.Errorf("replay %s: %w", stream, ctx.Err())
			}
			outcome, detail = Failed, herr.Error()
		}
		sum.Entries = append(sum.Entries, Entry{Seq: seq, Subject: msg.Subject(), Time: md.Timestamp, Outcome: outcome, Detail: detail})
		if ctx.Err() != nil {
			return sum, fmt.Errorf("replay %s: %w", stream, ctx.Err())
		}
		if seq >= end || md.NumPending == 0 {
			return sum, nil
		}
	}
}
