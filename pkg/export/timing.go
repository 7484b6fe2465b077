package export

import (
	"log/slog"
	"time"
)

// runTimer notes when each step of an export run ended, so that the run can log how long each step
// took and how long its locks were held.
type runTimer struct {
	start time.Time
	steps []string
	ends  []time.Time
}

func newRunTimer(start time.Time) *runTimer { return &runTimer{start: start} }

// mark ends the step called name (it began when the previous one ended).
func (t *runTimer) mark(name string) {
	t.steps = append(t.steps, name)
	t.ends = append(t.ends, time.Now())
}

// step is how long the step called name took; zero if it did not run.
func (t *runTimer) step(name string) time.Duration {
	for i, s := range t.steps {
		if s == name {
			began := t.start
			if i > 0 {
				began = t.ends[i-1]
			}
			return t.ends[i].Sub(began)
		}
	}
	return 0
}

// total is the time from the start to the end of the last step.
func (t *runTimer) total() time.Duration {
	if len(t.ends) == 0 {
		return 0
	}
	return t.ends[len(t.ends)-1].Sub(t.start)
}

// attrs is one duration attribute per step, named "<step>_took".
func (t *runTimer) attrs() []any {
	out := make([]any, 0, len(t.steps))
	for _, s := range t.steps {
		out = append(out, slog.Duration(s+"_took", t.step(s)))
	}
	return out
}
