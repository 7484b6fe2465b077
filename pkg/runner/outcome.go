package runner

import (
	"fmt"
	"time"
)

// Kind is what a handler says became of a delivery.
type Kind int

// Kinds of Outcome.
const (
	// KindDone: the message is handled (or was already); the runner acks it.
	KindDone Kind = iota
	// KindRetry: it may succeed later; the runner naks it with a delay. On the consumer's last delivery
	// the runner dead-letters it instead, because the server would never deliver it again.
	KindRetry
	// KindDeadLetter: it can never succeed; the runner publishes the dead letter, then acks it. If the dead
	// letter cannot be published, the message is naked and comes back: it is never dropped.
	KindDeadLetter
	// KindTerminal: the server must not deliver it again and nothing is to be dead-lettered (what needs
	// recording was recorded elsewhere); the runner terminates it with the reason and logs an error.
	KindTerminal
)

var kindNames = [...]string{KindDone: "done", KindRetry: "retry", KindDeadLetter: "dead_letter", KindTerminal: "terminal"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Outcome is what a handler returns: what happened to the delivery, and so what the runner does with it.
// Build one with Done, Retry, RetryAfter, DeadLetter or Terminal.
type Outcome struct {
	Kind Kind
	// Err is why a retry is needed (logged, and named in the dead letter when retries run out).
	Err error
	// Delay, when not zero, is the exact nak delay of a retry; zero means the runner's Backoff.
	Delay time.Duration
	// MinDelay is a lower bound on the nak delay (a server's Retry-After).
	MinDelay time.Duration
	// Label names the kind of dead letter in logs and metrics ("invalid", "unknown_programme").
	Label string
	// Reason is the dead letter's or the termination's reason, in words.
	Reason string
}

// Done: handled; ack.
func Done() Outcome { return Outcome{Kind: KindDone} }

// Retry: failed for a reason that may pass; nak with the runner's backoff for this delivery.
func Retry(err error) Outcome { return Outcome{Kind: KindRetry, Err: err} }

// RetryAfter: failed for a reason that may pass; nak with exactly delay.
func RetryAfter(delay time.Duration, err error) Outcome {
	return Outcome{Kind: KindRetry, Err: err, Delay: delay}
}

// NotBefore makes a retry wait at least d (for example MESH's Retry-After), whatever the backoff says.
func (o Outcome) NotBefore(d time.Duration) Outcome {
	o.MinDelay = max(o.MinDelay, d)
	return o
}

// DeadLetter: the message can never succeed; dead-letter it with reason, then ack. label is a short
// name for the kind of problem, for logs and metrics.
func DeadLetter(label, reason string) Outcome {
	return Outcome{Kind: KindDeadLetter, Label: label, Reason: reason}
}

// Terminal: never deliver it again, and dead-letter nothing.
func Terminal(reason string) Outcome { return Outcome{Kind: KindTerminal, Reason: reason} }

// LabelRetriesExhausted is the Label of the dead letter the runner writes when a retry is asked for on
// the consumer's last delivery.
const LabelRetriesExhausted = "retries_exhausted"

// Action is what the runner did with a delivery.
type Action int

// Actions a Settlement reports.
const (
	// Acked: acknowledged (after Done).
	Acked Action = iota
	// Naked: handed back for redelivery after Settlement.Delay.
	Naked
	// DeadLettered: the dead letter is stored in DPS_DEADLETTER and the message acked.
	DeadLettered
	// Terminated: terminated, never to be delivered again.
	Terminated
)

var actionNames = [...]string{Acked: "acked", Naked: "naked", DeadLettered: "dead_lettered", Terminated: "terminated"}

func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Settlement reports how a delivery was settled, to Config.Observe (metrics, tests).
type Settlement struct {
	Action Action
	// Outcome is what the handler returned, or what the runner made of it (a retry on the last
	// delivery becomes a DeadLetter labelled LabelRetriesExhausted).
	Outcome Outcome
	// Delay is the nak delay, for Naked.
	Delay time.Duration
	// Err is why the runner could not do what the outcome asked (the dead letter could not be published,
	// so the message was naked instead); nil otherwise. A failed ack is only logged: the message comes back
	// and its handler finds it done.
	Err error
}
