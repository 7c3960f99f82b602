// Package tcp is the stock stream bearer, connect.bearer.tcp, serving
// endpoints tcp://host:port. Its connections are reliable, ordered byte
// streams (capabilities Reliable|Ordered).
//
// # Kernel sockets and handover
//
// Every Conn this bearer returns is backed by a kernel TCP socket and says so
// with the method
//
//	NetConn() net.Conn
//
// The plugin SDK looks for exactly this interface,
// interface{ NetConn() net.Conn }, to find a kernel socket it can hand to the
// host as a file descriptor: when the returned net.Conn is a *net.TCPConn or a
// *net.UDPConn its descriptor is handed over and the host reads and writes the
// socket directly; anything else is relayed through the plugin. Bearers that
// wrap a kernel socket in a way that changes the bytes (TLS, for example) must
// not implement it.
//
// A Conn also forwards io.ReaderFrom and io.WriterTo to the *net.TCPConn
// (unwrapping peers that implement NetConn), so that io.Copy keeps the
// kernel's splice and sendfile paths.
//
// Attributes:
//
//	nodelay    disable Nagle's algorithm (bool), default true
//	keepalive  TCP keep-alive period (Go duration), default 15s; "0" disables
//
// A Bearer, its Listeners and Conns are safe for concurrent use.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// Type and Scheme of the tcp bearer.
const (
	Type   = "connect.bearer.tcp"
	Scheme = "tcp"
)

// Info describes the tcp bearer.
var Info = bearers.Info{Type: Type, Scheme: Scheme, Capabilities: bearers.Reliable | bearers.Ordered}

// Registration registers the tcp bearer in a bearers.Registry.
var Registration = bearers.Registration{Info: Info, New: New}

// DefaultKeepAlive is the keep-alive period when the attribute is not set.
const DefaultKeepAlive = 15 * time.Second

// Bearer is the tcp bearer.
type Bearer struct {
	nodelay   bool
	keepalive time.Duration // < 0: disabled (net's convention)
}

var _ bearers.Bearer = (*Bearer)(nil)

// New creates a tcp bearer from its attributes; unknown attributes and bad
// values give an error wrapping bearers.ErrBadAttribute that names them.
func New(cfg bearers.Config) (bearers.Bearer, error) {
	b := &Bearer{nodelay: true, keepalive: DefaultKeepAlive}
	var unknown []string
	for name, value := range cfg.Attributes {
		switch name {
		case "nodelay":
			v, err := strconv.ParseBool(strings.TrimSpace(value))
			if err != nil {
				return nil, fmt.Errorf("%w: %s attribute nodelay=%q: want true or false", bearers.ErrBadAttribute, Type, value)
			}
			b.nodelay = v
		case "keepalive":
			d, err := time.ParseDuration(strings.TrimSpace(value))
			if err != nil || d < 0 {
				return nil, fmt.Errorf("%w: %s attribute keepalive=%q: want a duration such as 15s, or 0 to disable", bearers.ErrBadAttribute, Type, value)
			}
			if d == 0 {
				d = -1
			}
			b.keepalive = d
		default:
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%w: %s does not know attribute(s) %s (known: keepalive, nodelay)",
			bearers.ErrBadAttribute, Type, strings.Join(unknown, ", "))
	}
	return b, nil
}

// Info describes the bearer.
func (b *Bearer) Info() bearers.Info { return Info }

// Listen binds ep and listens. Cancelling ctx abandons a Listen in progress
// (for example a slow name lookup).
func (b *Bearer) Listen(ctx context.Context, ep bearers.Endpoint) (bearers.Listener, error) {
	if err := Info.CheckEndpoint("listen", ep); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAlive: b.keepalive}
	nl, err := lc.Listen(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", Type, ep, err)
	}
	tl, ok := nl.(*net.TCPListener)
	if !ok {
		_ = nl.Close()
		return nil, fmt.Errorf("%s: listen %s: got %T, not a TCP listener", Type, ep, nl)
	}
	return &Listener{
		ln:     tl,
		ep:     ep.WithAddr(tl.Addr()),
		b:      b,
		turn:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}, nil
}

// Dial connects to ep.
func (b *Bearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	if err := Info.CheckEndpoint("dial", ep); err != nil {
		return nil, err
	}
	if ep.Port == 0 {
		return nil, fmt.Errorf("%s: dial %s: %w: port 0", Type, ep, bearers.ErrBadEndpoint)
	}
	d := net.Dialer{KeepAlive: b.keepalive}
	nc, err := d.DialContext(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", Type, ep, err)
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		_ = nc.Close()
		return nil, fmt.Errorf("%s: dial %s: got %T, not a TCP socket", Type, ep, nc)
	}
	return b.wrap(tc), nil
}

