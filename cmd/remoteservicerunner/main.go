// Command remoteservicerunner runs service plugins away from the server and
// provides their services through it: it connects to a Connect server like
// any client, offers each service, runs each plugin under the same plugin
// host as connectserver (the same plugin binary runs unchanged in either),
// and serves the sessions the server relays to it. When the server goes
// away it keeps retrying, and offers its services again once it is back.
//
//	remoteservicerunner --server URL (--service FILE.xml --plugin PATH)...
//	                    [--listen URL]... [--direct relay|listen] [--maxRetries N]
//	                    [--maxControlConnectionRestarts N] [--token TOKEN | --token-file FILE]
//	                    [--ca FILE] [--cert F --key F] [--insecure] [--state-dir DIR]
//	remoteservicerunner version
//
// See docs/REMOTE.md. Exit status 0 after an interrupt, 1 on a reported
// failure, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/clientflags"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/internal/version"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/session"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return exitStatus(dispatch(ctx, args, stdout, stderr), stderr)
}

func exitStatus(err error, stderr io.Writer) int {
	return cli.ExitStatus("remoteservicerunner", err, stderr)
}

// options are the parsed command line.
type options struct {
	conn                   clientflags.Flags
	services, plugins      []string
	listen, endpoints      []string
	linkCert, linkKey      string
	name                   string
	logLevel, logFormat    string
	regTimeout, retryMax   time.Duration
	startTimeout           time.Duration
	backoffMin, backoffMax time.Duration
	direct                 string // "relay" or "listen" (relay.go)
	maxRetries             int
	restarts               int // client.Config.MaxControlConnectionRestarts
}

// runnerService is one --service/--plugin pair, loaded.
type runnerService struct {
	file, plugin string
	xml          []byte
	desc         *servicefile.Service
	endpoints    []client.ProviderEndpoint
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "version" {
		fmt.Fprintln(stdout, version.String("remoteservicerunner"))
		return nil
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	svcs, err := loadServices(o)
	if err != nil {
		return err
	}
	logger, err := cli.NewLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	return serve(ctx, o, svcs, logger)
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := pflag.NewFlagSet("remoteservicerunner", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.conn.Register(fs)
	fs.StringArrayVar(&o.services, "service", nil, "service file `FILE.xml` of a service to provide; pair each with a --plugin, in order (repeatable)")
	fs.StringArrayVar(&o.plugins, "plugin", nil, "service plugin executable `PATH` serving the --service at the same position (repeatable)")
	fs.StringArrayVar(&o.listen, "listen", nil, "`URL` where this runner accepts direct links (tcp://, udp://, ssl://), announced in routing documents (repeatable; implies --direct listen)")
	fs.StringArrayVar(&o.endpoints, "endpoint", nil, "same as --listen (repeatable)")
	fs.StringVar(&o.linkCert, "link-cert", "", "ssl direct links: the runner's certificate `FILE` (PEM), with --link-key; default: a self-signed one in the state directory (runner/ssl/cert.pem)")
	fs.StringVar(&o.linkKey, "link-key", "", "ssl direct links: the key `FILE` (PEM) of --link-cert")
	fs.StringVar(&o.name, "name", "remoteservicerunner", "client `NAME` shown by the server")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.regTimeout, "registration-timeout", 5*time.Second, "give up one connection attempt (connect + registration) after `D` and retry")
	fs.DurationVar(&o.retryMax, "retry-max", 5*time.Second, "wait at most `D` between attempts to reach the server")
	fs.DurationVar(&o.startTimeout, "plugin-start-timeout", 10*time.Second, "how long a service plugin may take to start (`D`)")
	fs.DurationVar(&o.backoffMin, "restart-backoff-min", 100*time.Millisecond, "first delay before restarting a service plugin that died (`D`)")
	fs.DurationVar(&o.backoffMax, "restart-backoff-max", 30*time.Second, "longest delay before restarting a service plugin that died (`D`)")
	registerRelayFlags(fs, o) // relay.go
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  remoteservicerunner --server URL (--service FILE.xml --plugin PATH)... [flags]\n  remoteservicerunner version\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return nil, cli.Usagef("unexpected argument %q (every setting is a flag)", fs.Arg(0))
	case len(o.services) == 0:
		return nil, cli.Usagef("no service: give --service FILE.xml --plugin PATH (once per service)")
	case len(o.services) != len(o.plugins):
		return nil, cli.Usagef("%d --service and %d --plugin: give one --plugin per --service, in the same order", len(o.services), len(o.plugins))
	case o.regTimeout <= 0, o.retryMax <= 0, o.startTimeout <= 0, o.backoffMin <= 0, o.backoffMax < o.backoffMin:
		return nil, cli.Usagef("durations must be positive, and --restart-backoff-max at least --restart-backoff-min")
	case (o.linkCert == "") != (o.linkKey == ""):
		return nil, cli.Usagef("--link-cert and --link-key go together")
	}
	o.listen = append(o.listen, o.endpoints...)
	if err := checkRelayFlags(fs, o); err != nil { // relay.go
		return nil, err
	}
	return o, nil
}

