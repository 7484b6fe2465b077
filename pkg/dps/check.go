package dps

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// CheckResult summarises a file that passed Check.
type CheckResult struct {
	Rows      int            // data lines, header excluded
	Actions   map[string]int // rows per ACTION_FLAG
	UniqueIDs []string       // UNIQUE_ID of each row, in file order
}

// CheckError locates the first defect Check found. Line is 1-based (the
// header is line 1); Field is the DPS field name when the defect is in one.
type CheckError struct {
	Line   int
	Field  string
	Reason string
}

func (e *CheckError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("dps check: line %d: %s", e.Line, e.Reason)
	}
	return fmt.Sprintf("dps check: line %d: %s: %s", e.Line, e.Field, e.Reason)
}

// maxLine bounds a line so that a corrupt file cannot make Check buffer
// without limit; real rows are well under 2 KiB.
const maxLine = 1 << 20

// Check reads a whole DPS file and verifies it strictly against the format:
// UTF-8 without BOM, "\n" line ends including after the last line, the exact
// header, 34 quoted "|"-separated fields per line, and the value rules of
// each field. It returns the first defect as a *CheckError. An I/O error
// from r is returned wrapped.
func Check(r io.Reader) (CheckResult, error) { return CheckEach(r, nil) }

// CheckEach is Check that also hands each row that passed to each (when not nil), in file order, with
// its line number. fields is reused for the next row.
func CheckEach(r io.Reader, each func(line int, fields *[NumFields]string)) (CheckResult, error) {
	res := CheckResult{Actions: map[string]int{}}
	br := bufio.NewReaderSize(r, 64<<10)
	seen := map[string]int{}
	var (
		line    []byte
		fields  [NumFields]string
		lineNo  int
		scratch []byte
	)
	for {
		lineNo++
		var err error
		line, err = readLine(br, line[:0])
		if err == io.EOF && len(line) == 0 {
			break
		}
		if err != nil && err != io.EOF {
			if errors.Is(err, errLineTooLong) {
				return res, &CheckError{Line: lineNo, Reason: "line longer than 1 MiB"}
			}
			return res, fmt.Errorf("dps check: read line %d: %w", lineNo, err)
		}
		if err == io.EOF || line[len(line)-1] != '\n' {
			return res, &CheckError{Line: lineNo, Reason: `missing final "\n"`}
		}
		line = line[:len(line)-1]
		if lineNo == 1 && bytes.HasPrefix(line, []byte("\xef\xbb\xbf")) {
			return res, &CheckError{Line: 1, Reason: "byte-order mark"}
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return res, &CheckError{Line: lineNo, Reason: `carriage return (lines must end with "\n" only)`}
		}
		if !utf8.Valid(line) {
			return res, &CheckError{Line: lineNo, Reason: "not valid UTF-8"}
		}
		if lineNo == 1 {
			if string(line)+"\n" != headerLine {
				return res, headerError(line)
			}
			continue
		}
		scratch, err = splitLine(line, &fields, scratch[:0])
		if err != nil {
			return res, &CheckError{Line: lineNo, Reason: err.Error()}
		}
		if field, reason := checkFields(&fields); field != "" {
			return res, &CheckError{Line: lineNo, Field: field, Reason: reason}
		}
		id := fields[9]
		if prev, dup := seen[id]; dup {
			return res, &CheckError{Line: lineNo, Field: "UNIQUE_ID", Reason: fmt.Sprintf("duplicate of line %d", prev)}
		}
		seen[id] = lineNo
		res.Rows++
		res.Actions[fields[11]]++
		res.UniqueIDs = append(res.UniqueIDs, id)
		if each != nil {
			each(lineNo, &fields)
		}
	}
	if lineNo == 1 {
		return res, &CheckError{Line: 1, Reason: "empty file: no header"}
	}
	return res, nil
}

var errLineTooLong = errors.New("line too long")

// readLine appends the next line, "\n" included when present, to buf.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		part, err := br.ReadSlice('\n')
		buf = append(buf, part...)
		if len(buf) > maxLine {
			return buf, errLineTooLong
		}
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

// headerError says which header field is wrong.
func headerError(line []byte) error {
	var fields [NumFields]string
	if _, err := splitLine(line, &fields, nil); err != nil {
		return &CheckError{Line: 1, Reason: "header: " + err.Error()}
	}
	for i, name := range Header {
		if fields[i] != name {
			return &CheckError{Line: 1, Field: name, Reason: fmt.Sprintf("header field %d is %q", i+1, fields[i])}
		}
	}
	return &CheckError{Line: 1, Reason: "header differs from the specification"}
}

