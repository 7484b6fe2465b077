package mesh

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/klauspost/compress/gzip"
)

// ErrInvalidArgument marks a call the client refused before contacting MESH (a caller bug or bad
// operator input, not something MESH said).
var ErrInvalidArgument = errors.New("invalid argument")

// OutboundMessage is one message to send. Body is read once, to the end.
type OutboundMessage struct {
	// To is the recipient mailbox (mex-To). Required.
	To string
	// WorkflowID is mex-WorkflowID. Required by MESH.
	WorkflowID string
	// FileName is mex-FileName.
	FileName string
	// LocalID is mex-LocalID: the sender's own id, used to find the message again after a crash.
	LocalID string
	// Subject is mex-Subject, optional.
	Subject string
	// ContentType defaults to application/octet-stream; DPS exports use text/csv.
	ContentType string
	// Compress gzips the payload (Content-Encoding: gzip, mex-Content-Compressed: Y).
	Compress bool
	// Body is the payload. An io.ReaderAt+io.Seeker (e.g. *os.File, *bytes.Reader) sent uncompressed is
	// read in place from its current offset; anything else is first spooled to a temporary file so the
	// number of chunks is known before the first request and a failed chunk can be sent again.
	Body io.Reader
}

// chunkPlan says where each chunk's bytes are.
type chunkPlan struct {
	src     io.ReaderAt
	offsets []int64
	sizes   []int64
	cleanup func()
}

func (p *chunkPlan) total() int { return len(p.sizes) }

func (p *chunkPlan) section(i int) *io.SectionReader {
	return io.NewSectionReader(p.src, p.offsets[i], p.sizes[i])
}

// Send sends m and returns MESH's message id. The payload is streamed: at most one chunk's worth of
// buffers is in memory, whatever the size. Chunk 1 goes to /outbox with mex-Chunk-Range 1:N, chunk n ≥ 2
// to /outbox/{id}/{n}. Each request is retried on transient failures; when the first request fails
// ambiguously (the server may have stored it) and m.LocalID is set, MESH is asked by local id before
// sending again, and a message it already holds is adopted instead of duplicated.
//
// With Compress, each chunk is a complete gzip member of at most ChunkSize bytes; the chunks concatenated
// are one multi-member gzip stream of the whole payload, which is what recipients decompress.
func (c *Client) Send(ctx context.Context, m OutboundMessage) (string, error) {
	if m.To == "" {
		return "", fmt.Errorf("mesh send: recipient mailbox (To) is required: %w", ErrInvalidArgument)
	}
	if m.WorkflowID == "" {
		return "", fmt.Errorf("mesh send: workflow id is required: %w", ErrInvalidArgument)
	}
	if m.Body == nil {
		return "", fmt.Errorf("mesh send: body is required: %w", ErrInvalidArgument)
	}
	plan, err := c.planChunks(ctx, m)
	if err != nil {
		return "", err
	}
	defer plan.cleanup()

	total := plan.total()
	log := c.log.With(slog.String("mesh_to", m.To), slog.String("mesh_local_id", m.LocalID), slog.Int("chunks", total))
	id, adopted, err := c.sendFirst(ctx, m, plan)
	if err != nil {
		return "", err
	}
	if adopted {
		log.Warn("MESH already held a message with this local id after an ambiguous failure; adopted it",
			slog.String("mesh_message_id", id))
	}
	for n := 2; n <= total; n++ {
		if err := c.sendChunk(ctx, m, plan, id, n); err != nil {
			return "", err
		}
		log.Debug("MESH chunk sent", slog.String("mesh_message_id", id), slog.Int("chunk", n))
	}
	log.Debug("MESH message sent", slog.String("mesh_message_id", id))
	return id, nil
}

// adoptedMessage ends the retry loop of the first request when MESH turns out to hold the message.
type adoptedMessage struct{ id string }

func (a *adoptedMessage) Error() string { return "adopted message " + a.id }

