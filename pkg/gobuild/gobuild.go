// Package gobuild builds this module's commands with the go tool, for the devstack program and for the
// tests that run the commands as real processes (pkg/proctest), so that the two build the same way. It
// must not run what it builds.
package gobuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNotInModule is ModuleRoot's error when the working directory is outside the module.
var ErrNotInModule = errors.New("not inside the dps-pipeline module")

// ModuleRoot is the directory of this module's go.mod, wherever the test or program runs from.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", ErrNotInModule
	}
	return filepath.Dir(gomod), nil
}

// Build compiles the packages (module-relative, "./sender") into dir with one go build, so that the
// packages they share are compiled once. No -race: the processes run at production speed, and every
// package has its own race-checked tests.
func Build(ctx context.Context, dir string, pkgs ...string) error {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
