package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/nhs-dps/dps-pipeline/pkg/config"
	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// loadCompose loads ../../compose.yaml as `docker compose config` would (interpolation, normalisation,
// schema validation and consistency checks on) with only env as the environment.
func loadCompose(t *testing.T, profiles []string, env ...string) *types.Project {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "compose.yaml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(env),
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml with profiles %v: %v", profiles, err)
	}
	return p
}

func serviceNames(s types.Services) []string {
	var names []string
	for n := range s {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

var pipeline = []string{"producer", "sender", "tracker"}

func TestComposeServices(t *testing.T) {
	tests := []struct {
		name     string
		profiles []string
		enabled  []string
		disabled []string
	}{
		{"default", nil,
			[]string{"mesh-sandbox", "nats", "postgres", "producer", "sender", "tracker"},
			[]string{"grafana", "mesh-sandbox-go", "nats-1", "nats-2", "nats-3", "prometheus"}},
		{"go-sandbox", []string{"go-sandbox"},
			[]string{"mesh-sandbox", "mesh-sandbox-go", "nats", "postgres", "producer", "sender", "tracker"},
			[]string{"grafana", "nats-1", "nats-2", "nats-3", "prometheus"}},
		{"cluster", []string{"cluster"},
			[]string{"mesh-sandbox", "nats", "nats-1", "nats-2", "nats-3", "postgres", "producer", "sender", "tracker"},
			[]string{"grafana", "mesh-sandbox-go", "prometheus"}},
		{"observability", []string{"observability"},
			[]string{"grafana", "mesh-sandbox", "nats", "postgres", "producer", "prometheus", "sender", "tracker"},
			[]string{"mesh-sandbox-go", "nats-1", "nats-2", "nats-3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadCompose(t, tt.profiles)
			if got := serviceNames(p.Services); !slices.Equal(got, tt.enabled) {
				t.Errorf("enabled services %v, want %v", got, tt.enabled)
			}
			if got := serviceNames(p.DisabledServices); !slices.Equal(got, tt.disabled) {
				t.Errorf("disabled services %v, want %v", got, tt.disabled)
			}
			for name, s := range p.Services {
				if s.HealthCheck == nil || len(s.HealthCheck.Test) < 2 || s.HealthCheck.Disable {
					t.Errorf("%s has no healthcheck", name)
				}
				for dep, d := range s.DependsOn {
					if d.Condition != types.ServiceConditionHealthy {
						t.Errorf("%s depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
					}
				}
			}
		})
	}
}

func TestComposePipelineServices(t *testing.T) {
	p := loadCompose(t, nil)
	for _, name := range pipeline {
		t.Run(name, func(t *testing.T) {
			s := p.Services[name]
			b := s.Build
			if b == nil || b.DockerfileInline == "" {
				t.Fatal("not built from this repository with dockerfile_inline")
			}
			if b.Context != p.WorkingDir {
				t.Errorf("build context %q, want the repository root %q", b.Context, p.WorkingDir)
			}
			for _, want := range []string{"FROM golang:1.26 AS build", "CGO_ENABLED=0 go build", "./${CMD}", "FROM gcr.io/distroless/static", "./pkg/devstack/healthcheck"} {
				if !strings.Contains(b.DockerfileInline, want) {
					t.Errorf("dockerfile_inline lacks %q", want)
				}
			}
			if cmd := b.Args["CMD"]; cmd == nil || *cmd != name {
				t.Errorf("build arg CMD = %v, want %q", cmd, name)
			}
			if !slices.Equal([]string(s.Command), []string{"run"}) {
				t.Errorf("command %q, want [run]", s.Command)
			}
			if got := strings.Join(s.HealthCheck.Test, " "); got != "CMD /usr/local/bin/healthcheck http://127.0.0.1:8080/healthz" {
				t.Errorf("healthcheck %q does not ask the process's /healthz", got)
			}
			if addr := s.Environment["HTTP_ADDR"]; addr == nil || *addr != "0.0.0.0:8080" {
				t.Errorf("HTTP_ADDR = %v, want 0.0.0.0:8080 (the port the healthcheck asks)", addr)
			}
			for dep, required := range map[string]bool{"postgres": true, "nats": true, "nats-1": false, "nats-2": false, "nats-3": false} {
				d, ok := s.DependsOn[dep]
				if !ok {
					t.Errorf("does not depend on %s", dep)
					continue
				}
				if d.Required != required {
					t.Errorf("dependency on %s required = %v, want %v", dep, d.Required, required)
				}
			}
			if name != "producer" {
				if d, ok := s.DependsOn["mesh-sandbox"]; !ok || !d.Required {
					t.Error("does not wait for the MESH sandbox")
				}
				if v := s.Environment["MESH_JOBS_ENABLED"]; v == nil || *v != "true" {
					t.Errorf("MESH_JOBS_ENABLED = %v, want true", v)
				}
			}
			wantReplicas := 1
			if name == "sender" {
				wantReplicas = 2
			}
			if got := replicas(s); got != wantReplicas {
				t.Errorf("replicas %d, want %d", got, wantReplicas)
			}
			assertKnownVariables(t, name, s.Environment)
		})
	}
}

func replicas(s types.ServiceConfig) int {
	if s.Deploy != nil && s.Deploy.Replicas != nil {
		return *s.Deploy.Replicas
	}
	if s.Scale != nil {
		return *s.Scale
	}
	return 1
}

// assertKnownVariables fails for any variable pkg/config does not read: a typo in compose.yaml
// would otherwise leave a setting at its default without a word.
func assertKnownVariables(t *testing.T, service string, env types.MappingWithEquals) {
	t.Helper()
	known := configVariables()
	for k := range env {
		if !known[k] {
			t.Errorf("%s sets %s, which no configuration struct reads", service, k)
		}
	}
}

func configVariables() map[string]bool {
	known := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
				known[name] = true
				if f.Tag.Get("secret") == "true" {
					known[name+"_FILE"] = true
				}
			}
		}
	}
	walk(reflect.TypeOf(config.Producer{}))
	walk(reflect.TypeOf(config.Sender{}))
	walk(reflect.TypeOf(config.Tracker{}))
	return known
}

