package meshsandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Message states, as tracking reports them.
const (
	StatusUploading     = "uploading"
	StatusAccepted      = "accepted"
	StatusAcknowledged  = "acknowledged"
	StatusUndeliverable = "undeliverable"
)

// Message is a snapshot of a message the sandbox holds, without its body.
type Message struct {
	ID              string    `json:"id"`
	From            string    `json:"from"`
	To              string    `json:"to"`
	WorkflowID      string    `json:"workflow_id"`
	FileName        string    `json:"file_name"`
	LocalID         string    `json:"local_id"`
	Subject         string    `json:"subject"`
	MessageType     string    `json:"message_type"` // DATA, or REPORT for one CreateReport made
	LinkedMessageID string    `json:"linked_message_id,omitempty"`
	Status          string    `json:"status"`
	ContentEncoding string    `json:"content_encoding"`
	TotalChunks     int       `json:"total_chunks"`
	ReceivedChunks  int       `json:"received_chunks"`
	Size            int64     `json:"size"`
	CreatedAt       time.Time `json:"created_at"`
	StatusAt        time.Time `json:"status_at"`
}

// message is the sandbox's record of one message. Guarded by Server.mu; chunk
// slices are never modified once stored (a re-sent chunk replaces the slice), so a
// download may write one after releasing the lock.
type message struct {
	seq             uint64
	inboxSeq        uint64 // position in the recipient's inbox, set on acceptance
	id              string
	from, to        *mailbox
	workflowID      string
	fileName        string
	localID         string
	subject         string
	partnerID       string
	checksum        string
	contentType     string
	contentEncoding string
	encrypted       bool
	compressed      bool
	totalChunks     int
	chunks          [][]byte
	sizes           []int64 // bytes received per chunk, kept even when bodies are discarded
	received        []bool
	status          string
	// messageType is "" for a DATA message, messageTypeReport for a report; a report has no chunks,
	// the message it is about in linkedMessageID and its failure in report.
	messageType     string
	linkedMessageID string
	report          *reportEvent
	createdAt       time.Time
	acceptedAt      time.Time
	acknowledgedAt  time.Time
	statusAt        time.Time
}

func (m *message) size() int64 {
	var n int64
	for _, c := range m.sizes {
		n += c
	}
	return n
}

func (m *message) receivedChunks() int {
	n := 0
	for _, ok := range m.received {
		if ok {
			n++
		}
	}
	return n
}

func (m *message) snapshot() Message {
	return Message{
		ID: m.id, From: m.from.ID, To: m.to.ID, WorkflowID: m.workflowID, FileName: m.fileName,
		LocalID: m.localID, Subject: m.subject, MessageType: m.typeName(), LinkedMessageID: m.linkedMessageID, Status: m.status, ContentEncoding: m.contentEncoding,
		TotalChunks: m.totalChunks, ReceivedChunks: m.receivedChunks(), Size: m.size(),
		CreatedAt: m.createdAt, StatusAt: m.statusAt,
	}
}

const messageTypeReport = "REPORT"

// typeName is mex-MessageType.
func (m *message) typeName() string {
	if m.messageType == messageTypeReport {
		return messageTypeReport
	}
	return "DATA"
}

// newMessageID makes an id like the official sandbox's: 32 upper-case hex digits.
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // a version 4 UUID, as uuid4().hex would be
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// accept moves a fully uploaded message into its recipient's inbox. Caller holds s.mu.
func (s *Server) accept(m *message, now time.Time) {
	m.status = StatusAccepted
	m.acceptedAt = now
	m.statusAt = now
	m.to.inboxSeq++
	m.inboxSeq = m.to.inboxSeq
	m.to.inbox = append(m.to.inbox, m)
}

// Messages returns every message sent by or to the mailbox, oldest first.
func (s *Server) Messages(mailboxID string) []Message {
	id := strings.ToUpper(strings.TrimSpace(mailboxID))
	s.mu.Lock()
	defer s.mu.Unlock()
	var found []*message
	for _, m := range s.messages {
		if id == "" || m.from.ID == id || m.to.ID == id {
			found = append(found, m)
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].seq < found[j].seq })
	out := make([]Message, len(found))
	for i, m := range found {
		out[i] = m.snapshot()
	}
	return out
}

// Message returns the message with the id (any case).
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.messages[strings.ToUpper(strings.TrimSpace(id))]
	if !ok {
		return Message{}, false
	}
	return m.snapshot(), true
}

// MarkUndeliverable makes a message undeliverable, as MESH does when the recipient
// has not collected it before it expires: it leaves the inbox and tracking reports
// status "undeliverable" with status code 14. A message already undeliverable is left
// as it is; an acknowledged one cannot become undeliverable.
func (s *Server) MarkUndeliverable(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.messages[strings.ToUpper(strings.TrimSpace(id))]
	if !ok {
		return fmt.Errorf("mark message %s undeliverable: %w", id, ErrNoSuchMessage)
	}
	switch m.status {
	case StatusUndeliverable:
		return nil
	case StatusAcknowledged:
		return fmt.Errorf("mark message %s undeliverable: already acknowledged", id)
	}
	m.status = StatusUndeliverable
	m.statusAt = s.now()
	return nil
}

// ErrNoSuchMessage is returned for a message id the sandbox does not hold.
var ErrNoSuchMessage = errors.New("no such message")
