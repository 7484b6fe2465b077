package meshsandbox

import (
	"net/http"
	"strings"
	"time"
)

// TrackingV2 is the v2 tracking body. Pointer fields are null in MESH's model and
// left out when null, as the official sandbox does; there is no sender field.
type TrackingV2 struct {
	MessageID         string  `json:"message_id"`
	LocalID           *string `json:"local_id,omitempty"`
	WorkflowID        *string `json:"workflow_id,omitempty"`
	Filename          *string `json:"filename,omitempty"`
	ExpiryTime        *string `json:"expiry_time,omitempty"`
	UploadTimestamp   *string `json:"upload_timestamp,omitempty"`
	Recipient         *string `json:"recipient,omitempty"`
	RecipientName     *string `json:"recipient_name,omitempty"`
	RecipientODSCode  *string `json:"recipient_ods_code,omitempty"`
	RecipientOrgCode  *string `json:"recipient_org_code,omitempty"`
	RecipientOrgName  *string `json:"recipient_org_name,omitempty"`
	StatusSuccess     *bool   `json:"status_success,omitempty"`
	Status            *string `json:"status,omitempty"`
	StatusEvent       *string `json:"status_event,omitempty"`
	StatusTimestamp   *string `json:"status_timestamp,omitempty"`
	StatusDescription *string `json:"status_description,omitempty"`
	StatusCode        *string `json:"status_code,omitempty"`
}

// TrackingV1 is the older camelCase tracking body, served by tracking by local id.
type TrackingV1 struct {
	AddressType          string  `json:"addressType"`
	Checksum             string  `json:"checksum"`
	ChunkCount           int     `json:"chunkCount"`
	CompressFlag         string  `json:"compressFlag"`
	ContentEncoding      string  `json:"contentEncoding"`
	DownloadTimestamp    string  `json:"downloadTimestamp"`
	DTSID                string  `json:"dtsId"`
	EncryptedFlag        string  `json:"encryptedFlag"`
	ExpiryTime           string  `json:"expiryTime"`
	FailureDate          *string `json:"failureDate,omitempty"`
	FailureDiagnostic    *string `json:"failureDiagnostic,omitempty"`
	FileName             string  `json:"fileName"`
	FileSize             int64   `json:"fileSize"`
	IsCompressed         string  `json:"isCompressed"`
	LinkedMsgID          *string `json:"linkedMsgId,omitempty"`
	LocalID              string  `json:"localId"`
	MeshRecipientODSCode string  `json:"meshRecipientOdsCode"`
	MessageID            string  `json:"messageId"`
	MessageType          string  `json:"messageType"`
	PartnerID            string  `json:"partnerId"`
	Recipient            string  `json:"recipient"`
	RecipientName        string  `json:"recipientName"`
	RecipientOrgCode     string  `json:"recipientOrgCode"`
	RecipientOrgName     string  `json:"recipientOrgName"`
	RecipientSMTP        string  `json:"recipientSmtp"`
	Sender               string  `json:"sender"`
	SenderName           string  `json:"senderName"`
	SenderODSCode        string  `json:"senderOdsCode"`
	SenderOrgCode        string  `json:"senderOrgCode"`
	SenderOrgName        string  `json:"senderOrgName"`
	SenderSMTP           string  `json:"senderSmtp"`
	Status               string  `json:"status"`
	StatusCode           *string `json:"statusCode,omitempty"`
	StatusDescription    *string `json:"statusDescription,omitempty"`
	StatusEvent          *string `json:"statusEvent,omitempty"`
	StatusSuccess        string  `json:"statusSuccess"`
	StatusTimestamp      *string `json:"statusTimestamp,omitempty"`
	Subject              string  `json:"subject"`
	UploadTimestamp      string  `json:"uploadTimestamp"`
	Version              string  `json:"version"`
	WorkflowID           string  `json:"workflowId"`
}

func ptr[T any](v T) *T { return &v }

// isoTime is how the official sandbox writes a naive UTC datetime.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000") }

func compactTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("20060102150405")
}

// Caller holds s.mu.
func trackingV2(m *message) TrackingV2 {
	t := TrackingV2{
		MessageID:        m.id,
		LocalID:          ptr(m.localID),
		WorkflowID:       ptr(m.workflowID),
		Filename:         ptr(m.fileName),
		ExpiryTime:       ptr(isoTime(m.createdAt.Add(inboxExpiry))),
		UploadTimestamp:  ptr(isoTime(m.createdAt)),
		Recipient:        ptr(m.to.ID),
		RecipientName:    ptr(m.to.Name),
		RecipientODSCode: ptr(m.to.ODSCode),
		RecipientOrgCode: ptr(m.to.OrgCode),
		RecipientOrgName: ptr(m.to.OrgName),
		StatusSuccess:    ptr(true),
		Status:           ptr(m.status),
	}
	if m.status == StatusUndeliverable {
		t.StatusSuccess = ptr(false)
		t.StatusEvent = ptr(errUndelivered.event)
		t.StatusTimestamp = ptr(isoTime(m.statusAt))
		t.StatusDescription = ptr(errUndelivered.msg)
		t.StatusCode = ptr(errUndelivered.code)
	}
	return t
}