func TestComposeInfrastructure(t *testing.T) {
	p := loadCompose(t, nil)

	nats := p.Services["nats"]
	if !strings.HasPrefix(nats.Image, "nats:2") || !slices.Contains(nats.Command, "--jetstream") {
		t.Errorf("nats: image %q command %q, want the official nats:2 image with JetStream", nats.Image, nats.Command)
	}
	assertVolume(t, p, "nats", "/data")

	pg := p.Services["postgres"]
	if pg.Image != "postgres:15" {
		t.Errorf("postgres image %q, want postgres:15", pg.Image)
	}
	if !slices.Contains(pg.HealthCheck.Test, "pg_isready") {
		t.Errorf("postgres healthcheck %q does not use pg_isready", pg.HealthCheck.Test)
	}
	assertVolume(t, p, "postgres", "/var/lib/postgresql/data")
	if !slices.ContainsFunc(pg.Ports, func(pc types.ServicePortConfig) bool { return pc.Published == "5432" && pc.HostIP == "127.0.0.1" }) {
		t.Error("postgres is not published on 127.0.0.1:5432, where the devstack and the tests look for it")
	}

	mesh := p.Services["mesh-sandbox"]
	if mesh.Build == nil || mesh.Build.Context != "https://github.com/NHSDigital/mesh-sandbox.git" {
		t.Errorf("mesh-sandbox is not built from the official repository: %+v", mesh.Build)
	}
	for k, want := range map[string]string{"AUTH_MODE": "full", "SHARED_KEY": "TestKey"} {
		if v := mesh.Environment[k]; v == nil || *v != want {
			t.Errorf("mesh-sandbox %s = %v, want %s", k, v, want)
		}
	}
	// The mailboxes the services use must be the sandbox's, with its shared key.
	sender := p.Services["sender"]
	if v := sender.Environment["MESH_SHARED_KEY"]; v == nil || *v != *mesh.Environment["SHARED_KEY"] {
		t.Error("sender's MESH_SHARED_KEY differs from the sandbox's SHARED_KEY")
	}
	if v := sender.Environment["MESH_BASE_URL"]; v == nil || *v != "https://mesh-sandbox:443" {
		t.Errorf("sender MESH_BASE_URL = %v", v)
	}
}

