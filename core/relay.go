package core

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// The secondary endpoint and connection requests (docs/REMOTE.md, "Runners
// that do not listen"; docs/PROTOCOL.md, "Connection requests").
//
// Only servers listen. A runner without listening sockets provides its
// services with ProvideService.Relay; the routing documents of their
// sessions then give the runner's direct links the server's secondary
// endpoint (tcp://HOST:secondaryConnectPort). A client opens such a link
// there like any direct link: its first frame is the LinkOpen. The server
// checks the session's token (the runner checks it again), asks the
// runner over its control connection (its resume stream) for a connection
// with a ConnectRequest carrying a one-time token, takes the connection the
// runner dials to the same port (its first frame a ConnectAttach with that
// token), forwards the LinkOpen and relays both ways, byte for byte, until
// either side closes.
//
// Datagram (udp) links are relayed by the udp socket on the same port:
// relay_udp.go.
//
// Goroutines: the acceptor (serveRelay) and one per accepted connection
// (relayConn, which becomes the client-to-runner copier of a relayed
// link; a second copier runs beside it), all owned by the Server's wait
// group and stopped by its context (which closes the listener and every
// relayed connection).

const (
	// relayHandshakeTimeout bounds the first frame on the secondary port
	// and the wait for the runner's connection.
	relayHandshakeTimeout = 10 * time.Second
	// relayMaxFirstFrame bounds the first frame's payload (a LinkOpen or
	// ConnectAttach is a few hundred bytes).
	relayMaxFirstFrame = 4096
	// maxRelayConns bounds the connections on the secondary port at once
	// (handshaking, waiting or relayed, both sides counted); one more is
	// closed at once.
	maxRelayConns = 8192
	// relayRetryWait is the pause between attempts to bind the port.
	relayRetryWait = 200 * time.Millisecond
)

// relayState is the server's secondary endpoint.
type relayState struct {
	ln   net.Listener
	host string // the bound host, for documents when a connection's own address is unknown
	port int    // the port runners and clients are told (secondaryConnectPort, else the bound one)

	mu      sync.Mutex
	pending map[string]*relayWait // by one-time token
	conns   map[net.Conn]struct{}

	udp *udpRelay // the udp socket on the same port (relay_udp.go); nil if it could not bind

	links, refused atomic.Uint64 // relayed links; connections refused
	bytesIn        atomic.Uint64 // client → runner
	bytesOut       atomic.Uint64 // runner → client
}

// relayBindHost is the host the secondary endpoint binds: that of the
// first tcp or ssl adapter (runners reach the server there), else of the
// first adapter, so that a server on loopback stays on loopback.
func (s *Server) relayBindHost() string {
	for _, a := range s.cfg.Adapters {
		if a.Address.Scheme == "tcp" || a.Address.Scheme == "ssl" {
			return a.Address.Host
		}
	}
	if len(s.cfg.Adapters) > 0 {
		return s.cfg.Adapters[0].Address.Host
	}
	return "127.0.0.1"
}

