package bus

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ExportMeta describes an export file stored in the bucket. Everything in
// it is known before the file is written, so the file can be streamed.
type ExportMeta struct {
	ExportID  string
	Programme string
	Filename  string
}

// ExportStore opens the export bucket (EnsureTopology creates it).
func ExportStore(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, BucketExports)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketExports, err)
	}
	return obs, nil
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
