package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
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

const directXML = `<service name="t.svc" version="1.0">
  <method name="fast" returns="string"/>
  <method name="slow" returns="string"/>
  <event name="tick"><arg name="n" type="int"/></event>
  <event name="quiet"/>
  <data>
    <value name="level" type="float" default="0.5"/>
    <value name="count" type="int"/>
  </data>
  <routing>
    <route method="*" linkType="server"/>
    <route method="fast" link="reliable"/>
    <route event="tick" link="reliable"/>
    <route data="level" link="unreliable"/>
    <route data="count" link="reliable" linkType="direct_and_server"/>
  </routing>
</service>`

// directHandler answers every call with "METHOD in SESSION".
type directHandler struct{}

func (directHandler) OpenSession(context.Context, string, string) error { return nil }
func (directHandler) CloseSession(string, string)                       {}
func (directHandler) Call(ctx context.Context, sess, method string, args []byte) ([]byte, error) {
	return services.AppendValue(nil, &servicefile.Type{Kind: servicefile.String}, method+" in "+sess)
}

// pipeBearerConn makes one end of a net.Pipe a bearers.Conn.
type pipeBearerConn struct{ net.Conn }

func (pipeBearerConn) Peer() bearers.Peer { return bearers.Peer{} }

// directProvider is a Provider with one session ("s1", token "tok") whose
// direct links it accepts, without a server.
func directProvider(t testing.TB) (*Provider, *routing.Document) {
	t.Helper()
	p, err := NewProvider(ProviderConfig{Services: []ProvidedService{{XML: []byte(directXML), Handler: directHandler{}}}})
	if err != nil {
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
	udpEP, _ := bearers.ParseEndpoint("udp://127.0.0.1:9700")
	d, err := routing.Resolve(svc.desc, routing.Situation{Session: "s1", Token: "tok",
		Runner: &routing.Runner{Bearer: tcp.Type, Bearers: []bearers.Info{tcp.Info, udp.Info}, Endpoints: []bearers.Endpoint{tcpEP, udpEP}},
		Client: routing.Client{Bearers: []string{tcp.Type, udp.Type}, Direct: true}})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := routing.Generate(d)
	if err != nil {
		t.Fatal(err)
	}
	p.addDirectSession(svc, &session.RemoteOpen{ID: 1, Service: "t.svc", Session: "s1", Token: "tok", Routing: doc})
	return p, d
}

// linkPeer is the client end of a direct link under test.
type linkPeer struct {
	t  *testing.T
	wc wire.Conn
}

// dialDirect connects a client end to p as a link served by bearer info.
func dialDirect(t *testing.T, p *Provider, info bearers.Info) *linkPeer {
	t.Helper()
	a, b := net.Pipe()
	dc := p.newDirectConn(pipeBearerConn{a}, info)
	if dc == nil || !p.goroutine(dc.serve) {
		t.Fatal("the provider took no link")
	}
	lp := &linkPeer{t: t, wc: wire.NewStreamConn(b, 0)}
	t.Cleanup(func() { lp.wc.Close() })
	return lp
}

func (lp *linkPeer) send(m session.Message) {
	lp.t.Helper()
	b, err := session.Encode(m)
	if err != nil {
		lp.t.Fatal(err)
	}
	if err := lp.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b}); err != nil {
		lp.t.Fatal(err)
	}
}

// next returns the next session message (or wire control message).
func (lp *linkPeer) next() any {
	lp.t.Helper()
	type res struct {
		m   wire.Message
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := lp.wc.ReadMessage()
		if d, ok := m.(*wire.Data); ok {
			d.Payload = bytes.Clone(d.Payload)
		}
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if d, ok := r.m.(*wire.Data); ok {
			m, err := session.Decode(d.Payload)
			if err != nil {
				lp.t.Fatal(err)
			}
			return m
		}
		return r.m
	case <-time.After(10 * time.Second):
		lp.t.Fatal("nothing from the runner for 10s")
	}
	return nil
}

func (lp *linkPeer) wantError(code session.Code, msg string) {
	lp.t.Helper()
	m := lp.next()
	e, ok := m.(*session.Error)
	if !ok || e.Code != code || e.Message != msg {
		lp.t.Fatalf("got %#v\nwant Error %v %q", m, code, msg)
	}
}

