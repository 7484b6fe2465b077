package meshsandbox

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// serveAdmin is the test API, without MESH authentication:
//
//	GET    /admin/messages?mailbox=X             messages sent by or to X (all when no mailbox)
//	GET    /admin/messages/{id}                  one message
//	POST   /admin/messages/{id}/undeliverable    make it undeliverable
//	POST   /admin/messages/{id}/report           make it undeliverable and put a non-delivery report
//	                                             in its sender's inbox (ReportUndelivered)
//	POST   /admin/report                         the official sandbox's create_report (also under
//	                                             /messageexchange/admin/report; see ReportRequest)
//	POST   /admin/faults                         add a Fault (JSON, durations as "250ms")
//	GET    /admin/faults                         the faults in force
//	DELETE /admin/faults                         remove every fault
//	GET    /admin/requests                       requests per route
//	POST   /admin/mailboxes                      add a Mailbox (JSON)
func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/admin/"), "/"), "/")
	fail := func(status int, msg string) {
		writeJSON(w, status, mediaJSON, map[string]string{"error": msg})
	}
	route := r.Method + " " + segs[0]
	switch {
	case route == "GET messages" && len(segs) == 1:
		writeJSON(w, http.StatusOK, mediaJSON, s.Messages(r.URL.Query().Get("mailbox")))
	case route == "GET messages" && len(segs) == 2:
		m, ok := s.Message(segs[1])
		if !ok {
			fail(http.StatusNotFound, "no such message")
			return
		}
		writeJSON(w, http.StatusOK, mediaJSON, m)
	case route == "POST messages" && len(segs) == 3 && segs[2] == "undeliverable":
		if err := s.MarkUndeliverable(segs[1]); err != nil {
			status := http.StatusConflict
			if errors.Is(err, ErrNoSuchMessage) {
				status = http.StatusNotFound
			}
			fail(status, err.Error())
			return
		}
		m, _ := s.Message(segs[1])
		writeJSON(w, http.StatusOK, mediaJSON, m)
	case route == "POST messages" && len(segs) == 3 && segs[2] == "report":
		reportID, err := s.ReportUndelivered(segs[1])
		if err != nil {
			status := http.StatusConflict
			if errors.Is(err, ErrNoSuchMessage) {
				status = http.StatusNotFound
			}
			fail(status, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, mediaJSON, map[string]string{"message_id": reportID, "linked_message_id": strings.ToUpper(segs[1])})
	case route == "POST faults" && len(segs) == 1:
		var f Fault
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&f); err != nil {
			fail(http.StatusBadRequest, "fault: "+err.Error())
			return
		}
		if err := f.validate(); err != nil {
			fail(http.StatusBadRequest, "fault: "+err.Error())
			return
		}
		s.InjectFault(f)
		writeJSON(w, http.StatusCreated, mediaJSON, f)
	case route == "GET faults" && len(segs) == 1:
		writeJSON(w, http.StatusOK, mediaJSON, s.Faults())
	case route == "DELETE faults" && len(segs) == 1:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case route == "GET requests" && len(segs) == 1:
		writeJSON(w, http.StatusOK, mediaJSON, s.requestCounts())
	case route == "POST mailboxes" && len(segs) == 1:
		var m Mailbox
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&m); err != nil || strings.TrimSpace(m.ID) == "" {
			fail(http.StatusBadRequest, "mailbox: needs at least an id")
			return
		}
		s.AddMailbox(m)
		w.WriteHeader(http.StatusCreated)
	default:
		fail(http.StatusNotFound, "no such admin endpoint")
	}
}
