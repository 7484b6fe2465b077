package meshsandbox

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// sendHeader is a send header with the limits the official sandbox validates.
type sendHeader struct {
	name     string
	required bool
	maxLen   int
}

var sendHeaders = []sendHeader{
	{"mex-To", true, 100},
	{"mex-WorkflowID", true, 300},
	{"mex-Chunk-Range", false, 20},
	{"mex-Subject", false, 500},
	{"mex-LocalID", false, 300},
	{"mex-PartnerID", false, 500},
	{"mex-FileName", false, 300},
	{"mex-Content-Encrypted", false, 20},
	{"mex-Content-Compressed", false, 20},
	{"mex-Content-Checksum", false, 100},
	{"mex-Content-Type", false, 100},
}

var (
	controlChars = regexp.MustCompile(`[\x00-\x1f]`)
	urlPrefix    = regexp.MustCompile(`(?i)^https?://`)
)

// header returns a request header and whether it was sent at all.
func header(r *http.Request, name string) (string, bool) {
	v, ok := r.Header[http.CanonicalHeaderKey(name)]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "y", "yes", "t", "true", "on", "1":
		return true
	}
	return false
}

func contentEncoding(r *http.Request) string {
	return strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
}

// validateSendHeaders returns FastAPI's validation errors for the send headers, or
// writes a 400 MalformedControlFile / Invalid checksum itself (ok false) as the
// official sandbox does once the headers are present.
func (c *call) validateSendHeaders() (errs []ValidationError, ok bool) {
	for _, h := range sendHeaders {
		v, present := header(c.r, h.name)
		switch {
		case !present && h.required:
			errs = append(errs, missingField("header", strings.ToLower(h.name)))
		case utf8.RuneCountInString(v) > h.maxLen:
			errs = append(errs, tooLong("header", strings.ToLower(h.name), v, h.maxLen))
		}
	}
	if len(errs) > 0 {
		return errs, true
	}
	for _, h := range sendHeaders {
		if v, _ := header(c.r, h.name); controlChars.MatchString(v) {
			c.fail(http.StatusBadRequest, errMalformedControl, "")
			return nil, false
		}
	}
	for _, name := range []string{"mex-To", "mex-WorkflowID", "mex-Content-Checksum"} {
		if v, _ := header(c.r, name); urlPrefix.MatchString(strings.TrimSpace(v)) {
			c.fail(http.StatusBadRequest, errMalformedControl, "")
			return nil, false
		}
	}
	if sum := strings.TrimSpace(c.r.Header.Get("mex-Content-Checksum")); sum != "" {
		for _, r := range sum {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" \t\n\r\v\f:-/", r)) {
				c.fail(http.StatusBadRequest, errInvalidChecksum, "")
				return nil, false
			}
		}
	}
	return nil, true
}

// parseChunkRange reads mex-Chunk-Range for the request of chunk number n and
// returns the total, or ok false when the header does not fit the URL.
func parseChunkRange(v string, n int) (total int, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 1, n == 1
	}
	parts := strings.Split(v, ":")
	if len(parts) != 2 {
		return 0, false
	}
	no, err1 := strconv.Atoi(strings.TrimSpace(parts[0]))
	total, err2 := strconv.Atoi(strings.TrimSpace(parts[1]))
	if err1 != nil || err2 != nil || no <= 0 || no > total || no != n {
		return 0, false
	}
	return total, true
}