// Caller holds s.mu.
func trackingV1(m *message) TrackingV1 {
	yes := func(b bool) string {
		if b {
			return "Y"
		}
		return ""
	}
	t := TrackingV1{
		AddressType: "ALL", Checksum: m.checksum, ChunkCount: m.totalChunks,
		CompressFlag: yes(m.compressed), ContentEncoding: m.contentEncoding,
		DownloadTimestamp: compactTime(m.acknowledgedAt), DTSID: m.id, EncryptedFlag: yes(m.encrypted),
		ExpiryTime: compactTime(m.createdAt.Add(inboxExpiry)), FileName: m.fileName, FileSize: m.size(),
		IsCompressed: yes(m.compressed), LocalID: m.localID, MeshRecipientODSCode: m.to.ODSCode,
		MessageID: m.id, MessageType: "Data", PartnerID: m.partnerID,
		Recipient: m.to.ID, RecipientName: m.to.Name, RecipientOrgCode: m.to.OrgCode, RecipientOrgName: m.to.OrgName,
		Sender: m.from.ID, SenderName: m.from.Name, SenderODSCode: m.from.ODSCode, SenderOrgCode: m.from.OrgCode,
		SenderOrgName: m.from.OrgName, Status: title(m.status), StatusSuccess: "SUCCESS", Subject: m.subject,
		UploadTimestamp: compactTime(m.createdAt), Version: "1.0", WorkflowID: m.workflowID,
	}
	if m.status == StatusUploading {
		// The official sandbox reports no size until the last chunk is in.
		t.FileSize = 0
	}
	if m.status == StatusUndeliverable {
		t.FailureDate = ptr(compactTime(m.statusAt))
		t.FailureDiagnostic = ptr(errUndelivered.msg)
		t.StatusCode = ptr(errUndelivered.code)
		t.StatusDescription = ptr(errUndelivered.msg)
		t.StatusEvent = ptr(errUndelivered.event)
		t.StatusSuccess = "ERROR"
		t.StatusTimestamp = ptr(compactTime(m.statusAt))
	}
	return t
}

func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// track is GET /messageexchange/{mb}/outbox/tracking?messageID=...; only the sender
// may track (anyone else gets 404, as Spine answers).
func (s *Server) track(c *call) {
	version, ok := c.apiVersion()
	if !ok {
		return
	}
	q := c.r.URL.Query()
	if !q.Has("messageID") {
		failValidation(c.w, []ValidationError{missingField("query", "messageID")})
		return
	}
	id := strings.ToUpper(q.Get("messageID"))
	if id == "" {
		failValidation(c.w, []ValidationError{tooShort("query", "messageID", "", 1)})
		return
	}
	s.mu.Lock()
	m, found := s.messages[id]
	if !found || m.from.ID != c.mailbox.ID {
		s.mu.Unlock()
		c.fail(http.StatusNotFound, statusErr(http.StatusNotFound), "")
		return
	}
	var body any
	media := mediaMESHv2
	if version < 2 {
		body, media = trackingV1(m), mediaJSON
	} else {
		body = trackingV2(m)
	}
	s.mu.Unlock()
	writeJSON(c.w, http.StatusOK, media, body)
}

// trackLocal is the deprecated GET /messageexchange/{mb}/outbox/tracking/{local_id}:
// v1 tracking of the one message this mailbox sent with that local id; 300 when
// several share it, 404 when none does.
func (s *Server) trackLocal(c *call) {
	localID := c.route.params[0]
	s.mu.Lock()
	found := s.mailboxes[c.mailbox.ID].localIDs[localID]
	var body TrackingV1
	if len(found) == 1 {
		body = trackingV1(found[0])
	}
	s.mu.Unlock()
	switch len(found) {
	case 0:
		c.fail(http.StatusNotFound, statusErr(http.StatusNotFound), "")
	case 1:
		writeJSON(c.w, http.StatusOK, mediaJSON, body)
	default:
		c.fail(http.StatusMultipleChoices, statusErr(http.StatusMultipleChoices), "")
	}
}
