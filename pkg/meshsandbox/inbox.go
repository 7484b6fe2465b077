package meshsandbox

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

const defaultMaxResults = 500

// cursor is what links.next's continue_from carries: the inbox position of the last
// message listed. Continuing by position, not by looking the id up again, keeps
// paging right when messages are acknowledged between pages, as the live service does.
type cursor struct {
	MessageID string `json:"message_id"`
	Position  uint64 `json:"position"`
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.URLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, bool) {
	b, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, false
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.MessageID == "" {
		return cursor{}, false
	}
	return c, true
}

// workflowFilter builds the inbox workflow_filter predicate: =ID, =!ID, =PREFIX*,
// =!PREFIX*, =*PART*, =!*PART*.
func workflowFilter(f string) func(string) bool {
	f = strings.TrimSpace(f)
	if f == "" {
		return nil
	}
	not := strings.HasPrefix(f, "!")
	if not {
		f = f[1:]
	}
	contains := strings.HasPrefix(f, "*")
	if contains {
		f = strings.TrimPrefix(f, "*")
		if len(f) > 0 {
			f = f[:len(f)-1]
		}
	}
	begins := strings.HasSuffix(f, "*")
	if begins {
		f = f[:len(f)-1]
	}
	switch {
	case !contains && !begins:
		return func(w string) bool { return (w == f) != not }
	case begins:
		return func(w string) bool { return strings.HasPrefix(w, f) != not }
	default:
		return func(w string) bool { return strings.Contains(w, f) != not }
	}
}

type inboxV2 struct {
	Messages         []string   `json:"messages"`
	Links            inboxLinks `json:"links"`
	ApproxInboxCount int        `json:"approx_inbox_count"`
}

type inboxLinks struct {
	Self string `json:"self"`
	Next string `json:"next,omitempty"`
}

// listInbox is GET /messageexchange/{mb}/inbox: accepted messages, oldest first.
func (s *Server) listInbox(c *call) {
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	q := c.r.URL.Query()
	var verrs []ValidationError
	maxResults := defaultMaxResults
	if q.Has("max_results") {
		lo, hi := 10, 5000
		n, verr := parseIntParam("query", "max_results", q.Get("max_results"), &lo, &hi)
		if verr != nil {
			verrs = append(verrs, *verr)
		}
		maxResults = n
	}
	continueFrom := q.Get("continue_from")
	if q.Has("continue_from") {
		if n := utf8.RuneCountInString(continueFrom); n < 24 {
			verrs = append(verrs, tooShort("query", "continue_from", continueFrom, 24))
		} else if n > 1000 {
			verrs = append(verrs, tooLong("query", "continue_from", continueFrom, 1000))
		}
	}
	filterArg := q.Get("workflow_filter")
	if q.Has("workflow_filter") {
		if n := utf8.RuneCountInString(filterArg); n < 2 {
			verrs = append(verrs, tooShort("query", "workflow_filter", filterArg, 2))
		} else if n > 255 {
			verrs = append(verrs, tooLong("query", "workflow_filter", filterArg, 255))
		}
	}
	if len(verrs) > 0 {
		failValidation(c.w, verrs)
		return
	}
	after := uint64(0)
	if continueFrom != "" {
		if version < 2 { // v1 clients continue from a message id
			s.mu.Lock()
			if m, ok := s.messages[strings.ToUpper(continueFrom)]; ok && m.to.ID == c.mailbox.ID {
				after = m.inboxSeq
			}
			s.mu.Unlock()
		} else {
			cur, ok := decodeCursor(continueFrom)
			if !ok {
				failValidation(c.w, []ValidationError{{Type: "value_error", Loc: []string{"query", "continue_from"},
					Msg: "Value error, continue_from is not one this server gave", Input: continueFrom}})
				return
			}
			after = cur.Position
		}
	}
	keep := workflowFilter(filterArg)

	var ids []string
	var last *message
	more := false
	count := 0
	s.mu.Lock()
	for _, m := range s.mailboxes[c.mailbox.ID].inbox {
		if m.status != StatusAccepted {
			continue
		}
		count++
		if m.inboxSeq <= after || (keep != nil && !keep(m.workflowID)) {
			continue
		}
		if len(ids) == maxResults {
			more = true
			continue
		}
		ids = append(ids, m.id)
		last = m
	}
	s.mu.Unlock()
	if ids == nil {
		ids = []string{}
	}

	if version < 2 {
		writeJSON(c.w, http.StatusOK, mediaJSON, map[string]any{"messages": ids})
		return
	}
	base := "/messageexchange/" + c.mailbox.ID + "/inbox"
	var args []string
	if maxResults != defaultMaxResults {
		args = append(args, "max_results="+strconv.Itoa(maxResults))
	}
	if filterArg != "" {
		args = append(args, "workflow_filter="+url.QueryEscape(filterArg))
	}
	links := inboxLinks{Self: withQuery(base, args)}
	if more {
		next := append(args, "continue_from="+url.QueryEscape(encodeCursor(cursor{MessageID: last.id, Position: last.inboxSeq})))
		links.Next = withQuery(base, next)
	}
	writeJSON(c.w, http.StatusOK, mediaMESHv2, inboxV2{Messages: ids, Links: links, ApproxInboxCount: count})
}

