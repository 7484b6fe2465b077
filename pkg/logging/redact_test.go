package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

type patient struct{ nhs string }

func (p patient) LogValue() slog.Value {
	return slog.GroupValue(slog.String("nhs_number", p.nhs), slog.String("id", "p-1"))
}

func TestSensitiveKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"password", true}, {"MESH_PASSWORD", true}, {"private_key_passphrase", true}, {"token", true},
		{"Authorization", true}, {"key", true}, {"shared_key", true}, {"mesh.key", true},
		{"nhs_number", true}, {"NHSNumber", true}, {"forename", true}, {"surname", true},
		{"patient_dob", true}, {"date_of_birth", true}, {"postcode", true}, {"address_postcode", true},
		{"export_id", false}, {"monkey", false}, {"keyboard", false}, {"filename", false},
		{"programme", false}, {"mesh_message_id", false}, {"rows", false},
	}
	for _, tt := range tests {
		if got := SensitiveKey(tt.key); got != tt.want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestScrubString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"nhs number alone", "9992686766", "[REDACTED-NHS-NUMBER]"},
		{"nhs number in text", "patient 9992686766 missing", "patient [REDACTED-NHS-NUMBER] missing"},
		{"nhs number spaced", "nhs 999 268 6766.", "nhs [REDACTED-NHS-NUMBER]."},
		{"nhs number at the end", "nhs_number=9992686766", "nhs_number=[REDACTED-NHS-NUMBER]"},
		{"nhs number quoted", `patient "9992686766", (999 268 6766)`, `patient "[REDACTED-NHS-NUMBER]", ([REDACTED-NHS-NUMBER])`},
		{"bad check digit kept", "order 1234567890 shipped", "order 1234567890 shipped"},
		{"longer numbers kept", "message 20200529155357895317_3573F8", "message 20200529155357895317_3573F8"},
		{"url password", "dial postgres://app:s3cret@db:5432/dps failed", "dial postgres://app:[REDACTED]@db:5432/dps failed"},
		{"mesh token", "header NHSMESH X26ABC1:abc:0:202401020304:ff00 rejected", "header NHSMESH [REDACTED] rejected"},
		{"key value", "password=hunter2 rest", "password=[REDACTED] rest"},
		{"nothing", "export 3 sent", "export 3 sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ScrubString(tt.in); got != tt.want {
				t.Errorf("ScrubString(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestNHSNumbersMaskedIdentifiersKept: an NHS number is masked where it is a value of its own, and
// never where its digits are part of one of our identifiers, whether the identifier comes as its own
// attribute, inside another attribute's text or inside the message.
func TestNHSNumbersMaskedIdentifiersKept(t *testing.T) {
	const nhs = "9992686766" // a valid test NHS number (mod 11)
	tests := []struct {
		name, key, value string
		masked           bool
	}{
		// NHS numbers: masked under any key that is not one of our identifiers.
		{"alone", "note", nhs, true},
		{"alone in text", "error", "no consent recorded for " + nhs + " today", true},
		{"3-3-4 spaced", "note", "999 268 6766", true},
		{"3-3-4 spaced in text", "error", "patient 999 268 6766: missing", true},
		{"after a colon", "error", "nhs:" + nhs, true},
		{"end of a sentence", "error", "refused " + nhs + ".", true},
		// Identifiers holding ten digits: untouched, as their own attribute and inside free text.
		{"request id attribute", "request_id", "devstack-20261126T" + nhs + "a2-HPV", false},
		{"request id in text", "error", "request devstack-" + nhs + "-HPV failed", false},
		{"uuid attribute", "export_id", "e29f84fe-c417-4526-aa6a-" + nhs + "ff", false},
		{"uuid in text", "error", "export 'e29f84fe-c417-4526-aa6a-" + nhs + "ff' failed", false},
		{"uuid last group all digits", "error", "export e29f84fe-c417-4526-aa6a-00" + nhs, false},
		{"mesh message id attribute", "mesh_message_id", nhs + "5357895317_3573F8", false},
		{"mesh message id of ten digits", "mesh_message_id", nhs, false},
		{"mesh message id in text", "error", "message " + nhs + "_3573F8 not found", false},
		{"mesh local id", "mesh_local_id", "e29f84fe-c417-4526-aa6a-" + nhs + "ff.2", false},
		{"file name attribute", "filename", "HPV_Vaccinations_v5_X26_" + nhs + ".csv", false},
		{"file name in text", "error", "upload " + nhs + ".csv refused", false},
		{"dashed digits", "error", "ref 999-268-6766", false},
		{"longer number", "error", "sequence 1" + nhs, false},
	}
	for _, format := range []string{FormatJSON, FormatText} {
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				var buf bytes.Buffer
				log, err := New(&buf, slog.LevelInfo, format)
				if err != nil {
					t.Fatal(err)
				}
				log.Info("event", slog.String(tt.key, tt.value))
				want := 1
				if !IdentifierKey(tt.key) {
					log.Info(tt.value) // free text is scrubbed the same way as the message itself
					want = 2
				}
				out := buf.String()
				leaked := strings.Contains(strings.ReplaceAll(out, " ", ""), nhs)
				if tt.masked {
					if leaked || strings.Count(out, RedactedNHSNumber) != want {
						t.Errorf("%s=%q: want the NHS number masked in the attribute and the message:\n%s", tt.key, tt.value, out)
					}
					return
				}
				if strings.Contains(out, "REDACTED") || !strings.Contains(out, tt.value) {
					t.Errorf("%s=%q: want it untouched:\n%s", tt.key, tt.value, out)
				}
			})
		}
	}
}

