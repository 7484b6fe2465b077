package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/gobuild"
	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
)

// The processes the stack builds, in the order they start.
var binaries = []string{"producer", "sender", "tracker"}

// buildBinaries compiles the three processes (and with cluster the nats-server command, from the
// module version the embedded server runs) into dir with one go build, so that packages they share are
// compiled once (without -race, as gobuild.Build says: the end-to-end test needs the pipeline's speed).
func buildBinaries(ctx context.Context, dir string, cluster bool) error {
	pkgs := make([]string, len(binaries))
	for i, b := range binaries {
		pkgs[i] = "./" + b
	}
	if cluster {
		pkgs = append(pkgs, natsserver.ServerPackage)
	}
	err := gobuild.Build(ctx, dir, pkgs...)
	if errors.Is(err, gobuild.ErrNotInModule) {
		return errors.New("run the devstack from inside the dps-pipeline module (go run ./pkg/devstack)")
	}
	return err
}

// childEnv is the configuration every child gets, on top of the inherited environment stripped of
// anything that could point a child elsewhere (a real mailbox, another database).
func (s *Stack) childEnv() []string {
	env := []string{
		"DATABASE_URL=" + s.cfg.DatabaseURL,
		// The producer's user; startChildren gives the senders and the tracker their own.
		"NATS_URL=" + s.natsURLFor("producer"),
		"NATS_STREAM_REPLICAS=" + strconv.Itoa(s.replicas()),
		"LOG_LEVEL=" + s.cfg.LogLevel,
		"LOG_FORMAT=text",
		"MESH_JOBS_ENABLED=true",
		"MESH_BASE_URL=" + s.meshURL,
		"MESH_MAILBOX=" + s.ourMailbox,
		"MESH_PASSWORD=" + s.ourPassword,
		"MESH_SHARED_KEY=" + s.sharedKey,
	}
	// An external sandbox may be plain http or use the system roots: then there is no CA file.
	if s.caFile != "" {
		env = append(env, "MESH_CA_BUNDLE="+s.caFile)
	}
	if s.meshInsecure {
		env = append(env, "MESH_DISABLE_SSL_VERIFICATION=true")
	}
	if s.certFile != "" {
		env = append(env, "MESH_CERTIFICATE="+s.certFile, "MESH_PRIVATE_KEY="+s.keyFile)
	}
	return append(env,
		"MESH_DPS_MAILBOX="+s.dpsMailbox,
		"MESH_DPS_WORKFLOW_ID="+dpsWorkflowID,
		"DPS_SENDER_ODS_CODE="+sandboxSenderODS,
		// Quick enough to watch: the defaults suit production, not a demo.
		"TRACKER_POLL_INTERVAL=2s",
		"TRACKER_INBOX_INTERVAL=1s",
		"SENDER_SHUTDOWN_GRACE=10s",
	)
}

// ownedPrefixes are the variables the devstack sets or that configure the pipeline; inherited ones
// are dropped so that a developer's shell cannot redirect a child.
var ownedPrefixes = []string{"DATABASE_URL", "NATS_", "LOG_", "MESH_", "TRACKER_", "SENDER_", "PRODUCER_", "DPS_", "HTTP_ADDR"}

func inheritedEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		owned := false
		for _, p := range ownedPrefixes {
			if strings.HasPrefix(kv, p) {
				owned = true
				break
			}
		}
		if !owned {
			out = append(out, kv)
		}
	}
	return out
}

// writeEnvFile leaves the children's settings in the work directory, so an operator can run the
// processes' own commands (sender replay, tracker ...) against the running stack.
func (s *Stack) writeEnvFile() error {
	var b strings.Builder
	for _, kv := range s.env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s='%s'\n", k, v)
	}
	if err := os.WriteFile(s.EnvFile(), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write env file: %w", err)
	}
	return nil
}

// EnvFile is the shell file with the children's environment (secrets included, mode 0600).
func (s *Stack) EnvFile() string { return filepath.Join(s.workDir, "devstack.env") }

// Command runs one of the built binaries with the children's environment, for the operator
// commands (replay, ...). extraEnv entries override.
func (s *Stack) Command(ctx context.Context, binary string, args []string, extraEnv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, binary), args...)
	cmd.Env = append(append(append(inheritedEnv(), s.env...), "HTTP_ADDR=127.0.0.1:0"), extraEnv...)
	return cmd
}

type child struct {
	name     string
	httpAddr string
	cmd      *exec.Cmd
	done     chan struct{}
	err      error // valid once done is closed
	stopping bool
	mu       sync.Mutex
}

type childExit struct {
	name string
	err  error
}

