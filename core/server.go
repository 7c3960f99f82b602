// Package core is the Connect server: it runs the configured connection
// adapters (bearer plugins under supervision), registers clients that
// connect through them, keeps the table of connected clients and serves the
// HTTP API. Later layers (services, sessions, resume, routing) attach here.
//
// A Server is created with New, started with Start and stopped with Close.
// Nothing in this package imports the cmd packages; connectserver is a thin
// wrapper around it.
package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/internal/persist"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// DefaultPingInterval is the keepalive interval the server announces in
// Welcome; a connected client that sends nothing for three intervals is
// dropped.
const DefaultPingInterval = 5 * time.Second

// Options configure a Server.
type Options struct {
	// Config is the validated server configuration.
	Config *config.Server
	// StateDir is the resolved state directory (flags > env > file >
	// default, resolved by the caller). Required.
	StateDir string
	// StockPlugin says how to start a stock bearer (by scheme: tcp, udp,
	// ssl) as a plugin subprocess: usually the server's own executable with
	// arguments "plugin bearer tcp". Required when the configuration has
	// stock adapters without a plugin attribute.
	StockPlugin func(scheme string) (path string, args []string)
	// BuiltinService says how to start a built-in service (by its builtin
	// name, e.g. "demo") as a plugin subprocess: usually the server's own
	// executable with arguments "plugin service demo".
	BuiltinService func(name string) (path string, args []string)
	// PingInterval overrides the configuration's ping frequency (tests).
	PingInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Server is a running Connect server. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	cfg      *config.Server
	log      *slog.Logger
	id       string
	tokens   []string
	started  time.Time
	adapters []*adapter
	services map[string]*hostedService // by service name; fixed by New
	store    *persist.Store            // persistent runtime data
	metrics  metrics
	diag     diagState // diagnostics (diag.go)
	epoch    time.Time // the keepalive pings' clock (pingClock)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // supervisors, HTTP server, connection handlers

	// Resume streams (streams.go) and reclaims (reclaim.go).
	table     *resume.Table
	tombs     sessionTombs
	reclaimMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	conns    map[*clientConn]struct{} // every open connection, registered or not
	clients  map[uuid.UUID]*clientConn
	streams  map[uuid.UUID]*streamClient              // by stream id
	byClient map[uuid.UUID]map[*streamClient]struct{} // a client's streams
	httpLn   net.Listener
	httpSrv  *http.Server
	closeErr error

	remote remoteRegistry // the services runners provide (remote.go)
	relay  relayState     // the secondary endpoint (relay.go)
	tun    tunnelRegistry // tunnel streams (tunnels.go)
}

type adapter struct {
	cfg config.Adapter
	sup *pluginhost.Supervisor

	accepted     atomic.Uint64
	acceptErrors atomic.Uint64 // accepted connections that failed to register
	bytesIn      atomic.Uint64 // read from clients, all connections
	bytesOut     atomic.Uint64 // written to clients
	rates        rates         // of bytesIn, bytesOut; under diag.mu
}