// listenFunc is net.Listen, replaced in tests.
var listenFunc = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// bindSecondary binds the secondary port, trying up to maxRetries times
// (a port in use may be released by a process that is ending).
func bindSecondary(ctx context.Context, addr string, maxRetries int, wait time.Duration) (net.Listener, error) {
	maxRetries = max(maxRetries, 1)
	var err error
	for attempt := 1; attempt <= maxRetries; attempt++ {
		var ln net.Listener
		if ln, err = listenFunc(addr); err == nil {
			return ln, nil
		}
		if attempt == maxRetries {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil, fmt.Errorf("secondary endpoint: listen on tcp://%s: %w (gave up after %d attempts, <resume maxRetries>)", addr, err, maxRetries)
}

// startRelay binds the secondary endpoint and serves it until the server
// stops.
func (s *Server) startRelay() error {
	r := &s.relay
	addr := net.JoinHostPort(s.relayBindHost(), strconv.Itoa(s.cfg.Resume.SecondaryBindPort))
	ln, err := bindSecondary(s.ctx, addr, s.cfg.Resume.MaxRetries, relayRetryWait)
	if err != nil {
		return fmt.Errorf("core: %w", err)
	}
	r.ln = ln
	r.host = s.relayBindHost()
	r.port = ln.Addr().(*net.TCPAddr).Port
	if s.cfg.Resume.SecondaryConnectPort != 0 {
		r.port = s.cfg.Resume.SecondaryConnectPort
	}
	r.pending = map[string]*relayWait{}
	r.conns = map[net.Conn]struct{}{}
	s.startRelayUDP(ln.Addr().(*net.TCPAddr)) // relay_udp_server.go
	s.log.Info("secondary endpoint: runners without listening sockets connect here when asked", "listen", "tcp://"+ln.Addr().String(), "announced_port", r.port)
	stop := context.AfterFunc(s.ctx, func() {
		ln.Close()
		if r.udp != nil {
			r.udp.pc.Close() // serve ends; its requests end with s.ctx
		}
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		s.serveRelay(ln)
	}()
	return nil
}

// SecondaryEndpoint is the address of the server's secondary endpoint as
// announced (the bound host, the announced port); empty before Start.
func (s *Server) SecondaryEndpoint() string {
	if s.relay.ln == nil {
		return ""
	}
	return "tcp://" + net.JoinHostPort(s.relay.host, strconv.Itoa(s.relay.port))
}

// relayEndpoint is the secondary endpoint as a client of cs reaches it:
// the server's own address on the client's connection, the announced
// port.
func (s *Server) relayEndpoint(cs *connSessions) string {
	host := s.relay.host
	if c := cs.conn(); c != nil {
		if a, ok := c.bc.LocalAddr().(*net.TCPAddr); ok && a.IP != nil && !a.IP.IsUnspecified() {
			host = a.IP.String()
		}
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, strconv.Itoa(s.relay.port))
}

func (s *Server) serveRelay(ln net.Listener) {
	r := &s.relay
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("secondary endpoint: accept failed", "error", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-s.ctx.Done():
				return
			}
			continue
		}
		if !r.track(c) {
			r.refused.Add(1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer r.untrack(c)
			s.relayConn(c)
		}()
	}
}

func (r *relayState) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conns) >= maxRelayConns {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relayState) untrack(c net.Conn) {
	c.Close()
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// readFirstFrame reads the first frame on the secondary port: a Data frame
// on the session channel whose payload is at most relayMaxFirstFrame
// bytes. It returns the frame's bytes (to forward) and its message.
func readFirstFrame(c io.Reader) ([]byte, session.Message, error) {
	raw := make([]byte, wire.HeaderSize, wire.HeaderSize+relayMaxFirstFrame)
	if _, err := io.ReadFull(c, raw); err != nil {
		return nil, nil, fmt.Errorf("reading the first frame: %w", err)
	}
	h, err := wire.ParseHeader(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("the first frame: %w", err)
	}
	if h.Type != wire.TypeData || h.Channel != session.Channel || h.Flags != 0 {
		return nil, nil, fmt.Errorf("the first frame is %v on channel %d with flags 0x%04x, not a session message (Data on channel %d)", h.Type, h.Channel, h.Flags, session.Channel)
	}
	if h.Length > relayMaxFirstFrame {
		return nil, nil, fmt.Errorf("the first frame's payload of %d bytes exceeds %d", h.Length, relayMaxFirstFrame)
	}
	raw = raw[:wire.HeaderSize+int(h.Length)]
	if _, err := io.ReadFull(c, raw[wire.HeaderSize:]); err != nil {
		return nil, nil, fmt.Errorf("reading the first frame's payload: %w", err)
	}
	m, err := session.Decode(raw[wire.HeaderSize:])
	if err != nil {
		return nil, nil, err
	}
	return raw, m, nil
}

// refuse answers a first message with an Error and closes the connection.
func (s *Server) relayRefuse(c net.Conn, id uint64, code session.Code, msg string) {
	s.relay.refused.Add(1)
	s.log.Warn("secondary endpoint: connection refused", "remote", c.RemoteAddr().String(), "error", msg)
	if id != 0 {
		if b, err := session.Encode(session.NewError(id, code, msg)); err == nil {
			c.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b}))
		}
	}
}

