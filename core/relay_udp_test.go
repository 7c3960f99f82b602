package core

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// TestUDPRelay: the secondary endpoint's udp relay, over real loopback
// sockets. A client datagram for a link without a runner path makes a
// connection request; the runner's ConnectAttach (from a connected
// socket) gives the link its path; tagged datagrams are then forwarded
// unchanged both ways; a forged one, a replayed one and one of an unknown
// link are dropped and counted; a client that moves to another socket is
// followed; silent paths and links of ended sessions are forgotten.
func TestUDPRelay(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // added to the wall clock
	var alive atomic.Bool
	alive.Store(true)
	tokens := make(chan []byte, 16)
	u := newUDPRelay(pc, func(l *udpLink, tok []byte) {
		if l.session == "s1" && l.name == "unreliable" {
			tokens <- tok
		}
	}, func(*udpLink) bool { return alive.Load() })
	u.now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	var gen atomic.Int64 // the runner's incarnation
	u.runnerOf = func(*udpLink) any { return gen.Load() }
	done := make(chan struct{})
	go func() {
		defer close(done)
		u.serve()
	}()
	defer func() {
		u.Close()
		<-done
		u.Close() // idempotent
	}()
	key := make([]byte, session.LinkKeySize)
	rand.Read(key)
	if !u.register("owner", "s1", key, []string{"unreliable"}) {
		t.Fatal("register refused")
	}
	keys := session.DeriveLinkTagKeys(key, "unreliable")
	srv := pc.LocalAddr().(*net.UDPAddr)

	client := listenUDP(t)
	runner, err := net.DialUDP("udp", nil, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Close()
	frame := func(s string) []byte {
		return wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: []byte(s)})
	}
	ctr := uint64(1000)
	c2r := func(s string) []byte {
		ctr++
		return session.AppendTagged(nil, &keys.ClientToRunner, keys.ID, ctr, frame(s))
	}
	rctr := uint64(5000)
	r2c := func(s string) []byte {
		rctr++
		return session.AppendTagged(nil, &keys.RunnerToClient, keys.ID, rctr, frame(s))
	}

	// No runner path yet: the first datagram asks for one.
	if _, err := client.WriteToUDP(c2r("open"), srv); err != nil {
		t.Fatal(err)
	}
	var tok []byte
	select {
	case tok = <-tokens:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection request")
	}
	ab, _ := session.Encode(&session.ConnectAttach{ID: 1, Token: tok})
	// A wrong token first: ignored (counted unknown).
	bad, _ := session.Encode(&session.ConnectAttach{ID: 1, Token: make([]byte, session.ConnectTokenSize)})
	runner.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: bad}))
	runner.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: ab}))

	// Client → runner, unchanged, once the attach is in (bounded).
	var got []byte
	for i := 0; i < 50 && got == nil; i++ {
		d := c2r("call")
		client.WriteToUDP(d, srv)
		if b := readUDP(runner, 200*time.Millisecond); b != nil {
			if !bytes.Equal(b, d) {
				t.Fatalf("the runner got %x, want %x", b, d)
			}
			got = b
		}
	}
	if got == nil {
		t.Fatal("no datagram reached the runner")
	}
	// Runner → client, unchanged.
	d := r2c("result")
	runner.Write(d)
	if b := readUDP(client, 5*time.Second); !bytes.Equal(b, d) {
		t.Fatalf("the client got %x, want %x", b, d)
	}

	// A forged datagram (a key of nobody), a replay, an unknown link: dropped.
	_, forged0, unknown0, _ := u.stats()
	var wrong [32]byte
	ctr++
	client.WriteToUDP(session.AppendTagged(nil, &wrong, keys.ID, ctr, frame("forged")), srv)
	client.WriteToUDP(d, srv) // runner → client tag from the client's address: a replay of a taken counter
	client.WriteToUDP(session.AppendTagged(nil, &keys.ClientToRunner, keys.ID^1, ctr+1, frame("unknown")), srv)
	client.WriteToUDP([]byte("garbage"), srv)
	ok := c2r("after")
	client.WriteToUDP(ok, srv)
	if b := readUDP(runner, 5*time.Second); !bytes.Equal(b, ok) {
		t.Fatalf("after the forgeries the runner got %q, want the valid datagram", b)
	}
	_, forged, unknown, _ := u.stats()
	if forged-forged0 != 2 || unknown-unknown0 != 2 {
		t.Errorf("dropped: forged %d, unknown %d; want 2 and 2", forged-forged0, unknown-unknown0)
	}

	// Roaming: the client moves to another socket; the relay follows.
	moved := listenUDP(t)
	d = c2r("from the new address")
	moved.WriteToUDP(d, srv)
	if b := readUDP(runner, 5*time.Second); !bytes.Equal(b, d) {
		t.Fatalf("the runner got %q from the moved client", b)
	}
	d = r2c("to the new address")
	runner.Write(d)
	if b := readUDP(moved, 5*time.Second); !bytes.Equal(b, d) {
		t.Fatalf("the moved client got %q", b)
	}
	fwd, _, _, reqs := u.stats()
	if fwd < 4 || reqs != 1 {
		t.Errorf("forwarded %d, requests %d", fwd, reqs)
	}

	// The runner came back (another control connection): its old path is
	// stale; the next client datagram asks the new one for a path.
	gen.Add(1)
	clock.Add(int64(udpRelayRequestEvery)) // requests are at most one per udpRelayRequestEvery
	moved.WriteToUDP(c2r("to the new runner"), srv)
	select {
	case tok = <-tokens:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection request after the runner came back")
	}
	runner2, err := net.DialUDP("udp", nil, srv)
	if err != nil {
		t.Fatal(err)
	}
	defer runner2.Close()
	ab, _ = session.Encode(&session.ConnectAttach{ID: 2, Token: tok})
	runner2.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: ab}))
	got = nil
	for i := 0; i < 50 && got == nil; i++ {
		d := c2r("again")
		moved.WriteToUDP(d, srv)
		got = readUDP(runner2, 200*time.Millisecond)
	}
	if got == nil {
		t.Fatal("no datagram reached the new runner path")
	}
	if b := readUDP(runner, 50*time.Millisecond); b != nil {
		t.Errorf("the stale runner path got %q", b)
	}

	// Silent paths are forgotten; links of ended sessions too.
	clock.Add(int64(udpRelayPathIdle + udpRelaySweep + time.Second))
	u.sweep()
	u.mu.Lock()
	l := u.links[keys.ID]
	if l == nil || l.client.IsValid() || l.runner.IsValid() {
		t.Errorf("after the idle time: %+v", l)
	}
	u.mu.Unlock()
	alive.Store(false)
	clock.Add(int64(2 * udpRelaySweep))
	u.sweep()
	u.mu.Lock()
	n, nt := len(u.links), len(u.byToken)
	u.mu.Unlock()
	if n != 0 || nt != 0 {
		t.Errorf("after the session ended: %d links, %d tokens", n, nt)
	}
}

