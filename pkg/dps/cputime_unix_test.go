//go:build unix

package dps

import (
	"syscall"
	"time"
)

// processCPU is this process's user+system CPU time. Benchmarks report CPU
// time per row besides wall time because the shared CI machine is often
// oversubscribed, which inflates wall time but not CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