func assertVolume(t *testing.T, p *types.Project, service, target string) {
	t.Helper()
	for _, v := range p.Services[service].Volumes {
		if v.Target == target {
			if v.Type != types.VolumeTypeVolume {
				t.Errorf("%s: %s is a %s, want a named volume", service, target, v.Type)
			}
			if _, ok := p.Volumes[v.Source]; !ok {
				t.Errorf("%s: volume %q is not declared", service, v.Source)
			}
			return
		}
	}
	t.Errorf("%s has no volume at %s", service, target)
}

func TestComposeGoSandboxProfile(t *testing.T) {
	p := loadCompose(t, []string{"go-sandbox"}, "MESH_BASE_URL=https://mesh-sandbox-go:8700")
	sb := p.Services["mesh-sandbox-go"]
	if cmd := sb.Build.Args["CMD"]; cmd == nil || *cmd != "pkg/meshsandbox/cmd/mesh-sandbox" {
		t.Errorf("mesh-sandbox-go builds %v", cmd)
	}
	mailboxes := *sb.Environment["MESH_SANDBOX_MAILBOXES"]
	for _, name := range []string{"sender", "tracker"} {
		s := p.Services[name]
		if v := *s.Environment["MESH_BASE_URL"]; v != "https://mesh-sandbox-go:8700" {
			t.Errorf("%s MESH_BASE_URL = %s", name, v)
		}
		if d, ok := s.DependsOn["mesh-sandbox-go"]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s does not wait for mesh-sandbox-go", name)
		}
		want := *s.Environment["MESH_DPS_MAILBOX"] + ":password:" + *s.Environment["MESH_DPS_WORKFLOW_ID"]
		if !strings.Contains(mailboxes, want) {
			t.Errorf("sandbox mailboxes %q do not register %s for the DPS workflow", mailboxes, want)
		}
	}
}

func TestComposeClusterProfile(t *testing.T) {
	nodeURLs := func(user string) string {
		return "nats://" + user + ":pw@nats-1:4222,nats://" + user + ":pw@nats-2:4222,nats://" + user + ":pw@nats-3:4222"
	}
	p := loadCompose(t, []string{"cluster"}, "PRODUCER_NATS_URL="+nodeURLs("producer"), "SENDER_NATS_URL="+nodeURLs("sender"),
		"TRACKER_NATS_URL="+nodeURLs("tracker"), "NATS_STREAM_REPLICAS=3")
	nodes := []string{"nats-1", "nats-2", "nats-3"}
	volumes := map[string]bool{}
	for _, n := range nodes {
		s := p.Services[n]
		if cmd := strings.Join(s.Command, " "); !strings.Contains(cmd, "exec nats-server -c /etc/nats/cluster.conf") ||
			!strings.Contains(cmd, "NATS_REQUESTER_PASSWORD:?") {
			t.Errorf("%s command %q: want pkg/natsserver/conf/cluster.conf, refusing to start without the passwords", n, s.Command)
		}
		if v := s.Environment["NATS_SERVER_NAME"]; v == nil || *v != n {
			t.Errorf("%s NATS_SERVER_NAME = %v", n, v)
		}
		for _, user := range []string{"PRODUCER", "SENDER", "TRACKER", "REQUESTER"} {
			if _, ok := s.Environment["NATS_"+user+"_PASSWORD"]; !ok {
				t.Errorf("%s lacks NATS_%s_PASSWORD", n, user)
			}
		}
		assertVolume(t, p, n, "/data")
		mounted := false
		for _, v := range s.Volumes {
			if v.Target == "/etc/nats" && v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Source, "/pkg/natsserver/conf") && v.ReadOnly {
				mounted = true
			}
			if v.Type == types.VolumeTypeVolume {
				volumes[v.Source] = true
			}
		}
		if !mounted {
			t.Errorf("%s does not mount ./pkg/natsserver/conf read-only at /etc/nats", n)
		}
	}
	if len(volumes) != 3 {
		t.Errorf("cluster nodes share volumes: %v", volumes)
	}
	for _, name := range pipeline {
		s := p.Services[name]
		if v := *s.Environment["NATS_URL"]; v != nodeURLs(name) {
			t.Errorf("%s NATS_URL = %s, want all three nodes as the user %s", name, v, name)
		}
		if v := *s.Environment["NATS_STREAM_REPLICAS"]; v != "3" {
			t.Errorf("%s NATS_STREAM_REPLICAS = %s, want 3", name, v)
		}
		for _, n := range nodes {
			if d, ok := s.DependsOn[n]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s does not wait for %s", name, n)
			}
		}
	}
	// The configuration the services get must pass the processes' own validation.
	for k, v := range map[string]string{"NATS_URL": nodeURLs("producer"), "NATS_STREAM_REPLICAS": "3"} {
		t.Setenv(k, v)
	}
	if ods := p.Services["producer"].Environment["DPS_SENDER_ODS_CODE"]; ods != nil {
		t.Setenv("DPS_SENDER_ODS_CODE", *ods)
	}
	if _, err := config.LoadProducer(); err != nil {
		t.Errorf("producer configuration of the cluster profile: %v", err)
	}
}

