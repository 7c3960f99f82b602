// Command connectclient talks to a Connect server.
//
//	connectclient [--server URL] [--token TOKEN | --token-file FILE] [--ca FILE]
//	              [--cert F --key F] [--insecure] [--state-dir DIR] [--json]
//	              [--timeout D] [--bearer-plugin PATH] [--session-file FILE] COMMAND ...
//
// Commands:
//
//	ping                               connect, register, measure round trips
//	services                           list the server's services
//	describe SERVICE [--xml|--routing] show a service's methods, events and data
//	call SERVICE.METHOD [name=value]...  call a method (arguments typed from the XML)
//	events SERVICE [EVENT]...          print events until interrupted or --count N
//	watch SERVICE [PATH]               print runtime data, then its changes
//	top [--json]                       live view of the server's figures (Diagnostics); q quits
//	version                            print the version
//
// Human output by default, --json for scripts. Exit status 0 on success, 1
// on a reported failure, 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/internal/version"
	"github.com/bearerkit/connect/pluginhost"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	server, token, tokenFile, ca, cert, key, stateDir, bearerPlugin, name string
	sessionFile                                                           string
	logLevel                                                              string
	insecure, json, xml, routing                                          bool
	linkCA                                                                string
	linkInsecure, noDirect, linkStats                                     bool
	timeout, regTimeout                                                   time.Duration
	count                                                                 int
	interval                                                              time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.ExitStatus("connectclient", dispatch(args, stdout, stderr), stderr)
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("connectclient", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.server, "server", "tcp://127.0.0.1:9500", "server `URL` (tcp://, udp://, ssl://, or a plugin bearer's scheme)")
	fs.StringVar(&o.token, "token", "", "authentication `TOKEN` (default: $CONNECT_TOKEN, else the token file in the state directory)")
	fs.StringVar(&o.tokenFile, "token-file", "", "read the token from `FILE`")
	fs.StringVar(&o.ca, "ca", "", "ssl: trust the server certificate(s) in `FILE` (PEM)")
	fs.StringVar(&o.cert, "cert", "", "ssl: client certificate `FILE` (PEM), with --key")
	fs.StringVar(&o.key, "key", "", "ssl: client key `FILE` (PEM), with --cert")
	fs.BoolVar(&o.insecure, "insecure", false, "ssl: do not verify the server certificate (development only)")
	fs.StringVar(&o.stateDir, "state-dir", "", "state `DIR` holding the client id (default $CONNECT_STATE_DIR, else ~/.local/state/connect)")
	fs.StringVar(&o.sessionFile, "session-file", "", "keep the open sessions' ids and secrets in `FILE`, so that events and watch take their session back after a crash or a kill (one process per file)")
	fs.BoolVar(&o.json, "json", false, "print results as JSON")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up connecting and registering after `D`")
	fs.DurationVar(&o.regTimeout, "registration-timeout", 5*time.Second, "give up one connection attempt (connect + registration) after `D` and retry, within --timeout")
	fs.StringVar(&o.bearerPlugin, "bearer-plugin", "", "dial through the bearer plugin executable at `PATH` (for a third-party scheme)")
	fs.StringVar(&o.name, "name", "connectclient", "client `NAME` shown by the server")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.IntVar(&o.count, "count", 0, "ping: number of pings (default 3); events, watch: stop after `N` events or changes; top without a terminal: after N frames (default: until interrupted)")
	fs.BoolVar(&o.xml, "xml", false, "describe: print the service file as it is")
	fs.BoolVar(&o.routing, "routing", false, "describe: start a session and print its routing document")
	fs.DurationVar(&o.interval, "interval", 200*time.Millisecond, "ping: time between pings")
	fs.StringVar(&o.linkCA, "link-ca", "", "ssl direct links: trust the runner certificate(s) in `FILE` (PEM); gives the client an ssl adapter for direct links")
	fs.BoolVar(&o.linkInsecure, "link-insecure", false, "ssl direct links: do not verify the runner's certificate (development only); gives the client an ssl adapter for direct links")
	fs.BoolVar(&o.noDirect, "no-direct", false, "open no direct links to services' runners: route everything through the server")
	fs.BoolVar(&o.linkStats, "link-stats", false, "call: print the session's links and what each carried on stderr")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: connectclient [flags] COMMAND [ARG]...\n\nCommands:\n%s\nFlags:\n%s", commandUsage, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return cli.Usagef("no command")
	}
	switch cmd := fs.Arg(0); cmd {
	case "version":
		fmt.Fprintln(stdout, version.String("connectclient"))
		return nil
	case "ping":
		if fs.NArg() > 1 {
			return cli.Usagef("ping takes no arguments")
		}
		return ping(&o, stdout, stderr)
	case "top":
		if fs.NArg() > 1 {
			return cli.Usagef("top takes no arguments")
		}
		return top(&o, stdout, stderr)
	case "services", "describe", "call", "events", "watch":
		return serviceCommand(&o, cmd, fs.Args()[1:], stdout, stderr)
	default:
		return cli.Usagef("unknown command %q", cmd)
	}
}

