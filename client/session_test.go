package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// ---- a fake server that speaks the session layer ----

var echoXML = func() []byte {
	b, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		panic(err)
	}
	return b
}()

var echoDesc = func() *servicefile.Service {
	d, err := servicefile.Parse("echo.xml", echoXML)
	if err != nil {
		panic(err)
	}
	return d
}()

// sessionServer answers the session layer like connectserver with the
// echo service would, for what the tests need; onRequest, if set, sees
// every request first and may answer it itself (returning true).
type sessionServer struct {
	*fakeServer
	mu        sync.Mutex
	conns     map[int]wire.Conn
	requests  chan session.Message
	onRequest func(n int, wc wire.Conn, m session.Message) bool
}

func newSessionServer(t *testing.T, onRequest func(n int, wc wire.Conn, m session.Message) bool) *sessionServer {
	ss := &sessionServer{conns: map[int]wire.Conn{}, requests: make(chan session.Message, 4096), onRequest: onRequest}
	ss.fakeServer = newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		h := s.hello(wc)
		if h == nil || welcome(wc, h, quiet) != nil {
			return
		}
		ss.mu.Lock()
		ss.conns[n] = wc
		ss.mu.Unlock()
		ss.serve(n, wc)
	})
	return ss
}

func (ss *sessionServer) conn(n int) wire.Conn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.conns[n]
}

func send(wc wire.Conn, m session.Message) error {
	b, err := session.Encode(m)
	if err != nil {
		panic(err)
	}
	return wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b})
}

func (ss *sessionServer) serve(n int, wc wire.Conn) {
	for {
		m, err := wc.ReadMessage()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.Ping:
			wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
		case *wire.Close:
			return
		case *wire.Data:
			req, err := session.Decode(m.Payload)
			if err != nil {
				ss.t.Errorf("fake server: %v", err)
				return
			}
			record(ss.requests, req)
			if ss.onRequest != nil && ss.onRequest(n, wc, req) {
				continue
			}
			if ans := answer(req); ans != nil {
				send(wc, ans)
			}
		}
	}
}

// serverDoc is the routing document of a session inside the server.
func serverDoc(id, service string) []byte {
	b, err := routing.Generate(&routing.Document{Session: id, Service: service,
		Links: []routing.Link{{Name: routing.ServerLinkName, Kind: routing.ServerLink}}})
	if err != nil {
		panic(err)
	}
	return b
}

var nextSession struct {
	sync.Mutex
	n int
}

// answer is the default behaviour: the echo service's add and echo, OK for
// the rest, the default runtime data for watches.
func answer(m session.Message) session.Message {
	switch m := m.(type) {
	case *session.ListServices:
		return &session.ServiceList{ID: m.ID, Services: []session.ServiceEntry{{Name: "example.echo", Version: "1.0", Available: true, Description: "Echoes"}}}
	case *session.Describe:
		if m.Service != "example.echo" {
			return session.NewError(m.ID, session.CodeUnknownService, "no service "+m.Service)
		}
		return &session.Description{ID: m.ID, XML: echoXML}
	case *session.StartSession:
		nextSession.Lock()
		nextSession.n++
		id := "s" + string(rune('0'+nextSession.n%10))
		nextSession.Unlock()
		return &session.SessionStarted{ID: m.ID, Session: id, Routing: serverDoc(id, m.Service)}
	case *session.Call:
		meth := echoDesc.Method(m.Method)
		args, err := services.DecodeArgs(meth.Args, m.Args)
		if err != nil {
			return session.NewError(m.ID, session.CodeInvalidArgument, err.Error())
		}
		switch m.Method {
		case "add":
			v, _ := services.AppendValue(nil, meth.Returns, args["a"].(int64)+args["b"].(int64))
			return &session.Result{ID: m.ID, Value: v}
		case "fail":
			return session.NewError(m.ID, session.CodeApplication, "service example.echo: call fail: asked to fail")
		}
		return &session.Result{ID: m.ID}
	case *session.Watch:
		t, _ := typeOf(m.Path)
		tree := map[string]any{"meter": map[string]any{"level": 0.5, "calls": int64(0)}}
		var v any = tree
		for _, seg := range strings.Split(m.Path, ".") {
			if seg != "" {
				v = v.(map[string]any)[seg]
			}
		}
		enc, _ := services.AppendValue(nil, t, v)
		return &session.Snapshot{ID: m.ID, Path: m.Path, Value: enc}
	case *session.Subscribe:
		return &session.OK{ID: m.ID}
	case *session.Stop:
		return &session.OK{ID: m.ID}
	case *session.CloseSession:
		return &session.OK{ID: m.ID}
	}
	return nil
}

