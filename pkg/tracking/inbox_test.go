package tracking_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
	"github.com/nhs-dps/dps-pipeline/pkg/outbox"
	"github.com/nhs-dps/dps-pipeline/pkg/testenv"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

const uniqueIDURI = "https://manage-vaccinations-in-schools.nhs.uk/vaccination-records"

// The sandbox's mailboxes (pkg/testenv).
const (
	ourMailbox = testenv.OurMailbox
	dpsMailbox = testenv.DPSMailbox
	workflowID = testenv.WorkflowID
)

// namedExport is a sent export with a file name of its own and its records' UUIDs in link order.
type namedExport struct {
	export
	FileName string
	UUIDs    []string
}

// sendNamedExport is sendExport with a unique file name, as issue 11's names are.
func (e *env) sendNamedExport(t *testing.T, records int) namedExport {
	t.Helper()
	x := namedExport{export: e.sendExport(t, records)}
	x.FileName = fmt.Sprintf("HPV_Vaccinations_v5_X26_%sT00000000.csv", strings.ReplaceAll(x.ID[:8], "-", ""))
	if _, err := e.pool.Exec(t.Context(), `UPDATE dps_exports SET filename = $2 WHERE id = $1`, x.ID, x.FileName); err != nil {
		t.Fatal(err)
	}
	rows, err := e.pool.Query(t.Context(), `
		SELECT r.uuid::text FROM dps_export_records er JOIN vaccination_records r ON r.id = er.vaccination_record_id
		WHERE er.export_id = $1 ORDER BY r.id`, x.ID)
	if err != nil {
		t.Fatal(err)
	}
	if x.UUIDs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	return x
}

