package client_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// ---- a fake server that speaks resume streams ----

// streamServer registers clients, opens and resumes their streams with a
// resume.Table, and answers the session layer in them like
// newSessionServer (with reclaim secrets); onRequest, if set, sees every
// request first and may answer it itself (returning true).
type streamServer struct {
	t   testing.TB
	tbl *resume.Table
	ep  bearers.Endpoint

	window    uint32      // Welcome.PingWindowMillis
	reject    atomic.Bool // refuse registrations (retryable) while set
	onRequest func(st *resume.Stream, m session.Message) bool
	requests  chan session.Message

	mu      sync.Mutex
	conns   []net.Conn
	streams []*resume.Stream
	wg      sync.WaitGroup
	closed  bool
}

func newStreamServer(t testing.TB, cfg *resume.Config) *streamServer {
	t.Helper()
	tbl, err := resume.NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &streamServer{t: t, tbl: tbl, requests: make(chan session.Message, 4096)}
}

// listen serves on a loopback TCP port.
func (ss *streamServer) listen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss.ep = bearers.MustParseEndpoint("tcp://127.0.0.1:0").WithAddr(ln.Addr())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ss.serveConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		ss.close()
	})
}

func (ss *streamServer) close() {
	ss.tbl.Close()
	ss.mu.Lock()
	ss.closed = true
	for _, c := range ss.conns {
		c.Close()
	}
	ss.mu.Unlock()
	ss.wg.Wait()
}

// serveConn registers c and hands it to the table, in a goroutine.
func (ss *streamServer) serveConn(c net.Conn) {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		c.Close()
		return
	}
	ss.conns = append(ss.conns, c)
	ss.wg.Add(1)
	ss.mu.Unlock()
	go func() {
		defer ss.wg.Done()
		wc := wire.NewStreamConn(c, 0)
		m, err := wc.ReadMessage()
		if err != nil {
			c.Close()
			return
		}
		h, ok := m.(*wire.Hello)
		if !ok {
			c.Close()
			return
		}
		if ss.reject.Load() {
			wc.WriteMessage(&wire.Reject{Code: wire.RejectBusy, Message: "busy", Retryable: true})
			c.Close()
			return
		}
		if err := wc.WriteMessage(&wire.Welcome{Version: wire.Version, ServerID: "stream-server", ClientID: h.ClientID,
			PingIntervalMillis: 1000, PingWindowMillis: ss.window}); err != nil {
			c.Close()
			return
		}
		st, isNew, err := ss.tbl.Accept(context.Background(), wc)
		if err != nil || !isNew {
			return
		}
		ss.mu.Lock()
		ss.streams = append(ss.streams, st)
		ss.wg.Add(1)
		ss.mu.Unlock()
		go func() {
			defer ss.wg.Done()
			ss.serveStream(st)
		}()
	}()
}

func (ss *streamServer) serveStream(st *resume.Stream) {
	for {
		b, err := st.Recv(context.Background())
		if err != nil {
			return
		}
		req, err := session.Decode(b)
		if err != nil {
			ss.t.Errorf("stream server: %v", err)
			return
		}
		record(ss.requests, req)
		if ss.onRequest != nil && ss.onRequest(st, req) {
			continue
		}
		if ans := streamAnswer(req); ans != nil {
			streamSend(st, ans)
		}
	}
}

func streamSend(st *resume.Stream, m session.Message) {
	b, err := session.Encode(m)
	if err != nil {
		panic(err)
	}
	st.Send(context.Background(), b)
}

// streamAnswer is answer, with a reclaim secret in SessionStarted.
func streamAnswer(m session.Message) session.Message {
	ans := answer(m)
	if s, ok := ans.(*session.SessionStarted); ok {
		s.Session = uuid.NewString()
		s.Routing = serverDoc(s.Session, "example.echo")
		s.Secret = make([]byte, session.SecretSize)
		rand.Read(s.Secret)
	}
	return ans
}

// breakConns closes every connection: the clients resume on new ones.
func (ss *streamServer) breakConns() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, c := range ss.conns {
		c.Close()
	}
	ss.conns = nil
}

