package core

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// guard bounds every wait; nothing here asserts how long anything takes.
const guard = 10 * time.Second

// sessionRig is a registered connection's session layer over a pipe, with
// the echo example's service hosted without a plugin (so calls and session
// opens are unavailable, but events and runtime data can be fed in).
type sessionRig struct {
	t    *testing.T
	srv  *Server
	hs   *hostedService
	c    *clientConn
	cs   *connSessions
	peer wire.Conn // the client's end
}

func newSessionRig(t *testing.T) *sessionRig {
	t.Helper()
	xml, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := servicefile.Parse("echo.xml", xml)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := services.NewDataTree(desc.Data)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hs := &hostedService{cfg: config.Service{Name: "example.echo"}, desc: desc, data: tree}
	srv := &Server{log: log, ctx: ctx, services: map[string]*hostedService{"example.echo": hs}}
	a, b := net.Pipe()
	ad := &adapter{cfg: config.Adapter{Name: "tcp"}, sup: pluginhost.NewSupervisor(pluginhost.Options{Name: "tcp"}, bearers.Endpoint{}, nil)}
	c := &clientConn{s: srv, adapter: ad, wc: wire.NewStreamConn(a, 0), log: log, clientID: uuid.New()}
	r := &sessionRig{t: t, srv: srv, hs: hs, c: c, cs: c.sessionLayer(), peer: wire.NewStreamConn(b, 0)}
	t.Cleanup(func() {
		r.peer.Close()
		done := make(chan struct{})
		go func() { c.closeSessions(); close(done) }()
		select {
		case <-done:
		case <-time.After(guard):
			t.Error("closeSessions did not return")
		}
	})
	return r
}

// send hands the session layer a request, as the reader would.
func (r *sessionRig) send(m session.Message) {
	r.t.Helper()
	b, err := session.Encode(m)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cs.handle(b)
}

// next reads the next session message the server wrote.
func (r *sessionRig) next() session.Message {
	r.t.Helper()
	type res struct {
		m   wire.Message
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := r.peer.ReadMessage()
		if d, ok := m.(*wire.Data); ok {
			d.Payload = append([]byte(nil), d.Payload...)
		}
		ch <- res{m, err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			r.t.Fatalf("reading: %v", x.err)
		}
		d, ok := x.m.(*wire.Data)
		if !ok || d.Channel != session.Channel || d.Flags != 0 {
			r.t.Fatalf("got %#v, want a Data frame on channel %d", x.m, session.Channel)
		}
		m, err := session.Decode(d.Payload)
		if err != nil {
			r.t.Fatal(err)
		}
		return m
	case <-time.After(guard):
		r.t.Fatal("the server wrote nothing")
		return nil
	}
}

// open adds a session directly (the service has no plugin to ask).
func (r *sessionRig) open() *clientSession {
	s := r.cs.addSession(r.hs, uuid.NewString(), nil, nil)
	if s == nil {
		r.t.Fatal("addSession refused")
	}
	return s
}

// within fails the test if f does not return within the guard: the hooks
// on the plugin stream's reader must never wait for a client.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatalf("%s blocked", what)
	}
}

func sleepingArgs(ms int64) []byte {
	return binary.AppendVarint(nil, ms) // the event's one int argument
}

