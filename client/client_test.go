package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bearers/udp"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/wire"
)

// guard bounds every wait in these tests. It only keeps a broken client from
// hanging the run; nothing here asserts how long anything takes.
const guard = 10 * time.Second

// quiet is a ping interval long enough that no keepalive ping is sent
// while a test runs.
const quiet = 60_000

// ---- recording the client's states ----

type event struct {
	state client.State
	err   error
}

func (e event) String() string {
	if e.err != nil {
		return fmt.Sprintf("%v(%v)", e.state, e.err)
	}
	return e.state.String()
}

// recorder collects OnState calls.
type recorder struct {
	mu      sync.Mutex
	events  []event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) onState(s client.State, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{s, err})
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

func (r *recorder) states() []client.State {
	var out []client.State
	for _, e := range r.snapshot() {
		out = append(out, e.state)
	}
	return out
}

// waitFor waits until cond holds for the events recorded so far.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]event) bool) {
	t.Helper()
	timeout := time.After(guard)
	for {
		r.mu.Lock()
		ok, ch := cond(r.events), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("gave up waiting for %s; states: %v", what, r.snapshot())
		}
	}
}

// count returns how many times the sequence seq occurs in a row in events,
// counting non-overlapping occurrences.
func count(events []event, seq ...client.State) int {
	n := 0
	for i := 0; i+len(seq) <= len(events); {
		match := true
		for j, s := range seq {
			if events[i+j].state != s {
				match = false
				break
			}
		}
		if match {
			n++
			i += len(seq)
		} else {
			i++
		}
	}
	return n
}

func sameStates(got []client.State, want ...client.State) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// ---- fake servers ----

// fakeServer accepts connections and runs handle for each one in its own
// goroutine, with n counting accepted connections from 1. The connection is
// closed when handle returns and when the test ends.
type fakeServer struct {
	t       *testing.T
	ep      bearers.Endpoint
	accepts atomic.Int32
	hellos  chan *wire.Hello
	pings   chan *wire.Ping
	closes  chan *wire.Close

	mu     sync.Mutex
	conns  []wire.Conn
	wg     sync.WaitGroup
	handle func(s *fakeServer, n int, wc wire.Conn)
}

func (s *fakeServer) run(accept func() (wire.Conn, error), stop func()) {
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			wc, err := accept()
			if err != nil {
				return
			}
			n := int(s.accepts.Add(1))
			s.mu.Lock()
			s.conns = append(s.conns, wc)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer wc.Close()
				s.handle(s, n, wc)
			}()
		}
	}()
	s.t.Cleanup(func() {
		stop()
		<-acceptDone
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

func newServer(t *testing.T, handle func(s *fakeServer, n int, wc wire.Conn)) *fakeServer {
	return &fakeServer{t: t, handle: handle,
		hellos: make(chan *wire.Hello, 64), pings: make(chan *wire.Ping, 64), closes: make(chan *wire.Close, 64)}
}

// newTCPServer listens on 127.0.0.1 with a plain net.Listener.
func newTCPServer(t *testing.T, handle func(s *fakeServer, n int, wc wire.Conn)) *fakeServer {
	t.Helper()
	s := newServer(t, handle)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ep = bearers.MustParseEndpoint("tcp://127.0.0.1:0").WithAddr(ln.Addr())
	s.run(func() (wire.Conn, error) {
		c, err := ln.Accept()
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, 0), nil
	}, func() { ln.Close() })
	return s
}

// newUDPServer listens on 127.0.0.1 with the udp bearer: one accepted Conn
// per client address.
func newUDPServer(t *testing.T, handle func(s *fakeServer, n int, wc wire.Conn)) *fakeServer {
	t.Helper()
	s := newServer(t, handle)
	b, err := udp.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := b.Listen(ctx, bearers.MustParseEndpoint("udp://127.0.0.1:0"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s.ep = ln.Endpoint().WithAddr(ln.Addr())
	s.run(func() (wire.Conn, error) {
		c, err := ln.Accept(ctx)
		if err != nil {
			return nil, err
		}
		return wire.NewDatagramConn(c, wire.MaxDatagramPayload), nil
	}, func() { cancel(); ln.Close() })
	return s
}

// hello reads the next message, which must be a Hello, and records it.
func (s *fakeServer) hello(wc wire.Conn) *wire.Hello {
	m, err := wc.ReadMessage()
	if err != nil {
		return nil
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		s.t.Errorf("fake server: first message %T, want Hello", m)
		return nil
	}
	record(s.hellos, h)
	return h
}

func welcome(wc wire.Conn, h *wire.Hello, pingMillis uint32) error {
	return wc.WriteMessage(&wire.Welcome{Version: wire.Version, ServerID: "fake-server", ClientID: h.ClientID, PingIntervalMillis: pingMillis})
}

// serve plays a registered server: it answers every Ping, records Pings
// with a non-zero id (the client's own; keepalives have id 0) and Closes,
// and returns when the connection ends.
func (s *fakeServer) serve(wc wire.Conn) {
	for {
		m, err := wc.ReadMessage()
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *wire.Ping:
			if m.ID != 0 {
				record(s.pings, m)
			}
			if err := wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano}); err != nil {
				return
			}
		case *wire.Close:
			record(s.closes, m)
			return
		}
	}
}