// readBody reads a request body of at most MaxChunkBytes into one exactly sized
// buffer when the length is known (or only counts it with DiscardBodies). ok false
// means a response was written.
func (s *Server) readBody(c *call) (b []byte, size int64, ok bool) {
	limit := s.cfg.MaxChunkBytes
	if c.r.ContentLength > limit {
		c.fail(http.StatusRequestEntityTooLarge, statusErr(http.StatusRequestEntityTooLarge), "")
		return nil, 0, false
	}
	body := http.MaxBytesReader(c.w, c.r.Body, limit)
	var err error
	switch {
	case s.cfg.DiscardBodies:
		size, err = io.Copy(io.Discard, body)
	case c.r.ContentLength >= 0:
		b = make([]byte, c.r.ContentLength)
		_, err = io.ReadFull(body, b)
	default:
		b, err = io.ReadAll(body)
	}
	if size == 0 {
		size = int64(len(b))
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			c.fail(http.StatusRequestEntityTooLarge, statusErr(http.StatusRequestEntityTooLarge), "")
			return nil, 0, false
		}
		s.log.Warn("mesh request body unreadable", slog.String("route", c.route.name), slog.Any("error", err))
		// The client has gone or sent less than it said; nobody reads this answer.
		c.w.WriteHeader(http.StatusBadRequest)
		return nil, 0, false
	}
	return b, size, true
}

// storeChunk keeps chunk n (1-based). Caller holds s.mu or owns m.
func (m *message) storeChunk(n int, body []byte, size int64) {
	m.chunks[n-1], m.sizes[n-1], m.received[n-1] = body, size, true
}

// send is POST /messageexchange/{mb}/outbox: a whole message or its first chunk.
func (s *Server) send(c *call) {
	verrs, ok := c.validateSendHeaders()
	if !ok {
		return
	}
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	if len(verrs) > 0 {
		failValidation(c.w, verrs)
		return
	}
	r := c.r
	to := strings.ToUpper(strings.TrimSpace(r.Header.Get("mex-To")))
	if to == "" {
		c.fail(http.StatusBadRequest, errMissingTo, "")
		return
	}
	encoding := contentEncoding(r)
	if encoding != "" && encoding != "gzip" {
		c.fail(http.StatusUnprocessableEntity, errUnsupportedEncoding, "")
		return
	}
	total, ok := parseChunkRange(r.Header.Get("mex-Chunk-Range"), 1)
	if !ok {
		c.fail(http.StatusExpectationFailed, errInvalidChunks, "")
		return
	}
	workflow := strings.TrimSpace(r.Header.Get("mex-WorkflowID"))
	recipient, ok := s.lookupMailbox(to)
	if !ok {
		c.fail(http.StatusExpectationFailed, errUnregisteredTo, "")
		return
	}
	if s.cfg.CheckWorkflows && !slices.Contains(recipient.Workflows, workflow) {
		c.fail(http.StatusForbidden, errWorkflowNotAllowed, "")
		return
	}
	body, size, ok := s.readBody(c)
	if !ok {
		return
	}
	if size == 0 {
		c.fail(http.StatusExpectationFailed, errMissingDataFile, "")
		return
	}

	now := s.now()
	contentType := r.Header.Get("mex-Content-Type")
	if contentType == "" {
		contentType = strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Type")))
	}
	m := &message{
		id:              newMessageID(),
		workflowID:      workflow,
		fileName:        r.Header.Get("mex-FileName"),
		localID:         r.Header.Get("mex-LocalID"),
		subject:         r.Header.Get("mex-Subject"),
		partnerID:       r.Header.Get("mex-PartnerID"),
		checksum:        r.Header.Get("mex-Content-Checksum"),
		contentType:     contentType,
		contentEncoding: encoding,
		encrypted:       truthy(r.Header.Get("mex-Content-Encrypted")),
		compressed:      truthy(r.Header.Get("mex-Content-Compressed")),
		totalChunks:     total,
		chunks:          make([][]byte, total),
		received:        make([]bool, total),
		status:          StatusUploading,
		createdAt:       now,
		statusAt:        now,
	}
	if m.fileName == "" {
		m.fileName = m.id + ".dat"
	}
	m.sizes = make([]int64, total)
	m.storeChunk(1, body, size)

	s.mu.Lock()
	m.from, m.to = s.mailboxes[c.mailbox.ID], s.mailboxes[recipient.ID]
	if m.from == nil || m.to == nil { // removed meanwhile: cannot happen, mailboxes are only added
		s.mu.Unlock()
		failInternal(c.w, http.StatusInternalServerError)
		return
	}
	s.seq++
	m.seq = s.seq
	s.messages[m.id] = m
	m.from.outbox = append(m.from.outbox, m)
	if m.localID != "" {
		m.from.localIDs[m.localID] = append(m.from.localIDs[m.localID], m)
	}
	if total == 1 {
		s.accept(m, now)
	}
	s.mu.Unlock()

	s.log.Info("mesh message received", slog.String("message_id", m.id), slog.String("from", c.mailbox.ID),
		slog.String("to", recipient.ID), slog.String("workflow_id", workflow), slog.Int("total_chunks", total))
	if version < 2 {
		writeJSON(c.w, http.StatusAccepted, mediaJSON, map[string]string{"messageID": m.id})
		return
	}
	writeJSON(c.w, http.StatusAccepted, mediaJSON, map[string]string{"message_id": m.id})
}