func (ss *streamServer) stream(t *testing.T) *resume.Stream {
	t.Helper()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.streams) == 0 {
		t.Fatal("no stream opened")
	}
	return ss.streams[len(ss.streams)-1]
}

func (ss *streamServer) nStreams() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.streams)
}

func streamConfig(t *testing.T, ss *streamServer, rec *recorder) client.Config {
	return client.Config{
		Server:              ss.ep,
		Bearer:              tcpBearer(t),
		ClientID:            uuid.New(),
		Token:               "secret-token",
		RegistrationTimeout: guard,
		RetryMin:            time.Millisecond,
		RetryMax:            10 * time.Millisecond,
		OnState:             rec.onState,
	}
}

// ---- tests ----

// TestStreamSurvivesBreaks: over a stream bearer the session layer rides
// in a resume stream: calls, including one in flight, go on across many
// connection losses, each request reaches the server exactly once, and the
// stream stays the same.
func TestStreamSurvivesBreaks(t *testing.T) {
	ss := newStreamServer(t, nil)
	inFlight := make(chan *session.Call, 1)
	ss.onRequest = func(st *resume.Stream, m session.Message) bool {
		if c, ok := m.(*session.Call); ok && c.Method == "sleep" {
			inFlight <- c // answered by the test, after a break
			return true
		}
		return false
	}
	ss.listen(t)
	c := dial(t, streamConfig(t, ss, newRecorder()))
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 50; i++ {
		v, err := s.Call(ctx, "add", map[string]any{"a": i, "b": 1000})
		if err != nil || v != i+1000 {
			t.Fatalf("call %d: %v, %v", i, v, err)
		}
		if i%5 == 0 {
			ss.breakConns()
		}
	}
	// A call in flight while the connection breaks completes after the
	// resume.
	res := make(chan error, 1)
	go func() {
		_, err := s.Call(ctx, "sleep", map[string]any{"ms": 1})
		res <- err
	}()
	call := <-inFlight
	ss.breakConns()
	enc, err := services.AppendValue(nil, s.Description().Method("sleep").Returns, "slept")
	if err != nil {
		t.Fatal(err)
	}
	streamSend(ss.stream(t), &session.Result{ID: call.ID, Value: enc})
	if err := <-res; err != nil {
		t.Fatalf("the call in flight: %v", err)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	if n := ss.nStreams(); n != 1 {
		t.Fatalf("%d streams opened, want 1", n)
	}
	if st := ss.stream(t).Stats(); st.Attaches < 11 {
		t.Fatalf("server stream %+v: want at least 11 attaches", st)
	}
	// No request was sent twice: every request id is distinct.
	seen := map[uint64]bool{}
	for len(ss.requests) > 0 {
		m := <-ss.requests
		r, ok := m.(session.Request)
		if !ok {
			continue
		}
		if seen[r.RequestID()] {
			t.Fatalf("request %d (%v) reached the server twice", r.RequestID(), m.Kind())
		}
		seen[r.RequestID()] = true
	}
	if rtt, err := c.Ping(ctx); err != nil || rtt <= 0 {
		t.Fatalf("Ping over the stream: %v, %v", rtt, err)
	}
}

// TestStreamLostForGood: when the server no longer knows the stream (its
// linger window passed), the sessions end with an error that says so
// (resume.ErrExpired), calls waiting fail, and the client opens a new
// stream by itself.
func TestStreamLostForGood(t *testing.T) {
	cfg := resume.DefaultConfig()
	cfg.Linger = 200 * time.Millisecond
	ss := newStreamServer(t, cfg)
	ss.listen(t)
	rec := newRecorder()
	c := dial(t, streamConfig(t, ss, rec))
	ctx := ctxGuard(t)
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	ss.reject.Store(true)
	ss.breakConns()
	time.Sleep(400 * time.Millisecond) // past the server's linger window
	ss.reject.Store(false)
	select {
	case <-s.Done():
	case <-time.After(guard):
		t.Fatal("the session did not end with its stream")
	}
	err = s.Err()
	if !errors.Is(err, client.ErrSessionEnded) || !errors.Is(err, client.ErrConnectionLost) || !errors.Is(err, resume.ErrExpired) {
		t.Fatalf("Err() = %v", err)
	}
	if _, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); !errors.Is(err, client.ErrSessionEnded) {
		t.Fatalf("Call after the loss = %v", err)
	}
	s2, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatalf("a new session on a new stream: %v", err)
	}
	if v, err := s2.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); err != nil || v != int64(3) {
		t.Fatalf("call on the new stream: %v, %v", v, err)
	}
	if n := ss.nStreams(); n != 2 {
		t.Fatalf("%d streams, want 2", n)
	}
}