// record keeps m for the test if there is room. It never blocks, so that a
// misbehaving client cannot wedge a handler (and with it the cleanup).
func record[M any](ch chan M, m M) {
	select {
	case ch <- m:
	default:
	}
}

// hold reads and ignores everything until the connection ends.
func hold(wc wire.Conn) {
	for {
		if _, err := wc.ReadMessage(); err != nil {
			return
		}
	}
}

// register answers the Hello with Welcome and serves the connection.
func register(s *fakeServer, _ int, wc wire.Conn) {
	h := s.hello(wc)
	if h == nil || welcome(wc, h, quiet) != nil {
		return
	}
	s.serve(wc)
}

// ---- the client side ----

func tcpBearer(t *testing.T) bearers.Bearer {
	t.Helper()
	b, err := tcp.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func udpBearer(t *testing.T) bearers.Bearer {
	t.Helper()
	b, err := udp.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// config is a client of a fake server that speaks the protocol by hand:
// registration, pings and sessions on the connection, without resume
// streams (those are tested against the real server, resume_test.go).
func config(s *fakeServer, b bearers.Bearer, rec *recorder) client.Config {
	return client.Config{
		NoResume:            true,
		Server:              s.ep,
		Bearer:              b,
		ClientID:            uuid.New(),
		Token:               "secret-token",
		Name:                "test-client",
		RegistrationTimeout: guard,
		RetryMin:            time.Millisecond,
		RetryMax:            10 * time.Millisecond,
		OnState:             rec.onState,
	}
}

func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ping(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	rtt, err := c.Ping(ctx)
	if err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if rtt <= 0 {
		t.Fatalf("Ping returned round trip %v", rtt)
	}
}

func nextHello(t *testing.T, s *fakeServer) *wire.Hello {
	t.Helper()
	select {
	case h := <-s.hellos:
		return h
	case <-time.After(guard):
		t.Fatal("the fake server got no Hello")
		return nil
	}
}

// ---- tests ----

func TestDialNeedsBearerAndClientID(t *testing.T) {
	ep := bearers.MustParseEndpoint("tcp://127.0.0.1:1")
	if _, err := client.Dial(context.Background(), client.Config{Server: ep, ClientID: uuid.New()}); err == nil ||
		!strings.Contains(err.Error(), "no bearer") || !strings.Contains(err.Error(), "tcp://127.0.0.1:1") {
		t.Errorf("Dial without a bearer = %v", err)
	}
	if _, err := client.Dial(context.Background(), client.Config{Server: ep, Bearer: tcpBearer(t)}); err == nil ||
		!strings.Contains(err.Error(), "no client id") {
		t.Errorf("Dial without a client id = %v", err)
	}
}

func TestRegistration(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(*testing.T, func(*fakeServer, int, wire.Conn)) *fakeServer
		bearer func(*testing.T) bearers.Bearer
	}{
		{"tcp", newTCPServer, tcpBearer},
		{"udp", newUDPServer, udpBearer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.server(t, register)
			rec := newRecorder()
			cfg := config(s, tc.bearer(t), rec)
			c := dial(t, cfg)

			if got := rec.states(); !sameStates(got, client.Connecting, client.Registration, client.Connected) {
				t.Errorf("OnState saw %v; want [Connecting Registration Connected]", rec.snapshot())
			}
			for _, e := range rec.snapshot() {
				if e.err != nil {
					t.Errorf("OnState(%v) with error %v on a clean registration", e.state, e.err)
				}
			}
			if st := c.State(); st != client.Connected {
				t.Errorf("State() = %v after Dial", st)
			}
			if id := c.ServerID(); id != "fake-server" {
				t.Errorf("ServerID() = %q, want the Welcome's fake-server", id)
			}
			h := nextHello(t, s)
			if uuid.UUID(h.ClientID) != cfg.ClientID || h.Token != cfg.Token || h.ClientName != cfg.Name {
				t.Errorf("Hello carried client id %s, token %q, name %q; want %s, %q, %q",
					uuid.UUID(h.ClientID), h.Token, h.ClientName, cfg.ClientID, cfg.Token, cfg.Name)
			}
			if h.MinVersion > wire.Version || h.MaxVersion < wire.Version {
				t.Errorf("Hello offered versions %d..%d, which excludes %d", h.MinVersion, h.MaxVersion, wire.Version)
			}
			ping(t, c)
			if n := s.accepts.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
		})
	}
}

