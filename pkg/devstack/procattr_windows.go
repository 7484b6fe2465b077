package main

import "os/exec"

// setProcAttr does nothing on Windows: there is no process group to move the child into.
func setProcAttr(*exec.Cmd) {}
