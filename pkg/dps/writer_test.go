package dps

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/ (review the diff before keeping it)")

func london(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation("2006-01-02T15:04:05", s, London())
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// specRecord is the record behind the spec's example row.
func specRecord(t testing.TB) Record {
	return Record{
		NHSNumber:      "9992686766",
		Forename:       "Brenton",
		Surname:        "Waters",
		DateOfBirth:    date(2012, 8, 18),
		GenderCode:     0,
		Postcode:       "UC0W 0JL",
		PerformedAt:    london(t, "2023-06-09T00:00:00"),
		SiteODSCode:    "U1",
		UUID:           "496e37d8-d1ab-4e12-a3a3-9c2e136a0504",
		Action:         ActionNew,
		CreatedAt:      time.Date(2024, 8, 21, 9, 30, 0, 0, time.UTC),
		ProcedureCode:  "761841000",
		ProcedureTerm:  "Administration of vaccine product containing only Human papillomavirus antigen (procedure)",
		DoseSequence:   1,
		ProductCode:    "33493111000001108",
		ProductTerm:    "Gardasil 9 vaccine suspension for injection 0.5ml pre-filled syringes (Merck Sharp & Dohme (UK) Ltd) (product)",
		Manufacturer:   "Merck Sharp & Dohme",
		BatchName:      "CD5472",
		BatchExpiry:    date(2024, 9, 30),
		DeliverySite:   "left_arm_upper_position",
		DeliveryMethod: "intramuscular",
		DoseAmount:     "0.5",
		SchoolURN:      "123456",
	}
}

func writeAll(t testing.TB, opts Options, recs ...Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, opts)
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("write %s: %v", r.UUID, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Rows() != len(recs) {
		t.Fatalf("Rows() = %d, want %d", w.Rows(), len(recs))
	}
	return buf.Bytes()
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) && i < len(wl); i++ {
			if gl[i] != wl[i] {
				t.Fatalf("%s: line %d differs\n got: %s\nwant: %s", name, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: got %d lines, want %d", name, len(gl), len(wl))
	}
	if _, err := Check(bytes.NewReader(got)); err != nil {
		t.Fatalf("%s does not pass Check: %v", name, err)
	}
}

// TestSpecRow: testdata/spec-row.csv is copied verbatim from dps-csv.md
// (header and example row, from the system this replaces), never regenerated
// by -update. The spec says our line differs from it in one field only:
// DATE_AND_TIME carries the BST offset 01 where the old system wrote 00.
func TestSpecRow(t *testing.T) {
	got := writeAll(t, Options{}, specRecord(t))
	verbatim, err := os.ReadFile(filepath.Join("testdata", "spec-row.csv"))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Replace(verbatim, []byte(`|"20230609T00000000"|`), []byte(`|"20230609T00000001"|`), 1)
	if bytes.Equal(want, verbatim) {
		t.Fatal("spec-row.csv no longer holds the spec's DATE_AND_TIME")
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("spec row differs\n got: %s\nwant: %s", got, want)
	}
}

// TestDateAndTimeOffsets: DATE_AND_TIME is UK local time with the offset in
// force at that instant, on both sides of both clock changes, including the
// hour that happens twice in October.
func TestDateAndTimeOffsets(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"GMT winter", time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC), "20240115T10300000"},
		{"BST summer", time.Date(2024, 7, 15, 9, 30, 0, 0, time.UTC), "20240715T10300001"},
		{"last GMT second before March change", time.Date(2024, 3, 31, 0, 59, 59, 0, time.UTC), "20240331T00595900"},
		{"first BST second after March change", time.Date(2024, 3, 31, 1, 0, 0, 0, time.UTC), "20240331T02000001"},
		{"last BST second before October change", time.Date(2024, 10, 27, 0, 59, 59, 0, time.UTC), "20241027T01595901"},
		{"first GMT second after October change", time.Date(2024, 10, 27, 1, 0, 0, 0, time.UTC), "20241027T01000000"},
		{"repeated hour, first time (BST)", time.Date(2024, 10, 27, 0, 30, 0, 0, time.UTC), "20241027T01300001"},
		{"repeated hour, second time (GMT)", time.Date(2024, 10, 27, 1, 30, 0, 0, time.UTC), "20241027T01300000"},
		{"local midnight in BST is the day before in UTC", time.Date(2024, 6, 30, 23, 15, 0, 0, time.UTC), "20240701T00150001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := specRecord(t)
			r.PerformedAt = tt.at
			out := writeAll(t, Options{}, r)
			var f [NumFields]string
			if _, err := splitLine(bytes.SplitN(out, []byte("\n"), 3)[1], &f, nil); err != nil {
				t.Fatal(err)
			}
			if f[6] != tt.want {
				t.Fatalf("DATE_AND_TIME = %s, want %s", f[6], tt.want)
			}
			// The receiver's reading of the field is the instant we meant.
			got, ok := parseDateTime(f[6])
			if !ok || !got.Equal(tt.at) {
				t.Fatalf("%s reads as %v, want %v", f[6], got, tt.at)
			}
		})
	}
}

