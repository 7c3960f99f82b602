package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStreamOverTCP(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := newTCPServer(t, nil)
	c, err := Open(ctx, tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := srv.next(t)
	if s.ID() != c.ID() {
		t.Fatalf("server session %s, client %s", s.ID(), c.ID())
	}
	if srv.tbl.Len() != 1 {
		t.Fatalf("table holds %d sessions", srv.tbl.Len())
	}
	if got, ok := srv.tbl.Lookup(c.ID()); !ok || got != s {
		t.Fatal("Lookup does not find the session")
	}

	msgs := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{7}, 100_000), bytes.Repeat([]byte{9}, wire.DefaultMaxPayload)}
	for _, m := range msgs {
		if err := c.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseSend(); err != nil {
		t.Fatalf("second CloseSend: %v", err)
	}
	if err := c.Send(ctx, []byte("late")); !errors.Is(err, ErrSendClosed) {
		t.Fatalf("Send after CloseSend: %v", err)
	}
	for i, want := range msgs {
		got, err := s.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	if _, err := s.Recv(ctx); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
	if _, err := s.Recv(ctx); err != io.EOF {
		t.Fatalf("again: %v, want io.EOF", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Acked != st.Sent || st.Sent != uint64(len(msgs)+1) || st.Buffered != 0 {
		t.Fatalf("client stats after Flush: %+v", st)
	}

	// The other direction, then a clean end.
	if err := s.Send(ctx, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.Recv(ctx); err != nil || string(m) != "reply" {
		t.Fatalf("client got %q, %v", m, err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(ctx); err != io.EOF {
		t.Fatalf("client: %v, want io.EOF", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Send(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := c.Recv(ctx); err != io.EOF {
		t.Fatalf("Recv after Close with the peer's end already read: %v", err)
	}
	// The server learns that the session is over and forgets it.
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("server stream did not end after the client's Close")
	}
	if !errors.Is(s.Err(), ErrPeerClosed) {
		t.Fatalf("server stream ended with %v", s.Err())
	}
	if srv.tbl.Len() != 0 {
		t.Fatalf("table still holds %d sessions", srv.tbl.Len())
	}
	s.Close()
}

func TestSendLimits(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	scfg := DefaultConfig()
	scfg.MaxMessage = 1000
	srv := newTCPServer(t, scfg)
	c, err := Open(ctx, tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := srv.next(t)
	var tooLarge *MessageTooLargeError
	if err := c.Send(ctx, make([]byte, 1001)); !errors.As(err, &tooLarge) || tooLarge.Limit != 1000 || !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("Send of 1001 bytes to a peer accepting 1000: %v", err)
	}
	if err := c.Send(ctx, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(ctx); err != nil || len(m) != 1000 {
		t.Fatalf("got %d bytes, %v", len(m), err)
	}
	if err := s.Send(ctx, make([]byte, 1001)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("server Send beyond its own MaxMessage: %v", err)
	}
	// A cancelled context unblocks Recv without ending the stream.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Recv(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv with a cancelled context: %v", err)
	}
	if s.Err() != nil {
		t.Fatalf("stream ended: %v", s.Err())
	}
}

func TestServerCloseEndsClient(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := newTCPServer(t, nil)
	c, err := Open(ctx, tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := srv.next(t)
	if err := s.Send(ctx, []byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, []byte("never read")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The client first reads what arrived, then learns that the peer ended
	// the session, and that its message was delivered (acknowledged).
	if m, err := c.Recv(ctx); err != nil || string(m) != "last words" {
		t.Fatalf("got %q, %v", m, err)
	}
	_, err = c.Recv(ctx)
	var pc *PeerClosedError
	if !errors.As(err, &pc) || pc.Delivered != 1 || pc.Sent != 1 || pc.SessionID != c.ID() {
		t.Fatalf("client Recv after server Close: %v", err)
	}
	if len(c.Undelivered()) != 0 {
		t.Fatalf("undelivered: %d messages", len(c.Undelivered()))
	}
}

// TestForgedResume: a resume with the right session id but not the secret
// is refused, logged as such on the server, and leaves the real session
// and its connection alone. So does a replayed proof from an earlier
// resume.
func TestForgedResume(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	var logs lockedBuffer
	scfg := DefaultConfig()
	scfg.Logger = newTestLogger(&logs)
	srv := newTCPServer(t, scfg)
	dial := tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload)
	c, err := Open(ctx, dial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := srv.next(t)
	roundTrip := func(i int) {
		t.Helper()
		m := fmt.Appendf(nil, "ping %d", i)
		if err := c.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recv(ctx)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("server got %q, %v", got, err)
		}
		if err := s.Send(ctx, got); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Recv(ctx); err != nil || !bytes.Equal(got, m) {
			t.Fatalf("client got %q, %v", got, err)
		}
	}
	roundTrip(0)

	// The attacker knows the id (it is no secret) but not the secret; it
	// ignores the server's proof and answers with its best guess.
	forge := func(clientProof func(cn, sn [nonceLen]byte) [proofLen]byte) message {
		t.Helper()
		conn, err := dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cn := nonce()
		if err := writeControl(conn, &resumeMsg{id: c.ID(), nonce: cn}); err != nil {
			t.Fatal(err)
		}
		m, err := readControl(conn, c.ID(), "test")
		ch, ok := m.(*challengeMsg)
		if err != nil || !ok {
			t.Fatalf("got %v, %v, want a Challenge", m, err)
		}
		if err := writeControl(conn, &proofMsg{proof: clientProof(cn, ch.nonce), replayBuffer: 1, maxMessage: 1}); err != nil {
			t.Fatal(err)
		}
		m, err = readControl(conn, c.ID(), "test")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	wrongSecret := filled(0xee)
	m := forge(func(cn, sn [nonceLen]byte) [proofLen]byte {
		return proof(wrongSecret, labelClientProof, c.ID(), cn, sn)
	})
	if rm, ok := m.(*refuseMsg); !ok || rm.code != RefuseAuth {
		t.Fatalf("forged resume answered with %#v, want a Refuse with RefuseAuth", m)
	}
	// A client that refuses to go on with a server that cannot prove the
	// secret: the same code path, seen from the client.
	impostor := newStream(c.cfg, roleClient, c.ID(), wrongSecret)
	conn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = impostor.clientResume(conn, guardConn(ctx, conn))
	conn.Close()
	if !errors.Is(err, ErrAuth) || permanent(err) {
		t.Fatalf("client facing a server that does not prove the secret: %v", err)
	}

	// Replaying a proof made for another server nonce fails too: the
	// server's nonce is fresh every time.
	m = forge(func(cn, sn [nonceLen]byte) [proofLen]byte {
		return proof(c.secret, labelClientProof, c.ID(), cn, nonce())
	})
	if rm, ok := m.(*refuseMsg); !ok || rm.code != RefuseAuth {
		t.Fatalf("replayed proof answered with %#v, want a Refuse with RefuseAuth", m)
	}

	// The server reported both; the real session never noticed.
	errs := srv.waitErrors(t, 3)
	auth := 0
	for _, err := range errs {
		if errors.Is(err, ErrAuth) {
			auth++
		}
	}
	if len(errs) != 3 || auth != 2 {
		t.Fatalf("server Accept errors %v, want two ErrAuth (forged, replayed) and the impostor's EOF", errs)
	}
	if !bytes.Contains(logs.Bytes(), []byte("wrong proof of the session secret")) || !bytes.Contains(logs.Bytes(), []byte(c.ID().String())) {
		t.Fatalf("the server did not log the forged resume:\n%s", logs.Bytes())
	}
	roundTrip(1)
	for _, st := range []*Stream{c, s} {
		if got := st.Stats(); got.Attaches != 1 || !got.Connected {
			t.Fatalf("%s: %+v: the real session was disturbed", st.role, got)
		}
	}
}

// TestResumeUnknownSession: a client whose session the server does not know
// (never existed, or the server forgot it) gets an explicit error.
func TestResumeUnknownSession(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := newTCPServer(t, nil)
	dial := tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload)
	ghost := newStream(*DefaultConfig(), roleClient, testID, filled(1))
	conn, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = ghost.clientResume(conn, guardConn(ctx, conn))
	if !errors.Is(err, ErrUnknownSession) || !permanent(err) {
		t.Fatalf("resume of an unknown session: %v", err)
	}
}

// TestHandshakeGarbage: a peer that is not a resume client gets a Refuse
// (or nothing, if it does not even speak Connect) and an error naming what
// was wrong; the table is unaffected.
func TestHandshakeGarbage(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	srv := newTCPServer(t, nil)
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), wire.ErrVersion},
		{"data frame", wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: Channel, Payload: []byte("x")}), ErrProtocol},
		{"wrong channel", wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: 5, Flags: flagControl | uint16(kindOpen)}), ErrProtocol},
		{"bad open", wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: Channel, Flags: flagControl | uint16(kindOpen), Payload: []byte{1, 2, 3}}), wire.ErrTruncated},
		{"ack first", encodeControl(&ackMsg{received: 1}), ErrProtocol},
		{"low-order key", encodeControl(&openMsg{key: [32]byte{1}, replayBuffer: 1 << 20, maxMessage: 1 << 20}), ErrProtocol},
		{"hello", wire.AppendMessage(nil, &wire.Hello{MinVersion: 1, MaxVersion: 1, ClientID: testID}), ErrProtocol},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			reply, _ := io.ReadAll(c) // the server closes the connection
			if tc.want == ErrProtocol || tc.want == wire.ErrTruncated {
				f, _, err := wire.DecodeFrame(reply, 0)
				if err != nil {
					t.Fatalf("reply %q: %v", reply, err)
				}
				m, err := decodeControl(f.Flags, f.Payload)
				if rm, ok := m.(*refuseMsg); err != nil || !ok || rm.code != RefuseProtocol || rm.message == "" {
					t.Fatalf("reply %v %v, want a Refuse with RefuseProtocol", m, err)
				}
			}
			errs := srv.waitErrors(t, i+1)
			if len(errs) != i+1 || !errors.Is(errs[i], tc.want) {
				t.Fatalf("Accept errors %v, want the last to be %v", errs, tc.want)
			}
		})
	}
	if srv.tbl.Len() != 0 {
		t.Fatalf("table holds %d sessions", srv.tbl.Len())
	}
	_ = ctx
}