// splitLine parses exactly NumFields quoted fields separated by "|" into
// fields, unescaping `""`. Values are carved out of one scratch buffer.
func splitLine(line []byte, fields *[NumFields]string, scratch []byte) ([]byte, error) {
	var ends [NumFields]int
	n, i := 0, 0
	for {
		if n == NumFields {
			return scratch, fmt.Errorf("more than %d fields", NumFields)
		}
		if i >= len(line) || line[i] != '"' {
			return scratch, fmt.Errorf("field %d (%s) is not quoted", n+1, Header[n])
		}
		i++
		closed := false
		for i < len(line) {
			c := line[i]
			if c != '"' {
				scratch = append(scratch, c)
				i++
				continue
			}
			if i+1 < len(line) && line[i+1] == '"' {
				scratch = append(scratch, '"')
				i += 2
				continue
			}
			i++
			closed = true
			break
		}
		if !closed {
			return scratch, fmt.Errorf("field %d (%s) has no closing quote", n+1, Header[n])
		}
		ends[n] = len(scratch)
		n++
		if i == len(line) {
			break
		}
		if line[i] != '|' {
			return scratch, fmt.Errorf("field %d (%s): %q after closing quote", n, Header[n-1], line[i])
		}
		i++
	}
	if n != NumFields {
		return scratch, fmt.Errorf("%d fields, want %d", n, NumFields)
	}
	start := 0
	for k := 0; k < NumFields; k++ {
		fields[k] = string(scratch[start:ends[k]])
		start = ends[k]
	}
	return scratch, nil
}

// checkFields applies the value rules; it returns the failing field's name
// and why, or "" when the row is valid.
func checkFields(f *[NumFields]string) (field, reason string) {
	nonEmpty := func(i int) bool { return f[i] != "" }
	optionalDate := func(i int) bool {
		if f[i] == "" {
			return true
		}
		_, ok := parseDate(f[i])
		return ok
	}
	switch {
	case !ValidNHSNumber(f[0]):
		return Header[0], "not 10 digits with a valid mod-11 check digit"
	case !nonEmpty(1):
		return Header[1], "empty"
	case !nonEmpty(2):
		return Header[2], "empty"
	case !nonEmpty(3) || !optionalDate(3):
		return Header[3], "not a YYYYMMDD date"
	case f[4] != "0" && f[4] != "1" && f[4] != "2" && f[4] != "9":
		return Header[4], "not 0, 1, 2 or 9"
	case !validDateTime(f[6]):
		return Header[6], "not YYYYMMDDTHHMMSS00"
	case !nonEmpty(7):
		return Header[7], "empty"
	case f[8] != ODSCodeURI:
		return Header[8], "not " + ODSCodeURI
	case !validUUID(f[9], false):
		return Header[9], "not a lower-case UUID"
	case !validUniqueIDURI(f[10]):
		return Header[10], "not an absolute https URI"
	case f[11] != ActionNew && f[11] != ActionUpdate && f[11] != ActionDelete:
		return Header[11], "not new, update or delete"
	case !nonEmpty(14) || !optionalDate(14):
		return Header[14], "not a YYYYMMDD date"
	case f[15] != primarySource:
		return Header[15], "not TRUE"
	case !validSNOMED(f[16]):
		return Header[16], "not a SNOMED code"
	case !nonEmpty(17):
		return Header[17], "empty"
	case f[18] != "" && (!allDigits(f[18]) || f[18][0] == '0' || len(f[18]) > 9):
		return Header[18], "not a positive integer"
	case !validSNOMED(f[19]):
		return Header[19], "not a SNOMED code"
	case !nonEmpty(20):
		return Header[20], "empty"
	case !optionalDate(23):
		return Header[23], "not a YYYYMMDD date"
	case f[24] != "" && siteTerms[f[24]] == "":
		return Header[24], "unknown body site code"
	case f[25] != siteTerms[f[24]]:
		return Header[25], "does not match SITE_OF_VACCINATION_CODE"
	case f[26] != "" && routeTerms[f[26]] == "":
		return Header[26], "unknown route code"
	case f[27] != routeTerms[f[26]]:
		return Header[27], "does not match ROUTE_OF_VACCINATION_CODE"
	case f[28] != "" && !validDecimal(f[28]):
		return Header[28], "not a decimal"
	case f[29] != DoseUnitCode:
		return Header[29], "not " + DoseUnitCode
	case f[30] != DoseUnitTerm:
		return Header[30], "not " + DoseUnitTerm
	case f[31] != "":
		return Header[31], "not empty"
	case !nonEmpty(32):
		return Header[32], "empty"
	case f[33] != ODSCodeURI && f[33] != SchoolURNURI:
		return Header[33], "not an ODS or school URN URI"
	case f[33] == SchoolURNURI && !validURN(f[32]):
		return Header[32], "school URN is not 1 to 8 digits"
	}
	return "", ""
}
