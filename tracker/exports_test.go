package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-dps/dps-pipeline/pkg/pgtest"
)

// exportsFixture is a database with one export in each status, created a day apart (newest: the
// failed one), two of them HPV, and one export from a month ago.
type exportsFixture struct {
	ids map[string]string // by status, and "old"
}

func newExportsFixture(t *testing.T) exportsFixture {
	t.Helper()
	url, pool := pgtest.NewMigratedDatabase(t)
	t.Setenv("DATABASE_URL", url)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `INSERT INTO programmes (code, name) VALUES ('HPV', 'HPV'), ('FLU', 'Flu')`); err != nil {
		t.Fatal(err)
	}
	f := exportsFixture{ids: map[string]string{}}
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	for _, e := range []struct {
		key, programme, status string
		created                time.Duration // before now
		rows, refused          int
		sent, acked, failed    bool
		messageID, errorCode   string
	}{
		{"old", "FLU", "acknowledged", 30 * day, 7, 0, true, true, false, "MSG-OLD", ""},
		{"acknowledged", "HPV", "acknowledged", 4 * day, 120, 2, true, true, false, "20261126020003123456_ABCDEF", ""},
		{"accepted", "FLU", "accepted", 3 * day, 80, 0, true, false, false, "20261127020003123456_ABCDEF", ""},
		{"created", "HPV", "created", 2 * day, 15, 1, false, false, false, "", ""},
		{"failed", "FLU", "failed", 1 * day, 9, 0, true, false, true, "20261129020003123456_ABCDEF", "14"},
	} {
		id := uuid.NewString()
		f.ids[e.key] = id
		created := now.Add(-e.created)
		at := func(ok bool, after time.Duration) *time.Time {
			if !ok {
				return nil
			}
			t := created.Add(after)
			return &t
		}
		var msgID, code, lastErr *string
		if e.messageID != "" {
			msgID = &e.messageID
		}
		if e.errorCode != "" {
			msg := "MESH: undeliverable, not downloaded before expiry"
			code, lastErr = &e.errorCode, &msg
		}
		if _, err := pool.Exec(ctx, `
			INSERT INTO dps_exports (id, programme_id, filename, status, row_count, refused_rows, mesh_message_id,
			                         mesh_local_id, attempts, created_at, sent_at, acknowledged_at, failed_at,
			                         last_error_code, last_error)
			SELECT $1, p.id, $3, $4, $5, $6, $7, $14, 1, $8, $9, $10, $11, $12, $13
			FROM programmes p WHERE p.code = $2`,
			id, e.programme, e.programme+"_Vaccinations_v5_X26_"+created.Format("20060102T150405")+"00.csv", e.status,
			e.rows, e.refused, msgID, created, at(e.sent, time.Minute), at(e.acked, time.Hour), at(e.failed, 5*time.Hour), code, lastErr, id+".1"); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func runExports(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := dispatch(append([]string{"exports"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestExportsListing pins the text listing: its columns, one line per export newest first with every
// lifecycle time, and the totals line.
func TestExportsListing(t *testing.T) {
	f := newExportsFixture(t)
	code, out, stderr := runExports(t)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	t.Logf("tracker exports:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("want a header, 4 exports of the last 7 days and a totals line:\n%s", out)
	}
	header := strings.Fields(lines[0])
	wantHeader := []string{"PROGRAMME", "FILE", "ROWS", "REFUSED", "STATUS", "CREATED", "SENT", "ACKNOWLEDGED", "RECEIVED", "PROCESSED", "FAILED", "REJECTED", "MESH_MESSAGE_ID", "EXPORT_ID", "ERROR"}
	if strings.Join(header, " ") != strings.Join(wantHeader, " ") {
		t.Fatalf("columns %q, want %q", header, wantHeader)
	}
	// Newest first: failed (1 day ago), created, accepted, acknowledged; the month-old one is left out.
	for i, key := range []string{"failed", "created", "accepted", "acknowledged"} {
		cells := strings.Fields(lines[i+1])
		if len(cells) < len(wantHeader) {
			t.Fatalf("line %q has %d cells, want at least %d", lines[i+1], len(cells), len(wantHeader))
		}
		if cells[4] != key || cells[13] != f.ids[key] {
			t.Errorf("line %d is %s %s, want the %s export %s", i+1, cells[4], cells[13], key, f.ids[key])
		}
		for col, name := range wantHeader[5:12] {
			cell := cells[5+col]
			if cell == "-" {
				continue
			}
			if _, err := time.Parse(time.RFC3339, cell); err != nil {
				t.Errorf("%s of %s is %q, not an RFC 3339 time", name, key, cell)
			}
		}
	}
	failed := strings.Fields(lines[1])
	if failed[0] != "FLU" || failed[2] != "9" || failed[6] == "-" || failed[7] != "-" || failed[10] == "-" ||
		failed[12] != "20261129020003123456_ABCDEF" || failed[14] != "14" {
		t.Errorf("failed export line %q", lines[1])
	}
	created := strings.Fields(lines[2])
	if created[2] != "15" || created[3] != "1" || created[6] != "-" || created[12] != "-" || created[14] != "-" {
		t.Errorf("created export line %q: want 15 rows, 1 refused, not sent, no message id", lines[2])
	}
	want := "total: 4 exports, 224 rows, 3 refused; created 1, accepted 1, acknowledged 1, received 0, processed 0, failed 1, rejected 0"
	if lines[5] != want {
		t.Errorf("totals %q, want %q", lines[5], want)
	}
}

// TestExportsJSON pins the --json fields, in order, and the filters.
func TestExportsJSON(t *testing.T) {
	f := newExportsFixture(t)
	code, out, stderr := runExports(t, "--json", "--since", "all")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("want 5 exports and a totals line:\n%s", out)
	}
	wantFields := []string{"export_id", "request_id", "programme", "filename", "rows", "refused_rows", "status",
		"created_at", "sent_at", "acknowledged_at", "received_at", "processed_at", "failed_at", "rejected_at", "mesh_message_id", "mesh_local_id", "attempts",
		"last_error_code", "last_error"}
	for _, line := range lines[:5] {
		dec := json.NewDecoder(strings.NewReader(line))
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, tok.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Join(keys, ",") != strings.Join(wantFields, ",") {
			t.Fatalf("fields %v, want %v", keys, wantFields)
		}
	}
	var accepted map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &accepted); err != nil {
		t.Fatal(err)
	}
	if accepted["export_id"] != f.ids["accepted"] || accepted["status"] != "accepted" || accepted["rows"] != 80.0 ||
		accepted["sent_at"] == nil || accepted["acknowledged_at"] != nil || accepted["mesh_message_id"] != "20261127020003123456_ABCDEF" {
		t.Errorf("accepted export: %s", lines[2])
	}
	var totals struct {
		Totals struct {
			Exports, Rows int
			ByStatus      map[string]int `json:"by_status"`
		}
	}
	if err := json.Unmarshal([]byte(lines[5]), &totals); err != nil || totals.Totals.Exports != 5 || totals.Totals.ByStatus["acknowledged"] != 2 {
		t.Errorf("totals line %s: %+v %v", lines[5], totals, err)
	}

	// Filters.
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--programme", "hpv"}, []string{"created", "acknowledged"}},
		{[]string{"--status", "failed"}, []string{"failed"}},
		{[]string{"--since", "60d", "--programme", "FLU", "--status", "acknowledged"}, []string{"old"}},
		{[]string{"--since", "36h"}, []string{"failed"}},
	} {
		code, out, stderr := runExports(t, append([]string{"--json"}, tt.args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, stderr)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			if id, ok := e["export_id"]; ok {
				for k, v := range f.ids {
					if v == id {
						got = append(got, k)
					}
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%v listed %v, want %v", tt.args, got, tt.want)
		}
	}
}

// TestExportsBadFlags: every mistake exits 2 with a message, before the database is touched.
func TestExportsBadFlags(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	for _, args := range [][]string{
		{"--since", "yesterday"}, {"--since", "-3d"}, {"--status", "sent-ish"}, {"--programme", "hp v"},
		{"--bogus"}, {"extra"},
	} {
		code, out, stderr := runExports(t, args...)
		if code != 2 || out != "" || stderr == "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and a message", args, code, out, stderr)
		}
	}
	if code, _, stderr := runExports(t, "--help"); code != 0 || !strings.Contains(stderr, "--status") {
		t.Errorf("--help: exit %d, %q", code, stderr)
	}
}
