package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// Providing services: a client that serves services for the server, as
// remoteservicerunner does (docs/REMOTE.md, docs/PROTOCOL.md "Remote
// services").
//
// A Provider is made with NewProvider, fed with its services' runtime data
// and events (SetData, Emit: they never block) and bound to a Client with
// Serve. On every connection the client makes, it offers each service
// with ProvideService, then sends the whole runtime-data tree of each
// accepted service and, from then on, every change and event. The
// server's requests for the services' sessions (open, call, close,
// cancel) arrive on the connection's reader and are handed to each
// service's ServiceHandler, each in a goroutine of its own (at most
// maxProviderRunning at once). When the connection breaks, the calls
// running for it are cancelled, the sessions opened over it are closed
// with their handler (the server reopens those still open when the client
// is back), and the services are offered again on the next connection.

// Limits of a Provider.
const (
	// maxProviderEvents bounds the events waiting to be sent; beyond it
	// they are dropped and counted in the log.
	maxProviderEvents = 1024
	// maxProviderRunning bounds the session opens and calls running at
	// once for one connection; one more is answered CodeOverloaded.
	maxProviderRunning = 512
	// maxProviderPaths bounds the changed paths a service remembers before
	// it sends its whole tree instead.
	maxProviderPaths = 256
	// provideTimeout bounds the server's answer to a ProvideService, and a
	// session open.
	provideTimeout = 30 * time.Second
)

// ServiceHandler serves one provided service for the server. Its methods
// are called concurrently, each in its own goroutine except CloseSession.
type ServiceHandler interface {
	// OpenSession opens a session the server started for a client (or
	// reopens one after the runner reconnected). An error refuses it: a
	// *Error gives its code and message, any other error is a refusal
	// (session.CodeRefused) whose message is the error's text.
	OpenSession(ctx context.Context, session, clientID string) error
	// CloseSession ends a session; it must not block.
	CloseSession(session, reason string)
	// Call runs a method with arguments encoded by services.AppendArgs and
	// returns the result encoded by services.AppendValue (nil for a method
	// that returns nothing); session is "" for a call outside sessions.
	// ctx carries the caller's deadline and ends when the caller gives up
	// or the connection breaks. An error is answered with the code of a
	// *Error, CodeDeadlineExceeded or CodeCanceled for the context's
	// errors, CodeApplication otherwise.
	Call(ctx context.Context, session, method string, args []byte) ([]byte, error)
}

// ProvidedService is one service a Provider serves.
type ProvidedService struct {
	// XML is the service file.
	XML []byte
	// Handler serves its sessions and calls.
	Handler ServiceHandler
	// Endpoints are where the provider accepts direct links for it, for
	// the routing documents of its sessions.
	Endpoints []ProviderEndpoint
}

// ProviderEndpoint is an address where a provider accepts direct links,
// with the bearer that serves it.
type ProviderEndpoint struct {
	Address bearers.Endpoint
	Bearer  bearers.Info
}

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	Services []ProvidedService
	// Listeners are where the provider accepts direct links to its
	// services' sessions (provide_direct.go); the provider owns them and
	// closes them when it closes.
	Listeners []ProviderListener
	// Relay, if set, makes a provider without listening sockets: the
	// server relays its direct links through its secondary endpoint and
	// asks for a connection over the control connection for each one
	// (provide_relay.go). Listeners must then be empty.
	Relay *ProviderRelay
	// OnProvided, if set, is called after the server answered a
	// ProvideService, on every connection: err is nil when it accepted the
	// service, the *Error it answered otherwise. It must not block.
	OnProvided func(service string, err error)
	// LinkResume tunes the resume.Table of the streams that carry reliable
	// direct links (provide_resume.go). Nil means resume.DefaultConfig()
	// with a linger window of DefaultLinkLinger, the keepalive interval and
	// dead-path window the server announces, and room for as many streams
	// as direct links. Its Logger defaults to Logger.
	LinkResume *resume.Config
	// Logger; default discards.
	Logger *slog.Logger
}

