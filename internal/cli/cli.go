// Package cli holds what the commands share: logger setup and exit codes.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// ErrHelp is what a command returns after printing its help (pflag.ErrHelp).
var ErrHelp = pflag.ErrHelp

// Exit statuses of every Connect command.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError marks an error as bad usage (exit status 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// NewLogger builds a slog logger writing to w at level ("debug", "info",
// "warn", "error") in format ("text" or "json").
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", format)
}

// ExitStatus reports err on stderr the way every Connect command does and
// returns the exit status: 0 for nil or a help request (ErrHelp, which the
// flag package already answered), 2 with a usage hint for a *UsageError, 1
// otherwise.
func ExitStatus(program string, err error, stderr io.Writer) int {
	var usage *UsageError
	switch {
	case err == nil || errors.Is(err, ErrHelp):
		return ExitOK
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", program, err, program)
		return ExitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", program, err)
		return ExitFailure
	}
}