// New checks options and prepares a server; it starts nothing.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("core: no configuration")
	}
	if opts.StateDir == "" {
		return nil, errors.New("core: no state directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = opts.Config.Resume.PingFrequency
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	s := &Server{opts: opts, cfg: opts.Config, log: opts.Logger, id: uuid.NewString(),
		conns: map[*clientConn]struct{}{}, clients: map[uuid.UUID]*clientConn{}, services: map[string]*hostedService{},
		streams: map[uuid.UUID]*streamClient{}, byClient: map[uuid.UUID]map[*streamClient]struct{}{}}
	tbl, err := resume.NewTable(s.resumeConfig())
	if err != nil {
		return nil, fmt.Errorf("core: resume: %w", err)
	}
	s.table = tbl
	s.tombs.linger = s.resumeConfig().Linger
	s.tokens = append(s.tokens, s.cfg.Auth.Tokens...)
	s.epoch = time.Now()
	s.diag.init(s.cfg.Diagnostics.Enabled)
	for _, sc := range s.cfg.Services { // names are unique (config checks)
		s.services[sc.Name] = &hostedService{cfg: sc, up: make(chan struct{})}
	}
	s.store = persist.Open(filepath.Join(opts.StateDir, "services"))
	for _, a := range s.cfg.Adapters {
		po := pluginhost.Options{
			Name:         a.Name,
			Path:         a.Plugin,
			WantType:     a.Type,
			Config:       bearers.Config{Attributes: a.Attributes, StateDir: opts.StateDir},
			StartTimeout: s.cfg.Plugins.StartTimeout,
			Logger:       s.log,
		}
		if po.Path == "" {
			scheme, ok := config.StockTypes[a.Type]
			if !ok || opts.StockPlugin == nil {
				return nil, fmt.Errorf("core: adapter %s: type %s has no plugin executable", a.Name, a.Type)
			}
			po.Path, po.Args = opts.StockPlugin(scheme)
		}
		ad := &adapter{cfg: a}
		ad.sup = pluginhost.NewSupervisor(po, a.Address, func(c bearers.Conn) { s.handle(ad, c) })
		ad.sup.BackoffMin, ad.sup.BackoffMax = s.cfg.Plugins.RestartBackoffMin, s.cfg.Plugins.RestartBackoffMax
		s.adapters = append(s.adapters, ad)
	}
	return s, nil
}

// ID is the server's id for this run (sent to clients in Welcome).
func (s *Server) ID() string { return s.id }

// Start makes sure clients can authenticate, starts the HTTP API and every
// adapter, and waits (up to the plugin start timeout plus a margin) until
// each adapter has listened once. An adapter that cannot start is logged
// and retried in the background; Start fails only if none can start or the
// HTTP address cannot be bound.
func (s *Server) Start(ctx context.Context) error {
	s.started = time.Now()
	if len(s.tokens) == 0 {
		tok, created, err := statedir.EnsureToken(s.opts.StateDir)
		if err != nil {
			return fmt.Errorf("core: client token: %w", err)
		}
		if created {
			s.log.Info("generated a client token", "file", statedir.TokenFile(s.opts.StateDir))
		}
		s.log.Info("clients authenticate with the token in the state directory; clients on this machine with the same state directory find it", "file", statedir.TokenFile(s.opts.StateDir))
		s.tokens = []string{tok}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.startHTTP(); err != nil {
		s.cancel()
		return err
	}
	if err := s.startRelay(); err != nil { // relay.go
		s.Close()
		return err
	}
	for _, a := range s.adapters {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			a.sup.Run(s.ctx)
		}()
	}
	servicesStarted := s.startServices(s.ctx)
	s.startDiagnostics()
	wait := s.cfg.Plugins.StartTimeout + 5*time.Second
	timer := time.NewTimer(wait)
	defer timer.Stop()
	running := 0
	for _, a := range s.adapters {
		select {
		case <-a.sup.Ready():
			running++
		case <-timer.C:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
	if running == 0 && len(s.adapters) > 0 {
		s.Close()
		return fmt.Errorf("core: no connection adapter could start (see the log)")
	}
	select {
	case <-servicesStarted:
	case <-timer.C:
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
	s.log.Info("connectserver running", "server_id", s.id, "adapters", running, "of", len(s.adapters), "http", s.HTTPAddr())
	return nil
}

// Adapters returns the adapters' status, in configuration order.
func (s *Server) Adapters() []pluginhost.Status {
	out := make([]pluginhost.Status, len(s.adapters))
	for i, a := range s.adapters {
		out[i] = a.sup.Status()
	}
	return out
}

// Clients lists the registered clients, sorted by id.
func (s *Server) Clients() []ClientInfo {
	s.mu.Lock()
	out := make([]ClientInfo, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, c.info())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close stops accepting, tells connected clients the server is going away,
// closes every connection, stops the plugins and the HTTP API, and waits
// for all of it. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return s.closeErr
	}
	s.closed = true
	conns := make([]*clientConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	srv := s.httpSrv
	s.mu.Unlock()

	// The streams first, while their connections and the services still
	// run: each client is told that its stream ends (it then opens a new
	// one when the server is back), and each session ends with the
	// service.
	s.table.Close()
	if s.cancel != nil {
		s.cancel()
	}
	for _, c := range conns {
		c.goAway(wire.CloseGoingAway, "server shutting down")
	}
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
	return s.closeErr
}

// track registers a goroutine-owning connection; false if the server is closing.
func (s *Server) track(c *clientConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *clientConn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.registered && s.clients[c.clientID] == c {
		delete(s.clients, c.clientID)
	}
	s.retire(c.stats) // under s.mu: see snapshotLocked
	s.mu.Unlock()
	s.wg.Done()
}
