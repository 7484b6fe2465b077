// Package meshcli holds the logic of the operator commands that talk to MESH (validate-mailbox,
// check-inbox, get-message, ack-message, track, send-file), mirroring the mesh:* rake tasks teams use
// today. The tracker and sender main packages parse the environment, build the *mesh.Client and call
// these; this package must not read configuration itself beyond the documented MESH_WORKFLOW_ID
// default, and must never print credentials.
//
// Exit codes (pkg/cli's): 0 done, 1 MESH (or the network) said no, with MESH's status, code and text
// on stderr, 2 bad usage.
package meshcli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/cli"
	"github.com/nhs-dps/dps-pipeline/pkg/mesh"
	"github.com/nhs-dps/dps-pipeline/pkg/meshwatch"
)

// WorkflowEnv names the variable send-file falls back to when --workflow is not given.
const WorkflowEnv = "MESH_WORKFLOW_ID"

// Command is the shape of every operator command.
type Command func(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int

// Commands maps each command name to its function, for the main packages' dispatch.
func Commands() map[string]Command {
	return map[string]Command{
		"validate-mailbox": ValidateMailbox,
		"check-inbox":      CheckInbox,
		"get-message":      GetMessage,
		"ack-message":      AckMessage,
		"track":            Track,
		"send-file":        SendFile,
	}
}

// CommandNames lists the commands in a stable order, for usage text.
func CommandNames() []string {
	names := make([]string, 0, 6)
	for n := range Commands() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ExitCode maps an error from the mesh client to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, mesh.ErrInvalidArgument), errors.Is(err, errUsage):
		return cli.ExitUsage
	default:
		return cli.ExitFailure
	}
}

var errUsage = errors.New("usage")

// fail prints err and returns its exit code. A MESH error's text carries the HTTP status, MESH's error
// code and description (see mesh.Error); never a token.
func fail(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	var e *mesh.Error
	if errors.As(err, &e) && e.StatusCode != 0 {
		fmt.Fprintf(stderr, "%s: mesh_status=%d mesh_code=%q mesh_error=%q\n", name, e.StatusCode, e.Code, e.Description)
	}
	return ExitCode(err)
}

// usageError prints a message and the flag usage, and returns 2.
func usageError(stderr io.Writer, fs *flag.FlagSet, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return cli.ExitUsage
}

// newFlagSet builds a flag set whose usage line names the positional arguments.
func newFlagSet(name, positional, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s %s\n  %s\n", name, strings.TrimSpace("[flags] "+positional), about)
		fs.PrintDefaults()
	}
	return fs
}

// parse accepts flags before and after positional arguments ("send-file FILE --to X" and
// "send-file --to X FILE" both work), which the flag package alone does not. It returns the positionals,
// or an exit code when parsing ended the command (help: 0, bad flags: 2).
func parse(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, cli.ExitOK, false
			}
			return nil, cli.ExitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, 0, true
		}
		if rest[0] == "--" {
			return append(positional, rest[1:]...), 0, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ValidateMailbox performs the MESH handshake: usage `validate-mailbox`. It prints the mailbox, the
// result and the client certificate's subject and expiry ({"client_certificate": null} without one),
// and warns on stderr when that certificate expires within meshwatch.WarnDays or has expired, which is
// also said when the handshake fails, since an expired certificate is a common cause.
func ValidateMailbox(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("validate-mailbox", "", "Check the mailbox's credentials with a MESH handshake.", stderr)
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError(stderr, fs, "takes no arguments, got %q", pos)
	}
	var expiry *meshwatch.Expiry
	if cert := c.ClientCertificate(); cert != nil {
		e := meshwatch.ExpiryOf(cert, time.Now())
		expiry = &e
		switch {
		case e.Expired:
			fmt.Fprintf(stderr, "%s: the client certificate (%s) EXPIRED at %s: MESH refuses it\n", fs.Name(), e.Subject, e.NotAfter.Format(time.RFC3339))
		case e.WithinDays > 0:
			fmt.Fprintf(stderr, "%s: warning: the client certificate (%s) expires at %s, in %d days: request a renewed one\n",
				fs.Name(), e.Subject, e.NotAfter.Format(time.RFC3339), e.DaysLeft)
		}
	}
	if err := c.Handshake(ctx); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	out := struct {
		Mailbox           string            `json:"mailbox"`
		Result            string            `json:"result"`
		ClientCertificate *meshwatch.Expiry `json:"client_certificate"`
	}{c.Mailbox(), "ok", expiry}
	if err := writeJSON(stdout, out); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}

