package mesh_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshsandbox"
)

// reportView is what a client sees of a downloaded report, without the ids and times that differ from
// one run to the next.
type reportView struct {
	MessageType, LinkedMessageID, LocalID, From, To, WorkflowID string
	FileNameIsID                                                bool
	Status                                                      mesh.DownloadStatus
	TimestampSet                                                bool
	Body                                                        string
}

// reportViews creates one report of each status through base's admin create_report (the official
// sandbox's, or ours), downloads each with our client and acknowledges it.
func reportViews(t *testing.T, base string) map[string]reportView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := officialClient(t, base, officialSender, officialPassword, 0)
	drainInbox(ctx, t, c)
	out := map[string]reportView{}
	for _, status := range []string{"error", "undeliverable"} {
		body, _ := json.Marshal(map[string]any{
			"mailbox_id": officialSender, "code": "14", "description": "Message not collected by recipient after 5 days",
			"workflow_id": officialWorkflow, "status": status, "local_id": "export-1.1", "linked_message_id": "0123456789ABCDEF0123456789ABCDEF",
		})
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // local sandbox only
		resp, err := (&http.Client{Transport: tr}).Post(strings.TrimRight(base, "/")+"/messageexchange/admin/report", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var created struct {
			MessageID string `json:"message_id"`
		}
		err = json.NewDecoder(resp.Body).Decode(&created)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || created.MessageID == "" {
			t.Fatalf("create_report %s: %d %v", status, resp.StatusCode, err)
		}
		ids, err := c.Inbox(ctx)
		if err != nil || len(ids) != 1 || !strings.EqualFold(ids[0], created.MessageID) {
			t.Fatalf("inbox %v (%v), want the report %s", ids, err, created.MessageID)
		}
		dl, err := c.Download(ctx, created.MessageID)
		if err != nil {
			t.Fatalf("download report: %v", err)
		}
		b, err := io.ReadAll(dl.Body)
		dl.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		v := reportView{MessageType: dl.MessageType, LinkedMessageID: dl.LinkedMessageID, LocalID: dl.LocalID,
			From: dl.From, To: dl.To, WorkflowID: dl.WorkflowID, Status: dl.Status, Body: string(b),
			FileNameIsID: strings.EqualFold(dl.FileName, created.MessageID+".dat")}
		v.TimestampSet, v.Status.Timestamp = len(v.Status.Timestamp) == 14, ""
		out[status] = v
		if err := c.Acknowledge(ctx, created.MessageID); err != nil {
			t.Fatalf("acknowledge report: %v", err)
		}
	}
	return out
}

// TestReportDownloadAsTheOfficialSandbox: a report made by our sandbox's create_report reads, through
// our client, exactly as one made by the official sandbox's (when MESH_OFFICIAL_SANDBOX_URL points at
// one; otherwise against what the official one was seen to answer).
func TestReportDownloadAsTheOfficialSandbox(t *testing.T) {
	sb := meshsandbox.New(meshsandbox.Config{SharedKey: officialSharedKey, Mailboxes: []meshsandbox.Mailbox{
		{ID: officialSender, Password: officialPassword}, {ID: officialRecipient, Password: officialPassword},
	}})
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	ours := reportViews(t, srv.URL)

	// What the official sandbox answered (NHSDigital/mesh-sandbox, run with AUTH_MODE=full, 2026-12-01).
	want := map[string]reportView{
		"error": {MessageType: "REPORT", LinkedMessageID: "0123456789ABCDEF0123456789ABCDEF", LocalID: "export-1.1",
			To: officialSender, WorkflowID: officialWorkflow, FileNameIsID: true, TimestampSet: true,
			Status: mesh.DownloadStatus{Code: "14", Event: "TRANSFER", Description: "Message not collected by recipient after 5 days", Success: "ERROR"}},
		"undeliverable": {MessageType: "REPORT", LocalID: "export-1.1", To: officialSender, WorkflowID: officialWorkflow,
			FileNameIsID: true, TimestampSet: true, Status: mesh.DownloadStatus{Success: "ERROR"}},
	}
	if base := os.Getenv(OfficialSandboxURLEnv); base != "" {
		want = reportViews(t, base)
	}
	for status, w := range want {
		if ours[status] != w {
			t.Errorf("%s report: ours %+v, official %+v", status, ours[status], w)
		}
	}
}