// TestStreamReplaced: a Close "replaced" from the server (another process
// registered with the client id) stops the client instead of taking the id
// back forever.
func TestStreamReplaced(t *testing.T) {
	ss := newStreamServer(t, nil)
	ss.listen(t)
	rec := newRecorder()
	c := dial(t, streamConfig(t, ss, rec))
	ss.mu.Lock()
	last := ss.conns[len(ss.conns)-1]
	ss.mu.Unlock()
	wire.NewStreamConn(last, 0).WriteMessage(&wire.Close{Code: wire.CloseReplaced, Reason: "replaced by a newer connection"})
	last.Close()
	rec.waitFor(t, "Closed", func(evs []event) bool { return len(evs) > 0 && evs[len(evs)-1].state == client.Closed })
	if _, err := c.Services(ctxGuard(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Services after replaced: %v", err)
	}
	if evs := rec.snapshot(); !errors.Is(evs[len(evs)-1].err, client.ErrReplaced) {
		t.Fatalf("closed with %v, want ErrReplaced", evs[len(evs)-1].err)
	}
}

// TestStateFileAndReclaim: with a state file the client keeps its open
// sessions' ids and secrets; a client started again with the file presents
// them in a Reclaim, gets the restored ones back as Sessions and an
// explicit error for the others, and the file then holds only the restored.
func TestStateFileAndReclaim(t *testing.T) {
	ss := newStreamServer(t, nil)
	var reclaims []*session.Reclaim
	var mu sync.Mutex
	ss.onRequest = func(st *resume.Stream, m session.Message) bool {
		r, ok := m.(*session.Reclaim)
		if !ok {
			return false
		}
		mu.Lock()
		reclaims = append(reclaims, r)
		mu.Unlock()
		out := &session.Reclaimed{ID: r.ID}
		for i, e := range r.Sessions {
			if i == 0 {
				out.Results = append(out.Results, session.ReclaimResult{Session: e.Session, Status: session.ReclaimRestored,
					Service: "example.echo", Routing: serverDoc(e.Session, "example.echo")})
			} else {
				out.Results = append(out.Results, session.ReclaimResult{Session: e.Session, Status: session.ReclaimExpired,
					Service: "example.echo", Reason: "its client did not come back", Requests: 7, LastRequest: 40, EndedUnixMilli: 1700000000000})
			}
		}
		streamSend(st, out)
		return true
	}
	ss.listen(t)
	file := filepath.Join(t.TempDir(), "state", "sessions.json")
	cfg := streamConfig(t, ss, newRecorder())
	cfg.StateFile = file
	ctx := ctxGuard(t)

	c1 := dial(t, cfg)
	a, err := c1.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c1.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	state := readStateFile(t, file)
	if len(state.Sessions) != 2 || state.ClientID != cfg.ClientID.String() {
		t.Fatalf("state file after two sessions: %+v", state)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v, %v", fi.Mode(), err)
	}
	// The process "dies": copy the file as it was, then close.
	saved, _ := os.ReadFile(file)
	c1.Close()
	if st := readStateFile(t, file); len(st.Sessions) != 0 {
		t.Fatalf("after Close the state file holds %d sessions", len(st.Sessions))
	}
	if err := os.WriteFile(file, saved, 0o600); err != nil {
		t.Fatal(err)
	}

	c2 := dial(t, cfg)
	mu.Lock()
	if len(reclaims) != 2 || len(reclaims[0].Sessions) != 0 || len(reclaims[1].Sessions) != 2 {
		t.Fatalf("reclaims: the first client should present none, the second both: %+v", reclaims)
	}
	first := reclaims[1].Sessions[0].Session
	mu.Unlock()
	got := c2.Reclaimed()
	if len(got) != 2 {
		t.Fatalf("Reclaimed: %+v", got)
	}
	var restored *client.Session
	for _, r := range got {
		switch {
		case r.ID == first:
			if r.Session == nil || r.Err != nil {
				t.Fatalf("%s not restored: %v", r.ID, r.Err)
			}
			restored = r.Session
		default:
			var re *client.ReclaimError
			if !errors.As(r.Err, &re) || !errors.Is(r.Err, client.ErrSessionExpired) || !errors.Is(r.Err, client.ErrSessionEnded) ||
				re.Requests != 7 || re.LastRequest != 40 || re.Ended.IsZero() || !strings.Contains(r.Err.Error(), "the last #40") {
				t.Fatalf("%s: %v", r.ID, r.Err)
			}
		}
	}
	if ids := []string{a.ID, b.ID}; !(ids[0] == first || ids[1] == first) {
		t.Fatalf("restored %s is not one of %v", first, ids)
	}
	if v, err := restored.Call(ctx, "add", map[string]any{"a": 2, "b": 3}); err != nil || v != int64(5) {
		t.Fatalf("call in the restored session: %v, %v", v, err)
	}
	if ss := c2.Sessions(); len(ss) != 1 || ss[0] != restored {
		t.Fatalf("Sessions() = %v", ss)
	}
	if st := readStateFile(t, file); len(st.Sessions) != 1 || st.Sessions[0].ID != first {
		t.Fatalf("state file after the reclaim: %+v", st)
	}
}

// TestStateFileRefused: a state file of another client id, or one that
// does not parse, stops Dial with an error naming the file.
func TestStateFileRefused(t *testing.T) {
	ss := newStreamServer(t, nil)
	ss.listen(t)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"other-client": `{"version":1,"clientId":"` + uuid.NewString() + `","sessions":[]}`,
		"garbage":      `{"version":`,
		"bad-secret":   `{"version":1,"clientId":"%s","sessions":[{"id":"x","service":"s","secret":"AAAA"}]}`,
	} {
		cfg := streamConfig(t, ss, newRecorder())
		cfg.StateFile = filepath.Join(dir, name+".json")
		os.WriteFile(cfg.StateFile, []byte(strings.Replace(content, "%s", cfg.ClientID.String(), 1)), 0o600)
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		c, err := client.Dial(ctx, cfg)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("%s: Dial succeeded", name)
		}
		if !strings.Contains(err.Error(), cfg.StateFile) {
			t.Errorf("%s: %v does not name the file", name, err)
		}
	}
}

