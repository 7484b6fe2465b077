package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// The dashboard and the alert rules shipped in pkg/observability/ are checked here: the rules with
// Prometheus's own rule parser, every expression with its PromQL parser, and (in TestEndToEnd) every
// metric, label and label value they name against what the three real processes export.

func observabilityPath(parts ...string) string {
	return filepath.Join(append([]string{"..", "observability"}, parts...)...)
}

var promql = parser.NewParser(parser.Options{})

// alertRules parses the rules file as Prometheus loads it (unknown fields refused, every expression and
// template checked) and returns each rule's name and expression.
func alertRules(t *testing.T) map[string]string {
	t.Helper()
	groups, errs := rulefmt.ParseFile(observabilityPath("prometheus", "alerts.yml"), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("alerts.yml: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	rules := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r.Expr
		}
	}
	return rules
}

// The alerts the issue asks for, by name.
var wantAlerts = []string{
	"DPSExportNotAcknowledged",          // not acknowledged 24 h after it was sent
	"DPSExportNotDownloaded",            // sent more than 3 days ago, before MESH's 5-day non-delivery
	"DPSDeadLettersGrowing",             // dead letters growing
	"DPSMailboxHandshakeFailed",         // a failed handshake
	"DPSMESHCertificateExpiring",        // certificate expiring within 30 days
	"DPSConsumerLagGrowing",             // consumer lag growing for 15 minutes
	"DPSOutboxBacklogGrowing",           // outbox backlog growing for 15 minutes
	"DPSMESHCertificateExpiresThisWeek", // and a few more
	"DPSMESHCABundleExpiring",
	"DPSConsumerStalled",
	"DPSProcessDown",
}

// TestAlertRulesParse: the rules file passes Prometheus's rule parser and has every alert the README
// explains.
func TestAlertRulesParse(t *testing.T) {
	rules := alertRules(t)
	for _, name := range wantAlerts {
		if _, ok := rules[name]; !ok {
			t.Errorf("alerts.yml has no alert %s", name)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range rules {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README does not say what to do when %s fires", name)
		}
	}
}

type dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardExprs returns every panel's queries, with Grafana's interval variables replaced by a value
// so that they parse as PromQL.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(observabilityPath("grafana", "dashboards", "dps-pipeline.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	exprs := map[string]string{}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "24h")
	for _, p := range d.Panels {
		if p.Datasource.UID != "dps-prometheus" {
			t.Errorf("panel %q uses datasource %q, not the provisioned dps-prometheus", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q query %d", p.Title, i+1)] = vars.Replace(tg.Expr)
		}
	}
	return exprs
}

// TestDashboardParses: every query of the dashboard is valid PromQL, and the panels the issue asks for
// are there.
func TestDashboardParses(t *testing.T) {
	exprs := dashboardExprs(t)
	var all []string
	for where, e := range exprs {
		if _, err := promql.ParseExpr(e); err != nil {
			t.Errorf("%s: %v", where, err)
		}
		all = append(all, e)
	}
	joined := strings.Join(all, "\n")
	for what, metric := range map[string]string{
		"exports by status":     "dps_exports_by_status",
		"stage lag":             "dps_consumer_pending_messages",
		"send duration":         "dps_sender_send_duration_seconds_bucket",
		"MESH errors by code":   "dps_mesh_errors_total",
		"dead letters":          "dps_deadletter_messages",
		"handshake results":     "dps_tracker_mailbox_handshakes_total",
		"certificate days left": "dps_mesh_client_certificate_expiry_timestamp_seconds",
	} {
		if !strings.Contains(joined, metric) {
			t.Errorf("the dashboard has no %s panel (%s)", what, metric)
		}
	}
}

// exported is what the processes serve on /metrics: per series name (histograms and summaries
// expanded to _bucket, _sum and _count), each label name with the values seen.
type exported map[string]map[string]map[string]bool

// scrapeMetrics reads /metrics from each address and merges what they export.
func scrapeMetrics(t *testing.T, addrs []string) exported {
	t.Helper()
	out := exported{}
	add := func(name string, lp map[string]string) {
		if out[name] == nil {
			out[name] = map[string]map[string]bool{}
		}
		for k, v := range lp {
			if out[name][k] == nil {
				out[name][k] = map[string]bool{}
			}
			out[name][k][v] = true
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, addr := range addrs {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", addr, err)
		}
		textParser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := textParser.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("parse /metrics of %s: %v", addr, err)
		}
		for name, f := range families {
			for _, m := range f.GetMetric() {
				lp := map[string]string{}
				for _, l := range m.GetLabel() {
					lp[l.GetName()] = l.GetValue()
				}
				switch {
				case m.GetHistogram() != nil:
					add(name+"_sum", lp)
					add(name+"_count", lp)
					bucket := map[string]string{"le": "+Inf"}
					for k, v := range lp {
						bucket[k] = v
					}
					add(name+"_bucket", bucket)
				case m.GetSummary() != nil:
					add(name+"_sum", lp)
					add(name+"_count", lp)
					add(name, lp)
				default:
					add(name, lp)
				}
			}
		}
	}
	return out
}

// targetLabels are added by Prometheus to every scraped series; up is the series it makes per target.
var targetLabels = []string{"job", "instance"}

// checkNamesExported fails for every problem namesNotExported finds.
func checkNamesExported(t *testing.T, where, expr string, got exported) {
	t.Helper()
	for _, p := range namesNotExported(expr, got) {
		t.Errorf("%s: %s", where, p)
	}
}

// namesNotExported lists every metric, label name or label value expr names that got does not have, and
// every aggregation label none of its metrics carries.
func namesNotExported(expr string, got exported) []string {
	node, err := promql.ParseExpr(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		switch v := n.(type) {
		case *parser.VectorSelector:
			problems = append(problems, selectorNotExported(v, got)...)
		case *parser.AggregateExpr:
			var names []string
			parser.Inspect(v.Expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					names = append(names, vs.Name)
				}
				return nil
			})
			for _, l := range v.Grouping {
				if slices.Contains(targetLabels, l) {
					continue
				}
				found := false
				for _, name := range names {
					if _, ok := got[name][l]; ok {
						found = true
					}
				}
				if !found {
					problems = append(problems, fmt.Sprintf("groups by %q, which none of %v carries", l, names))
				}
			}
		}
		return nil
	})
	return problems
}

