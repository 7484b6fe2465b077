package proctest_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/nhs-dps/dps-pipeline/pkg/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

func TestBinaryBuildsOncePerPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	const pkg = "./pkg/devstack/healthcheck"
	var wg sync.WaitGroup
	paths := make([]string, 4)
	for i := range paths {
		wg.Go(func() { paths[i] = proctest.Binary(t, pkg) })
	}
	wg.Wait()
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("paths %q: want one build", paths)
		}
	}
	if _, err := os.Stat(paths[0]); err != nil {
		t.Fatalf("no binary: %v", err)
	}
	// It is the command: run without arguments it says how to use it and exits non-zero.
	out, err := exec.Command(paths[0]).CombinedOutput()
	if err == nil {
		t.Errorf("healthcheck without arguments exited 0: %s", out)
	}
}

// fatalRecorder records Fatal instead of stopping the test, to look at a failed build.
type fatalRecorder struct{ msg string }

func (f *fatalRecorder) Helper()           {}
func (f *fatalRecorder) Fatal(args ...any) { f.msg = fmt.Sprint(args...) }

func TestBinaryReportsABuildFailure(t *testing.T) {
	var r fatalRecorder
	proctest.Binary(&r, "./no/such/package")
	if !strings.Contains(r.msg, "go build") || !strings.Contains(r.msg, "no/such/package") {
		t.Errorf("Fatal(%q), want the go build error naming the package", r.msg)
	}
}

func TestBufferConcurrentWritesAndReads(t *testing.T) {
	var b proctest.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintln(&b, "line")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 {
		t.Errorf("%d lines, want 800", got)
	}
}