// TestOffsetsGolden is one file holding a GMT row, a BST row, both sides of
// both clock changes, both passes of the repeated October hour and a patient
// with no postcode (written ZZ99 3WZ).
func TestOffsetsGolden(t *testing.T) {
	at := []time.Time{
		time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC),
		time.Date(2024, 3, 31, 0, 59, 59, 0, time.UTC),
		time.Date(2024, 3, 31, 1, 0, 0, 0, time.UTC),
		time.Date(2024, 7, 15, 9, 30, 0, 0, time.UTC),
		time.Date(2024, 10, 27, 0, 30, 0, 0, time.UTC),
		time.Date(2024, 10, 27, 1, 30, 0, 0, time.UTC),
		time.Date(2024, 10, 27, 2, 0, 0, 0, time.UTC),
	}
	recs := make([]Record, 0, len(at)+1)
	for i, a := range at {
		r := specRecord(t)
		r.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		r.PerformedAt = a
		recs = append(recs, r)
	}
	noPostcode := specRecord(t)
	noPostcode.UUID = "00000000-0000-4000-8000-000000000099"
	noPostcode.Postcode = ""
	blank := noPostcode
	blank.UUID = "00000000-0000-4000-8000-000000000098"
	blank.Postcode = "  "
	got := writeAll(t, Options{}, append(recs, noPostcode, blank)...)
	golden(t, "offsets.csv", got)
	if n := bytes.Count(got, []byte(`|"ZZ99 3WZ"|`)); n != 2 {
		t.Fatalf("%d rows with ZZ99 3WZ, want 2", n)
	}
}

// TestMixedGolden covers new/update/delete rows, GMT and BST times, the
// midnight boundary, vaccinator names, clinic vs school locations, unknown
// optional values, an upper-case UUID, and escaping.
func TestMixedGolden(t *testing.T) {
	base := specRecord(t)

	upd := base
	upd.UUID = "0F0E0D0C-0B0A-4908-8706-050403020100" // written lower-case
	upd.Action = ActionUpdate
	upd.NHSNumber = "9990000018"
	upd.Forename = `Mary "Molly"`
	upd.Surname = "O'Brien|Smith"
	upd.GenderCode = 2
	upd.PerformedAt = time.Date(2024, 3, 31, 0, 59, 59, 0, time.UTC) // GMT, just before the clocks change
	upd.CreatedAt = time.Date(2024, 3, 30, 23, 30, 0, 0, time.UTC)
	upd.VaccinatorFullName = "Anne Marie  van der Berg"
	upd.DeliverySite = "right_arm_upper_position"
	upd.DoseSequence = 2
	upd.DoseAmount = "0.50"
	upd.SchoolURN = ""
	upd.LocationODSCode = "Y02911"

	del := base
	del.UUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
	del.Action = ActionDelete
	del.NHSNumber = "9990000026"
	del.Forename = "Line\r\nBreak"
	del.Surname = "Carriage\rReturn\nFeed"
	del.GenderCode = 9
	del.Postcode = ""
	del.PerformedAt = time.Date(2024, 10, 27, 0, 30, 0, 0, time.UTC) // BST: 01:30 local
	del.CreatedAt = time.Date(2024, 6, 30, 23, 15, 0, 0, time.UTC)   // BST: next day locally
	del.VaccinatorFullName = "Cher"
	del.ProcedureCode = "822851000000102"
	del.ProcedureTerm = "Seasonal influenza vaccination (procedure)"
	del.ProductCode = "43207411000001105"
	del.ProductTerm = "Fluenz vaccine nasal suspension 0.2ml unit dose (AstraZeneca UK Ltd) (product)"
	del.Manufacturer = "AstraZeneca"
	del.BatchName = ""
	del.BatchExpiry = time.Time{}
	del.DeliverySite = "nose"
	del.DeliveryMethod = "nasal_spray"
	del.DoseSequence = 0
	del.DoseAmount = ""
	del.SchoolURN = ""
	del.LocationODSCode = ""
	del.SiteODSCode = "R1L"

	thigh := base
	thigh.UUID = "ffffffff-0000-4000-8000-000000000001"
	thigh.NHSNumber = "9990000034"
	thigh.DeliverySite = "left_thigh"
	thigh.DeliveryMethod = "subcutaneous"
	thigh.VaccinatorFullName = " Leading Space"

	unknown := base
	unknown.UUID = "ffffffff-0000-4000-8000-000000000002"
	unknown.NHSNumber = "9990000042"
	unknown.DeliverySite = "right_thigh"
	unknown.DeliveryMethod = "" // unknown route: code and term both ""

	got := writeAll(t, Options{UniqueIDURI: "https://example.nhs.uk/records"}, base, upd, del, thigh, unknown)
	golden(t, "mixed.csv", got)
}

