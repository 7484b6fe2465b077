package dps

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestCheckAcceptsGoldenFiles(t *testing.T) {
	tests := []struct {
		file    string
		rows    int
		actions map[string]int
	}{
		{"mixed.csv", 5, map[string]int{"new": 3, "update": 1, "delete": 1}},
		{"offsets.csv", 9, map[string]int{"new": 9}},
	}
	for _, tt := range tests {
		f, err := os.Open(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		res, err := Check(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if res.Rows != tt.rows || len(res.UniqueIDs) != tt.rows {
			t.Errorf("%s: rows %d ids %d, want %d", tt.file, res.Rows, len(res.UniqueIDs), tt.rows)
		}
		for k, v := range tt.actions {
			if res.Actions[k] != v {
				t.Errorf("%s: actions %v, want %v", tt.file, res.Actions, tt.actions)
			}
		}
	}
}

// TestCheckRefusesTheOldOffset: the spec's example row, as the system this
// replaces wrote it (a fixed 00 in BST), is caught; with the offset put right
// it passes.
func TestCheckRefusesTheOldOffset(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "spec-row.csv"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Check(bytes.NewReader(b))
	var ce *CheckError
	if !errors.As(err, &ce) || ce.Rule != RuleDateAndTime || ce.Line != 2 {
		t.Fatalf("verbatim spec row: %v, want a date_and_time refusal", err)
	}
	header, row := specLines(t)
	if res, err := Check(strings.NewReader(header + "\n" + row + "\n")); err != nil || res.Rows != 1 {
		t.Fatalf("corrected spec row: %+v %v", res, err)
	}
}

// specLines returns the header and the spec's example row with its
// DATE_AND_TIME offset put right, without "\n".
func specLines(t *testing.T) (string, string) {
	b, err := os.ReadFile(filepath.Join("testdata", "spec-row.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	return lines[0], strings.Replace(lines[1], "T00000000", "T00000001", 1)
}

// setField replaces field i (0-based) of a row with the raw text v (v
// includes its quotes, so a test can also break the quoting).
func setField(row string, i int, v string) string {
	parts := strings.Split(row, `"|"`)
	// parts[0] starts with a quote and parts[33] ends with one.
	parts[0] = parts[0][1:]
	parts[len(parts)-1] = strings.TrimSuffix(parts[len(parts)-1], `"`)
	for k := range parts {
		parts[k] = `"` + parts[k] + `"`
	}
	parts[i] = v
	return strings.Join(parts, "|")
}

func TestCheckRejects(t *testing.T) {
	header, row := specLines(t)
	file := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	tests := []struct {
		name  string
		in    string
		line  int
		field string
		msg   string
	}{
		{"empty", "", 1, "", "empty file"},
		{"bom", "\xef\xbb\xbf" + file(header, row), 1, "", "byte-order mark"},
		{"crlf", strings.ReplaceAll(file(header, row), "\n", "\r\n"), 1, "", "carriage return"},
		{"no final newline", header + "\n" + row, 2, "", "final"},
		{"header renamed", file(strings.Replace(header, "DOSE_AMOUNT", "DOSE_AMT", 1), row), 1, "DOSE_AMOUNT", "header field 29"},
		{"header missing field", file(strings.Replace(header, `|"INDICATION_CODE"`, "", 1), row), 1, "", "33 fields"},
		{"header lower case", file(strings.ToLower(header), row), 1, "NHS_NUMBER", "header"},
		{"invalid utf8", file(header, setField(row, 1, "\"Bren\xfft\"")), 2, "", "UTF-8"},
		{"33 fields", file(header, row[:strings.LastIndex(row, "|")]), 2, "", "33 fields"},
		{"35 fields", file(header, row+`|""`), 2, "", "more than 34"},
		{"unquoted field", file(header, setField(row, 4, "0")), 2, "", "PERSON_GENDER_CODE) is not quoted"},
		{"stray quote", file(header, setField(row, 1, `"Bren"ton"`)), 2, "", "after closing quote"},
		{"comma delimited", file(header, strings.ReplaceAll(row, `"|"`, `","`)), 2, "", "',' after closing quote"},
		{"bad check digit", file(header, setField(row, 0, `"9992686767"`)), 2, "NHS_NUMBER", "mod-11"},
		{"short nhs number", file(header, setField(row, 0, `"999268676"`)), 2, "NHS_NUMBER", ""},
		{"empty forename", file(header, setField(row, 1, `""`)), 2, "PERSON_FORENAME", "empty"},
		{"dob format", file(header, setField(row, 3, `"2012-08-18"`)), 2, "PERSON_DOB", "YYYYMMDD"},
		{"dob not a date", file(header, setField(row, 3, `"20120230"`)), 2, "PERSON_DOB", ""},
		{"gender", file(header, setField(row, 4, `"3"`)), 2, "PERSON_GENDER_CODE", ""},
		{"datetime no offset", file(header, setField(row, 6, `"20230609T000000"`)), 2, "DATE_AND_TIME", ""},
		{"datetime hour 24", file(header, setField(row, 6, `"20230609T24000001"`)), 2, "DATE_AND_TIME", ""},
		{"datetime GMT offset in summer", file(header, setField(row, 6, `"20230609T00000000"`)), 2, "DATE_AND_TIME", "offset"},
		{"datetime BST offset in winter", file(header, setField(row, 6, `"20231209T00000001"`)), 2, "DATE_AND_TIME", "offset"},
		{"datetime in the skipped March hour", file(header, setField(row, 6, `"20240331T01300001"`)), 2, "DATE_AND_TIME", "offset"},
		{"datetime offset 02", file(header, setField(row, 6, `"20230609T00000002"`)), 2, "DATE_AND_TIME", ""},
		{"datetime in the future", file(header, setField(row, 6, `"29990609T00000001"`)), 2, "DATE_AND_TIME", "future"},
		{"dob in the future", file(header, setField(row, 3, `"29990101"`)), 2, "PERSON_DOB", "future"},
		{"blank surname", file(header, setField(row, 2, `" "`)), 2, "PERSON_SURNAME", "empty"},
		{"surname too long", file(header, setField(row, 2, `"`+strings.Repeat("x", 36)+`"`)), 2, "PERSON_SURNAME", "35"},
		{"no postcode", file(header, setField(row, 5, `""`)), 2, "PERSON_POSTCODE", "ZZ99 3WZ"},
		{"no site code", file(header, setField(row, 7, `""`)), 2, "SITE_CODE", ""},
		{"procedure check digit", file(header, setField(row, 16, `"761841001"`)), 2, "VACCINATION_PROCEDURE_CODE", "SNOMED"},
		{"product partition", file(header, setField(row, 19, `"33493111000001120"`)), 2, "VACCINE_PRODUCT_CODE", "SNOMED"},
		{"dose sequence 10", file(header, setField(row, 18, `"10"`)), 2, "DOSE_SEQUENCE", ""},
		{"dose amount zero", file(header, setField(row, 28, `"0"`)), 2, "DOSE_AMOUNT", "zero"},
		{"nose, intramuscular", file(header, setField(setField(row, 24, `"279549004"`), 25, `"Nasal cavity structure (body structure)"`)), 2, "ROUTE_OF_VACCINATION_CODE", "nasal"},
		{"recorded in the future", file(header, setField(row, 14, `"29990101"`)), 2, "RECORDED_DATE", "future"},
		{"site code uri", file(header, setField(row, 8, `"https://fhir.nhs.uk/Id/ods-code"`)), 2, "SITE_CODE_TYPE_URI", ""},
		{"uuid upper case", file(header, setField(row, 9, `"496E37D8-D1AB-4E12-A3A3-9C2E136A0504"`)), 2, "UNIQUE_ID", "lower-case"},
		{"unique id uri http", file(header, setField(row, 10, `"http://example.com/x"`)), 2, "UNIQUE_ID_URI", ""},
		{"action flag", file(header, setField(row, 11, `"New"`)), 2, "ACTION_FLAG", ""},
		{"recorded date empty", file(header, setField(row, 14, `""`)), 2, "RECORDED_DATE", ""},
		{"primary source", file(header, setField(row, 15, `"true"`)), 2, "PRIMARY_SOURCE", ""},
		{"procedure code", file(header, setField(row, 16, `"HPV"`)), 2, "VACCINATION_PROCEDURE_CODE", ""},
		{"dose sequence zero", file(header, setField(row, 18, `"0"`)), 2, "DOSE_SEQUENCE", ""},
		{"expiry", file(header, setField(row, 23, `"20241330"`)), 2, "EXPIRY_DATE", ""},
		{"unknown site", file(header, setField(row, 24, `"723979003"`)), 2, "SITE_OF_VACCINATION_CODE", ""},
		{"site term mismatch", file(header, setField(row, 25, `"Structure of right upper arm (body structure)"`)), 2, "SITE_OF_VACCINATION_TERM", ""},
		{"unknown route", file(header, setField(row, 26, `"26643006"`)), 2, "ROUTE_OF_VACCINATION_CODE", ""},
		{"dose amount comma", file(header, setField(row, 28, `"0,5"`)), 2, "DOSE_AMOUNT", ""},
		{"dose unit", file(header, setField(row, 29, `"ml"`)), 2, "DOSE_UNIT_CODE", ""},
		{"indication", file(header, setField(row, 31, `"123"`)), 2, "INDICATION_CODE", ""},
		{"location uri", file(header, setField(row, 33, `"urn"`)), 2, "LOCATION_CODE_TYPE_URI", ""},
		{"urn not digits", file(header, setField(row, 32, `"U1"`)), 2, "LOCATION_CODE", "URN"},
		{"duplicate unique id", file(header, row, setField(row, 0, `"9990000018"`)), 3, "UNIQUE_ID", "duplicate of line 2"},
		{"blank line", file(header, row, ""), 3, "", "not quoted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(strings.NewReader(tt.in))
			var ce *CheckError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a CheckError", err)
			}
			if ce.Rule == "" {
				t.Errorf("no rule named: %v", err)
			}
			if ce.Line != tt.line || ce.Field != tt.field || !strings.Contains(ce.Reason, tt.msg) {
				t.Fatalf("got line %d field %q reason %q (%v); want line %d field %q reason containing %q",
					ce.Line, ce.Field, ce.Reason, err, tt.line, tt.field, tt.msg)
			}
		})
	}
}

func TestCheckReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Check(io.MultiReader(strings.NewReader(headerLine), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

func TestCheckLongLines(t *testing.T) {
	r := specRecord(t)
	r.ProductTerm = strings.Repeat("x", 200_000) // bigger than the read buffer
	if _, err := Check(bytes.NewReader(writeAll(t, Options{}, r))); err != nil {
		t.Fatal(err)
	}
	r.ProductTerm = strings.Repeat("x", 2<<20)
	_, err := Check(bytes.NewReader(writeAll(t, Options{}, r)))
	var ce *CheckError
	if !errors.As(err, &ce) || ce.Line != 2 {
		t.Fatalf("got %v", err)
	}
}

// FuzzWriterCheck: whatever the writer accepts, the checker accepts, with
// the same row count and UNIQUE_IDs.
func FuzzWriterCheck(f *testing.F) {
	f.Add("Brenton", "Waters", "UC0W 0JL", "Ann Lee", "CD5472", "0.5", "123456", "", int64(1686265200), int64(1724230000), 1, 0, "left_arm_upper_position", "intramuscular")
	f.Add(`Jo "J"`, "a|b\r\nc", "", "  ", "", "", "", "Y1", int64(-1), int64(0), 0, 9, "", "")
	f.Add("Zoë", "\n", "\"", "x y z", "|", "10", "", "", int64(253402300799), int64(1), 3, 2, "nose", "nasal_spray")
	f.Fuzz(func(t *testing.T, forename, surname, postcode, vaccinator, batch, dose, urn, locODS string,
		performed, created int64, doseSeq, gender int, site, method string) {
		r := specRecord(t)
		r.Forename, r.Surname, r.Postcode, r.VaccinatorFullName = forename, surname, postcode, vaccinator
		r.BatchName, r.DoseAmount, r.SchoolURN, r.LocationODSCode = batch, dose, urn, locODS
		r.PerformedAt = time.Unix(performed, 0)
		r.CreatedAt = time.Unix(created, 0)
		r.DoseSequence, r.GenderCode = doseSeq, gender
		r.DeliverySite, r.DeliveryMethod = site, method
		second := specRecord(t)
		second.UUID = "00000000-0000-4000-8000-000000000000"

		var buf bytes.Buffer
		w := NewWriter(&buf, Options{})
		want := 0
		if err := w.Write(r); err == nil {
			want++
		} else if !errors.As(err, new(*RecordError)) {
			t.Fatal(err)
		}
		if err := w.Write(second); err != nil {
			t.Fatal(err)
		}
		want++
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		res, err := Check(&buf)
		if err != nil {
			t.Fatalf("checker rejects writer output: %v\n%s", err, buf.String())
		}
		if res.Rows != want || res.UniqueIDs[len(res.UniqueIDs)-1] != second.UUID {
			t.Fatalf("rows %d ids %v, want %d", res.Rows, res.UniqueIDs, want)
		}
	})
}

// benchRecords is a small pool of realistic, varied rows.
func benchRecords(b *testing.B) []Record {
	recs := make([]Record, 64)
	for i := range recs {
		r := specRecord(b)
		r.PerformedAt = r.PerformedAt.Add(time.Duration(i) * 97 * time.Minute)
		r.VaccinatorFullName = "Sam Taylor-Jones"
		if i%3 == 0 {
			r.SchoolURN, r.LocationODSCode = "", "Y02911"
			r.Forename = `Jo "JJ"`
		}
		if i%5 == 0 {
			r.Action = ActionUpdate
		}
		recs[i] = r
	}
	return recs
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkWriter: one op is one row. Reports ns/row, allocs/row (from
// -benchmem / ReportAllocs) and MB/s via SetBytes on the mean row size.
func BenchmarkWriter(b *testing.B) {
	recs := benchRecords(b)
	var sink countingWriter
	w := NewWriter(&sink, Options{})
	for i := range 1000 { // measure the row size for SetBytes
		if err := w.Write(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes((sink.n - int64(len(headerLine))) / 1000)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		if err := w.Write(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/row")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/row")
}

// TestCheckDeleteNeedsIdentityOnly: a delete row is checked for its identity, action and recorded date,
// which is all the receiver reads of it.
func TestCheckDeleteNeedsIdentityOnly(t *testing.T) {
	header, row := specLines(t)
	del := setField(setField(setField(row, 11, `"delete"`), 0, `""`), 5, `""`)
	if _, err := Check(strings.NewReader(header + "\n" + del + "\n")); err != nil {
		t.Fatalf("delete without NHS number or postcode: %v", err)
	}
	_, err := Check(strings.NewReader(header + "\n" + setField(del, 10, `""`) + "\n"))
	var ce *CheckError
	if !errors.As(err, &ce) || ce.Rule != RuleUniqueID {
		t.Fatalf("delete without UNIQUE_ID_URI: %v", err)
	}
}
