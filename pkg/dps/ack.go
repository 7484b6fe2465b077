package dps

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The receiver's acknowledgement files, as NHS England's batch pipeline writes them (its ack_backend and
// ack_file_utils): for a file "NAME.csv" it writes "NAME_InfAck_STAMP.csv" (one row: did the file pass)
// and, once every row is processed, "NAME_BusAck_STAMP.csv" (a row per record it could not take, and
// sometimes per record it took) with a "NAME_BusAck_STAMP.json" summary. STAMP is the time it received
// the file, YYYYMMDDTHHMMSS00 in UTC. Both CSVs are "|"-separated with a header line.

// AckHeader is the BusAck's header, and the InfAck's without IMMS_ID and OPERATION_OUTCOME.
var AckHeader = [...]string{
	"MESSAGE_HEADER_ID", "HEADER_RESPONSE_CODE", "ISSUE_SEVERITY", "ISSUE_CODE", "ISSUE_DETAILS_CODE",
	"RESPONSE_TYPE", "RESPONSE_CODE", "RESPONSE_DISPLAY", "RECEIVED_TIME", "MAILBOX_FROM", "LOCAL_ID",
	"IMMS_ID", "OPERATION_OUTCOME", "MESSAGE_DELIVERY",
}

// infAckHeader is the InfAck's header: the receiver writes the keys of its row, which has no IMMS_ID
// or OPERATION_OUTCOME.
var infAckHeader = []string{
	"MESSAGE_HEADER_ID", "HEADER_RESPONSE_CODE", "ISSUE_SEVERITY", "ISSUE_CODE", "ISSUE_DETAILS_CODE",
	"RESPONSE_TYPE", "RESPONSE_CODE", "RESPONSE_DISPLAY", "RECEIVED_TIME", "MAILBOX_FROM", "LOCAL_ID",
	"MESSAGE_DELIVERY",
}

// Acknowledgement kinds, as they appear in the file names.
const (
	KindInfAck = "InfAck"
	KindBusAck = "BusAck"
)

// AckFileName is an acknowledgement file's name taken apart.
type AckFileName struct {
	// Kind is KindInfAck or KindBusAck.
	Kind string
	// FileName is the name of the file it acknowledges: the part before the kind, plus ".csv".
	FileName string
	// Stamp is the receiver's time stamp, as written (YYYYMMDDTHHMMSS00).
	Stamp string
	// JSON is true for the BusAck's JSON summary, false for the CSVs.
	JSON bool
}

var ackNamePattern = regexp.MustCompile(`^(.+)_(InfAck|BusAck)_(\d{8}T\d{6,8})\.(csv|json)$`)

// ParseAckFileName recognises an acknowledgement file by its name. ok is false for any other name.
func ParseAckFileName(name string) (AckFileName, bool) {
	m := ackNamePattern.FindStringSubmatch(name)
	if m == nil || (m[2] == KindInfAck && m[4] == "json") {
		return AckFileName{}, false
	}
	return AckFileName{Kind: m[2], FileName: m[1] + ".csv", Stamp: m[3], JSON: m[4] == "json"}, true
}

// AckStamp formats t as the receiver stamps its acknowledgement files: UTC, YYYYMMDDTHHMMSS00.
func AckStamp(t time.Time) string { return t.UTC().Format("20060102T150405") + "00" }

// AckFileNameFor is the name of the acknowledgement of kind for the file fileName, stamped stamp.
func AckFileNameFor(fileName, kind, stamp string) string {
	return strings.TrimSuffix(fileName, ".csv") + "_" + kind + "_" + stamp + ".csv"
}

// Response codes the receiver writes.
const (
	InfAckSuccessCode    = "20013"
	InfAckFailureCode    = "10002"
	BusAckAcceptedCode   = "30001"
	BusAckRefusedCode    = "30002"
	InfAckSuccessDisplay = "Success"
	InfAckFailureDisplay = "Infrastructure Level Response Value - Processing Error"
	BusAckRefusedDisplay = "Business Level Response Value - Processing Error"
)

// InfAck is the file-level acknowledgement.
type InfAck struct {
	// MessageHeaderID is the receiver's id for the file (its own, not MESH's).
	MessageHeaderID string
	// Success is HEADER_RESPONSE_CODE "Success"; false for "Failure".
	Success bool
	// ResponseCode and ResponseDisplay say why (20013 Success; 10002 and a display text on failure).
	ResponseCode, ResponseDisplay string
	IssueSeverity, IssueCode      string
	// ReceivedTime is RECEIVED_TIME as written.
	ReceivedTime string
}

// AckError is a defect in an acknowledgement file. Line is 1-based (the header is line 1).
type AckError struct {
	Line   int
	Reason string
}

func (e *AckError) Error() string {
	if e.Line == 0 {
		return "acknowledgement file: " + e.Reason
	}
	return fmt.Sprintf("acknowledgement file: line %d: %s", e.Line, e.Reason)
}

// maxInfAck bounds what ParseInfAck reads: the file is two short lines.
const maxInfAck = 64 << 10

// ParseInfAck reads an InfAck: a header naming at least HEADER_RESPONSE_CODE, RESPONSE_CODE and
// RESPONSE_DISPLAY, and exactly one row whose HEADER_RESPONSE_CODE is Success or Failure.
func ParseInfAck(r io.Reader) (InfAck, error) {
	var a InfAck
	data, err := io.ReadAll(io.LimitReader(r, maxInfAck+1))
	if err != nil {
		return a, fmt.Errorf("read InfAck: %w", err)
	}
	if len(data) > maxInfAck {
		return a, &AckError{Reason: fmt.Sprintf("InfAck larger than %d bytes", maxInfAck)}
	}
	if !utf8.Valid(data) {
		return a, &AckError{Reason: "not valid UTF-8"}
	}
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))))
	cr.Comma = '|'
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	records, err := cr.ReadAll()
	if err != nil {
		return a, &AckError{Reason: err.Error()}
	}
	if len(records) == 0 {
		return a, &AckError{Reason: "empty file"}
	}
	col := map[string]int{}
	for i, name := range records[0] {
		col[strings.TrimSpace(name)] = i
	}
	for _, need := range []string{"HEADER_RESPONSE_CODE", "RESPONSE_CODE", "RESPONSE_DISPLAY"} {
		if _, ok := col[need]; !ok {
			return a, &AckError{Line: 1, Reason: "header has no " + need}
		}
	}
	if len(records) != 2 {
		return a, &AckError{Reason: fmt.Sprintf("%d rows, want exactly one", len(records)-1)}
	}
	row := records[1]
	get := func(name string) string {
		if i, ok := col[name]; ok && i < len(row) {
			return strings.TrimSpace(row[i])
		}
		return ""
	}
	switch code := get("HEADER_RESPONSE_CODE"); code {
	case "Success":
		a.Success = true
	case "Failure":
	default:
		return a, &AckError{Line: 2, Reason: fmt.Sprintf("HEADER_RESPONSE_CODE %q is neither Success nor Failure", code)}
	}
	a.MessageHeaderID = get("MESSAGE_HEADER_ID")
	a.ResponseCode, a.ResponseDisplay = get("RESPONSE_CODE"), get("RESPONSE_DISPLAY")
	a.IssueSeverity, a.IssueCode = get("ISSUE_SEVERITY"), get("ISSUE_CODE")
	a.ReceivedTime = get("RECEIVED_TIME")
	if a.ResponseCode == "" {
		return a, &AckError{Line: 2, Reason: "RESPONSE_CODE is empty"}
	}
	return a, nil
}