// CheckInbox prints the inbox: usage `check-inbox [--max-results N]`, output {"messages": [...], "count": N}.
func CheckInbox(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check-inbox", "", "List every message id in the inbox (all pages).", stderr)
	maxResults := fs.Int("max-results", 0, "page size, 10..5000 (0: MESH's default)")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return usageError(stderr, fs, "takes no arguments, got %q", pos)
	}
	if *maxResults != 0 && (*maxResults < 10 || *maxResults > 5000) {
		return usageError(stderr, fs, "--max-results must be 10..5000")
	}
	ids := []string{}
	next := ""
	for {
		page, err := c.InboxPage(ctx, *maxResults, next)
		if err != nil {
			return fail(stderr, fs.Name(), err)
		}
		ids = append(ids, page.Messages...)
		if page.Next == "" || page.Next == next {
			break
		}
		next = page.Next
	}
	out := struct {
		Messages []string `json:"messages"`
		Count    int      `json:"count"`
	}{ids, len(ids)}
	if err := writeJSON(stdout, out); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}

// GetMessage downloads a message: usage `get-message [--out FILE] MESSAGE_ID`. Without --out the body
// goes to stdout; with it, the body is written to FILE (atomically, via a temporary file beside it) and a
// JSON summary goes to stdout.
func GetMessage(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("get-message", "MESSAGE_ID", "Download a message (all chunks, decompressed).", stderr)
	out := fs.String("out", "", "write the body to this file instead of stdout")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		return usageError(stderr, fs, "needs exactly one MESSAGE_ID")
	}
	d, err := c.Download(ctx, pos[0])
	if err != nil {
		return fail(stderr, fs.Name(), err)
	}
	defer d.Body.Close()
	if *out == "" {
		if _, err := io.Copy(stdout, d.Body); err != nil {
			return fail(stderr, fs.Name(), fmt.Errorf("download %s: %w", pos[0], err))
		}
		return cli.ExitOK
	}
	n, err := writeFileAtomically(*out, d.Body)
	if err != nil {
		return fail(stderr, fs.Name(), fmt.Errorf("download %s: %w", pos[0], err))
	}
	summary := map[string]any{
		"message_id": d.MessageID, "from": d.From, "to": d.To, "workflow_id": d.WorkflowID,
		"filename": d.FileName, "local_id": d.LocalID, "chunks": d.TotalChunks, "bytes": n, "out": *out,
	}
	if err := writeJSON(stdout, summary); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}

// writeFileAtomically writes r to path through a temporary file in the same directory, so a failed
// download never leaves a truncated file under the requested name.
func writeFileAtomically(path string, r io.Reader) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part")
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}

// AckMessage acknowledges a received message: usage `ack-message MESSAGE_ID`.
func AckMessage(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ack-message", "MESSAGE_ID", "Acknowledge a received message (it leaves the inbox).", stderr)
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		return usageError(stderr, fs, "needs exactly one MESSAGE_ID")
	}
	if err := c.Acknowledge(ctx, pos[0]); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	if err := writeJSON(stdout, map[string]string{"message_id": pos[0], "status": mesh.StatusAcknowledged}); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}

