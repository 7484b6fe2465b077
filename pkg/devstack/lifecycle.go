package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
)

// event is the part of every lifecycle event the devstack prints. It reads the JSON as any other
// subscriber would (schemas/*.schema.json), so it needs none of the producers' types.
type event struct {
	ExportID      string `json:"export_id"`
	Programme     string `json:"programme"`
	Filename      string `json:"filename"`
	Rows          int    `json:"rows"`
	RequestID     string `json:"request_id"`
	MeshMessageID string `json:"mesh_message_id"`
	Attempt       int    `json:"attempt"`
	Adopted       bool   `json:"adopted"`
	Stage         string `json:"stage"`
	Reason        string `json:"reason"`
	Mailbox       string `json:"mailbox"`
	Result        string `json:"result"`
	Error         string `json:"error"`
	Status        string `json:"status"`
	ReceiverCode  string `json:"receiver_code"`
	RowsSent      int    `json:"rows_sent"`
	RowsAccepted  int    `json:"rows_accepted"`
	RowsRefused   int    `json:"rows_refused"`
}

// Lifecycle subjects, as published by the pipeline on stream DPS_EVENTS.
const (
	eventsStream       = bus.StreamEvents
	subjectRequest     = bus.SubjectExportRequest
	subjectCreated     = bus.SubjectExportCreated
	subjectSent        = bus.SubjectExportSent
	subjectAcknowledge = bus.SubjectExportAcknowledged
	subjectFailed      = bus.SubjectExportFailed
	subjectReceived    = bus.SubjectExportReceived
	subjectProcessed   = bus.SubjectExportProcessed
	subjectValidated   = bus.SubjectMailboxValidated
)

// exportState is what the stack has seen of one export.
type exportState struct {
	ID, Programme, Filename, RequestID, MeshMessageID string
	Rows                                              int
	Created, Sent, Acknowledged, Failed               bool
	Received, Processed, Rejected                     bool
	RowsAccepted, RowsRefused                         int
	FailReason                                        string
	Sends                                             int // sent events (re-sends after --force count)
}

// board collects the lifecycle and prints each step once, as it happens.
type board struct {
	out *lineWriter

	mu        sync.Mutex
	requested map[string]string // request id → programme
	exports   map[string]*exportState
	failures  []string // lifecycle failures, in order
	changed   chan struct{}
}

func newBoard(out *lineWriter) *board {
	return &board{out: out, requested: map[string]string{}, exports: map[string]*exportState{}, changed: make(chan struct{}, 1)}
}

func (b *board) notify() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

func (b *board) request(id, programme string) {
	b.mu.Lock()
	b.requested[id] = programme
	b.mu.Unlock()
	b.out.printf("requested     %-8s request %s", programme, id)
	b.notify()
}

func (b *board) export(id string) *exportState {
	e := b.exports[id]
	if e == nil {
		e = &exportState{ID: id}
		b.exports[id] = e
	}
	return e
}

