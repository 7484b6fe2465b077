package natsserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerPackage is the nats-server command, built from the same module version the embedded servers
// run, for the nodes of a Cluster.
const ServerPackage = "github.com/nats-io/nats-server/v2"

// ClusterConfig describes a Cluster.
type ClusterConfig struct {
	Bin   string // the nats-server binary (ServerPackage built)
	Dir   string // configurations and stores live here, one directory per node
	Nodes int    // 3 or 5
	// Include holds files (name → content) written next to every node's configuration and included
	// by it, such as a permissions file.
	Include map[string][]byte
	// Env is added to the nodes' environment (the variables an included file refers to).
	Env []string
	// Output receives the nodes' logs, each line prefixed with the node's name; nil discards them.
	Output io.Writer
}

// Cluster is a JetStream cluster of real nats-server processes on 127.0.0.1, one per node. Tests and
// the devstack use it where a node must die as in a crash (SIGKILL): a server in the test's own
// process can only be shut down cleanly. Nodes keep their ports and stores across restarts.
type Cluster struct {
	cfg   ClusterConfig
	mu    sync.Mutex
	nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	Name                                 string
	ClientPort, ClusterPort, MonitorPort int
	conf                                 string
	cmd                                  *exec.Cmd
	done                                 chan struct{}
}

// NewCluster writes every node's configuration; Start or StartAll runs them.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes < 1 {
		return nil, errors.New("natsserver cluster: at least one node")
	}
	c := &Cluster{cfg: cfg}
	// Every node's ports in one call, all held open together, so no two nodes are given the same port.
	ports, err := FreePorts(3 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	for i := range cfg.Nodes {
		n := &Node{Name: fmt.Sprintf("n%d", i+1)}
		n.ClientPort, n.ClusterPort, n.MonitorPort = ports[3*i], ports[3*i+1], ports[3*i+2]
		c.nodes = append(c.nodes, n)
	}
	var routes []string
	for _, n := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.ClusterPort))
	}
	var includes []string
	for name := range cfg.Include {
		includes = append(includes, "include ./"+name)
	}
	sort.Strings(includes)
	for _, n := range c.nodes {
		dir := filepath.Join(cfg.Dir, n.Name)
		if err := os.MkdirAll(filepath.Join(dir, "store"), 0o700); err != nil {
			return nil, fmt.Errorf("natsserver cluster: %w", err)
		}
		for name, b := range cfg.Include {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				return nil, fmt.Errorf("natsserver cluster: %w", err)
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 4GB
}
cluster {
  name: dps-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, n.Name, n.ClientPort, n.MonitorPort, filepath.Join(dir, "store"), n.ClusterPort, strings.Join(routes, ", "), strings.Join(includes, "\n"))
		n.conf = filepath.Join(dir, "server.conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return nil, fmt.Errorf("natsserver cluster: %w", err)
		}
	}
	return c, nil
}

// Nodes returns the nodes, in order.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Ports are every port the nodes own, running or not: whatever else listens on 127.0.0.1 must stay
// off them, or a node started later (a cold start, a restart) finds its port taken.
func (c *Cluster) Ports() map[int]bool {
	ports := map[int]bool{}
	for _, n := range c.nodes {
		ports[n.ClientPort], ports[n.ClusterPort], ports[n.MonitorPort] = true, true, true
	}
	return ports
}

// URLs is the client URL list of every node, for NATS_URL.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort)
	}
	return strings.Join(urls, ",")
}

// Index is the position of the node called name, or -1.
func (c *Cluster) Index(name string) int {
	for i, n := range c.nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() error {
	for i := range c.nodes {
		if err := c.Start(i); err != nil {
			return err
		}
	}
	return nil
}

// Start starts node i (a no-op when it runs) without waiting for it; see WaitReady.
func (c *Cluster) Start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			return nil
		}
	}
	cmd := exec.Command(c.cfg.Bin, "-c", n.conf)
	cmd.Env = append(os.Environ(), c.cfg.Env...)
	out := c.cfg.Output
	if out == nil {
		out = io.Discard
	}
	w := &linePrefixer{prefix: n.Name + " | ", w: out}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats node %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	return nil
}

// Kill ends node i with SIGKILL, as a crash or the OOM killer would, and waits until it is gone.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	cmd, done := n.cmd, n.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill nats node %s: %w", n.Name, err)
	}
	<-done
	return nil
}

// WaitReady waits until node i answers its monitoring /healthz with JetStream enabled; with
// current it waits until the node also reports its JetStream state current (a meta leader known and
// its streams caught up).
func (c *Cluster) WaitReady(ctx context.Context, i int, current bool) error {
	n := c.nodes[i]
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.MonitorPort)
	if !current {
		url += "?js-enabled-only=true"
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats node %s not ready: %w", n.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends every node: SIGTERM, then SIGKILL for any still running after 10 seconds.
func (c *Cluster) Stop() {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.nodes...)
	c.mu.Unlock()
	for _, n := range nodes {
		if n.cmd != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(10 * time.Second)
	for _, n := range nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.done:
		case <-deadline:
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
}

// FreePorts returns n TCP ports on 127.0.0.1 that were free, all held open together until it returns,
// so that no two of them are the same (ports taken one at a time can be handed out twice).
func FreePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("natsserver: free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// linePrefixer writes each complete line with a prefix, so several nodes' logs can share a writer.
type linePrefixer struct {
	prefix string
	w      io.Writer
	mu     sync.Mutex
	buf    []byte
}

func (p *linePrefixer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		line := append([]byte(p.prefix), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
		if _, err := p.w.Write(line); err != nil {
			return len(b), err
		}
	}
}
