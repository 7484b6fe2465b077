package dps_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
)

func TestParseAckFileName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want dps.AckFileName
		ok   bool
	}{
		{"HPV_Vaccinations_v5_V0V8L_20261126T11412500_InfAck_20261126T11453000.csv",
			dps.AckFileName{Kind: dps.KindInfAck, FileName: "HPV_Vaccinations_v5_V0V8L_20261126T11412500.csv", Stamp: "20261126T11453000"}, true},
		{"HPV_Vaccinations_v5_V0V8L_20261126T11412500_BusAck_20261126T11453000.csv",
			dps.AckFileName{Kind: dps.KindBusAck, FileName: "HPV_Vaccinations_v5_V0V8L_20261126T11412500.csv", Stamp: "20261126T11453000"}, true},
		{"HPV_Vaccinations_v5_V0V8L_20261126T11412500_BusAck_20261126T11453000.json",
			dps.AckFileName{Kind: dps.KindBusAck, FileName: "HPV_Vaccinations_v5_V0V8L_20261126T11412500.csv", Stamp: "20261126T11453000", JSON: true}, true},
		// Whatever the export's own name looks like (today's names, issue 11's), the part before the kind is it.
		{"Vaccinations-HPV-2024-08-23_InfAck_20240823T01020300.csv",
			dps.AckFileName{Kind: dps.KindInfAck, FileName: "Vaccinations-HPV-2024-08-23.csv", Stamp: "20240823T01020300"}, true},
		{"HPV_Vaccinations_v5_V0V8L_20261126T11412500_InfAck_20261126T11453000.json", dps.AckFileName{}, false},
		{"HPV_Vaccinations_v5_V0V8L_20261126T11412500.csv", dps.AckFileName{}, false},
		{"_InfAck_20261126T11453000.csv", dps.AckFileName{}, false},
		{"notes.txt", dps.AckFileName{}, false},
	} {
		got, ok := dps.ParseAckFileName(tc.name)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseAckFileName(%q) = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if got := dps.AckFileNameFor("X.csv", dps.KindBusAck, dps.AckStamp(time.Date(2026, 11, 26, 11, 45, 30, 0, time.UTC))); got != "X_BusAck_20261126T11453000.csv" {
		t.Errorf("AckFileNameFor = %q", got)
	}
}