func ping(o *options, stdout, stderr io.Writer) error {
	if o.count < 0 {
		return cli.Usagef("--count must be at least 1")
	}
	if o.count == 0 {
		o.count = 3
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c, ep, id, closeAll, err := dial(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	if !o.json {
		fmt.Fprintf(stdout, "connected to %s (server %s) as client %s\n", ep, c.ServerID(), id)
	}
	var rtts []time.Duration
	for i := 0; i < o.count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(o.interval):
			}
		}
		pctx, cancel := context.WithTimeout(ctx, o.timeout)
		rtt, err := c.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
		rtts = append(rtts, rtt)
		if !o.json {
			fmt.Fprintf(stdout, "ping %d: %v\n", i+1, rtt.Round(time.Microsecond))
		}
	}
	lo, hi, sum := rtts[0], rtts[0], time.Duration(0)
	for _, r := range rtts {
		lo, hi, sum = min(lo, r), max(hi, r), sum+r
	}
	avg := sum / time.Duration(len(rtts))
	if o.json {
		us := make([]float64, len(rtts))
		for i, r := range rtts {
			us[i] = float64(r.Nanoseconds()) / 1e3
		}
		return json.NewEncoder(stdout).Encode(map[string]any{
			"server": ep.String(), "serverId": c.ServerID(), "clientId": id.String(), "state": c.State().String(),
			"rttMicros": us, "minMicros": float64(lo.Nanoseconds()) / 1e3, "avgMicros": float64(avg.Nanoseconds()) / 1e3, "maxMicros": float64(hi.Nanoseconds()) / 1e3,
		})
	}
	fmt.Fprintf(stdout, "%d pings: min %v avg %v max %v\n", len(rtts), lo.Round(time.Microsecond), avg.Round(time.Microsecond), hi.Round(time.Microsecond))
	return nil
}

