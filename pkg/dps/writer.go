package dps

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Why not encoding/csv: DPS wants every field quoted, empty ones included,
// with "|" as the delimiter. csv.Writer quotes only fields that need it
// (there is no "always quote" switch), so `""` for an empty value and
// `"TRUE"` would come out bare; it would also keep CR/LF inside values,
// which DPS forbids. A hand-rolled quoter is a dozen lines, lets every row be
// appended into one reused buffer (no per-row allocations), and keeps the
// bytes fully under our control, which a byte-exact format needs.

// Options configure a Writer.
type Options struct {
	// UniqueIDURI is written in UNIQUE_ID_URI; DefaultUniqueIDURI when empty.
	UniqueIDURI string
	// Now is the clock "in the future" is measured from; time.Now when nil.
	Now func() time.Time
}

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("dps: writer closed")

// RecordError says why a record cannot be written: the receiver would
// refuse its row, or it cannot be written as a row at all. Nothing of it was
// written. It names the record by UUID only, never by patient details.
type RecordError struct {
	UUID   string
	Rule   Rule
	Field  string // DPS field name
	Reason string
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("dps record %s: %s: %s (rule %s)", e.UUID, e.Field, e.Reason, e.Rule)
}

// Writer writes a DPS file: the header, then one line per Write. It buffers;
// call Close (or Flush) at the end. The header is written before the first
// row, or by Flush/Close when there are no rows: deciding that an empty
// export gets no file at all is the caller's business.
type Writer struct {
	bw          *bufio.Writer
	uniqueIDURI string
	london      *time.Location
	now         func() time.Time
	row         []byte // reused line buffer: one Write to bufio per row
	fields      [NumFields]string
	scratch     []byte // the row's values, unquoted, for the row rules
	rules       rowRules
	rows        int
	header      bool
	closed      bool
	err         error // sticky: construction or write error
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer, opts Options) *Writer {
	uri := opts.UniqueIDURI
	if uri == "" {
		uri = DefaultUniqueIDURI
	}
	wr := &Writer{
		bw:          bufio.NewWriterSize(w, 64<<10),
		uniqueIDURI: uri,
		london:      London(),
		now:         opts.Now,
		row:         make([]byte, 0, 1024),
		scratch:     make([]byte, 0, 1024),
	}
	if wr.now == nil {
		wr.now = time.Now
	}
	if !validUniqueIDURI(uri) {
		wr.err = fmt.Errorf("dps: UniqueIDURI %q is not an absolute https URI", uri)
	}
	return wr
}

// Rows is the number of rows written so far (the header excluded).
func (w *Writer) Rows() int { return w.rows }

// Write formats r's line, applies the row rules to it (the very rules Check
// applies to a file) and appends it. A *RecordError means r was refused and
// nothing was written; the writer stays usable. Any other error is from the
// underlying writer and is sticky.
func (w *Writer) Write(r Record) error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	performed, created := r.PerformedAt.In(w.london), r.CreatedAt.In(w.london)
	if err := w.validate(&r, performed, created); err != nil {
		return err
	}
	w.row = w.appendRow(w.row[:0], &r, performed, created)
	var err error
	w.scratch, err = splitFields(w.row[:len(w.row)-1], &w.fields, w.scratch[:0])
	if err != nil { // a bug in appendRow, not bad data
		w.err = fmt.Errorf("dps: record %s made a malformed line: %w", r.UUID, err)
		return w.err
	}
	if ref := w.rules.check(&w.fields, w.now()); !ref.ok() {
		return &RecordError{UUID: r.UUID, Rule: ref.Rule, Field: ref.Field, Reason: ref.Reason}
	}
	if err := w.writeHeader(); err != nil {
		return err
	}
	if _, err := w.bw.Write(w.row); err != nil {
		w.err = fmt.Errorf("dps: write row: %w", err)
		return w.err
	}
	w.rows++
	return nil
}

// Flush writes the header if no row has been written yet, then flushes
// buffered data to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.writeHeader(); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("dps: flush: %w", err)
		return w.err
	}
	return nil
}

// Close flushes and refuses further writes. It does not close the
// underlying writer, which the caller owns.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	err := w.Flush()
	w.closed = true
	return err
}

// headerLine is the first line of every file.
var headerLine = func() string {
	var b strings.Builder
	for i, name := range Header {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(`"` + name + `"`)
	}
	b.WriteByte('\n')
	return b.String()
}()

func (w *Writer) writeHeader() error {
	if w.header {
		return nil
	}
	if _, err := w.bw.WriteString(headerLine); err != nil {
		w.err = fmt.Errorf("dps: write header: %w", err)
		return w.err
	}
	w.header = true
	return nil
}