func TestRejectPermanent(t *testing.T) {
	for _, rej := range []wire.Reject{
		{Code: wire.RejectAuth, Message: "bad token"},
		{Code: wire.RejectVersion, Message: "speak v9"},
		{Code: 42, Message: "a code from the future"}, // unknown codes: act on Retryable
	} {
		t.Run(rej.Code.String(), func(t *testing.T) {
			s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
				if s.hello(wc) != nil {
					wc.WriteMessage(&rej)
				}
			})
			rec := newRecorder()
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			c, err := client.Dial(ctx, config(s, tcpBearer(t), rec))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded against a server that rejects")
			}
			var re *client.RejectError
			if !errors.As(err, &re) {
				t.Fatalf("Dial = %v (%T); want a *client.RejectError", err, err)
			}
			if re.Code != rej.Code || re.Message != rej.Message || re.Retryable {
				t.Errorf("RejectError = %+v; want code %v, message %q, not retryable", re, rej.Code, rej.Message)
			}
			if !strings.Contains(err.Error(), rej.Message) || !strings.Contains(err.Error(), rej.Code.String()) {
				t.Errorf("error %q does not tell the code and the server's message", err)
			}
			// Dial has returned: nothing will ever try again.
			if n := s.accepts.Load(); n != 1 {
				t.Errorf("server accepted %d connections; a permanent rejection must not be retried", n)
			}
			ev := rec.snapshot()
			if !sameStates(rec.states(), client.Connecting, client.Registration, client.Closed) || !errors.As(ev[len(ev)-1].err, &re) {
				t.Errorf("OnState saw %v; want [Connecting Registration Closed(reject)]", ev)
			}
		})
	}
}