// TestClusterConfFile: pkg/natsserver/conf/cluster.conf, with the environment compose gives a node, is a valid
// nats-server configuration: a JetStream node of the cluster "dps" routing to all three nodes, with
// the four users of pkg/natsserver/conf/permissions.conf.
func TestClusterConfFile(t *testing.T) {
	for _, v := range []string{"NATS_PRODUCER_PASSWORD", "NATS_SENDER_PASSWORD", "NATS_TRACKER_PASSWORD", "NATS_REQUESTER_PASSWORD"} {
		t.Setenv(v, "0123456789abcdef")
	}
	t.Setenv("NATS_SERVER_NAME", "nats-2")
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(root, "pkg", "natsserver", "conf", "cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.ServerName != "nats-2" || !opts.JetStream || opts.StoreDir != "/data" || opts.Cluster.Name != "dps" ||
		opts.Cluster.Port != 6222 || len(opts.Routes) != 3 || opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("cluster.conf: name %q, jetstream %v in %q, cluster %q:%d, %d routes, ports %d/%d",
			opts.ServerName, opts.JetStream, opts.StoreDir, opts.Cluster.Name, opts.Cluster.Port, len(opts.Routes), opts.Port, opts.HTTPPort)
	}
	var users []string
	for _, u := range opts.Users {
		users = append(users, u.Username)
		if u.Password != "0123456789abcdef" || u.Permissions == nil || u.Permissions.Publish == nil {
			t.Errorf("user %s: password from the environment %v, permissions %+v", u.Username, u.Password == "0123456789abcdef", u.Permissions)
		}
	}
	slices.Sort(users)
	if !slices.Equal(users, []string{"producer", "requester", "sender", "tracker"}) {
		t.Errorf("users %v", users)
	}
}

// TestDevstackEnvironmentIsKnown keeps the devstack's children environment in step with pkg/config.
func TestDevstackEnvironmentIsKnown(t *testing.T) {
	s := &Stack{cfg: Config{DatabaseURL: "postgres://x@127.0.0.1/db", LogLevel: "info"}}
	env := types.MappingWithEquals{}
	for _, kv := range s.childEnv() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = &v
	}
	assertKnownVariables(t, "devstack", env)
}

// TestComposeStopGrace: Docker waits longer after SIGTERM than the processes take to finish the work
// in hand, so that a stop never kills a sender mid-send or a tracker mid-batch.
func TestComposeStopGrace(t *testing.T) {
	p := loadCompose(t, nil)
	senderGrace, err := time.ParseDuration(*p.Services["sender"].Environment["SENDER_SHUTDOWN_GRACE"])
	if err != nil {
		t.Fatalf("sender SENDER_SHUTDOWN_GRACE: %v", err)
	}
	for name, drain := range map[string]time.Duration{"sender": senderGrace, "tracker": tracking.DefaultShutdownGrace} {
		s := p.Services[name]
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= drain {
			t.Errorf("%s stop_grace_period %v, want more than its %s drain", name, s.StopGracePeriod, drain)
		}
	}
}

// TestComposeAllProfiles: every profile together loads and validates, as `docker compose --profile
// go-sandbox --profile cluster --profile observability config` would.
func TestComposeAllProfiles(t *testing.T) {
	p := loadCompose(t, []string{"go-sandbox", "cluster", "observability"},
		"MESH_BASE_URL=https://mesh-sandbox-go:8700",
		"NATS_URL=nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222", "NATS_STREAM_REPLICAS=3")
	if len(p.DisabledServices) != 0 {
		t.Errorf("services left disabled with every profile: %v", serviceNames(p.DisabledServices))
	}
	for _, name := range pipeline {
		for dep := range p.Services[name].DependsOn {
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is not defined", name, dep)
			}
		}
	}
}

