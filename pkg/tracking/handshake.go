package tracking

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
)

// Handshake results, as published in mesh.mailbox.validated and counted in the metric.
const (
	handshakeOK     = "ok"
	handshakeFailed = "failed"
)

// publishTimeout bounds publishing one handshake event; the handshake's result does not wait on NATS.
const publishTimeout = 10 * time.Second

// Handshake validates our mailbox with MESH once, records the result for /healthz and the metric, and
// publishes mesh.mailbox.validated. A failure is logged at ERROR and returned; it changes nothing else.
func (t *Tracker) Handshake(ctx context.Context) error {
	mailbox := t.cfg.MESH.Mailbox()
	err := t.cfg.MESH.Handshake(ctx)
	if err != nil && ctx.Err() != nil {
		return err // shutting down: not a verdict on the mailbox
	}
	t.mu.Lock()
	t.handshakeDone, t.handshakeErr = true, err
	t.mu.Unlock()

	now := time.Now().UTC()
	ev := bus.MailboxValidated{EventID: uuid.NewString(), Mailbox: mailbox, Result: handshakeOK, ValidatedAt: now}
	// One event per mailbox and minute however many replicas validate; a failure gets its own id so
	// that an "ok" in the same minute after a failed attempt is not discarded as a duplicate of it.
	msgID := bus.ValidatedMsgID(mailbox, now)
	if err != nil {
		ev.Result = handshakeFailed
		ev.Error = logging.ScrubString(err.Error())
		msgID += ":" + handshakeFailed
		t.m.Handshakes.WithLabelValues(handshakeFailed).Inc()
		t.log.Error("MESH mailbox handshake failed; tracking goes on and the handshake will be retried",
			slog.String("mesh_mailbox", mailbox), slog.Any("error", err))
	} else {
		t.m.Handshakes.WithLabelValues(handshakeOK).Inc()
		t.log.Info("MESH mailbox validated", slog.String("mesh_mailbox", mailbox))
	}

	pubCtx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, perr := bus.Publish(pubCtx, t.cfg.JS, bus.SubjectMailboxValidated, msgID, ev); perr != nil {
		t.log.Warn("publish mailbox handshake result", slog.String("mesh_mailbox", mailbox), slog.Any("error", perr))
	}
	if err != nil {
		return fmt.Errorf("handshake mailbox %s: %w", mailbox, err)
	}
	return nil
}

// handshakeLoop validates the mailbox at start and every HandshakeInterval. After a failure it retries
// sooner, from HandshakeRetry doubling up to HandshakeInterval.
func (t *Tracker) handshakeLoop(ctx context.Context) {
	retry := t.cfg.HandshakeRetry
	for {
		wait := t.cfg.HandshakeInterval
		if err := t.Handshake(ctx); err != nil {
			wait = retry
			retry = min(retry*2, t.cfg.HandshakeInterval)
		} else {
			retry = t.cfg.HandshakeRetry
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}