func TestRejectRetryable(t *testing.T) {
	const retryAfter = 50 * time.Millisecond
	rejectedAt, secondAt := make(chan time.Time, 1), make(chan time.Time, 1)
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		if n == 2 {
			secondAt <- time.Now()
		}
		h := s.hello(wc)
		if h == nil {
			return
		}
		if n == 1 {
			rejectedAt <- time.Now()
			wc.WriteMessage(&wire.Reject{Code: wire.RejectBusy, Message: "full", Retryable: true,
				RetryAfterMillis: uint32(retryAfter / time.Millisecond)})
			return
		}
		if welcome(wc, h, quiet) == nil {
			s.serve(wc)
		}
	})
	rec := newRecorder()
	cfg := config(s, tcpBearer(t), rec)
	c := dial(t, cfg)
	ping(t, c)

	if n := s.accepts.Load(); n != 2 {
		t.Errorf("server accepted %d connections, want 2 (rejected, then welcomed)", n)
	}
	want := []client.State{client.Connecting, client.Registration, client.Connecting, client.Registration, client.Connected}
	ev := rec.snapshot()
	var re *client.RejectError
	if !sameStates(rec.states(), want...) || !errors.As(ev[2].err, &re) || re.Code != wire.RejectBusy || !re.Retryable || re.RetryAfter != retryAfter {
		t.Fatalf("OnState saw %v; want %v with the busy RejectError (retry after %v) on the fall back", ev, want, retryAfter)
	}
	for _, h := range []*wire.Hello{nextHello(t, s), nextHello(t, s)} {
		if uuid.UUID(h.ClientID) != cfg.ClientID {
			t.Errorf("a retry changed the client id to %s", uuid.UUID(h.ClientID))
		}
	}
	// The client honours retry_after_ms (PROTOCOL.md section 6). A lower
	// bound only: it cannot be met early, however slow the machine.
	if gap := (<-secondAt).Sub(<-rejectedAt); gap < retryAfter {
		t.Errorf("the client retried %v after the Reject; the server asked for %v", gap, retryAfter)
	}
}

func TestRegistrationTimeout(t *testing.T) {
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		s.hello(wc)
		hold(wc) // never answer
	})
	rec := newRecorder()
	cfg := config(s, tcpBearer(t), rec)
	cfg.RegistrationTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	// The caller gives up once the first attempt has timed out and the
	// client is back to Connecting.
	cfg.OnState = func(st client.State, err error) {
		rec.onState(st, err)
		if st == client.Connecting && err != nil {
			cancel()
		}
	}
	c, err := client.Dial(ctx, cfg)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded against a server that never answers")
	}
	if !strings.Contains(err.Error(), "registration timed out") {
		t.Errorf("Dial = %v; want it to say the registration timed out", err)
	}
	ev := rec.snapshot()
	want := []client.State{client.Connecting, client.Registration, client.Connecting, client.Closed}
	if !sameStates(rec.states(), want...) || ev[2].err == nil || !strings.Contains(ev[2].err.Error(), "registration timed out") {
		t.Errorf("OnState saw %v; want %v, falling back because the registration timed out", ev, want)
	}
	if n := s.accepts.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}
}

// A Welcome for another client id is not a registration.
func TestWelcomeForAnotherClient(t *testing.T) {
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		if h := s.hello(wc); h != nil {
			h2 := *h
			h2.ClientID[0] ^= 0xff
			welcome(wc, &h2, quiet)
			hold(wc)
		}
	})
	rec := newRecorder()
	cfg := config(s, tcpBearer(t), rec)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	cfg.OnState = func(st client.State, err error) {
		rec.onState(st, err)
		if st == client.Connecting && err != nil {
			cancel()
		}
	}
	c, err := client.Dial(ctx, cfg)
	if err == nil {
		c.Close()
		t.Fatal("Dial accepted a Welcome for another client id")
	}
	if !strings.Contains(err.Error(), "welcomed client id") || !strings.Contains(err.Error(), cfg.ClientID.String()) {
		t.Errorf("Dial = %v; want it to name the client id mismatch", err)
	}
}

