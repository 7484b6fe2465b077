package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Retry says how a process waits for NATS: a call that fails while NATS is slow, electing a leader
// or briefly gone is tried again with backoff, as long as it takes; one that fails for good (Permanent)
// is returned at once. The zero value is usable.
type Retry struct {
	// Log receives a WARN every WarnEvery while the call keeps failing, saying what is waited for.
	Log *slog.Logger
	// Status, when set, reports what is waited for (for /healthz) and the permission violations
	// that turn a timeout into a refusal.
	Status *Status
	// WarnEvery defaults to WarnInterval.
	WarnEvery time.Duration
	// AttemptTimeout bounds one attempt: a cold cluster takes several seconds to place an R3 stream,
	// so it is longer than jetstream's 5 s default; but a cluster without a meta leader does not
	// answer at all, and the next attempt should not wait long for that. Default 10 s.
	AttemptTimeout time.Duration
	// MaxBackoff is the longest wait between attempts; default 5 s.
	MaxBackoff time.Duration
}

// Do runs f until it returns nil, ctx ends, or it fails for good. what ("stream DPS_BATCHES") names
// what is waited for in the WARN lines and on /healthz; once f succeeds the Status says again what it
// said before Do.
func (r Retry) Do(ctx context.Context, what string, f func(ctx context.Context) error) error {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	warnEvery := r.WarnEvery
	if warnEvery <= 0 {
		warnEvery = WarnInterval
	}
	attemptTimeout := r.AttemptTimeout
	if attemptTimeout <= 0 {
		attemptTimeout = 10 * time.Second
	}
	maxBackoff := r.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	var outer statusState
	if r.Status != nil {
		outer = r.Status.save()
	}
	started := time.Now()
	lastWarn := started
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		mark := 0
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		if r.Status != nil {
			// A request the user may not make is never answered: end the attempt as soon as the
			// server reports the violation instead of waiting out the timeout.
			mark = r.Status.denialMark()
			signal := r.Status.denialSignal()
			go func() {
				select {
				case <-signal:
					cancel()
				case <-actx.Done():
				}
			}()
		}
		err := f(actx)
		cancel()
		if r.Status != nil {
			if denied := r.Status.deniedAfter(mark); denied != nil {
				return &RefusedError{What: what + ": the NATS user may not do this", Hint: permissionsHint, Err: denied}
			}
		}
		if err == nil {
			if r.Status != nil && attempt > 1 {
				// What was waited for before this call (nothing, or an outer wait) is what is left.
				r.Status.restore(outer)
			}
			if attempt > 1 {
				log.Info("NATS ready again: "+what, slog.Duration("waited", time.Since(started).Round(time.Millisecond)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
		if Permanent(err) {
			var invalid *InvalidMessageError
			var conflict *ConflictError
			var refused *RefusedError
			if errors.As(err, &invalid) || errors.As(err, &conflict) || errors.As(err, &refused) {
				return fmt.Errorf("%s: %w", what, err)
			}
			// A JetStream API error about the request itself, e.g. NATS_STREAM_REPLICAS=3 on one server.
			return &RefusedError{What: what + ": JetStream refused the request", Hint: "check NATS_STREAM_REPLICAS and the NATS server's JetStream settings", Err: err}
		}
		if r.Status != nil {
			r.Status.Waiting(what, err)
		}
		if time.Since(lastWarn) >= warnEvery {
			lastWarn = time.Now()
			log.Warn("waiting for NATS: "+what+" not available yet, retrying", slog.String("error", err.Error()),
				slog.Duration("waited", time.Since(started).Round(time.Second)), slog.Int("attempts", attempt))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, maxBackoff)
	}
}

// permissionsHint points a refused user at the documentation of the permissions.
const permissionsHint = "see pkg/natsserver/conf/permissions.conf and README, \"Running on a JetStream cluster\""

// JetStream API error codes that no amount of waiting mends: the request itself is wrong for this
// server or clashes with what exists.
var permanentErrorCodes = map[jetstream.ErrorCode]bool{
	10052: true, // stream configuration invalid, e.g. an update that would change the storage type
	10058: true, // stream name already in use with a different configuration
	10061: true, // replicas configuration can not be updated
	10065: true, // subjects overlap with an existing stream
	10074: true, // replicas > 1 not supported in non-clustered mode (NATS_STREAM_REPLICAS on one server)
}

// Permanent reports whether err is one that waiting will not mend: a refusal, a topology conflict,
// an invalid message, or a JetStream API error about the request itself. Timeouts, no responders,
// "temporarily unavailable", a stream or consumer without a leader, a stream not created yet and a
// lost connection are all transient.
func Permanent(err error) bool {
	var refused *RefusedError
	var conflict *ConflictError
	var invalid *InvalidMessageError
	if errors.As(err, &refused) || errors.As(err, &conflict) || errors.As(err, &invalid) {
		return true
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrPermissionViolation) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if permanentErrorCodes[apiErr.ErrorCode] {
			return true
		}
		// Other 400s concern the request (a bad name, a config the server rejects); 10202 (a cluster
		// membership change in flight) is the one that passes.
		return apiErr.Code == 400 && apiErr.ErrorCode != 10202
	}
	return false
}