// WriteInfAck writes a as the receiver does (Python's csv writer with "|": a field holding "|", a quote
// or a line break is quoted; MESSAGE_DELIVERY is True or False).
func WriteInfAck(w io.Writer, a InfAck) error {
	code, severity, issue, details := "Failure", "Fatal", "Fatal Error", "10001"
	if a.Success {
		code, severity, issue, details = "Success", "Information", "OK", "20013"
	}
	cw := csv.NewWriter(w)
	cw.Comma = '|'
	cw.UseCRLF = true // Python's csv writer ends lines with \r\n
	delivered := "False"
	if a.Success {
		delivered = "True"
	}
	if err := cw.Write(infAckHeader); err != nil {
		return err
	}
	if err := cw.Write([]string{a.MessageHeaderID, code, severity, issue, details, "Technical", a.ResponseCode,
		a.ResponseDisplay, a.ReceivedTime, "", "", delivered}); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

// BusAckRow is one row of a BusAck.
type BusAckRow struct {
	// Line is the row's line in the BusAck (the header is line 1).
	Line int
	// MessageHeaderID is "{the receiver's file id}^{row number in our file}".
	MessageHeaderID string
	// Row is the row number in our file, from MessageHeaderID (1 for the first data row); 0 if absent.
	Row int
	// Refused is true for HEADER_RESPONSE_CODE "Fatal Error", false for "OK".
	Refused bool
	// ResponseCode (30001 accepted, 30002 refused) and ResponseDisplay as written.
	ResponseCode, ResponseDisplay string
	// LocalID is "{UNIQUE_ID}^{UNIQUE_ID_URI}" of the row it answers; UniqueID and UniqueIDURI its parts.
	LocalID, UniqueID, UniqueIDURI string
	// ImmsID is the receiver's id of the Immunization it created, when it took the row.
	ImmsID string
	// Diagnostic is OPERATION_OUTCOME: why it refused the row. It may quote what the row held.
	Diagnostic string
}

// maxAckLine bounds one BusAck line; a diagnostic is a sentence or two.
const maxAckLine = 64 << 10

// ReadBusAck reads a BusAck and calls each for every row, in order; an error from each stops it and is
// returned. The receiver writes rows unquoted, so a "|" inside a diagnostic would split it: the fields
// before OPERATION_OUTCOME never hold one, so any extra fields are joined back into it.
func ReadBusAck(r io.Reader, each func(BusAckRow) error) (rows int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	line := 0
	for {
		text, rerr := br.ReadSlice('\n')
		if rerr == bufio.ErrBufferFull || len(text) > maxAckLine {
			return rows, &AckError{Line: line + 1, Reason: fmt.Sprintf("line longer than %d bytes", maxAckLine)}
		}
		if rerr != nil && rerr != io.EOF {
			return rows, fmt.Errorf("read BusAck: %w", rerr)
		}
		if len(text) == 0 && rerr == io.EOF {
			break
		}
		line++
		s := strings.TrimRight(string(text), "\r\n")
		if line == 1 {
			s = strings.TrimPrefix(s, "\ufeff")
		}
		if !utf8.ValidString(s) {
			return rows, &AckError{Line: line, Reason: "not valid UTF-8"}
		}
		if line == 1 {
			if s != strings.Join(AckHeader[:], "|") {
				return rows, &AckError{Line: 1, Reason: "not the BusAck header " + strings.Join(AckHeader[:], "|")}
			}
		} else if strings.TrimSpace(s) != "" {
			row, perr := parseBusAckRow(line, s)
			if perr != nil {
				return rows, perr
			}
			rows++
			if err := each(row); err != nil {
				return rows, err
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	if line == 0 {
		return 0, &AckError{Reason: "empty file"}
	}
	return rows, nil
}

func parseBusAckRow(line int, s string) (BusAckRow, error) {
	f := strings.Split(s, "|")
	if len(f) < len(AckHeader) {
		return BusAckRow{}, &AckError{Line: line, Reason: fmt.Sprintf("%d fields, want %d", len(f), len(AckHeader))}
	}
	if len(f) > len(AckHeader) {
		last := len(f) - 1
		f = append(append(f[:12:12], strings.Join(f[12:last], "|")), f[last])
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	row := BusAckRow{
		Line: line, MessageHeaderID: f[0], ResponseCode: f[6], ResponseDisplay: f[7],
		LocalID: f[10], ImmsID: f[11], Diagnostic: f[12],
	}
	switch f[1] {
	case "OK":
	case "Fatal Error":
		row.Refused = true
	default:
		return row, &AckError{Line: line, Reason: fmt.Sprintf("HEADER_RESPONSE_CODE %q is neither OK nor Fatal Error", f[1])}
	}
	if _, n, ok := strings.Cut(row.MessageHeaderID, "^"); ok {
		if v, err := strconv.Atoi(n); err == nil && v > 0 {
			row.Row = v
		}
	}
	id, uri, ok := strings.Cut(row.LocalID, "^")
	if !ok || id == "" {
		return row, &AckError{Line: line, Reason: fmt.Sprintf("LOCAL_ID %q is not UNIQUE_ID^UNIQUE_ID_URI", row.LocalID)}
	}
	row.UniqueID, row.UniqueIDURI = id, uri
	return row, nil
}

// WriteBusAck writes rows as the receiver does: the header, then each row's fields joined by "|" with
// no quoting, MESSAGE_DELIVERY True for a row it took. receivedTime is RECEIVED_TIME; fileID the
// receiver's id for the file (the first part of MESSAGE_HEADER_ID).
func WriteBusAck(w io.Writer, fileID, receivedTime string, rows []BusAckRow) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(strings.Join(AckHeader[:], "|") + "\n")
	for _, r := range rows {
		code, severity, issue, details, respCode, display, delivered :=
			"OK", "Information", "OK", BusAckAcceptedCode, BusAckAcceptedCode, "Success", "True"
		if r.Refused {
			code, severity, issue, details, respCode, display, delivered =
				"Fatal Error", "Fatal", "Fatal Error", BusAckRefusedCode, BusAckRefusedCode, BusAckRefusedDisplay, "False"
		}
		// The receiver packs a diagnostic onto one line.
		diag := strings.Join(strings.Fields(r.Diagnostic), " ")
		fields := []string{fileID + "^" + strconv.Itoa(r.Row), code, severity, issue, details, "Business",
			respCode, display, receivedTime, "", r.UniqueID + "^" + r.UniqueIDURI, r.ImmsID, diag, delivered}
		bw.WriteString(strings.Join(fields, "|") + "\n")
	}
	return bw.Flush()
}

// BusAckSummary is the part of the BusAck's JSON summary the pipeline reads.
type BusAckSummary struct {
	Filename string `json:"filename"`
	Summary  struct {
		TotalRecords int `json:"totalRecords"`
		Succeeded    int `json:"succeeded"`
		Failed       int `json:"failed"`
	} `json:"summary"`
	Failures []struct {
		RowID            int    `json:"rowId"`
		LocalID          string `json:"localId"`
		OperationOutcome string `json:"operationOutcome"`
	} `json:"failures"`
}

// maxBusAckSummary bounds the JSON summary ParseBusAckSummary reads.
const maxBusAckSummary = 64 << 20

// ParseBusAckSummary reads a BusAck's JSON summary.
func ParseBusAckSummary(r io.Reader) (BusAckSummary, error) {
	var s BusAckSummary
	dec := json.NewDecoder(io.LimitReader(r, maxBusAckSummary))
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return s, &AckError{Reason: fmt.Sprintf("JSON summary truncated or larger than %d bytes", maxBusAckSummary)}
		}
		return s, &AckError{Reason: "JSON summary: " + err.Error()}
	}
	return s, nil
}
