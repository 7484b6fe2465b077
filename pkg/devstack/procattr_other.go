//go:build !linux && !windows

package main

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts a child in its own process group, so that Ctrl-C reaches only the devstack, which
// then stops the children in order.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
