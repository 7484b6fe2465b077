package export

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
)

// pausedCopy is an export's --out copy that runs hook before the file is built and blocks its first
// write until release is closed: the export is then held with its candidates decided and linked, and its
// file query running.
type pausedCopy struct {
	started chan struct{}
	release chan struct{}
	first   bool
}

func (p *pausedCopy) Write(b []byte) (int, error) {
	if !p.first {
		p.first = true
		close(p.started)
		<-p.release
	}
	return len(b), nil
}

func (p *pausedCopy) Close() error { return nil }

// TestWritersDoNotWaitForTheFile: the recording application inserts and changes records of the
// programme while its export is held half-way through the file, and neither waits for the export. A
// record changed after the decision but before the file was read is left out of the file and goes in
// the next export; one changed after the file read it goes out as it was decided and again, as an
// update, in the next export. None is lost, none is in the file at a version other than its link's.
func TestWritersDoNotWaitForTheFile(t *testing.T) {
	e := newEnv(t)
	before, _ := e.addRecord(demodata.RecordSpec{Programme: "HPV"}) // changed before the file query
	after, _ := e.addRecord(demodata.RecordSpec{Programme: "HPV"})  // changed while the file is written
	steady, _ := e.addRecord(demodata.RecordSpec{Programme: "HPV"}) // not changed
	writer := e.newPool()
	ctx := t.Context()
	write := func(sql string, args ...any) {
		t.Helper()
		// Were the writer to wait for the export, this would never end: the export is held until it does.
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := writer.Exec(wctx, sql, args...); err != nil {
			t.Errorf("writer during the export: %v", err)
		}
	}
	change := `UPDATE vaccination_records SET dose_sequence = 2, updated_at = clock_timestamp() WHERE id = $1`

	paused := &pausedCopy{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan Result, 1)
	go func() {
		res, err := e.exporter(e.pool).Export(ctx, request("HPV"), WithCopy(func(Result) (io.WriteCloser, error) {
			write(change, before) // decided and linked already; the file query has not started
			return paused, nil
		}))
		if err != nil || len(res) != 1 {
			t.Errorf("export: %+v, %v", res, err)
			close(done)
			return
		}
		done <- res[0]
	}()
	select {
	case <-paused.started:
	case res := <-done:
		t.Fatalf("export ended before its file was written: %+v", res)
	}
	write(change, after)
	e.addRecord(demodata.RecordSpec{Programme: "HPV"}) // a new record: the queue trigger fires
	close(paused.release)
	first, ok := <-done
	if !ok || t.Failed() {
		t.FailNow()
	}
	if first.Rows != 2 || first.Actions["new"] != 2 {
		t.Fatalf("first export: %+v; want the two records not changed before the file, as new", first)
	}
	carried := func(exportID string, id int64) string {
		var action string
		err := e.pool.QueryRow(ctx, `SELECT er.action FROM dps_export_records er JOIN vaccination_records r ON r.id = er.vaccination_record_id
			WHERE er.export_id = $1 AND er.vaccination_record_id = $2 AND er.record_updated_at = r.updated_at`, exportID, id).Scan(&action)
		if err != nil {
			return ""
		}
		return action
	}
	if carried(first.ExportID, before) != "" {
		t.Errorf("the record changed before the file query is in the first export")
	}
	if e.count(`SELECT count(*) FROM dps_export_records WHERE export_id = $1 AND vaccination_record_id = ANY($2)`,
		first.ExportID, []int64{after, steady}) != 2 {
		t.Errorf("the first export does not link the two records it carries")
	}

	second := e.exportOne(request("HPV"))
	if second.Rows != 3 || second.Actions["new"] != 2 || second.Actions["update"] != 1 {
		t.Fatalf("second export: %+v; want the record left out and the new one as new, the one changed late as an update", second)
	}
	if carried(second.ExportID, before) != "new" || carried(second.ExportID, after) != "update" {
		t.Errorf("second export: record changed early carried as %q, late as %q; want new and update",
			carried(second.ExportID, before), carried(second.ExportID, after))
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != 0 {
		t.Errorf("%d records still queued after the second export", n)
	}
}

// TestTakeDoesNotWaitForAWriter: a writer's transaction that re-queued a record of the programme (its
// queue row is locked) stays open for the whole export. The export neither waits for it nor cancels it:
// its take gives up on the locked row and takes the others, leaving that record queued. Once the writer
// commits, its change goes in the next export as an update.
func TestTakeDoesNotWaitForAWriter(t *testing.T) {
	e := newEnv(t)
	held, _ := e.addRecord(demodata.RecordSpec{Programme: "HPV"})
	other, _ := e.addRecord(demodata.RecordSpec{Programme: "HPV"})
	ctx := t.Context()
	writer, err := e.newPool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Rollback(context.WithoutCancel(ctx))
	if _, err := writer.Exec(ctx, `UPDATE vaccination_records SET dose_sequence = 2, updated_at = clock_timestamp() WHERE id = $1`, held); err != nil {
		t.Fatal(err)
	}

	// Were the take to wait for the writer, the export would never end: the writer commits only after it.
	exportCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := e.exporter(e.pool).Export(exportCtx, request("HPV"))
	if err != nil || len(res) != 1 {
		t.Fatalf("export while a writer holds a queued row: %+v, %v", res, err)
	}
	if res[0].Rows != 2 {
		t.Fatalf("export: %+v; want both records, as they were when it decided", res[0])
	}
	rows, err := e.pool.Query(ctx, `SELECT vaccination_record_id FROM dps_pending_records ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || queued[0] != held {
		t.Fatalf("queued after the export: %v; want only the record the writer holds (%d), not %d", queued, held, other)
	}
	if err := writer.Commit(ctx); err != nil {
		t.Fatalf("the writer's transaction, held across the export: %v", err)
	}
	next := e.exportOne(request("HPV"))
	if next.Rows != 1 || next.Actions["update"] != 1 {
		t.Fatalf("next export: %+v; want the writer's change as one update", next)
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != 0 {
		t.Errorf("%d records still queued after the next export", n)
	}
}
