// Package replay re-runs a process's handling of a past range of its input stream, through an ordered
// consumer, and summarises what happened to each message. It owns the command-line range flags
// (--since --until --from-seq --to-seq --force --dry-run), reading the range and the summary table.
// It must not know what a message means or decide whether work was already done: the caller's handler
// does, so that "idempotent by default" lives next to the effect it protects.
package replay

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Range is the part of a stream to replay: either by time (Since, optionally Until) or by stream
// sequence (FromSeq, optionally ToSeq), never both. Zero Until or ToSeq means "up to the stream's last
// message when the replay started".
type Range struct {
	Since   time.Time
	Until   time.Time
	FromSeq uint64
	ToSeq   uint64
}

// ByTime reports whether the range is given by time rather than by sequence.
func (r Range) ByTime() bool { return !r.Since.IsZero() }

// String describes the range for a summary header, e.g. "since 2025-01-02T03:04:05Z" or "seq 10..20".
func (r Range) String() string {
	if r.ByTime() {
		s := "since " + r.Since.UTC().Format(time.RFC3339)
		if !r.Until.IsZero() {
			s += " until " + r.Until.UTC().Format(time.RFC3339)
		}
		return s
	}
	if r.ToSeq != 0 {
		return fmt.Sprintf("seq %d..%d", r.FromSeq, r.ToSeq)
	}
	return fmt.Sprintf("seq %d..end", r.FromSeq)
}

// Validate checks that the range names exactly one kind of start and that its ends are in order.
func (r Range) Validate() error {
	byTime := !r.Since.IsZero() || !r.Until.IsZero()
	bySeq := r.FromSeq != 0 || r.ToSeq != 0
	switch {
	case byTime && bySeq:
		return errors.New("give either --since/--until or --from-seq/--to-seq, not both")
	case !byTime && !bySeq:
		return errors.New("give --since (a time or a duration such as 1h) or --from-seq (1 for the whole stream)")
	case byTime && r.Since.IsZero():
		return errors.New("--until needs --since")
	case byTime && !r.Until.IsZero() && !r.Since.Before(r.Until):
		return errors.New("--since must be before --until")
	case bySeq && r.FromSeq == 0:
		return errors.New("--to-seq needs --from-seq (stream sequences start at 1)")
	case bySeq && r.ToSeq != 0 && r.ToSeq < r.FromSeq:
		return errors.New("--from-seq must not be after --to-seq")
	}
	return nil
}

// Options are the replay flags as typed by an operator. Since and Until stay strings until Range is
// called because a duration ("1h") means "that long before now", and now belongs to the caller.
type Options struct {
	Since   string
	Until   string
	FromSeq uint64
	ToSeq   uint64
	// Force re-does work the handler would otherwise skip as already done.
	Force bool
	// DryRun reports what would happen without doing it.
	DryRun bool
}

// ParseFlags registers the shared replay flags on fs and returns the Options they fill once fs.Parse
// has run. Every process's replay subcommand uses it so that the three spell their flags alike.
func ParseFlags(fs *flag.FlagSet) *Options {
	o := &Options{}
	fs.StringVar(&o.Since, "since", "", "replay messages stored at or after this time: RFC 3339 (2025-01-02T03:04:05Z) or a duration meaning that long ago (1h, 90m)")
	fs.StringVar(&o.Until, "until", "", "stop before messages stored at or after this time (RFC 3339 or a duration ago); default: the stream's end when the replay starts")
	fs.Uint64Var(&o.FromSeq, "from-seq", 0, "replay from this stream sequence (1 = the whole stream)")
	fs.Uint64Var(&o.ToSeq, "to-seq", 0, "replay up to and including this stream sequence; default: the stream's end when the replay starts")
	fs.BoolVar(&o.Force, "force", false, "re-do work that was already done instead of skipping it")
	fs.BoolVar(&o.DryRun, "dry-run", false, "only report what would happen")
	return o
}

// ParseArgs is ParseFlags, fs.Parse and Range in one call for a subcommand that takes no other
// flags. name is the subcommand, used in the usage text.
func ParseArgs(name string, args []string, now time.Time) (*Options, Range, error) {
	return ParseArgsTo(os.Stderr, name, args, now)
}

// ParseArgsTo is ParseArgs with the usage (on -h or --help, when the error is flag.ErrHelp) and flag
// errors written to w, the command's own stderr.
func ParseArgsTo(w io.Writer, name string, args []string, now time.Time) (*Options, Range, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	o := ParseFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, Range{}, err
	}
	if fs.NArg() > 0 {
		return nil, Range{}, fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))
	}
	r, err := o.Range(now)
	if err != nil {
		return nil, Range{}, fmt.Errorf("%s: %w", name, err)
	}
	return o, r, nil
}

// Range turns the options into a validated Range, reading durations as "that long before now".
func (o *Options) Range(now time.Time) (Range, error) {
	since, err := parseTime("--since", o.Since, now)
	if err != nil {
		return Range{}, err
	}
	until, err := parseTime("--until", o.Until, now)
	if err != nil {
		return Range{}, err
	}
	r := Range{Since: since, Until: until, FromSeq: o.FromSeq, ToSeq: o.ToSeq}
	if err := r.Validate(); err != nil {
		return Range{}, err
	}
	return r, nil
}

func parseTime(flagName, v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2025-01-02T03:04:05Z) or a duration such as 1h", flagName, v)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("%s %q: a duration means that long ago and must be positive", flagName, v)
	}
	return now.Add(-d), nil
}

// ParseTime reads a time flag the way the replay commands do: an RFC 3339 time, or a positive duration
// meaning that long before now. Empty is the zero time.
func ParseTime(flagName, v string, now time.Time) (time.Time, error) {
	return parseTime(flagName, v, now)
}
