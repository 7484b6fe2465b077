package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nhs-dps/dps-pipeline/pkg/bus"
	"github.com/nhs-dps/dps-pipeline/pkg/gobuild"
	"github.com/nhs-dps/dps-pipeline/pkg/natsserver"
)

// natsUsers are the users of pkg/natsserver/conf/permissions.conf, which the cluster nodes load.
var natsUsers = []string{"producer", "sender", "tracker", "requester"}

// startCluster starts cfg.NATSCluster nats-server processes (built into binDir) as one JetStream
// cluster with pkg/natsserver/conf/permissions.conf and fresh passwords, and waits for JetStream on each. With
// ColdCluster only the first node is started: there is no meta leader until startRestOfCluster.
func (s *Stack) startCluster(ctx context.Context, binDir string) error {
	root, err := gobuild.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	perms, err := os.ReadFile(filepath.Join(root, "pkg", "natsserver", "conf", "permissions.conf"))
	if err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	s.natsUser = map[string]string{}
	var env []string
	for _, u := range natsUsers {
		s.natsUser[u] = randomSecret()
		env = append(env, "NATS_"+strings.ToUpper(u)+"_PASSWORD="+s.natsUser[u])
	}
	dir := filepath.Join(s.workDir, "nats-cluster")
	if s.cfg.DataDir != "" {
		dir = filepath.Join(s.cfg.DataDir, "nats-cluster")
	}
	c, err := natsserver.NewCluster(natsserver.ClusterConfig{
		Bin: filepath.Join(binDir, "nats-server"), Dir: dir, Nodes: s.cfg.NATSCluster,
		Include: map[string][]byte{"permissions.conf": perms}, Env: env,
		Output: &prefixWriter{prefix: "nats", w: s.logs, filter: natsNoise},
	})
	if err != nil {
		return err
	}
	s.cluster, s.natsURL = c, c.URLs()
	first := len(c.Nodes())
	if s.cfg.ColdCluster {
		first = 1
	}
	for i := range first {
		if err := c.Start(i); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i := range first {
		if err := c.WaitReady(wctx, i, false); err != nil {
			return err
		}
	}
	return nil
}

// startRestOfCluster starts the nodes a ColdCluster left stopped.
func (s *Stack) startRestOfCluster() error {
	if err := s.cluster.StartAll(); err != nil {
		return err
	}
	s.out.printf("NATS          started the other %d nodes: the cluster can elect its meta leader", len(s.cluster.Nodes())-1)
	return nil
}

// natsNoise keeps the nodes' own log lines out of the devstack's output except warnings and errors,
// and the route dial errors every node logs while its peers start or are down.
func natsNoise(line string) bool {
	if strings.Contains(line, "Error trying to connect to route") {
		return false
	}
	return strings.Contains(line, "[WRN]") || strings.Contains(line, "[ERR]") || strings.Contains(line, "[FTL]")
}

// replicas is NATS_STREAM_REPLICAS for the children.
func (s *Stack) replicas() int {
	if s.cluster != nil {
		return 3
	}
	return 1
}

// natsURLFor is NATS_URL for one of the users: every node, with that user's password on a cluster.
func (s *Stack) natsURLFor(user string) string {
	if s.cluster == nil {
		return s.natsURL
	}
	urls := strings.Split(s.natsURL, ",")
	for i, u := range urls {
		urls[i] = strings.Replace(u, "nats://", "nats://"+user+":"+s.natsUser[user]+"@", 1)
	}
	return strings.Join(urls, ",")
}

// LeaderOf names the node leading stream (and, with consumer set, that consumer), or "" while none does.
func (s *Stack) LeaderOf(ctx context.Context, stream, consumer string) (string, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	if consumer == "" {
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			return "", err
		}
		return info.Cluster.Leader, nil
	}
	c, err := st.Consumer(ctx, consumer)
	if err != nil {
		return "", err
	}
	info, err := c.Info(ctx)
	if err != nil || info.Cluster == nil {
		return "", err
	}
	return info.Cluster.Leader, nil
}

// KillLeader SIGKILLs the node leading stream (or its consumer) and returns its index; the node stays
// down until RestartNode.
func (s *Stack) KillLeader(ctx context.Context, stream, consumer string) (int, error) {
	if s.cluster == nil {
		return 0, errors.New("no cluster: run with --nats-cluster 3")
	}
	var leader string
	for leader == "" {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		name, err := s.LeaderOf(lctx, stream, consumer)
		cancel()
		if err == nil {
			leader = name
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("find the leader of %s: %w (last error: %v)", what(stream, consumer), ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	i := s.cluster.Index(leader)
	if i < 0 {
		return 0, fmt.Errorf("leader %q of %s is not one of the nodes", leader, what(stream, consumer))
	}
	if err := s.cluster.Kill(i); err != nil {
		return 0, err
	}
	s.out.printf("NATS          SIGKILLed %s, the leader of %s (%s)", leader, what(stream, consumer), s.board.counts())
	return i, nil
}

// RestartNode starts node i again, on its port with its store.
func (s *Stack) RestartNode(i int) error {
	if err := s.cluster.Start(i); err != nil {
		return err
	}
	s.out.printf("NATS          restarted %s (%s)", s.cluster.Nodes()[i].Name, s.board.counts())
	return nil
}

func what(stream, consumer string) string {
	if consumer == "" {
		return "stream " + stream
	}
	return "consumer " + consumer + " on " + stream
}

// killNodeMidRun is --kill-node: once the first export is created (batches in flight), it SIGKILLs
// the leader of DPS_BATCHES and restarts it after KillNodeDown.
func (s *Stack) killNodeMidRun(ctx context.Context) error {
	for s.board.counts().Created == 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-s.board.changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
	i, err := s.KillLeader(ctx, bus.StreamBatches, "")
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(s.cfg.KillNodeDown):
	}
	return s.RestartNode(i)
}

// childSays503 reports whether a child's /healthz answers 503 naming nats, as it must while it waits.
func childSays503(ctx context.Context, c *child) (bool, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.httpAddr+"/healthz", nil)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), `"nats":`) &&
		!strings.Contains(string(b), `"nats":"ok"`), fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}