// Provider serves services for the server over a Client's connection. Its
// methods are safe for concurrent use.
type Provider struct {
	cfg   ProviderConfig
	log   *slog.Logger
	svcs  map[string]*provided
	order []*provided

	done chan struct{} // closed when run returns (after Serve)
	wg   sync.WaitGroup

	mu       sync.Mutex
	served   bool // Serve was called
	running  bool // Serve started run
	closed   bool
	ctx      context.Context // ends with Close or the client; set by Serve
	cancel   context.CancelFunc
	stopping bool      // no goroutine starts any more
	link     *provLink // the connection the services are live on; nil between connections
	events   []session.ServiceEvent
	dropped  uint64 // events dropped because the queue was full, not yet logged
	offline  uint64 // events dropped because no connection was live, not yet logged
	wake     chan struct{}

	direct directRunner // direct links (provide_direct.go)

	serverHost string // the server's host, for connection requests (provide_relay.go)
}

// provided is one service of a Provider: its runtime data, kept to send
// it whole on every new connection, and the paths changed since they were
// last sent.
type provided struct {
	name      string
	xml       []byte
	desc      *servicefile.Service
	h         ServiceHandler
	endpoints []session.RunnerEndpoint
	needs     *serverNeeds // what the server is sent (provide_direct.go)

	mu      sync.Mutex
	tree    *services.DataTree
	pending []string
}

// NewProvider checks the services (their files parse, their names are
// unique, each has a handler) and prepares a provider; nothing is sent
// before Serve.
func NewProvider(cfg ProviderConfig) (*Provider, error) {
	if len(cfg.Services) == 0 {
		return nil, errors.New("client: a provider needs at least one service")
	}
	if err := checkListeners(cfg.Listeners); err != nil {
		return nil, err
	}
	if cfg.Relay != nil && len(cfg.Listeners) > 0 {
		return nil, errNoRelay
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, svcs: map[string]*provided{}, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Relay != nil { // provide_relay_udp.go: the udp paths it dials are served as accepted
		p.direct.udp = newRelayUDPListener()
		p.cfg.Listeners = []ProviderListener{{Listener: p.direct.udp, Bearer: relayUDPBearer}}
	}
	for i, ps := range cfg.Services {
		desc, err := servicefile.Parse(fmt.Sprintf("provided service %d", i+1), ps.XML)
		if err != nil {
			return nil, fmt.Errorf("client: provided service %d: %w", i+1, err)
		}
		if ps.Handler == nil {
			return nil, fmt.Errorf("client: service %s has no handler", desc.Name)
		}
		if p.svcs[desc.Name] != nil {
			return nil, fmt.Errorf("client: service %s is provided twice", desc.Name)
		}
		tree, err := services.NewDataTree(desc.Data)
		if err != nil {
			return nil, fmt.Errorf("client: service %s: runtime data: %w", desc.Name, err)
		}
		svc := &provided{name: desc.Name, xml: ps.XML, desc: desc, h: ps.Handler, tree: tree, needs: newServerNeeds(desc)}
		if len(ps.Endpoints) > session.MaxEndpoints {
			return nil, fmt.Errorf("client: service %s: %d endpoints, at most %d", desc.Name, len(ps.Endpoints), session.MaxEndpoints)
		}
		for _, e := range ps.Endpoints {
			if err := e.Bearer.Validate(); err != nil {
				return nil, fmt.Errorf("client: service %s: endpoint %s: %w", desc.Name, e.Address, err)
			}
			if e.Address.Scheme != e.Bearer.Scheme {
				return nil, fmt.Errorf("client: service %s: endpoint %s: bearer %s serves %s://", desc.Name, e.Address, e.Bearer.Type, e.Bearer.Scheme)
			}
			svc.endpoints = append(svc.endpoints, session.RunnerEndpoint{Address: e.Address.String(), Bearer: e.Bearer.Type, Capabilities: uint64(e.Bearer.Capabilities)})
		}
		p.svcs[desc.Name] = svc
		p.order = append(p.order, svc)
	}
	return p, nil
}

// providing keeps one Provider per Client: two would answer the same
// requests.
var providing sync.Map // *Client -> *Provider

// Serve makes c provide the services, on its current connection and every
// later one, until Close (or until c is closed). It returns at once; a
// Provider serves one Client once.
func (p *Provider) Serve(c *Client) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.served:
		return errors.New("client: a provider serves one client, once")
	case p.closed:
		return errors.New("client: the provider is closed")
	}
	p.served = true
	if _, dup := providing.LoadOrStore(c, p); dup {
		return errors.New("client: the client already serves another provider")
	}
	c.mu.Lock()
	if c.state == Closed {
		c.mu.Unlock()
		providing.Delete(c)
		return ErrClosed
	}
	c.wg.Add(1) // Client.Close waits for the provider too
	c.mu.Unlock()
	p.ctx, p.cancel = context.WithCancel(c.ctx)
	p.serverHost = c.cfg.Server.Host
	p.running = true
	go func() {
		defer c.wg.Done()
		defer providing.Delete(c)
		defer close(p.done)
		p.run(c)
	}()
	return nil
}