func TestPing(t *testing.T) {
	const unanswered = 2 // the server never answers Ping 2
	serverPinged := make(chan *wire.Pong, 1)
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		h := s.hello(wc)
		if h == nil || welcome(wc, h, quiet) != nil {
			return
		}
		// The server may ping too; the client must answer.
		if err := wc.WriteMessage(&wire.Ping{ID: 77, SentUnixNano: 1234}); err != nil {
			return
		}
		for {
			m, err := wc.ReadMessage()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *wire.Pong:
				record(serverPinged, m)
			case *wire.Ping:
				record(s.pings, m)
				if m.ID != unanswered {
					wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
				}
			}
		}
	})
	c := dial(t, config(s, tcpBearer(t), newRecorder()))

	select {
	case p := <-serverPinged:
		if p.ID != 77 || p.SentUnixNano != 1234 {
			t.Errorf("client answered the server's Ping{77, 1234} with %+v", p)
		}
	case <-time.After(guard):
		t.Fatal("the client did not answer the server's Ping")
	}

	ping(t, c)
	if p := <-s.pings; p.ID != 1 || p.SentUnixNano == 0 {
		t.Errorf("first Ping the server saw: %+v; want id 1 with a send time", p)
	}

	// An unanswered Ping ends with its context, and says so.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.pings // the server has Ping 2 and will not answer it
		cancel()
	}()
	if _, err := c.Ping(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("unanswered Ping = %v; want a cancellation saying there was no answer", err)
	}
	if st := c.State(); st != client.Connected {
		t.Errorf("an unanswered Ping changed the state to %v", st)
	}

	// Concurrent Pings each get their own id and their own answer.
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), guard)
			defer cancel()
			if _, err := c.Ping(ctx); err != nil {
				t.Errorf("concurrent Ping: %v", err)
			}
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for range n {
		seen[(<-s.pings).ID] = true
	}
	for id := uint64(3); id < 3+n; id++ {
		if !seen[id] {
			t.Errorf("concurrent Pings: the server saw ids %v; want 3..%d once each", seen, 2+n)
			break
		}
	}
}

// A server connection that ends after registration sends the client back to
// Connecting; it registers again by itself and Ping works again.
func TestReconnect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		end     func(wc wire.Conn) // how the server ends the first connection
		wantErr string             // in the error OnState gets with Connecting
	}{
		{"connection closed", func(wc wire.Conn) { wc.Close() }, ""},
		{"Close message", func(wc wire.Conn) {
			wc.WriteMessage(&wire.Close{Code: wire.CloseGoingAway, Reason: "restarting"})
		}, "server closed the connection: restarting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endFirst := make(chan struct{})
			s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
				h := s.hello(wc)
				if h == nil || welcome(wc, h, quiet) != nil {
					return
				}
				if n == 1 {
					go s.serve(wc)
					<-endFirst
					tc.end(wc)
					return
				}
				s.serve(wc)
			})
			rec := newRecorder()
			cfg := config(s, tcpBearer(t), rec)
			c := dial(t, cfg)
			ping(t, c)

			close(endFirst)
			rec.waitFor(t, "re-registration", func(ev []event) bool {
				return count(ev, client.Connecting, client.Registration, client.Connected) == 2
			})
			ev := rec.snapshot()
			want := []client.State{client.Connecting, client.Registration, client.Connected,
				client.Connecting, client.Registration, client.Connected}
			if !sameStates(rec.states(), want...) || ev[3].err == nil || !strings.Contains(ev[3].err.Error(), tc.wantErr) {
				t.Fatalf("OnState saw %v; want %v, falling back with an error saying %q", ev, want, tc.wantErr)
			}
			ping(t, c)
			if n := s.accepts.Load(); n != 2 {
				t.Errorf("server accepted %d connections, want 2", n)
			}
			nextHello(t, s)
			if h := nextHello(t, s); uuid.UUID(h.ClientID) != cfg.ClientID || h.Token != cfg.Token {
				t.Errorf("second Hello: client id %s, token %q; want the same credentials", uuid.UUID(h.ClientID), h.Token)
			}
		})
	}
}