// relayConn serves one connection on the secondary port.
func (s *Server) relayConn(c net.Conn) {
	c.SetDeadline(time.Now().Add(relayHandshakeTimeout))
	raw, m, err := readFirstFrame(c)
	if err != nil {
		var id uint64
		var de *session.DecodeError
		if errors.As(err, &de) {
			id = de.ID
		}
		s.relayRefuse(c, id, session.CodeBadRequest, "secondary endpoint: "+err.Error())
		return
	}
	switch m := m.(type) {
	case *session.ConnectAttach:
		s.relayAttach(c, m)
	case *session.LinkOpen:
		s.relayLink(c, raw, m)
	default:
		var id uint64
		if r, ok := m.(session.Request); ok {
			id = r.RequestID()
		}
		s.relayRefuse(c, id, session.CodeBadRequest, fmt.Sprintf("the first message on the secondary endpoint is LinkOpen or ConnectAttach, not %v", m.Kind()))
	}
}

// relayWait is a connection request waiting for the runner's connection.
type relayWait struct {
	conn chan net.Conn // capacity 1; one sender (the token is removed first)
	done chan struct{} // closed when the link is done with the connection
}

// relayAttach hands a runner's connection to the link waiting for it.
func (s *Server) relayAttach(c net.Conn, m *session.ConnectAttach) {
	r := &s.relay
	r.mu.Lock()
	w := r.pending[string(m.Token)]
	delete(r.pending, string(m.Token)) // one use
	r.mu.Unlock()
	if w == nil {
		s.relayRefuse(c, m.ID, session.CodeDenied, "no connection request with that token is waiting (unknown, used or timed out)")
		return
	}
	w.conn <- c
	// The link's goroutine owns c now; wait until it is done with it, so
	// that untrack does not close it under the relay (a link that gave up
	// waiting never takes it: untrack closes it).
	<-w.done
}

// findRelaySession returns the remote service that has session id open
// with token, and its runner link, or a reason to refuse.
func (s *Server) findRelaySession(id, token string) (*hostedService, *runnerLink, string) {
	s.remote.mu.Lock()
	all := make([]*hostedService, 0, len(s.remote.m))
	for _, hs := range s.remote.m {
		all = append(all, hs)
	}
	s.remote.mu.Unlock()
	deny := fmt.Sprintf("no open session %q with that token on this server", id)
	for _, hs := range all {
		rs := hs.remote
		rs.mu.Lock()
		want, ok := rs.tokens[id]
		rl, relay := rs.runner, rs.relay
		rs.mu.Unlock()
		if !ok {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(token)) != 1 {
			return nil, nil, deny
		}
		switch {
		case rl == nil:
			return nil, nil, fmt.Sprintf("the runner of service %s is disconnected", hs.cfg.Name)
		case !relay:
			return nil, nil, fmt.Sprintf("the runner of service %s listens for its direct links itself; open the link at the address the routing document gives", hs.cfg.Name)
		}
		return hs, rl, ""
	}
	return nil, nil, deny
}

// relayLink serves a client's direct link opened at the secondary
// endpoint: it obtains a connection from the session's runner and relays.
func (s *Server) relayLink(c net.Conn, first []byte, m *session.LinkOpen) {
	r := &s.relay
	hs, rl, why := s.findRelaySession(m.Session, m.Token)
	if hs == nil {
		s.relayRefuse(c, m.ID, session.CodeDenied, why)
		return
	}
	var tok [session.ConnectTokenSize]byte
	if _, err := rand.Read(tok[:]); err != nil {
		s.relayRefuse(c, m.ID, session.CodeInternal, "cannot make a connection token: "+err.Error())
		return
	}
	w := &relayWait{conn: make(chan net.Conn, 1), done: make(chan struct{})}
	defer close(w.done)
	r.mu.Lock()
	r.pending[string(tok[:])] = w
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.pending, string(tok[:]))
		r.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(s.ctx, relayHandshakeTimeout)
	defer cancel()
	ans, _, err := rl.request(ctx, func(id uint64) session.Message {
		return &session.ConnectRequest{ID: id, Token: tok[:], Port: uint64(r.port), Session: m.Session, Link: m.Link}
	})
	if err == nil {
		if e, ok := ans.(*session.Error); ok {
			err = fmt.Errorf("%s: %s", e.Code, e.Message)
		} else if _, ok := ans.(*session.OK); !ok {
			err = fmt.Errorf("the runner answered %v", ans.Kind())
		}
	}
	if err != nil {
		forget()
		s.relayRefuse(c, m.ID, session.CodeUnavailable, fmt.Sprintf("the runner of service %s did not connect for link %q: %v", hs.cfg.Name, m.Link, err))
		return
	}
	var rc net.Conn
	select {
	case rc = <-w.conn:
	case <-ctx.Done():
		forget()
		select { // it may have arrived as the wait ended
		case rc = <-w.conn:
		default:
			s.relayRefuse(c, m.ID, session.CodeUnavailable, fmt.Sprintf("the runner of service %s answered but its connection did not arrive within %v", hs.cfg.Name, relayHandshakeTimeout))
			return
		}
	}
	r.links.Add(1)
	s.log.Debug("relaying a direct link", "service", hs.cfg.Name, "session", m.Session, "link", m.Link, "client", c.RemoteAddr().String(), "runner", rc.RemoteAddr().String())
	c.SetDeadline(time.Time{})
	rc.SetDeadline(time.Time{})
	if _, err := rc.Write(first); err != nil {
		return
	}
	r.bytesIn.Add(uint64(len(first)))
	s.splice(c, rc)
}

