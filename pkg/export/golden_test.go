package export

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/demodata"
	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var london = dps.London()

func at(day, hour, minute int) time.Time {
	return time.Date(2024, 9, day, hour, minute, 0, 0, london)
}

// TestSpecRow: the record behind the spec's real row gives exactly that row, except DATE_AND_TIME, which
// carries the BST offset (01) where the system the spec's row comes from wrote 00. The file name is the
// receiver's, from the export's creation time.
func TestSpecRow(t *testing.T) {
	e := newEnv(t)
	e.addRecord(demodata.GoldenRecord())
	res := e.exportOne(request("HPV"))
	if res.Status != Created || res.Rows != 1 {
		t.Fatalf("result %+v, want one row created", res)
	}
	verbatim, err := os.ReadFile("../dps/testdata/spec-row.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Replace(verbatim, []byte(`|"20230609T00000000"|`), []byte(`|"20230609T00000001"|`), 1)
	if got := e.file(res.ExportID); !bytes.Equal(got, want) {
		t.Fatalf("file differs from the spec's row\n got: %q\nwant: %q", got, want)
	}
	var createdAt time.Time
	if err := e.pool.QueryRow(t.Context(), `SELECT created_at FROM dps_exports WHERE id = $1`, res.ExportID).Scan(&createdAt); err != nil {
		t.Fatal(err)
	}
	p, err := dps.ParseFileName(res.Filename)
	if err != nil || p.Programme != "HPV" || p.SenderODS != testSenderODS || !p.At.Equal(createdAt.Truncate(time.Second)) {
		t.Errorf("filename %s (%+v, %v), want HPV from %s at %v", res.Filename, p, err, testSenderODS, createdAt)
	}
}

// mixedRecords are the fixed records of the mixed golden test, by name.
func mixedRecords() map[string]demodata.RecordSpec {
	nhs := demodata.NewNHSNumbers(4242)
	spec := func(u string, day, hour int, s demodata.RecordSpec) demodata.RecordSpec {
		s.UUID = u
		s.NHSNumber = nhs.Next()
		s.PerformedAt = at(day, hour, 0)
		s.CreatedAt = at(day, hour, 30)
		if s.GivenName == "" {
			s.GivenName = "Ada"
		}
		if s.FamilyName == "" {
			s.FamilyName = "Lovelace"
		}
		s.DateOfBirth = time.Date(2011, 3, 4, 0, 0, 0, 0, time.UTC)
		s.BatchName = "AB1234"
		s.BatchExpiry = time.Date(2025, 6, 30, 0, 0, 0, 0, time.UTC)
		return s
	}
	return map[string]demodata.RecordSpec{
		// Exported first, then changed: an update.
		"updated": spec("11111111-1111-4111-8111-111111111111", 2, 9, demodata.RecordSpec{
			SchoolURN: "100001", Vaccinator: "Mary Seacole", Postcode: "SW1A 1AA", GenderCode: 2}),
		// Exported first, then discarded: a delete.
		"discarded": spec("22222222-2222-4222-8222-222222222222", 2, 11, demodata.RecordSpec{
			SchoolURN: "100001", Postcode: "LS1 4AP", GenderCode: 1}),
		// Exported first, touched without a change: nothing.
		"unchanged": spec("33333333-3333-4333-8333-333333333333", 2, 12, demodata.RecordSpec{}),
		// New, with every character the format must escape, at the same minute as the next one so
		// that UNIQUE_ID orders them.
		"quotes": spec("aaaaaaaa-0000-4000-8000-00000000000b", 3, 10, demodata.RecordSpec{
			GivenName: `Zoë "Zed"`, FamilyName: "O'Brien|Smith", Vaccinator: `Dr "Nick" Riviera`, SchoolURN: "100002"}),
		"newlines": spec("aaaaaaaa-0000-4000-8000-00000000000a", 3, 10, demodata.RecordSpec{
			GivenName: "Anne\nMarie", FamilyName: "Mc\r\nDonald\r", Postcode: "", GenderCode: 9}),
		// Not sent: a draft, a refusal, and an administered record discarded before it ever went out.
		"draft":     spec("44444444-4444-4444-8444-444444444444", 4, 9, demodata.RecordSpec{Draft: true}),
		"refused":   spec("55555555-5555-4555-8555-555555555555", 4, 10, demodata.RecordSpec{Outcome: "refused"}),
		"neverSent": spec("66666666-6666-4666-8666-666666666666", 4, 11, demodata.RecordSpec{DiscardedAt: ptr(at(4, 12, 0))}),
	}
}

func ptr[T any](v T) *T { return &v }

// TestMixedGolden: a file with new, updated and deleted records matches testdata/mixed.csv byte for byte.
func TestMixedGolden(t *testing.T) {
	e := newEnv(t)
	recs := mixedRecords()
	ids := map[string]int64{}
	for _, name := range []string{"updated", "discarded", "unchanged"} {
		ids[name], _ = e.addRecord(recs[name])
	}
	first := e.exportOne(request("HPV"))
	if first.Status != Created || first.Rows != 3 || first.Actions["new"] != 3 {
		t.Fatalf("first export %+v, want 3 new rows", first)
	}
	e.file(first.ExportID)

	changed := at(20, 15, 0)
	e.exec(`UPDATE vaccination_records SET dose_sequence = 2, delivery_site = 'right_arm_upper_position', updated_at = $2 WHERE id = $1`, ids["updated"], changed)
	e.exec(`UPDATE vaccination_records SET discarded_at = $2, updated_at = $2 WHERE id = $1`, ids["discarded"], changed)
	e.exec(`UPDATE vaccination_records SET updated_at = updated_at WHERE id = $1`, ids["unchanged"])
	for _, name := range []string{"quotes", "newlines", "draft", "refused", "neverSent"} {
		e.addRecord(recs[name])
	}

	second := e.exportOne(request("HPV"))
	if second.Status != Created || second.Rows != 4 {
		t.Fatalf("second export %+v, want 4 rows", second)
	}
	if want := map[string]int{"new": 2, "update": 1, "delete": 1}; !equalCounts(second.Actions, want) {
		t.Errorf("actions %v, want %v", second.Actions, want)
	}
	got := e.file(second.ExportID)
	golden := filepath.Join("testdata", "mixed.csv")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file differs from %s\n got:\n%s\nwant:\n%s", golden, got, want)
	}
	if n := e.count(`SELECT count(*) FROM dps_pending_records`); n != 0 {
		t.Errorf("%d candidates left after the export, want 0", n)
	}
	// Nothing changed since: a third request makes no export and no file.
	if third := e.exportOne(request("HPV")); third.Status != NothingToSend || third.ExportID != "" {
		t.Errorf("third export %+v, want nothing to send", third)
	}
}

func equalCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestFileMatchesIndependentSQL: over varied seeded data, every row the writer produces is byte for byte
// what the benchmark's COPY baseline formats independently in SQL (header aside).
func TestFileMatchesIndependentSQL(t *testing.T) {
	e := newEnv(t)
	if _, err := demodata.Seed(t.Context(), e.pool, demodata.Options{Records: 2000, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	res := e.exportOne(request("FLU"))
	file := e.file(res.ExportID)
	if sum := sha256.Sum256(file); res.SHA256 != hex.EncodeToString(sum[:]) || res.SizeBytes != int64(len(file)) {
		t.Fatalf("export says %d bytes, SHA-256 %s; the stored file has %d bytes, SHA-256 %x", res.SizeBytes, res.SHA256, len(file), sum)
	}
	conn, err := e.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var sqlRows bytes.Buffer
	from := strings.Replace(exportRowsFrom, "$1", "'"+res.ExportID+"'", 1)
	if _, err := conn.Conn().PgConn().CopyTo(t.Context(), &sqlRows, fmt.Sprintf(copyBaseline, from)); err != nil {
		t.Fatal(err)
	}
	_, body, _ := bytes.Cut(file, []byte("\n"))
	if res.Rows < 500 || !bytes.Equal(body, sqlRows.Bytes()) {
		t.Fatalf("%d rows; the file's rows differ from the SQL formatting", res.Rows)
	}
}
