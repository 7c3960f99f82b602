package client_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/faultproxy"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// Reliable direct links on resume streams (direct_resume.go,
// provide_resume.go): a real Provider (the runner) behind a fault-injecting
// proxy on loopback TCP, a real Client, and a fake server built on
// resume.Table that hands the runner its sessions with their link keys.

const ledgerXML = `<service name="t.ledger" version="1.0">
  <method name="append" returns="int"/>
  <method name="hold" returns="int"/>
  <event name="appended"><arg name="n" type="int"/></event>
  <data><value name="count" type="int"/></data>
</service>`

var ledgerDesc = func() *servicefile.Service {
	d, err := servicefile.Parse("ledger.xml", []byte(ledgerXML))
	if err != nil {
		panic(err)
	}
	return d
}()

// ledger appends the next integer to a session's list on each call of
// append, returns the list's length and emits appended(n) for the
// session; hold waits until released (or its context ends).
type ledger struct {
	p       *client.Provider
	holding chan struct{} // a hold call arrived
	release chan int64

	mu    sync.Mutex
	lists map[string][]int64
}

func newLedger() *ledger {
	return &ledger{holding: make(chan struct{}, 1), release: make(chan int64, 1), lists: map[string][]int64{}}
}

func (l *ledger) OpenSession(context.Context, string, string) error { return nil }
func (l *ledger) CloseSession(string, string)                       {}
func (l *ledger) Call(ctx context.Context, sess, method string, _ []byte) ([]byte, error) {
	switch method {
	case "append":
		l.mu.Lock()
		n := int64(len(l.lists[sess]) + 1)
		l.lists[sess] = append(l.lists[sess], n)
		l.mu.Unlock()
		args, err := services.AppendArgs(nil, ledgerDesc.Event("appended").Args, map[string]any{"n": n})
		if err != nil {
			return nil, err
		}
		if err := l.p.Emit("t.ledger", sess, "appended", args); err != nil {
			return nil, err
		}
		count, err := services.AppendValue(nil, ledgerDesc.Data.Type.Field("count").Type, n)
		if err != nil {
			return nil, err
		}
		if err := l.p.SetData("t.ledger", "count", count); err != nil {
			return nil, err
		}
		return services.AppendValue(nil, ledgerDesc.Method("append").Returns, n)
	case "hold":
		l.holding <- struct{}{}
		select {
		case v := <-l.release:
			return services.AppendValue(nil, ledgerDesc.Method("hold").Returns, v)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("no method %s", method)
}

// testLog writes a runner's log to the test's.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log("runner: " + strings.TrimSpace(string(b)))
	return len(b), nil
}

// digest is the SHA-256 of a list of integers.
func digest(list []int64) [32]byte {
	h := sha256.New()
	for _, v := range list {
		binary.Write(h, binary.BigEndian, v)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

func (l *ledger) list(sess string) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int64(nil), l.lists[sess]...)
}

// directRig is the fake server, the runner behind the proxy and a client.
type directRig struct {
	t     *testing.T
	ss    *streamServer
	proxy *faultproxy.Proxy
	addr  string // where the runner listens (the proxy's target)

	mu       sync.Mutex
	runnerSt *resume.Stream                 // the current runner's stream
	opened   map[string]*session.RemoteOpen // sessions, to reopen on a new runner
	waiting  map[uint64]chan session.Message
	nextID   atomic.Uint64
	serverOn atomic.Int64 // calls the server answered (fallback)
	linksDn  chan []string
	provided chan struct{} // a runner's ProvideService answered, its sessions reopened

	runner       *ledger
	runnerResume *resume.Config // the runner's ProviderConfig.LinkResume
	p            *client.Provider
	rc           *client.Client
}

func newDirectRig(t *testing.T) *directRig {
	r := &directRig{t: t, opened: map[string]*session.RemoteOpen{}, waiting: map[uint64]chan session.Message{},
		linksDn: make(chan []string, 64), provided: make(chan struct{}, 4)}
	r.nextID.Store(1 << 40)
	r.ss = newStreamServer(t, nil)
	r.ss.onRequest = r.onRequest
	r.ss.listen(t)
	return r
}

// roundTrip sends a request to the runner and waits for its answer.
func (r *directRig) roundTrip(st *resume.Stream, build func(id uint64) session.Message) session.Message {
	id := r.nextID.Add(1)
	ch := make(chan session.Message, 1)
	r.mu.Lock()
	r.waiting[id] = ch
	r.mu.Unlock()
	streamSend(st, build(id))
	select {
	case m := <-ch:
		return m
	case <-time.After(guard):
		r.t.Error("the runner did not answer")
		return nil
	}
}

func (r *directRig) onRequest(st *resume.Stream, m session.Message) bool {
	r.mu.Lock()
	fromRunner := st == r.runnerSt
	r.mu.Unlock()
	if ps, ok := m.(*session.ProvideService); ok {
		r.mu.Lock()
		r.runnerSt = st
		opens := make([]*session.RemoteOpen, 0, len(r.opened))
		for _, o := range r.opened {
			opens = append(opens, o)
		}
		r.mu.Unlock()
		go func() { // the server reopens its sessions on a runner that comes back
			for _, o := range opens {
				o := *o
				r.roundTrip(st, func(id uint64) session.Message { o.ID = id; return &o })
			}
			streamSend(st, &session.OK{ID: ps.ID})
			r.provided <- struct{}{}
		}()
		return true
	}
	if fromRunner {
		if resp, ok := m.(session.Response); ok {
			r.mu.Lock()
			ch := r.waiting[resp.ResponseTo()]
			delete(r.waiting, resp.ResponseTo())
			r.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		} else if q, ok := m.(session.Request); ok {
			streamSend(st, &session.OK{ID: q.RequestID()})
		}
		return true
	}
	switch m := m.(type) {
	case *session.Describe:
		streamSend(st, &session.Description{ID: m.ID, XML: []byte(ledgerXML)})
	case *session.StartSession:
		sid := uuid.NewString()
		secret := make([]byte, session.SecretSize)
		rand.Read(secret)
		doc, err := routing.Generate(&routing.Document{Session: sid, Service: m.Service, Links: []routing.Link{
			{Name: routing.ServerLinkName, Kind: routing.ServerLink},
			{Name: "reliable", Kind: routing.DirectLink, Bearer: "connect.bearer.tcp", Address: bearers.MustParseEndpoint("tcp://" + r.proxy.Addr()), Token: "tok-" + sid[:8]},
		}, Routes: []routing.Route{
			directRoute(servicefile.MethodResource, "append"),
			directRoute(servicefile.MethodResource, "hold"),
			directRoute(servicefile.EventResource, "appended"),
			directRoute(servicefile.DataResource, "count"),
		}})
		if err != nil {
			r.t.Error(err)
			return true
		}
		open := &session.RemoteOpen{Service: m.Service, Session: sid, Token: "tok-" + sid[:8], Routing: doc, LinkKey: session.DeriveLinkKey(secret, sid)}
		r.mu.Lock()
		r.opened[sid] = open
		runner := r.runnerSt
		r.mu.Unlock()
		go func() {
			o := *open
			r.roundTrip(runner, func(id uint64) session.Message { o.ID = id; return &o })
			streamSend(st, &session.SessionStarted{ID: m.ID, Session: sid, Routing: doc, Secret: secret})
		}()
	case *session.Call: // a fallback through the server: answered -1
		r.serverOn.Add(1)
		v, _ := services.AppendValue(nil, ledgerDesc.Method(m.Method).Returns, int64(-1))
		streamSend(st, &session.Result{ID: m.ID, Value: v})
	case *session.Watch: // the snapshot; the changes come over the link
		v, _ := services.AppendValue(nil, ledgerDesc.Data.Type.Field("count").Type, int64(0))
		streamSend(st, &session.Snapshot{ID: m.ID, Path: m.Path, Value: v})
	case *session.LinksDown:
		record(r.linksDn, m.Links)
		streamSend(st, &session.OK{ID: m.ID})
	default:
		return false
	}
	return true
}

func directRoute(kind servicefile.ResourceKind, name string) routing.Route {
	return routing.Route{Resource: servicefile.Resource{Kind: kind, Name: name}, Link: "reliable", LinkType: servicefile.Direct, Alternative: 1,
		Fallbacks: []routing.Fallback{{Link: routing.ServerLinkName, LinkType: servicefile.Server}}}
}

// startRunner starts a runner (a Provider and its client) listening at
// addr ("127.0.0.1:0" the first time), and the proxy in front of it.
func (r *directRig) startRunner(addr string) {
	t := r.t
	t.Helper()
	b := tcpBearer(t)
	ln, err := b.Listen(context.Background(), bearers.MustParseEndpoint("tcp://"+addr))
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Endpoint().HostPort()
	if r.proxy == nil {
		if r.proxy, err = faultproxy.New(r.addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.proxy.Close() })
	}
	r.runner = newLedger()
	p, err := client.NewProvider(client.ProviderConfig{
		Services:   []client.ProvidedService{{XML: []byte(ledgerXML), Handler: r.runner}},
		Listeners:  []client.ProviderListener{{Listener: ln, Bearer: b.Info()}},
		Logger:     slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		LinkResume: r.runnerResume,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.runner.p = p
	r.p = p
	r.rc = dial(t, streamConfig(t, r.ss, newRecorder()))
	t.Cleanup(func() { p.Close() })
	if err := p.Serve(r.rc); err != nil {
		t.Fatal(err)
	}
	recv(t, r.provided)
}

func (r *directRig) client() *client.Client {
	cfg := streamConfig(r.t, r.ss, newRecorder())
	cfg.LinkBearers = []bearers.Bearer{tcpBearer(r.t)}
	cfg.LinkOpenTimeout = guard
	// Back off little: the test resets the link soon after each resume
	// (by default a stream that fails within RetryMax of attaching backs
	// off up to RetryMax, 5 s for direct links).
	lr := resume.DefaultConfig()
	lr.RetryMin, lr.RetryMax = time.Millisecond, 20*time.Millisecond
	cfg.LinkResume = lr
	return dial(r.t, cfg)
}

func linkStats(s *client.Session, name string) client.LinkStats {
	for _, st := range s.LinkStats() {
		if st.Link == name {
			return st
		}
	}
	return client.LinkStats{}
}

// waitFor polls cond (bounded by guard).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(guard); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestDirectLinkResumes: calls that append 1, 2, 3, … go over a reliable
// direct link while the link is reset 30 times (TCP resets of both sides
// through the proxy) and a call is held in flight across a reset: every
// call is answered exactly once with its number, none goes through the
// server, the events arrive in order without loss or duplicate, the
// runtime data routed over the link (the count) ends at N, the runner's
// list is exactly 1..N, and one stream carries it all.
func TestDirectLinkResumes(t *testing.T) {
	r := newDirectRig(t)
	r.startRunner("127.0.0.1:0")
	c := r.client()
	ctx, cancel := context.WithTimeout(context.Background(), 6*guard)
	defer cancel()
	s, err := c.StartSession(ctx, "t.ledger")
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Subscribe(ctx, "appended")
	if err != nil {
		t.Fatal(err)
	}
	counts, err := s.Watch(ctx, "count")
	if err != nil {
		t.Fatal(err)
	}
	if st := linkStats(s, "reliable"); !st.Open || !st.Resumable || st.Attaches != 1 {
		t.Fatalf("reliable: %+v", st)
	}

	// A call held in flight across a reset completes after the resume.
	held := make(chan error, 1)
	go func() {
		v, err := s.Call(ctx, "hold", nil)
		if err == nil && v != int64(7) {
			err = fmt.Errorf("hold answered %v", v)
		}
		held <- err
	}()
	<-r.runner.holding
	r.proxy.Reset()
	waitFor(t, "the first resume", func() bool { return linkStats(s, "reliable").Attaches >= 2 })
	r.runner.release <- 7
	if err := <-held; err != nil {
		t.Fatalf("the call held across a reset: %v", err)
	}

	// A caller appends without pause while the link is reset.
	var calls atomic.Int64
	stop := make(chan struct{})
	callerErr := make(chan error, 1)
	go func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				callerErr <- nil
				return
			default:
			}
			v, err := s.Call(ctx, "append", nil)
			if err != nil || v != i {
				callerErr <- fmt.Errorf("call %d: %v, %v", i, v, err)
				return
			}
			calls.Store(i)
		}
	}()
	const resets = 30
	for n := 0; n < resets; n++ {
		before := calls.Load()
		waitFor(t, "calls between resets", func() bool { return calls.Load() >= before+3 || len(callerErr) > 0 })
		attaches := linkStats(s, "reliable").Attaches
		r.proxy.Reset()
		waitFor(t, fmt.Sprintf("resume %d", n+1), func() bool { return linkStats(s, "reliable").Attaches > attaches || len(callerErr) > 0 })
	}
	// Roam redials the link at once (a client whose network changed).
	attaches := linkStats(s, "reliable").Attaches
	if n, err := s.Roam(ctx); n != 0 || err != nil { // no datagram link moved
		t.Fatalf("Roam: %d, %v", n, err)
	}
	waitFor(t, "the resume after Roam", func() bool { return linkStats(s, "reliable").Attaches > attaches || len(callerErr) > 0 })
	before := calls.Load()
	waitFor(t, "calls after Roam", func() bool { return calls.Load() >= before+3 || len(callerErr) > 0 })
	close(stop)
	if err := <-callerErr; err != nil {
		t.Fatal(err)
	}
	total := calls.Load()
	for k := int64(1); k <= total; k++ {
		select {
		case ev := <-events:
			if ev.Lost != 0 || ev.Name != "appended" || ev.Args["n"] != k {
				t.Fatalf("event %d: %+v", k, ev)
			}
		case <-ctx.Done():
			t.Fatalf("event %d of %d did not arrive", k, total)
		}
	}
	// Runtime data over the link is coalesced: the values seen never go
	// back, and the last one is the list's length.
	for last := int64(-1); last != total; {
		select {
		case dc := <-counts:
			v := dc.Value.(int64)
			if v < last || v > total {
				t.Fatalf("count %d after %d (total %d)", v, last, total)
			}
			last = v
		case <-ctx.Done():
			t.Fatalf("the count did not reach %d", total)
		}
	}
	want := make([]int64, total)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if got := r.runner.list(s.ID); digest(got) != digest(want) {
		t.Fatalf("the runner's list has %d entries, digest differs from 1..%d", len(got), total)
	}
	st := linkStats(s, "reliable")
	if !st.Open || st.Attaches < resets+3 || st.Calls != uint64(total)+1 {
		t.Fatalf("reliable after %d resets: %+v", resets, st)
	}
	if n := r.serverOn.Load(); n != 0 {
		t.Fatalf("%d calls went through the server", n)
	}
	if notes := s.Notes(); len(notes) != 0 {
		t.Fatalf("notes: %q", notes)
	}
	t.Logf("%d calls, %d events over %d resets; the stream attached %d times", total, total, resets, st.Attaches)
}