// The client pings every ping_interval_ms and treats three silent intervals
// as a dead path: it goes back to Connecting and registers again.
func TestKeepalive(t *testing.T) {
	var keepalives atomic.Int32
	var silent atomic.Bool
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		h := s.hello(wc)
		if h == nil {
			return
		}
		if silent.Load() { // the connection after the dead one: a normal server
			if welcome(wc, h, quiet) == nil {
				s.serve(wc)
			}
			return
		}
		if welcome(wc, h, 50) != nil {
			return
		}
		for {
			m, err := wc.ReadMessage()
			if err != nil {
				return
			}
			if p, ok := m.(*wire.Ping); ok && p.ID == 0 {
				keepalives.Add(1)
				if !silent.Load() {
					wc.WriteMessage(&wire.Pong{ID: 0, SentUnixNano: p.SentUnixNano})
				}
			}
		}
	})
	rec := newRecorder()
	c := dial(t, config(s, tcpBearer(t), rec))
	deadline := time.Now().Add(guard)
	for keepalives.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the server got %d keepalive Pings, want 3", keepalives.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}

	mark := len(rec.snapshot())
	silent.Store(true) // the path dies
	deadPath := func(ev []event) int {
		for i := mark; i < len(ev); i++ {
			if e := ev[i]; e.state == client.Connecting && e.err != nil && strings.Contains(e.err.Error(), "no traffic from the server") {
				return i
			}
		}
		return -1
	}
	rec.waitFor(t, "dead path detection and re-registration", func(ev []event) bool {
		i := deadPath(ev)
		return i >= 0 && ev[len(ev)-1].state == client.Connected
	})
	ping(t, c)
}

// Over udp the first Hello is lost: the client retransmits it and registers.
// The first Ping is lost too: the client retransmits it.
func TestUDPRetransmits(t *testing.T) {
	var droppedPing atomic.Bool
	s := newUDPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		first := s.hello(wc) // dropped
		if first == nil {
			return
		}
		second := s.hello(wc)
		if second == nil || welcome(wc, second, quiet) != nil {
			return
		}
		for {
			m, err := wc.ReadMessage()
			if err != nil {
				return
			}
			switch m := m.(type) {
			case *wire.Ping:
				if m.ID != 0 && droppedPing.CompareAndSwap(false, true) {
					continue // drop the first
				}
				record(s.pings, m)
				wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
			case *wire.Close:
				record(s.closes, m)
				return
			}
		}
	})
	rec := newRecorder()
	cfg := config(s, udpBearer(t), rec)
	c := dial(t, cfg)
	first, second := nextHello(t, s), nextHello(t, s)
	if *first != *second || uuid.UUID(first.ClientID) != cfg.ClientID {
		t.Errorf("retransmitted Hello %v differs from the first %v", second, first)
	}
	if got := rec.states(); !sameStates(got, client.Connecting, client.Registration, client.Connected) {
		t.Errorf("OnState saw %v; a lost Hello is not a new attempt", rec.snapshot())
	}
	ping(t, c)
	if !droppedPing.Load() {
		t.Error("the server never saw (and dropped) a Ping")
	}
	if p := <-s.pings; p.ID != 1 {
		t.Errorf("the server answered Ping %d, want the retransmitted 1", p.ID)
	}
	if n := s.accepts.Load(); n != 1 {
		t.Errorf("server saw %d associations, want 1", n)
	}
	c.Close()
	select {
	case m := <-s.closes:
		if m.Code != wire.CloseNormal {
			t.Errorf("goodbye over udp: %+v", m)
		}
	case <-time.After(guard):
		t.Error("no Close reached the server")
	}
}