// loadServices reads and checks every service file, plugin path and
// endpoint; problems come back together.
func loadServices(o *options) ([]*runnerService, error) {
	listen, err := parseListen(o.listen)
	if err != nil {
		return nil, err
	}
	var (
		out      []*runnerService
		problems []string
		names    = map[string]string{}
	)
	for i, file := range o.services {
		rs := &runnerService{file: file, plugin: o.plugins[i]}
		desc, err := servicefile.Load(file)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		rs.desc = desc
		if rs.xml, err = os.ReadFile(file); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", file, err))
			continue
		}
		if prev, dup := names[desc.Name]; dup {
			problems = append(problems, fmt.Sprintf("%s: service %s is already given by %s; give each service once", file, desc.Name, prev))
			continue
		}
		names[desc.Name] = file
		if st, err := os.Stat(rs.plugin); err != nil {
			problems = append(problems, fmt.Sprintf("--plugin %s (for %s): %v", rs.plugin, file, err))
		} else if st.IsDir() || st.Mode()&0o111 == 0 {
			problems = append(problems, fmt.Sprintf("--plugin %s (for %s): not an executable file", rs.plugin, file))
		}
		rs.endpoints = listen
		if listen == nil {
			rs.endpoints = fileEndpoints(desc)
		}
		rs.endpoints = append(rs.endpoints, linkEndpoints(desc, rs.endpoints)...)
		if o.direct == directRelay { // relay.go: no endpoint of its own
			rs.endpoints = nil
		}
		out = append(out, rs)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return out, nil
}

// parseListen checks --listen URLs: a stock bearer's scheme, and an address
// a client can dial.
func parseListen(urls []string) ([]client.ProviderEndpoint, error) {
	var out []client.ProviderEndpoint
	for _, u := range urls {
		ep, err := bearers.ParseEndpoint(u)
		if err != nil {
			return nil, cli.Usagef("--listen: %v", err)
		}
		reg, err := stock.Registry().ByScheme(ep.Scheme)
		if err != nil {
			return nil, cli.Usagef("--listen %s: %v; direct links over third-party bearers are not supported yet", u, err)
		}
		if ip := net.ParseIP(ep.Host); ip != nil && ip.IsUnspecified() {
			return nil, cli.Usagef("--listen %s: %s names all interfaces; give the address clients dial (for example 127.0.0.1 or the host's name)", u, ep.Host)
		}
		if ep.Port == 0 {
			return nil, cli.Usagef("--listen %s: give the port clients dial (not 0)", u)
		}
		if ep.Path != "" {
			return nil, cli.Usagef("--listen %s: a %s endpoint has no path", u, ep.Scheme)
		}
		out = append(out, client.ProviderEndpoint{Address: ep, Bearer: reg.Info})
	}
	return out, nil
}

