package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Runners that do not listen (docs/REMOTE.md, "Runners that do not
// listen"). A provider with ProviderConfig.Relay has no listening socket:
// it offers its services with ProvideService.Relay, the server gives its
// sessions' direct links the server's secondary endpoint, and when a
// client opens one there the server sends a ConnectRequest over the
// provider's control connection. The provider dials the secondary port
// (retrying up to MaxRetries times), sends ConnectAttach with the
// request's one-time token, answers OK, and serves the connection as a
// direct link accepted from a listener: the client's LinkOpen arrives on
// it through the server's relay, and is checked as always.

// ProviderRelay configures a provider that does not listen.
type ProviderRelay struct {
	// MaxRetries bounds the attempts to dial the server's secondary port
	// for one connection request. Default 10.
	MaxRetries int
	// RetryWait is the pause between attempts. Default 100ms.
	RetryWait time.Duration
	// Dial dials the secondary port; default a net.Dialer ("tcp").
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultMaxRetries is ProviderRelay.MaxRetries when zero.
const DefaultMaxRetries = 10

// relayBearer is the bearer of relayed links: the secondary endpoint
// frames tcp connections.
var relayBearer = bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}

// relayConn is a dialed connection served as a direct link.
type relayConn struct{ net.Conn }

func (relayConn) Peer() bearers.Peer { return bearers.Peer{} }

// dialRetry dials addr up to maxRetries times, pausing wait between
// attempts; it returns the last error, saying how many attempts it made.
func dialRetry(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string, maxRetries int, wait time.Duration) (net.Conn, error) {
	maxRetries = max(maxRetries, 1)
	var err error
	for attempt := 1; ; attempt++ {
		var c net.Conn
		if c, err = dial(ctx, "tcp", addr); err == nil {
			return c, nil
		}
		if attempt >= maxRetries || ctx.Err() != nil {
			return nil, fmt.Errorf("dial the server's secondary endpoint tcp://%s: %w (gave up after %d attempts, maxRetries %d)", addr, err, attempt, maxRetries)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dial the server's secondary endpoint tcp://%s: %w (after %d attempts)", addr, ctx.Err(), attempt)
		case <-t.C:
		}
	}
}

// connectRequest serves a ConnectRequest of the server; it runs on the
// connection's reader and never waits.
func (pl *provLink) connectRequest(m *session.ConnectRequest) {
	p := pl.p
	rc := p.cfg.Relay
	if rc == nil {
		pl.sendLater(session.NewError(m.ID, session.CodeUnsupported, "this runner accepts its direct links on its own endpoints; it takes no connection requests"))
		return
	}
	if m.Datagram { // provide_relay_udp.go
		pl.spawn(m.ID, func() session.Message {
			ctx, cancel := context.WithTimeout(pl.ctx, linkHandshakeTimeout)
			defer cancel()
			return p.connectUDP(ctx, m, p.relayUDPAddr(m))
		})
		return
	}
	pl.spawn(m.ID, func() session.Message {
		host := m.Host
		if host == "" {
			host = p.serverHost
		}
		addr := net.JoinHostPort(host, strconv.FormatUint(m.Port, 10))
		dial := rc.Dial
		if dial == nil {
			var d net.Dialer
			dial = d.DialContext
		}
		wait := rc.RetryWait
		if wait <= 0 {
			wait = 100 * time.Millisecond
		}
		retries := rc.MaxRetries
		if retries <= 0 {
			retries = DefaultMaxRetries
		}
		ctx, cancel := context.WithTimeout(pl.ctx, linkHandshakeTimeout)
		defer cancel()
		c, err := dialRetry(ctx, dial, addr, retries, wait)
		if err != nil {
			p.log.Warn("a connection request of the server failed", "session", m.Session, "link", m.Link, "error", err)
			return session.NewError(m.ID, session.CodeUnavailable, err.Error())
		}
		b, err := session.Encode(&session.ConnectAttach{ID: m.ID, Token: m.Token})
		if err == nil {
			c.SetWriteDeadline(time.Now().Add(linkHandshakeTimeout))
			_, err = c.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b}))
			c.SetWriteDeadline(time.Time{})
		}
		if err != nil {
			c.Close()
			return session.NewError(m.ID, session.CodeUnavailable, "sending ConnectAttach: "+err.Error())
		}
		dc := p.newDirectConn(relayConn{c}, relayBearer)
		if dc == nil {
			c.Close()
			return session.NewError(m.ID, session.CodeOverloaded, "the runner serves as many direct links as it may")
		}
		if !p.goroutine(dc.serve) {
			dc.close()
			return session.NewError(m.ID, session.CodeUnavailable, "the runner is stopping")
		}
		p.log.Debug("connected to the server's secondary endpoint for a direct link", "session", m.Session, "link", m.Link, "addr", addr)
		return &session.OK{ID: m.ID}
	})
}

var errNoRelay = errors.New("client: ProviderConfig.Relay and Listeners exclude each other: a provider either listens or has the server relay")
