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
	"unsafe"
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
	line        line // reused line buffer: one Write to bufio per row
	fields      [NumFields]string
	scratch     []byte // the row's values when one had a quote, for the row rules
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
		line:        line{b: make([]byte, 0, 1024)},
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

// Write formats r's line, applies the row rules to its values (the very rules Check applies to each
// line it reads) and appends it. A *RecordError means r was refused and nothing was written; the writer
// stays usable. Any other error is from the underlying writer and is sticky.
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
	w.formatLine(&r, performed, created)
	var err error
	if w.scratch, err = w.line.values(&w.fields, w.scratch[:0]); err != nil { // a bug in formatLine, not bad data
		w.err = fmt.Errorf("dps: record %s made a malformed line: %w", r.UUID, err)
		return w.err
	}
	if ref := w.rules.check(&w.fields, w.now()); !ref.ok() {
		return &RecordError{UUID: r.UUID, Rule: ref.Rule, Field: ref.Field, Reason: ref.Reason}
	}
	if err := w.writeHeader(); err != nil {
		return err
	}
	w.line.b = append(w.line.b, '\n')
	if _, err := w.bw.Write(w.line.b); err != nil {
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

// formatLine builds r's line in w.line, without its newline. performed and created are r's instants
// already in Europe/London.
func (w *Writer) formatLine(r *Record, performed, created time.Time) {
	l := &w.line
	l.reset()
	l.text(r.NHSNumber)
	l.text(r.Forename)
	l.text(r.Surname)
	l.date(r.DateOfBirth)
	l.number(r.GenderCode)
	if strings.TrimSpace(r.Postcode) == "" {
		l.fixed(UnknownPostcode)
	} else {
		l.text(r.Postcode)
	}
	l.dateTime(performed)
	l.text(r.SiteODSCode)
	l.fixed(ODSCodeURI)
	l.lowerCase(r.UUID) // validate has checked that it is a UUID
	l.text(w.uniqueIDURI)
	l.text(r.Action)

	forename, surname, _ := strings.Cut(strings.TrimSpace(r.VaccinatorFullName), " ")
	l.text(forename)
	l.text(surname)

	l.date(created)
	l.fixed(primarySource)
	l.text(r.ProcedureCode)
	l.text(r.ProcedureTerm)
	if r.DoseSequence > 0 {
		l.number(r.DoseSequence)
	} else {
		l.fixed("")
	}
	l.text(r.ProductCode)
	l.text(r.ProductTerm)
	l.text(r.Manufacturer)
	l.text(r.BatchName)
	if r.BatchExpiry.IsZero() {
		l.fixed("")
	} else {
		l.date(r.BatchExpiry)
	}

	site := deliverySites[r.DeliverySite] // zero value ("", "") when unknown
	l.fixed(site.code)
	l.fixed(site.term)
	route := deliveryMethods[r.DeliveryMethod]
	l.fixed(route.code)
	l.fixed(route.term)
	l.text(r.DoseAmount)
	l.fixed(DoseUnitCode)
	l.fixed(DoseUnitTerm)
	l.fixed("") // INDICATION_CODE

	switch {
	case r.SchoolURN != "":
		l.text(r.SchoolURN)
		l.fixed(SchoolURNURI)
	case r.LocationODSCode != "":
		l.text(r.LocationODSCode)
		l.fixed(ODSCodeURI)
	default:
		l.text(r.SiteODSCode)
		l.fixed(ODSCodeURI)
	}
}

// line is one data line being built, field by field, with where each field's value lies in it. The row
// rules read the values from there: a value that holds no quote is, byte for byte, what lies between
// its field's quotes, which is what Check's split of the line gives back. Splitting each line again
// (34 searches and a copy of every value) was a fifth of the writer's time.
type line struct {
	b      []byte
	bounds [NumFields][2]int // field i's value is b[bounds[i][0]:bounds[i][1]]
	n      int               // fields written
	quoted bool              // a value had a quote, doubled in b: the bounds do not give its value
}

func (l *line) reset() {
	l.b, l.n, l.quoted = l.b[:0], 0, false
}

// open starts the next field: its separator, then its opening quote.
func (l *line) open() {
	if l.n > 0 {
		l.b = append(l.b, '|')
	}
	l.b = append(l.b, '"')
	if l.n < NumFields {
		l.bounds[l.n][0] = len(l.b)
	}
}

// close ends the field open: its closing quote.
func (l *line) close() {
	if l.n < NumFields {
		l.bounds[l.n][1] = len(l.b)
	}
	l.b = append(l.b, '"')
	l.n++
}

// text is a value as held, quotes doubled and each line break (CRLF, CR or LF) turned into one space.
func (l *line) text(s string) {
	l.open()
	if clean(s) {
		l.b = append(l.b, s...)
	} else {
		l.b = appendEscaped(l.b, s)
		l.quoted = l.quoted || strings.IndexByte(s, '"') >= 0
	}
	l.close()
}

// fixed is a value of our own that needs no escaping (the format's constants and tables).
func (l *line) fixed(s string) {
	l.open()
	l.b = append(l.b, s...)
	l.close()
}

// lowerCase is s with A to F lower-cased: a UUID as the receiver keys it.
func (l *line) lowerCase(s string) {
	l.open()
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'F' {
			c += 'a' - 'A'
		}
		l.b = append(l.b, c)
	}
	l.close()
}

func (l *line) number(n int) {
	l.open()
	l.b = strconv.AppendInt(l.b, int64(n), 10)
	l.close()
}

// date is YYYYMMDD of t's own calendar date.
func (l *line) date(t time.Time) {
	l.open()
	l.b = appendYMD(l.b, t)
	l.close()
}

// dateTime is YYYYMMDDTHHMMSSZZ of t, already in Europe/London, ZZ being its offset: 00 in GMT, 01 in
// BST (validate has refused any other).
func (l *line) dateTime(t time.Time) {
	l.open()
	l.b = appendWallClock(l.b, t)
	if _, off := t.Zone(); off == 3600 {
		l.b = append(l.b, '0', '1')
	} else {
		l.b = append(l.b, '0', '0')
	}
	l.close()
}

// values sets fields to the line's values, as Check's split of the line gives them; they alias the line
// (or scratch, when a value had a quote) until the next line is built. It fails only on a line with
// other than NumFields fields, which is a bug in the formatting.
func (l *line) values(fields *[NumFields]string, scratch []byte) ([]byte, error) {
	if l.n != NumFields {
		return scratch, fmt.Errorf("%d fields, want %d", l.n, NumFields)
	}
	if l.quoted {
		return splitFields(l.b, fields, scratch)
	}
	for i, b := range l.bounds {
		if b[0] == b[1] {
			fields[i] = ""
		} else {
			fields[i] = unsafe.String(&l.b[b[0]], b[1]-b[0])
		}
	}
	return scratch, nil
}

// appendEscaped appends s with each quote doubled and each line break (CRLF, CR or LF) turned into one
// space.
func appendEscaped(dst []byte, s string) []byte {
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
	return dst
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

func append4(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/1000%10), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}

func append2(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/10%10), byte('0'+n%10))
}