func (b *Bearer) wrap(tc *net.TCPConn) *Conn {
	_ = tc.SetNoDelay(b.nodelay) // fails only on a closed socket, which Read and Write will report
	return &Conn{tc: tc}
}

// Listener accepts tcp connections. It is safe for concurrent use.
type Listener struct {
	ln *net.TCPListener
	ep bearers.Endpoint
	b  *Bearer

	// turn serialises the kernel accept, so that cancelling one Accept's
	// context (which moves the listener's deadline) cannot disturb another.
	turn      chan struct{}
	closed    chan struct{}
	closeDone atomic.Bool
}

var _ bearers.Listener = (*Listener)(nil)

// aLongTimeAgo is a deadline that has passed, to interrupt a blocked accept.
var aLongTimeAgo = time.Unix(1, 0)

// Accept waits for a connection. It returns an error wrapping ctx.Err() when
// ctx ends first and one wrapping net.ErrClosed after Close. Other errors
// (for example running out of descriptors) are returned as they are; the
// listener stays usable.
func (l *Listener) Accept(ctx context.Context) (bearers.Conn, error) {
	select {
	case <-l.closed:
		return nil, l.acceptErr(net.ErrClosed)
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, l.acceptErr(err)
	}
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, l.acceptErr(ctx.Err())
	case <-l.closed:
		return nil, l.acceptErr(net.ErrClosed)
	}
	defer func() { <-l.turn }()

	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = l.ln.SetDeadline(aLongTimeAgo)
		close(fired)
	})
	tc, err := l.ln.AcceptTCP()
	if !stop() {
		<-fired
		_ = l.ln.SetDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, net.ErrClosed) {
			return nil, l.acceptErr(ctx.Err())
		}
		return nil, fmt.Errorf("%s: accept on %s: %w", Type, l.ep, err)
	}
	// A connection that arrived as ctx ended is returned rather than dropped.
	return l.b.wrap(tc), nil
}

func (l *Listener) acceptErr(err error) error {
	return fmt.Errorf("%s: accept on %s: %w", Type, l.ep, err)
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Endpoint is the bound address as a tcp endpoint (with the real port).
func (l *Listener) Endpoint() bearers.Endpoint { return l.ep }

// Close stops listening; connections already accepted stay open. It is
// idempotent: later calls return nil.
func (l *Listener) Close() error {
	if !l.closeDone.CompareAndSwap(false, true) {
		return nil
	}
	close(l.closed)
	if err := l.ln.Close(); err != nil {
		return fmt.Errorf("%s: close listener %s: %w", Type, l.ep, err)
	}
	return nil
}

// Conn is a tcp connection. Its methods are those of the *net.TCPConn it
// wraps, plus NetConn and Peer; Close is idempotent.
type Conn struct {
	tc     *net.TCPConn
	closed atomic.Bool
}

var (
	_ bearers.Conn  = (*Conn)(nil)
	_ io.ReaderFrom = (*Conn)(nil)
	_ io.WriterTo   = (*Conn)(nil)
)

// NetConn returns the underlying *net.TCPConn, the kernel socket (see the
// package documentation).
func (c *Conn) NetConn() net.Conn { return c.tc }

// Peer returns an empty Peer: TCP authenticates nothing.
func (c *Conn) Peer() bearers.Peer { return bearers.Peer{} }

// Read reads from the stream.
func (c *Conn) Read(b []byte) (int, error) { return c.tc.Read(b) }

// Write writes to the stream.
func (c *Conn) Write(b []byte) (int, error) { return c.tc.Write(b) }

// netConner is implemented by connections that wrap a kernel socket.
type netConner interface{ NetConn() net.Conn }

// ReadFrom copies r into the connection, letting the kernel splice or
// sendfile when r is (or wraps, through NetConn) a socket or a file.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	switch src := r.(type) {
	case netConner:
		if inner := src.NetConn(); inner != nil {
			r = inner
		}
	case *io.LimitedReader:
		if nc, ok := src.R.(netConner); ok {
			if inner := nc.NetConn(); inner != nil {
				lr := &io.LimitedReader{R: inner, N: src.N}
				n, err := c.tc.ReadFrom(lr)
				src.N = lr.N
				return n, err
			}
		}
	}
	return c.tc.ReadFrom(r)
}

// WriteTo copies the connection into w, letting the kernel splice when w is
// (or wraps, through NetConn) a socket.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if nc, ok := w.(netConner); ok {
		if inner := nc.NetConn(); inner != nil {
			w = inner
		}
	}
	return c.tc.WriteTo(w)
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error { return c.tc.CloseRead() }

// CloseWrite shuts down the writing side; the peer reads io.EOF.
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// Close closes the connection. Later calls return nil.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	return c.tc.Close()
}

// LocalAddr is the local address.
func (c *Conn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.tc.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.tc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }
