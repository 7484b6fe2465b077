package export

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

// maxRequestID is the schema's limit on request_id.
const maxRequestID = 128

// ReplayHandler re-runs request handling for `producer replay` over messages of DPS_REQUESTS.
//
// A request already handled (its row is in dps_export_requests) is skipped and counted: replaying
// requests creates no export. With force it is run again under a new request id derived from the
// original ("replay:<8 hex>:<original id>"), which makes a fresh export of whatever is unsent now.
// With dryRun nothing changes: the handler says what would happen and, for a request that would run,
// builds its files in a rolled-back transaction to report their rows. Invalid requests (dead-lettered
// when they first arrived) are skipped with the reason.
func (e *Exporter) ReplayHandler(force, dryRun bool) replay.Handler {
	return func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		var wire bus.ExportRequest
		if err := bus.Decode(msg, &wire); err != nil {
			return replay.Skipped, "invalid request, dead-lettered when received: " + err.Error(), nil
		}
		req := requestFromWire(wire)
		var handled bool
		var exports []string
		if err := e.pool.QueryRow(ctx, sqlRequestExports, req.ID).Scan(&handled, &exports); err != nil {
			return replay.Failed, "", fmt.Errorf("look up request %s: %w", req.ID, err)
		}
		done := describeHandled(req.ID, exports)
		switch {
		case handled && !force:
			if dryRun {
				return replay.DryRun, "would skip: " + done, nil
			}
			return replay.Skipped, done, nil
		case handled:
			req.ID = derivedRequestID(req.ID)
		}
		if dryRun {
			req.DryRun = true
		}
		results, err := e.Export(ctx, req)
		var unknown *UnknownProgrammeError
		if errors.As(err, &unknown) {
			return replay.Skipped, "invalid request: " + unknown.Error(), nil
		}
		if err != nil {
			return replay.Failed, "", err
		}
		detail := describeResults(results)
		switch {
		case dryRun && handled:
			return replay.DryRun, fmt.Sprintf("would run again as %s (%s): %s", req.ID, done, detail), nil
		case dryRun:
			return replay.DryRun, "would run: " + detail, nil
		case handled:
			return replay.Forced, fmt.Sprintf("ran again as %s: %s", req.ID, detail), nil
		}
		return replay.Done, detail, nil
	}
}

func derivedRequestID(original string) string {
	id := "replay:" + strings.ReplaceAll(uuid.NewString(), "-", "")[:8] + ":" + original
	if len(id) > maxRequestID {
		id = id[:maxRequestID]
	}
	return id
}

func describeHandled(id string, exports []string) string {
	if len(exports) == 0 {
		return "request " + id + " already handled (nothing was sent)"
	}
	return "request " + id + " already handled: export " + strings.Join(exports, ", ")
}

func describeResults(results []Result) string {
	parts := make([]string, 0, len(results))
	for _, r := range results {
		switch r.Status {
		case NothingToSend:
			parts = append(parts, r.Programme+" nothing to send")
		default:
			parts = append(parts, fmt.Sprintf("%s %s %d rows (%s)", r.Programme, r.Status, r.Rows, r.ExportID))
		}
	}
	if len(parts) == 0 {
		return "no programmes"
	}
	return strings.Join(parts, "; ")
}
