package core

import (
	"sync/atomic"

	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/bearerkit/connect/resume"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// ClientInfo describes a registered client.
type ClientInfo struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Adapter     string    `json:"adapter"`
	Remote      string    `json:"remote"`
	Auth        string    `json:"auth"` // "token" or "certificate CN=..."
	ConnectedAt time.Time `json:"connectedAt"`
}

// clientConn is one connection from accept to close. The handle goroutine
// owns it; goAway may be called from elsewhere.
type clientConn struct {
	s       *Server
	adapter *adapter
	bc      bearers.Conn
	wc      wire.Conn
	log     *slog.Logger

	// Set once registration succeeds, before the conn enters s.clients.
	registered bool
	clientID   uuid.UUID
	name       string
	auth       string
	identity   string // verified certificate identity, if any
	tokenName  string // the <token name=".."> the client presented, if named
	since      time.Time

	// tunnel: registered with wire.FeatureTunnel, an additional connection
	// of the client id carrying one tunnel stream (tunnels.go).
	tunnel bool

	// stats are the connection's measurements, nil when diagnostics are
	// off; pinger sends the server's keepalive pings once registered.
	stats  *connStats
	pinger *pinger
	// stream is the resume stream this connection carries, once handed to
	// it (serveResume); the pinger then measures round trips through it.
	stream atomic.Pointer[resume.Stream]

	// peerMaxPayload is the client's announced receive limit (Hello).
	peerMaxPayload int
	// sessions is the session layer, created on the first session message;
	// only the connection's reader goroutine touches the pointer.
	sessions *connSessions

	closeOnce sync.Once
}

func (c *clientConn) info() ClientInfo {
	return ClientInfo{ID: c.clientID.String(), Name: c.name, Adapter: c.adapter.cfg.Name,
		Remote: c.bc.RemoteAddr().String(), Auth: c.auth, ConnectedAt: c.since}
}

// goAway tells the peer why the connection ends and closes it. Idempotent.
func (c *clientConn) goAway(code wire.CloseCode, reason string) {
	c.closeOnce.Do(func() {
		c.bc.SetWriteDeadline(time.Now().Add(time.Second))
		c.wc.WriteMessage(&wire.Close{Code: code, Reason: reason})
		c.wc.Close()
	})
}

func (c *clientConn) close() { c.closeOnce.Do(func() { c.wc.Close() }) }

// reject answers a failed registration with a Reject and closes.
func (c *clientConn) reject(code wire.RejectCode, retryable bool, msg string) {
	c.closeOnce.Do(func() {
		c.bc.SetWriteDeadline(time.Now().Add(time.Second))
		c.wc.WriteMessage(&wire.Reject{Code: code, Message: msg, Retryable: retryable})
		c.wc.Close()
	})
}

// handle runs one connection: registration, then the connected loop.
func (s *Server) handle(a *adapter, bc bearers.Conn) {
	a.accepted.Add(1)
	s.metrics.connections.Add(1)
	var st *connStats
	if s.diag.on {
		st = &connStats{}
	}
	bc = &countingConn{Conn: bc, a: a, st: st}
	var wc wire.Conn
	if a.sup.Status().Capabilities.Has(bearers.Datagram) {
		wc = wire.NewDatagramConn(bc, wire.MaxDatagramPayload)
	} else {
		wc = wire.NewStreamConn(bc, wire.DefaultMaxPayload)
	}
	if st != nil {
		wc = countingWire{Conn: wc, st: st}
	}
	c := &clientConn{s: s, adapter: a, bc: bc, wc: wc, stats: st,
		log: s.log.With("adapter", a.cfg.Name, "remote", bc.RemoteAddr().String())}
	if !s.track(c) {
		bc.Close()
		return
	}
	defer s.untrack(c)
	defer c.close()

	if err := c.register(); err != nil {
		s.metrics.registrationFailures.Add(1)
		a.acceptErrors.Add(1)
		c.log.Warn("registration failed", "error", err)
		return
	}
	s.metrics.registrations.Add(1)
	c.startPings()
	c.serve()
	c.close()
	c.stopPings()
}

var errRegistrationTimeout = errors.New("registration timed out")