// apply records one event and prints it; events of exports already in that state (redeliveries,
// the relay re-publishing after a crash) print nothing.
func (b *board) apply(subject string, ev event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.notify()
	if subject == subjectValidated {
		line := fmt.Sprintf("handshake     %-8s %s", ev.Mailbox, ev.Result)
		if ev.Error != "" {
			line += ": " + ev.Error
		}
		b.out.printf("%s", line)
		return
	}
	e := b.export(ev.ExportID)
	if ev.Programme != "" {
		e.Programme = ev.Programme
	}
	short := shortID(ev.ExportID)
	switch subject {
	case subjectCreated:
		if e.Created {
			return
		}
		e.Created, e.Rows, e.Filename, e.RequestID = true, ev.Rows, ev.Filename, ev.RequestID
		b.out.printf("created       %-8s export %s  %d rows  %s", e.Programme, short, ev.Rows, ev.Filename)
	case subjectSent:
		e.Sends++
		if e.Sent && e.MeshMessageID == ev.MeshMessageID {
			return
		}
		e.Sent, e.MeshMessageID = true, ev.MeshMessageID
		note := ""
		if ev.Adopted {
			note = "  (adopted after a crash)"
		} else if ev.Attempt > 1 {
			note = fmt.Sprintf("  (attempt %d)", ev.Attempt)
		}
		b.out.printf("sent          %-8s export %s  MESH message %s%s", e.Programme, short, ev.MeshMessageID, note)
	case subjectAcknowledge:
		if e.Acknowledged {
			return
		}
		e.Acknowledged = true
		b.out.printf("acknowledged  %-8s export %s  MESH message %s", e.Programme, short, ev.MeshMessageID)
	case subjectReceived:
		if e.Received {
			return
		}
		e.Received = true
		b.out.printf("received      %-8s export %s  InfAck %s", e.Programme, short, ev.ReceiverCode)
	case subjectProcessed:
		if e.Processed {
			return
		}
		e.Processed, e.RowsAccepted, e.RowsRefused = true, ev.RowsAccepted, ev.RowsRefused
		b.out.printf("processed     %-8s export %s  BusAck: %d rows sent, %d accepted, %d refused", e.Programme, short, ev.RowsSent, ev.RowsAccepted, ev.RowsRefused)
	case subjectFailed:
		if e.Failed {
			return
		}
		e.Failed, e.Rejected, e.FailReason = true, ev.Status == bus.StatusRejected, fmt.Sprintf("%s: %s", ev.Stage, ev.Reason)
		word := "FAILED"
		if e.Rejected {
			word = "REJECTED"
		}
		b.out.printf("%-13s %-8s export %s  %s", word, e.Programme, short, e.FailReason)
		b.failures = append(b.failures, fmt.Sprintf("export %s (%s) %s in %s", ev.ExportID, e.Programme, strings.ToLower(word), e.FailReason))
	}
}

// counts is a snapshot for the progress line and the tests.
type counts struct {
	Requested, Created, Sent, Acknowledged, Received, Processed, Failed int
}

func (c counts) String() string {
	return fmt.Sprintf("%d requested, %d created, %d sent, %d acknowledged, %d received, %d processed, %d failed",
		c.Requested, c.Created, c.Sent, c.Acknowledged, c.Received, c.Processed, c.Failed)
}

func (b *board) counts() counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := counts{Requested: len(b.requested)}
	for _, e := range b.exports {
		if e.Created {
			c.Created++
		}
		if e.Sent {
			c.Sent++
		}
		if e.Acknowledged {
			c.Acknowledged++
		}
		if e.Received {
			c.Received++
		}
		if e.Processed {
			c.Processed++
		}
		if e.Failed {
			c.Failed++
		}
	}
	return c
}

// snapshot copies every export the board knows, sorted by programme.
func (b *board) snapshot() []exportState {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]exportState, 0, len(b.exports))
	for _, e := range b.exports {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Programme != out[j].Programme {
			return out[i].Programme < out[j].Programme
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (b *board) firstFailure() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.failures) == 0 {
		return ""
	}
	return b.failures[0]
}

// watchEvents follows DPS_EVENTS from now on through an ordered consumer, which survives a NATS
// restart by re-creating itself after the last sequence it saw.
func (s *Stack) watchEvents(ctx context.Context) error {
	since := time.Now().Add(-time.Second)
	cons, err := s.js.OrderedConsumer(ctx, eventsStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	})
	if err != nil {
		return fmt.Errorf("watch %s: %w", eventsStream, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ev event
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			s.out.printf("event         %s: unreadable payload: %v", msg.Subject(), err)
			return
		}
		s.board.apply(msg.Subject(), ev)
	}, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {
		// Heartbeat and reconnect errors while NATS restarts; the ordered consumer recovers by itself.
	}))
	if err != nil {
		return fmt.Errorf("watch %s: %w", eventsStream, err)
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		<-ctx.Done()
		cc.Stop()
	}()
	return nil
}

// lineWriter prints timestamped lines; it is shared by the board, DPS and the stack.
type lineWriter struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	line := l.last.Format("15:04:05") + "  " + fmt.Sprintf(format, args...)
	_, _ = io.WriteString(l.w, strings.TrimRight(line, " ")+"\n")
}

// quietFor is how long nothing has been printed.
func (l *lineWriter) quietFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Since(l.last)
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
