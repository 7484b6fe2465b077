package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
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
}

// dpsPlayer is DPS: it polls the DPS mailbox, checks each file as DPS would (MESH headers, then the
// file format) and acknowledges the good ones, which is what the tracker waits to see.
type dpsPlayer struct {
	client  *mesh.Client
	out     *lineWriter
	from    string // the mailbox every file must come from
	mailbox string // DPS's own

	mu       sync.Mutex
	files    []receivedFile
	seen     map[string]bool
	problems []string
}

// fileNamePattern is the DPS file name: Vaccinations-{PROGRAMME}-{YYYY-MM-DD}.csv.
var fileNamePattern = regexp.MustCompile(`^Vaccinations-[A-Z][A-Z0-9_]*-\d{4}-\d{2}-\d{2}\.csv$`)

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
	return &dpsPlayer{client: client, out: s.out, from: s.ourMailbox, mailbox: s.dpsMailbox, seen: map[string]bool{}}, nil
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
	if !fileNamePattern.MatchString(dl.FileName) {
		problems = append(problems, fmt.Sprintf("file name %q is not Vaccinations-PROGRAMME-YYYY-MM-DD.csv", dl.FileName))
	}
	res, err := dps.Check(bytes.NewReader(body))
	if err != nil {
		problems = append(problems, err.Error())
	}
	f.Rows, f.Actions, f.UniqueIDs = res.Rows, res.Actions, res.UniqueIDs
	if len(problems) == 0 {
		if err := d.client.Acknowledge(ctx, id); err != nil {
			return // try again at the next poll
		}
	} else {
		f.Problem = strings.Join(problems, "; ")
	}

	d.mu.Lock()
	d.seen[id] = true
	d.files = append(d.files, f)
	if f.Problem != "" {
		d.problems = append(d.problems, fmt.Sprintf("DPS rejected %s (MESH message %s): %s", f.FileName, id, f.Problem))
	}
	d.mu.Unlock()
	if f.Problem != "" {
		d.out.printf("DPS REJECTED  %s  MESH message %s: %s", f.FileName, id, f.Problem)
		return
	}
	d.out.printf("DPS received  %s  %d rows (%s), format ok, acknowledged", f.FileName, f.Rows, actionSummary(f.Actions))
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
