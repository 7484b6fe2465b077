// Package schemas holds the JSON Schemas (2020-12) of every message on the
// bus, embedded in the binary, and validates payloads against them.
//
// The schema files are the documentation of each subject. This package maps
// subjects to schemas and validates bytes; it must know nothing of NATS or
// Postgres (pkg/bus calls it on publish and on receipt).
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed *.schema.json
var files embed.FS

// Schema names, one per payload (the file is <name>.schema.json).
const (
	ExportRequest      = "export-request"
	ExportReady        = "export-ready"
	ExportCreated      = "export-created"
	ExportSent         = "export-sent"
	ExportAcknowledged = "export-acknowledged"
	ExportFailed       = "export-failed"
	ExportReceived     = "export-received"
	ExportProcessed    = "export-processed"
	MailboxValidated   = "mailbox-validated"
	DeadLetter         = "dead-letter"
)

// bySubject maps exact subjects to schema names; dead letters are matched by
// prefix in ForSubject. Kept here rather than in pkg/bus so that this package
// can be used without NATS; bus tests check the two tables agree.
var bySubject = map[string]string{
	"dps.export.request":      ExportRequest,
	"dps.export.ready":        ExportReady,
	"dps.export.created":      ExportCreated,
	"dps.export.sent":         ExportSent,
	"dps.export.acknowledged": ExportAcknowledged,
	"dps.export.failed":       ExportFailed,
	"dps.export.received":     ExportReceived,
	"dps.export.processed":    ExportProcessed,
	"mesh.mailbox.validated":  MailboxValidated,
}

const deadLetterPrefix = "dps.deadletter."

// ErrUnknownSubject is returned by Validate for a subject with no schema.
var ErrUnknownSubject = errors.New("no schema for subject")

// ErrMalformed is wrapped by Validate's error when the payload is not JSON.
var ErrMalformed = errors.New("malformed JSON")

// ErrTooLarge is wrapped by Validate's error when the payload is over its limit; nothing else is
// looked at, so an oversized payload costs no parsing.
var ErrTooLarge = errors.New("message too large")

// MaxMessageBytes is the largest payload of any subject but a dead letter. Real messages are well
// under 2 KiB; the bound keeps a forged one from costing memory, parsing and dead-letter space.
const MaxMessageBytes = 64 << 10

// MaxDeadLetterBytes is the largest dead letter: a payload of up to MaxMessageBytes kept once, which
// JSON escaping can grow sixfold at worst, plus bounded headers and reason. It stays under NATS's
// default 1 MiB max_payload, so a dead letter can always be published.
const MaxDeadLetterBytes = 768 << 10

// MaxBytes is the size limit of the named schema's payloads.
func MaxBytes(name string) int {
	if name == DeadLetter {
		return MaxDeadLetterBytes
	}
	return MaxMessageBytes
}

// FieldError is one schema violation: Field is the JSON path of the
// offending value ("programme", "headers.Nats-Msg-Id.0"; "" for the whole
// document).
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) String() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

// ValidationError is a payload that is JSON but breaks its schema.
type ValidationError struct {
	Schema string
	Errors []FieldError // sorted by field
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		parts[i] = fe.String()
	}
	return e.Schema + ": " + strings.Join(parts, "; ")
}

// ForSubject returns the schema name of subject: exact subjects from the
// contract, and dps.deadletter.<anything> for dead letters.
func ForSubject(subject string) (name string, ok bool) {
	if name, ok := bySubject[subject]; ok {
		return name, true
	}
	if rest, found := strings.CutPrefix(subject, deadLetterPrefix); found && rest != "" &&
		!strings.ContainsAny(rest, "*> \t") && !strings.HasPrefix(rest, ".") && !strings.HasSuffix(rest, ".") &&
		!strings.Contains(rest, "..") {
		return DeadLetter, true
	}
	return "", false
}

