//go:build !unix

package dps

import "time"

func processCPU() time.Duration { return 0 }