// validate refuses what cannot be written as a row at all: text that is not
// UTF-8, a missing or unprintable date, a time the receiver's offsets cannot
// express, and values the row would silently lose (an unknown site or
// route, a negative dose number). Everything else is left to the row rules,
// applied to the formatted line.
func (w *Writer) validate(r *Record, performed, created time.Time) error {
	bad := func(rule Rule, field, reason string) error {
		return &RecordError{UUID: r.UUID, Rule: rule, Field: field, Reason: reason}
	}
	for _, f := range [...]struct{ name, v string }{
		{"NHS_NUMBER", r.NHSNumber}, {"PERSON_FORENAME", r.Forename}, {"PERSON_SURNAME", r.Surname},
		{"PERSON_POSTCODE", r.Postcode}, {"SITE_CODE", r.SiteODSCode}, {"UNIQUE_ID", r.UUID},
		{"PERFORMING_PROFESSIONAL_FORENAME", r.VaccinatorFullName},
		{"VACCINATION_PROCEDURE_TERM", r.ProcedureTerm}, {"VACCINE_PRODUCT_TERM", r.ProductTerm},
		{"VACCINE_MANUFACTURER", r.Manufacturer}, {"BATCH_NUMBER", r.BatchName},
		{"LOCATION_CODE", r.LocationODSCode}, {"DOSE_AMOUNT", r.DoseAmount}, {"VACCINATION_PROCEDURE_CODE", r.ProcedureCode},
		{"VACCINE_PRODUCT_CODE", r.ProductCode}, {"ACTION_FLAG", r.Action},
	} {
		if !utf8.ValidString(f.v) {
			return bad(RuleFormat, f.name, "not valid UTF-8")
		}
	}
	switch {
	case !validUUID(r.UUID, true):
		return bad(RuleUniqueID, "UNIQUE_ID", "not a UUID")
	case r.DateOfBirth.IsZero() || !writableYear(r.DateOfBirth.Year()):
		return bad(RuleDateOfBirth, "PERSON_DOB", "missing or out of range")
	case r.PerformedAt.IsZero() || !writableYear(performed.Year()):
		return bad(RuleDateAndTime, "DATE_AND_TIME", "missing or out of range")
	case offsetSuffix(performed) == "":
		return bad(RuleDateAndTime, "DATE_AND_TIME", "UK offset then was neither GMT nor BST")
	case r.CreatedAt.IsZero() || !writableYear(created.Year()):
		return bad(RuleRecordedDate, "RECORDED_DATE", "missing or out of range")
	case r.DoseSequence < 0 || r.DoseSequence > 999_999_999:
		return bad(RuleDoseSequence, "DOSE_SEQUENCE", "negative or more than 9 digits")
	case !r.BatchExpiry.IsZero() && !writableYear(r.BatchExpiry.Year()):
		return bad(RuleExpiryDate, "EXPIRY_DATE", "out of range")
	}
	if _, ok := deliverySites[r.DeliverySite]; r.DeliverySite != "" && !ok {
		return bad(RuleBodySite, "SITE_OF_VACCINATION_CODE", "unknown delivery site")
	}
	if _, ok := deliveryMethods[r.DeliveryMethod]; r.DeliveryMethod != "" && !ok {
		return bad(RuleRoute, "ROUTE_OF_VACCINATION_CODE", "unknown delivery method")
	}
	return nil
}