func TestInfAckRoundTripAndReceiverShape(t *testing.T) {
	for _, success := range []bool{true, false} {
		a := dps.InfAck{MessageHeaderID: "c7e2f1d0", Success: success, ResponseCode: dps.InfAckSuccessCode,
			ResponseDisplay: dps.InfAckSuccessDisplay, ReceivedTime: "20261126T11453000"}
		if !success {
			a.ResponseCode, a.ResponseDisplay = dps.InfAckFailureCode, dps.InfAckFailureDisplay
		}
		var b bytes.Buffer
		if err := dps.WriteInfAck(&b, a); err != nil {
			t.Fatal(err)
		}
		// As the receiver's csv writer makes it: 12 columns, no IMMS_ID or OPERATION_OUTCOME, \r\n lines.
		lines := strings.Split(strings.TrimSuffix(b.String(), "\r\n"), "\r\n")
		if len(lines) != 2 || strings.Count(lines[0], "|") != 11 || !strings.HasPrefix(lines[0], "MESSAGE_HEADER_ID|HEADER_RESPONSE_CODE|") {
			t.Fatalf("InfAck:\n%s", b.String())
		}
		got, err := dps.ParseInfAck(&b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Success != success || got.ResponseCode != a.ResponseCode || got.ResponseDisplay != a.ResponseDisplay || got.MessageHeaderID != "c7e2f1d0" {
			t.Errorf("parsed %+v from %+v", got, a)
		}
	}
}

func TestParseInfAckRefusesWhatItCannotRead(t *testing.T) {
	header := "MESSAGE_HEADER_ID|HEADER_RESPONSE_CODE|ISSUE_SEVERITY|ISSUE_CODE|ISSUE_DETAILS_CODE|RESPONSE_TYPE|RESPONSE_CODE|RESPONSE_DISPLAY|RECEIVED_TIME|MAILBOX_FROM|LOCAL_ID|MESSAGE_DELIVERY\n"
	for name, body := range map[string]string{
		"empty":          "",
		"header only":    header,
		"two rows":       header + "a|Success|Information|OK|20013|Technical|20013|Success|t|||True\n" + "a|Success|Information|OK|20013|Technical|20013|Success|t|||True\n",
		"unknown code":   header + "a|Maybe|Information|OK|20013|Technical|20013|Success|t|||True\n",
		"no code column": "MESSAGE_HEADER_ID|HEADER_RESPONSE_CODE\na|Success\n",
		"not utf-8":      header + "a|Success|\xff|OK|20013|Technical|20013|Success|t|||True\n",
	} {
		_, err := dps.ParseInfAck(strings.NewReader(body))
		var ae *dps.AckError
		if !errors.As(err, &ae) {
			t.Errorf("%s: err %v, want an AckError", name, err)
		}
	}
}

func TestBusAckRoundTrip(t *testing.T) {
	rows := []dps.BusAckRow{
		{Row: 2, Refused: true, UniqueID: "5b1f2c4e-8a9d-4e3b-b1c2-d3e4f5a6b7c8", UniqueIDURI: "https://example.org/records",
			// A "|" in a diagnostic: the receiver writes it unquoted.
			Diagnostic: "Validation errors: a | b\nsecond line"},
		{Row: 5, UniqueID: "0f8e1a2b-0000-4000-8000-000000000005", UniqueIDURI: "https://example.org/records", ImmsID: "imms-1"},
	}
	var b bytes.Buffer
	if err := dps.WriteBusAck(&b, "file-1", "20261126T11453000", rows); err != nil {
		t.Fatal(err)
	}
	var got []dps.BusAckRow
	n, err := dps.ReadBusAck(&b, func(r dps.BusAckRow) error { got = append(got, r); return nil })
	if err != nil || n != 2 {
		t.Fatalf("ReadBusAck: %d rows, %v", n, err)
	}
	if !got[0].Refused || got[0].Row != 2 || got[0].UniqueID != rows[0].UniqueID || got[0].Diagnostic != "Validation errors: a | b second line" ||
		got[0].ResponseCode != dps.BusAckRefusedCode || got[0].MessageHeaderID != "file-1^2" || got[0].Line != 2 {
		t.Errorf("refused row %+v", got[0])
	}
	if got[1].Refused || got[1].Row != 5 || got[1].ImmsID != "imms-1" || got[1].ResponseCode != dps.BusAckAcceptedCode || got[1].Diagnostic != "" {
		t.Errorf("accepted row %+v", got[1])
	}
}

func TestReadBusAckRefusesWhatItCannotRead(t *testing.T) {
	header := strings.Join(dps.AckHeader[:], "|") + "\n"
	for name, body := range map[string]string{
		"empty":         "",
		"other header":  "A|B|C\n",
		"short row":     header + "x^1|Fatal Error|Fatal\n",
		"unknown code":  header + "x^1|Maybe|Fatal|Fatal Error|30002|Business|30002|d|t||id^uri||diag|False\n",
		"bad local id":  header + "x^1|Fatal Error|Fatal|Fatal Error|30002|Business|30002|d|t||nocaret||diag|False\n",
		"long line":     header + strings.Repeat("x", 70<<10) + "\n",
		"not utf-8 row": header + "x^1|Fatal Error|Fatal|Fatal Error|30002|Business|30002|d|t||id^uri||\xff|False\n",
	} {
		_, err := dps.ReadBusAck(strings.NewReader(body), func(dps.BusAckRow) error { return nil })
		var ae *dps.AckError
		if !errors.As(err, &ae) {
			t.Errorf("%s: err %v, want an AckError", name, err)
		}
	}
	// A header and no rows is a file whose every row was taken.
	if n, err := dps.ReadBusAck(strings.NewReader(header), func(dps.BusAckRow) error { return nil }); err != nil || n != 0 {
		t.Errorf("header only: %d, %v", n, err)
	}
}

func TestParseBusAckSummary(t *testing.T) {
	s, err := dps.ParseBusAckSummary(strings.NewReader(`{"system":"Immunisation FHIR API Batch Report","version":1,"filename":"X",
		"summary":{"totalRecords":120,"succeeded":117,"failed":3,"ingestionTime":{"start":1,"end":2}},
		"failures":[{"rowId":4,"responseCode":"30002","localId":"a^b","operationOutcome":"bad"}]}`))
	if err != nil || s.Summary.TotalRecords != 120 || s.Summary.Failed != 3 || len(s.Failures) != 1 || s.Failures[0].RowID != 4 {
		t.Errorf("summary %+v, %v", s, err)
	}
	if _, err := dps.ParseBusAckSummary(strings.NewReader(`{"summary":`)); err == nil {
		t.Error("a truncated summary parsed")
	}
}
