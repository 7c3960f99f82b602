package client

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bearers/udp"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// taggedRig is a Provider serving session "s1" (token "tok", with a link
// key) on a real udp listener on loopback, without a server.
type taggedRig struct {
	p   *Provider
	ub  bearers.Bearer
	ep  bearers.Endpoint
	key []byte
}

func newTaggedRig(t *testing.T) *taggedRig { return newUDPRig(t, true) }

// newUDPRig is newTaggedRig, with a session without a link key unless
// tagged.
func newUDPRig(t *testing.T, tagged bool) *taggedRig {
	t.Helper()
	ub, err := udp.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	lep, _ := bearers.ParseEndpoint("udp://127.0.0.1:0")
	ln, err := ub.Listen(context.Background(), lep)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProvider(ProviderConfig{Services: []ProvidedService{{XML: []byte(directXML), Handler: directHandler{}}},
		Listeners: []ProviderListener{{Listener: ln, Bearer: udp.Info}}})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		p.cancel()
		p.stopLinks()
		p.wg.Wait()
	})
	svc := p.svcs["t.svc"]
	tcpEP, _ := bearers.ParseEndpoint("tcp://127.0.0.1:9700")
	d, err := routing.Resolve(svc.desc, routing.Situation{Session: "s1", Token: "tok",
		Runner: &routing.Runner{Bearer: tcp.Type, Bearers: []bearers.Info{tcp.Info, udp.Info}, Endpoints: []bearers.Endpoint{tcpEP, ln.Endpoint()}},
		Client: routing.Client{Bearers: []string{tcp.Type, udp.Type}, Direct: true}})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := routing.Generate(d)
	if err != nil {
		t.Fatal(err)
	}
	var key []byte
	if tagged {
		key = session.DeriveLinkKey(bytes.Repeat([]byte{3}, session.SecretSize), "s1")
	}
	p.addDirectSession(svc, &session.RemoteOpen{ID: 1, Service: "t.svc", Session: "s1", Token: "tok", Routing: doc, LinkKey: key})
	p.startLinks()
	return &taggedRig{p: p, ub: ub, ep: ln.Endpoint(), key: key}
}

// bound returns the runner's bound unreliable link of s1, or nil.
func (r *taggedRig) bound() *directConn {
	d := &r.p.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	if ds := d.sess["s1"]; ds != nil {
		return ds.links["unreliable"]
	}
	return nil
}

// udpPeer is a client end of the tagged unreliable link.
type udpPeer struct {
	t    *testing.T
	tags *linkTags
	tc   *tagConn
	wc   wire.Conn
}

func (r *taggedRig) dial(t *testing.T, tags *linkTags) *udpPeer {
	t.Helper()
	bc, err := r.ub.Dial(context.Background(), r.ep)
	if err != nil {
		t.Fatal(err)
	}
	tc := newTagConn(tags, bc)
	u := &udpPeer{t: t, tags: tags, tc: tc, wc: wire.NewDatagramConn(tc, wire.MaxDatagramPayload-session.TagOverhead)}
	t.Cleanup(func() { u.wc.Close() })
	return u
}

func (u *udpPeer) send(m session.Message) {
	u.t.Helper()
	b, err := session.Encode(m)
	if err != nil {
		u.t.Fatal(err)
	}
	if err := u.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b}); err != nil {
		u.t.Fatal(err)
	}
}

// until reads session messages until want accepts one; it resends
// resend (if any) while waiting, in case a datagram was lost.
func (u *udpPeer) until(what string, resend session.Message, want func(session.Message) bool) {
	u.t.Helper()
	u.untilOn(u.tc, what, resend, want)
}

func (u *udpPeer) untilOn(c net.Conn, what string, resend session.Message, want func(session.Message) bool) {
	u.t.Helper()
	for i := 0; i < 200; i++ {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		m, err := u.wc.ReadMessage()
		if err != nil {
			if isTimeout(err) {
				if resend != nil {
					u.send(resend)
				}
				continue
			}
			u.t.Fatalf("%s: %v", what, err)
		}
		if d, ok := m.(*wire.Data); ok {
			sm, err := session.Decode(d.Payload)
			if err != nil {
				u.t.Fatalf("%s: %v", what, err)
			}
			if want(sm) {
				return
			}
		}
	}
	u.t.Fatalf("%s: not seen", what)
}

