package bus

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Status is what a process is waiting for from NATS while it starts: connecting, or a stream or
// consumer that is not available yet. Its health check reports it, so that /healthz says 503 naming
// nats, and why, until the process is ready. The zero value is ready; it is safe for concurrent use.
type Status struct {
	mu      sync.Mutex
	waiting string // empty once ready
	since   time.Time
	err     error
	// The permission violations the server reported, the last 16, and how many ever were.
	denials   []denial
	denialSeq int
	signal    chan struct{} // closed (and replaced) at each permission violation
}

// Waiting records that the process now waits for what (err, when set, is why it is not there yet).
func (s *Status) Waiting(what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting != what {
		s.waiting, s.since = what, time.Now()
	}
	s.err = err
}

// Ready records that nothing is waited for any more.
func (s *Status) Ready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting, s.err = "", nil
}

// Err is nil when ready, and otherwise says what is waited for, since when and the last error.
func (s *Status) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting == "" {
		return nil
	}
	msg := fmt.Sprintf("waiting %s for %s", time.Since(s.since).Round(time.Second), s.waiting)
	if s.err != nil {
		return fmt.Errorf("%s: %w", msg, s.err)
	}
	return errors.New(msg)
}

// statusState is what Status says, saved so that a nested wait can put it back when it ends.
type statusState struct {
	waiting string
	since   time.Time
	err     error
}

func (s *Status) save() statusState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return statusState{s.waiting, s.since, s.err}
}

func (s *Status) restore(st statusState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting, s.since, s.err = st.waiting, st.since, st.err
}

func (s *Status) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *Status) lastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// denied records a permission violation the server reported asynchronously: a publish the user may
// not make gets no reply at all, so a request would otherwise only time out.
func (s *Status) denied(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denialSeq++
	s.denials = append(s.denials, denial{seq: s.denialSeq, err: err})
	if s.signal != nil {
		close(s.signal)
		s.signal = nil
	}
	if len(s.denials) > 16 {
		s.denials = s.denials[len(s.denials)-16:]
	}
}

// deniedAfter returns the first permission violation recorded after mark (from denialMark), or nil.
func (s *Status) deniedAfter(mark int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.denials {
		if d.seq > mark {
			return d.err
		}
	}
	return nil
}

// denialSignal is closed at the next permission violation.
func (s *Status) denialSignal() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.signal == nil {
		s.signal = make(chan struct{})
	}
	return s.signal
}

// Explain turns err, from a call that failed (typically by timing out) after a permission violation
// was reported on this connection, into a *RefusedError naming the violation; other errors pass.
func (s *Status) Explain(err error) error {
	if err == nil || s == nil {
		return err
	}
	if denied := s.deniedAfter(0); denied != nil {
		return &RefusedError{What: "the NATS user may not do this", Hint: permissionsHint, Err: denied}
	}
	return err
}

func (s *Status) denialMark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.denialSeq
}

type denial struct {
	seq int
	err error
}