// wantClosed checks that the runner closed the link.
func (lp *linkPeer) wantClosed() {
	lp.t.Helper()
	if m := lp.next(); !errors.Is(m.(error), io.EOF) && !errors.Is(m.(error), io.ErrClosedPipe) {
		lp.t.Fatalf("got %#v, want the link closed", m)
	}
}

// TestDirectLinkRefused lists the LinkOpens a runner refuses, with their
// exact messages; every refusal closes the link.
func TestDirectLinkRefused(t *testing.T) {
	p, _ := directProvider(t)
	cases := []struct {
		name string
		info bearers.Info
		m    session.Message
		code session.Code
		want string
	}{
		{"wrong token", tcp.Info, &session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "guess"}, session.CodeDenied, `no open session "s1" with that token on this runner`},
		{"unknown session", tcp.Info, &session.LinkOpen{ID: 1, Session: "s2", Link: "reliable", Token: "tok"}, session.CodeDenied, `no open session "s2" with that token on this runner`},
		{"unknown link", tcp.Info, &session.LinkOpen{ID: 1, Session: "s1", Link: "sideways", Token: "tok"}, session.CodeDenied, `session s1 has no direct link "sideways"`},
		{"the server link", tcp.Info, &session.LinkOpen{ID: 1, Session: "s1", Link: "server", Token: "tok"}, session.CodeDenied, `session s1 has no direct link "server"`},
		{"wrong bearer", udp.Info, &session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok"}, session.CodeDenied, `link "reliable" of session s1 is opened with connect.bearer.tcp; this endpoint serves connect.bearer.udp`},
		{"not a LinkOpen", tcp.Info, &session.Call{ID: 4, Session: "s1", Method: "fast"}, session.CodeBadRequest, `the first message on a direct link is LinkOpen, not Call`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lp := dialDirect(t, p, c.info)
			lp.send(c.m)
			lp.wantError(c.code, c.want)
			lp.wantClosed()
		})
	}
	t.Run("ping first", func(t *testing.T) {
		lp := dialDirect(t, p, tcp.Info)
		lp.wc.WriteMessage(&wire.Ping{ID: 1})
		if m, ok := lp.next().(*wire.Close); !ok || m.Reason != "no direct link is open on this connection; open one with LinkOpen" {
			t.Fatalf("got %#v", m)
		}
		lp.wantClosed()
	})
	t.Run("garbage", func(t *testing.T) {
		lp := dialDirect(t, p, tcp.Info)
		lp.wc.WriteFrame(wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: []byte{0x38, 0xff}})
		lp.wantClosed()
	})
}

