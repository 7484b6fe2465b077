package dps

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// CheckResult summarises a file that passed Check.
type CheckResult struct {
	Rows      int            // data lines, header excluded
	Actions   map[string]int // rows per ACTION_FLAG
	UniqueIDs []string       // UNIQUE_ID of each row, in file order
}

// CheckError locates the first defect Check found. Line is 1-based (the
// header is line 1); Field is the DPS field name when the defect is in one;
// Rule is the row rule broken (RuleFormat for the file's shape).
type CheckError struct {
	Line   int
	Field  string
	Rule   Rule
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
// header, 34 quoted "|"-separated fields per line, and the row rules (the
// same ones the Writer applies before it writes a row). It returns the first
// defect as a *CheckError. An I/O error from r is returned wrapped.
func Check(r io.Reader) (CheckResult, error) { return checkFile(r, time.Now(), nil) }

// CheckAt is Check with "in the future" measured from now.
func CheckAt(r io.Reader, now time.Time) (CheckResult, error) { return checkFile(r, now, nil) }

// CheckEach is Check that also hands each row that passed to each (when not nil), in file order, with
// its line number. fields is reused for the next row; its values may be kept.
func CheckEach(r io.Reader, each func(line int, fields *[NumFields]string)) (CheckResult, error) {
	return checkFile(r, time.Now(), each)
}

func checkFile(r io.Reader, now time.Time, each func(line int, fields *[NumFields]string)) (CheckResult, error) {
	res := CheckResult{Actions: map[string]int{}}
	br := bufio.NewReaderSize(r, 64<<10)
	seen := map[string]int{}
	var rules rowRules
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
				return res, &CheckError{Line: lineNo, Rule: RuleFormat, Reason: "line longer than 1 MiB"}
			}
			return res, fmt.Errorf("dps check: read line %d: %w", lineNo, err)
		}
		if err == io.EOF || line[len(line)-1] != '\n' {
			return res, &CheckError{Line: lineNo, Rule: RuleFormat, Reason: `missing final "\n"`}
		}
		line = line[:len(line)-1]
		if lineNo == 1 && bytes.HasPrefix(line, []byte("\xef\xbb\xbf")) {
			return res, &CheckError{Line: 1, Rule: RuleFormat, Reason: "byte-order mark"}
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			return res, &CheckError{Line: lineNo, Rule: RuleFormat, Reason: `carriage return (lines must end with "\n" only)`}
		}
		if !utf8.Valid(line) {
			return res, &CheckError{Line: lineNo, Rule: RuleFormat, Reason: "not valid UTF-8"}
		}
		if lineNo == 1 {
			if string(line)+"\n" != headerLine {
				return res, headerError(line)
			}
			continue
		}
		scratch, err = splitFields(line, &fields, scratch[:0])
		if err != nil {
			return res, &CheckError{Line: lineNo, Rule: RuleFormat, Reason: err.Error()}
		}
		if ref := rules.check(&fields, now); !ref.ok() {
			return res, &CheckError{Line: lineNo, Field: ref.Field, Rule: ref.Rule, Reason: ref.Reason}
		}
		// fields alias scratch, which the next line overwrites: keep copies.
		id := strings.Clone(fields[9])
		if prev, dup := seen[id]; dup {
			return res, &CheckError{Line: lineNo, Field: "UNIQUE_ID", Rule: RuleUniqueID, Reason: fmt.Sprintf("duplicate of line %d", prev)}
		}
		seen[id] = lineNo
		res.Rows++
		res.Actions[actionKey(fields[11])]++
		res.UniqueIDs = append(res.UniqueIDs, id)
		if each != nil {
			// fields alias scratch: hand over copies, which the callback may keep.
			var kept [NumFields]string
			for k := range fields {
				kept[k] = strings.Clone(fields[k])
			}
			each(lineNo, &kept)
		}
	}
	if lineNo == 1 {
		return res, &CheckError{Line: 1, Rule: RuleFormat, Reason: "empty file: no header"}
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
		return &CheckError{Line: 1, Rule: RuleFormat, Reason: "header: " + err.Error()}
	}
	for i, name := range Header {
		if fields[i] != name {
			return &CheckError{Line: 1, Field: name, Rule: RuleFormat, Reason: fmt.Sprintf("header field %d is %q", i+1, fields[i])}
		}
	}
	return &CheckError{Line: 1, Rule: RuleFormat, Reason: "header differs from the specification"}
}

// splitLine parses exactly NumFields quoted fields separated by "|" into
// fields, unescaping `""`. Values are copied out of one scratch buffer.
func splitLine(line []byte, fields *[NumFields]string, scratch []byte) ([]byte, error) {
	scratch, err := splitFields(line, fields, scratch)
	if err == nil {
		for k := range fields {
			fields[k] = strings.Clone(fields[k])
		}
	}
	return scratch, err
}

// splitFields is splitLine without the copies: the values alias scratch, so
// they are valid only until scratch is next written. The writer checks every
// row it writes this way, and a copy of 34 strings per row would be most of
// its cost.
func splitFields(line []byte, fields *[NumFields]string, scratch []byte) ([]byte, error) {
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
			// Copy up to the next quote in one go: it closes the field
			// unless doubled.
			j := bytes.IndexByte(line[i:], '"')
			if j < 0 {
				break
			}
			scratch = append(scratch, line[i:i+j]...)
			i += j
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
		if ends[k] == start {
			fields[k] = ""
		} else {
			fields[k] = unsafe.String(&scratch[start], ends[k]-start)
		}
		start = ends[k]
	}
	return scratch, nil
}

// actionKey returns the constant for a valid ACTION_FLAG, so that counting
// one keeps no reference to an aliased value.
func actionKey(s string) string {
	switch s {
	case ActionNew:
		return ActionNew
	case ActionUpdate:
		return ActionUpdate
	case ActionDelete:
		return ActionDelete
	}
	return strings.Clone(s)
}
