package main

import (
	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/clientflags"
)

// How the runner serves direct links (docs/REMOTE.md, "Runners that do
// not listen"): listening on its own endpoints, or — the default without
// --listen — with no listening socket at all, the server relaying each
// link through its secondary endpoint and asking the runner for a
// connection over its control connection.
const (
	directRelay  = "relay"
	directListen = "listen"
)

func registerRelayFlags(fs *pflag.FlagSet, o *options) {
	fs.StringVar(&o.direct, "direct", "", "how direct links reach this runner: relay (no listening socket: the server relays them and asks this runner for a connection over its control connection) or listen (on --listen, else each service file's <endpoints> and <link> endpoints); default: listen with --listen, else relay")
	fs.IntVar(&o.maxRetries, "maxRetries", clientflags.DefaultMaxRetries, "attempts (`N`) to dial the server's secondary endpoint for one connection request")
}

// checkRelayFlags settles --direct and checks --maxRetries and
// --maxControlConnectionRestarts.
func checkRelayFlags(fs *pflag.FlagSet, o *options) error {
	switch o.direct {
	case "":
		o.direct = directRelay
		if len(o.listen) > 0 {
			o.direct = directListen
		}
	case directListen:
	case directRelay:
		if len(o.listen) > 0 {
			return cli.Usagef("--direct relay listens nowhere: leave out --listen/--endpoint, or use --direct listen")
		}
	default:
		return cli.Usagef("--direct %q: want relay or listen", o.direct)
	}
	if err := clientflags.CheckMaxRetries(o.maxRetries); err != nil {
		return err
	}
	n, err := o.conn.ControlRestarts()
	if err != nil {
		return err
	}
	o.restarts = n
	return nil
}

// providerRelay is the provider's relay configuration, nil when the
// runner listens.
func (o *options) providerRelay() *client.ProviderRelay {
	if o.direct != directRelay {
		return nil
	}
	return &client.ProviderRelay{MaxRetries: o.maxRetries}
}
