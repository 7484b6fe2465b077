package main

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts a child in its own process group, so that Ctrl-C reaches only the devstack, which
// then stops the children in order; and asks Linux to kill the child if the devstack dies first, so
// that a crashed devstack leaves no orphans holding ports.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