// splice copies both ways until either side ends, then closes both.
func (s *Server) splice(client, runner net.Conn) {
	r := &s.relay
	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		n, _ := io.Copy(client, runner)
		r.bytesOut.Add(uint64(n))
		client.Close()
		runner.Close()
	}()
	n, _ := io.Copy(runner, client)
	r.bytesIn.Add(uint64(n))
	client.Close()
	runner.Close()
	<-done
}

// writeRelayMetrics writes the secondary endpoint's counters.
func (s *Server) writeRelayMetrics(b *strings.Builder) {
	r := &s.relay
	fmt.Fprintf(b, "# HELP connect_relay_links_total Direct links relayed through the secondary endpoint to runners that do not listen.\n# TYPE connect_relay_links_total counter\nconnect_relay_links_total %d\n", r.links.Load())
	fmt.Fprintf(b, "# HELP connect_relay_refused_total Connections the secondary endpoint refused.\n# TYPE connect_relay_refused_total counter\nconnect_relay_refused_total %d\n", r.refused.Load())
	fmt.Fprintf(b, "# HELP connect_relay_bytes_total Bytes relayed through the secondary endpoint.\n# TYPE connect_relay_bytes_total counter\n")
	fmt.Fprintf(b, "connect_relay_bytes_total{direction=\"to_runner\"} %d\nconnect_relay_bytes_total{direction=\"to_client\"} %d\n", r.bytesIn.Load(), r.bytesOut.Load())
}

// relayRunner is what routing.Resolve knows of a runner that does not
// listen: its bearer is tcp, at the secondary endpoint addr, which is
// also the address of every tcp <link> its service file declares; and,
// when udpAddr is not empty (the secondary endpoint's udp socket,
// relay_udp.go, for a session whose datagram links carry session tags:
// the relay finds and checks links by their tags), udp there, for the
// unreliable link and every udp <link>. Links over other bearers are not
// offered (their routes take their alternatives).
func relayRunner(desc *servicefile.Service, addr, udpAddr string) *routing.Runner {
	ep, err := bearers.ParseEndpoint(addr)
	if err != nil { // made by relayEndpoint
		return &routing.Runner{Bearer: relayBearer.Type}
	}
	r := &routing.Runner{Bearer: relayBearer.Type, Bearers: []bearers.Info{relayBearer}, Endpoints: []bearers.Endpoint{ep}}
	var uep bearers.Endpoint
	if udpAddr != "" {
		if uep, err = bearers.ParseEndpoint(udpAddr); err == nil {
			r.Bearers = append(r.Bearers, relayUDPBearer)
			r.Endpoints = append(r.Endpoints, uep)
		} else {
			udpAddr = ""
		}
	}
	for _, l := range desc.Routing.Links {
		var e bearers.Endpoint
		switch {
		case l.Bearer == relayBearer.Type:
			e = ep
		case udpAddr != "" && l.Bearer == relayUDPBearer.Type:
			e = uep
		default:
			continue
		}
		if r.Links == nil {
			r.Links = map[string]bearers.Endpoint{}
		}
		r.Links[l.Name] = e
	}
	return r
}

// relayBearer is the bearer of relayed links: tcp framing.
var relayBearer = bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}