func levelValue(t *testing.T, v float64) []byte {
	t.Helper()
	b, err := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Float}, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (r *taggedRig) waitLevel(u *udpPeer, v float64) {
	u.t.Helper()
	want := levelValue(u.t, v)
	if err := r.p.SetData("t.svc", "level", want); err != nil {
		u.t.Fatal(err)
	}
	u.until("the runtime-data change", nil, func(m session.Message) bool {
		dc, ok := m.(*session.DataChange)
		return ok && dc.Path == "level" && bytes.Equal(dc.Value, want)
	})
}

// TestTaggedLinkRoams: a tagged unreliable link over real udp sockets
// moves to a new client socket (a new source port) without a new
// LinkOpen; forged, replayed and untagged datagrams from a third socket
// are dropped and counted, and change nothing.
func TestTaggedLinkRoams(t *testing.T) {
	r := newTaggedRig(t)
	tags := newLinkTags(r.key, "unreliable", false)
	first := tags.next
	u := r.dial(t, tags)
	open := &session.LinkOpen{ID: 1, Session: "s1", Link: "unreliable", Token: "tok"}
	u.send(open)
	u.until("OK to LinkOpen", open, func(m session.Message) bool { ok, is := m.(*session.OK); return is && ok.ID == 1 })
	dc := r.bound()
	if dc == nil {
		t.Fatal("no bound link")
	}
	r.waitLevel(u, 0.25)

	// Roam: a new socket, a new source port.
	oldAddr := u.tc.LocalAddr().String()
	nbc, err := r.ub.Dial(context.Background(), r.ep)
	if err != nil {
		t.Fatal(err)
	}
	if !u.tc.rebind(nbc) {
		t.Fatal("rebind refused")
	}
	if u.tc.LocalAddr().String() == oldAddr {
		t.Fatalf("the new socket has the old address %s", oldAddr)
	}
	u.wc.WriteMessage(&wire.Ping{ID: 7})
	r.waitLevel(u, 0.5)
	if r.bound() != dc {
		t.Fatal("the runner bound another link: the session's link was not kept")
	}
	rc := dc.bc.(*roamConn)
	if got := rc.RemoteAddr().String(); got != u.tc.LocalAddr().String() {
		t.Fatalf("the runner sends to %s, the client is at %s", got, u.tc.LocalAddr())
	}
	if m := rc.rl.t.moves.Load(); m != 1 {
		t.Fatalf("moves = %d, want 1", m)
	}

	// Third sockets: a forged tag, a replay (a valid tag, a counter
	// taken), garbage, and an untagged LinkOpen with the right token. (A
	// peer whose first datagram is dropped is forgotten at once, with what
	// it queued: one socket each.)
	sendFrom := func(d []byte) {
		third, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(mustAddrPort(t, r.ep)))
		if err != nil {
			t.Fatal(err)
		}
		defer third.Close()
		if _, err := third.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	ping := wire.AppendMessage(nil, &wire.Ping{ID: 9})
	var wrongKey [32]byte
	forged := session.AppendTagged(nil, &wrongKey, tags.keys.ID, tags.next+1000, ping)
	replay := session.AppendTagged(nil, &tags.keys.ClientToRunner, tags.keys.ID, first, ping)
	openPayload, _ := session.Encode(&session.LinkOpen{ID: 5, Session: "s1", Link: "unreliable", Token: "tok"})
	untagged := wire.AppendMessage(nil, &wire.Data{Channel: session.Channel, Payload: openPayload})
	before := r.p.direct.tags.rejected.Load()
	for _, d := range [][]byte{forged, replay, {session.TagMagic, 1, 2}} {
		sendFrom(d)
	}
	// The untagged LinkOpen is its own link attempt, refused.
	refusal := make(chan string, 1)
	go func() {
		third2, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(mustAddrPort(t, r.ep)))
		if err != nil {
			refusal <- err.Error()
			return
		}
		defer third2.Close()
		third2.Write(untagged)
		third2.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2048)
		n, err := third2.Read(buf)
		if err != nil {
			refusal <- err.Error()
			return
		}
		f, _, err := wire.DecodeFrame(buf[:n], 0)
		if err != nil {
			refusal <- err.Error()
			return
		}
		m, _ := session.Decode(f.Payload)
		if e, ok := m.(*session.Error); ok {
			refusal <- e.Message
			return
		}
		refusal <- "not an Error"
	}()
	if got := <-refusal; !strings.Contains(got, "carry session tags") {
		t.Fatalf("the untagged LinkOpen: %s", got)
	}
	for i := 0; i < 500 && r.p.direct.tags.rejected.Load() < before+3; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.p.direct.tags.rejected.Load() - before; n != 3 {
		t.Fatalf("%d datagrams rejected, want 3", n)
	}
	if n := rc.rl.t.rejected.Load(); n != 2 {
		t.Fatalf("the link counted %d rejections, want 2 (forged, replay)", n)
	}
	// Nothing moved: data still flows to the client's new socket.
	r.waitLevel(u, 0.75)
	if r.bound() != dc || rc.RemoteAddr().String() != u.tc.LocalAddr().String() || rc.rl.t.moves.Load() != 1 {
		t.Fatal("a datagram from the third socket changed the link")
	}
	// A call on the link still reaches the runner: answered (here,
	// refused by the routing document, which proves it was read).
	call := &session.Call{ID: 11, Session: "s1", Method: "fast"}
	u.send(call)
	u.until("the answer to a call", call, func(m session.Message) bool { e, ok := m.(*session.Error); return ok && e.ID == 11 })
}

