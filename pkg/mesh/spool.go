package mesh

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A body that must be read twice (compressed, or not seekable) is spooled to a file: the CSV of an
// export, so patient data. The file lives in a directory only this user can enter, and it has no name
// on disk for longer than it takes to open it: it is unlinked at once and read through its descriptor,
// so a process killed with SIGKILL leaves nothing behind. Files an older or crashed process left are
// removed when a client starts.

// spoolPrefix starts every spool file's name; the creating process's id follows.
const spoolPrefix = "send-"

// privateSpoolDir returns parent/dps-spool-<uid>, created 0700 if missing, after checking that it is a
// real directory owned by this user that nobody else can enter (a directory planted by another user in
// a shared /tmp would otherwise receive our files).
func privateSpoolDir(parent string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	dir := filepath.Join(parent, "dps-spool-"+strconv.Itoa(os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("mesh spool: create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("mesh spool: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return "", fmt.Errorf("mesh spool: %s is not a directory (a symbolic link?); remove it", dir)
	case ok && int(st.Uid) != os.Getuid():
		return "", fmt.Errorf("mesh spool: %s belongs to another user; remove it", dir)
	case fi.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("mesh spool: make %s private: %w", dir, err)
		}
	}
	return dir, nil
}

// createSpoolFile opens a new spool file in dir and unlinks it at once.
func createSpoolFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, spoolPrefix+strconv.Itoa(os.Getpid())+"-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cleanSpoolDir removes the spool files of processes that are no longer running (a file survives only
// if a process died between creating and unlinking it). A running process's file is left alone.
func cleanSpoolDir(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		log.Warn("mesh spool: cannot list leftovers", slog.String("dir", dir), slog.Any("error", err))
		return
	}
	for _, e := range entries {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(e.Name(), spoolPrefix), "-")
		pid, err := strconv.Atoi(pidText)
		if !strings.HasPrefix(e.Name(), spoolPrefix) || !ok || err != nil || processAlive(pid) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("mesh spool: cannot remove a leftover file", slog.String("file", e.Name()), slog.Any("error", err))
			continue
		}
		log.Info("mesh spool: removed a file left by a process that stopped", slog.String("file", e.Name()))
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
