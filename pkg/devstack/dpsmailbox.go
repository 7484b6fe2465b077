package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/dps"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
)

// receivedFile is one file DPS took from its inbox.
type receivedFile struct {
	MessageID, FileName, LocalID string
	Rows                         int
	Actions                      map[string]int
	UniqueIDs                    []string
	Problem                      string // empty when the file passed every check and was acknowledged
	// Receiver mode: Refused lists the UNIQUE_IDs the BusAck refused; Rejected is an InfAck Failure;
	// Uncollected a file left unacknowledged in the inbox (ReceiverRules.Uncollected).
	Refused     []string
	Rejected    bool
	Uncollected bool
}

// ReceiverRules make the DPS player answer as the receiver does when it does not take everything. The
// zero value takes every row of every file. Tests set them; the devstack command never does.
type ReceiverRules struct {
	// RefuseRow, when it returns true, refuses the row in the BusAck with the diagnostic.
	RefuseRow func(fields *[dps.NumFields]string) (diagnostic string, refuse bool)
	// RejectFile, when true for a file name, answers the file with an InfAck Failure.
	RejectFile func(fileName string) bool
	// Uncollected, when true for a file name, leaves the file in the inbox unacknowledged, as a receiver
	// that never collects it would (the test then makes MESH report it undelivered).
	Uncollected func(fileName string) bool
}

// dpsPlayer is DPS: it polls the DPS mailbox, checks each file as DPS would (MESH headers, the file
// name as the receiver checks it, never a name seen before, then the file and every row against the
// row rules pkg/dps shares with the producer's writer) and acknowledges the good ones, which is what the
// tracker waits to see. A file that fails any check is a failure of the run. In receiver mode
// it then answers each file as NHS England's batch pipeline does, from the DPS mailbox to ours: an
// InfAck (the file passed its checks) and a BusAck (a row for each record it refused).
type dpsPlayer struct {
	client   *mesh.Client
	out      *lineWriter
	from     string // the mailbox every file must come from
	mailbox  string // DPS's own
	receiver bool
	rules    ReceiverRules

	senderODS string // the ODS code every file name must carry

	mu        sync.Mutex
	files     []receivedFile
	seen      map[string]bool
	seenNames map[string]string // file name (upper case, as the receiver compares) → MESH message id
	problems  []string
}