func (c *Client) sendFirst(ctx context.Context, m OutboundMessage, plan *chunkPlan) (id string, adopted bool, err error) {
	total := plan.total()
	contentType := m.ContentType
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	resp, err := c.do(ctx, request{
		op: "send",
		build: func(ctx context.Context) (*http.Request, error) {
			body := plan.section(0)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/outbox"), body)
			if err != nil {
				return nil, err
			}
			req.ContentLength = body.Size()
			h := req.Header
			h.Set("mex-To", m.To)
			h.Set("mex-WorkflowID", m.WorkflowID)
			if m.FileName != "" {
				h.Set("mex-FileName", m.FileName)
			}
			if m.LocalID != "" {
				h.Set("mex-LocalID", m.LocalID)
			}
			if m.Subject != "" {
				h.Set("mex-Subject", m.Subject)
			}
			h.Set("mex-Chunk-Range", "1:"+strconv.Itoa(total))
			h.Set("Content-Type", contentType)
			if m.Compress {
				h.Set("Content-Encoding", "gzip")
				h.Set("mex-Content-Compressed", "Y")
			}
			return req, nil
		},
		beforeRetry: func(ctx context.Context, last *Error) error {
			return c.adoptAfterAmbiguousFailure(ctx, m.LocalID, last)
		},
	})
	var adoptedErr *adoptedMessage
	if errors.As(err, &adoptedErr) {
		return adoptedErr.id, true, nil
	}
	if err != nil {
		return "", false, err
	}
	defer drain(resp.Body)
	var out struct {
		MessageID string `json:"message_id"`
		V1        string `json:"messageID"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&out); err != nil {
		return "", false, &Error{Op: "send", StatusCode: resp.StatusCode, Err: fmt.Errorf("decode response: %w", err)}
	}
	if out.MessageID == "" {
		out.MessageID = out.V1
	}
	if out.MessageID == "" {
		return "", false, &Error{Op: "send", StatusCode: resp.StatusCode, Err: errors.New("response has no message_id")}
	}
	return out.MessageID, false, nil
}

// adoptAfterAmbiguousFailure asks MESH, before the first request is sent again, whether the failed
// attempt in fact created the message. 429 and 503 mean the server turned the request away, so they
// are not ambiguous; a lost connection, 500, 502 or 504 may have come after the message was stored.
func (c *Client) adoptAfterAmbiguousFailure(ctx context.Context, localID string, last *Error) error {
	if localID == "" || last.StatusCode == http.StatusTooManyRequests || last.StatusCode == http.StatusServiceUnavailable {
		return nil
	}
	lt, err := c.TrackByLocalID(ctx, localID)
	if err != nil {
		if ctx.Err() != nil {
			return &Error{Op: "send", Err: ctx.Err()}
		}
		// Not found (the usual case) or unknown: sending again is the only way forward.
		return nil
	}
	switch lt.Status {
	case StatusUploading, StatusAccepted, StatusAcknowledged:
		if lt.MessageID != "" {
			return &adoptedMessage{id: lt.MessageID}
		}
	}
	return nil
}

func (c *Client) sendChunk(ctx context.Context, m OutboundMessage, plan *chunkPlan, id string, n int) error {
	total := plan.total()
	op := fmt.Sprintf("send chunk %d/%d", n, total)
	resp, err := c.do(ctx, request{
		op: op,
		build: func(ctx context.Context) (*http.Request, error) {
			body := plan.section(n - 1)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost,
				c.url("/outbox/"+url.PathEscape(id)+"/"+strconv.Itoa(n)), body)
			if err != nil {
				return nil, err
			}
			req.ContentLength = body.Size()
			req.Header.Set("mex-Chunk-Range", strconv.Itoa(n)+":"+strconv.Itoa(total))
			req.Header.Set("Content-Type", "application/octet-stream")
			if m.Compress {
				req.Header.Set("Content-Encoding", "gzip")
			}
			return req, nil
		},
		ok: func(status, attempt int) bool {
			// 423 "already complete" on a retry of the last chunk means the earlier attempt landed.
			return status >= 200 && status < 300 || (status == http.StatusLocked && attempt > 1 && n == total)
		},
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.MessageID == "" {
			e.MessageID = id
		}
		return err
	}
	drain(resp.Body)
	return nil
}

// planChunks decides where the chunks come from, spooling to a temporary file when needed.
func (c *Client) planChunks(ctx context.Context, m OutboundMessage) (*chunkPlan, error) {
	size := c.cfg.ChunkSize
	if !m.Compress {
		if ra, ok := m.Body.(interface {
			io.ReaderAt
			io.Seeker
		}); ok {
			start, err := ra.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, fmt.Errorf("mesh send: body offset: %w", err)
			}
			end, err := ra.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, fmt.Errorf("mesh send: body size: %w", err)
			}
			p := &chunkPlan{src: ra, cleanup: func() {}}
			splitEvenly(p, start, end-start, size)
			return p, nil
		}
	}
	f, err := createSpoolFile(c.spoolDir)
	if err != nil {
		return nil, fmt.Errorf("mesh send: spool file: %w", err)
	}
	cleanup := func() { f.Close() }
	p := &chunkPlan{src: f, cleanup: cleanup}
	if m.Compress {
		err = spoolCompressed(ctx, f, m.Body, size, p)
	} else {
		var n int64
		n, err = io.Copy(f, &ctxReader{ctx: ctx, r: m.Body})
		if err == nil {
			splitEvenly(p, 0, n, size)
		}
	}
	if err != nil {
		cleanup()
		if ctx.Err() != nil {
			return nil, &Error{Op: "send", Err: ctx.Err()}
		}
		return nil, fmt.Errorf("mesh send: read body: %w", err)
	}
	return p, nil
}

// splitEvenly cuts [start, start+n) into chunks of size bytes; an empty body is one empty chunk, which
// MESH refuses with its own error.
func splitEvenly(p *chunkPlan, start, n, size int64) {
	for off := int64(0); off < n || off == 0; off += size {
		p.offsets = append(p.offsets, start+off)
		p.sizes = append(p.sizes, min(size, n-off))
		if n == 0 {
			break
		}
	}
}

// spoolCompressed gzips src into f as consecutive gzip members, each at most chunkSize bytes, so each
// member can be sent as one chunk with Content-Encoding: gzip and decoded alone by a server that
// decompresses chunk by chunk. Input is fed in pieces with a flush after each, so the compressed size is
// known exactly before the next piece; a member is closed when the next piece might not fit.
func spoolCompressed(ctx context.Context, f *os.File, src io.Reader, chunkSize int64, p *chunkPlan) error {
	bw := bufio.NewWriterSize(f, 256<<10)
	cw := &countingWriter{w: bw}
	piece := min(max(chunkSize/8, 256), 1<<20)
	// Worst case for deflate is stored blocks (5 bytes per 64 KiB) plus the sync-flush marker, the gzip
	// header (10) and the final block and trailer (≈10); the margin covers all of it generously.
	worstCase := func(n int64) int64 { return n + n/16 + 128 }
	buf := make([]byte, piece)
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	var memberStart int64
	open := false
	closeMember := func() error {
		if err := zw.Close(); err != nil {
			return err
		}
		n := cw.n - memberStart
		if n > chunkSize {
			return fmt.Errorf("compressed chunk of %d bytes exceeds chunk size %d", n, chunkSize)
		}
		p.offsets = append(p.offsets, memberStart)
		p.sizes = append(p.sizes, n)
		open = false
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			if open && cw.n-memberStart+worstCase(int64(n)) > chunkSize {
				if err := closeMember(); err != nil {
					return err
				}
			}
			if !open {
				memberStart = cw.n
				zw.Reset(cw)
				open = true
			}
			if _, err := zw.Write(buf[:n]); err != nil {
				return err
			}
			if err := zw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if !open && len(p.sizes) == 0 {
		// An empty payload is still one valid (empty) gzip member.
		memberStart = cw.n
		zw.Reset(cw)
		open = true
	}
	if open {
		if err := closeMember(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// ctxReader stops a long copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}
