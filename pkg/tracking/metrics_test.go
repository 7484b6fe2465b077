package tracking_test

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-dps/dps-pipeline/pkg/tracking"
)

// TestMetricsExistFromStart: every labelled series is exported at zero before anything happens, so
// that alerts on failures or handshake errors see a rate of zero rather than no data.
func TestMetricsExistFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	tracking.NewMetrics(reg, nil, slog.New(slog.DiscardHandler))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range families {
		got[f.GetName()] = len(f.GetMetric())
	}
	want := map[string]int{
		"dps_tracker_transitions_total":            5,  // acknowledged, received, processed, failed, rejected
		"dps_tracker_inbox_messages_total":         10, // 5 kinds × applied, held
		"dps_tracker_inbox_dead_letters_total":     1,
		"dps_tracker_mailbox_handshakes_total":     2, // ok, failed
		"dps_tracker_tracking_errors_total":        3, // transient, permanent, unknown
		"dps_tracker_sent_to_acknowledged_seconds": 1,
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d series, want %d", name, got[name], n)
		}
	}
}
