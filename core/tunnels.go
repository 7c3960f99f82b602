package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/tunnel"
	"github.com/bearerkit/connect/wire"
)

// Tunnel streams (docs/TUNNEL.md, "Server").
//
// A client opens each tunnelled TCP connection on its own connection,
// registered with the Hello feature bit wire.FeatureTunnel: an additional
// connection of its client id, which neither replaces the client's
// registered connection nor enters the table of clients. The resume stream
// such a connection opens (or resumes) is a tunnel stream: instead of a
// session layer, it gets tunnel.Accept with the configured <tunnel>
// targets, one backend connection for its whole life, across any number of
// link breaks; the stream's linger window bounds an absent client.
//
// Goroutines: one per tunnel stream (run: tunnel.Accept and its pump, which
// owns two more), owned by the Server's wait group. Server.Close closes the
// resume table first, which ends every stream and so every pump; the
// server's context bounds the dial to the target.

// tunnelDialTimeout bounds the connection to a tunnel's target.
const tunnelDialTimeout = 10 * time.Second

// tunnelRegistry holds the server's tunnel streams; its map is guarded by
// Server.mu (streamFor's lock), its counters are atomic.
type tunnelRegistry struct {
	byID    map[uuid.UUID]*tunnelStream
	opened  atomic.Uint64 // tunnels whose backend connection was made
	refused atomic.Uint64 // tunnels refused: unknown, denied, unreachable
	up      atomic.Uint64 // bytes from clients to backends
	down    atomic.Uint64 // bytes from backends to clients
}

// tunnelStream is one tunnel stream on the server.
type tunnelStream struct {
	s        *Server
	st       *resume.Stream
	clientID uuid.UUID
	prin     principal
	src, dst net.Addr // the opening connection's remote and local addresses (PROXY header)
	log      *slog.Logger

	mu   sync.Mutex
	conn *clientConn // the connection carrying the stream now; nil while detached
	// first message each way: Open and Opened are not tunnelled bytes.
	skipUp, skipDown bool
}

// serveTunnel is serveResume for a tunnel stream: it binds st to c and
// waits until the stream lets the connection go. A stream that is not a
// tunnel stream on a tunnel connection, or the reverse, drops the
// connection.
func (c *clientConn) serveTunnel(st *resume.Stream, hc *handoffConn) {
	ts, err := c.s.tunnelFor(st, c)
	if err != nil {
		if ts != nil || c.s.ctx.Err() == nil {
			c.log.Warn("dropping the connection", "stream", st.ID().String(), "error", err)
		}
		hc.Close()
		return
	}
	ts.mu.Lock()
	ts.conn = c
	ts.mu.Unlock()
	c.stream.Store(st)
	<-hc.closed
	ts.mu.Lock()
	if ts.conn == c {
		ts.conn = nil
	}
	ts.mu.Unlock()
}

// isTunnelStream reports whether id is a tunnel stream of the server.
func (s *Server) isTunnelStream(id uuid.UUID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tun.byID[id] != nil
}

var errServerClosing = errors.New("the server is shutting down")

// tunnelFor returns the tunnelStream of st, creating it (and starting its
// run goroutine) for a new one.
func (s *Server) tunnelFor(st *resume.Stream, c *clientConn) (*tunnelStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := st.ID()
	if ts := s.tun.byID[id]; ts != nil {
		switch {
		case !c.tunnel:
			return ts, errors.New("a tunnel stream resumed on a connection registered without the tunnel feature")
		case ts.clientID != c.clientID:
			return ts, fmt.Errorf("client id %s resumed the tunnel stream of client id %s", c.clientID, ts.clientID)
		}
		return ts, nil
	}
	if s.streams[id] != nil {
		return nil, errors.New("a session stream resumed on a tunnel connection")
	}
	if s.closed {
		go st.Close()
		return nil, errServerClosing
	}
	if s.tun.byID == nil {
		s.tun.byID = map[uuid.UUID]*tunnelStream{}
	}
	ts := &tunnelStream{s: s, st: st, clientID: c.clientID, prin: c.principal(),
		src: c.bc.RemoteAddr(), dst: c.bc.LocalAddr(), skipUp: true, skipDown: true,
		log: s.log.With("client_id", c.clientID.String(), "stream", id.String())}
	s.tun.byID[id] = ts
	s.wg.Add(1)
	go ts.run()
	return ts, nil
}