// TestIdentifiersKeptInsideStructs: identifier fields of a struct or map logged whole pass untouched too.
func TestIdentifiersKeptInsideStructs(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, slog.LevelInfo, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	id := "e29f84fe-c417-4526-aa6a-9992686766ff"
	log.Info("export", slog.Any("export", map[string]any{"export_id": id, "note": "9992686766"}))
	out := buf.String()
	if !strings.Contains(out, id) || strings.Count(out, RedactedNHSNumber) != 1 {
		t.Errorf("want the export id whole and the note masked: %s", out)
	}
}

func TestRedactionCannotBeBypassed(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, slog.LevelDebug, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	log = log.With(slog.String("password", "hunter2"), slog.Group("mesh", slog.String("shared_key", "TestKey")))
	log.WithGroup("req").Info("sent for 9992686766",
		slog.String("forename", "Brenton"),
		slog.String("surname", "Waters"),
		slog.String("dob", "20120818"),
		slog.String("postcode", "UC0W 0JL"),
		slog.Any("patient", patient{nhs: "9992686766"}),
		slog.Any("err", fmt.Errorf("wrap: %w", errors.New("connect postgres://u:pw@h/db"))),
		slog.String("export_id", "e-1"),
	)
	out := buf.String()
	for _, leaked := range []string{"hunter2", "TestKey", "Brenton", "Waters", "20120818", "UC0W", "9992686766", ":pw@"} {
		if strings.Contains(out, leaked) {
			t.Errorf("log line leaks %q: %s", leaked, out)
		}
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, out)
	}
	req := line["req"].(map[string]any)
	if req["export_id"] != "e-1" {
		t.Errorf("export_id = %v, want kept", req["export_id"])
	}
	if req["forename"] != Redacted {
		t.Errorf("forename = %v, want %s", req["forename"], Redacted)
	}
}

func TestNewRejectsUnknownFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, slog.LevelInfo, "xml"); err == nil {
		t.Fatal("want error for format xml")
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "": slog.LevelInfo, "WARN": slog.LevelWarn, "error": slog.LevelError} {
		got, err := ParseLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("ParseLevel(loud) want error")
	}
}

// vaccination stands for a domain struct logged whole by mistake, as dps.Record would be.
type vaccination struct {
	UUID               string
	NHSNumber          string
	Forename, Surname  string
	VaccinatorFullName string
	Contact            map[string]string
	Rows               int
}

// TestStructsAndMapsRedacted: a struct, map or slice logged with slog.Any is masked field by field in
// both formats, not printed with its Go field names.
func TestStructsAndMapsRedacted(t *testing.T) {
	v := vaccination{UUID: "496e37d8-d1ab-4e12-a3a3-9c2e136a0504", NHSNumber: "9992686766", Forename: "Brenton",
		Surname: "Waters", VaccinatorFullName: "Nurse Joy", Contact: map[string]string{"postcode": "UC0W 0JL", "note": "nhs 9992686766"}, Rows: 3}
	tests := []struct {
		name  string
		value any
	}{
		{"struct", v},
		{"pointer to struct", &v},
		{"map", map[string]any{"nhs_number": "9992686766", "given_name": "Brenton", "family_name": "Waters", "Postcode": "UC0W 0JL", "dob": "20120818"}},
		{"slice of structs", []vaccination{v, v}},
		{"unmarshallable", map[string]any{"f": func() {}, "surname": "Waters"}},
	}
	for _, format := range []string{FormatJSON, FormatText} {
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				var buf bytes.Buffer
				log, err := New(&buf, slog.LevelInfo, format)
				if err != nil {
					t.Fatal(err)
				}
				log.Info("record", slog.Any("record", tt.value))
				out := buf.String()
				for _, leaked := range []string{"9992686766", "Brenton", "Waters", "Nurse", "UC0W", "20120818"} {
					if strings.Contains(out, leaked) {
						t.Errorf("log line leaks %q: %s", leaked, out)
					}
				}
				if strings.HasPrefix(tt.name, "struct") && !strings.Contains(out, "496e37d8-d1ab-4e12-a3a3-9c2e136a0504") {
					t.Errorf("the record UUID, which is no identifier of a person, was lost: %s", out)
				}
			})
		}
	}
}
