// Package clientflags holds the connection flags that every command acting
// as a Connect client shares (connectclient, remoteservicerunner): the
// server URL, the credentials, the ssl settings, a bearer plugin and the
// state directory, and turns them into what client.Dial needs.
package clientflags

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/pluginhost"
)

// Flags are the connection flags.
type Flags struct {
	Server, Token, TokenFile, CA, Cert, Key, StateDir, BearerPlugin string
	Insecure                                                        bool
	// MaxControlConnectionRestarts is --maxControlConnectionRestarts
	// (control.go).
	MaxControlConnectionRestarts int
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Server, "server", "tcp://127.0.0.1:9500", "server `URL` (tcp://, udp://, ssl://, or a plugin bearer's scheme)")
	fs.StringVar(&f.Token, "token", "", "authentication `TOKEN` (default: $CONNECT_TOKEN, else the token file in the state directory)")
	fs.StringVar(&f.TokenFile, "token-file", "", "read the token from `FILE`")
	fs.StringVar(&f.CA, "ca", "", "ssl: trust the server certificate(s) in `FILE` (PEM)")
	fs.StringVar(&f.Cert, "cert", "", "ssl: client certificate `FILE` (PEM), with --key")
	fs.StringVar(&f.Key, "key", "", "ssl: client key `FILE` (PEM), with --cert")
	fs.BoolVar(&f.Insecure, "insecure", false, "ssl: do not verify the server certificate (development only)")
	fs.StringVar(&f.StateDir, "state-dir", "", "state `DIR` (default $CONNECT_STATE_DIR, else ~/.local/state/connect)")
	fs.StringVar(&f.BearerPlugin, "bearer-plugin", "", "dial through the bearer plugin executable at `PATH` (for a third-party scheme)")
	f.registerControl(fs) // control.go
}

// Endpoint parses --server.
func (f *Flags) Endpoint() (bearers.Endpoint, error) {
	ep, err := bearers.ParseEndpoint(f.Server)
	if err != nil {
		return ep, cli.Usagef("--server: %v", err)
	}
	return ep, nil
}

// FindToken returns --token, --token-file, $CONNECT_TOKEN, or else the
// server's generated token file in the state directory dir if there is
// one; "" when none (the server may accept a client certificate instead).
func (f *Flags) FindToken(dir string) (string, error) {
	switch {
	case f.Token != "" && f.TokenFile != "":
		return "", cli.Usagef("--token and --token-file are exclusive")
	case f.Token != "":
		return f.Token, nil
	case f.TokenFile != "":
		t, err := statedir.ReadToken(f.TokenFile)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return t, nil
	case os.Getenv("CONNECT_TOKEN") != "":
		return os.Getenv("CONNECT_TOKEN"), nil
	}
	if t, err := statedir.ReadToken(statedir.TokenFile(dir)); err == nil {
		return t, nil
	}
	return "", nil
}

// Bearer returns the bearer that dials ep: the plugin --bearer-plugin
// names, else the stock bearer of ep's scheme, in process, with the ssl
// flags as its attributes. closeBearer stops a plugin.
func (f *Flags) Bearer(ctx context.Context, ep bearers.Endpoint, dir string, logger *slog.Logger) (b bearers.Bearer, closeBearer func(), err error) {
	attrs := bearers.Attributes{}
	sslFlags := f.CA != "" || f.Cert != "" || f.Key != "" || f.Insecure
	if (f.Cert == "") != (f.Key == "") {
		return nil, nil, cli.Usagef("--cert and --key go together")
	}
	if ep.Scheme == "ssl" {
		if f.CA != "" {
			attrs["ca"] = f.CA
		}
		if f.Cert != "" {
			attrs["clientCert"], attrs["clientKey"] = f.Cert, f.Key
		}
		if f.Insecure {
			attrs["insecureSkipVerify"] = "true"
		}
	} else if sslFlags && f.BearerPlugin == "" {
		return nil, nil, cli.Usagef("--ca, --cert, --key and --insecure apply to ssl:// servers, not %s://", ep.Scheme)
	}
	if f.BearerPlugin != "" {
		p, err := pluginhost.Start(ctx, pluginhost.Options{Name: f.BearerPlugin, Path: f.BearerPlugin,
			Config: bearers.Config{Attributes: attrs, StateDir: dir}, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		if p.Info().Scheme != ep.Scheme {
			p.Close()
			return nil, nil, cli.Usagef("--bearer-plugin %s serves %s://, but --server is %s", f.BearerPlugin, p.Info().Scheme, ep)
		}
		return p, func() { p.Close() }, nil
	}
	reg, err := stock.Registry().ByScheme(ep.Scheme)
	if err != nil {
		return nil, nil, cli.Usagef("--server %s: %v; for a third-party bearer pass --bearer-plugin PATH", ep, err)
	}
	b, err = reg.New(bearers.Config{Attributes: attrs, StateDir: dir})
	if err != nil {
		return nil, nil, err
	}
	if n, ok := b.(bearers.Noticer); ok {
		for _, msg := range n.Notices() {
			logger.Warn(msg)
		}
	}
	return b, func() {}, nil
}