func typeOf(path string) (*servicefile.Type, error) {
	t := echoDesc.Data.Type
	for _, seg := range strings.Split(path, ".") {
		if seg != "" {
			t = t.Field(seg).Type
		}
	}
	return t, nil
}

func (ss *sessionServer) nextRequest(t *testing.T, kind session.Kind) session.Message {
	t.Helper()
	for {
		select {
		case m := <-ss.requests:
			if m.Kind() == kind {
				return m
			}
		case <-time.After(guard):
			t.Fatalf("the fake server got no %v", kind)
			return nil
		}
	}
}

func sessionClient(t *testing.T, ss *sessionServer) *client.Client {
	return dial(t, config(ss.fakeServer, tcpBearer(t), newRecorder()))
}

func ctxGuard(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	return ctx
}

// ---- tests ----

func TestSessionBasics(t *testing.T) {
	ss := newSessionServer(t, nil)
	c := sessionClient(t, ss)
	ctx := ctxGuard(t)

	list, err := c.Services(ctx)
	if err != nil || len(list) != 1 || list[0] != (client.ServiceInfo{Name: "example.echo", Version: "1.0", Description: "Echoes", Available: true}) {
		t.Fatalf("Services: %+v, %v", list, err)
	}
	xml, desc, err := c.Describe(ctx, "example.echo")
	if err != nil || string(xml) != string(echoXML) || desc.Name != "example.echo" {
		t.Fatalf("Describe: %v", err)
	}
	var ce *client.Error
	if _, _, err := c.Describe(ctx, "no.such"); !errors.As(err, &ce) || ce.Code != session.CodeUnknownService || err.Error() != "describe no.such: no service no.such" {
		t.Fatalf("Describe(no.such) = %v", err)
	}
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(s.Routing()), `<routing session="`+s.ID) || s.Service() != "example.echo" || s.Err() != nil ||
		s.RoutingDocument().Session != s.ID || s.RoutingDocument().Link("server") == nil {
		t.Fatalf("session %q routing %s", s.ID, s.Routing())
	}

	dctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	got, err := s.Call(dctx, "add", map[string]any{"a": 40, "b": int8(2)})
	if err != nil || got != int64(42) {
		t.Fatalf("add = %v, %v", got, err)
	}
	call := ss.nextRequest(t, session.KindCall).(*session.Call)
	if call.Session != s.ID || call.Timeout <= 0 || call.Timeout > time.Hour {
		t.Errorf("the call went out as %+v; want the session and the deadline", call)
	}
	if got, err := s.Call(ctx, "setLevel", map[string]any{"level": 0.5}); err != nil || got != nil {
		t.Errorf("setLevel = %v, %v", got, err)
	}
	for _, c := range []struct {
		method string
		args   map[string]any
		code   session.Code
		want   string
	}{
		{"nope", nil, session.CodeUnknownMethod, `call example.echo.nope: service example.echo has no method "nope" (methods: echo, add, stats, sleep, fail, setLevel)`},
		{"add", map[string]any{"a": "x", "b": 1}, session.CodeInvalidArgument, `call example.echo.add: services: encode args.a: want int, got string "x"`},
		{"add", map[string]any{"a": 1}, session.CodeInvalidArgument, `missing argument`},
		{"fail", map[string]any{"mode": "error"}, session.CodeApplication, `call example.echo.fail: service example.echo: call fail: asked to fail`},
	} {
		_, err := s.Call(ctx, c.method, c.args)
		if !errors.As(err, &ce) || ce.Code != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s(%v) = %v; want code %v and %q", c.method, c.args, err, c.code, c.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m := ss.nextRequest(t, session.KindCloseSession).(*session.CloseSession); m.Session != s.ID {
		t.Errorf("closed %q", m.Session)
	}
	if _, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); !errors.Is(err, client.ErrSessionEnded) || errors.Is(err, client.ErrConnectionLost) {
		t.Errorf("Call after Close = %v", err)
	}
	s.Close() // idempotent
}

// A caller that gives up cancels the call on the server.
func TestCallCancel(t *testing.T) {
	ss := newSessionServer(t, func(n int, wc wire.Conn, m session.Message) bool {
		c, ok := m.(*session.Call)
		return ok && c.Method == "sleep" // never answered
	})
	c := sessionClient(t, ss)
	s, err := c.StartSession(ctxGuard(t), "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Call(ctx, "sleep", map[string]any{"ms": 1000})
		errc <- err
	}()
	call := ss.nextRequest(t, session.KindCall).(*session.Call)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Call = %v", err)
	}
	if m := ss.nextRequest(t, session.KindCancel).(*session.Cancel); m.Target != call.ID {
		t.Fatalf("Cancel of %d, want %d", m.Target, call.ID)
	}
}