// dial connects and registers as --server and the auth flags say, within
// --timeout. closeAll closes the client and the bearer.
func dial(ctx context.Context, o *options, stderr io.Writer) (c *client.Client, ep bearers.Endpoint, id uuid.UUID, closeAll func(), err error) {
	logger, err := cli.NewLogger(stderr, o.logLevel, "text")
	if err != nil {
		return nil, ep, id, nil, err
	}
	ep, err = bearers.ParseEndpoint(o.server)
	if err != nil {
		return nil, ep, id, nil, cli.Usagef("--server: %v", err)
	}
	dir, err := statedir.Resolve(o.stateDir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	token, err := findToken(o, dir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	id, err = statedir.ClientID(dir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	b, closeBearer, err := bearerFor(ctx, o, ep, dir, logger)
	if err != nil {
		return nil, ep, id, nil, err
	}
	links, err := linkBearers(o, ep, dir)
	if err != nil {
		closeBearer()
		return nil, ep, id, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err = client.Dial(dctx, client.Config{
		Server: ep, Bearer: b, ClientID: id, Token: token, Name: o.name, LinkBearers: links,
		RegistrationTimeout: min(o.timeout, o.regTimeout), Logger: logger, StateFile: o.sessionFile,
		OnState: func(s client.State, err error) {
			if err != nil {
				logger.Info("state", "state", s.String(), "because", err)
			} else {
				logger.Debug("state", "state", s.String())
			}
		},
	})
	if err != nil {
		closeBearer()
		return nil, ep, id, nil, err
	}
	for _, r := range c.Reclaimed() {
		if r.Err != nil {
			fmt.Fprintf(stderr, "connectclient: %v\n", r.Err)
		}
	}
	return c, ep, id, func() { c.Close(); closeBearer() }, nil
}

// linkBearers are the bearers connectclient opens direct links with: tcp
// and udp, which need no settings, and ssl when the server connection is
// ssl (with the same settings) or --link-ca or --link-insecure is given;
// none with --no-direct.
func linkBearers(o *options, server bearers.Endpoint, dir string) ([]bearers.Bearer, error) {
	if o.noDirect {
		if o.linkCA != "" || o.linkInsecure {
			return nil, cli.Usagef("--no-direct excludes --link-ca and --link-insecure")
		}
		return nil, nil
	}
	var out []bearers.Bearer
	reg := stock.Registry()
	for _, t := range []string{"connect.bearer.tcp", "connect.bearer.udp"} {
		r, _ := reg.ByType(t)
		b, err := r.New(bearers.Config{StateDir: dir})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if server.Scheme == "ssl" || o.linkCA != "" || o.linkInsecure {
		attrs := bearers.Attributes{}
		switch {
		case o.linkCA != "":
			attrs["ca"] = o.linkCA
		case o.ca != "":
			attrs["ca"] = o.ca
		}
		if o.linkInsecure || o.insecure {
			attrs["insecureSkipVerify"] = "true"
		}
		if o.cert != "" {
			attrs["clientCert"], attrs["clientKey"] = o.cert, o.key
		}
		r, _ := reg.ByType("connect.bearer.ssl")
		b, err := r.New(bearers.Config{Attributes: attrs, StateDir: dir})
		if err != nil {
			return nil, fmt.Errorf("ssl adapter for direct links: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

// findToken: --token, --token-file, $CONNECT_TOKEN, then the server's
// generated token file in the state directory if there is one.
func findToken(o *options, dir string) (string, error) {
	switch {
	case o.token != "" && o.tokenFile != "":
		return "", cli.Usagef("--token and --token-file are exclusive")
	case o.token != "":
		return o.token, nil
	case o.tokenFile != "":
		t, err := statedir.ReadToken(o.tokenFile)
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
	return "", nil // the server may accept a client certificate instead
}

// bearerFor returns the bearer that dials ep: an external plugin when
// --bearer-plugin is given, else the stock bearer for the scheme, in process.
func bearerFor(ctx context.Context, o *options, ep bearers.Endpoint, dir string, logger *slog.Logger) (bearers.Bearer, func(), error) {
	attrs := bearers.Attributes{}
	sslFlags := o.ca != "" || o.cert != "" || o.key != "" || o.insecure
	if (o.cert == "") != (o.key == "") {
		return nil, nil, cli.Usagef("--cert and --key go together")
	}
	if ep.Scheme == "ssl" {
		if o.ca != "" {
			attrs["ca"] = o.ca
		}
		if o.cert != "" {
			attrs["clientCert"], attrs["clientKey"] = o.cert, o.key
		}
		if o.insecure {
			attrs["insecureSkipVerify"] = "true"
		}
	} else if sslFlags && o.bearerPlugin == "" {
		return nil, nil, cli.Usagef("--ca, --cert, --key and --insecure apply to ssl:// servers, not %s://", ep.Scheme)
	}
	if o.bearerPlugin != "" {
		p, err := pluginhost.Start(ctx, pluginhost.Options{Name: o.bearerPlugin, Path: o.bearerPlugin,
			Config: bearers.Config{Attributes: attrs, StateDir: dir}, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		if p.Info().Scheme != ep.Scheme {
			p.Close()
			return nil, nil, cli.Usagef("--bearer-plugin %s serves %s://, but --server is %s", o.bearerPlugin, p.Info().Scheme, ep)
		}
		return p, func() { p.Close() }, nil
	}
	reg, err := stock.Registry().ByScheme(ep.Scheme)
	if err != nil {
		return nil, nil, cli.Usagef("--server %s: %v; for a third-party bearer pass --bearer-plugin PATH", ep, err)
	}
	b, err := reg.New(bearers.Config{Attributes: attrs, StateDir: dir})
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