// TestComposeObservabilityProfile: `docker compose --profile observability` runs the official Prometheus
// and Grafana images, provisioned with the files of pkg/observability/ that the other tests check: the
// alert rules where prometheus.yml loads them, scrape targets that are the three processes on the port
// of their HTTP_ADDR, the datasource the dashboard names, and the dashboard directory Grafana reads.
func TestComposeObservabilityProfile(t *testing.T) {
	p := loadCompose(t, []string{"observability"})
	prom, graf := p.Services["prometheus"], p.Services["grafana"]
	if !strings.HasPrefix(prom.Image, "prom/prometheus:v3") {
		t.Errorf("prometheus image %q, want the official prom/prometheus v3", prom.Image)
	}
	if !strings.HasPrefix(graf.Image, "grafana/grafana:") {
		t.Errorf("grafana image %q, want the official grafana/grafana", graf.Image)
	}
	if d, ok := graf.DependsOn["prometheus"]; !ok || d.Condition != types.ServiceConditionHealthy {
		t.Error("grafana does not wait for prometheus")
	}
	mounts := func(s types.ServiceConfig) map[string]string {
		m := map[string]string{}
		for _, v := range s.Volumes {
			m[v.Target] = v.Source
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s, which is not in the repository: %v", s.Name, v.Source, err)
				}
				if !v.ReadOnly {
					t.Errorf("%s mounts %s writable", s.Name, v.Source)
				}
			}
		}
		return m
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	obs := filepath.Join(root, "pkg", "observability")
	promMounts, grafMounts := mounts(prom), mounts(graf)
	assertVolume(t, p, "prometheus", "/prometheus")
	assertVolume(t, p, "grafana", "/var/lib/grafana")

	var promConfig struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Type  string   `yaml:"type"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, promMounts["/etc/prometheus/prometheus.yml"], &promConfig)
	if promMounts["/etc/prometheus/prometheus.yml"] != filepath.Join(obs, "prometheus", "prometheus.yml") {
		t.Errorf("prometheus.yml mounted from %q", promMounts["/etc/prometheus/prometheus.yml"])
	}
	for _, rf := range promConfig.RuleFiles {
		if promMounts[rf] != filepath.Join(obs, "prometheus", "alerts.yml") {
			t.Errorf("rule file %s is mounted from %q, not pkg/observability/prometheus/alerts.yml", rf, promMounts[rf])
		}
	}
	if len(promConfig.RuleFiles) != 1 {
		t.Errorf("rule_files %v, want the one alerts file", promConfig.RuleFiles)
	}
	scraped := map[string]bool{}
	for _, sc := range promConfig.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, _ := strings.Cut(target, ":")
				scraped[host+":"+port] = true
			}
		}
		for _, dns := range sc.DNSSDConfigs {
			for _, n := range dns.Names {
				scraped[n+":"+strconv.Itoa(dns.Port)] = dns.Type == "A"
			}
		}
	}
	for _, name := range pipeline {
		_, port, _ := strings.Cut(*p.Services[name].Environment["HTTP_ADDR"], ":")
		if !scraped[name+":"+port] {
			t.Errorf("prometheus does not scrape %s on port %s (its HTTP_ADDR): %v", name, port, scraped)
		}
	}

	var datasources struct {
		Datasources []struct {
			UID, Type, URL string
		}
	}
	provisioning := grafMounts["/etc/grafana/provisioning"]
	readYAML(t, filepath.Join(provisioning, "datasources", "prometheus.yml"), &datasources)
	if len(datasources.Datasources) != 1 || datasources.Datasources[0].UID != "dps-prometheus" ||
		datasources.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana datasources %+v, want dps-prometheus at http://prometheus:9090", datasources.Datasources)
	}
	var providers struct {
		Providers []struct {
			Options struct{ Path string }
		}
	}
	readYAML(t, filepath.Join(provisioning, "dashboards", "dps.yml"), &providers)
	if len(providers.Providers) != 1 || grafMounts[providers.Providers[0].Options.Path] != filepath.Join(obs, "grafana", "dashboards") {
		t.Errorf("grafana reads dashboards from %+v, which is not pkg/observability/grafana/dashboards", providers.Providers)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
