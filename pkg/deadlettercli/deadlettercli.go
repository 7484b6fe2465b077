// Package deadlettercli holds the logic of the operator commands over DPS_DEADLETTER (`producer
// dead-letters` lists them read-only, `producer redrive` re-drives them to their original subjects),
// beside pkg/meshcli. The producer's main package parses the environment, connects to NATS and calls
// these. They need NATS only: an operator can inspect and re-drive while Postgres is down, and they
// never migrate or touch the database. This package must not read configuration, and prints a payload
// only when asked to (--json --show-payload).
package deadlettercli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/cli"
)

// DefaultLimit is how many of the newest dead letters `dead-letters` shows by default.
const DefaultLimit = 100

// tableReasonWidth cuts a reason in the table; --json carries it whole.
const tableReasonWidth = 100

// failedExportNote and redrivenBatchNote are said wherever a sender dead letter is shown or re-driven:
// re-driving a failed export's batch does nothing, and nothing needs doing.
const (
	failedExportNote  = "a sender dead letter of a failed export needs no re-drive: failing released its records and the next export carries them; the sender acks a re-driven batch of a failed export as already failed and sends nothing"
	redrivenBatchNote = "if this export is already failed, the sender acks the batch as already failed and sends nothing: its records were released and the next export carries them"
)

// ListOptions are the flags of `dead-letters`.
type ListOptions struct {
	stage       string
	since       string
	limit       int
	json        bool
	showPayload bool

	sinceTime time.Time
}

// Define adds the flags to fs.
func (o *ListOptions) Define(fs *flag.FlagSet) {
	fs.StringVar(&o.stage, "stage", "", "only this stage: request, sender, tracker, outbox or inbox")
	fs.StringVar(&o.since, "since", "", "only dead letters stored since: an RFC 3339 time or a duration such as 24h")
	fs.IntVar(&o.limit, "limit", DefaultLimit, "show at most the newest N (0: all)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per line instead of a table")
	fs.BoolVar(&o.showPayload, "show-payload", false, "with --json, include the original payload and headers (may hold personal data)")
}

// Check validates the flags; a mistake is a cli.UsageError.
func (o *ListOptions) Check(now time.Time) error {
	switch o.stage {
	case "", bus.StageRequest, bus.StageSender, bus.StageTracker, bus.StageOutbox, bus.StageInbox:
	default:
		return cli.Usagef("--stage %q: want request, sender, tracker, outbox or inbox", o.stage)
	}
	if o.limit < 0 {
		return cli.Usagef("--limit must not be negative")
	}
	if o.showPayload && !o.json {
		return cli.Usagef("--show-payload needs --json (payloads are never printed in the table)")
	}
	if v := strings.TrimSpace(o.since); v != "" {
		t, err := parseSince(v, now)
		if err != nil {
			return cli.Usagef("%v", err)
		}
		o.sinceTime = t
	}
	return nil
}

// parseSince reads an RFC 3339 time or a positive duration meaning that long before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2025-01-02T03:04:05Z) or a duration such as 24h", v)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("--since %q: a duration means that long ago and must be positive", v)
	}
	return now.Add(-d), nil
}

