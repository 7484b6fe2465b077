// Package failpoint lets a crash test stop a real process between two steps whose order matters: the
// process exits at once, as a crash would, when the environment variable DPS_FAILPOINT names the point
// it reaches. It is inert otherwise, and imports nothing of the pipeline, so that any package may mark
// its crash points without depending on process wiring.
package failpoint

import (
	"fmt"
	"os"
)

// Variable is the environment variable that names the failpoint to stop at.
const Variable = "DPS_FAILPOINT"

// ExitCode is the exit status of a process stopped at a failpoint.
const ExitCode = 86

// HangVariable, set to "true", makes a process that reaches its failpoint stop there instead of exiting:
// it says so on stderr and waits to be SIGKILLed, so that a test's kill lands exactly between two steps.
const HangVariable = "DPS_FAILPOINT_HANG"

// Reach ends the process with ExitCode when DPS_FAILPOINT is name (or, with DPS_FAILPOINT_HANG=true,
// stops it there until it is killed).
func Reach(name string) {
	if os.Getenv(Variable) == name {
		if os.Getenv(HangVariable) == "true" {
			fmt.Fprintf(os.Stderr, "failpoint %s: waiting for SIGKILL\n", name)
			select {}
		}
		fmt.Fprintf(os.Stderr, "failpoint %s: exiting\n", name)
		os.Exit(ExitCode)
	}
}