// TestChaos streams numbered, digested messages both ways through a proxy
// that breaks the connection hundreds of times — mid-frame, during the
// handshake, during the replay, by close, reset and black hole — and
// checks that every message arrives exactly once, in order, intact.
func TestChaos(t *testing.T) {
	total := 64 << 20
	maxBreaks := 400
	switch {
	case testing.Short():
		total, maxBreaks = 8<<20, 60
	case raceEnabled:
		total, maxBreaks = 24<<20, 200 // same paths, a third of the bytes
	}
	ctx := testCtx(t, 60*time.Second)
	c, s, proxy := chaosPair(t, ctx, maxBreaks)
	defer c.Close()
	defer s.Close()

	up, down := newTraffic(1, 64<<10), newTraffic(2, 200<<10)
	type result struct {
		who    string
		n      uint64
		digest []byte
		err    error
	}
	results := make(chan result, 4)
	var wg sync.WaitGroup
	run := func(who string, f func() (uint64, []byte, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, d, err := f()
			results <- result{who, n, d, err}
		}()
	}
	run("client send", func() (uint64, []byte, error) { return sendAll(ctx, c, up, total) })
	run("server recv", func() (uint64, []byte, error) { return recvAll(ctx, s, up) })
	run("server send", func() (uint64, []byte, error) { return sendAll(ctx, s, down, total) })
	run("client recv", func() (uint64, []byte, error) { return recvAll(ctx, c, down) })
	wg.Wait()
	close(results)
	got := map[string]result{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("%s: %v", r.who, r.err)
		}
		got[r.who] = r
	}
	for _, pair := range [][2]string{{"client send", "server recv"}, {"server send", "client recv"}} {
		snd, rcv := got[pair[0]], got[pair[1]]
		if snd.n != rcv.n || !bytes.Equal(snd.digest, rcv.digest) {
			t.Fatalf("%s: %d messages (digest %x), %s: %d (digest %x)", pair[0], snd.n, snd.digest, pair[1], rcv.n, rcv.digest)
		}
	}
	for _, st := range []*Stream{c, s} {
		if err := st.Flush(ctx); err != nil {
			t.Fatalf("%s flush: %v", st.role, err)
		}
		if n := len(st.Undelivered()); n != 0 {
			t.Fatalf("%s: %d undelivered", st.role, n)
		}
	}
	breaks, kinds := proxy.stats()
	cs := c.Stats()
	t.Logf("%d MiB each way, %d+%d messages, %d connections broken (%v), client attached %d connections",
		total>>20, got["client send"].n, got["server send"].n, breaks, kinds, cs.Attaches)
	if cs.Attaches < maxBreaks/4 {
		t.Fatalf("only %d resumptions: the proxy did not break enough connections", cs.Attaches-1)
	}
}

