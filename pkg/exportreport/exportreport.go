// Package exportreport reads the export lifecycle for the people who run the pipeline: the listing
// behind `tracker exports` (one line per export with every lifecycle time, newest first, and totals)
// and the scrape-time gauges of what is stuck (the age of the oldest export in each status that is not
// final). It only reads dps_exports; it never changes an export.
package exportreport

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/lifecycle"
	"github.com/nhs-dps/dps-pipeline/pkg/logging"
)

// Stage is one status of an export's lifecycle, as the listing shows it.
type Stage struct {
	Status lifecycle.Status
	Column string // the status's time column (lifecycle), also the JSON field of the listing
	Header string // the listing's column header for that time
}

// Stages are the statuses of pkg/lifecycle in order, each with the column of its time. The time of
// Accepted is when the file was sent, so its header says SENT.
func Stages() []Stage {
	var out []Stage
	for _, s := range lifecycle.All() {
		header := strings.ToUpper(strings.TrimSuffix(s.TimeColumn(), "_at"))
		out = append(out, Stage{Status: s, Column: s.TimeColumn(), Header: header})
	}
	return out
}

// Statuses are the status names, in lifecycle order.
func Statuses() []string { return lifecycle.Names(lifecycle.All()) }

// Filter selects exports for List. The zero value selects every export.
type Filter struct {
	Since     time.Time // created at or after; zero for all
	Programme string    // programme code; empty for all
	Status    string    // one of Statuses; empty for all
}

// Export is one export as the listing shows it. Times holds one entry per Stage, nil where the export
// has not reached that stage.
type Export struct {
	ExportID      string
	RequestID     string
	Programme     string
	Filename      string
	Rows          int
	RefusedRows   int
	Status        string
	Times         []*time.Time
	MESHMessageID string
	MESHLocalID   string
	Attempts      int
	LastErrorCode string
	LastError     string
}

// Time is when the export reached status, nil if it has not.
func (e Export) Time(status string) *time.Time {
	for i, s := range Stages() {
		if s.Status.String() == status && i < len(e.Times) {
			return e.Times[i]
		}
	}
	return nil
}

// MarshalJSON writes the export as one flat object: ids, programme, file, rows, status, then one
// "<stage column>" field per stage (null until reached), then MESH ids and the last error.
func (e Export) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	field := func(name string, v any) error {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		val, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.WriteString(strconv.Quote(name))
		b.WriteByte(':')
		b.Write(val)
		return nil
	}
	fields := []struct {
		name string
		v    any
	}{
		{"export_id", e.ExportID}, {"request_id", e.RequestID}, {"programme", e.Programme},
		{"filename", e.Filename}, {"rows", e.Rows}, {"refused_rows", e.RefusedRows}, {"status", e.Status},
	}
	for i, s := range Stages() {
		var t *time.Time
		if i < len(e.Times) && e.Times[i] != nil {
			u := e.Times[i].UTC()
			t = &u
		}
		fields = append(fields, struct {
			name string
			v    any
		}{s.Column, t})
	}
	fields = append(fields, []struct {
		name string
		v    any
	}{
		{"mesh_message_id", e.MESHMessageID}, {"mesh_local_id", e.MESHLocalID}, {"attempts", e.Attempts},
		{"last_error_code", e.LastErrorCode}, {"last_error", e.LastError},
	}...)
	for _, f := range fields {
		if err := field(f.name, f.v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// List returns the exports filter selects, newest first.
func List(ctx context.Context, pool *pgxpool.Pool, f Filter) ([]Export, error) {
	if f.Status != "" && !slices.Contains(Statuses(), f.Status) {
		return nil, fmt.Errorf("list exports: unknown status %q (want one of %s)", f.Status, strings.Join(Statuses(), ", "))
	}
	cols := make([]string, len(Stages()))
	for i, s := range Stages() {
		cols[i] = "e." + s.Column
	}
	// The stage columns come from Stages, never from input.
	query := `
SELECT e.id::text, coalesce(e.request_id, ''), p.code, e.filename, e.row_count, e.refused_rows, e.status,
       ` + strings.Join(cols, ", ") + `,
       coalesce(e.mesh_message_id, ''), coalesce(e.mesh_local_id, ''), e.attempts,
       coalesce(e.last_error_code, ''), coalesce(e.last_error, '')
FROM dps_exports e JOIN programmes p ON p.id = e.programme_id
WHERE ($1::timestamptz IS NULL OR e.created_at >= $1)
  AND ($2 = '' OR p.code = $2)
  AND ($3 = '' OR e.status = $3)
ORDER BY e.created_at DESC, e.id`
	var since *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	rows, err := pool.Query(ctx, query, since, f.Programme, f.Status)
	if err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Export, error) {
		e := Export{Times: make([]*time.Time, len(Stages()))}
		dest := []any{&e.ExportID, &e.RequestID, &e.Programme, &e.Filename, &e.Rows, &e.RefusedRows, &e.Status}
		for i := range e.Times {
			dest = append(dest, &e.Times[i])
		}
		dest = append(dest, &e.MESHMessageID, &e.MESHLocalID, &e.Attempts, &e.LastErrorCode, &e.LastError)
		err := row.Scan(dest...)
		// An error text is ours (MESH's words, a reason), but is scrubbed like a log line all the same.
		e.LastError = logging.ScrubString(e.LastError)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list exports: %w", err)
	}
	return out, nil
}

// Totals sum a listing.
type Totals struct {
	Exports     int            `json:"exports"`
	Rows        int            `json:"rows"`
	RefusedRows int            `json:"refused_rows"`
	ByStatus    map[string]int `json:"by_status"` // every status, zero included
}

// Sum adds up exports.
func Sum(exports []Export) Totals {
	t := Totals{ByStatus: map[string]int{}}
	for _, s := range Stages() {
		t.ByStatus[s.Status.String()] = 0
	}
	for _, e := range exports {
		t.Exports++
		t.Rows += e.Rows
		t.RefusedRows += e.RefusedRows
		t.ByStatus[e.Status]++
	}
	return t
}

// Columns are the header of the text listing, in order.
func Columns() []string {
	cols := []string{"PROGRAMME", "FILE", "ROWS", "REFUSED", "STATUS"}
	for _, s := range Stages() {
		cols = append(cols, s.Header)
	}
	return append(cols, "MESH_MESSAGE_ID", "EXPORT_ID", "ERROR")
}

// maxErrorWidth keeps a long MESH error from swamping the listing; --json has it whole.
const maxErrorWidth = 80

// WriteText writes the listing as aligned columns (a "-" where there is nothing), then the totals.
func WriteText(w io.Writer, exports []Export) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(Columns(), "\t"))
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, e := range exports {
		cells := []string{e.Programme, e.Filename, strconv.Itoa(e.Rows), strconv.Itoa(e.RefusedRows), e.Status}
		for i := range Stages() {
			cell := "-"
			if i < len(e.Times) && e.Times[i] != nil {
				cell = e.Times[i].UTC().Format(time.RFC3339)
			}
			cells = append(cells, cell)
		}
		msg := strings.Join(strings.Fields(strings.TrimSpace(e.LastErrorCode+" "+e.LastError)), " ")
		if len(msg) > maxErrorWidth {
			msg = msg[:maxErrorWidth-1] + "…"
		}
		cells = append(cells, dash(e.MESHMessageID), e.ExportID, dash(msg))
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, TotalsLine(Sum(exports)))
	return err
}