// run serves the tunnel until it ends, then closes and forgets the stream.
func (ts *tunnelStream) run() {
	s := ts.s
	defer s.wg.Done()
	o, st, err := tunnel.Accept(s.ctx, ts, ts.target, ts.dial)
	var ref *refusal
	switch {
	case errors.As(err, &ref):
		s.tun.refused.Add(1)
		ts.log.Warn("tunnel refused", "tunnel", o.Service, "origin", o.Origin, "reason", err.Error())
		ts.st.Flush(s.ctx) // the refusal reaches the client (bounded by the linger window)
	case err != nil:
		ts.log.Info("tunnel ended", "tunnel", o.Service, "origin", o.Origin, "up", st.Up, "down", st.Down, "error", err)
	default:
		ts.st.Flush(s.ctx)
		ts.log.Info("tunnel ended", "tunnel", o.Service, "origin", o.Origin, "up", st.Up, "down", st.Down)
	}
	ts.st.Close()
	s.mu.Lock()
	if s.tun.byID[ts.st.ID()] == ts {
		delete(s.tun.byID, ts.st.ID())
	}
	s.mu.Unlock()
}

// refusal is a tunnel refused before its backend connection (unknown,
// denied, unreachable): Accept returns it as is.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// target answers an Open: the configured tunnel's target, if the policy
// lets the client open it.
func (ts *tunnelStream) target(o tunnel.Open) (tunnel.Target, error) {
	s := ts.s
	i := slices.IndexFunc(s.cfg.Tunnels, func(t config.Tunnel) bool { return t.Name == o.Service })
	if i < 0 {
		return tunnel.Target{}, &refusal{fmt.Errorf("no tunnel %q is configured on this server", o.Service)}
	}
	t := s.cfg.Tunnels[i]
	if err := s.authorizeTunnel(ts.prin, t.Name); err != nil {
		return tunnel.Target{}, &refusal{err}
	}
	ts.log.Info("tunnel opening", "tunnel", t.Name, "origin", o.Origin, "target", t.Target)
	tg := tunnel.Target{Address: t.Target}
	if t.ProxyV2 {
		tg.ProxyHeader = proxyHeader(ts.src, ts.dst)
	}
	return tg, nil
}

// proxyHeader is the PROXY v2 header for a client at src that reached the
// server at dst: a LOCAL header when either is not an IP address and port
// (a bearer of another kind).
func proxyHeader(src, dst net.Addr) []byte {
	sa, err1 := netip.ParseAddrPort(addrString(src))
	da, err2 := netip.ParseAddrPort(addrString(dst))
	if err1 == nil && err2 == nil {
		if b, err := tunnel.AppendProxyV2(nil, sa, da); err == nil {
			return b
		}
	}
	return tunnel.AppendProxyV2Local(nil)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// dial connects to a tunnel's target; a failure is a refusal.
func (ts *tunnelStream) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: tunnelDialTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &refusal{err}
	}
	ts.s.tun.opened.Add(1)
	return c, nil
}

// Send, Recv and CloseSend make ts a tunnel.Stream that counts the bytes
// (Open and Opened excepted). Recv and Send each have one caller at a time.
func (ts *tunnelStream) Send(ctx context.Context, msg []byte) error {
	err := ts.st.Send(ctx, msg)
	if err == nil {
		if ts.skipDown {
			ts.skipDown = false
		} else {
			ts.s.tun.down.Add(uint64(len(msg)))
		}
	}
	return err
}

func (ts *tunnelStream) Recv(ctx context.Context) ([]byte, error) {
	b, err := ts.st.Recv(ctx)
	if err == nil {
		if ts.skipUp {
			ts.skipUp = false
		} else {
			ts.s.tun.up.Add(uint64(len(b)))
		}
	}
	return b, err
}

