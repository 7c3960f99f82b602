package core

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// The server's side of relayed datagram links (relay_udp.go): the udp
// socket of the secondary endpoint, what registers links, and the
// connection requests it sends runners.

// relayUDPBearer is the bearer of relayed datagram links.
var relayUDPBearer = bearers.Info{Type: routing.UDPBearer, Scheme: "udp", Capabilities: bearers.Datagram}

// listenUDPFunc is net.ListenUDP, replaced in tests.
var listenUDPFunc = func(addr *net.UDPAddr) (*net.UDPConn, error) { return net.ListenUDP("udp", addr) }

// startRelayUDP binds the udp socket on the tcp listener's address (same
// host, same port number). A port taken for udp is logged: the relay's
// datagram links are then not offered, and their routes take their
// alternatives, as before.
func (s *Server) startRelayUDP(ta *net.TCPAddr) {
	pc, err := listenUDPFunc(&net.UDPAddr{IP: ta.IP, Port: ta.Port, Zone: ta.Zone})
	if err != nil {
		s.log.Warn("secondary endpoint: cannot bind its udp socket; datagram links of runners that do not listen are not relayed", "port", ta.Port, "error", err)
		return
	}
	u := newUDPRelay(pc, s.relayUDPRequest, func(l *udpLink) bool {
		hs, _ := l.owner.(*hostedService)
		return hs != nil && hs.sess.get(l.session) != nil
	})
	u.runnerOf = func(l *udpLink) any {
		hs, _ := l.owner.(*hostedService)
		if hs == nil || hs.remote == nil {
			return nil
		}
		hs.remote.mu.Lock()
		defer hs.remote.mu.Unlock()
		if hs.remote.runner == nil { // an untyped nil: no runner to ask
			return nil
		}
		return hs.remote.runner
	}
	s.relay.udp = u
	s.log.Info("secondary endpoint: udp socket for the datagram links of runners that do not listen", "listen", "udp://"+pc.LocalAddr().String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		u.serve()
		u.Close()
	}()
}

// relayUDPEndpoint is the udp address of the secondary endpoint as the
// client of cs reaches it; empty when there is none, or when the client's
// sessions have no secret (no resume stream: their datagram links carry no
// tags, and the relay forwards only tagged datagrams).
func (s *Server) relayUDPEndpoint(cs *connSessions) string {
	if s.relay.udp == nil || cs.stream == nil {
		return ""
	}
	return "udp://" + strings.TrimPrefix(s.relayEndpoint(cs), "tcp://")
}

// relayUDPRegister registers the datagram links of a new session of a
// relay runner's service: the unreliable link and every udp <link>.
func (s *Server) relayUDPRegister(hs *hostedService, id string, secret []byte) {
	u := s.relay.udp
	if u == nil || hs.remote == nil {
		return
	}
	rs := hs.remote
	rs.mu.Lock()
	relay := rs.relay
	rs.mu.Unlock()
	_, desc, _ := hs.current()
	if !relay || desc == nil {
		return
	}
	key := session.DeriveLinkKey(secret, id)
	if key == nil {
		return
	}
	names := []string{servicefile.LinkUnreliable}
	for _, l := range desc.Routing.Links {
		if l.Bearer == relayUDPBearer.Type {
			names = append(names, l.Name)
		}
	}
	if !u.register(hs, id, key, names) {
		s.log.Warn("secondary endpoint: too many relayed datagram links; this session's are not relayed", "service", hs.cfg.Name, "session", id, "limit", maxUDPRelayLinks)
	}
}

// relayUDPRequest asks the runner of l's service for a udp path.
func (s *Server) relayUDPRequest(l *udpLink, token []byte) {
	hs, _ := l.owner.(*hostedService)
	if hs == nil || hs.remote == nil {
		return
	}
	rs := hs.remote
	rs.mu.Lock()
	rl := rs.runner
	rs.mu.Unlock()
	if rl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, relayHandshakeTimeout)
	defer cancel()
	ans, _, err := rl.request(ctx, func(id uint64) session.Message {
		return &session.ConnectRequest{ID: id, Token: token, Port: uint64(s.relay.port), Session: l.session, Link: l.name, Datagram: true}
	})
	if err == nil {
		if e, ok := ans.(*session.Error); ok {
			err = fmt.Errorf("%s: %s", e.Code, e.Message)
		}
	}
	if err != nil {
		s.log.Warn("secondary endpoint: the runner did not attach a udp path", "service", hs.cfg.Name, "session", l.session, "link", l.name, "error", err)
	}
}

// writeRelayUDPMetrics writes the udp relay's counters.
func (s *Server) writeRelayUDPMetrics(b *strings.Builder) {
	var fwd, forged, unknown, req uint64
	if u := s.relay.udp; u != nil {
		fwd, forged, unknown, req = u.stats()
	}
	fmt.Fprintf(b, "# HELP connect_relay_datagrams_total Datagrams of relayed datagram links forwarded through the secondary endpoint.\n# TYPE connect_relay_datagrams_total counter\nconnect_relay_datagrams_total %d\n", fwd)
	fmt.Fprintf(b, "# HELP connect_relay_datagrams_dropped_total Datagrams the secondary endpoint's udp socket dropped: forged (a tag or counter that fails on a known link) or unknown (no registered link, malformed, or an unknown attach token).\n# TYPE connect_relay_datagrams_dropped_total counter\n")
	fmt.Fprintf(b, "connect_relay_datagrams_dropped_total{reason=\"forged\"} %d\nconnect_relay_datagrams_dropped_total{reason=\"unknown\"} %d\n", forged, unknown)
	fmt.Fprintf(b, "# HELP connect_relay_datagram_requests_total Connection requests for udp paths sent to runners.\n# TYPE connect_relay_datagram_requests_total counter\nconnect_relay_datagram_requests_total %d\n", req)
}
