// Package wsbearer is an example third-party Connect bearer: WebSocket, type
// example.bearer.ws, scheme ws, built on golang.org/x/net/websocket. It is
// written only against the public bearer contract (package bearers) the way
// an out-of-tree author would write it, and cmd/connect-bearer-ws serves it
// as a plugin with bearerplugin.Serve. See README.md and docs/BEARERS.md.
//
// Endpoints are ws://host:port/path; the path defaults to /connect. A
// listener runs an HTTP server on host:port that upgrades requests for that
// path (any Origin is accepted: Connect authenticates clients itself, at
// registration) and answers 404 to any other path. Connections are byte
// streams carried in binary frames (see Conn). The bearer is reliable and
// ordered, not secure: it has no TLS (wss) support.
//
// Attributes:
//
//	origin  the Origin header a dialing client sends (default http://localhost)
//
// Unknown attributes are rejected.
package wsbearer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/websocket"

	"github.com/bearerkit/connect/bearers"
)

const (
	// Type is the bearer type id.
	Type = "example.bearer.ws"
	// Scheme is the endpoint scheme.
	Scheme = "ws"
	// DefaultPath is the HTTP path used when an endpoint has none.
	DefaultPath = "/connect"
	// DefaultOrigin is the Origin a client sends unless the origin attribute
	// says otherwise.
	DefaultOrigin = "http://localhost"
	// handshakeTimeout bounds reading a request's headers on the server and
	// the whole upgrade on the client.
	handshakeTimeout = 10 * time.Second
	// maxPending bounds upgraded connections waiting for Accept; beyond it
	// new ones are closed at once.
	maxPending = 256
)

// Registration names the WebSocket bearer.
var Registration = bearers.Registration{
	Info: bearers.Info{Type: Type, Scheme: Scheme, Capabilities: bearers.Reliable | bearers.Ordered},
	New:  New,
}

type bearer struct {
	origin string
}

// New creates the bearer. It rejects unknown attributes and an origin that
// is not an absolute http(s) URL, with errors wrapping bearers.ErrBadAttribute.
func New(cfg bearers.Config) (bearers.Bearer, error) {
	for name := range cfg.Attributes {
		if name != "origin" {
			return nil, fmt.Errorf("%w: %s has no attribute %q (known: origin)", bearers.ErrBadAttribute, Type, name)
		}
	}
	b := &bearer{origin: DefaultOrigin}
	if o, ok := cfg.Attributes["origin"]; ok {
		u, err := url.ParseRequestURI(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: %s origin=%q: want an absolute http(s) URL such as %s", bearers.ErrBadAttribute, Type, o, DefaultOrigin)
		}
		b.origin = o
	}
	return b, nil
}

// Info describes the bearer.
func (b *bearer) Info() bearers.Info { return Registration.Info }

func checkEndpoint(op string, ep bearers.Endpoint) (path string, err error) {
	if ep.Scheme != Scheme {
		return "", fmt.Errorf("%w: %s %s: the WebSocket bearer serves scheme %q", bearers.ErrBadEndpoint, op, ep, Scheme)
	}
	if ep.Path == "" {
		return DefaultPath, nil
	}
	return ep.Path, nil
}

// Listen starts an HTTP server on the endpoint that upgrades requests for
// its path to WebSocket connections, which Accept returns.
func (b *bearer) Listen(ctx context.Context, ep bearers.Endpoint) (bearers.Listener, error) {
	path, err := checkEndpoint("listen", ep)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	raw, err := lc.Listen(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("wsbearer: listen %s: %w", ep, err)
	}
	bound := ep.WithAddr(raw.Addr())
	bound.Path = path
	l := &listener{
		raw:       raw,
		ep:        bound,
		conns:     make(chan *Conn),
		closing:   make(chan struct{}),
		serveDone: make(chan struct{}),
		slots:     make(chan struct{}, maxPending),
	}
	ws := websocket.Server{Handler: l.handle} // no Handshake: any Origin
	l.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				http.NotFound(w, r)
				return
			}
			ws.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: handshakeTimeout,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		defer close(l.serveDone)
		if err := l.srv.Serve(raw); !errors.Is(err, http.ErrServerClosed) {
			l.serveErr = fmt.Errorf("wsbearer: serve %s: %w", bound, err)
		}
	}()
	return l, nil
}

