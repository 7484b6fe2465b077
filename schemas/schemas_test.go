package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// TestExamplesValidate: every example in every schema file is valid, so the
// documentation cannot drift from the rules.
func TestExamplesValidate(t *testing.T) {
	names := Names()
	if len(names) != 10 {
		t.Fatalf("Names() = %v, want 10 schemas", names)
	}
	for _, name := range names {
		b, err := fs.ReadFile(Files(), name+".schema.json")
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			ID          string            `json:"$id"`
			Title       string            `json:"title"`
			Description string            `json:"description"`
			Additional  *bool             `json:"additionalProperties"`
			Examples    []json.RawMessage `json:"examples"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc.ID == "" || doc.Title == "" || doc.Description == "" {
			t.Errorf("%s: $id, title and description are required", name)
		}
		if doc.Additional == nil || *doc.Additional {
			t.Errorf("%s: additionalProperties must be false", name)
		}
		if len(doc.Examples) == 0 {
			t.Errorf("%s: no examples", name)
		}
		for i, ex := range doc.Examples {
			if err := ValidateNamed(name, ex); err != nil {
				t.Errorf("%s example %d: %v", name, i, err)
			}
		}
	}
}

func TestForSubject(t *testing.T) {
	tests := []struct {
		subject, want string
		ok            bool
	}{
		{"dps.export.request", ExportRequest, true},
		{"dps.export.ready", ExportReady, true},
		{"dps.export.created", ExportCreated, true},
		{"dps.export.sent", ExportSent, true},
		{"dps.export.acknowledged", ExportAcknowledged, true},
		{"dps.export.failed", ExportFailed, true},
		{"mesh.mailbox.validated", MailboxValidated, true},
		{"dps.deadletter.request", DeadLetter, true},
		{"dps.deadletter.sender", DeadLetter, true},
		{"dps.deadletter.anything.deeper", DeadLetter, true},
		{"dps.deadletter.", "", false},
		{"dps.deadletter.>", "", false},
		{"dps.deadletter", "", false},
		{"dps.export.unknown", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := ForSubject(tt.subject)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ForSubject(%q) = %q, %v; want %q, %v", tt.subject, got, ok, tt.want, tt.ok)
		}
	}
	if err := Validate("dps.nope", []byte(`{}`)); !errors.Is(err, ErrUnknownSubject) {
		t.Errorf("unknown subject: %v", err)
	}
}

const (
	uuid1 = "2b0f4a9e-51c3-4b8e-a0f1-6c7d8e9f0a1b"
	sha   = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

func TestInvalidPayloads(t *testing.T) {
	request := `{"request_id":"r1","programme":"HPV","requested_by":"t","requested_at":"2024-08-23T02:00:00Z"}`
	tests := []struct {
		name, subject, payload string
		want                   []string // each must appear in the error
	}{
		{"missing request_id", "dps.export.request",
			`{"programme":"HPV","requested_by":"t","requested_at":"2024-08-23T02:00:00Z"}`,
			[]string{"request_id: missing"}},
		{"lower-case programme", "dps.export.request",
			strings.Replace(request, `"HPV"`, `"hpv"`, 1), []string{"programme: does not match pattern"}},
		{"empty request_id", "dps.export.request",
			strings.Replace(request, `"r1"`, `""`, 1), []string{"request_id: must not be empty"}},
		{"long request_id", "dps.export.request",
			strings.Replace(request, `"r1"`, `"`+strings.Repeat("x", 129)+`"`, 1), []string{"request_id: longer than 128"}},
		{"requested_at not a date-time", "dps.export.request",
			strings.Replace(request, `2024-08-23T02:00:00Z`, `2024-08-23 02:00`, 1), []string{"requested_at: is not a valid date-time"}},
		{"dry_run a string", "dps.export.request",
			strings.Replace(request, `}`, `,"dry_run":"yes"}`, 1), []string{"dry_run: must be boolean"}},
		{"unknown property", "dps.export.request",
			strings.Replace(request, `}`, `,"priority":1}`, 1), []string{"priority: not allowed"}},
		{"not an object", "dps.export.request", `[]`, []string{"must be object"}},
		{"export_id not a uuid", "dps.export.ready",
			`{"export_id":"123","programme":"HPV","filename":"HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv","object_name":"o","size_bytes":1,"sha256":"` + sha + `","rows":1,"created_at":"2024-08-23T02:00:00Z"}`,
			[]string{"export_id: is not a valid uuid"}},
		{"negative size and upper-case sha", "dps.export.ready",
			`{"export_id":"` + uuid1 + `","programme":"HPV","filename":"HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv","object_name":"o","size_bytes":-1,"sha256":"` + strings.ToUpper(sha) + `","rows":1,"created_at":"2024-08-23T02:00:00Z"}`,
			[]string{"size_bytes: ", "sha256: does not match pattern"}},
		{"bad filename", "dps.export.created",
			`{"event_id":"` + uuid1 + `","export_id":"` + uuid1 + `","programme":"HPV","filename":"hpv.csv","rows":1,"size_bytes":1,"sha256":"` + sha + `","created_at":"2024-08-23T02:00:00Z"}`,
			[]string{"filename: does not match pattern"}},
		{"attempt zero and adopted missing", "dps.export.sent",
			`{"event_id":"` + uuid1 + `","export_id":"` + uuid1 + `","programme":"HPV","filename":"HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv","mesh_message_id":"m","local_id":"l","attempt":0,"sent_at":"2024-08-23T02:00:00Z"}`,
			[]string{"adopted: missing", "attempt: "}},
		{"rows fractional", "dps.export.ready",
			`{"export_id":"` + uuid1 + `","programme":"HPV","filename":"HPV_Vaccinations_v5_V0V8L_20240823T02000301.csv","object_name":"o","size_bytes":1,"sha256":"` + sha + `","rows":1.5,"created_at":"2024-08-23T02:00:00Z"}`,
			[]string{"rows: must be integer"}},
		{"acknowledged missing mesh id", "dps.export.acknowledged",
			`{"event_id":"` + uuid1 + `","export_id":"` + uuid1 + `","programme":"HPV","acknowledged_at":"2024-08-23T02:00:00Z"}`,
			[]string{"mesh_message_id: missing"}},
		{"failed unknown stage", "dps.export.failed",
			`{"event_id":"` + uuid1 + `","export_id":"` + uuid1 + `","programme":"HPV","stage":"mesh","reason":"r","failed_at":"2024-08-23T02:00:00Z"}`,
			[]string{"stage: is not one of the allowed values"}},
		{"failed mesh_status out of range", "dps.export.failed",
			`{"event_id":"` + uuid1 + `","export_id":"` + uuid1 + `","programme":"HPV","stage":"sender","reason":"r","mesh_status":999,"failed_at":"2024-08-23T02:00:00Z"}`,
			[]string{"mesh_status: "}},
		{"validated bad result", "mesh.mailbox.validated",
			`{"event_id":"` + uuid1 + `","mailbox":"X1","result":"maybe","validated_at":"2024-08-23T02:00:00Z"}`,
			[]string{"result: is not one of the allowed values"}},
		{"dead letter bad base64 and header", "dps.deadletter.sender",
			`{"stage":"sender","subject":"s","reason":"r","payload_base64":"***","headers":{"A":"b"},"stream":"S","stream_seq":1,"deliveries":1,"dead_lettered_at":"2024-08-23T02:00:00Z"}`,
			[]string{"payload_base64: is not valid base64", "headers.A: must be array"}},
		{"dead letter missing everything", "dps.deadletter.tracker", `{}`,
			[]string{"stage: missing", "payload: missing", "payload_base64: missing", "stream_seq: missing", "dead_lettered_at: missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.subject, []byte(tt.payload))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want *ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestMalformedJSON(t *testing.T) {
	for _, in := range []string{``, `{`, `{"request_id":}`, `{} {}`, `not json`, "\xff"} {
		err := Validate("dps.export.request", []byte(in))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: got %v, want ErrMalformed", in, err)
			continue
		}
		if !strings.Contains(err.Error(), "export-request: malformed JSON") {
			t.Errorf("%q: unclear message %q", in, err)
		}
	}
}

// TestEveryStringIsBounded: every string in every schema has a maxLength (or is an enum), so that no
// schema-valid message can carry an unbounded value into a log, a row or a dead letter.
func TestEveryStringIsBounded(t *testing.T) {
	for _, name := range Names() {
		b, err := fs.ReadFile(Files(), name+".schema.json")
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		var walk func(node any, path string)
		walk = func(node any, path string) {
			switch n := node.(type) {
			case map[string]any:
				if n["type"] == "string" && n["maxLength"] == nil && n["enum"] == nil {
					t.Errorf("%s: %s is a string without maxLength", name, path)
				}
				for k, v := range n {
					if k != "examples" {
						walk(v, path+"/"+k)
					}
				}
			case []any:
				for i, v := range n {
					walk(v, fmt.Sprintf("%s/%d", path, i))
				}
			}
		}
		walk(doc, "")
	}
}

// TestLongFileNameRefused: a ready whose file name is 500,000 characters long, which the pattern alone
// accepts, is refused by the schema.
func TestLongFileNameRefused(t *testing.T) {
	name := "Vaccinations-" + strings.Repeat("A", 500_000) + "-2024-08-23.csv"
	payload := `{"export_id":"` + uuid1 + `","programme":"HPV","filename":"` + name + `","object_name":"o","size_bytes":1,"sha256":"` + sha + `","rows":1,"created_at":"2024-08-23T02:00:00Z"}`
	err := Validate("dps.export.ready", []byte(payload))
	if err == nil {
		t.Fatal("a 500,000-character file name was accepted")
	}
	// The whole message is over the size limit, which is checked before anything else.
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	// Under the size limit, the field's own bound refuses it and names it.
	name = "Vaccinations-" + strings.Repeat("A", 300) + "-2024-08-23.csv"
	payload = `{"export_id":"` + uuid1 + `","programme":"HPV","filename":"` + name + `","object_name":"o","size_bytes":1,"sha256":"` + sha + `","rows":1,"created_at":"2024-08-23T02:00:00Z"}`
	err = Validate("dps.export.ready", []byte(payload))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "filename: longer than 255") {
		t.Fatalf("got %v, want filename: longer than 255 characters", err)
	}
}

// TestSizeCheckedFirst: an oversized payload is refused as too large even when it is not JSON, and
// a dead letter has its own, larger limit.
func TestSizeCheckedFirst(t *testing.T) {
	big := []byte(strings.Repeat("{", MaxMessageBytes+1))
	err := Validate("dps.export.request", big)
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrTooLarge only", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("%d bytes, the limit is %d", len(big), MaxMessageBytes)) {
		t.Errorf("unclear message %q", err)
	}
	if err := Validate("dps.deadletter.request", big); errors.Is(err, ErrTooLarge) {
		t.Errorf("a dead letter of %d bytes is refused as too large: %v", len(big), err)
	}
	if err := Validate("dps.deadletter.request", make([]byte, MaxDeadLetterBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v for an oversized dead letter, want ErrTooLarge", err)
	}
}
