package bus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// ExportMeta describes an export file stored in the bucket. Everything in
// it is known before the file is written, so the file can be streamed.
type ExportMeta struct {
	ExportID  string
	Programme string
	Filename  string
}

// ExportStore opens the export bucket (EnsureTopology creates it). Its Put, PutBytes, PutString and
// PutFile store the chunks in order whatever happens to the stream's leader (see orderedStore.Put);
// everything else is jetstream's own.
func ExportStore(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, BucketExports)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketExports, err)
	}
	stream, err := js.Stream(ctx, "OBJ_"+BucketExports)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: its stream: %w", BucketExports, err)
	}
	return &orderedStore{ObjectStore: obs, js: js, bucket: BucketExports, stream: stream}, nil
}

// orderedStore is a jetstream.ObjectStore whose puts publish each chunk only once the one before it is
// acknowledged.
//
// jetstream's own Put (nats.go v1.55.0) publishes the chunks asynchronously from one reused message
// and buffer, and a chunk answered "no responders" (a stream without a leader) is published again
// 250 ms later from that message, which by then holds a later chunk's bytes. Put still succeeds, and
// every read of the object fails its digest ("received a corrupt object, digests do not match"). It
// happened in our cluster tests with a node killed; TestPutSurvivesLeaderLoss reproduces it.
//
// The objects are written in jetstream's format (ADR-20: the chunks on $O.<bucket>.C.<nuid>, then the
// object's info on $O.<bucket>.M.<base64url name> with a subject roll-up), so that jetstream's Get,
// GetInfo, List, Watch and Delete read them as their own.
type orderedStore struct {
	jetstream.ObjectStore
	js     jetstream.JetStream
	bucket string
	stream jetstream.Stream // the bucket's stream, OBJ_<bucket>: asked for chunk counts, purged
}

// chunkSubject is the subject of the chunks of the object stored under nuid.
func (s *orderedStore) chunkSubject(nuid string) string { return "$O." + s.bucket + ".C." + nuid }

const (
	// chunkSize is the size of every chunk but the last. jetstream's default is 128 KiB; with one
	// round trip per chunk, larger chunks are faster, and 512 KiB stays well under the 1 MiB default
	// max_payload (a smaller server limit is honoured).
	chunkSize = 512 << 10
	// chunkGiveUp is how long one chunk may keep failing (no stream leader, lost acks) before the put
	// fails: longer than a leader election, short enough not to hold an export for an outage.
	chunkGiveUp = 30 * time.Second
)

// Put stores r under meta.Name, replacing any object of that name once the new one is complete. Each
// chunk carries a Nats-Msg-Id, so that a retry after a lost ack is stored once, and the next chunk is
// published only after it is acknowledged, so that the stream holds the chunks in order; the next
// chunk is read from r while that ack is awaited. Before the object's info is published, the stream is
// asked how many chunks it holds for the object. A put that fails before that purges its chunks, which
// no reader has seen.
func (s *orderedStore) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	if meta.Name == "" {
		return nil, jetstream.ErrBadObjectMeta
	}
	if meta.Opts != nil && meta.Opts.Link != nil {
		return nil, jetstream.ErrLinkNotAllowed
	}
	size := chunkSize
	if meta.Opts != nil && meta.Opts.ChunkSize > 0 {
		size = int(meta.Opts.ChunkSize)
	}
	// Room for the headers jetstream adds (the message id, the expected stream).
	if limit := int(s.js.Conn().MaxPayload()) - 1024; size > limit {
		size = limit
	}
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: uint32(size)}

	old, err := s.ObjectStore.GetInfo(ctx, meta.Name, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("put %s: %w", meta.Name, err)
	}
	streamName := s.stream.CachedInfo().Config.Name
	id := nuid.Next()
	chunkSubject := s.chunkSubject(id)
	failed := func(err error) (*jetstream.ObjectInfo, error) {
		s.purge(ctx, chunkSubject)
		return nil, fmt.Errorf("put %s: %w", meta.Name, err)
	}

	// Two buffers: the next chunk is read from r while the ack of the one before is awaited.
	h := sha256.New()
	bufs := [2][]byte{make([]byte, size), make([]byte, size)}
	var inFlight *chunk
	var total uint64
	var chunks uint32
	for {
		n, rerr := fill(r, bufs[chunks%2])
		if inFlight != nil {
			if err := inFlight.settle(ctx, s.js); err != nil {
				return failed(err)
			}
			inFlight = nil
		}
		// A reader that failed ends the put before what it read last is published: nothing is then in
		// flight to land after the purge.
		if rerr != nil && rerr != io.EOF {
			return failed(rerr)
		}
		if n > 0 {
			data := bufs[chunks%2][:n]
			h.Write(data)
			inFlight = &chunk{stream: streamName, subject: chunkSubject, index: chunks, msgID: id + "." + strconv.FormatUint(uint64(chunks), 10), data: data}
			inFlight.publish(s.js)
			chunks++
			total += uint64(n)
		}
		if rerr == io.EOF {
			break
		}
	}
	if inFlight != nil {
		if err := inFlight.settle(ctx, s.js); err != nil {
			return failed(err)
		}
	}
	if held, err := s.chunksHeld(ctx, chunkSubject); err != nil {
		return failed(err)
	} else if held != uint64(chunks) {
		return failed(fmt.Errorf("the stream holds %d chunks of the object, %d were published", held, chunks))
	}

	info := &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: s.bucket, NUID: id, Size: total, Chunks: chunks,
		Digest: jetstream.GetObjectDigestValue(h)}
	data, err := json.Marshal(info)
	if err != nil {
		return failed(err)
	}
	metaSubject := "$O." + s.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(meta.Name))
	header := nats.Header{jetstream.MsgRollup: []string{jetstream.MsgRollupSubject}}
	if _, err := publishRetrying(ctx, s.js, streamName, metaSubject, id+".meta", data, header, nil, chunkGiveUp); err != nil {
		// The info may have been stored with its ack lost, and then the chunks are the object's: they
		// stay. The caller treats the name as unsure either way (the export deletes the object).
		return nil, fmt.Errorf("put %s: info: %w", meta.Name, err)
	}
	info.ModTime = time.Now().UTC()
	if old != nil && !old.Deleted {
		s.purge(ctx, s.chunkSubject(old.NUID))
	}
	return info, nil
}

