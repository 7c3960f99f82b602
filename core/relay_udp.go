package core

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Relayed datagram links (docs/PROTOCOL.md §15.2, "Datagram links").
//
// The secondary endpoint also has a udp socket, on the same port number as
// its tcp listener. A relay runner's session with a link key (§15.1) gets
// its unreliable link (and declared udp <link>s) at that address. The
// server knows every such link's id and tag keys (it derives them from the
// session's secret, as the runner does from link_key), so it forwards a
// datagram only if it is a tagged envelope of a link it registered whose
// tag verifies and whose counter is fresh: client → runner under k_c2r,
// runner → client under k_r2c. The envelopes are forwarded unchanged, so
// the tags stay end to end. Like the runner, it follows the client (and
// the runner) to the source address of the newest datagram taken.
//
// The runner never listens: on a client datagram for a link that has no
// runner path, the server sends the runner a ConnectRequest with Datagram
// set and a fresh token; the runner dials a connected udp socket to this
// port and sends ConnectAttach (one wire frame, untagged) with the token,
// again every udpRelayKeepalive, which keeps its NAT mapping and the
// server's path. The datagram that triggered the request is dropped (the
// client repeats its LinkOpen every 250 ms).
//
// State: one udpLink per registered link (at most maxUDPRelayLinks),
// removed when its session ends (checked by the sweep); a path (client or
// runner address) silent for udpRelayPathIdle is forgotten.

const (
	maxUDPRelayLinks     = 16384
	udpRelayPathIdle     = 40 * time.Second
	udpRelaySweep        = 5 * time.Second
	udpRelayRequestEvery = 2 * time.Second
	// maxUDPRelayRequests bounds the connection requests in flight.
	maxUDPRelayRequests = 256
	// The runner repeats its ConnectAttach every 10 s
	// (client/provide_relay_udp.go), well within udpRelayPathIdle.
)

// udpLink is one relayed datagram link.
type udpLink struct {
	id            uint64
	session, name string
	keys          session.LinkTagKeys
	owner         any // what request and alive are given (a *hostedService)

	// guarded by udpRelay.mu
	client, runner         netip.AddrPort
	clientSeen, runnerSeen time.Time
	c2r, r2c               session.ReplayWindow
	token                  [session.ConnectTokenSize]byte
	hasToken               bool
	requested              time.Time
	asked, pathOf          any // the runner asked with the token; the one whose path runner is
}

// udpRelay forwards the datagrams of relayed links.
type udpRelay struct {
	pc *net.UDPConn
	// request asks the link's runner for a udp path with token; it runs on
	// its own goroutine. alive reports whether the link's session is open.
	request func(l *udpLink, token []byte)
	alive   func(l *udpLink) bool
	// runnerOf identifies the link's runner now (its control connection):
	// a path attached by another (a runner that since restarted or
	// reconnected) is stale. Nil: always the same.
	runnerOf func(l *udpLink) any
	now      func() time.Time
	inflight atomic.Int32

	mu        sync.Mutex
	links     map[uint64]*udpLink
	byToken   map[[session.ConnectTokenSize]byte]*udpLink
	lastSweep time.Time

	forwarded atomic.Uint64 // datagrams forwarded, both ways
	forged    atomic.Uint64 // tagged datagrams of a known link whose tag or counter failed
	unknown   atomic.Uint64 // datagrams of no registered link, malformed, or unknown attach tokens
	requests  atomic.Uint64 // connection requests sent
	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newUDPRelay(pc *net.UDPConn, request func(*udpLink, []byte), alive func(*udpLink) bool) *udpRelay {
	return &udpRelay{pc: pc, request: request, alive: alive, now: time.Now,
		links: map[uint64]*udpLink{}, byToken: map[[session.ConnectTokenSize]byte]*udpLink{}}
}

// register adds the datagram links names of a session with link key key;
// false when the table is full.
func (u *udpRelay) register(owner any, sessionID string, key []byte, names []string) bool {
	if len(key) != session.LinkKeySize {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range names {
		k := session.DeriveLinkTagKeys(key, n)
		if old := u.links[k.ID]; old != nil && old.session == sessionID && old.keys == k {
			old.owner = owner
			continue
		}
		if len(u.links) >= maxUDPRelayLinks {
			return false
		}
		u.links[k.ID] = &udpLink{id: k.ID, session: sessionID, name: n, keys: k, owner: owner}
	}
	return true
}

// drop forgets a link; the caller holds u.mu.
func (u *udpRelay) drop(l *udpLink) {
	delete(u.links, l.id)
	if l.hasToken && u.byToken[l.token] == l {
		delete(u.byToken, l.token)
	}
}

// serve reads the socket until it is closed. Idempotent Close stops it.
func (u *udpRelay) serve() {
	buf := make([]byte, 65536)
	for {
		u.pc.SetReadDeadline(u.now().Add(udpRelaySweep))
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				time.Sleep(10 * time.Millisecond) // a transient error (ICMP): bounded pace
			}
		} else {
			u.handle(buf[:n], from)
		}
		u.sweep()
	}
}

// Close closes the socket and waits for the requests in flight.
func (u *udpRelay) Close() error {
	var err error
	u.closeOnce.Do(func() { err = u.pc.Close() })
	u.wg.Wait()
	return err
}

