// Package proctest supports tests that run this module's commands as real processes: it builds each
// command once per test process and hands out its path, and it holds the goroutine-safe buffer such
// tests collect a child's output (or a logger's) in while they read it. It also builds the devstack's
// binaries, so the two build the same way. It must not start or stop processes itself, and it does not
// import package testing, so that the devstack program may use it.
package proctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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

// TB is the part of testing.TB that Binary uses.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// built is one package's binary, built at most once per test process.
type built struct {
	once sync.Once
	path string
	err  error
}

var (
	binariesDir string // the temporary directory every binary of this test process is built under
	binariesMu  sync.Mutex
	builds      = map[string]*built{}
)

// Binary returns the path of the command pkg (module-relative, "./tracker"), building it the first
// time any test of this process asks; tests asking for it meanwhile wait for that one build, and tests
// asking for other packages build those at the same time. A failed build fails every test that asks.
// Remove the binaries at the end with Main.
func Binary(t TB, pkg string) string {
	t.Helper()
	binariesMu.Lock()
	b, ok := builds[pkg]
	if !ok {
		b = &built{}
		builds[pkg] = b
	}
	binariesMu.Unlock()
	b.once.Do(func() { b.path, b.err = buildOne(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildOne(pkg string) (string, error) {
	binariesMu.Lock()
	if binariesDir == "" {
		dir, err := os.MkdirTemp("", "proctest-bin-")
		if err != nil {
			binariesMu.Unlock()
			return "", fmt.Errorf("build %s: %w", pkg, err)
		}
		binariesDir = dir
	}
	root := binariesDir
	binariesMu.Unlock()
	// One directory per package, since two packages may end in the same name.
	dir, err := os.MkdirTemp(root, filepath.Base(pkg)+"-")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	if err := Build(context.Background(), dir, pkg); err != nil {
		return "", err
	}
	name := filepath.Base(pkg)
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	return filepath.Join(dir, name), nil
}

// Main runs the tests (m is the *testing.M of TestMain), removes the binaries Binary built and exits
// with the tests' status: func TestMain(m *testing.M) { proctest.Main(m) }.
func Main(m interface{ Run() int }) {
	code := m.Run()
	binariesMu.Lock()
	if binariesDir != "" {
		_ = os.RemoveAll(binariesDir)
	}
	binariesMu.Unlock()
	os.Exit(code)
}

// Buffer is a bytes.Buffer that a child's output pump (or a logger) may write while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