// fill reads into buf until it is full (nil), r ends (io.EOF, with what came before it), or r fails.
// Unlike io.ReadFull, it tells a reader's own io.ErrUnexpectedEOF from a short last chunk.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// chunk is one chunk of a put, published without waiting and settled (acknowledged, or published again
// until it is) before the next one is published.
type chunk struct {
	stream, subject string
	index           uint32
	msgID           string
	data            []byte
	ack             jetstream.PubAckFuture
	err             error
}

func (c *chunk) publish(js jetstream.JetStream) {
	msg := &nats.Msg{Subject: c.subject, Data: c.data, Header: nats.Header{}}
	// A chunk that fails is published again by settle, never behind a later one.
	c.ack, c.err = js.PublishMsgAsync(msg, publishOpts(c.stream, c.msgID)...)
}

// settle waits for the chunk's ack; if it fails, or does not come within attemptTimeout, the chunk is
// published again, with the same Nats-Msg-Id, until it is acknowledged or chunkGiveUp has passed.
func (c *chunk) settle(ctx context.Context, js jetstream.JetStream) error {
	err := c.err
	if err == nil {
		timer := time.NewTimer(attemptTimeout)
		defer timer.Stop()
		select {
		case <-c.ack.Ok():
			return nil
		case err = <-c.ack.Err():
		case <-timer.C:
			err = nats.ErrTimeout
		case <-ctx.Done():
			return fmt.Errorf("chunk %d: %w", c.index, ctx.Err())
		}
	}
	if !transient(err) {
		return fmt.Errorf("chunk %d: %w", c.index, err)
	}
	if _, err := publishRetrying(ctx, js, c.stream, c.subject, c.msgID, c.data, nil, nil, chunkGiveUp); err != nil {
		return fmt.Errorf("chunk %d: %w", c.index, err)
	}
	return nil
}

// chunksHeld asks the stream how many messages it holds on subject.
func (s *orderedStore) chunksHeld(ctx context.Context, subject string) (uint64, error) {
	si, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("count chunks: %w", err)
	}
	return si.State.Subjects[subject], nil
}

// purge removes a put's chunks, on a context of its own so that a cancelled put still cleans up. A
// purge that fails leaves chunks no object refers to; the bucket's TTL removes them.
func (s *orderedStore) purge(ctx context.Context, subject string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = s.stream.Purge(ctx, jetstream.WithPurgeSubject(subject))
}

// PutBytes is Put of data.
func (s *orderedStore) PutBytes(ctx context.Context, name string, data []byte) (*jetstream.ObjectInfo, error) {
	return s.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data))
}

// PutString is Put of data.
func (s *orderedStore) PutString(ctx context.Context, name string, data string) (*jetstream.ObjectInfo, error) {
	return s.Put(ctx, jetstream.ObjectMeta{Name: name}, strings.NewReader(data))
}

// PutFile is Put of the file's contents, under the file's name as jetstream's PutFile does.
func (s *orderedStore) PutFile(ctx context.Context, file string) (*jetstream.ObjectInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return s.Put(ctx, jetstream.ObjectMeta{Name: file}, f)
}

// PutExport streams r into the bucket under name, chunk by chunk (the whole
// file is never in memory). The returned info has the size and the store's
// SHA-256 digest (see ObjectSHA256). Putting the same name again replaces
// the object, so a retried put after a crash is harmless.
func PutExport(ctx context.Context, obs jetstream.ObjectStore, name string, r io.Reader, meta ExportMeta) (*jetstream.ObjectInfo, error) {
	om := jetstream.ObjectMeta{
		Name:        name,
		Description: meta.Filename,
		Headers:     nats.Header{"Content-Type": []string{"text/csv; charset=utf-8"}},
		Metadata: map[string]string{
			"export_id": meta.ExportID,
			"programme": meta.Programme,
			"filename":  meta.Filename,
		},
	}
	info, err := obs.Put(ctx, om, r)
	if err != nil {
		return nil, fmt.Errorf("put export %s: %w", name, err)
	}
	return info, nil
}

// GetExport opens the object name for streaming. Reading it to EOF checks
// the store's digest (jetstream.ErrDigestMismatch on corruption); the caller
// closes it. A missing object wraps jetstream.ErrObjectNotFound.
func GetExport(ctx context.Context, obs jetstream.ObjectStore, name string) (jetstream.ObjectResult, error) {
	res, err := obs.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get export %s: %w", name, err)
	}
	return res, nil
}

// ObjectSHA256 returns an object's SHA-256 as lower-case hex (the form in
// export messages), from the store's "SHA-256=<base64url>" digest.
func ObjectSHA256(info *jetstream.ObjectInfo) (string, error) {
	b64, ok := strings.CutPrefix(info.Digest, "SHA-256=")
	if !ok {
		return "", fmt.Errorf("object %s: unexpected digest %q", info.Name, info.Digest)
	}
	sum, err := base64.URLEncoding.DecodeString(b64)
	if err != nil || len(sum) != 32 {
		return "", fmt.Errorf("object %s: bad digest %q", info.Name, info.Digest)
	}
	return hex.EncodeToString(sum), nil
}
