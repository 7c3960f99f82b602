package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// fakeRunner accepts direct links on a tcp port: it answers LinkOpen with
// OK (for token "tok") and add calls with their sum, and counts them.
type fakeRunner struct {
	t  *testing.T
	ln net.Listener
	ep bearers.Endpoint

	mu    sync.Mutex
	conns []net.Conn
	calls int
	opens int
}

func newFakeRunner(t *testing.T) *fakeRunner {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, _ := bearers.ParseEndpoint("tcp://" + ln.Addr().String())
	r := &fakeRunner{t: t, ln: ln, ep: ep}
	go r.accept()
	t.Cleanup(func() { ln.Close(); r.drop() })
	return r
}

func (r *fakeRunner) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		go r.serve(wire.NewStreamConn(c, 0))
	}
}

func (r *fakeRunner) serve(wc wire.Conn) {
	defer wc.Close()
	for {
		m, err := wc.ReadMessage()
		if err != nil {
			return
		}
		d, ok := m.(*wire.Data)
		if !ok {
			if p, ok := m.(*wire.Ping); ok {
				wc.WriteMessage(&wire.Pong{ID: p.ID})
			}
			continue
		}
		req, err := session.Decode(d.Payload)
		if err != nil {
			return
		}
		switch req := req.(type) {
		case *session.LinkOpen:
			r.mu.Lock()
			r.opens++
			r.mu.Unlock()
			if req.Token != "tok" {
				send(wc, session.NewError(req.ID, session.CodeDenied, "bad token"))
				return
			}
			send(wc, &session.OK{ID: req.ID})
		case *session.Call:
			r.mu.Lock()
			r.calls++
			r.mu.Unlock()
			meth := echoDesc.Method(req.Method)
			args, _ := services.DecodeArgs(meth.Args, req.Args)
			v, _ := services.AppendValue(nil, meth.Returns, args["a"].(int64)+args["b"].(int64))
			send(wc, &session.Result{ID: req.ID, Value: v})
		}
	}
}

