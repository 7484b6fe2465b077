package tracking

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tr := &Tracker{cfg: Config{PollInterval: time.Minute, MaxBackoff: time.Hour}}
	cases := []struct {
		n    int
		want time.Duration
	}{
		{0, time.Minute},
		{1, time.Minute},
		{2, 2 * time.Minute},
		{3, 4 * time.Minute},
		{6, 32 * time.Minute},
		{7, time.Hour}, // 64 minutes, capped
		{1000, time.Hour},
	}
	for _, tc := range cases {
		if got := tr.backoff(tc.n); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}