func newDPSPlayer(s *Stack) (*dpsPlayer, error) {
	var ca []byte
	if s.caFile != "" {
		var err error
		if ca, err = os.ReadFile(s.caFile); err != nil {
			return nil, fmt.Errorf("dps: read mesh ca: %w", err)
		}
	}
	// DPS verifies the sandbox exactly as the children do (MESH_CA_BUNDLE, MESH_DISABLE_SSL_VERIFICATION).
	tlsConfig, err := mesh.TLSConfig(mesh.TLSOptions{CABundlePEM: ca, InsecureSkipVerify: s.meshInsecure,
		CertificatePEM: s.dpsCertPEM, PrivateKeyPEM: s.dpsKeyPEM})
	if err != nil {
		return nil, fmt.Errorf("dps: %w", err)
	}
	client, err := mesh.New(mesh.Config{
		BaseURL: s.meshURL, Mailbox: s.dpsMailbox, Password: s.dpsPassword, SharedKey: s.sharedKey,
		TLS: tlsConfig, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("dps: %w", err)
	}
	return &dpsPlayer{client: client, out: s.out, from: s.ourMailbox, mailbox: s.dpsMailbox, senderODS: sandboxSenderODS,
		seen: map[string]bool{}, seenNames: map[string]string{}, receiver: !s.cfg.NoReceiver, rules: s.cfg.Receiver}, nil
}

// skipExisting marks every message already in the DPS inbox as seen, so that DPS takes only what
// this run sends, and returns how many there were.
func (d *dpsPlayer) skipExisting(ctx context.Context) (int, error) {
	ids, err := d.client.Inbox(ctx)
	if err != nil {
		return 0, fmt.Errorf("dps: list inbox of %s: %w", d.mailbox, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.seen[id] = true
	}
	return len(ids), nil
}

// dpsPollInterval is how often DPS looks at its inbox.
const dpsPollInterval = 500 * time.Millisecond

func (d *dpsPlayer) run(ctx context.Context) {
	t := time.NewTicker(dpsPollInterval)
	defer t.Stop()
	for {
		ids, err := d.client.Inbox(ctx)
		if err == nil {
			for _, id := range ids {
				if ctx.Err() != nil {
					return
				}
				d.mu.Lock()
				seen := d.seen[id]
				d.mu.Unlock()
				if !seen {
					d.receive(ctx, id)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// receive downloads, checks and (when it passes) acknowledges one message. A transient MESH failure
// leaves the message for the next poll.
func (d *dpsPlayer) receive(ctx context.Context, id string) {
	dl, err := d.client.Download(ctx, id)
	if err != nil {
		return
	}
	body, err := io.ReadAll(dl.Body)
	dl.Body.Close()
	if err != nil {
		return
	}
	f := receivedFile{MessageID: id, FileName: dl.FileName, LocalID: dl.LocalID}
	var problems []string
	if !strings.EqualFold(dl.From, d.from) {
		problems = append(problems, fmt.Sprintf("from %q, want %s", dl.From, d.from))
	}
	if dl.WorkflowID != dpsWorkflowID {
		problems = append(problems, fmt.Sprintf("workflow %q, want %s", dl.WorkflowID, dpsWorkflowID))
	}
	if p, err := dps.ParseFileName(dl.FileName); err != nil {
		problems = append(problems, err.Error())
	} else if p.SenderODS != d.senderODS {
		problems = append(problems, fmt.Sprintf("file name %q names sender %s, want %s", dl.FileName, p.SenderODS, d.senderODS))
	}
	d.mu.Lock()
	if earlier, dup := d.seenNames[strings.ToUpper(dl.FileName)]; dup && earlier != id {
		problems = append(problems, fmt.Sprintf("file name %q was already used by MESH message %s", dl.FileName, earlier))
	} else {
		d.seenNames[strings.ToUpper(dl.FileName)] = id
	}
	d.mu.Unlock()
	var refused []dps.BusAckRow
	res, err := dps.CheckEach(bytes.NewReader(body), func(line int, fields *[dps.NumFields]string) {
		if d.rules.RefuseRow == nil {
			return
		}
		if diag, refuse := d.rules.RefuseRow(fields); refuse {
			refused = append(refused, dps.BusAckRow{Row: line - 1, Refused: true, UniqueID: fields[fieldUniqueID],
				UniqueIDURI: fields[fieldUniqueIDURI], Diagnostic: diag})
		}
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	f.Rows, f.Actions, f.UniqueIDs = res.Rows, res.Actions, res.UniqueIDs
	switch {
	case len(problems) > 0:
		f.Problem = strings.Join(problems, "; ")
	case d.rules.Uncollected != nil && d.rules.Uncollected(f.FileName):
		f.Uncollected = true
	default:
		if d.receiver {
			f.Rejected = d.rules.RejectFile != nil && d.rules.RejectFile(f.FileName)
			// The replies go before the acknowledgement: if sending fails, the file is taken again at the
			// next poll and answered then (a second InfAck is one the tracker has already applied).
			if err := d.answer(ctx, f, refused); err != nil {
				d.out.printf("DPS           could not answer %s yet: %v", f.FileName, err)
				return
			}
			for _, r := range refused {
				f.Refused = append(f.Refused, r.UniqueID)
			}
		}
		if err := d.client.Acknowledge(ctx, id); err != nil {
			return // try again at the next poll
		}
	}

	d.mu.Lock()
	d.seen[id] = true
	d.files = append(d.files, f)
	if f.Problem != "" {
		d.problems = append(d.problems, fmt.Sprintf("DPS rejected %s (MESH message %s): %s", f.FileName, id, f.Problem))
	}
	d.mu.Unlock()
	switch {
	case f.Problem != "":
		d.out.printf("DPS REJECTED  %s  MESH message %s: %s", f.FileName, id, f.Problem)
	case f.Uncollected:
		d.out.printf("DPS leaves    %s  uncollected in its inbox (test rule)", f.FileName)
	case f.Rejected:
		d.out.printf("DPS received  %s  %d rows, name and rows ok, acknowledged; InfAck Failure sent (test rule)", f.FileName, f.Rows)
	case d.receiver:
		d.out.printf("DPS received  %s  %d rows (%s), name and rows ok, acknowledged; InfAck Success and BusAck (%d refused) sent",
			f.FileName, f.Rows, actionSummary(f.Actions), len(f.Refused))
	default:
		d.out.printf("DPS received  %s  %d rows (%s), name and rows ok, acknowledged", f.FileName, f.Rows, actionSummary(f.Actions))
	}
}

// Positions of the fields the receiver's BusAck names a row by (LOCAL_ID is UNIQUE_ID^UNIQUE_ID_URI).
var fieldUniqueID, fieldUniqueIDURI = fieldIndex("UNIQUE_ID"), fieldIndex("UNIQUE_ID_URI")

func fieldIndex(name string) int {
	for i, h := range dps.Header {
		if h == name {
			return i
		}
	}
	panic("dps.Header has no " + name)
}

// answer sends the receiver's acknowledgement files for f: the InfAck, and unless it is a Failure the
// BusAck with a row per refused record, named after the file as the receiver names them.
func (d *dpsPlayer) answer(ctx context.Context, f receivedFile, refused []dps.BusAckRow) error {
	stamp := dps.AckStamp(time.Now())
	fileID := strings.ToLower(newFileID())
	inf := dps.InfAck{MessageHeaderID: fileID, Success: !f.Rejected, ResponseCode: dps.InfAckSuccessCode,
		ResponseDisplay: dps.InfAckSuccessDisplay, ReceivedTime: stamp}
	if f.Rejected {
		inf.ResponseCode, inf.ResponseDisplay = dps.InfAckFailureCode, dps.InfAckFailureDisplay
	}
	var b bytes.Buffer
	if err := dps.WriteInfAck(&b, inf); err != nil {
		return err
	}
	if err := d.reply(ctx, dps.AckFileNameFor(f.FileName, dps.KindInfAck, stamp), b.Bytes()); err != nil {
		return err
	}
	if f.Rejected {
		return nil
	}
	b.Reset()
	if err := dps.WriteBusAck(&b, fileID, stamp, refused); err != nil {
		return err
	}
	return d.reply(ctx, dps.AckFileNameFor(f.FileName, dps.KindBusAck, stamp), b.Bytes())
}

func (d *dpsPlayer) reply(ctx context.Context, name string, body []byte) error {
	_, err := d.client.Send(ctx, mesh.OutboundMessage{To: d.from, WorkflowID: dpsWorkflowID, FileName: name,
		ContentType: "text/csv", Body: bytes.NewReader(body)})
	if err != nil {
		return fmt.Errorf("send %s: %w", name, err)
	}
	return nil
}

// newFileID is the receiver's own id for a file it took (a UUID).
func newFileID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func actionSummary(m map[string]int) string {
	if len(m) == 0 {
		return "header only"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// received copies the files DPS has taken so far.
func (d *dpsPlayer) received() []receivedFile {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]receivedFile(nil), d.files...)
}

func (d *dpsPlayer) firstProblem() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.problems) == 0 {
		return ""
	}
	return d.problems[0]
}