// Close stops providing: running calls are cancelled, sessions opened are
// closed with their handlers, and every goroutine of the provider has
// returned. The connection stays, and the server sees the services as
// unavailable only when it ends: meanwhile their requests are answered
// CodeUnavailable. Close the Client too to withdraw them. Idempotent.
func (p *Provider) Close() error {
	p.mu.Lock()
	p.closed = true
	running, cancel := p.running, p.cancel
	p.mu.Unlock()
	if running {
		cancel()
		<-p.done
	} else {
		p.closeListeners()
	}
	return nil
}

// run serves each session layer of c in turn: the client's resume stream
// (which outlives its connections, so the services stay provided across
// link breaks), or each connection's over a datagram bearer.
func (p *Provider) run(c *Client) {
	defer func() {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		p.wg.Wait()
	}()
	p.startLinks() // provide_direct.go
	var prev *sessLink
	for {
		sl, err := c.nextSessionLayer(p.ctx, prev)
		if err != nil {
			return
		}
		prev = sl
		p.serve(sl)
	}
}

// goroutine runs f in a goroutine the provider waits for; false (and f
// does not run) once the provider stops.
func (p *Provider) goroutine(f func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}

// nextSessionLayer waits until the client is Connected with a session
// layer other than prev.
func (c *Client) nextSessionLayer(ctx context.Context, prev *sessLink) (*sessLink, error) {
	for {
		c.mu.Lock()
		sl, st, ch := c.sl, c.state, c.changed
		c.mu.Unlock()
		if st == Connected && sl != nil && sl != prev && !sl.ended() {
			return sl, nil
		}
		if st == Closed {
			return nil, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Emit queues an event of a service for the server, for one session or
// (sessionID "") every session subscribed to it; args are encoded by
// services.AppendArgs. It never blocks: an event is dropped (and counted
// in the log) when the queue is full or the service is not live on a
// connection.
func (p *Provider) Emit(service, sessionID, name string, args []byte) error {
	svc := p.svcs[service]
	if svc == nil {
		return fmt.Errorf("client: emit %s: this provider does not provide service %q", name, service)
	}
	p.directEvent(svc, sessionID, name, args) // provide_direct.go
	if !svc.needs.event(name) {
		return nil // routed only directly
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.link == nil || !p.link.live[service]:
		p.offline++
		return nil
	case len(p.events) >= maxProviderEvents:
		p.dropped++
		return nil
	}
	p.events = append(p.events, session.ServiceEvent{Service: service, Session: sessionID, Name: name, Args: args})
	p.signal()
	return nil
}

// SetData applies a runtime-data update of a service (the value at path,
// encoded against its type; "" for the whole tree) and sends it to the
// server when it can. It never blocks; the server gets the latest value
// of each path (and the whole tree on every new connection).
func (p *Provider) SetData(service, path string, value []byte) error {
	svc := p.svcs[service]
	if svc == nil {
		return fmt.Errorf("client: runtime data %q: this provider does not provide service %q", path, service)
	}
	svc.mu.Lock()
	err := svc.tree.SetEncoded(path, value)
	if err == nil && svc.needs.dataPath(path) { // not for data routed only directly
		svc.add(path)
	}
	svc.mu.Unlock()
	if err != nil {
		return fmt.Errorf("client: service %s runtime data %q: %w", service, path, err)
	}
	p.directData(svc, path) // provide_direct.go
	p.mu.Lock()
	p.signal()
	p.mu.Unlock()
	return nil
}

// SessionLost tells the server that a service ended a session on its own
// (a restarted plugin refused to reopen it). It never blocks.
func (p *Provider) SessionLost(service, sessionID, reason string) {
	p.mu.Lock()
	pl := p.link
	p.mu.Unlock()
	if pl == nil {
		return
	}
	pl.mu.Lock()
	delete(pl.sessions, sessionID)
	pl.mu.Unlock()
	p.dropDirectSession(sessionID)
	p.goroutine(func() {
		pl.send(&session.RemoteSessionLost{Service: service, Session: sessionID, Reason: session.CutText(reason, session.MaxText)})
	})
}

// signal wakes the writer; the caller holds p.mu.
func (p *Provider) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// add records a changed path, coalescing as the server's watches do; the
// caller holds svc.mu.
func (svc *provided) add(path string) {
	svc.pending = coalesce(svc.pending, path, maxProviderPaths)
}

// changes returns the service's pending changes as messages of at most
// limit bytes: a value too large for one message is sent as its fields,
// when it has some.
func (svc *provided) changes(limit int, log *slog.Logger) []*session.ServiceData {
	svc.mu.Lock()
	work := svc.pending
	svc.pending = nil
	svc.mu.Unlock()
	return svc.encodePaths(work, limit, log)
}

// encodePaths returns the current values at paths as messages of at most
// limit bytes (see changes).
func (svc *provided) encodePaths(work []string, limit int, log *slog.Logger) []*session.ServiceData {
	if len(work) == 0 {
		return nil
	}
	work = append([]string(nil), work...)
	svc.mu.Lock()
	defer svc.mu.Unlock()
	var out []*session.ServiceData
	for len(work) > 0 {
		path := work[0]
		work = work[1:]
		var (
			t   *servicefile.Type
			enc []byte
			err error
		)
		for {
			// A path that no longer resolves (a list got shorter) is sent
			// as its nearest ancestor that does.
			t, err = svc.tree.TypeAt(path)
			if err == nil {
				enc, err = svc.tree.Encoded(path)
			}
			if err == nil || path == "" {
				break
			}
			if i := strings.LastIndexByte(path, '.'); i >= 0 {
				path = path[:i]
			} else {
				path = ""
			}
		}
		if err != nil {
			log.Error("internal: runtime data does not encode", "service", svc.name, "path", path, "error", err)
			continue
		}
		if len(enc)+len(path)+len(svc.name)+32 > limit {
			if t.Kind == servicefile.Struct && len(t.Fields) > 0 {
				for _, f := range t.Fields {
					work = append(work, join(path, f.Name))
				}
				continue
			}
			log.Warn("a runtime-data value is larger than one message to the server; not sent", "service", svc.name, "path", path, "bytes", len(enc), "limit", limit)
			continue
		}
		out = append(out, &session.ServiceData{Service: svc.name, Path: path, Value: enc})
	}
	return out
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// provLink is a Provider on one connection.
type provLink struct {
	p   *Provider
	sl  *sessLink
	ctx context.Context // ends with the connection or the provider
	// cancel ends ctx.
	cancel  context.CancelFunc
	live    map[string]bool // services the server accepted; written before the link is published
	running atomic.Int32

	mu       sync.Mutex
	ended    bool
	sessions map[string]*provided               // sessions opened over this connection
	calls    map[uint64]context.CancelCauseFunc // running calls by request id
}

// serve provides the services on one session layer and then sends their
// events and runtime data until it ends.
func (p *Provider) serve(sl *sessLink) {
	pl := &provLink{p: p, sl: sl, live: map[string]bool{}, sessions: map[string]*provided{}, calls: map[uint64]context.CancelCauseFunc{}}
	pl.ctx, pl.cancel = context.WithCancel(p.ctx)
	defer pl.end()
	if !sl.setRunner(pl) {
		return // the connection ended already
	}
	if !p.goroutine(func() {
		select {
		case <-sl.done:
			pl.cancel()
		case <-pl.ctx.Done():
		}
	}) {
		return
	}
	for _, svc := range p.order {
		err := pl.provide(svc)
		if pl.ctx.Err() != nil || errors.Is(err, ErrConnectionLost) {
			return
		}
		if p.cfg.OnProvided != nil {
			p.cfg.OnProvided(svc.name, err)
		}
		if err != nil {
			p.log.Error("the server refused a service", "service", svc.name, "error", err)
			continue
		}
		pl.live[svc.name] = true
		svc.mu.Lock()
		svc.add("") // the whole tree: the server's copy may be stale
		svc.mu.Unlock()
	}
	p.mu.Lock()
	p.link = pl
	if p.offline > 0 {
		p.log.Warn("events dropped while no connection to the server was live", "count", p.offline)
		p.offline = 0
	}
	p.signal()
	p.mu.Unlock()
	p.log.Info("providing services", "live", len(pl.live), "of", len(p.order))
	pl.writer()
}

// provide offers one service.
func (pl *provLink) provide(svc *provided) error {
	ctx, cancel := context.WithTimeout(pl.ctx, provideTimeout)
	defer cancel()
	op := "provide service " + svc.name
	r, err := pl.sl.roundTrip(ctx, op, func(id uint64) session.Message {
		return &session.ProvideService{ID: id, Service: svc.name, XML: svc.xml, Endpoints: svc.endpoints, Relay: pl.p.cfg.Relay != nil}
	}, nil)
	if err != nil {
		return err
	}
	if _, ok := r.(*session.OK); !ok {
		return unexpected(op, r)
	}
	return nil
}

// writer sends queued events and runtime-data changes until the
// connection ends.
func (pl *provLink) writer() {
	p := pl.p
	for {
		p.mu.Lock()
		events, dropped := p.events, p.dropped
		p.events, p.dropped = nil, 0
		p.mu.Unlock()
		if dropped > 0 {
			p.log.Warn("events dropped: the queue to the server was full", "count", dropped)
		}
		for i := range events {
			if !pl.send(&events[i]) {
				return
			}
		}
		for _, svc := range p.order {
			if !pl.live[svc.name] {
				continue
			}
			for _, m := range svc.changes(pl.sl.limit, p.log) {
				if !pl.send(m) {
					return
				}
			}
		}
		select {
		case <-p.wake:
		case <-pl.ctx.Done():
			return
		}
	}
}

// send writes one message; false when the connection is lost.
func (pl *provLink) send(m session.Message) bool {
	err := pl.sl.send(pl.ctx, "send "+m.Kind().String(), m)
	if err == nil {
		return true
	}
	if errors.Is(err, ErrConnectionLost) {
		return false
	}
	if r, ok := m.(session.Response); ok { // too large: say so instead
		var e *Error
		if errors.As(err, &e) {
			pl.sl.send(pl.ctx, "answer", session.NewError(r.ResponseTo(), e.Code, e.Message))
		}
	}
	pl.p.log.Warn("a message to the server was not sent", "kind", m.Kind().String(), "error", err)
	return true
}

// end runs when the connection ends or the provider closes.
func (pl *provLink) end() {
	pl.cancel()
	p := pl.p
	p.mu.Lock()
	if p.link == pl {
		p.link = nil
		p.offline += uint64(len(p.events))
		p.events = nil
	}
	p.mu.Unlock()
	pl.mu.Lock()
	pl.ended = true
	sessions := pl.sessions
	pl.sessions = nil
	pl.mu.Unlock()
	for id, svc := range sessions {
		p.dropDirectSession(id)
		svc.h.CloseSession(id, "the runner's connection to the server ended")
	}
}

// spawn runs a request in a goroutine and answers its result (nil: no
// answer), or answers CodeOverloaded when too many run already.
func (pl *provLink) spawn(id uint64, run func() session.Message) bool {
	if pl.running.Add(1) > maxProviderRunning {
		pl.running.Add(-1)
		pl.sendLater(session.NewError(id, session.CodeOverloaded, fmt.Sprintf("the runner is running %d requests already; try again when some have finished", maxProviderRunning)))
		return false
	}
	ok := pl.p.goroutine(func() {
		defer pl.running.Add(-1)
		if m := run(); m != nil {
			pl.send(m)
		}
	})
	if !ok {
		pl.running.Add(-1)
	}
	return ok
}

// handle serves one runner request of the server; it runs on the
// connection's reader and never waits. False for a message that is not a
// runner request.
func (pl *provLink) handle(m session.Message) bool {
	pl.mu.Lock()
	ended := pl.ended
	pl.mu.Unlock()
	if ended { // the provider closed, the connection lives on
		var id uint64
		switch m := m.(type) {
		case *session.RemoteOpen:
			id = m.ID
		case *session.RemoteCall:
			id = m.ID
		case *session.ConnectRequest:
			id = m.ID
		case *session.RemoteClose, *session.RemoteCancel:
		default:
			return false
		}
		if id != 0 {
			pl.send(session.NewError(id, session.CodeUnavailable, "this runner no longer provides its services (its provider was closed)"))
		}
		return true
	}
	switch m := m.(type) {
	case *session.RemoteOpen:
		svc := pl.p.svcs[m.Service]
		if svc == nil {
			pl.sendLater(session.NewError(m.ID, session.CodeUnknownService, fmt.Sprintf("this runner does not provide service %q", m.Service)))
			return true
		}
		pl.spawn(m.ID, func() session.Message {
			ctx, cancel := context.WithTimeout(pl.ctx, provideTimeout)
			err := svc.h.OpenSession(ctx, m.Session, m.Client)
			cancel()
			if err != nil {
				return errorAnswer(m.ID, err, session.CodeRefused)
			}
			pl.mu.Lock()
			if pl.ended {
				pl.mu.Unlock()
				svc.h.CloseSession(m.Session, "the runner's connection to the server ended")
				return nil
			}
			pl.sessions[m.Session] = svc
			pl.p.addDirectSession(svc, m) // provide_direct.go; under pl.mu, so that end drops it
			pl.mu.Unlock()
			return &session.OK{ID: m.ID}
		})
	case *session.RemoteCall:
		svc := pl.p.svcs[m.Service]
		if svc == nil {
			pl.sendLater(session.NewError(m.ID, session.CodeUnknownService, fmt.Sprintf("this runner does not provide service %q", m.Service)))
			return true
		}
		pl.mu.Lock()
		if _, dup := pl.calls[m.ID]; dup || pl.ended {
			pl.mu.Unlock()
			if dup {
				pl.sendLater(session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("request id %d is already used by a running call", m.ID)))
			}
			return true
		}
		ctx, cancel := context.WithCancelCause(pl.ctx)
		pl.calls[m.ID] = cancel
		pl.mu.Unlock()
		done := func() {
			pl.mu.Lock()
			delete(pl.calls, m.ID)
			pl.mu.Unlock()
			cancel(nil)
		}
		if !pl.spawn(m.ID, func() session.Message {
			defer done()
			cctx := ctx
			if m.Timeout > 0 {
				var stop context.CancelFunc
				cctx, stop = context.WithTimeout(ctx, m.Timeout)
				defer stop()
			}
			res, err := svc.h.Call(cctx, m.Session, m.Method, m.Args)
			if err != nil {
				return errorAnswer(m.ID, err, session.CodeApplication)
			}
			return &session.Result{ID: m.ID, Value: res}
		}) {
			done()
		}
	case *session.RemoteClose:
		pl.mu.Lock()
		svc := pl.sessions[m.Session]
		delete(pl.sessions, m.Session)
		pl.mu.Unlock()
		if svc != nil {
			pl.p.dropDirectSession(m.Session)
			svc.h.CloseSession(m.Session, m.Reason)
		}
	case *session.ConnectRequest:
		pl.connectRequest(m) // provide_relay.go
	case *session.RemoteCancel:
		pl.mu.Lock()
		cancel := pl.calls[m.Target]
		pl.mu.Unlock()
		if cancel != nil {
			cancel(errors.New("the caller stopped waiting"))
		}
	default:
		return false
	}
	return true
}

// badRequest answers a runner request that does not decode.
func (pl *provLink) badRequest(id uint64, err error) {
	code := session.CodeBadRequest
	if errors.Is(err, session.ErrUnknownKind) {
		code = session.CodeUnsupported
	}
	pl.sendLater(session.NewError(id, code, err.Error()))
}

// sendLater sends m from a goroutine of its own, so that the connection's
// reader never waits for a write.
func (pl *provLink) sendLater(m session.Message) {
	pl.p.goroutine(func() { pl.send(m) })
}

// errorAnswer is the Error answering a failed handler call.
func errorAnswer(id uint64, err error, def session.Code) *session.Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return session.NewError(id, e.Code, e.Message)
	case errors.Is(err, context.DeadlineExceeded):
		return session.NewError(id, session.CodeDeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return session.NewError(id, session.CodeCanceled, err.Error())
	}
	return session.NewError(id, def, err.Error())
}

// runnerHandler serves the server's runner requests on one link.
type runnerHandler interface {
	handle(m session.Message) bool
	badRequest(id uint64, err error)
}

// setRunner installs the handler of runner requests; false once the link
// has ended.
func (sl *sessLink) setRunner(h runnerHandler) bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.err != nil {
		return false
	}
	sl.runner = h
	return true
}

func (sl *sessLink) runnerHandler() runnerHandler {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.runner
}
