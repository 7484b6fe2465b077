package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Message statuses reported by tracking (lower case).
const (
	StatusUploading     = "uploading"
	StatusAccepted      = "accepted"
	StatusAcknowledged  = "acknowledged"
	StatusUndeliverable = "undeliverable"
	StatusError         = "error"
)

// Tracking is the v2 tracking JSON for a sent message. Fields MESH leaves null or out are empty;
// Raw keeps the body as received.
type Tracking struct {
	MessageID, LocalID, WorkflowID, FileName, Recipient string
	// Status is lower-cased: one of the Status constants.
	Status                                       string
	StatusCode, StatusDescription, StatusEvent   string
	StatusSuccess                                *bool
	StatusTimestamp, UploadTimestamp, ExpiryTime string
	Raw                                          json.RawMessage
}

// LocalTracking is what the older tracking-by-local-id endpoint says (v1 JSON). Status is lower-cased.
type LocalTracking struct {
	MessageID, LocalID, Status string
	Raw                        json.RawMessage
}

// maxTrackingBody bounds a tracking response; real ones are well under 2 KiB.
const maxTrackingBody = 1 << 20

// Track fetches tracking for a message this mailbox sent. 404 (IsNotFound) when MESH does not know it
// or another mailbox sent it.
func (c *Client) Track(ctx context.Context, messageID string) (*Tracking, error) {
	if messageID == "" {
		return nil, fmt.Errorf("mesh track: message id is required: %w", ErrInvalidArgument)
	}
	raw, err := c.getJSON(ctx, "track", c.url("/outbox/tracking?messageID="+url.QueryEscape(messageID)), messageID, nil)
	if err != nil {
		return nil, err
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, &Error{Op: "track", MessageID: messageID, Err: fmt.Errorf("decode tracking: %w", err)}
	}
	t := &Tracking{
		MessageID:         firstString(v, "message_id", "messageID", "messageId"),
		LocalID:           firstString(v, "local_id", "localId", "localID"),
		WorkflowID:        firstString(v, "workflow_id", "workflowId"),
		FileName:          firstString(v, "filename", "fileName", "file_name"),
		Recipient:         firstString(v, "recipient"),
		Status:            strings.ToLower(firstString(v, "status")),
		StatusCode:        firstString(v, "status_code", "statusCode"),
		StatusDescription: firstString(v, "status_description", "statusDescription"),
		StatusEvent:       firstString(v, "status_event", "statusEvent"),
		StatusTimestamp:   firstString(v, "status_timestamp", "statusTimestamp"),
		UploadTimestamp:   firstString(v, "upload_timestamp", "uploadTimestamp"),
		ExpiryTime:        firstString(v, "expiry_time", "expiryTime"),
		Raw:               raw,
	}
	if s, ok := v["status_success"]; ok {
		var b *bool
		if json.Unmarshal(s, &b) == nil {
			t.StatusSuccess = b
		}
	}
	return t, nil
}

// TrackByLocalID asks MESH which message this mailbox sent with mex-LocalID = localID, through the
// older GET /outbox/tracking/{local_id}. 404 (IsNotFound) when none; an error wrapping
// ErrSeveralMessages when MESH answers 300 because more than one does.
func (c *Client) TrackByLocalID(ctx context.Context, localID string) (*LocalTracking, error) {
	if localID == "" {
		return nil, fmt.Errorf("mesh track by local id: local id is required: %w", ErrInvalidArgument)
	}
	ok := func(status, _ int) bool { return status == http.StatusOK }
	raw, err := c.getJSON(ctx, "track by local id", c.url("/outbox/tracking/"+url.PathEscape(localID)), "", ok)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.StatusCode == http.StatusMultipleChoices {
			e.Err = fmt.Errorf("local id %q: %w", localID, ErrSeveralMessages)
		}
		return nil, err
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, &Error{Op: "track by local id", Err: fmt.Errorf("decode tracking: %w", err)}
	}
	return &LocalTracking{
		MessageID: firstString(v, "messageId", "messageID", "message_id"),
		LocalID:   firstString(v, "localId", "localID", "local_id"),
		Status:    strings.ToLower(firstString(v, "status")),
		Raw:       raw,
	}, nil
}

func (c *Client) getJSON(ctx context.Context, op, target, messageID string, ok func(int, int) bool) (json.RawMessage, error) {
	resp, err := c.do(ctx, request{
		op: op,
		build: func(ctx context.Context) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		},
		ok: ok,
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.MessageID == "" {
			e.MessageID = messageID
		}
		return nil, err
	}
	defer drain(resp.Body)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxTrackingBody))
	if err != nil {
		return nil, &Error{Op: op, MessageID: messageID, Transient: true, Err: fmt.Errorf("read response: %w", err)}
	}
	if !json.Valid(raw) {
		return nil, &Error{Op: op, StatusCode: resp.StatusCode, MessageID: messageID, Err: errors.New("response is not JSON")}
	}
	return json.RawMessage(raw), nil
}