func (c *clientConn) register() error {
	timeout := c.s.cfg.RegistrationTimeout
	c.bc.SetReadDeadline(time.Now().Add(timeout))
	m, err := c.wc.ReadMessage()
	if err != nil {
		if isTimeout(err) {
			c.reject(wire.RejectRegistrationTimeout, true, fmt.Sprintf("no Hello within the registration timeout (%s)", timeout))
			return fmt.Errorf("%w: no Hello within %s", errRegistrationTimeout, timeout)
		}
		var de *wire.DecodeError
		if errors.As(err, &de) || errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrFrameTooLarge) {
			c.reject(wire.RejectProtocol, false, "not a Connect protocol v1 client: "+err.Error())
			return fmt.Errorf("client does not speak the Connect protocol: %w", err)
		}
		return fmt.Errorf("reading Hello: %w", err)
	}
	hello, ok := m.(*wire.Hello)
	if !ok {
		c.reject(wire.RejectProtocol, false, fmt.Sprintf("the first message must be Hello, got %v", m.Type()))
		return fmt.Errorf("first message was %v, not Hello", m.Type())
	}
	if hello.MinVersion > wire.Version || hello.MaxVersion < wire.Version {
		c.reject(wire.RejectVersion, false, fmt.Sprintf("client speaks protocol versions %d..%d, this server speaks %d", hello.MinVersion, hello.MaxVersion, wire.Version))
		return fmt.Errorf("client versions %d..%d, server %d", hello.MinVersion, hello.MaxVersion, wire.Version)
	}
	auth, ok := c.s.authenticate(hello.Token, c.bc.Peer())
	if !ok {
		c.reject(wire.RejectAuth, false, "authentication failed: wrong or missing token (pass --token or --token-file; a client on the server's machine with the same --state-dir finds the generated token)")
		return errors.New("authentication failed: wrong or missing token")
	}
	c.clientID, c.name, c.auth, c.since = uuid.UUID(hello.ClientID), hello.ClientName, auth, time.Now()
	c.identity = c.bc.Peer().Identity
	if hello.Token != "" {
		c.tokenName = c.s.cfg.Auth.TokenNames[hello.Token]
	}
	c.peerMaxPayload = int(hello.MaxPayload)
	if hello.Features&wire.FeatureTunnel != 0 {
		if c.adapter.sup.Status().Capabilities.Has(bearers.Datagram) {
			c.reject(wire.RejectProtocol, false, "tunnels need a stream bearer (tcp, ssl), not "+c.adapter.cfg.Name)
			return errors.New("a tunnel connection over a datagram bearer")
		}
		c.tunnel = true
	}
	if err := c.welcome(); err != nil {
		return fmt.Errorf("sending Welcome: %w", err)
	}
	c.bc.SetReadDeadline(time.Time{})

	s := c.s
	s.mu.Lock()
	old := s.clients[c.clientID]
	if c.tunnel { // an additional connection: the client's own stays
		old = nil
	} else {
		s.clients[c.clientID] = c
	}
	c.registered = true
	s.mu.Unlock()
	if old != nil {
		// The same client id registered again: the newer connection wins.
		old.goAway(wire.CloseReplaced, "replaced by a newer connection of the same client")
	}
	c.log = c.log.With("client_id", c.clientID.String())
	c.log.Info("client registered", "name", c.name, "auth", auth)
	return nil
}

func (c *clientConn) welcome() error {
	return c.wc.WriteMessage(&wire.Welcome{
		Version:            wire.Version,
		ServerID:           c.s.id,
		ClientID:           c.clientID,
		PingIntervalMillis: uint32(c.s.opts.PingInterval / time.Millisecond),
		PingWindowMillis:   uint32(c.s.pingWindow() / time.Millisecond),
		MaxPayload:         uint32(wire.DefaultMaxPayload),
		Features:           c.features(),
	})
}

// authenticate checks a token against every configured one (in constant
// time) or accepts a verified client certificate when the configuration
// allows it. It returns how the client was authenticated.
func (s *Server) authenticate(token string, peer bearers.Peer) (string, bool) {
	if token != "" {
		match := 0
		for _, t := range s.tokens {
			match |= subtle.ConstantTimeCompare([]byte(token), []byte(t))
		}
		if match == 1 {
			return "token", true
		}
		return "", false
	}
	if s.cfg.Auth.AllowCertificates && peer.Identity != "" {
		return "certificate " + peer.Identity, true
	}
	return "", false
}

// serve is the connected loop: answer pings, drop the connection when the
// client falls silent for the ping window or says goodbye. A client that
// opens or resumes a resume stream hands the connection to it
// (serveResume); the others carry their sessions on this connection.
func (c *clientConn) serve() {
	defer c.closeSessions()
	idle := max(c.s.pingWindow(), 3*c.s.opts.PingInterval) // datagram pings may be lost
	for {
		c.bc.SetReadDeadline(time.Now().Add(idle))
		m, err := c.wc.ReadMessage()
		if err != nil {
			switch {
			case isTimeout(err):
				c.log.Info("client silent; dropping the connection", "after", idle)
				c.goAway(wire.ClosePingTimeout, fmt.Sprintf("no traffic for %s", idle))
			case errors.Is(err, net.ErrClosed):
			default:
				c.log.Info("client connection ended", "error", err)
			}
			return
		}
		switch m := m.(type) {
		case *wire.Ping:
			c.s.metrics.pings.Add(1)
			if err := c.wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano}); err != nil {
				c.log.Info("client connection ended", "error", err)
				return
			}
		case *wire.Hello:
			// A datagram client retransmits Hello until it sees Welcome.
			if uuid.UUID(m.ClientID) != c.clientID {
				c.reject(wire.RejectProtocol, false, "a second Hello with another client id on one connection")
				return
			}
			c.welcome()
		case *wire.Close:
			c.log.Info("client closed the connection", "reason", m.Reason)
			return
		case *wire.Pong:
			c.onPong(m) // the round trip of a keepalive ping; others are harmless
		case *wire.Data:
			if isResumeStart(m) && c.sessions == nil && !c.adapter.sup.Status().Capabilities.Has(bearers.Datagram) {
				c.serveResume(m)
				return
			}
			if m.Channel == session.Channel && !c.tunnel { // a tunnel connection carries its stream only
				c.sessionLayer().handle(m.Payload)
			} else {
				c.s.metrics.unhandled.Add(1) // channels of later layers
			}
		default:
			c.s.metrics.unhandled.Add(1)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// countingConn counts a connection's bytes into its adapter's counters
// and, with diagnostics on, its own.
type countingConn struct {
	bearers.Conn
	a  *adapter
	st *connStats // nil when diagnostics are off
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.a.bytesIn.Add(uint64(n))
	if c.st != nil {
		c.st.bytesIn.Add(uint64(n))
	}
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.a.bytesOut.Add(uint64(n))
	if c.st != nil {
		c.st.bytesOut.Add(uint64(n))
	}
	return n, err
}

// principal is who this connection is, for policies.
func (c *clientConn) principal() principal {
	return principal{clientID: c.clientID.String(), identity: c.identity, token: c.tokenName}
}