func mustAddrPort(t *testing.T, ep bearers.Endpoint) netip.AddrPort {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", ep.HostPort())
	if err != nil {
		t.Fatal(err)
	}
	return a.AddrPort()
}

// TestTagConnClientEnd: the client end takes only the runner's tagged,
// fresh datagrams (a replay, a forgery, an untagged frame, another link's
// datagram are dropped and counted), and after rebind it reads and writes
// on the new socket with the same counters.
func TestTagConnClientEnd(t *testing.T) {
	runnerSock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer runnerSock.Close()
	ub, _ := udp.New(bearers.Config{})
	ep, _ := bearers.ParseEndpoint("udp://" + runnerSock.LocalAddr().String())
	key := session.DeriveLinkKey(bytes.Repeat([]byte{5}, session.SecretSize), "s9")
	ct, rt := newLinkTags(key, "unreliable", false), newLinkTags(key, "unreliable", true)
	bc, err := ub.Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	tc := newTagConn(ct, bc)
	defer tc.Close()

	// The client speaks first, so that the runner learns its address.
	buf := make([]byte, 2048)
	hello := func() *net.UDPAddr {
		t.Helper()
		if _, err := tc.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		runnerSock.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := runnerSock.ReadFromUDP(buf)
		if err != nil {
			t.Fatal(err)
		}
		frame, _, ok := rt.open(buf[:n])
		if !ok || string(frame) != "hello" {
			t.Fatalf("the runner got %q (ok %v)", frame, ok)
		}
		return from
	}
	from := hello()
	valid := rt.seal(nil, []byte("one"))
	other := newLinkTags(key, "other", true)
	var wrong [32]byte
	for _, d := range [][]byte{
		valid,
		valid, // replay
		session.AppendTagged(nil, &wrong, rt.keys.ID, 1<<62, []byte("forged")),
		wire.AppendMessage(nil, &wire.Ping{ID: 1}),                                                 // untagged
		other.seal(nil, []byte("another link's")),                                                  // another link
		session.AppendTagged(nil, &rt.keys.ClientToRunner, rt.keys.ID, 1<<62, []byte("reflected")), // the other direction's key
		rt.seal(nil, []byte("two")),
	} {
		if _, err := runnerSock.WriteToUDP(d, from); err != nil {
			t.Fatal(err)
		}
	}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []string{"one", "two"} {
		n, err := tc.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want)
		}
	}
	if n := ct.rejected.Load(); n != 5 {
		t.Fatalf("%d datagrams rejected, want 5", n)
	}

	// Rebind: a new socket, the same link.
	nbc, err := ub.Dial(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	if !tc.rebind(nbc) {
		t.Fatal("rebind refused")
	}
	from2 := hello()
	if from2.String() == from.String() {
		t.Fatalf("the client still sends from %s", from)
	}
	runnerSock.WriteToUDP(rt.seal(nil, []byte("three")), from2)
	n, err := tc.Read(buf)
	if err != nil || string(buf[:n]) != "three" {
		t.Fatalf("Read after rebind = %q, %v", buf[:n], err)
	}
	tc.Close()
	if tc.rebind(nbc) {
		t.Fatal("rebind of a closed conn")
	}
}

