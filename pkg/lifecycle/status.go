// Package lifecycle owns an export's status in dps_exports: the statuses (Status, defined here once),
// which transitions are allowed (Allowed), the SQL that makes each transition (a compare-and-set from
// the statuses it may start from, with the transition's event enqueued through pkg/outbox in the same
// transaction), and the release of a failed export's records. Every other package reads and changes a
// status through it: status literals appear only here and in the migration's CHECK constraint.
//
// It must not decide when a transition happens (the sender, tracker and producer do), call MESH or
// NATS, or publish an event itself: events go into the outbox and the relay publishes them after commit.
//
// # Adding a status
//
//  1. Add the constant to the Status list, its name to statusNames (the name is what dps_exports
//     holds and what JSON and metrics show) and the column recording when an export entered it to
//     timeColumns (what `tracker exports` lists and the export age metrics measure from).
//  2. Say where it may be entered from in allowed, and, in Status.Released, whether entering it gives
//     the export's records back to the queue (as Failed does): the candidate query then ignores such
//     exports through LiveCondition.
//  3. Add a migration that widens dps_exports' CHECK (never edit one already on main).
//  4. Write its transition on the pattern of MarkAcknowledged: one UPDATE … WHERE id = $1 AND status =
//     ANY(from) RETURNING, "changed = false" when no row matched (another replica got there first), then
//     outbox.Enqueue of its event in the same transaction, and Release if Released says so.
//
// Tests in lifecycle_test.go check that every status round-trips through String, JSON and Postgres, and
// that the CHECK constraint and this list agree.
package lifecycle

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Status is an export's status, as dps_exports.status holds it. The zero value is no status at all
// and is refused wherever a status is read or written.
type Status int

// Statuses, in the order an export goes through them.
const (
	// Created: the file is built and dps.export.ready is queued; the sender has not handed it to MESH.
	Created Status = iota + 1
	// Accepted: MESH accepted the file (its message id is recorded); the tracker follows it.
	Accepted
	// Acknowledged: DPS downloaded the file (MESH tracking says acknowledged, or a reply from the
	// receiver proves it). Final where the receiver sends nothing back, but for a forced re-send.
	Acknowledged
	// Received: the receiver's InfAck says the file passed its file-level checks.
	Received
	// Processed: the receiver's BusAck has said, record by record, what it took; each record's outcome
	// is on its dps_export_records link. Final.
	Processed
	// Failed: the export will never reach DPS (MESH refused it, or reported it undelivered); its records
	// were released for the next export. Final.
	Failed
	// Rejected: the receiver's InfAck refused the whole file; its records were released. Final.
	Rejected
)

var statusNames = [...]string{
	Created:      "created",
	Accepted:     "accepted",
	Acknowledged: "acknowledged",
	Failed:       "failed",
	Received:     "received",
	Processed:    "processed",
	Rejected:     "rejected",
}

// timeColumns are the dps_exports columns recording when an export entered each status.
var timeColumns = [...]string{
	Created:      "created_at",
	Accepted:     "sent_at",
	Acknowledged: "acknowledged_at",
	Received:     "received_at",
	Processed:    "processed_at",
	Failed:       "failed_at",
	Rejected:     "rejected_at",
}

// TimeColumn is the dps_exports column that records when an export entered the status ("sent_at" for
// Accepted), for the listings and metrics that show an export's lifecycle. It is a constant of this
// package, safe to put in a query's text.
func (s Status) TimeColumn() string {
	if s.valid() && int(s) < len(timeColumns) && timeColumns[s] != "" {
		return timeColumns[s]
	}
	return "created_at"
}

// allowed lists, for each status, the statuses it may be entered from.
var allowed = map[Status][]Status{
	// A forced re-send (sender replay --force) moves an accepted or acknowledged export back to accepted
	// with its new message id.
	Accepted:     {Created, Accepted, Acknowledged},
	Acknowledged: {Accepted},
	// A MESH non-delivery report may arrive at any point before the receiver has processed the file.
	Failed:    {Created, Accepted, Acknowledged, Received},
	Received:  {Acknowledged},
	Processed: {Accepted, Acknowledged, Received},
	Rejected:  {Accepted, Acknowledged},
}

// All returns every status, in lifecycle order.
func All() []Status {
	out := make([]Status, 0, len(statusNames)-1)
	for s := Created; int(s) < len(statusNames); s++ {
		out = append(out, s)
	}
	return out
}

// Parse returns the status named s ("accepted").
func Parse(s string) (Status, error) {
	for _, st := range All() {
		if statusNames[st] == s {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown export status %q", s)
}

// String is the status's name: "created", "accepted", …
func (s Status) String() string {
	if s.valid() {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

func (s Status) valid() bool { return s > 0 && int(s) < len(statusNames) }

// Allowed reports whether an export in status from may move to status to.
func Allowed(from, to Status) bool {
	for _, f := range allowed[to] {
		if f == from {
			return true
		}
	}
	return false
}

// Released reports whether an export in this status has given its records back to the queue: the next
// export decides them afresh, ignoring this export's carriage.
func (s Status) Released() bool { return s == Failed || s == Rejected }

// Final reports whether no transition leaves the status in normal running (a forced re-send aside).
// Acknowledged counts as final because a receiver that sends nothing back leaves an export there.
func (s Status) Final() bool {
	return s == Acknowledged || s == Failed || s == Processed || s == Rejected
}

// SQL is the status as an SQL string literal, for the few queries that need it constant in their text
// (so that the planner can match a partial index); everywhere else pass the Status as a parameter.
func (s Status) SQL() string { return "'" + s.String() + "'" }

// LiveCondition is an SQL condition on dps_exports (aliased e) that holds for an export whose records are
// still carried by it, i.e. not released; the candidate query uses it to find a record's last carriage.
func LiveCondition(alias string) string {
	var released []string
	for _, s := range All() {
		if s.Released() {
			released = append(released, s.SQL())
		}
	}
	if len(released) == 1 {
		return alias + ".status <> " + released[0]
	}
	return alias + ".status NOT IN (" + strings.Join(released, ", ") + ")"
}

// MarshalText and UnmarshalText make a Status a JSON string and a readable log attribute.
func (s Status) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("marshal export status: %v is not a status", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses a status name.
func (s *Status) UnmarshalText(b []byte) error {
	st, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = st
	return nil
}

// MarshalJSON is the status's name as a JSON string.
func (s Status) MarshalJSON() ([]byte, error) {
	b, err := s.MarshalText()
	if err != nil {
		return nil, err
	}
	return json.Marshal(string(b))
}

// UnmarshalJSON reads a status name; anything else is an error.
func (s *Status) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err != nil {
		return fmt.Errorf("export status: %w", err)
	}
	return s.UnmarshalText([]byte(name))
}

// ScanText lets pgx scan dps_exports.status into a Status, refusing a name this code does not know.
func (s *Status) ScanText(v pgtype.Text) error {
	if !v.Valid {
		return fmt.Errorf("export status is NULL")
	}
	return s.UnmarshalText([]byte(v.String))
}

// TextValue lets pgx write a Status as its name.
func (s Status) TextValue() (pgtype.Text, error) {
	if !s.valid() {
		return pgtype.Text{}, fmt.Errorf("write export status: %v is not a status", s)
	}
	return pgtype.Text{String: s.String(), Valid: true}, nil
}

// Names is statuses as the text[] a query's "status = ANY($n)" takes.
func Names(statuses []Status) []string {
	out := make([]string, len(statuses))
	for i, s := range statuses {
		out[i] = s.String()
	}
	return out
}