func TestEscaping(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`say "hi"`, `"say ""hi"""`},
		{`"`, `""""`},
		{"a|b", `"a|b"`},
		{"a\nb", `"a b"`},
		{"a\r\nb", `"a b"`},
		{"a\rb", `"a b"`},
		{"a\n\nb", `"a  b"`},
		{"\r\n", `" "`},
		{"Zoë Ørsted", `"Zoë Ørsted"`},
	}
	for _, tt := range tests {
		var l line
		l.text(tt.in)
		if got := string(l.b); got != tt.want {
			t.Errorf("text(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestNamesRoundTrip writes awkward names through the whole writer and
// reads them back with the checker's parser.
func TestNamesRoundTrip(t *testing.T) {
	tests := []struct {
		forename, surname, vaccinator string
		want                          [4]string // forename, surname, prof forename, prof surname
	}{
		{`Jo "JJ"`, "Smith|Jones", "Ann Lee", [4]string{`Jo "JJ"`, "Smith|Jones", "Ann", "Lee"}},
		{"Multi\nLine", "Name\r\n", "Mary Ann Smith", [4]string{"Multi Line", "Name ", "Mary", "Ann Smith"}},
		{"A", "B", "", [4]string{"A", "B", "", ""}},
		{"A", "B", "Madonna", [4]string{"A", "B", "Madonna", ""}},
		{"A", "B", `D'Arcy "Doc" Brown`, [4]string{"A", "B", "D'Arcy", `"Doc" Brown`}},
	}
	for _, tt := range tests {
		r := specRecord(t)
		r.Forename, r.Surname, r.VaccinatorFullName = tt.forename, tt.surname, tt.vaccinator
		out := writeAll(t, Options{}, r)
		if _, err := Check(bytes.NewReader(out)); err != nil {
			t.Fatalf("%q: %v", tt.forename, err)
		}
		line := bytes.SplitN(out, []byte("\n"), 3)[1]
		var f [NumFields]string
		if _, err := splitLine(line, &f, nil); err != nil {
			t.Fatal(err)
		}
		got := [4]string{f[1], f[2], f[12], f[13]}
		if got != tt.want {
			t.Errorf("names %q/%q/%q: got %q, want %q", tt.forename, tt.surname, tt.vaccinator, got, tt.want)
		}
	}
}

func TestWriterEmptyWritesHeader(t *testing.T) {
	got := writeAll(t, Options{})
	if string(got) != headerLine {
		t.Fatalf("got %q", got)
	}
	res, err := Check(bytes.NewReader(got))
	if err != nil || res.Rows != 0 {
		t.Fatalf("Check: %+v, %v", res, err)
	}
}

func TestWriterClosed(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, Options{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(specRecord(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

func TestWriterBadUniqueIDURI(t *testing.T) {
	for _, uri := range []string{"http://example.com/x", "not a uri", "https://", `https://x/"y"`} {
		w := NewWriter(&bytes.Buffer{}, Options{UniqueIDURI: uri})
		if err := w.Write(specRecord(t)); err == nil {
			t.Errorf("UniqueIDURI %q accepted", uri)
		}
	}
}

// TestWriterRefusesInvalidRecord: every row rule, on a create, refuses the
// record with its rule and field, writes nothing of it, leaks no patient
// data in the error, and leaves the writer usable.
func TestWriterRefusesInvalidRecord(t *testing.T) {
	future := time.Now().Add(48 * time.Hour)
	tests := []struct {
		name   string
		rule   Rule
		field  string
		mutate func(*Record)
	}{
		{"bad check digit", RuleNHSNumber, "NHS_NUMBER", func(r *Record) { r.NHSNumber = "9992686767" }},
		{"no NHS number", RuleNHSNumber, "NHS_NUMBER", func(r *Record) { r.NHSNumber = "" }},
		{"no forename", RuleForename, "PERSON_FORENAME", func(r *Record) { r.Forename = "" }},
		{"blank forename", RuleForename, "PERSON_FORENAME", func(r *Record) { r.Forename = "   " }},
		{"forename too long", RuleForename, "PERSON_FORENAME", func(r *Record) { r.Forename = strings.Repeat("é", 181) }},
		{"surname not UTF-8", RuleFormat, "PERSON_SURNAME", func(r *Record) { r.Surname = "\xff" }},
		{"surname too long", RuleSurname, "PERSON_SURNAME", func(r *Record) { r.Surname = strings.Repeat("a", 36) }},
		{"no date of birth", RuleDateOfBirth, "PERSON_DOB", func(r *Record) { r.DateOfBirth = time.Time{} }},
		{"born in the future", RuleDateOfBirth, "PERSON_DOB", func(r *Record) { r.DateOfBirth = future.UTC() }},
		{"gender", RuleGender, "PERSON_GENDER_CODE", func(r *Record) { r.GenderCode = 3 }},
		{"no time given", RuleDateAndTime, "DATE_AND_TIME", func(r *Record) { r.PerformedAt = time.Time{} }},
		{"given in the future", RuleDateAndTime, "DATE_AND_TIME", func(r *Record) { r.PerformedAt = future }},
		{"double summer time", RuleDateAndTime, "DATE_AND_TIME", func(r *Record) { r.PerformedAt = time.Date(1944, 6, 6, 12, 0, 0, 0, time.UTC) }},
		{"no site code", RuleSiteCode, "SITE_CODE", func(r *Record) { r.SiteODSCode = " " }},
		{"not a UUID", RuleUniqueID, "UNIQUE_ID", func(r *Record) { r.UUID = "not-a-uuid" }},
		{"action upper case", RuleActionFlag, "ACTION_FLAG", func(r *Record) { r.Action = "NEW" }},
		{"no recorded date", RuleRecordedDate, "RECORDED_DATE", func(r *Record) { r.CreatedAt = time.Time{} }},
		{"recorded in the future", RuleRecordedDate, "RECORDED_DATE", func(r *Record) { r.CreatedAt = future }},
		{"procedure not digits", RuleProcedure, "VACCINATION_PROCEDURE_CODE", func(r *Record) { r.ProcedureCode = "abc" }},
		{"procedure check digit", RuleProcedure, "VACCINATION_PROCEDURE_CODE", func(r *Record) { r.ProcedureCode = "761841001" }},
		{"procedure is a description id", RuleProcedure, "VACCINATION_PROCEDURE_CODE", func(r *Record) { r.ProcedureCode = "761841011" }},
		{"no procedure term", RuleProcedure, "VACCINATION_PROCEDURE_TERM", func(r *Record) { r.ProcedureTerm = "" }},
		{"negative dose number", RuleDoseSequence, "DOSE_SEQUENCE", func(r *Record) { r.DoseSequence = -1 }},
		{"dose number 10", RuleDoseSequence, "DOSE_SEQUENCE", func(r *Record) { r.DoseSequence = 10 }},
		{"no product code", RuleProduct, "VACCINE_PRODUCT_CODE", func(r *Record) { r.ProductCode = "" }},
		{"product check digit", RuleProduct, "VACCINE_PRODUCT_CODE", func(r *Record) { r.ProductCode = "33493111000001109" }},
		{"no product term", RuleProduct, "VACCINE_PRODUCT_TERM", func(r *Record) { r.ProductTerm = "" }},
		{"expiry unprintable", RuleExpiryDate, "EXPIRY_DATE", func(r *Record) { r.BatchExpiry = date(10000, 1, 1) }},
		{"dose amount comma", RuleDoseAmount, "DOSE_AMOUNT", func(r *Record) { r.DoseAmount = "0,5" }},
		{"dose amount zero", RuleDoseAmount, "DOSE_AMOUNT", func(r *Record) { r.DoseAmount = "0.00" }},
		{"unknown site", RuleBodySite, "SITE_OF_VACCINATION_CODE", func(r *Record) { r.DeliverySite = "left_buttock" }},
		{"unknown route", RuleRoute, "ROUTE_OF_VACCINATION_CODE", func(r *Record) { r.DeliveryMethod = "oral" }},
		{"nose injected", RuleSiteRoute, "ROUTE_OF_VACCINATION_CODE", func(r *Record) { r.DeliverySite = "nose" }},
		{"arm sprayed", RuleSiteRoute, "ROUTE_OF_VACCINATION_CODE", func(r *Record) { r.DeliveryMethod = "nasal_spray" }},
		{"URN not digits", RuleLocation, "LOCATION_CODE", func(r *Record) { r.SchoolURN = "URN123" }},
		{"no location", RuleLocation, "LOCATION_CODE", func(r *Record) { r.SchoolURN, r.LocationODSCode, r.SiteODSCode = "", "", "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, Options{})
			r := specRecord(t)
			tt.mutate(&r)
			err := w.Write(r)
			var re *RecordError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a RecordError", err)
			}
			if re.Field != tt.field && !(tt.name == "no location" && re.Rule == RuleSiteCode) || re.UUID != r.UUID {
				t.Fatalf("got %+v, want rule %s on %s", re, tt.rule, tt.field)
			}
			if tt.name != "no location" && re.Rule != tt.rule {
				t.Fatalf("got rule %s, want %s", re.Rule, tt.rule)
			}
			if r.NHSNumber != "" && strings.Contains(err.Error(), r.NHSNumber) {
				t.Errorf("error leaks the NHS number: %v", err)
			}
			// The writer stays usable and wrote nothing of the refused row.
			if err := w.Write(specRecord(t)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if res, err := Check(&buf); err != nil || res.Rows != 1 {
				t.Fatalf("after refusal: %+v %v", res, err)
			}
		})
	}
}

// TestWriterDeleteNeedsIdentityOnly: the receiver deletes by UNIQUE_ID and
// UNIQUE_ID_URI and reads nothing else, so a delete goes out even when the
// patient's data would stop a create.
func TestWriterDeleteNeedsIdentityOnly(t *testing.T) {
	r := specRecord(t)
	r.Action = ActionDelete
	r.NHSNumber, r.Forename, r.ProcedureCode, r.DoseSequence = "", "", "1", 12
	out := writeAll(t, Options{}, r)
	if res, err := Check(bytes.NewReader(out)); err != nil || res.Actions[ActionDelete] != 1 {
		t.Fatalf("Check: %+v, %v", res, err)
	}
	r.UUID = "x"
	if err := NewWriter(io.Discard, Options{}).Write(r); !errors.As(err, new(*RecordError)) {
		t.Fatalf("a delete without a UUID: %v", err)
	}
}

func TestValidNHSNumber(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"9992686766", true},
		{"9990000018", true},
		{"9434765919", true},
		{"9434765918", false},
		{"999268676", false},
		{"99926867660", false},
		{"999268676a", false},
		{"1000000010", false}, // check digit would be 10: never issued
		{"", false},
	}
	for _, tt := range tests {
		if got := ValidNHSNumber(tt.in); got != tt.want {
			t.Errorf("ValidNHSNumber(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestWriterChecksTheValuesItWrites: the values the row rules see are, field for field, what Check's
// split of the written line gives, whether they are read from where the writer put them (no value had
// a quote) or split again (one had).
func TestWriterChecksTheValuesItWrites(t *testing.T) {
	plain := specRecord(t)
	quoted := specRecord(t)
	quoted.Surname = `O"Brien`
	breaks := specRecord(t)
	breaks.Forename, breaks.BatchName = "Multi\r\nLine", "AB\n12"
	empty := specRecord(t)
	empty.Postcode, empty.VaccinatorFullName, empty.DeliverySite, empty.DeliveryMethod, empty.DoseSequence = "", "", "", "", 0
	empty.BatchExpiry = time.Time{}
	school := specRecord(t)
	school.SchoolURN, school.LocationODSCode = "123456", ""
	for name, r := range map[string]Record{"plain": plain, "quoted": quoted, "line breaks": breaks, "empty values": empty, "school": school} {
		var buf bytes.Buffer
		w := NewWriter(&buf, Options{})
		if err := w.Write(r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checked := w.fields // what the row rules were given, before Flush reuses nothing
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		line := bytes.SplitN(buf.Bytes(), []byte("\n"), 3)[1]
		var split [NumFields]string
		if _, err := splitLine(line, &split, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := range split {
			if checked[i] != split[i] {
				t.Errorf("%s: %s: the rules saw %q, the line holds %q", name, Header[i], checked[i], split[i])
			}
		}
		if w.line.quoted != (name == "quoted") {
			t.Errorf("%s: quoted = %v", name, w.line.quoted)
		}
	}
}