// TestDirectLinkRunnerRestart: the runner restarts while the link is
// black-holed; the client's stream comes back to a runner that does not
// know it: the call in flight fails with ErrLinkLost saying why and that
// whether it ran is unknown, the route falls back to the server, and the
// link is reopened on a new stream to the new runner.
func TestDirectLinkRunnerRestart(t *testing.T) {
	r := newDirectRig(t)
	r.startRunner("127.0.0.1:0")
	c := r.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	s, err := c.StartSession(ctx, "t.ledger")
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 3; i++ {
		if v, err := s.Call(ctx, "append", nil); err != nil || v != i {
			t.Fatalf("append %d: %v %v", i, v, err)
		}
	}
	held := make(chan error, 1)
	go func() {
		_, err := s.Call(ctx, "hold", nil)
		held <- err
	}()
	<-r.runner.holding
	r.proxy.Blackhole()
	old := r.p
	old.Close() // its goodbye goes into the black hole
	r.rc.Close()
	r.mu.Lock()
	r.runnerSt = nil
	r.mu.Unlock()
	r.startRunner(r.addr) // the same port, a new process as far as the link knows
	r.proxy.Restore()

	err = <-held
	if !errors.Is(err, client.ErrLinkLost) || !strings.Contains(err.Error(), "the runner does not know it (it restarted)") ||
		!strings.HasSuffix(err.Error(), "whether it ran is unknown") || !errors.Is(err, resume.ErrUnknownSession) {
		t.Fatalf("the call in flight: %v", err)
	}
	t.Logf("the call in flight: %v", err)
	// The server hears the link is down, then up again; calls take the
	// server meanwhile, then the new runner.
	if links := recv(t, r.linksDn); strings.Join(links, ",") != "reliable" {
		t.Fatalf("LinksDown: %q", links)
	}
	waitFor(t, "the link reopened", func() bool {
		st := linkStats(s, "reliable")
		return st.Open && st.Resumable && st.Attaches == 1
	})
	if v, err := s.Call(ctx, "append", nil); err != nil || v != int64(1) {
		t.Fatalf("append on the new runner: %v %v", v, err)
	}
	notes := strings.Join(s.Notes(), "\n")
	if !strings.Contains(notes, "route method append: link reliable lost (its resume stream was lost for good: the runner does not know it (it restarted)") ||
		!strings.Contains(notes, "using server") || !strings.Contains(notes, "link reliable reopened") {
		t.Fatalf("notes:\n%s", notes)
	}
}