// listener is a WebSocket listener. It owns its HTTP server's goroutines
// until Close; each accepted connection's handler goroutine (which must stay
// in the handler for the WebSocket to stay open) is owned by that Conn and
// ends when it is closed.
type listener struct {
	raw     net.Listener
	ep      bearers.Endpoint
	srv     *http.Server
	conns   chan *Conn
	closing chan struct{}
	slots   chan struct{}

	serveDone chan struct{}
	serveErr  error // set before serveDone is closed

	mu       sync.Mutex
	closed   bool
	handlers sync.WaitGroup // handlers deciding whether Accept takes their Conn

	closeOnce sync.Once
	closeErr  error
}

// handle runs for each upgraded request: it offers the connection to Accept
// and then keeps the handler (and so the WebSocket) alive until the Conn is
// closed.
func (l *listener) handle(ws *websocket.Conn) {
	select {
	case l.slots <- struct{}{}:
	default: // too many waiting for Accept
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.slots
		return
	}
	l.handlers.Add(1)
	l.mu.Unlock()

	req := ws.Request()
	_ = ws.SetDeadline(time.Time{}) // the HTTP server's deadlines no longer apply
	local, _ := req.Context().Value(http.LocalAddrContextKey).(net.Addr)
	c := newConn(ws, local, tcpAddr(req.RemoteAddr))
	select {
	case l.conns <- c:
	case <-l.closing:
		c.Close()
	}
	<-l.slots
	l.handlers.Done()
	<-c.finished
}

// tcpAddr parses an http.Request's RemoteAddr.
func tcpAddr(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return stringAddr(s)
	}
	return net.TCPAddrFromAddrPort(ap)
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

func (l *listener) Addr() net.Addr             { return l.raw.Addr() }
func (l *listener) Endpoint() bearers.Endpoint { return l.ep }

func (l *listener) closedError() error {
	return &net.OpError{Op: "accept", Net: "ws", Addr: l.raw.Addr(), Err: net.ErrClosed}
}

// Accept returns the next upgraded connection.
func (l *listener) Accept(ctx context.Context) (bearers.Conn, error) {
	select {
	case <-l.closing:
		return nil, l.closedError()
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closing:
		return nil, l.closedError()
	case <-l.serveDone:
		if l.serveErr != nil {
			return nil, l.serveErr
		}
		return nil, l.closedError()
	case <-ctx.Done():
		return nil, fmt.Errorf("wsbearer: accept on %s: %w", l.ep, ctx.Err())
	}
}

// Close shuts the HTTP server down and waits for its goroutines.
// Connections already accepted stay open. Close is idempotent.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closing)
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.closeErr = l.srv.Close()
		<-l.serveDone
		l.handlers.Wait()
	})
	return l.closeErr
}

// Dial connects to the endpoint and performs the WebSocket upgrade, bounded
// by ctx and by a 10 second handshake timeout.
func (b *bearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	path, err := checkEndpoint("dial", ep)
	if err != nil {
		return nil, err
	}
	cfg, err := websocket.NewConfig("ws://"+ep.HostPort()+path, b.origin)
	if err != nil {
		return nil, fmt.Errorf("%w: wsbearer: dial %s: %v", bearers.ErrBadEndpoint, ep, err)
	}
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("wsbearer: dial %s: %w", ep, err)
	}
	// Make the upgrade honour ctx: expire the socket's deadline when it ends.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	ws, err := websocket.NewClient(cfg, raw)
	if !stop() || err != nil {
		raw.Close()
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, fmt.Errorf("wsbearer: dial %s: upgrade: %w", ep, cerr)
		}
		return nil, fmt.Errorf("wsbearer: dial %s: upgrade: %w", ep, err)
	}
	return newConn(ws, raw.LocalAddr(), raw.RemoteAddr()), nil
}
