package natstest

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
)

// Cluster is a JetStream cluster of embedded servers, for tests of what happens when a node, or a
// stream's leader, goes away. A node stopped here shuts down cleanly; pkg/natsserver's Cluster runs
// real processes where a node must die as in a crash.
type Cluster struct {
	t     testing.TB
	mu    sync.Mutex
	opts  []*server.Options
	nodes []*server.Server
}

// RunCluster configures n embedded servers (n1, n2, …) routed to one another, each with its store in
// a directory of the test, and starts them all (StartAll), returning once every one has JetStream
// running. The servers are shut down when the test ends.
func RunCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports, err := natsserver.FreePorts(n)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	var routes []string
	for _, port := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", port))
	}
	c := &Cluster{t: t, opts: make([]*server.Options, n), nodes: make([]*server.Server, n)}
	for i := range n {
		o := natsserver.DefaultOptions()
		o.ServerName = fmt.Sprintf("n%d", i+1)
		o.StoreDir = t.TempDir()
		o.Cluster = server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]}
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		c.opts[i] = o
	}
	t.Cleanup(c.shutdown)
	c.StartAll()
	if t.Failed() {
		t.FailNow() // a node did not start (StartAll said which)
	}
	return c
}

// StartAll starts every node at once: a node's JetStream is ready only when a quorum is up.
func (c *Cluster) StartAll() {
	var wg sync.WaitGroup
	for i := range c.opts {
		wg.Go(func() { c.Start(i) })
	}
	wg.Wait()
}

// Start (re)starts node i with its store and ports.
func (c *Cluster) Start(i int) {
	s, err := natsserver.Start(c.opts[i])
	if err != nil {
		c.t.Errorf("natstest: start %s: %v", c.opts[i].ServerName, err)
		return
	}
	c.mu.Lock()
	c.nodes[i] = s
	c.mu.Unlock()
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	s := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Index is the index of the node named name ("n2" → 1), or -1.
func (c *Cluster) Index(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// URL is node i's client URL; the node must be running.
func (c *Cluster) URL(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].ClientURL()
}

func (c *Cluster) shutdown() {
	for i := range c.nodes {
		c.Stop(i)
	}
}
