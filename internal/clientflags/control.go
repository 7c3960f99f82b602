package clientflags

import (
	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/internal/cli"
)

// Limits of the control-connection flags.
const (
	// DefaultMaxControlConnectionRestarts is --maxControlConnectionRestarts
	// by default (client.DefaultMaxControlConnectionRestarts).
	DefaultMaxControlConnectionRestarts = 10
	// DefaultMaxRetries is --maxRetries by default.
	DefaultMaxRetries = 10
	// MaxLimit bounds both flags.
	MaxLimit = 1000
)

func (f *Flags) registerControl(fs *pflag.FlagSet) {
	fs.IntVar(&f.MaxControlConnectionRestarts, "maxControlConnectionRestarts", DefaultMaxControlConnectionRestarts,
		"give up after recreating the control connection to the server `N` times in a row, one restart per dead-path window, without resuming on it (a successful resume starts the count again; 0: never give up)")
}

// ControlRestarts checks --maxControlConnectionRestarts and returns it as
// client.Config.MaxControlConnectionRestarts (negative: no limit).
func (f *Flags) ControlRestarts() (int, error) {
	n := f.MaxControlConnectionRestarts
	switch {
	case n < 0 || n > MaxLimit:
		return 0, cli.Usagef("--maxControlConnectionRestarts must be from 0 (no limit) to %d, got %d", MaxLimit, n)
	case n == 0:
		return -1, nil
	}
	return n, nil
}

// CheckMaxRetries checks a --maxRetries value.
func CheckMaxRetries(n int) error {
	if n < 1 || n > MaxLimit {
		return cli.Usagef("--maxRetries must be from 1 to %d, got %d", MaxLimit, n)
	}
	return nil
}