// clientGoroutines lists the goroutines running code of package client.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/bearerkit/connect/client.") {
			out = append(out, g)
		}
	}
	return out
}

func waitNoClientGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		gs := clientGoroutines()
		if len(gs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of package client still run after Close:\n%s", len(gs), strings.Join(gs, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkClosed checks a client whose Close has returned.
func checkClosed(t *testing.T, c *client.Client) {
	t.Helper()
	if st := c.State(); st != client.Closed {
		t.Errorf("State() = %v after Close", st)
	}
	if _, err := c.Ping(context.Background()); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Ping after Close = %v; want ErrClosed", err)
	}
	for i := range 2 {
		if err := c.Close(); err != nil {
			t.Errorf("Close again (#%d) = %v", i+2, err)
		}
	}
	waitNoClientGoroutines(t)
}

func TestClose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(*testing.T, func(*fakeServer, int, wire.Conn)) *fakeServer
		bearer func(*testing.T) bearers.Bearer
	}{
		{"tcp", newTCPServer, tcpBearer},
		{"udp", newUDPServer, udpBearer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.server(t, register)
			rec := newRecorder()
			c := dial(t, config(s, tc.bearer(t), rec))
			ping(t, c)

			if err := c.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			select {
			case m := <-s.closes:
				if m.Code != wire.CloseNormal {
					t.Errorf("the client said goodbye with %+v, want CloseNormal", m)
				}
			case <-time.After(guard):
				t.Error("the server got no Close from the client")
			}
			checkClosed(t, c)
			if ev := rec.snapshot(); ev[len(ev)-1].state != client.Closed || count(ev, client.Closed) != 1 {
				t.Errorf("OnState saw %v; want exactly one Closed, at the end", ev)
			}
		})
	}
}

// Close while the client is reconnecting to a server that is gone.
func TestCloseWhileReconnecting(t *testing.T) {
	dropped := make(chan struct{})
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		h := s.hello(wc)
		if h == nil {
			return
		}
		if n == 1 {
			welcome(wc, h, quiet)
			wc.Close()
			close(dropped)
			return
		}
		hold(wc) // never welcome again
	})
	rec := newRecorder()
	cfg := config(s, tcpBearer(t), rec)
	cfg.RegistrationTimeout = 50 * time.Millisecond
	c := dial(t, cfg)
	<-dropped
	rec.waitFor(t, "reconnection attempts", func(ev []event) bool {
		return count(ev, client.Connecting, client.Registration) >= 3
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Ping(ctx); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("Ping while reconnecting = %v; want a not-connected error", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, c)
}

// A permanent rejection while reconnecting ends the client.
func TestRejectWhileReconnecting(t *testing.T) {
	s := newTCPServer(t, func(s *fakeServer, n int, wc wire.Conn) {
		h := s.hello(wc)
		if h == nil {
			return
		}
		if n == 1 {
			welcome(wc, h, quiet) // then close
			return
		}
		wc.WriteMessage(&wire.Reject{Code: wire.RejectAuth, Message: "token revoked"})
	})
	rec := newRecorder()
	c := dial(t, config(s, tcpBearer(t), rec))
	rec.waitFor(t, "Closed", func(ev []event) bool { return ev[len(ev)-1].state == client.Closed })
	ev := rec.snapshot()
	var re *client.RejectError
	if !errors.As(ev[len(ev)-1].err, &re) || re.Code != wire.RejectAuth {
		t.Fatalf("OnState saw %v; want Closed with the auth RejectError", ev)
	}
	_, err := c.Ping(context.Background())
	if !errors.Is(err, client.ErrClosed) || !strings.Contains(err.Error(), "token revoked") {
		t.Errorf("Ping after a permanent rejection = %v; want ErrClosed with the reason", err)
	}
	if n := s.accepts.Load(); n != 2 {
		t.Errorf("server accepted %d connections, want 2", n)
	}
	checkClosed(t, c)
}
