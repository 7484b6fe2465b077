package replay_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-dps/dps-pipeline/pkg/natstest"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
)

func TestOptionsRange(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		args    []string
		want    replay.Range
		wantErr string
	}{
		{name: "duration ago", args: []string{"--since", "1h"}, want: replay.Range{Since: now.Add(-time.Hour)}},
		{name: "rfc3339 both ends", args: []string{"--since", "2025-06-01T10:00:00Z", "--until", "30m"},
			want: replay.Range{Since: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), Until: now.Add(-30 * time.Minute)}},
		{name: "seq range", args: []string{"--from-seq", "3", "--to-seq", "9"}, want: replay.Range{FromSeq: 3, ToSeq: 9}},
		{name: "whole stream", args: []string{"--from-seq", "1"}, want: replay.Range{FromSeq: 1}},
		{name: "nothing", args: nil, wantErr: "give --since"},
		{name: "both kinds", args: []string{"--since", "1h", "--from-seq", "2"}, wantErr: "not both"},
		{name: "until alone", args: []string{"--until", "1h"}, wantErr: "--until needs --since"},
		{name: "since after until", args: []string{"--since", "1h", "--until", "2h"}, wantErr: "before --until"},
		{name: "to-seq alone", args: []string{"--to-seq", "4"}, wantErr: "needs --from-seq"},
		{name: "seq reversed", args: []string{"--from-seq", "5", "--to-seq", "4"}, wantErr: "must not be after"},
		{name: "bad time", args: []string{"--since", "yesterday"}, wantErr: "RFC 3339"},
		{name: "negative duration", args: []string{"--since", "-1h"}, wantErr: "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("replay", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o := replay.ParseFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := o.Range(now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Since.Equal(tt.want.Since) || !got.Until.Equal(tt.want.Until) || got.FromSeq != tt.want.FromSeq || got.ToSeq != tt.want.ToSeq {
				t.Fatalf("range = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseArgsFlags(t *testing.T) {
	o, r, err := replay.ParseArgs("sender replay", []string{"--since", "1h", "--force", "--dry-run"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !o.Force || !o.DryRun || !r.ByTime() {
		t.Fatalf("options %+v range %+v", o, r)
	}
	if _, _, err := replay.ParseArgs("x", []string{"--from-seq", "1", "extra"}, time.Now()); err == nil {
		t.Fatal("want an error for a stray argument")
	}
}

// newStream starts a server with stream TEST on t.> holding n messages alternating between t.a and
// t.b, and returns the JetStream context and the stored time of each message by sequence.
func newStream(t *testing.T, n int) (jetstream.JetStream, map[uint64]time.Time) {
	t.Helper()
	_, url := natstest.Run(t)
	_, js := natstest.Connect(t, url)
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		subj := "t.a"
		if i%2 == 0 {
			subj = "t.b"
		}
		if _, err := js.Publish(ctx, subj, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	times := map[uint64]time.Time{}
	for seq := uint64(1); seq <= uint64(n); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		times[seq] = m.Time
	}
	return js, times
}

func seqs(s replay.Summary) []uint64 {
	var out []uint64
	for _, e := range s.Entries {
		out = append(out, e.Seq)
	}
	return out
}

func record(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
	return replay.Skipped, string(msg.Data()), nil
}

func TestRunRanges(t *testing.T) {
	js, times := newStream(t, 10)
	tests := []struct {
		name   string
		filter string
		r      replay.Range
		want   []uint64
	}{
		{name: "whole stream", r: replay.Range{FromSeq: 1}, want: []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{name: "seq window", r: replay.Range{FromSeq: 3, ToSeq: 5}, want: []uint64{3, 4, 5}},
		{name: "to-seq past the end", r: replay.Range{FromSeq: 9, ToSeq: 99}, want: []uint64{9, 10}},
		{name: "from-seq past the end", r: replay.Range{FromSeq: 11}, want: nil},
		{name: "filtered", filter: "t.b", r: replay.Range{FromSeq: 1}, want: []uint64{2, 4, 6, 8, 10}},
		// The last t.a message is 9: the replay must end there, not wait for seq 10 to match.
		{name: "filtered, last match before the end", filter: "t.a", r: replay.Range{FromSeq: 6}, want: []uint64{7, 9}},
		{name: "filter matching nothing", filter: "t.none", r: replay.Range{FromSeq: 1}, want: nil},
		{name: "since", r: replay.Range{Since: times[4]}, want: []uint64{4, 5, 6, 7, 8, 9, 10}},
		{name: "since and until", r: replay.Range{Since: times[2], Until: times[5]}, want: []uint64{2, 3, 4}},
		{name: "since in the future", r: replay.Range{Since: times[10].Add(time.Hour)}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum, err := replay.Run(t.Context(), js, "TEST", tt.filter, tt.r, record)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(sum); !slices.Equal(got, tt.want) {
				t.Fatalf("replayed %v, want %v", got, tt.want)
			}
			for _, e := range sum.Entries {
				if e.Detail != fmt.Sprintf("m%d", e.Seq) {
					t.Errorf("seq %d carried %q", e.Seq, e.Detail)
				}
			}
		})
	}
}

func TestRunEmptyStream(t *testing.T) {
	js, _ := newStream(t, 0)
	sum, err := replay.Run(t.Context(), js, "TEST", "", replay.Range{FromSeq: 1}, record)
	if err != nil || len(sum.Entries) != 0 {
		t.Fatalf("entries %v, err %v", sum.Entries, err)
	}
}

func TestRunStopsAtTheEndSeenAtStart(t *testing.T) {
	js, _ := newStream(t, 3)
	// Each handled message publishes a new one, as a live producer might; the replay must not chase them.
	handle := func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		if _, err := js.Publish(ctx, "t.a", []byte("late")); err != nil {
			return "", "", err
		}
		return replay.Done, "", nil
	}
	sum, err := replay.Run(t.Context(), js, "TEST", "", replay.Range{FromSeq: 1}, handle)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(sum); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("replayed %v, want [1 2 3]", got)
	}
}

func TestRunRecordsFailuresAndCarriesOn(t *testing.T) {
	js, _ := newStream(t, 4)
	handle := func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		md, _ := msg.Metadata()
		switch md.Sequence.Stream {
		case 2:
			return "", "", errors.New("export 42 not found")
		case 3:
			return replay.Forced, "re-sent", nil
		case 4:
			return replay.DryRun, "would re-send", nil
		}
		return replay.Done, "sent", nil
	}
	sum, err := replay.Run(t.Context(), js, "TEST", "", replay.Range{FromSeq: 1}, handle)
	if err != nil {
		t.Fatal(err)
	}
	want := map[replay.Outcome]int{replay.Done: 1, replay.Failed: 1, replay.Forced: 1, replay.DryRun: 1, replay.Skipped: 0}
	for o, n := range want {
		if got := sum.Count(o); got != n {
			t.Errorf("count(%s) = %d, want %d", o, got, n)
		}
	}
	if sum.Err() == nil {
		t.Error("Err() = nil with a failed message")
	}
	if sum.Entries[1].Detail != "export 42 not found" {
		t.Errorf("failure detail = %q", sum.Entries[1].Detail)
	}

	var buf bytes.Buffer
	if err := sum.Print(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"replay of TEST, seq 1..end: 4 messages", "failed", "SEQ", "export 42 not found", "t.b", "would re-send"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	t.Log("\n" + out)
}

func TestRunStopsWithContext(t *testing.T) {
	js, _ := newStream(t, 5)
	ctx, cancel := context.WithCancel(t.Context())
	handle := func(ctx context.Context, msg jetstream.Msg) (replay.Outcome, string, error) {
		cancel()
		return replay.Done, "", nil
	}
	sum, err := replay.Run(ctx, js, "TEST", "", replay.Range{FromSeq: 1}, handle)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if len(sum.Entries) == 0 || len(sum.Entries) == 5 {
		t.Fatalf("replayed %d messages before stopping", len(sum.Entries))
	}
}

func TestRunUnknownStream(t *testing.T) {
	js, _ := newStream(t, 0)
	if _, err := replay.Run(t.Context(), js, "NOPE", "", replay.Range{FromSeq: 1}, record); err == nil {
		t.Fatal("want an error for a missing stream")
	}
}

// TestPrintHeader: the header counts the messages in plain English, as an operator reads it.
func TestPrintHeader(t *testing.T) {
	entry := replay.Entry{Seq: 3, Subject: "t.a", Outcome: replay.Skipped, Detail: "already sent"}
	tests := []struct {
		entries []replay.Entry
		want    string
	}{
		{nil, "replay of TEST (t.a), seq 3..end: 0 messages\n"},
		{[]replay.Entry{entry}, "replay of TEST (t.a), seq 3..end: 1 message\n"},
		{[]replay.Entry{entry, entry}, "replay of TEST (t.a), seq 3..end: 2 messages\n"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		sum := replay.Summary{Stream: "TEST", Filter: "t.a", Range: replay.Range{FromSeq: 3}, Entries: tt.entries}
		if err := sum.Print(&buf); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := strings.Cut(buf.String(), "\n"); got+"\n" != tt.want {
			t.Errorf("header %q, want %q", got, strings.TrimSuffix(tt.want, "\n"))
		}
	}
}

func TestParseArgsToWritesUsageToTheCommandsStderr(t *testing.T) {
	var w strings.Builder
	_, _, err := replay.ParseArgsTo(&w, "sender replay", []string{"--help"}, time.Now())
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(w.String(), "Usage of sender replay") || !strings.Contains(w.String(), "-since") {
		t.Errorf("err %v, output %q: want flag.ErrHelp and the usage", err, w.String())
	}
}