// TestUntaggedLinkStillServed: a session without a link key (no secret)
// opens its udp link untagged through the same listener, as before
// session tags; its tagged datagrams are not believed.
func TestUntaggedLinkStillServed(t *testing.T) {
	r := newUDPRig(t, false)
	bc, err := r.ub.Dial(context.Background(), r.ep)
	if err != nil {
		t.Fatal(err)
	}
	u := &udpPeer{t: t, wc: wire.NewDatagramConn(bc, wire.MaxDatagramPayload)}
	t.Cleanup(func() { u.wc.Close() })
	open := &session.LinkOpen{ID: 1, Session: "s1", Link: "unreliable", Token: "tok"}
	u.send(open)
	u.untilOn(bc, "OK to LinkOpen", open, func(m session.Message) bool { ok, is := m.(*session.OK); return is && ok.ID == 1 })
	if r.bound() == nil {
		t.Fatal("no bound link")
	}
	if _, ok := r.bound().bc.(*roamConn); ok {
		t.Fatal("an untagged link became a tagged one")
	}
	want := levelValue(t, 0.125)
	if err := r.p.SetData("t.svc", "level", want); err != nil {
		t.Fatal(err)
	}
	u.untilOn(bc, "the runtime-data change", nil, func(m session.Message) bool {
		dc, ok := m.(*session.DataChange)
		return ok && dc.Path == "level" && bytes.Equal(dc.Value, want)
	})
}

// FuzzTaggedIntake: whatever datagrams reach a runner's tagged endpoint,
// its intake never panics, and takes only those made with the link's key.
func FuzzTaggedIntake(f *testing.F) {
	key := session.DeriveLinkKey(bytes.Repeat([]byte{3}, session.SecretSize), "s1")
	ct := newLinkTags(key, "unreliable", false)
	f.Add(ct.seal(nil, wire.AppendMessage(nil, &wire.Ping{ID: 1})))
	f.Add([]byte{session.TagMagic, 1})
	f.Add(wire.AppendMessage(nil, &wire.Ping{ID: 1}))
	p, err := NewProvider(ProviderConfig{Services: []ProvidedService{{XML: []byte(directXML), Handler: directHandler{}}}})
	if err != nil {
		f.Fatal(err)
	}
	doc := &routing.Document{Session: "s1", Service: "t.svc", Links: []routing.Link{{Name: "server", Kind: routing.ServerLink},
		{Name: "unreliable", Kind: routing.DirectLink, Bearer: udp.Type}}}
	p.direct.tags.addSession("s1", doc, key, func(string) bool { return true })
	tl := newTagListener(p, nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	pc := pipeBearerConn{a}
	f.Fuzz(func(t *testing.T, d []byte) {
		rl := p.direct.tags.links[ct.keys.ID]
		before := rl.t.window.Newest()
		took := tl.deliver(pc, d)
		if took && !session.VerifyTag(&ct.keys.ClientToRunner, d) {
			t.Fatal("took a datagram not made with the link's key")
		}
		if !took && rl.t.window.Newest() != before {
			t.Fatal("a dropped datagram moved the window")
		}
		for { // drain what was offered
			select {
			case c := <-tl.accepted:
				c.Close()
				continue
			default:
			}
			break
		}
	})
}