// appendRow appends r's line, newline included, to dst. performed and
// created are r's instants already in Europe/London.
func (w *Writer) appendRow(dst []byte, r *Record, performed, created time.Time) []byte {
	dst = appendQuoted(dst, r.NHSNumber)
	dst = appendQuoted(append(dst, '|'), r.Forename)
	dst = appendQuoted(append(dst, '|'), r.Surname)
	dst = appendDate(append(dst, '|'), r.DateOfBirth)
	dst = append(dst, `|"`...)
	dst = strconv.AppendInt(dst, int64(r.GenderCode), 10)
	dst = append(dst, '"', '|')
	if strings.TrimSpace(r.Postcode) == "" {
		dst = append(dst, `"`+UnknownPostcode+`"`...)
	} else {
		dst = appendQuoted(dst, r.Postcode)
	}
	dst = appendDateTime(append(dst, '|'), performed)
	dst = appendQuoted(append(dst, '|'), r.SiteODSCode)
	dst = append(dst, `|"`+ODSCodeURI+`"|"`...)
	for i := 0; i < len(r.UUID); i++ {
		c := r.UUID[i]
		if c >= 'A' && c <= 'F' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = append(dst, `"|`...)
	dst = appendQuoted(dst, w.uniqueIDURI)
	dst = appendQuoted(append(dst, '|'), r.Action)

	forename, surname, _ := strings.Cut(strings.TrimSpace(r.VaccinatorFullName), " ")
	dst = appendQuoted(append(dst, '|'), forename)
	dst = appendQuoted(append(dst, '|'), surname)

	dst = appendDate(append(dst, '|'), created)
	dst = append(dst, `|"`+primarySource+`"|`...)
	dst = appendQuoted(dst, r.ProcedureCode)
	dst = appendQuoted(append(dst, '|'), r.ProcedureTerm)
	dst = append(dst, `|"`...)
	if r.DoseSequence > 0 {
		dst = strconv.AppendInt(dst, int64(r.DoseSequence), 10)
	}
	dst = append(dst, '"', '|')
	dst = appendQuoted(dst, r.ProductCode)
	dst = appendQuoted(append(dst, '|'), r.ProductTerm)
	dst = appendQuoted(append(dst, '|'), r.Manufacturer)
	dst = appendQuoted(append(dst, '|'), r.BatchName)
	dst = append(dst, '|')
	if r.BatchExpiry.IsZero() {
		dst = append(dst, '"', '"')
	} else {
		dst = appendDate(dst, r.BatchExpiry)
	}

	site := deliverySites[r.DeliverySite] // zero value ("", "") when unknown
	dst = appendClean(append(dst, '|'), site.code)
	dst = appendClean(append(dst, '|'), site.term)
	route := deliveryMethods[r.DeliveryMethod]
	dst = appendClean(append(dst, '|'), route.code)
	dst = appendClean(append(dst, '|'), route.term)
	dst = appendQuoted(append(dst, '|'), r.DoseAmount)
	dst = append(dst, `|"`+DoseUnitCode+`"|"`+DoseUnitTerm+`"|""|`...)

	switch {
	case r.SchoolURN != "":
		dst = appendQuoted(dst, r.SchoolURN)
		dst = append(dst, `|"`+SchoolURNURI+`"`...)
	case r.LocationODSCode != "":
		dst = appendQuoted(dst, r.LocationODSCode)
		dst = append(dst, `|"`+ODSCodeURI+`"`...)
	default:
		dst = appendQuoted(dst, r.SiteODSCode)
		dst = append(dst, `|"`+ODSCodeURI+`"`...)
	}
	return append(dst, '\n')
}

// appendQuoted appends s wrapped in double quotes, doubling any quote and
// turning each line break (CRLF, CR or LF) into one space.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	if clean(s) {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			dst = append(dst, '"', '"')
		case '\r':
			if i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			dst = append(dst, ' ')
		case '\n':
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// clean reports whether s needs no escaping. Nearly every value is clean,
// so this is the hot path: for longer values (SNOMED terms run to 120
// bytes) three vectorised IndexByte scans beat one byte loop.
func clean(s string) bool {
	if len(s) < 24 {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c == '"' || c == '\r' || c == '\n' {
				return false
			}
		}
		return true
	}
	return strings.IndexByte(s, '"') < 0 && strings.IndexByte(s, '\n') < 0 && strings.IndexByte(s, '\r') < 0
}

// appendClean appends a value known to need no escaping (our own constant
// tables), skipping the scan.
func appendClean(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendDate appends "YYYYMMDD", quoted, of t's own calendar date.
func appendDate(dst []byte, t time.Time) []byte {
	return append(appendYMD(append(dst, '"'), t), '"')
}

// appendYMD appends YYYYMMDD of t's own calendar date.
func appendYMD(dst []byte, t time.Time) []byte {
	y, m, d := t.Date()
	dst = append4(dst, y)
	dst = append2(dst, int(m))
	return append2(dst, d)
}

// appendWallClock appends YYYYMMDDTHHMMSS of t in its own location.
func appendWallClock(dst []byte, t time.Time) []byte {
	hh, mm, ss := t.Clock()
	dst = append(appendYMD(dst, t), 'T')
	dst = append2(dst, hh)
	dst = append2(dst, mm)
	return append2(dst, ss)
}

// appendDateTime appends "YYYYMMDDTHHMMSSZZ", quoted, of t, already in
// Europe/London, ZZ being its offset: 00 in GMT, 01 in BST (validate has
// refused any other).
func appendDateTime(dst []byte, t time.Time) []byte {
	dst = appendWallClock(append(dst, '"'), t)
	if _, off := t.Zone(); off == 3600 {
		return append(dst, '0', '1', '"')
	}
	return append(dst, '0', '0', '"')
}

func append4(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/1000%10), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

func append2(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/10%10), byte('0'+n%10))
}