// sweep forgets links of ended sessions and silent paths, at most once
// per udpRelaySweep.
func (u *udpRelay) sweep() {
	now := u.now()
	u.mu.Lock()
	if now.Sub(u.lastSweep) < udpRelaySweep {
		u.mu.Unlock()
		return
	}
	u.lastSweep = now
	all := make([]*udpLink, 0, len(u.links))
	for _, l := range u.links {
		all = append(all, l)
	}
	u.mu.Unlock()
	var dead []*udpLink
	for _, l := range all {
		if !u.alive(l) {
			dead = append(dead, l)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, l := range dead {
		if u.links[l.id] == l {
			u.drop(l)
		}
	}
	for _, l := range u.links {
		if l.client.IsValid() && now.Sub(l.clientSeen) > udpRelayPathIdle {
			l.client = netip.AddrPort{}
		}
		if l.runner.IsValid() && now.Sub(l.runnerSeen) > udpRelayPathIdle {
			l.runner = netip.AddrPort{}
		}
	}
}

// handle takes one datagram from from.
func (u *udpRelay) handle(d []byte, from netip.AddrPort) {
	if !session.IsTagged(d) {
		u.attach(d, from)
		return
	}
	id, c, _, err := session.ParseTagged(d)
	if err != nil {
		u.unknown.Add(1)
		return
	}
	u.mu.Lock()
	l := u.links[id]
	u.mu.Unlock()
	if l == nil {
		u.unknown.Add(1)
		return
	}
	switch {
	case session.VerifyTag(&l.keys.ClientToRunner, d):
		u.fromClient(l, c, d, from)
	case session.VerifyTag(&l.keys.RunnerToClient, d):
		u.fromRunner(l, c, d, from)
	default:
		u.forged.Add(1)
	}
}

func (u *udpRelay) fromClient(l *udpLink, c uint64, d []byte, from netip.AddrPort) {
	now := u.now()
	var cur any = true
	if u.runnerOf != nil {
		cur = u.runnerOf(l)
	}
	u.mu.Lock()
	ok, newest := l.c2r.Take(c)
	if !ok {
		u.mu.Unlock()
		u.forged.Add(1)
		return
	}
	if newest || !l.client.IsValid() {
		l.client = from
	}
	l.clientSeen = now
	if l.runner.IsValid() && l.pathOf != cur { // the runner came back: its old path is gone
		l.runner = netip.AddrPort{}
	}
	to := l.runner
	var tok []byte
	if !to.IsValid() && cur != nil && now.Sub(l.requested) >= udpRelayRequestEvery && u.links[l.id] == l &&
		u.inflight.Load() < maxUDPRelayRequests {
		var t [session.ConnectTokenSize]byte
		if _, err := rand.Read(t[:]); err == nil {
			if l.hasToken && u.byToken[l.token] == l {
				delete(u.byToken, l.token)
			}
			l.token, l.hasToken, l.requested, l.asked = t, true, now, cur
			u.byToken[t] = l
			tok = t[:]
		}
	}
	u.mu.Unlock()
	if to.IsValid() {
		if _, err := u.pc.WriteToUDPAddrPort(d, to); err == nil {
			u.forwarded.Add(1)
		}
		return
	}
	if tok != nil {
		u.requests.Add(1)
		u.inflight.Add(1)
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer u.inflight.Add(-1)
			u.request(l, tok)
		}()
	}
}

func (u *udpRelay) fromRunner(l *udpLink, c uint64, d []byte, from netip.AddrPort) {
	u.mu.Lock()
	ok, newest := l.r2c.Take(c)
	if !ok {
		u.mu.Unlock()
		u.forged.Add(1)
		return
	}
	if newest || !l.runner.IsValid() {
		l.runner = from
	}
	l.runnerSeen = u.now()
	to := l.client
	u.mu.Unlock()
	if to.IsValid() {
		if _, err := u.pc.WriteToUDPAddrPort(d, to); err == nil {
			u.forwarded.Add(1)
		}
	}
}

// attach takes a runner's ConnectAttach datagram (its first, and each
// keepalive): the source address becomes the link's runner path.
func (u *udpRelay) attach(d []byte, from netip.AddrPort) {
	h, err := wire.ParseHeader(d)
	if err != nil || h.Type != wire.TypeData || h.Channel != session.Channel || h.Flags != 0 ||
		int(h.Length) != len(d)-wire.HeaderSize || h.Length > relayMaxFirstFrame {
		u.unknown.Add(1)
		return
	}
	m, err := session.Decode(d[wire.HeaderSize:])
	a, ok := m.(*session.ConnectAttach)
	if err != nil || !ok || len(a.Token) != session.ConnectTokenSize {
		u.unknown.Add(1)
		return
	}
	var t [session.ConnectTokenSize]byte
	copy(t[:], a.Token)
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.byToken[t] // a map lookup by a random 128-bit key: no secret-dependent comparison of ours
	if l == nil || u.links[l.id] != l {
		u.unknown.Add(1)
		return
	}
	l.runner, l.runnerSeen, l.pathOf = from, u.now(), l.asked
}

// stats returns the counters: forwarded, forged, unknown, requests.
func (u *udpRelay) stats() (uint64, uint64, uint64, uint64) {
	return u.forwarded.Load(), u.forged.Load(), u.unknown.Load(), u.requests.Load()
}