// Track prints MESH's tracking JSON for a sent message: usage `track MESSAGE_ID`.
func Track(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("track", "MESSAGE_ID", "Print MESH's tracking JSON for a message this mailbox sent.", stderr)
	localID := fs.Bool("local-id", false, "treat the argument as a local id (older tracking endpoint)")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		return usageError(stderr, fs, "needs exactly one MESSAGE_ID")
	}
	var raw json.RawMessage
	if *localID {
		t, err := c.TrackByLocalID(ctx, pos[0])
		if err != nil {
			return fail(stderr, fs.Name(), err)
		}
		raw = t.Raw
	} else {
		t, err := c.Track(ctx, pos[0])
		if err != nil {
			return fail(stderr, fs.Name(), err)
		}
		raw = t.Raw
	}
	// Re-indent MESH's own JSON rather than re-marshal a struct, so no field it sent is lost.
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	if err := writeJSON(stdout, v); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}

// SendFile sends a file: usage
// `send-file --to MAILBOX [--workflow ID] [--local-id ID] [--subject S] [--content-type T] [--no-compress] FILE`.
// --workflow defaults to $MESH_WORKFLOW_ID. Prints {"message_id": "..."}.
func SendFile(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
	return SendFileWithDefault("")(ctx, c, args, stdout, stderr)
}

// SendFileWithDefault is SendFile whose --workflow falls back, after $MESH_WORKFLOW_ID, to
// defaultWorkflow (the sender passes its MESH_DPS_WORKFLOW_ID); "" for none.
func SendFileWithDefault(defaultWorkflow string) Command {
	return func(ctx context.Context, c *mesh.Client, args []string, stdout, stderr io.Writer) int {
		return sendFile(ctx, c, defaultWorkflow, args, stdout, stderr)
	}
}

func sendFile(ctx context.Context, c *mesh.Client, defaultWorkflow string, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("send-file", "--to MAILBOX [--workflow ID] [--local-id ID] [--subject S] [--no-compress] FILE", "Send FILE to a MESH mailbox (gzip-compressed unless --no-compress).", stderr)
	to := fs.String("to", "", "recipient mailbox id (required)")
	workflowHelp := "workflow id (default $" + WorkflowEnv + ")"
	if defaultWorkflow != "" {
		workflowHelp = "workflow id (default $" + WorkflowEnv + ", then " + defaultWorkflow + ")"
	}
	workflow := fs.String("workflow", "", workflowHelp)
	localID := fs.String("local-id", "", "mex-LocalID to set")
	subject := fs.String("subject", "", "mex-Subject to set")
	contentType := fs.String("content-type", "", "Content-Type (default: text/csv for .csv files, else application/octet-stream)")
	noCompress := fs.Bool("no-compress", false, "send the file as is, without gzip")
	pos, code, ok := parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		return usageError(stderr, fs, "needs exactly one FILE")
	}
	if strings.TrimSpace(*to) == "" {
		return usageError(stderr, fs, "--to is required")
	}
	if *workflow == "" {
		*workflow = os.Getenv(WorkflowEnv)
	}
	if *workflow == "" {
		*workflow = defaultWorkflow
	}
	if *workflow == "" {
		return usageError(stderr, fs, "--workflow is required (or set %s)", WorkflowEnv)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return usageError(stderr, fs, "%s is not a regular file", pos[0])
	}
	ct := *contentType
	if ct == "" {
		ct = "application/octet-stream"
		if strings.EqualFold(filepath.Ext(pos[0]), ".csv") {
			ct = "text/csv"
		}
	}
	id, err := c.Send(ctx, mesh.OutboundMessage{
		To:          strings.ToUpper(strings.TrimSpace(*to)),
		WorkflowID:  *workflow,
		FileName:    filepath.Base(pos[0]),
		LocalID:     *localID,
		Subject:     *subject,
		ContentType: ct,
		Compress:    !*noCompress,
		Body:        f,
	})
	if err != nil {
		return fail(stderr, fs.Name(), err)
	}
	if err := writeJSON(stdout, map[string]string{"message_id": id}); err != nil {
		return fail(stderr, fs.Name(), err)
	}
	return cli.ExitOK
}