func withQuery(path string, args []string) string {
	if len(args) == 0 {
		return path
	}
	return path + "?" + strings.Join(args, "&")
}

// count is the deprecated GET /messageexchange/{mb}/count.
func (s *Server) count(c *call) {
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	n := 0
	s.mu.Lock()
	for _, m := range s.mailboxes[c.mailbox.ID].inbox {
		if m.status == StatusAccepted {
			n++
		}
	}
	s.mu.Unlock()
	if version < 2 {
		writeJSON(c.w, http.StatusOK, mediaJSON, struct {
			Count              int    `json:"count"`
			InternalID         string `json:"internalID"`
			AllResultsIncluded bool   `json:"allResultsIncluded"`
		}{n, strings.ToLower(newMessageID()), true})
		return
	}
	writeJSON(c.w, http.StatusOK, mediaJSON, map[string]int{"count": n})
}

// downloadHeaders are the mex-* headers of a download, empty ones left out as the
// official sandbox does. Caller holds s.mu.
func downloadHeaders(h http.Header, m *message, chunk int) {
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	yes := func(b bool) string {
		if b {
			return "Y"
		}
		return ""
	}
	statusAt := m.acceptedAt
	set("mex-From", m.from.ID)
	set("mex-To", m.to.ID)
	set("mex-WorkflowID", m.workflowID)
	report := m.messageType == messageTypeReport
	set("mex-Chunk-Range", strconv.Itoa(chunk)+":"+strconv.Itoa(m.totalChunks))
	set("mex-Total-Chunks", strconv.Itoa(m.totalChunks))
	set("mex-AddressType", "ALL")
	set("mex-LocalID", m.localID)
	set("mex-PartnerID", m.partnerID)
	set("mex-FileName", m.fileName)
	set("mex-Subject", m.subject)
	set("mex-Version", "1.0")
	set("mex-MessageType", m.typeName())
	set("mex-MessageID", m.id)
	if report {
		// A report has no Content-Encoding, and says what went wrong with the message it is about.
		reportHeaders(set, m)
	} else {
		set("Content-Encoding", m.contentEncoding)
		set("mex-StatusCode", "00")
		set("mex-StatusEvent", "TRANSFER")
		set("mex-StatusDescription", "Transferred to recipient mailbox")
		set("mex-StatusSuccess", "SUCCESS")
		set("mex-StatusTimestamp", statusAt.Format("20060102150405"))
	}
	set("mex-Content-Compressed", yes(m.compressed))
	set("mex-Content-Encrypted", yes(m.encrypted))
	set("mex-Content-Checksum", m.checksum)
	set("mex-Content-Type", m.contentType)
	// The official sandbox formats with strftime %Z, which names UTC "UTC".
	set("Last-Modified", m.statusAt.UTC().Format("Mon, 02 Jan 2006 15:04:05")+" UTC")
}