// TotalsLine is the listing's last line, e.g.
// "total: 4 exports, 1200 rows, 3 refused; created 0, accepted 1, acknowledged 2, failed 1".
func TotalsLine(t Totals) string {
	parts := make([]string, len(Stages()))
	for i, s := range Stages() {
		parts[i] = fmt.Sprintf("%s %d", s.Status, t.ByStatus[s.Status.String()])
	}
	return fmt.Sprintf("total: %d exports, %d rows, %d refused; %s", t.Exports, t.Rows, t.RefusedRows, strings.Join(parts, ", "))
}

// WriteJSON writes one JSON object per export per line, newest first, then one {"totals": {...}} line.
func WriteJSON(w io.Writer, exports []Export) error {
	enc := json.NewEncoder(w)
	for _, e := range exports {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return enc.Encode(struct {
		Totals Totals `json:"totals"`
	}{Sum(exports)})
}

var oldestDesc = prometheus.NewDesc("dps_export_oldest_age_seconds",
	"How long the oldest export in each status that is not final has been in it (since the time of that status; 0 when none is), read from Postgres at scrape time.",
	[]string{"status"}, nil)

// AgeCollector exports, at scrape time, the age of the oldest export in each status that is not final:
// how long it has waited for its next step. Every process reports the same, from the one database.
type AgeCollector struct {
	Pool *pgxpool.Pool
	Log  *slog.Logger
}

func (c AgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oldestDesc }

func (c AgeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ages, err := OldestAges(ctx, c.Pool)
	if err != nil {
		c.Log.Warn("read export ages for metrics", slog.Any("error", err))
		return
	}
	for status, age := range ages {
		ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age.Seconds(), status)
	}
}

// OldestAges returns, for every status that is not final, how long its oldest export has been in it
// (measured from the status's own time), zero when no export is in it.
func OldestAges(ctx context.Context, pool *pgxpool.Pool) (map[string]time.Duration, error) {
	var parts []string
	var args []any
	for _, s := range Stages() {
		if s.Status.Final() {
			continue
		}
		args = append(args, s.Status.String())
		// The columns come from Stages, never from input.
		parts = append(parts, fmt.Sprintf(`SELECT $%d::text, coalesce(extract(epoch FROM now() - min(coalesce(%s, created_at))), 0)::float8
FROM dps_exports WHERE status = $%d`, len(args), s.Column, len(args)))
	}
	rows, err := pool.Query(ctx, strings.Join(parts, "\nUNION ALL\n"), args...)
	if err != nil {
		return nil, fmt.Errorf("oldest export ages: %w", err)
	}
	ages := map[string]time.Duration{}
	for rows.Next() {
		var status string
		var seconds float64
		if err := rows.Scan(&status, &seconds); err != nil {
			rows.Close()
			return nil, fmt.Errorf("oldest export ages: %w", err)
		}
		ages[status] = time.Duration(max(seconds, 0) * float64(time.Second))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("oldest export ages: %w", err)
	}
	return ages, nil
}