// drop closes every link (the runner died; its port stays, as a runner
// restarted on it would).
func (r *fakeRunner) drop() {
	r.mu.Lock()
	conns := r.conns
	r.conns = nil
	r.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (r *fakeRunner) counts() (opens, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opens, r.calls
}

// TestSessionDirectLinks: a session whose document has a direct link the
// client reaches (add) and one it cannot (setLevel, which falls back to the
// server): where each call goes, the note, LinksDown, the counters, and
// what happens when the link breaks and comes back.
func TestSessionDirectLinks(t *testing.T) {
	runner := newFakeRunner(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadEP, _ := bearers.ParseEndpoint("tcp://" + dead.Addr().String())
	dead.Close() // nothing listens there now
	var declared *session.StartSession
	var dmu sync.Mutex
	ss := newSessionServer(t, func(n int, wc wire.Conn, m session.Message) bool {
		if ld, ok := m.(*session.LinksDown); ok {
			send(wc, &session.OK{ID: ld.ID})
			return true
		}
		st, ok := m.(*session.StartSession)
		if !ok {
			return false
		}
		dmu.Lock()
		declared = st
		dmu.Unlock()
		doc, err := routing.Generate(&routing.Document{Session: "d1", Service: st.Service, Links: []routing.Link{
			{Name: routing.ServerLinkName, Kind: routing.ServerLink},
			{Name: "reliable", Kind: routing.DirectLink, Bearer: "connect.bearer.tcp", Address: runner.ep, Token: "tok"},
			{Name: "far", Kind: routing.DirectLink, Bearer: "connect.bearer.tcp", Address: deadEP, Token: "tok"},
		}, Routes: []routing.Route{
			{Resource: servicefile.Resource{Kind: servicefile.MethodResource, Name: "add"}, Link: "reliable", LinkType: servicefile.Direct},
			{Resource: servicefile.Resource{Kind: servicefile.MethodResource, Name: "setLevel"}, Link: "far", LinkType: servicefile.Direct, Alternative: 1,
				Fallbacks: []routing.Fallback{{Link: routing.ServerLinkName, LinkType: servicefile.Server}}},
		}})
		if err != nil {
			t.Error(err)
			return true
		}
		send(wc, &session.SessionStarted{ID: st.ID, Session: "d1", Routing: doc})
		return true
	})
	cfg := config(ss.fakeServer, tcpBearer(t), newRecorder())
	cfg.LinkBearers = []bearers.Bearer{tcpBearer(t)}
	cfg.LinkOpenTimeout = 2 * time.Second
	c := dial(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	dmu.Lock()
	if !declared.Direct || strings.Join(declared.Bearers, ",") != "connect.bearer.tcp" {
		t.Errorf("StartSession declared %+v", declared)
	}
	dmu.Unlock()
	notes := s.Notes()
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "route method setLevel: link far unreachable (") || !strings.HasSuffix(notes[0], "); using server") {
		t.Fatalf("notes: %q", notes)
	}
	if m := ss.nextRequest(t, session.KindLinksDown).(*session.LinksDown); m.Session != "d1" || strings.Join(m.Links, ",") != "far" {
		t.Fatalf("LinksDown: %+v", m)
	}

	// add goes to the runner, setLevel through the server.
	if v, err := s.Call(ctx, "add", map[string]any{"a": 40, "b": 2}); err != nil || v != int64(42) {
		t.Fatalf("add: %v %v", v, err)
	}
	if _, err := s.Call(ctx, "setLevel", map[string]any{"level": 0.5}); err != nil {
		t.Fatalf("setLevel: %v", err)
	}
	if call := ss.nextRequest(t, session.KindCall).(*session.Call); call.Method != "setLevel" {
		t.Fatalf("the server got a call of %s", call.Method)
	}
	stats := map[string]client.LinkStats{}
	for _, st := range s.LinkStats() {
		stats[st.Link] = st
	}
	if st := stats["reliable"]; !st.Open || st.Calls != 1 || st.MessagesSent != 2 || st.MessagesReceived != 2 {
		t.Errorf("reliable: %+v", st)
	}
	if st := stats["far"]; st.Open || !strings.HasPrefix(st.Down, "unreachable (") || st.MessagesSent != 0 {
		t.Errorf("far: %+v", st)
	}
	if st := stats["server"]; !st.Open || st.Calls != 1 || st.MessagesSent != 2 { // LinksDown, the echo call
		t.Errorf("server: %+v", st)
	}

	// The runner's links break: add has no fallback and fails, saying
	// why; the server hears that reliable is down.
	runner.drop()
	if m := ss.nextRequest(t, session.KindLinksDown).(*session.LinksDown); strings.Join(m.Links, ",") != "far,reliable" {
		t.Fatalf("LinksDown after the break: %+v", m)
	}
	// The link is reopened at once (the port still listens): add works
	// again, and the server hears that only far is down.
	if m := ss.nextRequest(t, session.KindLinksDown).(*session.LinksDown); strings.Join(m.Links, ",") != "far" {
		t.Fatalf("LinksDown after the reopening: %+v", m)
	}
	if v, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); err != nil || v != int64(3) {
		t.Fatalf("add after the reopening: %v %v", v, err)
	}
	if opens, calls := runner.counts(); opens != 2 || calls != 2 {
		t.Errorf("the runner saw %d LinkOpens and %d calls", opens, calls)
	}
	notes = s.Notes()
	if len(notes) != 3 || !strings.HasPrefix(notes[1], "route method add: link reliable lost (") ||
		!strings.HasSuffix(notes[1], "and the route has no fallback that works: its messages are not delivered") || notes[2] != "link reliable reopened" {
		t.Errorf("notes: %q", notes)
	}

	// A link that stays down: calls fail with a clear error.
	runner.ln.Close()
	runner.drop()
	deadline := time.Now().Add(guard)
	for {
		_, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2})
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == session.CodeUnavailable &&
			strings.HasPrefix(ce.Message, "method add goes over direct link reliable, which is down (lost (") &&
			strings.HasSuffix(ce.Message, "), and its route has no fallback that works") {
			break
		}
		if err != nil && !errors.Is(err, client.ErrLinkLost) || time.Now().After(deadline) {
			t.Fatalf("add while the runner is gone: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
	if st := s.LinkStats(); st[0].Open {
		t.Errorf("after Close: %+v", st)
	}
}

// TestLinkBearersChecked: Dial refuses link bearers it cannot use.
func TestLinkBearersChecked(t *testing.T) {
	ss := newSessionServer(t, nil)
	cfg := config(ss.fakeServer, tcpBearer(t), newRecorder())
	cfg.LinkBearers = []bearers.Bearer{tcpBearer(t), tcpBearer(t)}
	if _, err := client.Dial(context.Background(), cfg); err == nil || err.Error() != "client: LinkBearers has two bearers of type connect.bearer.tcp; give one per type" {
		t.Fatalf("got %v", err)
	}
	cfg.LinkBearers = []bearers.Bearer{nil}
	if _, err := client.Dial(context.Background(), cfg); err == nil || err.Error() != "client: LinkBearers[0] is nil" {
		t.Fatalf("got %v", err)
	}
}
