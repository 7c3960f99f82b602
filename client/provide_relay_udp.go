package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Relayed datagram links (docs/PROTOCOL.md §15.2, "Datagram links"). A
// provider with ProviderConfig.Relay has no udp socket bound for anyone to
// reach: when the server asks with a ConnectRequest whose Datagram is set,
// it dials a connected udp socket to the server's secondary port, sends
// ConnectAttach with the request's token in one datagram, and repeats it
// every relayUDPKeepalive (the server forgets a silent path, and a NAT its
// mapping). The socket is then a peer of the provider's tag listener
// (unreliable.go), exactly as a client address on a listening runner: the
// server forwards the session's tagged datagrams unchanged, and the
// provider checks their tags and counters with the session's link key.
// A connected socket accepts datagrams only from the server's address and
// is not a listening socket.

// relayUDPKeepalive is how often a udp path repeats its ConnectAttach
// (core/relay_udp.go: the server forgets a runner path after 40 s).
const relayUDPKeepalive = 10 * time.Second

// relayUDPBearer is the bearer of relayed datagram links.
var relayUDPBearer = bearers.Info{Type: "connect.bearer.udp", Scheme: "udp", Capabilities: bearers.Datagram}

// relayUDPListener hands the udp paths the provider dialed to its tag
// listener, as if it had accepted them.
type relayUDPListener struct {
	ch   chan bearers.Conn
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	paths map[string]*udpPath // the newest path of each session's link
}

func newRelayUDPListener() *relayUDPListener {
	return &relayUDPListener{ch: make(chan bearers.Conn, 16), done: make(chan struct{}), paths: map[string]*udpPath{}}
}

func (l *relayUDPListener) Accept(ctx context.Context) (bearers.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *relayUDPListener) Addr() net.Addr { return &net.UDPAddr{} }
func (l *relayUDPListener) Endpoint() bearers.Endpoint {
	return bearers.Endpoint{Scheme: "udp"}
}

// Close stops it and closes the paths not taken yet. Idempotent.
func (l *relayUDPListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		for k, p := range l.paths {
			p.Close()
			delete(l.paths, k)
		}
		l.mu.Unlock()
		for {
			select {
			case c := <-l.ch:
				c.Close()
				continue
			default:
			}
			break
		}
	})
	return nil
}

// offer hands a new path of link key to Accept, closing the link's older
// one (the server asked for a new one: it no longer uses it). False when
// the listener is closed or too many wait.
func (l *relayUDPListener) offer(key string, p *udpPath) bool {
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		return false
	default:
	}
	old := l.paths[key]
	select {
	case l.ch <- p:
	default:
		l.mu.Unlock()
		return false
	}
	l.paths[key] = p
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return true
}

// forget removes p from the paths if it is its link's newest.
func (l *relayUDPListener) forget(key string, p *udpPath) {
	l.mu.Lock()
	if l.paths[key] == p {
		delete(l.paths, key)
	}
	l.mu.Unlock()
}

// udpPath is a connected udp socket to the server's secondary port.
type udpPath struct {
	net.Conn
	done chan struct{}
	once sync.Once
}

func (p *udpPath) Peer() bearers.Peer { return bearers.Peer{} }

// Close is idempotent.
func (p *udpPath) Close() error {
	var err error
	p.once.Do(func() {
		close(p.done)
		err = p.Conn.Close()
	})
	return err
}

// connectUDP serves a ConnectRequest with Datagram set; it runs on its own
// goroutine and returns the answer.
func (p *Provider) connectUDP(ctx context.Context, m *session.ConnectRequest, addr string) session.Message {
	l := p.direct.udp
	if l == nil {
		return session.NewError(m.ID, session.CodeUnsupported, "this runner serves no relayed datagram links")
	}
	attach, err := session.Encode(&session.ConnectAttach{ID: m.ID, Token: m.Token})
	if err != nil {
		return session.NewError(m.ID, session.CodeInternal, err.Error())
	}
	frame := wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: attach})
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return session.NewError(m.ID, session.CodeUnavailable, fmt.Sprintf("dial the server's secondary endpoint udp://%s: %v", addr, err))
	}
	if _, err := c.Write(frame); err != nil {
		c.Close()
		return session.NewError(m.ID, session.CodeUnavailable, fmt.Sprintf("send ConnectAttach to udp://%s: %v", addr, err))
	}
	path := &udpPath{Conn: c, done: make(chan struct{})}
	key := m.Session + "\x00" + m.Link
	if !l.offer(key, path) {
		path.Close()
		return session.NewError(m.ID, session.CodeUnavailable, "the runner is stopping, or has too many udp paths waiting")
	}
	if !p.goroutine(func() { p.keepUDPPath(path, frame, func() { l.forget(key, path) }) }) {
		path.Close()
		return session.NewError(m.ID, session.CodeUnavailable, "the runner is stopping")
	}
	p.log.Debug("attached a udp path to the server's secondary endpoint for a datagram link", "session", m.Session, "link", m.Link, "addr", addr)
	return &session.OK{ID: m.ID}
}

// keepUDPPath repeats the path's ConnectAttach every relayUDPKeepalive
// until the path or the provider ends.
func (p *Provider) keepUDPPath(path *udpPath, frame []byte, forget func()) {
	defer forget()
	t := time.NewTicker(relayUDPKeepalive)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			path.Close()
			return
		case <-path.done:
			return
		case <-t.C:
		}
		if _, err := path.Write(frame); errors.Is(err, net.ErrClosed) {
			return
		} // another error (ICMP from a restarting server) is retried on the next tick
	}
}

// relayUDPAddr is host:port of a ConnectRequest.
func (p *Provider) relayUDPAddr(m *session.ConnectRequest) string {
	host := m.Host
	if host == "" {
		host = p.serverHost
	}
	return net.JoinHostPort(host, strconv.FormatUint(m.Port, 10))
}
