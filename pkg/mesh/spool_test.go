package mesh

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestSpoolDirPrivateAndCleanedAtStart: a client makes its spool directory private and removes the
// files of processes that stopped (a sender killed mid-send), keeping those of running ones.
func TestSpoolDirPrivateAndCleanedAtStart(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "dps-spool-"+strconv.Itoa(os.Getuid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, spoolPrefix+strconv.Itoa(dead.ProcessState.Pid())+"-123")
	live := filepath.Join(dir, spoolPrefix+strconv.Itoa(os.Getpid())+"-456")
	for _, f := range []string{stale, live} {
		if err := os.WriteFile(f, []byte("NHS_NUMBER|...\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Config{BaseURL: "https://localhost:1", Mailbox: "X1", Password: "p", SharedKey: "k", SpoolDir: parent}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("spool directory mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the spool file of a stopped process is still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the spool file of a running process was removed: %v", err)
	}
}

// TestSpoolFileHasNoName: a spool file is unlinked as soon as it is open, so nothing is left on disk
// whatever becomes of the process, and it still reads back what was written.
func TestSpoolFileHasNoName(t *testing.T) {
	dir, err := privateSpoolDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := createSpoolFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("row\n"); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("spool directory holds %v while a spool file is open, want nothing", entries)
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 4))
	if err != nil || string(b) != "row\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

// TestSpoolDirOfAnotherKindRefused: a symbolic link planted where the spool directory goes is refused.
func TestSpoolDirOfAnotherKindRefused(t *testing.T) {
	parent := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(parent, "dps-spool-"+strconv.Itoa(os.Getuid()))); err != nil {
		t.Fatal(err)
	}
	if _, err := privateSpoolDir(parent); err == nil {
		t.Fatal("a symbolic link was accepted as the spool directory")
	}
}