// TestUDPRelayLimit: the link table is bounded.
func TestUDPRelayLimit(t *testing.T) {
	u := newUDPRelay(nil, nil, nil)
	key := make([]byte, session.LinkKeySize)
	for i := range maxUDPRelayLinks {
		key[0], key[1] = byte(i), byte(i>>8)
		if !u.register(nil, "s", key, []string{"unreliable"}) {
			t.Fatalf("refused at %d", i)
		}
	}
	key[0], key[1], key[2] = 0, 0, 1
	if u.register(nil, "s", key, []string{"unreliable"}) || len(u.links) != maxUDPRelayLinks {
		t.Fatalf("beyond the limit: %d links", len(u.links))
	}
	if u.register(nil, "s", key[:5], []string{"unreliable"}) {
		t.Fatal("a short key was taken")
	}
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUDP reads one datagram, or nil at the deadline.
func readUDP(c *net.UDPConn, d time.Duration) []byte {
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// FuzzUDPRelayDatagram: whatever arrives on the secondary endpoint's udp
// socket, the relay never panics and forwards nothing it cannot verify
// (its socket is nil here: a forward would panic).
func FuzzUDPRelayDatagram(f *testing.F) {
	key := bytes.Repeat([]byte{7}, session.LinkKeySize)
	keys := session.DeriveLinkTagKeys(key, "unreliable")
	fr := wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: []byte{1}})
	var wrong [32]byte
	f.Add(session.AppendTagged(nil, &wrong, keys.ID, 1, fr))
	f.Add(session.AppendTagged(nil, &wrong, keys.ID^1, 1, fr))
	ab, _ := session.Encode(&session.ConnectAttach{ID: 1, Token: make([]byte, session.ConnectTokenSize)})
	f.Add(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: ab}))
	f.Add([]byte{session.TagMagic, 1, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		u := newUDPRelay(nil, func(*udpLink, []byte) { t.Fatal("a request for an unverified datagram") }, func(*udpLink) bool { return true })
		u.register(nil, "s", key, []string{"unreliable"})
		u.handle(d, netip.MustParseAddrPort("127.0.0.1:1"))
		if fwd, _, _, req := u.stats(); fwd != 0 || req != 0 {
			t.Fatalf("forwarded %d, requests %d", fwd, req)
		}
	})
}