type stateDoc struct {
	Version  int    `json:"version"`
	ClientID string `json:"clientId"`
	Sessions []struct {
		ID      string `json:"id"`
		Service string `json:"service"`
		Secret  []byte `json:"secret"`
	} `json:"sessions"`
}

func readStateFile(t *testing.T, path string) stateDoc {
	t.Helper()
	var d stateDoc
	deadline := time.Now().Add(guard)
	for {
		b, err := os.ReadFile(path)
		if err == nil && json.Unmarshal(b, &d) == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("state file %s: %v", path, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStreamCloseWhileRedialing: Close returns promptly while the stream
// redials a server that refuses it, and leaves no goroutine behind (the
// client's and its stream's).
func TestStreamCloseWhileRedialing(t *testing.T) {
	ss := newStreamServer(t, nil)
	ss.listen(t)
	c := dial(t, streamConfig(t, ss, newRecorder()))
	if _, err := c.StartSession(ctxGuard(t), "example.echo"); err != nil {
		t.Fatal(err)
	}
	ss.reject.Store(true)
	ss.breakConns()
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("Close did not return")
	}
	checkClosed(t, c)
	ss.close()
	deadline := time.Now().Add(guard)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if !strings.Contains(string(buf), "github.com/bearerkit/connect/resume.") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resume goroutines still run:\n%s", buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
