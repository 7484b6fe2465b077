package bus

import (
	"fmt"
	"time"
)

// The payload of each subject. JSON tags match /schemas/<name>.schema.json
// exactly; ids are UUID text. A zero time marshals as a valid date-time, so
// set every time you mean.

// ExportRequest is published on dps.export.request (Nats-Msg-Id: RequestID).
type ExportRequest struct {
	RequestID   string    `json:"request_id"`
	Programme   string    `json:"programme"` // a programme code, or ProgrammeAll
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	DryRun      bool      `json:"dry_run,omitempty"`
}

// ProgrammeAll in an ExportRequest means every programme.
const ProgrammeAll = "ALL"

// ExportReady is published on dps.export.ready (Nats-Msg-Id: ExportID).
type ExportReady struct {
	ExportID   string    `json:"export_id"`
	Programme  string    `json:"programme"`
	Filename   string    `json:"filename"`
	ObjectName string    `json:"object_name"`
	SizeBytes  int64     `json:"size_bytes"`
	SHA256     string    `json:"sha256"` // lower-case hex
	Rows       int64     `json:"rows"`
	CreatedAt  time.Time `json:"created_at"`
	RequestID  string    `json:"request_id,omitempty"`
}

// ExportCreated is published on dps.export.created (Nats-Msg-Id: EventMsgID(EventCreated, ExportID)).
type ExportCreated struct {
	EventID   string    `json:"event_id"`
	ExportID  string    `json:"export_id"`
	Programme string    `json:"programme"`
	Filename  string    `json:"filename"`
	Rows      int64     `json:"rows"`
	SizeBytes int64     `json:"size_bytes"`
	SHA256    string    `json:"sha256"`
	RequestID string    `json:"request_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// ExportSent is published on dps.export.sent (Nats-Msg-Id: EventMsgID(EventSent, ExportID)).
type ExportSent struct {
	EventID       string    `json:"event_id"`
	ExportID      string    `json:"export_id"`
	Programme     string    `json:"programme"`
	Filename      string    `json:"filename"`
	MeshMessageID string    `json:"mesh_message_id"`
	LocalID       string    `json:"local_id"` // <export id>.<attempt>
	Attempt       int       `json:"attempt"`
	Adopted       bool      `json:"adopted"` // taken over from an earlier attempt after a crash
	SentAt        time.Time `json:"sent_at"`
}

// ExportAcknowledged is published on dps.export.acknowledged (Nats-Msg-Id: EventMsgID(EventAcknowledged, ExportID)).
type ExportAcknowledged struct {
	EventID        string    `json:"event_id"`
	ExportID       string    `json:"export_id"`
	Programme      string    `json:"programme"`
	MeshMessageID  string    `json:"mesh_message_id"`
	AcknowledgedAt time.Time `json:"acknowledged_at"`
}

// ExportFailed is published on dps.export.failed (Nats-Msg-Id: EventMsgID(EventFailed, ExportID)).
type ExportFailed struct {
	EventID       string `json:"event_id"`
	ExportID      string `json:"export_id"`
	Programme     string `json:"programme"`
	Stage         string `json:"stage"` // producer, sender or tracker
	Reason        string `json:"reason"`
	MeshStatus    int    `json:"mesh_status,omitempty"`
	MeshErrorCode string `json:"mesh_error_code,omitempty"`
	// Status is StatusRejected when the receiver refused the whole file (InfAck Failure), else empty
	// or "failed".
	Status string `json:"status,omitempty"`
	// ReceiverCode and ReceiverDisplay are the InfAck's RESPONSE_CODE and RESPONSE_DISPLAY.
	ReceiverCode    string    `json:"receiver_code,omitempty"`
	ReceiverDisplay string    `json:"receiver_display,omitempty"`
	FailedAt        time.Time `json:"failed_at"`
}

// ExportReceived is published on dps.export.received (Nats-Msg-Id: EventMsgID(EventReceived, ExportID))
// when the receiver's InfAck says the file passed its checks.
type ExportReceived struct {
	EventID         string    `json:"event_id"`
	ExportID        string    `json:"export_id"`
	Programme       string    `json:"programme"`
	Filename        string    `json:"filename"`
	ReceiverCode    string    `json:"receiver_code"`
	InfAckMessageID string    `json:"infack_message_id"`
	ReceivedAt      time.Time `json:"received_at"`
}

// ExportProcessed is published on dps.export.processed (Nats-Msg-Id: EventMsgID(EventProcessed,
// ExportID)) when the receiver's BusAck has said, row by row, what it took.
type ExportProcessed struct {
	EventID         string `json:"event_id"`
	ExportID        string `json:"export_id"`
	Programme       string `json:"programme"`
	Filename        string `json:"filename"`
	BusAckMessageID string `json:"busack_message_id"`
	RowsSent        int    `json:"rows_sent"`
	RowsAccepted    int    `json:"rows_accepted"`
	RowsRefused     int    `json:"rows_refused"`
	// Refused lists each refused record (at most MaxRefusedListed; RefusedTruncated says when more
	// were refused than listed).
	Refused          []RefusedRecord `json:"refused"`
	RefusedTruncated bool            `json:"refused_truncated,omitempty"`
	ProcessedAt      time.Time       `json:"processed_at"`
}

// RefusedRecord is one record the receiver refused: its UUID and the receiver's diagnostic, with any
// patient identifier masked. Never a name, NHS number or date of birth.
type RefusedRecord struct {
	RecordUUID   string `json:"record_uuid"`
	ResponseCode string `json:"response_code,omitempty"`
	Diagnostic   string `json:"diagnostic"`
}

// Limits that keep dps.export.processed within a NATS message whatever the BusAck holds.
const (
	MaxRefusedListed    = 1000
	MaxDiagnosticLength = 500
)

// MailboxValidated is published on mesh.mailbox.validated (Nats-Msg-Id: ValidatedMsgID).
type MailboxValidated struct {
	EventID     string    `json:"event_id"`
	Mailbox     string    `json:"mailbox"`
	Result      string    `json:"result"` // "ok" or "failed"
	Error       string    `json:"error,omitempty"`
	ValidatedAt time.Time `json:"validated_at"`
}

// DeadLetterMessage is published on dps.deadletter.<stage> by DeadLetter.
type DeadLetterMessage struct {
	Stage            string              `json:"stage"`
	Subject          string              `json:"subject"`
	Reason           string              `json:"reason"`
	Payload          string              `json:"payload"`                  // the payload when it is valid UTF-8
	PayloadBase64    string              `json:"payload_base64,omitempty"` // the payload when it is not
	PayloadSize      int                 `json:"payload_size"`             // of the original, truncated or not
	PayloadSHA256    string              `json:"payload_sha256,omitempty"` // of the whole original
	PayloadTruncated bool                `json:"payload_truncated,omitempty"`
	Headers          map[string][]string `json:"headers"`
	HeadersTruncated bool                `json:"headers_truncated,omitempty"`
	Stream           string              `json:"stream"`
	StreamSeq        uint64              `json:"stream_seq"`
	Deliveries       uint64              `json:"deliveries"`
	DeadLetteredAt   time.Time           `json:"dead_lettered_at"`
}

// Lifecycle event names used in Nats-Msg-Ids.
const (
	EventCreated      = "created"
	EventSent         = "sent"
	EventAcknowledged = "acknowledged"
	EventFailed       = "failed"
	EventReceived     = "received"
	EventProcessed    = "processed"
)

// Export statuses a lifecycle event may name.
const (
	StatusFailed   = "failed"
	StatusRejected = "rejected"
)

// EventMsgID is the Nats-Msg-Id of a lifecycle event: "<event>:<export id>",
// so each transition of an export is stored once.
func EventMsgID(event, exportID string) string { return event + ":" + exportID }

// ValidatedMsgID is the Nats-Msg-Id of a handshake event:
// "validated:<mailbox>:<unix minute>".
func ValidatedMsgID(mailbox string, at time.Time) string {
	return fmt.Sprintf("validated:%s:%d", mailbox, at.Unix()/60)
}

// DeadLetterMsgID is the Nats-Msg-Id of a dead letter: "<stage>:<stream>:<seq>".
func DeadLetterMsgID(stage, stream string, seq uint64) string {
	return fmt.Sprintf("%s:%s:%d", stage, stream, seq)
}
