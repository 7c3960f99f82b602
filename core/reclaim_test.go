package core

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// nullTransport discards what a session layer writes.
type nullTransport struct{}

func (nullTransport) writeSession(context.Context, []byte) error { return nil }
func (nullTransport) abort()                                     {}
func (nullTransport) principal() principal                       { return principal{} }
func (nullTransport) peer() (string, string)                     { return "", "" }

// testStream opens a real resume stream over a pipe and returns its
// server side.
func testStream(t *testing.T, tbl *resume.Table) *resume.Stream {
	t.Helper()
	got := make(chan *resume.Stream, 1)
	c, err := resume.Open(context.Background(), func(ctx context.Context) (wire.Conn, error) {
		a, b := net.Pipe()
		go func() {
			st, _, err := tbl.Accept(context.Background(), wire.NewStreamConn(b, 0))
			if err == nil {
				got <- st
			}
		}()
		return wire.NewStreamConn(a, 0), nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return <-got
}

// TestReclaim: a reclaim restores the sessions presented with their secret,
// ends the client's other sessions (and its old streams), answers denied,
// unknown, expired with what it knows, and leaves other clients alone.
func TestReclaim(t *testing.T) {
	r := newSessionRig(t)
	srv := r.srv
	srv.streams, srv.byClient = map[uuid.UUID]*streamClient{}, map[uuid.UUID]map[*streamClient]struct{}{}
	srv.cfg = &config.Server{}
	tbl, err := resume.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tbl.Close(); srv.wg.Wait() })
	me, other := uuid.New(), uuid.New()
	mkStream := func(client uuid.UUID) *streamClient {
		st := testStream(t, tbl)
		sc := &streamClient{s: srv, st: st, id: st.ID(), clientID: client, log: srv.log}
		sc.cs = newConnSessions(srv, nullTransport{}, sc, client, srv.log, wire.DefaultMaxPayload)
		srv.streams[sc.id] = sc
		if srv.byClient[client] == nil {
			srv.byClient[client] = map[*streamClient]struct{}{}
		}
		srv.byClient[client][sc] = struct{}{}
		t.Cleanup(func() { sc.cs.shutdown("test over") })
		return sc
	}
	old, theirs, fresh := mkStream(me), mkStream(other), mkStream(me)
	s1 := old.cs.addSession(r.hs, "s1", newSecret(), nil)
	s2 := old.cs.addSession(r.hs, "s2", newSecret(), nil)
	s3 := old.cs.addSession(r.hs, "s3", newSecret(), nil)
	y1 := theirs.cs.addSession(r.hs, "y1", newSecret(), nil)
	gone := old.cs.addSession(r.hs, "gone", newSecret(), nil)
	for range 3 {
		if _, e := old.cs.session(uint64(40), "gone"); e != nil {
			t.Fatal(e)
		}
	}
	old.cs.endSession(gone, reasonExpired, false)

	wrong := bytes.Repeat([]byte{7}, session.SecretSize)
	ans := fresh.cs.reclaim(&session.Reclaim{ID: 9, Sessions: []session.ReclaimEntry{
		{Session: "s1", Secret: s1.secret},
		{Session: "s2", Secret: wrong},
		{Session: "nope", Secret: wrong},
		{Session: "y1", Secret: y1.secret},
		{Session: "gone", Secret: gone.secret},
	}}).(*session.Reclaimed)
	want := []session.ReclaimStatus{session.ReclaimRestored, session.ReclaimDenied, session.ReclaimUnknown, session.ReclaimUnknown, session.ReclaimExpired}
	for i, res := range ans.Results {
		if res.Status != want[i] {
			t.Errorf("%s: %v, want %v (%s)", res.Session, res.Status, want[i], res.Reason)
		}
	}
	if res := ans.Results[0]; res.Service != "example.echo" || len(res.Routing) == 0 {
		t.Errorf("restored without service or routing: %+v", res)
	}
	if res := ans.Results[4]; res.Requests != 3 || res.LastRequest != 40 || res.EndedUnixMilli == 0 {
		t.Errorf("expired session: %+v", res)
	}
	if s1.owner() != fresh.cs || fresh.cs.sessions["s1"] != s1 || old.cs.sessions["s1"] != nil {
		t.Error("s1 did not move to the new stream")
	}
	for _, s := range []*clientSession{s2, s3} {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if !closed {
			t.Errorf("%s was not ended", s.id)
		}
		if tb, ok := srv.tombs.find(s.id); !ok || tb.status != session.ReclaimClosed || tb.reason != reasonNotReclaimed {
			t.Errorf("%s tombstone: %+v, %v", s.id, tb, ok)
		}
	}
	if theirs.cs.sessions["y1"] != y1 {
		t.Error("another client's session was touched")
	}
	select {
	case <-old.st.Done():
	case <-time.After(guard):
		t.Fatal("the old stream was not closed")
	}
	// A second reclaim on the same stream finds s1 already there.
	again := fresh.cs.reclaim(&session.Reclaim{ID: 10, Sessions: []session.ReclaimEntry{{Session: "s1", Secret: s1.secret}}}).(*session.Reclaimed)
	if again.Results[0].Status != session.ReclaimRestored {
		t.Errorf("repeated reclaim: %+v", again.Results[0])
	}
}

// TestSessionTombsBounded: tombstones go after their time and beyond their
// number, oldest first.
func TestSessionTombsBounded(t *testing.T) {
	var tombs sessionTombs
	hs := &hostedService{cfg: config.Service{Name: "x"}}
	for i := range maxSessionTombs + 10 {
		tombs.bury(&clientSession{id: uuid.NewString() + string(rune('a'+i%26)), hs: hs, secret: newSecret()}, uuid.New(), "closed")
	}
	tombs.mu.Lock()
	n, order := len(tombs.m), len(tombs.order)-tombs.head
	tombs.mu.Unlock()
	if n != maxSessionTombs || order != maxSessionTombs {
		t.Fatalf("%d tombstones (%d in order), want %d", n, order, maxSessionTombs)
	}
	tombs.mu.Lock()
	for id, tb := range tombs.m {
		tb.ended = tb.ended.Add(-sessionTombTTL)
		tombs.m[id] = tb
	}
	tombs.mu.Unlock()
	if _, ok := tombs.find("whatever"); ok {
		t.Fatal("found a tombstone that never was")
	}
	tombs.mu.Lock()
	n = len(tombs.m)
	tombs.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d tombstones left after their time", n)
	}
}

// TestResumeSettings: the table's keepalive and dead-path window follow
// <resume pingFrequency pingWindowFactor>, and so does the Welcome.
func TestResumeSettings(t *testing.T) {
	cfg := config.Default()
	cfg.Resume = config.Resume{Linger: 90 * time.Second, PingFrequency: 250 * time.Millisecond, PingWindowFactor: 4}
	srv, err := New(Options{Config: cfg, StateDir: t.TempDir(), StockPlugin: func(string) (string, []string) { return "x", nil }})
	if err != nil {
		t.Fatal(err)
	}
	rc := srv.resumeConfig()
	if rc.KeepaliveInterval != 250*time.Millisecond || rc.DeadTimeout != time.Second || rc.Linger != 90*time.Second {
		t.Fatalf("resume config: keepalive %v, dead %v, linger %v", rc.KeepaliveInterval, rc.DeadTimeout, rc.Linger)
	}
	if srv.pingWindow() != time.Second || srv.opts.PingInterval != 250*time.Millisecond {
		t.Fatalf("window %v, interval %v", srv.pingWindow(), srv.opts.PingInterval)
	}
}
