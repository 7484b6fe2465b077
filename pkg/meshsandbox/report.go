package meshsandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Report messages: what MESH itself puts in a sender's inbox when a message it accepted cannot be
// delivered. They come from no mailbox (the official sandbox names the sender "Central System Mailbox",
// with an empty mailbox id), have no body and no chunks, and are listed, downloaded and acknowledged like
// any other message.

// Report statuses, as the official sandbox's admin create_report takes them.
const (
	ReportStatusUndeliverable = "undeliverable"
	ReportStatusError         = "error"
)

// centralSystem is the sender of every report: not a mailbox anyone can log in to.
var centralSystem = &mailbox{Mailbox: Mailbox{ID: "", Name: "Central System Mailbox", ODSCode: "X26", OrgCode: "X26", OrgName: "NHS England"}}

// ReportRequest is the official sandbox's CreateReportRequest (POST /messageexchange/admin/report).
type ReportRequest struct {
	// MailboxID is the inbox the report goes to.
	MailboxID   string `json:"mailbox_id"`
	Code        string `json:"code"`
	Description string `json:"description"`
	WorkflowID  string `json:"workflow_id"`
	Subject     string `json:"subject,omitempty"`
	LocalID     string `json:"local_id,omitempty"`
	// Status is ReportStatusUndeliverable (the default) or ReportStatusError. As in the official
	// sandbox, only an "error" report carries mex-LinkedMsgID, mex-StatusCode, mex-StatusEvent and
	// mex-StatusDescription on download; an "undeliverable" one says only mex-StatusSuccess: ERROR.
	Status          string `json:"status,omitempty"`
	FileName        string `json:"file_name,omitempty"`
	LinkedMessageID string `json:"linked_message_id,omitempty"`
}

// errNoSuchMailbox is CreateReport's error for an unknown mailbox.
var errNoSuchMailbox = errors.New("mailbox does not exist")

// CreateReport puts a report in req.MailboxID's inbox, as the official sandbox's admin create_report
// does, and returns its message id. It changes nothing about the linked message.
func (s *Server) CreateReport(req ReportRequest) (string, error) {
	if req.Status == "" {
		req.Status = ReportStatusUndeliverable
	}
	if req.Status != ReportStatusUndeliverable && req.Status != ReportStatusError {
		return "", fmt.Errorf("create report: status %q is neither %s nor %s", req.Status, ReportStatusUndeliverable, ReportStatusError)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createReport(req)
}

// createReport is CreateReport with s.mu held.
func (s *Server) createReport(req ReportRequest) (string, error) {
	to, ok := s.mailboxes[strings.ToUpper(strings.TrimSpace(req.MailboxID))]
	if !ok {
		return "", fmt.Errorf("create report for %s: %w", req.MailboxID, errNoSuchMailbox)
	}
	now := s.now()
	m := &message{
		id: newMessageID(), from: centralSystem, to: to, workflowID: req.WorkflowID, fileName: req.FileName,
		localID: req.LocalID, subject: req.Subject, messageType: messageTypeReport,
		linkedMessageID: strings.ToUpper(strings.TrimSpace(req.LinkedMessageID)),
		report:          &reportEvent{status: req.Status, event: "TRANSFER", code: req.Code, description: req.Description},
		createdAt:       now, statusAt: now,
	}
	if m.fileName == "" {
		m.fileName = m.id + ".dat"
	}
	s.seq++
	m.seq = s.seq
	s.messages[m.id] = m
	s.accept(m, now)
	s.log.Info("mesh report created", slog.String("message_id", m.id), slog.String("to", to.ID),
		slog.String("linked_message_id", m.linkedMessageID), slog.String("code", req.Code))
	return m.id, nil
}

// ReportUndelivered does what MESH does when a recipient has not collected a message in time: the
// message becomes undeliverable (tracking shows status code 14) and its sender gets a report in its
// inbox linked to it, carrying its local id, file name and workflow, status code 14 and MESH's
// description. It returns the report's message id. Only an accepted message can go undelivered.
func (s *Server) ReportUndelivered(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.messages[strings.ToUpper(strings.TrimSpace(id))]
	if !ok {
		return "", fmt.Errorf("report message %s undelivered: %w", id, ErrNoSuchMessage)
	}
	if m.messageType == messageTypeReport || m.status != StatusAccepted {
		return "", fmt.Errorf("report message %s undelivered: it is %s, not an accepted data message", id, m.status)
	}
	m.status = StatusUndeliverable
	m.statusAt = s.now()
	return s.createReport(ReportRequest{
		MailboxID: m.from.ID, Code: errUndelivered.code, Description: errUndelivered.msg,
		WorkflowID: m.workflowID, Subject: m.subject, LocalID: m.localID, FileName: m.fileName,
		LinkedMessageID: m.id,
		// The "error" form is the one whose download carries the code and the linked id, as live
		// MESH's non-delivery reports do.
		Status: ReportStatusError,
	})
}

// reportEvent is a report's failure event.
type reportEvent struct {
	status, event, code, description string
}

// serveReportAdmin is POST /messageexchange/admin/report (and /admin/report), the official sandbox's
// create_report: 200 {"message_id": ...}; 404 {"detail": "mailbox does not exist"}; 400 (as every validation error here) when a required
// field is missing.
func (s *Server) serveReportAdmin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, mediaJSON, map[string]string{"detail": "Method Not Allowed"})
		return
	}
	var req ReportRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		failValidation(w, []ValidationError{{Type: "json_invalid", Loc: []string{"body"}, Msg: "JSON decode error: " + err.Error()}})
		return
	}
	var verrs []ValidationError
	for _, f := range []struct{ name, v string }{
		{"mailbox_id", req.MailboxID}, {"code", req.Code}, {"description", req.Description}, {"workflow_id", req.WorkflowID},
	} {
		if f.v == "" {
			verrs = append(verrs, missingField("body", f.name))
		}
	}
	if len(verrs) > 0 {
		failValidation(w, verrs)
		return
	}
	id, err := s.CreateReport(req)
	switch {
	case errors.Is(err, errNoSuchMailbox):
		writeJSON(w, http.StatusNotFound, mediaJSON, map[string]string{"detail": errNoSuchMailbox.Error()})
	case err != nil:
		// The official sandbox asserts the status and so answers 500 for any other.
		failInternal(w, http.StatusInternalServerError)
	default:
		writeJSON(w, http.StatusOK, mediaJSON, map[string]string{"message_id": id})
	}
}

// reportHeaders are the status headers of a report's download, as the official sandbox's
// _get_status_headers makes them. Caller holds s.mu.
func reportHeaders(set func(k, v string), m *message) {
	set("mex-StatusSuccess", "ERROR")
	set("mex-StatusTimestamp", m.acceptedAt.Format("20060102150405"))
	if m.report == nil || m.report.status != ReportStatusError {
		return
	}
	set("mex-LinkedMsgID", m.linkedMessageID)
	set("mex-StatusCode", m.report.code)
	set("mex-StatusEvent", m.report.event)
	set("mex-StatusDescription", m.report.description)
}