func TestSessionAnswers(t *testing.T) {
	r := newSessionRig(t)
	r.send(&session.ListServices{ID: 1})
	if m, ok := r.next().(*session.ServiceList); !ok || m.ID != 1 || len(m.Services) != 1 || m.Services[0].Name != "example.echo" || m.Services[0].Available {
		t.Fatalf("ListServices: %#v", m)
	}
	cases := []struct {
		req  session.Message
		code session.Code
		want string
	}{
		{&session.StartSession{ID: 2, Service: "no.such"}, session.CodeUnknownService, `no service "no.such" on this server (services: example.echo)`},
		{&session.StartSession{ID: 3, Service: "example.echo"}, session.CodeUnavailable, `service example.echo is unavailable: it is starting`},
		{&session.Describe{ID: 4, Service: "example.echo"}, session.CodeUnavailable, `unavailable`},
		{&session.Call{ID: 5, Session: "nope", Method: "add"}, session.CodeUnknownSession, `no session "nope" on this connection`},
		{&session.Watch{ID: 6, Session: "nope"}, session.CodeUnknownSession, `no session`},
		{&session.CloseSession{ID: 7, Session: "nope"}, session.CodeUnknownSession, `no session`},
	}
	for _, c := range cases {
		r.send(c.req)
		e, ok := r.next().(*session.Error)
		if !ok || e.ID != c.req.(session.Request).RequestID() || e.Code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%#v: got %#v, want code %v and %q", c.req, e, c.code, c.want)
		}
	}

	s := r.open()
	for _, c := range []struct {
		req  session.Message
		code session.Code
		want string
	}{
		{&session.Call{ID: 8, Session: s.id, Method: "nope"}, session.CodeUnknownMethod, `service example.echo has no method "nope" (methods: echo, add, stats, sleep, fail, setLevel)`},
		{&session.Call{ID: 9, Session: s.id, Method: "add"}, session.CodeUnavailable, `service example.echo is unavailable`},
		{&session.Subscribe{ID: 10, Session: s.id, Events: []string{"nope"}}, session.CodeUnknownEvent, `no event "nope" (events: sleeping, levelChanged)`},
		{&session.Watch{ID: 11, Session: s.id, Path: "meter.nope"}, session.CodeNotFound, `meter has no "nope"`},
		{&session.Stop{ID: 12, Session: s.id, Target: 99}, session.CodeNotFound, `no subscription or watch 99`},
	} {
		r.send(c.req)
		e, ok := r.next().(*session.Error)
		if !ok || e.Code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%#v: got %#v, want code %v and %q", c.req, e, c.code, c.want)
		}
	}

	// Bad bytes with a readable id are answered; without one, ignored.
	r.cs.handle(append([]byte{byte(session.KindCall)}, wire.AppendUint64Field(nil, 1, 13)...))
	if e, ok := r.next().(*session.Error); !ok || e.ID != 13 || e.Code != session.CodeBadRequest || !strings.Contains(e.Message, "session: decode Call field session") {
		t.Errorf("malformed request: %#v", e)
	}
	r.cs.handle(append([]byte{0x3a}, wire.AppendUint64Field(nil, 1, 14)...))
	if e, ok := r.next().(*session.Error); !ok || e.ID != 14 || e.Code != session.CodeUnsupported {
		t.Errorf("unknown kind: %#v", e)
	}
	r.cs.handle([]byte{0xff, 0xff})
	r.send(&session.OK{ID: 15}) // a response from a client: ignored
	r.send(&session.CloseSession{ID: 16, Session: s.id})
	if m, ok := r.next().(*session.OK); !ok || m.ID != 16 {
		t.Fatalf("CloseSession: %#v", m)
	}
	if len(r.hs.sess.m) != 0 || len(r.srv.Sessions()) != 0 {
		t.Errorf("the closed session is still listed: %v", r.srv.Sessions())
	}
}

// An event subscriber that does not read loses events at a bounded queue,
// is told where and how many, and never holds up the plugin's reader.
func TestSlowSubscriber(t *testing.T) {
	r := newSessionRig(t)
	s := r.open()
	r.send(&session.Subscribe{ID: 1, Session: s.id, Events: []string{"sleeping"}})
	if m, ok := r.next().(*session.OK); !ok || m.ID != 1 {
		t.Fatalf("Subscribe: %#v", m)
	}
	const total = 5 * maxEventQueue
	within(t, "fanOutEvent", func() {
		for i := range total {
			r.hs.onEvent(serviceplugin.Event{Name: "sleeping", Args: sleepingArgs(int64(i))})
			r.hs.onEvent(serviceplugin.Event{Name: "levelChanged", Args: make([]byte, 8)}) // not subscribed
		}
	})
	got, lost, last, gaps := 0, uint64(0), int64(-1), 0
	for uint64(got)+lost < total {
		switch m := r.next().(type) {
		case *session.Event:
			if m.Name != "sleeping" || m.Session != s.id {
				t.Fatalf("event %#v", m)
			}
			v, _ := binary.Varint(m.Args)
			if v <= last {
				t.Fatalf("event %d after %d", v, last)
			}
			if v != last+1 && gaps == 0 {
				t.Fatalf("events %d to %d missing without an EventsLost before", last+1, v-1)
			}
			last, gaps = v, 0
			got++
		case *session.EventsLost:
			lost += m.Count
			gaps++
		default:
			t.Fatalf("unexpected %#v", m)
		}
	}
	if lost == 0 || uint64(got)+lost != total {
		t.Fatalf("got %d events and %d lost; want %d in all, some lost", got, lost, total)
	}
}

func float64Bytes(f float64) []byte {
	return binary.LittleEndian.AppendUint64(nil, math.Float64bits(f))
}