// The connection breaks: the pending call fails saying so, the session
// ends with the connection, and the reconnected client starts new ones.
func TestSessionConnectionLost(t *testing.T) {
	ss := newSessionServer(t, func(n int, wc wire.Conn, m session.Message) bool {
		if c, ok := m.(*session.Call); ok && c.Method == "sleep" && n == 1 {
			wc.Close()
			return true
		}
		return false
	})
	c := sessionClient(t, ss)
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := s.Watch(ctx, "meter.level")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Call(ctx, "sleep", map[string]any{"ms": 1})
	if !errors.Is(err, client.ErrConnectionLost) || !strings.Contains(err.Error(), "call example.echo.sleep: no answer: the connection to the server was lost") ||
		!strings.Contains(err.Error(), "the session ended with the connection") {
		t.Fatalf("pending call = %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(guard):
		t.Fatal("the session did not end with its connection")
	}
	if err := s.Err(); !errors.Is(err, client.ErrSessionEnded) || !errors.Is(err, client.ErrConnectionLost) ||
		!strings.Contains(err.Error(), "sessions without a resume stream end with their connection") {
		t.Fatalf("Err() = %v", err)
	}
	if _, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); !errors.Is(err, client.ErrSessionEnded) {
		t.Fatalf("Call after the loss = %v", err)
	}
	if _, err := s.Subscribe(ctx); !errors.Is(err, client.ErrSessionEnded) {
		t.Fatalf("Subscribe after the loss = %v", err)
	}
	for range events { // closed with the session
	}
	for dc := range data { // at most the snapshot, then closed
		if !dc.Snapshot {
			t.Errorf("a change after the connection broke: %+v", dc)
		}
	}
	// The client reconnects by itself; a new session works there.
	s2, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Call(ctx, "add", map[string]any{"a": 2, "b": 3}); err != nil || got != int64(5) {
		t.Fatalf("add on the new connection = %v, %v", got, err)
	}
	if ss.accepts.Load() != 2 {
		t.Errorf("%d connections, want 2", ss.accepts.Load())
	}
}

func argsOf(i int64) []byte { return binary.AppendVarint(nil, i) }

// A subscriber that reads late gets the buffered events, in order, and gap
// markers counting the rest; the server's own losses are passed on.
func TestSubscribeSlowReader(t *testing.T) {
	ss := newSessionServer(t, nil)
	c := sessionClient(t, ss)
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(ctx, "sleeping")
	if err != nil {
		t.Fatal(err)
	}
	wc := ss.conn(1)
	const total = 3 * client.EventBuffer
	for i := range total {
		if i == 10 {
			send(wc, &session.EventsLost{Session: s.ID, Count: 5})
		}
		send(wc, &session.Event{Session: s.ID, Name: "sleeping", Args: argsOf(int64(i))})
		send(wc, &session.Event{Session: s.ID, Name: "levelChanged", Args: make([]byte, 8)}) // not subscribed
	}
	ping(t, c) // the reader handled everything before the pong
	got, lost, last := 0, uint64(0), int64(-1)
	for uint64(got)+lost < total+5 {
		select {
		case ev := <-ch:
			if ev.Lost > 0 {
				lost += ev.Lost
				continue
			}
			v := ev.Args["ms"].(int64)
			if ev.Name != "sleeping" || v <= last || ev.Time.IsZero() {
				t.Fatalf("event %+v after %d", ev, last)
			}
			last = v
			got++
		case <-time.After(guard):
			t.Fatalf("stuck after %d events and %d lost", got, lost)
		}
	}
	if uint64(got)+lost != total+5 || lost <= 5 {
		t.Fatalf("%d events and %d lost; want %d in all", got, lost, total+5)
	}
}

func floatBytes(f float64) []byte { return binary.LittleEndian.AppendUint64(nil, math.Float64bits(f)) }

