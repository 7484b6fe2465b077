// Package logging builds the slog logger every process uses: tint on a terminal, JSON otherwise, and a
// redaction layer underneath both that masks secrets and patient identifiers whatever the call site does.
// It owns no configuration parsing and writes nowhere but the writer it is given.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// Formats accepted by New.
const (
	FormatAuto = "auto"
	FormatText = "text"
	FormatJSON = "json"
)

// ParseLevel turns LOG_LEVEL's value into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("must be one of debug, info, warn, error")
}

// New returns a logger writing to w. Format "auto" picks tint when w is a terminal and JSON otherwise, so
// that a container's log collector always receives one JSON object per line.
func New(w io.Writer, level slog.Level, format string) (*slog.Logger, error) {
	var inner slog.Handler
	switch format {
	case FormatAuto, "":
		if isTerminal(w) {
			inner = tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly})
		} else {
			inner = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
		}
	case FormatText:
		inner = tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)})
	case FormatJSON:
		inner = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	default:
		return nil, fmt.Errorf("log format %q: must be one of auto, text, json", format)
	}
	return slog.New(NewRedactingHandler(inner)), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// Discard is a logger for tests and commands that must stay quiet.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