// startChildren starts producer, the senders and tracker, each on its own HTTP port, and waits until
// each answers /healthz.
func (s *Stack) startChildren(ctx context.Context) error {
	names := []string{"producer"}
	for i := 1; i <= s.cfg.Senders; i++ {
		names = append(names, fmt.Sprintf("sender-%d", i))
	}
	names = append(names, "tracker")
	for _, name := range names {
		binary, _, _ := strings.Cut(name, "-")
		addr, err := s.freeAddr()
		if err != nil {
			return err
		}
		c := &child{name: name, httpAddr: addr, done: make(chan struct{})}
		c.cmd = exec.Command(filepath.Join(s.binDir, binary), "run")
		c.cmd.Env = append(append(inheritedEnv(), s.env...), "HTTP_ADDR="+addr, "NATS_URL="+s.natsURLFor(binary))
		c.cmd.Stdout = &prefixWriter{prefix: name, w: s.logs}
		c.cmd.Stderr = c.cmd.Stdout
		setProcAttr(c.cmd)
		if err := c.cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		s.children = append(s.children, c)
		go func() {
			err := c.cmd.Wait()
			c.cmd.Stdout.(*prefixWriter).flush()
			c.mu.Lock()
			c.err = err
			stopping := c.stopping
			c.mu.Unlock()
			close(c.done)
			if !stopping {
				select {
				case s.exited <- childExit{name: name, err: err}:
				default:
				}
			}
		}()
	}
	if s.cfg.ColdCluster {
		if err := s.checkWaitingForNATS(ctx); err != nil {
			return err
		}
		if err := s.startRestOfCluster(); err != nil {
			return err
		}
	}
	for _, c := range s.children {
		if err := waitHealthy(ctx, c); err != nil {
			return err
		}
	}
	s.out.printf("started       %s", strings.Join(names, ", "))
	return nil
}

// checkWaitingForNATS is the cold start's check: with one node of the cluster up there is no meta
// leader, so every child must be running, waiting, and saying so on /healthz (503 naming nats).
func (s *Stack) checkWaitingForNATS(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range s.children {
		for {
			ok, said := childSays503(ctx, c)
			if ok {
				s.out.printf("waiting       %s: /healthz %s", c.name, said)
				break
			}
			select {
			case <-c.done:
				return fmt.Errorf("%s exited while the cluster had no meta leader: %v (its log is above)", c.name, c.err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s /healthz did not say 503 naming nats while the cluster had no meta leader: %s", c.name, said)
			}
		}
	}
	return nil
}

// waitHealthy polls the child's /healthz until it answers 200, the child exits or a minute passes.
func waitHealthy(ctx context.Context, c *child) error {
	deadline := time.Now().Add(time.Minute)
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + c.httpAddr + "/healthz"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was healthy: %v (its log is above)", c.name, c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy at %s after a minute", c.name, url)
		}
	}
}

// stopGrace is how long a child has to drain after SIGTERM before it is killed.
const stopGrace = 15 * time.Second

// stopChildren sends SIGTERM to every child at once, waits for them to drain, and kills any that
// have not exited after stopGrace.
func (s *Stack) stopChildren() {
	for _, c := range s.children {
		c.mu.Lock()
		c.stopping = true
		c.mu.Unlock()
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(stopGrace)
	for _, c := range s.children {
		select {
		case <-c.done:
		case <-deadline:
			// Past the grace period every remaining child is killed without waiting again.
			for _, k := range s.children {
				select {
				case <-k.done:
				default:
					fmt.Fprintf(s.logs, "%s did not stop within %s: killing it\n", k.name, stopGrace)
					_ = k.cmd.Process.Kill()
				}
			}
			<-c.done
		}
	}
	for _, c := range s.children {
		<-c.done
	}
	s.children = nil
}

// freeAddr finds a free localhost port for a child's HTTP server.
func (s *Stack) freeAddr() (string, error) {
	ln, err := s.listenLocal()
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// listenLocal listens on a free 127.0.0.1 port that no cluster node owns: the nodes' ports are chosen
// up front, and a node that is started later (a cold start, a restart after --kill-node) must find
// its port free, not taken by a child's HTTP server or the MESH sandbox.
func (s *Stack) listenLocal() (net.Listener, error) {
	var reserved map[int]bool
	if s.cluster != nil {
		reserved = s.cluster.Ports()
	}
	var refused []net.Listener
	defer func() {
		for _, ln := range refused {
			ln.Close()
		}
	}()
	for range 64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		if !reserved[ln.Addr().(*net.TCPAddr).Port] {
			return ln, nil
		}
		refused = append(refused, ln) // held until we return, so the next try gets another port
	}
	return nil, errors.New("find a free port: every port offered belongs to a NATS node")
}

// lockedWriter serialises writes from several children so lines never interleave.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line as "name | line"; with filter set, only the lines it keeps.
type prefixWriter struct {
	prefix string
	w      io.Writer
	filter func(line string) bool
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.emit(p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.emit(p.buf)
		p.buf = nil
	}
}

func (p *prefixWriter) emit(line []byte) {
	if p.filter != nil && !p.filter(string(line)) {
		return
	}
	out := make([]byte, 0, len(p.prefix)+len(line)+4)
	out = fmt.Appendf(out, "%-9s| ", p.prefix)
	out = append(out, line...)
	out = append(out, '\n')
	_, _ = p.w.Write(out)
}
