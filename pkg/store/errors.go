package store

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrorClass says whether a failed database call can succeed if it is tried again.
type ErrorClass int

const (
	// Transient: the server, the connection or contention failed (SQLSTATE classes 08, 40, 53, 55, 57,
	// 58, or no SQLSTATE at all: a network error, a timeout). The same call may succeed later.
	Transient ErrorClass = iota
	// Permanent: the statement was refused for what it carries (SQLSTATE classes 22 data exception, 23
	// integrity constraint violation, 54 program limit exceeded, 2P/42 invalid statement). Retrying the
	// same input fails the same way for ever, so the message that caused it is dead-lettered at once.
	Permanent
)

func (c ErrorClass) String() string {
	if c == Permanent {
		return "permanent"
	}
	return "transient"
}

// DatabaseError is a Postgres error with its class, as Classify decides it.
type DatabaseError struct {
	Class    ErrorClass
	SQLState string // the five-character SQLSTATE; "" when Postgres gave none
	Err      error
}

func (e *DatabaseError) Error() string {
	if e.SQLState == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + " (SQLSTATE " + e.SQLState + ")"
}

func (e *DatabaseError) Unwrap() error { return e.Err }

// Classify decides, once for every caller, whether err (from pgx, wrapped or not) is permanent or
// transient, and returns its SQLSTATE. Anything that is not a Postgres error with a known permanent
// class is transient: it is safer to retry a bug a few times than to dead-letter an outage.
func Classify(err error) (ErrorClass, string) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return Transient, ""
	}
	if len(pgErr.Code) < 2 {
		return Transient, pgErr.Code
	}
	switch pgErr.Code[:2] {
	case "22", // data exception: invalid text (a NUL byte), value out of range, bad date
		"23", // integrity constraint violation: not null, foreign key, unique, check
		"54", // program limit exceeded: a value too large to index
		"2P", // invalid transaction termination
		"42": // syntax error or access rule violation: a statement that can never run
		if pgErr.Code == "42501" {
			// insufficient_privilege: an operator can grant it, and then the same call succeeds.
			return Transient, pgErr.Code
		}
		return Permanent, pgErr.Code
	}
	// 08 connection, 40 serialization/deadlock, 53 insufficient resources, 55 lock not available,
	// 57 operator intervention (shutdown, query cancelled), 58 system error, XX internal, and the rest.
	return Transient, pgErr.Code
}

// IsPermanent reports whether err is a Postgres error no retry can cure, and wraps it as a
// *DatabaseError naming its SQLSTATE when it is.
func IsPermanent(err error) (*DatabaseError, bool) {
	class, state := Classify(err)
	if class != Permanent {
		return nil, false
	}
	return &DatabaseError{Class: class, SQLState: state, Err: err}, true
}