// A watcher that does not read gets the latest values, coalesced, after
// its snapshot; ancestor updates reach watchers below them.
func TestSlowWatcher(t *testing.T) {
	r := newSessionRig(t)
	s := r.open()
	r.send(&session.Watch{ID: 1, Session: s.id, Path: "meter"})
	r.send(&session.Watch{ID: 2, Session: s.id, Path: "meter.level"})
	for i, id := range []uint64{1, 2} {
		m, ok := r.next().(*session.Snapshot)
		if !ok || m.ID != id {
			t.Fatalf("snapshot %d: %#v", i, m)
		}
	}
	const n = 1000
	within(t, "onData", func() {
		for i := 1; i <= n; i++ {
			r.hs.onData(serviceplugin.DataUpdate{Path: "meter.level", Value: float64Bytes(float64(i))})
		}
	})
	final := map[uint64]float64{}
	for msgs := 0; final[1] != n || final[2] != n; msgs++ {
		if msgs > 2*n {
			t.Fatalf("too many changes: %v", final)
		}
		m, ok := r.next().(*session.DataChange)
		if !ok || m.Path != "meter.level" {
			t.Fatalf("change %#v", m)
		}
		v, err := services.DecodeValue(&servicefile.Type{Kind: servicefile.Float}, m.Value)
		if err != nil {
			t.Fatal(err)
		}
		final[m.Watch] = v.(float64)
	}
	// The whole tree replaced (a plugin restart): both watches hear of it,
	// at their own paths.
	tree, err := services.AppendValue(nil, r.hs.desc.Data.Type, map[string]any{"meter": map[string]any{"level": 0.5, "calls": 7}})
	if err != nil {
		t.Fatal(err)
	}
	within(t, "onData", func() { r.hs.onData(serviceplugin.DataUpdate{Path: "", Value: tree}) })
	// (Changes of meter.level to n may still follow: a path that changed
	// again while the writer sent it is sent once more.)
	sawMeter, sawLevel := false, false
	for !sawMeter || !sawLevel {
		m, ok := r.next().(*session.DataChange)
		if !ok {
			t.Fatalf("change %#v", m)
		}
		switch {
		case m.Watch == 1 && m.Path == "meter":
			v, err := services.DecodeValue(r.hs.desc.Data.Lookup("meter").Type, m.Value)
			if err != nil || v.(map[string]any)["calls"] != int64(7) {
				t.Fatalf("meter after the whole-tree update: %v %v", v, err)
			}
			sawMeter = true
		case m.Path == "meter.level":
			v, _ := services.DecodeValue(&servicefile.Type{Kind: servicefile.Float}, m.Value)
			switch {
			case m.Watch == 2 && v == 0.5:
				sawLevel = true
			case v != float64(n):
				t.Fatalf("change %#v (%v) after the whole-tree update", m, v)
			}
		default:
			t.Fatalf("change %#v after the whole-tree update", m)
		}
	}
}

func TestWatchAdd(t *testing.T) {
	w := &watch{path: "a"}
	for _, p := range []string{"a.x", "a.y", "a.x", "a.x.z", "a.y.q"} {
		w.add(p)
	}
	if strings.Join(w.pending, " ") != "a.x a.y" {
		t.Fatalf("pending %v", w.pending)
	}
	w.add("a")
	if strings.Join(w.pending, " ") != "a" {
		t.Fatalf("pending %v", w.pending)
	}
	w = &watch{path: ""}
	for i := range maxPendingPaths + 1 {
		w.add("list." + string(rune('a'+i%26)) + strings.Repeat("x", i))
	}
	if len(w.pending) != 1 || w.pending[0] != "" {
		t.Fatalf("overflow: %d pending, first %q", len(w.pending), w.pending[0])
	}
	for _, c := range []struct {
		p, anc string
		want   bool
	}{{"a.b", "a", true}, {"a", "a", true}, {"ab", "a", false}, {"a", "a.b", false}, {"x", "", true}} {
		if below(c.p, c.anc) != c.want {
			t.Errorf("below(%q, %q) != %v", c.p, c.anc, c.want)
		}
	}
}

// The connection's end closes its sessions and stops every goroutine.
func TestCloseSessions(t *testing.T) {
	r := newSessionRig(t)
	s := r.open()
	r.send(&session.Subscribe{ID: 1, Session: s.id, All: true})
	r.next()
	if list := r.srv.Sessions(); len(list) != 1 || list[0].ID != s.id || list[0].Subscriptions != 1 || list[0].Adapter != "tcp" {
		t.Fatalf("Sessions() = %+v", list)
	}
	// A client that reads nothing: the events wait, the writer blocks.
	for range 10 {
		r.hs.onEvent(serviceplugin.Event{Name: "levelChanged", Args: float64Bytes(1)})
	}
	within(t, "closeSessions", r.c.closeSessions)
	if len(r.srv.Sessions()) != 0 || s.ctx.Err() == nil || !s.closed {
		t.Fatal("a session outlived its connection")
	}
}