// fileEndpoints are a service file's <endpoints> served by stock bearers.
func fileEndpoints(desc *servicefile.Service) []client.ProviderEndpoint {
	var out []client.ProviderEndpoint
	for _, e := range desc.Endpoints {
		if reg, err := stock.Registry().ByScheme(e.Address.Scheme); err == nil {
			out = append(out, client.ProviderEndpoint{Address: e.Address, Bearer: reg.Info})
		}
	}
	return out
}

// linkEndpoints are the endpoints of a service file's declared <link>s
// served by stock bearers, but those in have: the runner accepts each
// declared link at its endpoint, and announces it so that routing knows it
// offers the link's bearer.
func linkEndpoints(desc *servicefile.Service, have []client.ProviderEndpoint) []client.ProviderEndpoint {
	var out []client.ProviderEndpoint
	for _, l := range desc.Routing.Links {
		reg, ok := stock.Registry().ByType(l.Bearer)
		if !ok || reg.Info.Scheme != l.Endpoint.Scheme {
			continue
		}
		dup := false
		for _, e := range append(have, out...) {
			dup = dup || e.Address.String() == l.Endpoint.String()
		}
		if !dup {
			out = append(out, client.ProviderEndpoint{Address: l.Endpoint, Bearer: reg.Info})
		}
	}
	return out
}

