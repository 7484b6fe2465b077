package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/exportreport"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
)

// exportsOptions are the flags of `tracker exports`.
type exportsOptions struct {
	filter exportreport.Filter
	json   bool
}

var programmeCode = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,31}$`)

// parseExportsArgs reads `tracker exports [--since 7d] [--programme P] [--status S] [--json]`.
func parseExportsArgs(args []string, now time.Time, stderr io.Writer) (exportsOptions, error) {
	fs := flag.NewFlagSet("tracker exports", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.String("since", "7d", "exports created at or after this: a duration meaning that long ago (7d, 36h, 90m), an RFC 3339 time or a date (2026-11-25), or \"all\"")
	programme := fs.String("programme", "", "only this programme (HPV, FLU, MENACWY, TD_IPV, ...)")
	status := fs.String("status", "", "only exports in this status: "+strings.Join(exportreport.Statuses(), ", "))
	asJSON := fs.Bool("json", false, "one JSON object per export per line, then a {\"totals\": ...} line")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tracker exports [--since 7d] [--programme P] [--status S] [--json]")
		fmt.Fprintln(stderr, "  Lists exports newest first with their lifecycle, then totals. Reads Postgres only (DATABASE_URL).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exportsOptions{}, err
	}
	if fs.NArg() > 0 {
		return exportsOptions{}, cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	var o exportsOptions
	o.json = *asJSON
	t, err := parseSince(*since, now)
	if err != nil {
		return o, cli.Usagef("--since %q: %v", *since, err)
	}
	o.filter.Since = t
	if p := strings.ToUpper(strings.TrimSpace(*programme)); p != "" {
		if !programmeCode.MatchString(p) {
			return o, cli.Usagef("--programme %q is not a programme code", *programme)
		}
		o.filter.Programme = p
	}
	if s := strings.ToLower(strings.TrimSpace(*status)); s != "" {
		if !slices.Contains(exportreport.Statuses(), s) {
			return o, cli.Usagef("--status %q: want one of %s", *status, strings.Join(exportreport.Statuses(), ", "))
		}
		o.filter.Status = s
	}
	return o, nil
}

// parseSince reads --since: "all", a number of days ("7d"), a Go duration ("36h"), an RFC 3339 time or
// a date, meaning midnight UTC.
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	switch {
	case v == "all":
		return time.Time{}, nil
	case strings.HasSuffix(v, "d"):
		n, err := strconv.Atoi(strings.TrimSuffix(v, "d"))
		if err != nil || n <= 0 {
			return time.Time{}, errors.New("want a positive number of days such as 7d")
		}
		return now.AddDate(0, 0, -n), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, errors.New("want a duration (7d, 36h), an RFC 3339 time, a date or \"all\"")
	}
	return now.Add(-d), nil
}

// exportsCommand is `tracker exports`: exit 0 with the listing, 2 for bad flags or configuration, 1
// when the database cannot be read.
func exportsCommand() cli.Command {
	var opts exportsOptions
	return process.DatabaseCommand("tracker exports",
		func(args []string, stderr io.Writer) (err error) {
			opts, err = parseExportsArgs(args, time.Now(), stderr)
			return err
		},
		func(ctx context.Context, pool *pgxpool.Pool, stdout io.Writer) error {
			exports, err := exportreport.List(ctx, pool, opts.filter)
			if err != nil {
				return err
			}
			if opts.json {
				return exportreport.WriteJSON(stdout, exports)
			}
			return exportreport.WriteText(stdout, exports)
		})
}