// TestDirectLinkServes opens the reliable link and checks what it
// carries: calls routed over it, refusals of the others, the events and
// runtime data routed over it, and nothing else.
func TestDirectLinkServes(t *testing.T) {
	p, _ := directProvider(t)
	lp := dialDirect(t, p, tcp.Info)
	lp.send(&session.LinkOpen{ID: 7, Session: "s1", Link: "reliable", Token: "tok"})
	if m, ok := lp.next().(*session.OK); !ok || m.ID != 7 {
		t.Fatalf("LinkOpen: %#v", m)
	}
	// The current value of count (routed here) comes first.
	if m, ok := lp.next().(*session.DataChange); !ok || m.Session != "s1" || m.Watch != 7 || m.Path != "count" {
		t.Fatalf("first data: %#v", m)
	}
	lp.send(&session.Call{ID: 8, Session: "s1", Method: "fast"})
	want, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.String}, "fast in s1")
	if m, ok := lp.next().(*session.Result); !ok || m.ID != 8 || !bytes.Equal(m.Value, want) {
		t.Fatalf("call fast: %#v", m)
	}
	lp.send(&session.Call{ID: 9, Session: "s1", Method: "slow"})
	lp.wantError(session.CodeDenied, "method slow of session s1 goes through the server, not over direct link reliable (its routing document says so)")
	lp.send(&session.Call{ID: 10, Session: "s1", Method: "nope"})
	lp.wantError(session.CodeUnknownMethod, `service t.svc has no method "nope" (methods: fast, slow)`)
	lp.send(&session.Call{ID: 11, Session: "s9", Method: "fast"})
	lp.wantError(session.CodeUnknownSession, `this direct link belongs to session s1, not "s9"`)
	lp.send(&session.Watch{ID: 12, Session: "s1", Path: "level"})
	lp.wantError(session.CodeUnsupported, "a direct link carries calls; send Watch to the server (events and runtime data routed over this link arrive on it unasked)")
	lp.send(&session.LinkOpen{ID: 7, Session: "s1", Link: "reliable", Token: "tok"}) // a resent LinkOpen
	if m, ok := lp.next().(*session.OK); !ok || m.ID != 7 {
		t.Fatalf("LinkOpen again: %#v", m)
	}

	// Events and data: tick and count come here; quiet and level do not.
	tick, _ := services.AppendArgs(nil, []*servicefile.Field{{Name: "n", Type: &servicefile.Type{Kind: servicefile.Int}}}, map[string]any{"n": 3})
	p.Emit("t.svc", "", "quiet", nil)
	p.Emit("t.svc", "", "tick", tick)
	if m, ok := lp.next().(*session.Event); !ok || m.Name != "tick" || m.Session != "s1" || !bytes.Equal(m.Args, tick) {
		t.Fatalf("event: %#v", m)
	}
	level, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Float}, 0.25)
	count, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Int}, int64(5))
	if err := p.SetData("t.svc", "level", level); err != nil {
		t.Fatal(err)
	}
	if err := p.SetData("t.svc", "count", count); err != nil {
		t.Fatal(err)
	}
	if m, ok := lp.next().(*session.DataChange); !ok || m.Path != "count" || !bytes.Equal(m.Value, count) || m.Watch != 7 {
		t.Fatalf("data: %#v", m)
	}
	// What goes to the server: not level (routed only directly), count
	// (direct_and_server) and events but tick (routed only directly).
	svc := p.svcs["t.svc"]
	pending := func() string {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return strings.Join(svc.pending, " ")
	}
	if got := pending(); got != "count" {
		t.Errorf("runtime data for the server: %q, want count", got)
	}
	// A change of the whole tree sends this link its routes' part, and
	// the server all of it.
	tree, err := services.AppendValue(nil, svc.desc.Data.Type, map[string]any{"level": 0.75, "count": int64(6)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetData("t.svc", "", tree); err != nil {
		t.Fatal(err)
	}
	six, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Int}, int64(6))
	if m, ok := lp.next().(*session.DataChange); !ok || m.Path != "count" || !bytes.Equal(m.Value, six) {
		t.Fatalf("data after a whole-tree change: %#v", m)
	}
	if got := pending(); got != "" {
		t.Errorf("runtime data for the server after a whole-tree change: %q, want the whole tree", got)
	}
	if !svc.needs.event("quiet") || svc.needs.event("tick") || svc.needs.dataPath("level") || !svc.needs.dataPath("count") || !svc.needs.dataPath("") {
		t.Error("serverNeeds")
	}

	// The session closes: its link closes.
	p.dropDirectSession("s1")
	lp.wantClosed()
}

// TestDirectLinkReplaced: a second link of the same name replaces the
// first, which is closed.
func TestDirectLinkReplaced(t *testing.T) {
	p, _ := directProvider(t)
	first := dialDirect(t, p, tcp.Info)
	first.send(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok"})
	if _, ok := first.next().(*session.OK); !ok {
		t.Fatal("first LinkOpen")
	}
	first.next() // the data routed here
	second := dialDirect(t, p, tcp.Info)
	second.send(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok"})
	if _, ok := second.next().(*session.OK); !ok {
		t.Fatal("second LinkOpen")
	}
	first.wantClosed()
}

// FuzzLinkHandshake feeds arbitrary bytes to a runner's direct link as
// the client's stream: no panic, the link ends, nothing leaks.
func FuzzLinkHandshake(f *testing.F) {
	enc := func(ms ...session.Message) []byte {
		var out []byte
		for _, m := range ms {
			b, _ := session.Encode(m)
			out = wire.AppendFrame(out, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b})
		}
		return out
	}
	f.Add(enc(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok"}, &session.Call{ID: 2, Session: "s1", Method: "fast"}))
	f.Add(enc(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "bad"}))
	f.Add(enc(&session.Call{ID: 2, Session: "s1", Method: "fast"}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{1, 0x10, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0x38, 1, 1})
	p, _ := directProvider(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		dc := p.newDirectConn(pipeBearerConn{a}, tcp.Info)
		if dc == nil {
			t.Skip()
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, b) }()
		done := make(chan struct{})
		go func() { dc.serve(); close(done) }()
		b.SetWriteDeadline(time.Now().Add(2 * time.Second))
		b.Write(data)
		b.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the link did not end")
		}
		wg.Wait()
	})
}
