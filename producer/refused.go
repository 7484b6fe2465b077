package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/export"
	"github.com/nhs-dps/dps-pipeline/pkg/store"
)

// runRefused is `producer refused`: the records waiting because the receiver would refuse their row,
// by UUID, with the rule and field. Read-only; it needs Postgres only.
func runRefused(ctx context.Context, cfg config.Producer, cmd command, _ *slog.Logger, stdout io.Writer) error {
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	list, err := export.ListRefused(ctx, pool, cmd.programme)
	if err != nil {
		return err
	}
	if cmd.json {
		return cli.WriteJSONLines(stdout, list)
	}
	if len(list) == 0 {
		_, err := fmt.Fprintln(stdout, "no refused records: every queued record would be accepted")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORD UUID\tPROGRAMME\tACTION\tRULE\tFIELD\tREASON\tFIRST REFUSED\tTIMES")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.RecordUUID, r.Programme, r.Action, r.Rule, r.Field,
			r.Reason, r.FirstRefusedAt.UTC().Format(time.RFC3339), r.TimesRefused)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d records wait for their data to be put right; each goes out in the next export after that.\n", len(list))
	return err
}