func selectorNotExported(v *parser.VectorSelector, got exported) []string {
	if v.Name == "up" {
		return nil // made by Prometheus for each target, with job and instance
	}
	series, ok := got[v.Name]
	if !ok {
		return []string{fmt.Sprintf("names %s, which no process exports", v.Name)}
	}
	var problems []string
	for _, m := range v.LabelMatchers {
		if m.Name == labels.MetricName || slices.Contains(targetLabels, m.Name) {
			continue
		}
		values, ok := series[m.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v)", v.Name, m.Name, sortedKeys(series)))
			continue
		}
		if m.Type == labels.MatchEqual && m.Value != "" && !values[m.Value] {
			problems = append(problems, fmt.Sprintf("%s{%s} is never exported (values: %v)", v.Name, m, sortedKeys(values)))
		}
	}
	return problems
}

// TestNamesNotExportedCatchesMistakes: the check the end-to-end run applies finds a misspelt metric, a
// label a metric does not have, a value it never takes and a grouping label nobody carries.
func TestNamesNotExportedCatchesMistakes(t *testing.T) {
	got := exported{
		"dps_exports_by_status":                   {"status": {"created": true, "accepted": true}},
		"dps_sender_send_duration_seconds_bucket": {"le": {"+Inf": true}},
	}
	tests := []struct {
		expr     string
		problems int
	}{
		{`max by (status) (dps_exports_by_status{status="accepted"})`, 0},
		{`histogram_quantile(0.9, sum by (le) (rate(dps_sender_send_duration_seconds_bucket[5m])))`, 0},
		{`up{job="dps-producer"} == 0`, 0},
		{`dps_export_by_status`, 1},                       // misspelt metric
		{`dps_exports_by_status{state="accepted"}`, 1},    // no such label
		{`dps_exports_by_status{status="sent"}`, 1},       // never that value
		{`sum by (programme) (dps_exports_by_status)`, 1}, // grouping label nobody carries
		{`sum by (instance) (dps_exports_by_status)`, 0},  // added by Prometheus
		{`dps_exports_by_status{status=~"acc.*"}`, 0},     // a regex names only the label
		{`rate(dps_sender_send_duration_seconds[5m])`, 1}, // a histogram has no bare series
		{`dps_exports_by_status{`, 1},                     // not PromQL
	}
	for _, tt := range tests {
		if p := namesNotExported(tt.expr, got); len(p) != tt.problems {
			t.Errorf("%s: %d problems %q, want %d", tt.expr, len(p), p, tt.problems)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// testObservabilityNames scrapes every process of the stack and checks the dashboard and the rules
// against what they export.
func testObservabilityNames(t *testing.T, s *Stack) {
	var addrs []string
	for _, c := range s.children {
		addrs = append(addrs, c.httpAddr)
	}
	got := scrapeMetrics(t, addrs)
	for name, expr := range alertRules(t) {
		checkNamesExported(t, "alert "+name, expr, got)
	}
	for where, expr := range dashboardExprs(t) {
		checkNamesExported(t, "dashboard "+where, expr, got)
	}
}