// ParseRedriveSeqs reads the DPS_DEADLETTER sequences `redrive` is given.
func ParseRedriveSeqs(args []string) ([]uint64, error) {
	if len(args) == 0 {
		return nil, cli.Usagef("give the DPS_DEADLETTER sequence(s) to re-drive (see `producer dead-letters`)")
	}
	seqs := make([]uint64, 0, len(args))
	for _, a := range args {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil || n == 0 {
			return nil, cli.Usagef("%q is not a dead-letter sequence (a positive number)", a)
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}

// List is `dead-letters`: the dead letters o selects, as a table or JSON lines on stdout.
func List(ctx context.Context, js jetstream.JetStream, o ListOptions, stdout io.Writer) error {
	list, err := bus.ListDeadLetters(ctx, js, bus.DeadLetterFilter{Stage: o.stage, Since: o.sinceTime, Limit: o.limit})
	if err != nil {
		return err
	}
	if o.json {
		return printDeadLettersJSON(stdout, list, o.showPayload)
	}
	return printDeadLetterTable(stdout, list)
}

// deadLetterLine is one line of `dead-letters --json`. The payload and headers appear only with
// --show-payload.
type deadLetterLine struct {
	Seq             uint64              `json:"seq"`
	Time            time.Time           `json:"time"`
	Stage           string              `json:"stage"`
	Subject         string              `json:"subject"`
	OriginalSubject string              `json:"original_subject,omitempty"`
	OriginalStream  string              `json:"original_stream,omitempty"`
	OriginalSeq     uint64              `json:"original_seq,omitempty"`
	Deliveries      uint64              `json:"deliveries,omitempty"`
	Reason          string              `json:"reason,omitempty"`
	DeadLetteredAt  *time.Time          `json:"dead_lettered_at,omitempty"`
	PayloadBytes    int                 `json:"payload_bytes"`
	Invalid         string              `json:"invalid,omitempty"`
	Payload         string              `json:"payload,omitempty"`
	PayloadBase64   string              `json:"payload_base64,omitempty"`
	Headers         map[string][]string `json:"headers,omitempty"`
}

func printDeadLettersJSON(w io.Writer, list []bus.StoredDeadLetter, showPayload bool) error {
	enc := json.NewEncoder(w)
	for _, d := range list {
		line := deadLetterLine{Seq: d.Seq, Time: d.Time, Stage: d.Stage(), Subject: d.Subject, Invalid: d.Invalid}
		if d.Invalid == "" {
			m := d.Message
			at := m.DeadLetteredAt
			line.OriginalSubject, line.OriginalStream, line.OriginalSeq = m.Subject, m.Stream, m.StreamSeq
			line.Deliveries, line.Reason, line.DeadLetteredAt = m.Deliveries, m.Reason, &at
			line.PayloadBytes = payloadBytes(m)
			if showPayload {
				line.Payload, line.PayloadBase64, line.Headers = m.Payload, m.PayloadBase64, m.Headers
			}
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

func printDeadLetterTable(w io.Writer, list []bus.StoredDeadLetter) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters match")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tSTAGE\tSUBJECT\tORIGIN\tBYTES\tREASON")
	sender := false
	for _, d := range list {
		if d.Invalid != "" {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\t%d\t%s\n", d.Seq, d.Time.Format(time.RFC3339), d.Stage(), d.Size,
				oneLine("not a dead letter: "+d.Invalid, tableReasonWidth))
			continue
		}
		m := d.Message
		sender = sender || d.Stage() == bus.StageSender
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s/%d\t%d\t%s\n", d.Seq, d.Time.Format(time.RFC3339), d.Stage(), m.Subject,
			m.Stream, m.StreamSeq, payloadBytes(m), oneLine(m.Reason, tableReasonWidth))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if sender {
		_, err := fmt.Fprintln(w, "note: "+failedExportNote+".")
		return err
	}
	return nil
}

// payloadBytes is the original payload's size: recorded in the dead letter, or, in one written before
// sizes were recorded, the length of its base64 copy decoded.
func payloadBytes(m bus.DeadLetterMessage) int {
	if m.PayloadSize > 0 || m.PayloadSHA256 != "" {
		return m.PayloadSize
	}
	if m.PayloadBase64 == "" {
		return len(m.Payload)
	}
	return base64.StdEncoding.DecodedLen(len(m.PayloadBase64)) - padding(m.PayloadBase64)
}

func padding(s string) int { return len(s) - len(strings.TrimRight(s, "=")) }

// oneLine flattens s to one line of at most n runes for the table.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// Redrive is `redrive`: each sequence is re-driven on its own, so one refusal does not stop the
// others; any refusal or failure is an error (exit 1).
func Redrive(ctx context.Context, js jetstream.JetStream, seqs []uint64, log *slog.Logger, stdout io.Writer) error {
	notDone := 0
	for _, seq := range seqs {
		res, err := bus.RedriveDeadLetter(ctx, js, seq)
		var refused *bus.RedriveRefusedError
		switch {
		case errors.As(err, &refused):
			notDone++
			fmt.Fprintf(stdout, "%d: refused: %s\n", seq, oneLine(refused.Reason, 1000))
		case err != nil:
			notDone++
			fmt.Fprintf(stdout, "%d: failed: %s\n", seq, oneLine(err.Error(), 1000))
		case res.Duplicate:
			fmt.Fprintf(stdout, "%d: duplicate: already re-driven to %s as %s seq %d within the duplicate window; not published again\n",
				seq, res.Subject, res.Stream, res.Seq)
		default:
			log.Info("dead letter re-driven", slog.Uint64("dead_letter_seq", seq), slog.String("subject", res.Subject),
				slog.String("stream", res.Stream), slog.Uint64("stream_seq", res.Seq))
			fmt.Fprintf(stdout, "%d: published to %s as %s seq %d (%d bytes)\n", seq, res.Subject, res.Stream, res.Seq, res.Size)
		}
		if err == nil && res.Stage == bus.StageSender {
			fmt.Fprintf(stdout, "%d: note: %s\n", seq, redrivenBatchNote)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if notDone > 0 {
		return fmt.Errorf("%d of %d dead letters not re-driven", notDone, len(seqs))
	}
	return nil
}