// TestDirectLinkStreamExpired: the runner expires a link's stream left
// without a connection for its linger window while the client cannot
// reach it; when the client comes back, the runner answers "expired" with
// what it received, so the call the client sent meanwhile fails saying
// that it did not run; the link falls back and is reopened.
func TestDirectLinkStreamExpired(t *testing.T) {
	r := newDirectRig(t)
	r.runnerResume = resume.DefaultConfig()
	r.runnerResume.Linger = 200 * time.Millisecond
	r.startRunner("127.0.0.1:0")
	c := r.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*guard)
	defer cancel()
	s, err := c.StartSession(ctx, "t.ledger")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Call(ctx, "append", nil); err != nil || v != int64(1) {
		t.Fatalf("append: %v %v", v, err)
	}
	r.proxy.Blackhole()
	res := make(chan error, 1)
	go func() { // its bytes go into the black hole
		_, err := s.Call(ctx, "append", nil)
		res <- err
	}()
	waitFor(t, "the call sent", func() bool { return linkStats(s, "reliable").Calls == 2 })
	r.proxy.Reset()                       // both ends lose the connection; the runner's linger window starts
	time.Sleep(4 * r.runnerResume.Linger) // the client's redials hang in the black hole meanwhile
	r.proxy.Restore()
	err = <-res
	if !errors.Is(err, client.ErrLinkLost) || !errors.Is(err, resume.ErrExpired) ||
		!strings.Contains(err.Error(), "its linger window passed") || !strings.HasSuffix(err.Error(), "the call never reached the runner: it did not run") {
		t.Fatalf("the call sent meanwhile: %v", err)
	}
	t.Logf("the call sent meanwhile: %v", err)
	if got := r.runner.list(s.ID); len(got) != 1 {
		t.Fatalf("the runner ran append %d times", len(got))
	}
	waitFor(t, "the link reopened", func() bool {
		st := linkStats(s, "reliable")
		return st.Open && st.Attaches == 1 && strings.Contains(strings.Join(s.Notes(), "\n"), "link reliable reopened")
	})
	if v, err := s.Call(ctx, "append", nil); err != nil || v != int64(2) {
		t.Fatalf("append after the reopening: %v %v", v, err)
	}
}