// serve runs the plugins, connects and provides, until ctx ends or the
// connection is lost for good.
func serve(ctx context.Context, o *options, svcs []*runnerService, logger *slog.Logger) error {
	ep, err := o.conn.Endpoint()
	if err != nil {
		return err
	}
	dir, err := statedir.Resolve(o.conn.StateDir)
	if err != nil {
		return err
	}
	token, err := o.conn.FindToken(dir)
	if err != nil {
		return err
	}
	// The runner's own client id, apart from connectclient's in the same
	// state directory: two processes with one id replace each other.
	id, err := statedir.ClientID(filepath.Join(dir, "runner"))
	if err != nil {
		return err
	}

	// Direct links: listen on every endpoint (the provider owns the
	// listeners from NewProvider on).
	listeners, err := listenLinks(ctx, o, svcs, filepath.Join(dir, "runner"), logger)
	if err != nil {
		return err
	}

	// The provider exists before the plugins, which feed it their runtime
	// data and events from their first start.
	first := newFirstResults(len(svcs))
	handlers := make([]*pluginHandler, len(svcs))
	pcfg := client.ProviderConfig{Logger: logger, OnProvided: first.record, Listeners: listeners, Relay: o.providerRelay()}
	for i, rs := range svcs {
		handlers[i] = &pluginHandler{}
		pcfg.Services = append(pcfg.Services, client.ProvidedService{XML: rs.xml, Handler: handlers[i], Endpoints: rs.endpoints})
	}
	prov, err := client.NewProvider(pcfg)
	if err != nil {
		for _, l := range listeners {
			l.Listener.Close()
		}
		return err
	}
	defer prov.Close()
	for i, rs := range svcs {
		name := rs.desc.Name
		p, err := pluginhost.StartService(ctx, pluginhost.ServiceOptions{
			Service:      name,
			Path:         rs.plugin,
			StartTimeout: o.startTimeout,
			BackoffMin:   o.backoffMin,
			BackoffMax:   o.backoffMax,
			OnEvent:      func(e serviceplugin.Event) { prov.Emit(name, e.SessionID, e.Name, e.Args) },
			OnData: func(u serviceplugin.DataUpdate) {
				if err := prov.SetData(name, u.Path, u.Value); err != nil {
					logger.Warn("runtime data from the plugin does not fit the service file given with --service", "service", name, "error", err)
				}
			},
			OnSessionLost: func(sessionID string, err error) { prov.SessionLost(name, sessionID, err.Error()) },
			Logger:        logger,
		})
		if err != nil {
			return fmt.Errorf("service %s (%s): %w", name, rs.file, err)
		}
		defer p.Close()
		if v := p.Description().Version; v != rs.desc.Version {
			p.Close()
			return fmt.Errorf("service %s: the plugin %s serves version %s, but %s says %s; give --service the file the plugin serves", name, rs.plugin, v, rs.file, rs.desc.Version)
		}
		if got := p.ServiceXML(); string(got) != string(rs.xml) {
			// Allowed (a deployment may add <routing> and <endpoints>), but
			// the plugin's events and data must fit the --service file.
			logger.Info("the plugin's own service file differs from the --service file; the runner provides the --service file", "service", name, "file", rs.file, "plugin", rs.plugin)
		}
		handlers[i].p = p
		logger.Info("service plugin running", "service", name, "plugin", rs.plugin, "pid", p.Status().PID)
	}

	b, closeBearer, err := o.conn.Bearer(ctx, ep, dir, logger)
	if err != nil {
		return err
	}
	defer closeBearer()
	lost := make(chan error, 1)
	logger.Info("connecting to the server", "server", ep.String(), "client_id", id.String())
	c, err := client.Dial(ctx, client.Config{
		Server: ep, Bearer: b, ClientID: id, Token: token, Name: o.name,
		RegistrationTimeout: o.regTimeout, RetryMax: o.retryMax, Logger: logger,
		MaxControlConnectionRestarts: o.restarts,
		OnState: func(s client.State, err error) {
			switch {
			case s == client.Closed && err != nil:
				select {
				case lost <- err:
				default:
				}
			case s == client.Connected:
				logger.Info("connected to the server", "server", ep.String())
			case err != nil:
				logger.Warn("connection to the server", "state", s.String(), "because", err)
			}
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while connecting
		}
		return err
	}
	defer c.Close()
	if err := prov.Serve(c); err != nil {
		return err
	}
	// The first answers: a service the server refuses is an error to fix
	// (a name clash, a policy), not something to retry.
	if err := first.wait(ctx); err != nil {
		return err
	}
	if ctx.Err() == nil {
		logger.Info("serving", "services", len(svcs))
	}
	select {
	case <-ctx.Done():
		logger.Info("stopping")
		return nil
	case err := <-lost:
		return fmt.Errorf("the connection to the server ended for good: %w", err)
	}
}

// listenLinks listens on every distinct endpoint of the services, with
// the stock bearer of its scheme, in process; stateDir keeps the ssl
// bearer's generated certificate.
func listenLinks(ctx context.Context, o *options, svcs []*runnerService, stateDir string, logger *slog.Logger) ([]client.ProviderListener, error) {
	var (
		out   []client.ProviderListener
		seen  = map[string]bool{}
		bears = map[string]bearers.Bearer{}
	)
	fail := func(err error) ([]client.ProviderListener, error) {
		for _, l := range out {
			l.Listener.Close()
		}
		return nil, err
	}
	for _, rs := range svcs {
		for _, e := range rs.endpoints {
			key := e.Address.String()
			if seen[key] {
				continue
			}
			seen[key] = true
			b := bears[e.Bearer.Type]
			if b == nil {
				reg, ok := stock.Registry().ByType(e.Bearer.Type)
				if !ok {
					return fail(fmt.Errorf("endpoint %s: no stock bearer %s", key, e.Bearer.Type))
				}
				attrs := bearers.Attributes{}
				if e.Bearer.Type == reg.Info.Type && reg.Info.Scheme == "ssl" && o.linkCert != "" {
					attrs["cert"], attrs["key"] = o.linkCert, o.linkKey
				}
				nb, err := reg.New(bearers.Config{Attributes: attrs, StateDir: stateDir})
				if err != nil {
					return fail(fmt.Errorf("endpoint %s: %w", key, err))
				}
				b, bears[e.Bearer.Type] = nb, nb
			}
			l, err := b.Listen(ctx, e.Address)
			if err != nil {
				return fail(fmt.Errorf("direct links: listen on %s: %w", key, err))
			}
			out = append(out, client.ProviderListener{Listener: l, Bearer: e.Bearer})
			logger.Info("accepting direct links", "endpoint", key, "bearer", e.Bearer.Type)
		}
	}
	for _, b := range bears {
		if n, ok := b.(bearers.Noticer); ok {
			for _, msg := range n.Notices() {
				logger.Warn(msg)
			}
		}
	}
	return out, nil
}

// firstResults collects the server's first answer for every service.
type firstResults struct {
	mu     sync.Mutex
	seen   map[string]bool
	errs   []string
	want   int
	filled chan struct{}
}

func newFirstResults(n int) *firstResults {
	return &firstResults{seen: map[string]bool{}, want: n, filled: make(chan struct{})}
}

func (f *firstResults) record(service string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[service] || len(f.seen) == f.want {
		return
	}
	f.seen[service] = true
	if err != nil {
		f.errs = append(f.errs, fmt.Sprintf("the server refused service %s: %v", service, err))
	}
	if len(f.seen) == f.want {
		close(f.filled)
	}
}

func (f *firstResults) wait(ctx context.Context) error {
	select {
	case <-f.filled:
	case <-ctx.Done():
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) > 0 {
		return errors.New(strings.Join(f.errs, "\n"))
	}
	return nil
}

// pluginHandler serves a provided service with its plugin.
type pluginHandler struct {
	p *pluginhost.ServicePlugin // set before the provider serves
}

func (h *pluginHandler) OpenSession(ctx context.Context, sessionID, clientID string) error {
	err := h.p.OpenSession(ctx, serviceplugin.SessionInfo{ID: sessionID, ClientID: clientID})
	if err == nil {
		return nil
	}
	var se *serviceplugin.Error
	if errors.As(err, &se) && se.Code == serviceplugin.CodeApplication {
		// A refusal: the server words it with the service's name.
		return &client.Error{Op: "open session", Code: session.CodeRefused, Message: se.Message}
	}
	return pluginError("open session", err)
}

func (h *pluginHandler) CloseSession(sessionID, reason string) { h.p.CloseSession(sessionID, reason) }

func (h *pluginHandler) Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	res, err := h.p.Call(ctx, sessionID, method, args)
	if err != nil {
		return nil, pluginError("call "+method, err)
	}
	return res, nil
}