// download is GET /messageexchange/{mb}/inbox/{id}[/{n}]: 200 for a whole message or
// its last chunk, 206 for an earlier chunk.
func (s *Server) download(c *call) {
	id := strings.ToUpper(c.route.params[0])
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	n := 1
	if len(c.route.params) == 2 {
		one := 1
		var verr *ValidationError
		if n, verr = parseIntParam("path", "chunk_number", c.route.params[1], &one, nil); verr != nil {
			failValidation(c.w, []ValidationError{*verr})
			return
		}
	}
	h := c.w.Header()
	s.mu.Lock()
	m, found := s.messages[id]
	var (
		recipient, status, encoding, contentType string
		total                                    int
		chunk                                    []byte
		discarded, report                        bool
	)
	if found {
		recipient, status, total, encoding, contentType = m.to.ID, m.status, m.totalChunks, m.contentEncoding, m.contentType
		report = m.messageType == messageTypeReport
		if recipient == c.mailbox.ID && (status == StatusAccepted || status == StatusAcknowledged) {
			downloadHeaders(h, m, n)
			if n >= 1 && n <= total && m.received[n-1] {
				chunk = m.chunks[n-1]
				discarded = chunk == nil
			}
		}
	}
	s.mu.Unlock()
	switch {
	case !found:
		c.fail(http.StatusNotFound, errMessageNotExist, "")
		return
	case recipient != c.mailbox.ID:
		c.fail(http.StatusForbidden, statusErr(http.StatusForbidden), "")
		return
	case status != StatusAccepted && status != StatusAcknowledged:
		c.fail(http.StatusGone, errMessageGone, "")
		return
	case report:
		// As the official sandbox answers for anything but DATA: the headers and an empty body.
		c.w.WriteHeader(http.StatusOK)
		return
	case discarded:
		clearHeaders(h)
		c.fail(http.StatusGone, plain("message body was discarded (Config.DiscardBodies)"), "")
		return
	case n > total || chunk == nil:
		clearHeaders(h)
		c.fail(http.StatusNotFound, errMessageNotExist, "")
		return
	}

	code := http.StatusOK
	if n < total {
		code = http.StatusPartialContent
	}
	mediaType := "application/octet-stream"
	if version > 1 && total < 2 && contentType != "" {
		mediaType = contentType
		if strings.HasPrefix(mediaType, "text/") && !strings.Contains(strings.ToLower(mediaType), "charset=") {
			mediaType += "; charset=utf-8"
		}
	}
	h.Set("Content-Type", mediaType)
	acceptsGzip := strings.Contains(c.r.Header.Get("Accept-Encoding"), "gzip")

	switch {
	case encoding == "gzip" && !acceptsGzip:
		// Stored gzip, client wants it plain: decompress on the way out. The official
		// sandbox decompresses each chunk alone, so a chunk that is not a whole gzip
		// stream fails there too (it answers 500; we abort the response).
		zr, err := gzip.NewReader(bytes.NewReader(chunk))
		if err != nil {
			clearHeaders(h)
			s.log.Warn("mesh chunk is not gzip; send Accept-Encoding: gzip", slog.String("message_id", id), slog.Int("chunk", n))
			failInternal(c.w, http.StatusInternalServerError)
			return
		}
		h.Del("Content-Encoding")
		c.w.WriteHeader(code)
		if _, err := io.Copy(c.w, zr); err != nil {
			s.log.Warn("mesh chunk is not a whole gzip stream; send Accept-Encoding: gzip",
				slog.String("message_id", id), slog.Int("chunk", n), slog.Any("error", err))
			panic(http.ErrAbortHandler)
		}
	case encoding == "" && version > 1 && acceptsGzip:
		// As the official sandbox does for v2 clients that accept gzip.
		h.Set("Content-Encoding", "gzip")
		h.Set("mex-Content-Compressed", "Y")
		c.w.WriteHeader(code)
		zw, _ := gzip.NewWriterLevel(c.w, gzip.BestSpeed)
		if _, err := zw.Write(chunk); err == nil {
			_ = zw.Close()
		}
	default:
		if encoding == "gzip" {
			h.Set("mex-Content-Compressed", "Y")
		}
		h.Set("Content-Length", strconv.Itoa(len(chunk)))
		c.w.WriteHeader(code)
		_, _ = c.w.Write(chunk)
	}
}

func clearHeaders(h http.Header) {
	for k := range h {
		delete(h, k)
	}
}

// headMessage is HEAD /messageexchange/{mb}/inbox/{id}: the download headers only,
// for the recipient or the sender.
func (s *Server) headMessage(c *call) {
	id := strings.ToUpper(c.route.params[0])
	s.mu.Lock()
	m, found := s.messages[id]
	allowed, gone := false, false
	if found {
		isRecipient := m.to.ID == c.mailbox.ID
		allowed = isRecipient || m.from.ID == c.mailbox.ID
		gone = isRecipient && m.status != StatusAccepted && m.status != StatusAcknowledged
		if allowed && !gone {
			downloadHeaders(c.w.Header(), m, 1)
		}
	}
	s.mu.Unlock()
	switch {
	case !found || !allowed:
		c.fail(http.StatusNotFound, errMessageNotExist, "")
	case gone:
		c.fail(http.StatusGone, errMessageGone, "")
	default:
		c.w.WriteHeader(http.StatusOK)
	}
}

// acknowledge is PUT /messageexchange/{mb}/inbox/{id}/status/acknowledged. Only an
// accepted message changes; acknowledging again is still 200.
func (s *Server) acknowledge(c *call) {
	id := strings.ToUpper(c.route.params[0])
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	s.mu.Lock()
	m, found := s.messages[id]
	isRecipient := found && m.to.ID == c.mailbox.ID
	if isRecipient && m.status == StatusAccepted {
		now := s.now()
		m.status, m.acknowledgedAt, m.statusAt = StatusAcknowledged, now, now
	}
	s.mu.Unlock()
	switch {
	case !found:
		c.fail(http.StatusNotFound, errMessageNotExist, "")
	case !isRecipient:
		c.fail(http.StatusForbidden, statusErr(http.StatusForbidden), "")
	case version < 2:
		writeJSON(c.w, http.StatusOK, mediaJSON, map[string]string{"messageId": id})
	default:
		c.w.WriteHeader(http.StatusOK)
	}
}
