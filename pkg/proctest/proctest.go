// Package proctest supports tests that run this module's commands as real processes: it builds each
// command once per test process (with pkg/gobuild, as the devstack does) and hands out its path, and it
// holds the goroutine-safe buffer such tests collect a child's output (or a logger's) in while they
// read it. It is imported by tests only, and must not start or stop processes itself.
package proctest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/nhs-dps/dps-pipeline/pkg/gobuild"
)

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
	dir, err := os.MkdirTemp(root, binaryName(pkg)+"-")
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	if err := gobuild.Build(context.Background(), dir, pkg); err != nil {
		return "", err
	}
	name := binaryName(pkg)
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	return filepath.Join(dir, name), nil
}

// binaryName is the name go build gives pkg's binary: its last element, or the one before a major
// version suffix ("github.com/nats-io/nats-server/v2" builds "nats-server").
func binaryName(pkg string) string {
	name := path.Base(pkg)
	if len(name) > 1 && name[0] == 'v' && strings.Trim(name[1:], "0123456789") == "" {
		return path.Base(path.Dir(pkg))
	}
	return name
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