// pluginError gives a plugin's error the session code the server would
// give it for a plugin of its own (core's callErrorCode), with its text.
func pluginError(op string, err error) error {
	code := session.CodeUnavailable // the plugin died, is restarting or was closed
	var se *serviceplugin.Error
	switch {
	case errors.As(err, &se):
		code = map[serviceplugin.Code]session.Code{
			serviceplugin.CodeApplication:      session.CodeApplication,
			serviceplugin.CodeInvalidArgument:  session.CodeInvalidArgument,
			serviceplugin.CodeUnknownMethod:    session.CodeUnknownMethod,
			serviceplugin.CodePanic:            session.CodeServiceFault,
			serviceplugin.CodeBadResult:        session.CodeServiceFault,
			serviceplugin.CodeDeadlineExceeded: session.CodeDeadlineExceeded,
			serviceplugin.CodeCanceled:         session.CodeCanceled,
			serviceplugin.CodeNoSession:        session.CodeUnknownSession,
			serviceplugin.CodeOverloaded:       session.CodeOverloaded,
		}[se.Code]
		if code == 0 {
			code = session.CodeApplication
		}
	case errors.Is(err, context.DeadlineExceeded):
		code = session.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = session.CodeCanceled
	case errors.Is(err, serviceplugin.ErrProtocol):
		code = session.CodeServiceFault
	case errors.Is(err, serviceplugin.ErrTooManyCalls):
		code = session.CodeOverloaded
	}
	return &client.Error{Op: op, Code: code, Message: err.Error(), Err: err}
}
