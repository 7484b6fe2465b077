package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// InboxPage is one page of the inbox listing.
type InboxPage struct {
	// Messages are message ids, oldest first.
	Messages []string
	// Next is links.next, empty on the last page; pass it back to InboxPage for the following page.
	Next string
	// ApproxInboxCount is MESH's approx_inbox_count.
	ApproxInboxCount int
}

// InboxPage fetches one page. maxResults (10..5000) sets the page size; 0 leaves MESH's default (500).
// next, when set, is a previous page's Next and takes precedence.
func (c *Client) InboxPage(ctx context.Context, maxResults int, next string) (InboxPage, error) {
	target := c.url("/inbox")
	if next != "" {
		u, err := c.resolve(next)
		if err != nil {
			return InboxPage{}, &Error{Op: "inbox", Err: err}
		}
		target = u
	} else if maxResults != 0 {
		if maxResults < 10 || maxResults > 5000 {
			return InboxPage{}, fmt.Errorf("mesh inbox: max results %d outside 10..5000: %w", maxResults, ErrInvalidArgument)
		}
		target += "?max_results=" + strconv.Itoa(maxResults)
	}
	resp, err := c.do(ctx, request{
		op: "inbox",
		build: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		},
	})
	if err != nil {
		return InboxPage{}, err
	}
	defer drain(resp.Body)
	var body struct {
		Messages []string `json:"messages"`
		Links    struct {
			Next string `json:"next"`
		} `json:"links"`
		ApproxInboxCount int `json:"approx_inbox_count"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return InboxPage{}, &Error{Op: "inbox", StatusCode: resp.StatusCode, Err: fmt.Errorf("decode inbox: %w", err)}
	}
	if body.Messages == nil {
		body.Messages = []string{}
	}
	return InboxPage{Messages: body.Messages, Next: body.Links.Next, ApproxInboxCount: body.ApproxInboxCount}, nil
}

// maxInboxPages stops a server that keeps returning links.next from looping us forever.
const maxInboxPages = 10_000

// Inbox lists every message id in the inbox, following links.next to the end.
func (c *Client) Inbox(ctx context.Context) ([]string, error) {
	var ids []string
	next := ""
	for range maxInboxPages {
		page, err := c.InboxPage(ctx, 0, next)
		if err != nil {
			return nil, err
		}
		ids = append(ids, page.Messages...)
		if page.Next == "" || page.Next == next {
			if ids == nil {
				ids = []string{}
			}
			return ids, nil
		}
		next = page.Next
	}
	return nil, &Error{Op: "inbox", Err: fmt.Errorf("more than %d pages; giving up", maxInboxPages)}
}

// Download is a received message. Body streams every chunk in order, decompressed when the message was
// sent gzip-encoded; the caller must Close it. The context given to Download must stay live while Body
// is read: later chunks are fetched with it.
type Download struct {
	MessageID, From, To, WorkflowID, FileName, LocalID string
	// MessageType is mex-MessageType: MessageTypeData, or MessageTypeReport for a report MESH itself
	// put in our inbox about a message we sent (non-delivery, error).
	MessageType string
	// LinkedMessageID is mex-LinkedMsgID: on a report, the id of the message it is about.
	LinkedMessageID string
	// Status is what MESH says about the message (on a report: about the linked message).
	Status DownloadStatus
	// TotalChunks is how many chunks MESH holds for the message.
	TotalChunks int
	Body        io.ReadCloser
}

// Download fetches chunk 1 (so that 403, 404 and 410 surface here) and returns a Body that fetches the
// rest as it is read.
func (c *Client) Download(ctx context.Context, messageID string) (*Download, error) {
	if messageID == "" {
		return nil, fmt.Errorf("mesh download: message id is required: %w", ErrInvalidArgument)
	}
	cs := &chunkStream{c: c, ctx: ctx, id: messageID}
	resp, err := cs.open(1)
	if err != nil {
		return nil, err
	}
	h := resp.Header
	total := 1
	if rng := h.Get("mex-Chunk-Range"); rng != "" {
		if _, t, ok := strings.Cut(rng, ":"); ok {
			if v, err := strconv.Atoi(strings.TrimSpace(t)); err == nil && v > 0 {
				total = v
			}
		}
	} else if v, err := strconv.Atoi(h.Get("mex-Total-Chunks")); err == nil && v > 0 {
		total = v
	}
	if resp.StatusCode == http.StatusPartialContent && total < 2 {
		resp.Body.Close()
		return nil, &Error{Op: "download", StatusCode: resp.StatusCode, MessageID: messageID,
			Err: errors.New("206 without a usable mex-Chunk-Range")}
	}
	cs.total = total
	cs.n = 1
	cs.cur = resp.Body
	cs.encoding = strings.ToLower(strings.TrimSpace(h.Get("Content-Encoding")))

	d := &Download{
		MessageID:       firstNonEmpty(h.Get("mex-MessageID"), messageID),
		From:            h.Get("mex-From"),
		To:              h.Get("mex-To"),
		WorkflowID:      h.Get("mex-WorkflowID"),
		FileName:        h.Get("mex-FileName"),
		LocalID:         h.Get("mex-LocalID"),
		MessageType:     strings.ToUpper(strings.TrimSpace(h.Get("mex-MessageType"))),
		LinkedMessageID: h.Get("mex-LinkedMsgID"),
		Status: DownloadStatus{
			Code: h.Get("mex-StatusCode"), Event: h.Get("mex-StatusEvent"),
			Description: h.Get("mex-StatusDescription"), Success: h.Get("mex-StatusSuccess"),
			Timestamp: h.Get("mex-StatusTimestamp"),
		},
		TotalChunks: total,
		Body:        cs,
	}
	switch cs.encoding {
	case "", "identity":
	case "gzip":
		// Chunks concatenated form one gzip stream (one member per chunk when the sender compressed
		// chunk by chunk, or one member split across chunks); the multi-member reader handles both.
		d.Body = &gunzipBody{cs: cs}
	default:
		cs.Close()
		return nil, &Error{Op: "download", StatusCode: resp.StatusCode, MessageID: messageID,
			Err: fmt.Errorf("unsupported Content-Encoding %q", cs.encoding)}
	}
	return d, nil
}

// Message types (mex-MessageType).
const (
	MessageTypeData   = "DATA"
	MessageTypeReport = "REPORT"
)

// DownloadStatus is the mex-Status* headers of a download. A DATA message has code 00, event TRANSFER,
// success SUCCESS; a report has success ERROR and, usually, the code (14: not collected in time) and
// description of what went wrong.
type DownloadStatus struct {
	Code, Event, Description string
	// Success is SUCCESS or ERROR.
	Success string
	// Timestamp is YYYYMMDDHHMMSS, UTC.
	Timestamp string
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// chunkStream reads chunks 1..total in order. A connection lost mid-chunk is resumed by fetching the
// chunk again and skipping what was already read.
type chunkStream struct {
	c        *Client
	ctx      context.Context
	id       string
	total    int
	n        int // current chunk number
	cur      io.ReadCloser
	read     int64 // bytes of the current chunk already returned
	resumes  int
	encoding string
	closed   bool
}

// maxResumes bounds re-fetches of a chunk whose body broke off.
const maxResumes = 3

func (s *chunkStream) open(n int) (*http.Response, error) {
	path := "/inbox/" + url.PathEscape(s.id)
	if n > 1 {
		path += "/" + strconv.Itoa(n)
	}
	op := "download"
	if n > 1 {
		op = fmt.Sprintf("download chunk %d/%d", n, s.total)
	}
	resp, err := s.c.do(s.ctx, request{
		op: op,
		build: func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.c.url(path), nil)
			if err != nil {
				return nil, err
			}
			// Asking for gzip ourselves stops net/http decompressing each chunk on its own, which would
			// fail when one gzip stream is split across chunks.
			req.Header.Set("Accept-Encoding", "gzip")
			return req, nil
		},
		ok: func(status, _ int) bool { return status == http.StatusOK || status == http.StatusPartialContent },
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.MessageID == "" {
			e.MessageID = s.id
		}
		return nil, err
	}
	return resp, nil
}

func (s *chunkStream) Read(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("mesh download: read after close")
	}
	for {
		if s.cur == nil {
			if s.n >= s.total {
				return 0, io.EOF
			}
			resp, err := s.open(s.n + 1)
			if err != nil {
				return 0, err
			}
			if enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc != s.encoding {
				resp.Body.Close()
				return 0, &Error{Op: "download", MessageID: s.id,
					Err: fmt.Errorf("chunk %d Content-Encoding %q differs from chunk 1's %q", s.n+1, enc, s.encoding)}
			}
			s.n++
			s.cur, s.read, s.resumes = resp.Body, 0, 0
		}
		k, err := s.cur.Read(p)
		s.read += int64(k)
		switch {
		case err == io.EOF:
			s.cur.Close()
			s.cur = nil
			if k > 0 {
				return k, nil
			}
			continue
		case err != nil:
			if k > 0 {
				// Hand over what arrived; the error recurs on the next Read and is handled then.
				return k, nil
			}
			if rerr := s.resume(err); rerr != nil {
				return 0, rerr
			}
			continue
		}
		return k, nil
	}
}

// resume re-fetches the current chunk after its body broke off and skips the bytes already read.
func (s *chunkStream) resume(cause error) error {
	s.cur.Close()
	s.cur = nil
	if err := s.ctx.Err(); err != nil {
		return &Error{Op: "download", MessageID: s.id, Err: err}
	}
	if s.resumes >= maxResumes {
		return &Error{Op: "download", MessageID: s.id, Transient: true,
			Err: fmt.Errorf("chunk %d broke off %d times: %w", s.n, s.resumes+1, cause)}
	}
	s.resumes++
	resp, err := s.open(s.n)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(io.Discard, resp.Body, s.read); err != nil {
		resp.Body.Close()
		return &Error{Op: "download", MessageID: s.id, Transient: true, Err: fmt.Errorf("resume chunk %d: %w", s.n, err)}
	}
	s.cur = resp.Body
	return nil
}

func (s *chunkStream) Close() error {
	s.closed = true
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	return nil
}

// gunzipBody decompresses the chunk stream lazily, so Download returns before any payload is read.
type gunzipBody struct {
	cs *chunkStream
	zr *gzip.Reader
}

func (g *gunzipBody) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.cs)
		if err != nil {
			return 0, fmt.Errorf("mesh download %s: gzip: %w", g.cs.id, err)
		}
		g.zr = zr
	}
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		var e *Error
		if !errors.As(err, &e) {
			err = fmt.Errorf("mesh download %s: gzip: %w", g.cs.id, err)
		}
	}
	return n, err
}

func (g *gunzipBody) Close() error {
	if g.zr != nil {
		g.zr.Close()
	}
	return g.cs.Close()
}

// Acknowledge marks a received message acknowledged; it leaves the inbox. Acknowledging twice is fine.
func (c *Client) Acknowledge(ctx context.Context, messageID string) error {
	if messageID == "" {
		return fmt.Errorf("mesh acknowledge: message id is required: %w", ErrInvalidArgument)
	}
	resp, err := c.do(ctx, request{
		op: "acknowledge",
		build: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodPut,
				c.url("/inbox/"+url.PathEscape(messageID)+"/status/acknowledged"), nil)
		},
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.MessageID == "" {
			e.MessageID = messageID
		}
		return err
	}
	drain(resp.Body)
	return nil
}
