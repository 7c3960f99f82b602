package main

import (
	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/internal/cli"
)

// controlFlags are the secondary endpoint's flags, named as the <resume>
// attributes they override (docs/CONFIG.md).
type controlFlags struct {
	bindPort, connectPort, maxRetries int
}

func registerControlFlags(fs *pflag.FlagSet) *controlFlags {
	f := &controlFlags{}
	fs.IntVar(&f.bindPort, "secondaryBindPort", 0, "TCP `PORT` of the secondary endpoint, where runners without listening sockets connect when asked and their clients' direct links are relayed (default from <resume secondaryBindPort>, 0: an ephemeral port)")
	fs.IntVar(&f.connectPort, "secondaryConnectPort", 0, "`PORT` runners and clients are told to dial for the secondary endpoint, behind address translation (default from <resume secondaryConnectPort>, 0: the bound port)")
	fs.IntVar(&f.maxRetries, "maxRetries", 0, "attempts (`N`) to bind the secondary endpoint's port (default from <resume maxRetries>, 10)")
	return f
}

// apply applies the flags given over the configuration.
func (f *controlFlags) apply(fs *pflag.FlagSet, cfg *config.Server) error {
	port := func(name string, v int, dst *int) error {
		if !fs.Changed(name) {
			return nil
		}
		if v < 0 || v > 65535 {
			return cli.Usagef("--%s must be from 0 to 65535, got %d", name, v)
		}
		*dst = v
		return nil
	}
	if err := port("secondaryBindPort", f.bindPort, &cfg.Resume.SecondaryBindPort); err != nil {
		return err
	}
	if err := port("secondaryConnectPort", f.connectPort, &cfg.Resume.SecondaryConnectPort); err != nil {
		return err
	}
	if fs.Changed("maxRetries") {
		if f.maxRetries < 1 || f.maxRetries > config.MaxRetriesLimit {
			return cli.Usagef("--maxRetries must be from 1 to %d, got %d", config.MaxRetriesLimit, f.maxRetries)
		}
		cfg.Resume.MaxRetries = f.maxRetries
	}
	return nil
}
