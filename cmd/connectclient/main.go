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
//	tunnel --listen ADDR --service NAME  carry local TCP connections to the server's tunnel NAME
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
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/clientflags"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	conn                              clientflags.Flags // --server, credentials, ssl, --state-dir, --bearer-plugin
	name                              string
	sessionFile                       string
	logLevel                          string
	json, xml, routing                bool
	linkCA                            string
	linkInsecure, noDirect, linkStats bool
	timeout, regTimeout               time.Duration
	count                             int
	interval                          time.Duration
	listen, service                   string // tunnel
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.ExitStatus("connectclient", dispatch(args, stdout, stderr), stderr)
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := pflag.NewFlagSet("connectclient", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.conn.Register(fs)
	fs.StringVar(&o.sessionFile, "session-file", "", "keep the open sessions' ids and secrets in `FILE`, so that events and watch take their session back after a crash or a kill (one process per file)")
	fs.BoolVar(&o.json, "json", false, "print results as JSON")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up connecting and registering after `D`")
	fs.DurationVar(&o.regTimeout, "registration-timeout", 5*time.Second, "give up one connection attempt (connect + registration) after `D` and retry, within --timeout")
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
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "tunnel: accept local TCP connections on `ADDR`")
	fs.StringVar(&o.service, "service", "", "tunnel: the server's tunnel `NAME` (a <tunnel> of its configuration)")
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
	case "tunnel":
		if fs.NArg() > 1 {
			return cli.Usagef("tunnel takes no arguments (--listen ADDR --service NAME)")
		}
		return tunnelCommand(&o, stdout, stderr) // tunnel.go
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
	ep, err = o.conn.Endpoint()
	if err != nil {
		return nil, ep, id, nil, err
	}
	dir, err := statedir.Resolve(o.conn.StateDir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	token, err := o.conn.FindToken(dir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	id, err = statedir.ClientID(dir)
	if err != nil {
		return nil, ep, id, nil, err
	}
	b, closeBearer, err := o.conn.Bearer(ctx, ep, dir, logger)
	if err != nil {
		return nil, ep, id, nil, err
	}
	links, err := linkBearers(o, ep, dir)
	if err != nil {
		closeBearer()
		return nil, ep, id, nil, err
	}
	restarts, err := o.conn.ControlRestarts()
	if err != nil {
		closeBearer()
		return nil, ep, id, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err = client.Dial(dctx, client.Config{
		Server: ep, Bearer: b, ClientID: id, Token: token, Name: o.name, LinkBearers: links,
		RegistrationTimeout: min(o.timeout, o.regTimeout), Logger: logger, StateFile: o.sessionFile,
		MaxControlConnectionRestarts: restarts, OnState: func(s client.State, err error) {
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
		case o.conn.CA != "":
			attrs["ca"] = o.conn.CA
		}
		if o.linkInsecure || o.conn.Insecure {
			attrs["insecureSkipVerify"] = "true"
		}
		if o.conn.Cert != "" {
			attrs["clientCert"], attrs["clientKey"] = o.conn.Cert, o.conn.Key
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