func (ts *tunnelStream) CloseSend() error { return ts.st.CloseSend() }

// authorizeTunnel applies the <policy> to opening the tunnel name: a rule
// whose service is * or the tunnel's name and whose client selectors match
// decides, first match wins; rules with methods or a when condition concern
// services only and are skipped. Without a policy every authenticated
// client may open every tunnel.
func (s *Server) authorizeTunnel(pr principal, name string) error {
	pol := s.cfg.Policy
	if pol == nil {
		return nil
	}
	for _, r := range pol.Rules {
		if r.Methods != nil || r.When != nil {
			continue
		}
		if r.Service != "*" && r.Service != name || r.Client != "" && r.Client != pr.clientID ||
			r.Identity != "" && r.Identity != pr.identity || r.Token != "" && r.Token != pr.token {
			continue
		}
		if r.Allow {
			return nil
		}
		s.log.Warn("policy denied", "principal", pr.String(), "action", "open tunnel "+name, "rule_line", r.Line)
		return fmt.Errorf("denied: %s may not open tunnel %s (%s:%d)", pr, name, s.cfg.File, r.Line)
	}
	if pol.Default == "allow" {
		return nil
	}
	s.log.Warn("policy denied", "principal", pr.String(), "action", "open tunnel "+name, "rule", "default deny")
	return fmt.Errorf("denied: %s may not open tunnel %s (no rule of the policy at %s:%d allows it)", pr, name, s.cfg.File, pol.Line)
}

// TunnelInfo counts the server's tunnels, for /metrics.
type TunnelInfo struct {
	Attached, Detached int    // tunnel streams now, with and without a connection
	Opened, Refused    uint64 // since the start
	BytesUp, BytesDown uint64 // client to backend, backend to client
}

// Tunnels counts the server's tunnel streams.
func (s *Server) Tunnels() TunnelInfo {
	s.mu.Lock()
	list := make([]*tunnelStream, 0, len(s.tun.byID))
	for _, ts := range s.tun.byID {
		list = append(list, ts)
	}
	s.mu.Unlock()
	ti := TunnelInfo{Opened: s.tun.opened.Load(), Refused: s.tun.refused.Load(), BytesUp: s.tun.up.Load(), BytesDown: s.tun.down.Load()}
	for _, ts := range list {
		if ts.st.Stats().Connected {
			ti.Attached++
		} else {
			ti.Detached++
		}
	}
	return ti
}

// writeTunnelMetrics appends the tunnels' families to /metrics.
func (s *Server) writeTunnelMetrics(b *strings.Builder) {
	ti := s.Tunnels()
	fmt.Fprintf(b, "# HELP connect_tunnels Tunnel streams now (detached: waiting for their client to come back).\n# TYPE connect_tunnels gauge\n")
	fmt.Fprintf(b, "connect_tunnels{state=\"attached\"} %d\nconnect_tunnels{state=\"detached\"} %d\n", ti.Attached, ti.Detached)
	fmt.Fprintf(b, "# HELP connect_tunnels_opened_total Tunnels whose backend connection was made.\n# TYPE connect_tunnels_opened_total counter\nconnect_tunnels_opened_total %d\n", ti.Opened)
	fmt.Fprintf(b, "# HELP connect_tunnels_refused_total Tunnels refused: unknown, denied by the policy, target unreachable.\n# TYPE connect_tunnels_refused_total counter\nconnect_tunnels_refused_total %d\n", ti.Refused)
	fmt.Fprintf(b, "# HELP connect_tunnel_bytes_total Bytes carried by tunnels (up: client to backend).\n# TYPE connect_tunnel_bytes_total counter\n")
	fmt.Fprintf(b, "connect_tunnel_bytes_total{direction=\"up\"} %d\nconnect_tunnel_bytes_total{direction=\"down\"} %d\n", ti.BytesUp, ti.BytesDown)
}

// features is the Welcome's feature bits: the Hello's that the server
// accepted.
func (c *clientConn) features() uint64 {
	if c.tunnel {
		return wire.FeatureTunnel
	}
	return 0
}
