package runner

import "time"

// Backoff is the nak delay of a retry, by delivery number (1 for the first delivery).
type Backoff func(delivery uint64) time.Duration

// Exponential doubles from first with each delivery, up to limit: first, 2·first, 4·first, … limit.
func Exponential(first, limit time.Duration) Backoff {
	return func(n uint64) time.Duration {
		d := first
		for i := uint64(1); i < n && d < limit; i++ {
			d *= 2
		}
		return min(d, limit)
	}
}

// Steps is delays[n-1] for delivery n; the last step repeats. It panics on an empty list, which is a
// programming error.
func Steps(delays ...time.Duration) Backoff {
	if len(delays) == 0 {
		panic("runner.Steps: no delays")
	}
	delays = append([]time.Duration(nil), delays...)
	return func(n uint64) time.Duration {
		i := min(int(max(n, 1))-1, len(delays)-1)
		return delays[i]
	}
}