// Names returns every schema name, sorted.
func Names() []string {
	names := make([]string, 0, len(compiled().ids))
	for n := range compiled().ids {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Files returns the embedded schema files (<name>.schema.json).
func Files() fs.FS { return files }

// Validate checks payload against the schema of subject. It returns
// ErrUnknownSubject (wrapped) for a subject without a schema, an error
// wrapping ErrTooLarge for a payload over MaxBytes (checked first), one
// wrapping ErrMalformed for bytes that are not one JSON value, and a
// *ValidationError naming each failing field otherwise.
func Validate(subject string, payload []byte) error {
	name, ok := ForSubject(subject)
	if !ok {
		return fmt.Errorf("validate %s: %w", subject, ErrUnknownSubject)
	}
	return ValidateNamed(name, payload)
}

// ValidateNamed checks payload against the named schema.
func ValidateNamed(name string, payload []byte) error {
	sch, ok := compiled().schema(name)
	if !ok {
		return fmt.Errorf("validate: unknown schema %q", name)
	}
	if limit := MaxBytes(name); len(payload) > limit {
		return fmt.Errorf("%s: %w: %d bytes, the limit is %d", name, ErrTooLarge, len(payload), limit)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%s: %w: %v", name, ErrMalformed, err)
	}
	return validateDoc(name, sch, doc)
}

func validateDoc(name string, sch *jsonschema.Schema, doc any) error {
	err := sch.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("%s: %w", name, err)
	}
	var out []FieldError
	collect(ve, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	out = slices.Compact(out)
	return &ValidationError{Schema: name, Errors: out}
}

var printer = message.NewPrinter(language.English)

// collect flattens the error tree to its leaves, phrased so that the field
// comes first and the offending value is not echoed (payloads may one day
// carry something sensitive; reasons end up in logs and dead letters).
func collect(ve *jsonschema.ValidationError, out *[]FieldError) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, out)
		}
		return
	}
	field := strings.Join(ve.InstanceLocation, ".")
	join := func(name string) string {
		if field == "" {
			return name
		}
		return field + "." + name
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, FieldError{join(m), "missing"})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			*out = append(*out, FieldError{join(p), "not allowed"})
		}
	case *kind.Pattern:
		*out = append(*out, FieldError{field, "does not match pattern " + k.Want})
	case *kind.Format:
		*out = append(*out, FieldError{field, "is not a valid " + k.Want})
	case *kind.Type:
		*out = append(*out, FieldError{field, "must be " + strings.Join(k.Want, " or ")})
	case *kind.Enum:
		*out = append(*out, FieldError{field, "is not one of the allowed values"})
	case *kind.MinLength:
		msg := fmt.Sprintf("shorter than %d characters", k.Want)
		if k.Want == 1 {
			msg = "must not be empty"
		}
		*out = append(*out, FieldError{field, msg})
	case *kind.MaxLength:
		*out = append(*out, FieldError{field, fmt.Sprintf("longer than %d characters", k.Want)})
	case *kind.ContentEncoding:
		*out = append(*out, FieldError{field, "is not valid " + k.Want})
	default:
		*out = append(*out, FieldError{field, ve.ErrorKind.LocalizedString(printer)})
	}
}

// compiled holds every embedded schema, each compiled the first time it is needed, with format (and
// content encoding) assertions on: in 2020-12 "format" is only an annotation unless asserted, and we
// want "date-time" and "uuid" enforced. Compiling all ten took 8 ms at the first validation, which a
// one-shot command that needs two of them paid in full.
var compiled = sync.OnceValue(newSchemaSet)

// newSchemaSet adds every embedded schema to a compiler, compiling none.
func newSchemaSet() *schemaSet {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	entries, err := fs.Glob(files, "*.schema.json")
	if err != nil {
		panic(err)
	}
	set := &schemaSet{compiler: c, ids: map[string]string{}, done: map[string]*jsonschema.Schema{}}
	for _, e := range entries {
		b, err := files.ReadFile(e)
		if err != nil {
			panic(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", e, err))
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			panic(fmt.Sprintf("schemas: %s has no $id", e))
		}
		if err := c.AddResource(id, doc); err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", e, err))
		}
		set.ids[strings.TrimSuffix(path.Base(e), ".schema.json")] = id
	}
	return set
}

// schemaSet compiles the embedded schemas on demand. A jsonschema.Compiler is not safe for concurrent
// use: mu guards it and the schemas compiled so far.
type schemaSet struct {
	mu       sync.Mutex
	compiler *jsonschema.Compiler
	ids      map[string]string // schema name → $id
	done     map[string]*jsonschema.Schema
}

// schema is the named schema, compiled; false for a name no file has.
func (s *schemaSet) schema(name string) (*jsonschema.Schema, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch, ok := s.done[name]; ok {
		return sch, true
	}
	id, ok := s.ids[name]
	if !ok {
		return nil, false
	}
	sch, err := s.compiler.Compile(id)
	if err != nil {
		// The files are embedded at build time and covered by tests (TestExamplesValidate compiles each): failing
		// here means a broken build, not bad input.
		panic(fmt.Sprintf("schemas: compile %s: %v", name, err))
	}
	s.done[name] = sch
	return sch, true
}