// reply sends an acknowledgement file from a mailbox to ours, as the receiver does over MESH.
func (e *env) reply(t *testing.T, from *mesh.Client, fileName string, body []byte) string {
	t.Helper()
	id, err := from.Send(t.Context(), mesh.OutboundMessage{To: ourMailbox, WorkflowID: workflowID, FileName: fileName,
		ContentType: "text/csv", Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("send %s: %v", fileName, err)
	}
	return id
}

func infAck(t *testing.T, success bool) []byte {
	t.Helper()
	a := dps.InfAck{MessageHeaderID: "c7e2f1d0-0000-4000-8000-000000000001", Success: success,
		ResponseCode: dps.InfAckSuccessCode, ResponseDisplay: dps.InfAckSuccessDisplay, ReceivedTime: "20261126T11412500"}
	if !success {
		a.ResponseCode, a.ResponseDisplay = dps.InfAckFailureCode, dps.InfAckFailureDisplay
	}
	var b bytes.Buffer
	if err := dps.WriteInfAck(&b, a); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// busAck refuses the rows of refused (UUID → diagnostic), with their row numbers in x.
func busAck(t *testing.T, x namedExport, refused map[string]string) []byte {
	t.Helper()
	var rows []dps.BusAckRow
	for i, id := range x.UUIDs {
		if d, ok := refused[id]; ok {
			rows = append(rows, dps.BusAckRow{Row: i + 1, Refused: true, UniqueID: id, UniqueIDURI: uniqueIDURI, Diagnostic: d})
		}
	}
	var b bytes.Buffer
	if err := dps.WriteBusAck(&b, "c7e2f1d0-0000-4000-8000-000000000001", "20261126T11412500", rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func ackName(x namedExport, kind string) string {
	return dps.AckFileNameFor(x.FileName, kind, "20261126T11412500")
}

// newInboxTracker is a Tracker whose ReadInbox the test calls itself.
func (e *env) newInboxTracker(t *testing.T, pool *pgxpool.Pool, log *logBuffer) *tracking.Tracker {
	t.Helper()
	var l *slog.Logger
	if log != nil {
		l = slog.New(slog.NewJSONHandler(log, nil))
	} else {
		l = slog.New(slog.DiscardHandler)
	}
	tr, err := tracking.New(e.trackerConfig(pool, l))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// gather scrapes reg into "name{label="value"}" → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			if len(m.GetLabel()) > 0 {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

// flush publishes the outbox, as the tracker's relay does.
func (e *env) flush(t *testing.T) (int, error) {
	t.Helper()
	relay, err := outbox.NewRelay(outbox.RelayConfig{Pool: e.pool, JS: e.js})
	if err != nil {
		t.Fatal(err)
	}
	return relay.Flush(t.Context())
}

func readInbox(t *testing.T, tr *tracking.Tracker) tracking.InboxResult {
	t.Helper()
	res, err := tr.ReadInbox(t.Context())
	if err != nil {
		t.Fatalf("read inbox: %v", err)
	}
	return res
}

// ourInbox is what MESH still lists in our inbox.
func (e *env) ourInbox(t *testing.T) []string {
	t.Helper()
	ids, err := e.ours.Inbox(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

type recordOutcome struct {
	Outcome, Diagnostic, Code string
}

func (e *env) outcomes(t *testing.T, exportID string) map[string]recordOutcome {
	t.Helper()
	rows, err := e.pool.Query(t.Context(), `
		SELECT r.uuid::text, coalesce(er.outcome, ''), coalesce(er.diagnostic, ''), coalesce(er.response_code, '')
		FROM dps_export_records er JOIN vaccination_records r ON r.id = er.vaccination_record_id WHERE er.export_id = $1`, exportID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]recordOutcome{}
	for rows.Next() {
		var id string
		var o recordOutcome
		if err := rows.Scan(&id, &o.Outcome, &o.Diagnostic, &o.Code); err != nil {
			t.Fatal(err)
		}
		out[id] = o
	}
	return out
}

// outboxPayloads returns the payloads enqueued for subject.
func (e *env) outboxPayloads(t *testing.T, subject string) []string {
	t.Helper()
	rows, err := e.pool.Query(t.Context(), `SELECT payload::text FROM dps_outbox WHERE subject = $1 ORDER BY id`, subject)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) pendingCount(t *testing.T, ids []int64) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM dps_pending_records WHERE vaccination_record_id = ANY($1)`, ids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInboxInfAckAndBusAckRecordEachRecord(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	x := e.sendNamedExport(t, 5)
	e.actAsDPS(t)
	// The NHS number in the diagnostic must never reach the database or the bus.
	refused := map[string]string{
		x.UUIDs[1]: "Validation errors: contained[?(@.resourceType=='Patient')].identifier[0].value 9434765919 is not valid",
		x.UUIDs[3]: "Immunization resource version mismatch",
	}
	e.reply(t, e.dps, ackName(x, dps.KindInfAck), infAck(t, true))
	e.reply(t, e.dps, ackName(x, dps.KindBusAck), busAck(t, x, refused))
	tr := e.newInboxTracker(t, e.pool, nil)

	res := readInbox(t, tr)
	if res.Listed != 2 || res.Applied != 2 || res.Acknowledged != 2 || res.Held != 0 {
		t.Fatalf("first pass: %+v, want 2 listed, applied and acknowledged", res)
	}
	if got := e.exportStatus(t, x.ID); got != "processed" {
		t.Fatalf("export is %s, want processed", got)
	}
	var accepted, refusedN int
	var receivedAt, processedAt, ackAt *time.Time
	if err := e.pool.QueryRow(ctx, `SELECT rows_accepted, rows_refused, received_at, processed_at, acknowledged_at FROM dps_exports WHERE id = $1`, x.ID).
		Scan(&accepted, &refusedN, &receivedAt, &processedAt, &ackAt); err != nil {
		t.Fatal(err)
	}
	if accepted != 3 || refusedN != 2 || receivedAt == nil || processedAt == nil || ackAt == nil {
		t.Errorf("export: %d accepted, %d refused, received %v, processed %v, acknowledged %v", accepted, refusedN, receivedAt, processedAt, ackAt)
	}
	for id, o := range e.outcomes(t, x.ID) {
		d, isRefused := refused[id]
		switch {
		case isRefused && (o.Outcome != "refused" || o.Code != dps.BusAckRefusedCode || o.Diagnostic == ""):
			t.Errorf("record %s: %+v, want refused with %q", id, o, d)
		case !isRefused && o.Outcome != "accepted":
			t.Errorf("record %s: %+v, want accepted", id, o)
		case strings.Contains(o.Diagnostic, "9434765919"):
			t.Errorf("record %s: the NHS number reached the database: %q", id, o.Diagnostic)
		}
	}
	// The lifecycle: acknowledged (passed through: the poll had not seen it), received, processed.
	for _, subject := range []string{bus.SubjectExportAcknowledged, bus.SubjectExportReceived, bus.SubjectExportProcessed} {
		if n := e.outboxCount(t, subject); n != 1 {
			t.Errorf("%d %s events enqueued, want 1", n, subject)
		}
	}
	var ev bus.ExportProcessed
	processed := e.outboxPayloads(t, bus.SubjectExportProcessed)
	if err := json.Unmarshal([]byte(processed[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.RowsSent != 5 || ev.RowsAccepted != 3 || ev.RowsRefused != 2 || len(ev.Refused) != 2 {
		t.Errorf("processed event %+v", ev)
	}
	for _, r := range ev.Refused {
		if _, ok := refused[r.RecordUUID]; !ok || r.Diagnostic == "" {
			t.Errorf("refused entry %+v", r)
		}
	}
	if strings.Contains(processed[0], "9434765919") {
		t.Errorf("the NHS number reached the event: %s", processed[0])
	}
	if ids := e.ourInbox(t); len(ids) != 0 {
		t.Errorf("our inbox still lists %v", ids)
	}
	// The events validate against their schemas when the relay publishes them.
	if _, err := e.flush(t); err != nil {
		t.Fatalf("publish events: %v", err)
	}

	// /metrics: the statuses from the database, and the waiting refused records by diagnostic.
	reg := prometheus.NewRegistry()
	tracking.NewMetrics(reg, e.pool, nil)
	gauges := gather(t, reg)
	for series, want := range map[string]float64{
		`dps_exports_by_status{status="processed"}`:                                           1,
		`dps_exports_by_status{status="rejected"}`:                                            0,
		`dps_refused_rows_by_diagnostic{diagnostic="Immunization resource version mismatch"}`: 1,
		`dps_inbox_messages_held`:                                                             0,
	} {
		if got, ok := gauges[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	// Nothing is applied twice.
	if res := readInbox(t, tr); res.Listed != 0 {
		t.Errorf("second pass: %+v", res)
	}
	// The refused records are not queued again: they wait for a change.
	if n := e.pendingCount(t, x.RecordIDs); n != 0 {
		t.Errorf("%d records queued again after the BusAck, want 0", n)
	}
}

func TestInboxInfAckFailureRejectsAndReleases(t *testing.T) {
	e := newEnv(t)
	x := e.sendNamedExport(t, 3)
	e.actAsDPS(t)
	e.reply(t, e.dps, ackName(x, dps.KindInfAck), infAck(t, false))
	tr := e.newInboxTracker(t, e.pool, nil)
	if res := readInbox(t, tr); res.Applied != 1 {
		t.Fatalf("pass: %+v", res)
	}
	if got := e.exportStatus(t, x.ID); got != "rejected" {
		t.Fatalf("export is %s, want rejected", got)
	}
	if n := e.pendingCount(t, x.RecordIDs); n != 3 {
		t.Errorf("%d of 3 records released, want all", n)
	}
	failed := e.outboxPayloads(t, bus.SubjectExportFailed)
	if len(failed) != 1 {
		t.Fatalf("%d failed events", len(failed))
	}
	var ev bus.ExportFailed
	if err := json.Unmarshal([]byte(failed[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Status != "rejected" || ev.ReceiverCode != dps.InfAckFailureCode || ev.ReceiverDisplay != dps.InfAckFailureDisplay || ev.Stage != "tracker" {
		t.Errorf("failed event %+v", ev)
	}
	if _, err := e.flush(t); err != nil {
		t.Fatalf("publish events: %v", err)
	}
}

func TestInboxReportFailsTheExport(t *testing.T) {
	for _, tc := range []struct {
		name string
		// report makes the report for x and returns the code the export should fail with.
		report func(e *env, x namedExport) (string, error)
	}{
		{"official create_report, status error, linked by message id", func(e *env, x namedExport) (string, error) {
			_, err := e.sandbox.CreateReport(meshsandbox.ReportRequest{MailboxID: ourMailbox, Code: "14",
				Description: "Message not collected by recipient after 5 days", WorkflowID: workflowID,
				Status: meshsandbox.ReportStatusError, LinkedMessageID: x.MessageID, LocalID: x.ID + ".1"})
			return "14", err
		}},
		{"official create_report, undeliverable, matched by local id only", func(e *env, x namedExport) (string, error) {
			_, err := e.sandbox.CreateReport(meshsandbox.ReportRequest{MailboxID: ourMailbox, Code: "14",
				Description: "undelivered", WorkflowID: workflowID, LocalID: x.ID + ".1"})
			return "", err
		}},
		{"our sandbox's ReportUndelivered", func(e *env, x namedExport) (string, error) {
			_, err := e.sandbox.ReportUndelivered(x.MessageID)
			return "14", err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			x := e.sendNamedExport(t, 2)
			code, err := tc.report(e, x)
			if err != nil {
				t.Fatal(err)
			}
			tr := e.newInboxTracker(t, e.pool, nil)
			if res := readInbox(t, tr); res.Applied != 1 || res.Held != 0 {
				t.Fatalf("pass: %+v", res)
			}
			if got := e.exportStatus(t, x.ID); got != "failed" {
				t.Fatalf("export is %s, want failed", got)
			}
			if n := e.pendingCount(t, x.RecordIDs); n != 2 {
				t.Errorf("%d of 2 records released", n)
			}
			var lastCode, reportID string
			if err := e.pool.QueryRow(t.Context(), `SELECT coalesce(last_error_code, ''), coalesce(report_message_id, '') FROM dps_exports WHERE id = $1`, x.ID).
				Scan(&lastCode, &reportID); err != nil {
				t.Fatal(err)
			}
			if lastCode != code || reportID == "" {
				t.Errorf("last_error_code %q (want %q), report_message_id %q", lastCode, code, reportID)
			}
			if n := e.outboxCount(t, bus.SubjectExportFailed); n != 1 {
				t.Errorf("%d failed events", n)
			}
			if ids := e.ourInbox(t); len(ids) != 0 {
				t.Errorf("the report is still in our inbox: %v", ids)
			}
			// A second report about the same export changes nothing.
			if _, err := tc.report(e, x); err == nil {
				if res := readInbox(t, tr); res.Applied != 1 {
					t.Errorf("second report: %+v", res)
				}
				if n := e.outboxCount(t, bus.SubjectExportFailed); n != 1 {
					t.Errorf("%d failed events after a second report", n)
				}
			}
		})
	}
}

func TestInboxHoldsWhatItCannotApply(t *testing.T) {
	e := newEnv(t)
	x := e.sendNamedExport(t, 2)
	stranger := "X26STRNG"
	e.sandbox.AddMailbox(meshsandbox.Mailbox{ID: stranger, Password: "p"})
	strangerClient := e.MESHClient(stranger, "p", 2)

	held := map[string]string{} // message id → what its reason must say
	held[e.reply(t, e.dps, "notes.txt", []byte("hello"))] = "is not a receiver acknowledgement"
	held[e.reply(t, strangerClient, ackName(x, dps.KindInfAck), infAck(t, true))] = "came from mailbox"
	held[e.reply(t, e.dps, "HPV_Vaccinations_v5_X26_20990101T00000000_InfAck_20990101T00000000.csv", infAck(t, true))] = "which no export of ours has"
	held[e.reply(t, e.dps, ackName(x, dps.KindBusAck), []byte("not|a|busack\n"))] = "unreadable"
	e.actAsDPS(t)
	if _, err := e.pool.Exec(t.Context(), `UPDATE dps_exports SET status = 'received' WHERE id = $1`, x.ID); err != nil {
		t.Fatal(err)
	}
	reportID, err := e.sandbox.CreateReport(meshsandbox.ReportRequest{MailboxID: ourMailbox, Code: "14", Description: "x",
		WorkflowID: workflowID, Status: meshsandbox.ReportStatusError, LinkedMessageID: "NOSUCHMESSAGE", LocalID: "no-such-local-id"})
	if err != nil {
		t.Fatal(err)
	}
	held[reportID] = "a message we never sent"

	var logs logBuffer
	tr := e.newInboxTracker(t, e.pool, &logs)
	for pass := 1; pass <= 2; pass++ {
		res := readInbox(t, tr)
		if res.Held != len(held) || res.Applied != 0 {
			t.Fatalf("pass %d: %+v, want %d held", pass, res, len(held))
		}
	}
	if ids := e.ourInbox(t); len(ids) != len(held) {
		t.Errorf("our inbox lists %d messages, want the %d held ones, unacknowledged", len(ids), len(held))
	}
	letters := e.outboxPayloads(t, bus.SubjectDeadLetterInbox)
	if len(letters) != len(held) {
		t.Fatalf("%d inbox dead letters after two passes, want one per held message (%d)", len(letters), len(held))
	}
	for _, l := range letters {
		var dl bus.DeadLetterMessage
		if err := json.Unmarshal([]byte(l), &dl); err != nil {
			t.Fatal(err)
		}
		var id string
		if v := dl.Headers["mex-MessageID"]; len(v) == 1 {
			id = v[0]
		}
		want, ok := held[id]
		if !ok || !strings.Contains(dl.Reason, want) || dl.Stage != "inbox" || dl.Stream != bus.InboxOrigin || dl.Subject != bus.SubjectMESHInbox {
			t.Errorf("dead letter %+v, want reason with %q", dl, want)
		}
	}
	if _, err := e.flush(t); err != nil {
		t.Fatalf("publish dead letters: %v", err)
	}
	if got := e.streamCount(t, bus.StreamDeadLetter, bus.SubjectDeadLetterInbox); got != uint64(len(held)) {
		t.Errorf("DPS_DEADLETTER holds %d inbox dead letters, want %d", got, len(held))
	}
	if got := e.exportStatus(t, x.ID); got != "received" {
		t.Errorf("export is %s after held messages, want it unchanged", got)
	}
}

// TestInboxReplicasApplyEachMessageOnce: two trackers with their own pools read the same inbox at the
// same time; every reply is applied once.
func TestInboxReplicasApplyEachMessageOnce(t *testing.T) {
	e := newEnv(t)
	const exports = 8
	var xs []namedExport
	for range exports {
		xs = append(xs, e.sendNamedExport(t, 3))
	}
	e.actAsDPS(t)
	for _, x := range xs {
		e.reply(t, e.dps, ackName(x, dps.KindInfAck), infAck(t, true))
		e.reply(t, e.dps, ackName(x, dps.KindBusAck), busAck(t, x, map[string]string{x.UUIDs[0]: "refused"}))
	}
	a, b := e.newInboxTracker(t, e.newPool(t), nil), e.newInboxTracker(t, e.newPool(t), nil)
	var wg sync.WaitGroup
	var resA, resB tracking.InboxResult
	for range 5 {
		wg.Go(func() { r, _ := a.ReadInbox(t.Context()); resA.Applied += r.Applied })
		wg.Go(func() { r, _ := b.ReadInbox(t.Context()); resB.Applied += r.Applied })
		wg.Wait()
		if e.countStatus(t, "processed") == exports {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := e.countStatus(t, "processed"); n != exports {
		t.Fatalf("%d of %d exports processed", n, exports)
	}
	if got := resA.Applied + resB.Applied; got != 2*exports {
		t.Errorf("replicas applied %d messages (%d + %d), want %d", got, resA.Applied, resB.Applied, 2*exports)
	}
	for _, subject := range []string{bus.SubjectExportReceived, bus.SubjectExportProcessed} {
		if n := e.outboxCount(t, subject); n != exports {
			t.Errorf("%d %s events, want %d", n, subject, exports)
		}
	}
	if ids := e.ourInbox(t); len(ids) != 0 {
		t.Errorf("our inbox still lists %d", len(ids))
	}
}