// sendChunk is POST /messageexchange/{mb}/outbox/{message_id}/{n}.
func (s *Server) sendChunk(c *call) {
	id := strings.ToUpper(c.route.params[0])
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	rangeHeader, _ := header(c.r, "mex-Chunk-Range")
	var verrs []ValidationError
	if utf8.RuneCountInString(rangeHeader) > 20 {
		verrs = append(verrs, tooLong("header", "mex-chunk-range", rangeHeader, 20))
	}
	n, verr := parseIntParam("path", "chunk_number", c.route.params[1], nil, nil)
	if verr != nil {
		verrs = append(verrs, *verr)
	}
	if len(verrs) > 0 {
		failValidation(c.w, verrs)
		return
	}
	if strings.TrimSpace(rangeHeader) == "" {
		c.fail(http.StatusExpectationFailed, errInvalidChunks, id)
		return
	}
	if _, ok := parseChunkRange(rangeHeader, n); !ok {
		c.fail(http.StatusExpectationFailed, errInvalidChunks, id)
		return
	}
	encoding := contentEncoding(c.r)
	if status := s.checkChunkUpload(c, id, n, encoding); status != 0 {
		return
	}
	body, size, ok := s.readBody(c)
	if !ok {
		return
	}

	s.mu.Lock()
	m := s.messages[id]
	if m.status != StatusUploading { // completed by a concurrent request
		s.mu.Unlock()
		failInternal(c.w, http.StatusLocked)
		return
	}
	m.storeChunk(n, body, size)
	if n == m.totalChunks {
		s.accept(m, s.now())
	}
	s.mu.Unlock()

	if version < 2 {
		writeJSON(c.w, http.StatusAccepted, mediaJSON, struct {
			MessageID string `json:"messageID"`
			BlockID   int    `json:"blockID"`
		}{id, n})
		return
	}
	writeJSON(c.w, http.StatusAccepted, mediaJSON, nil)
}

// checkChunkUpload makes the official sandbox's checks on a later chunk, in its
// order, writing the error and returning its status when one fails.
func (s *Server) checkChunkUpload(c *call, id string, n int, encoding string) int {
	s.mu.Lock()
	m, found := s.messages[id]
	var sender, status, wasEncoding string
	var total int
	if found {
		sender, status, total, wasEncoding = m.from.ID, m.status, m.totalChunks, m.contentEncoding
	}
	s.mu.Unlock()
	switch {
	case !found:
		c.fail(http.StatusNotFound, statusErr(http.StatusNotFound), "")
		return http.StatusNotFound
	case sender != c.mailbox.ID:
		c.fail(http.StatusForbidden, statusErr(http.StatusForbidden), "")
		return http.StatusForbidden
	case status != StatusUploading:
		failInternal(c.w, http.StatusLocked)
		return http.StatusLocked
	case n > total:
		failInternal(c.w, http.StatusNotAcceptable)
		return http.StatusNotAcceptable
	case encoding != wasEncoding:
		c.fail(http.StatusExpectationFailed, errEncodingChanged, id)
		return http.StatusExpectationFailed
	}
	return 0
}