// chaosPair opens a session through a fault proxy that breaks up to
// maxBreaks connections (TestChaos, TestChaosByteStream): the two sides
// have different buffers, and the server's replay buffer fills.
func chaosPair(t *testing.T, ctx context.Context, maxBreaks int) (*Stream, *Stream, *faultProxy) {
	t.Helper()
	ccfg := DefaultConfig()
	ccfg.KeepaliveInterval = 100 * time.Millisecond
	ccfg.DeadTimeout = time.Second
	ccfg.RetryMin = time.Millisecond
	ccfg.RetryMax = 4 * time.Millisecond
	ccfg.MaxMessage = 256 << 10
	scfg := *ccfg
	scfg.ReplayBuffer = 1 << 20 // the two sides differ, and the server's fills
	scfg.ReceiveBuffer = 512 << 10

	srv := newTCPServer(t, &scfg)
	proxy := newFaultProxy(t, srv.ln.Addr().String(), 1, maxBreaks, 2)
	c, err := Open(ctx, tcpDialer(proxy.addr(), ccfg.MaxMessage), ccfg)
	if err != nil {
		// The first connection may be cut during the open handshake.
		for i := 0; err != nil && i < 20; i++ {
			c, err = Open(ctx, tcpDialer(proxy.addr(), ccfg.MaxMessage), ccfg)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var s *Stream
	for s == nil {
		select {
		case st := <-srv.streams:
			if st.ID() == c.ID() {
				s = st
			} else {
				st.Close() // the session of an Open cut short, abandoned
			}
		case <-ctx.Done():
			c.Close()
			t.Fatal("no session")
		}
	}
	return c, s, proxy
}