// A watcher that reads late gets the snapshot, then the latest values.
func TestWatchSlowReader(t *testing.T) {
	ss := newSessionServer(t, nil)
	c := sessionClient(t, ss)
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	w := ss.nextRequest(t, session.KindWatch).(*session.Watch)
	wc := ss.conn(1)
	for i := 1; i <= 1000; i++ {
		send(wc, &session.DataChange{Session: s.ID, Watch: w.ID, Path: "meter.level", Value: floatBytes(float64(i))})
	}
	send(wc, &session.DataChange{Session: s.ID, Watch: w.ID, Path: "meter.calls", Value: binary.AppendVarint(nil, 5)})
	meter, _ := services.AppendValue(nil, echoDesc.Data.Lookup("meter").Type, map[string]any{"level": 2.0, "calls": 6})
	send(wc, &session.DataChange{Session: s.ID, Watch: w.ID, Path: "meter", Value: meter})
	send(wc, &session.DataChange{Session: s.ID, Watch: w.ID, Path: "meter.level", Value: floatBytes(3)})
	ping(t, c)

	// The first value is the snapshot: the whole tree, as it was when the
	// reader's watch delivered it (changes that came before are in it).
	first := <-ch
	root, ok := first.Value.(map[string]any)
	if !first.Snapshot || first.Path != "" || !ok || first.Type.Kind != servicefile.Struct || first.Type.Field("meter") == nil {
		t.Fatalf("snapshot %+v", first)
	}
	mirror := map[string]any{}
	for k, v := range root["meter"].(map[string]any) {
		mirror[k] = v
	}
	root["meter"] = "mine now" // the reader owns what it got
	for n := 0; !reflect.DeepEqual(mirror, map[string]any{"level": 3.0, "calls": int64(6)}); n++ {
		if n > 10 {
			t.Fatalf("too many changes; state %v", mirror)
		}
		dc := <-ch
		switch {
		case dc.Snapshot:
			t.Fatalf("a second snapshot %+v", dc)
		case dc.Path == "meter":
			mirror = dc.Value.(map[string]any)
		case dc.Path == "":
			mirror = dc.Value.(map[string]any)["meter"].(map[string]any)
		case strings.HasPrefix(dc.Path, "meter."):
			mirror[strings.TrimPrefix(dc.Path, "meter.")] = dc.Value
		default:
			t.Fatalf("change %+v", dc)
		}
		if dc.Type == nil {
			t.Fatalf("change without a type: %+v", dc)
		}
	}
}

// Close of a session ends its channels; Close of the client leaves no
// goroutine behind.
func TestSessionCloseEndsChannels(t *testing.T) {
	ss := newSessionServer(t, nil)
	rec := newRecorder()
	c := dial(t, config(ss.fakeServer, tcpBearer(t), rec))
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Subscribe(ctx, "levelChanged")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `no event "nope" (events: sleeping, levelChanged)`) {
		t.Errorf("Subscribe(nope) = %v", err)
	}
	if _, err := s.Watch(ctx, "meter.nope"); err == nil || !strings.Contains(err.Error(), `no runtime data "meter.nope"`) {
		t.Errorf("Watch(meter.nope) = %v", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	data, err := s.Watch(wctx, "meter")
	if err != nil {
		t.Fatal(err)
	}
	<-data // the snapshot
	stopWatch()
	for range data {
	}
	if m := ss.nextRequest(t, session.KindStop).(*session.Stop); m.Session != s.ID {
		t.Errorf("Stop %+v", m)
	}
	s.Close()
	for range events {
	}
	s2, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Subscribe(ctx); err != nil { // left open: Close of the client ends it
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Err(); !errors.Is(err, client.ErrSessionEnded) {
		t.Errorf("a session outlived Close: %v", err)
	}
	checkClosed(t, c)
	if _, err := c.StartSession(ctx, "example.echo"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("StartSession after Close = %v", err)
	}
}

// A routing document the client cannot use fails the start with a message
// that says what is wrong, and the session is closed on the server.
func TestStartSessionBadRouting(t *testing.T) {
	for _, c := range []struct {
		name string
		doc  func(id string) []byte
		want string
	}{
		{"not XML", func(string) []byte { return []byte("<routing") }, "start session with example.echo: the server sent a routing document this client cannot use:\nrouting document of session bad1:1: "},
		{"another session", func(string) []byte { return serverDoc("other", "example.echo") }, `start session with example.echo: the server sent the routing document of session "other" of service "example.echo" for session "bad2" of service "example.echo"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := "bad1"
			if c.name == "another session" {
				id = "bad2"
			}
			ss := newSessionServer(t, func(_ int, wc wire.Conn, m session.Message) bool {
				if st, ok := m.(*session.StartSession); ok {
					send(wc, &session.SessionStarted{ID: st.ID, Session: id, Routing: c.doc(id)})
					return true
				}
				return false
			})
			c0 := sessionClient(t, ss)
			ctx := ctxGuard(t)
			_, err := c0.StartSession(ctx, "example.echo")
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != session.CodeServiceFault || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("StartSession: %v\nwant prefix: %s", err, c.want)
			}
			for {
				select {
				case m := <-ss.requests:
					if cl, ok := m.(*session.CloseSession); ok {
						if cl.Session != id {
							t.Fatalf("closed session %q, want %q", cl.Session, id)
						}
						return
					}
				case <-ctx.Done():
					t.Fatal("the client did not close the session it cannot use")
				}
			}
		})
	}
}
