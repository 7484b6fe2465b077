package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/process"
	"github.com/nhs-dps/dps-pipeline/pkg/replay"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// recordsOptions are the flags of `tracker records`.
type recordsOptions struct {
	filter tracking.RecordFilter
	json   bool
}

// parseRecordsArgs reads `tracker records --export ID | --record UUID | --refused [--since T]
// [--programme P] [--limit N] [--json]`.
func parseRecordsArgs(args []string, now time.Time, stderr io.Writer) (recordsOptions, error) {
	var o recordsOptions
	fs := flag.NewFlagSet("tracker records", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var since string
	fs.StringVar(&o.filter.ExportID, "export", "", "every record of this export (its id)")
	fs.StringVar(&o.filter.RecordUUID, "record", "", "every delivery of this vaccination record (its UUID)")
	fs.BoolVar(&o.filter.Refused, "refused", false, "every record the receiver refused that waits for a correction")
	fs.StringVar(&since, "since", "", "with --refused: refused since an RFC 3339 time or a duration such as 24h")
	fs.StringVar(&o.filter.Programme, "programme", "", "with --refused: only this programme (HPV, FLU, ...)")
	fs.IntVar(&o.filter.Limit, "limit", 0, "at most N rows (0: all)")
	fs.BoolVar(&o.json, "json", false, "one JSON object per line instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tracker records --export ID | --record UUID | --refused [--since T] [--programme P] [--json]")
		fmt.Fprintln(stderr, "  Each record's delivery history and the receiver's outcome, by UUID. Reads Postgres only (DATABASE_URL).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, cli.Usagef("tracker records: unexpected argument %q", fs.Arg(0))
	}
	if o.filter.Limit < 0 {
		return o, cli.Usagef("tracker records: --limit must not be negative")
	}
	var err error
	if o.filter.Since, err = replay.ParseTime("--since", since, now); err != nil {
		return o, cli.Usagef("%v", err)
	}
	if err := o.filter.Check(); err != nil {
		return o, cli.Usagef("%v", err)
	}
	return o, nil
}

// recordsCommand is `tracker records`: per record, its delivery history (export, file, MESH message,
// downloaded, the receiver's outcome and diagnostic), for the people asked "did this vaccination reach
// NHS England?". Exit 0 with the listing, 2 for bad flags or configuration, 1 when the database cannot
// be read. It names records by UUID, never a patient.
func recordsCommand() cli.Command {
	var opts recordsOptions
	return process.DatabaseCommand("tracker records",
		func(args []string, stderr io.Writer) (err error) {
			opts, err = parseRecordsArgs(args, time.Now(), stderr)
			return err
		},
		func(ctx context.Context, pool *pgxpool.Pool, stdout io.Writer) error {
			deliveries, err := tracking.Deliveries(ctx, pool, opts.filter)
			if err != nil {
				return err
			}
			if opts.json {
				return cli.WriteJSONLines(stdout, deliveries)
			}
			printDeliveries(stdout, deliveries, opts.filter)
			return nil
		})
}

// tableDiagnosticWidth cuts a diagnostic in the table; --json carries it whole.
const tableDiagnosticWidth = 90

func printDeliveries(w io.Writer, ds []tracking.Delivery, f tracking.RecordFilter) {
	if len(ds) == 0 {
		switch {
		case f.Refused:
			fmt.Fprintln(w, "no refused record waits for a correction")
		case f.ExportID != "":
			fmt.Fprintf(w, "export %s carries no record (or does not exist)\n", f.ExportID)
		default:
			fmt.Fprintf(w, "record %s has never been exported (or does not exist)\n", f.RecordUUID)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORD\tPROGRAMME\tACTION\tEXPORT\tSTATUS\tFILE\tMESH MESSAGE\tDOWNLOADED\tOUTCOME\tDIAGNOSTIC")
	for _, d := range ds {
		outcome := d.Outcome
		switch {
		case d.Outcome == tracking.OutcomeRefused && d.Superseded:
			outcome += " (sent again since)"
		case d.Outcome == tracking.OutcomeRefused && d.ChangedSince:
			outcome += " (changed: goes in the next export)"
		case d.Outcome == tracking.OutcomeRefused:
			outcome += " (waits for a correction)"
		}
		diag := d.Diagnostic
		if diag == "" {
			diag = d.Failure
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.RecordUUID, d.Programme, d.Action, d.ExportID,
			d.ExportStatus, d.FileName, dash(d.MESHMessage), when(d.DownloadedAt), outcome, cut(diag, tableDiagnosticWidth))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) <= n {
		return dash(s)
	}
	return string([]rune(s)[:n-1]) + "…"
}
