// Package bearertest is the conformance suite every bearer passes: the
// behaviour of the bearer contract (package bearers) checked over real
// sockets.
//
// A bearer's test calls TestBearer with a listen endpoint, usually on
// 127.0.0.1 port 0:
//
//	func TestConformance(t *testing.T) {
//		b, err := tcp.New(bearers.Config{})
//		if err != nil {
//			t.Fatal(err)
//		}
//		bearertest.TestBearer(t, b, bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
//	}
//
// What it requires of every bearer:
//
//   - Info validates and its scheme is the listen endpoint's;
//   - Listen gives a listener whose Endpoint has the bearer's scheme and the
//     real port, and whose Addr agrees with it;
//   - Dial to that Endpoint and Accept give connections that carry data both
//     ways;
//   - Accept honours the cancellation of its context, returns an error
//     wrapping net.ErrClosed once the listener is closed (also when it was
//     blocked), and Listener.Close is idempotent (later calls return nil or an
//     error wrapping net.ErrClosed);
//   - Dial with an already-cancelled context fails with an error wrapping
//     context.Canceled; Dial to a port where nothing listens fails (for a
//     datagram bearer, Dial may succeed but no datagram comes back and Read
//     fails);
//   - Listen and Dial reject an endpoint of another scheme with an error
//     wrapping bearers.ErrBadEndpoint;
//   - after Conn.Close, Read and Write fail with errors wrapping net.ErrClosed
//     and a second Close does not panic;
//   - for stream bearers, connections already accepted keep working after
//     Listener.Close (datagram bearers whose connections share the
//     listener's socket close them with it).
//
// Stream bearers (not Datagram) additionally pass
// golang.org/x/net/nettest.TestConn, the standard library's own test of
// net.Conn semantics (deadlines, concurrent use, close). Datagram bearers
// instead must keep message boundaries (three writes of different sizes
// arrive as three reads of those sizes), give each of several concurrent
// peers its own accepted connection, truncate a datagram read into a short
// buffer, and time reads out at the read deadline.
//
// The suite runs in a few seconds. Functions of this package are safe to call
// from parallel tests.
package bearertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/bearerkit/connect/bearers"
)

// patience bounds every wait of the suite, so that a broken bearer fails the
// test instead of hanging it. It is not a performance expectation.
const patience = 10 * time.Second

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func isDatagram(b bearers.Bearer) bool { return b.Info().Capabilities.Has(bearers.Datagram) }

// Pipe listens on listenEP, dials the listener's Endpoint and returns both
// ends; everything is closed when the test ends. For a datagram bearer the
// client first sends one datagram, which Pipe consumes on the server side
// (a datagram listener only learns of a peer when it hears from it).
func Pipe(t testing.TB, b bearers.Bearer, listenEP bearers.Endpoint) (client, server bearers.Conn) {
	t.Helper()
	client, server, stop, err := makePipe(b, listenEP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return client, server
}

// makePipe is Pipe for nettest.MakePipe: stop closes both ends and the
// listener.
func makePipe(b bearers.Bearer, listenEP bearers.Endpoint) (client, server bearers.Conn, stop func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	ln, err := b.Listen(ctx, listenEP)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bearertest: listen %s: %w", listenEP, err)
	}
	type accepted struct {
		c   bearers.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept(ctx)
		ch <- accepted{c, err}
	}()
	client, err = b.Dial(ctx, ln.Endpoint())
	if err != nil {
		_ = ln.Close()
		<-ch
		return nil, nil, nil, fmt.Errorf("bearertest: dial %s: %w", ln.Endpoint(), err)
	}
	if isDatagram(b) {
		if _, err := client.Write([]byte("bearertest-hello")); err != nil {
			_ = client.Close()
			_ = ln.Close()
			<-ch
			return nil, nil, nil, fmt.Errorf("bearertest: first datagram to %s: %w", ln.Endpoint(), err)
		}
	}
	a := <-ch
	if a.err != nil {
		_ = client.Close()
		_ = ln.Close()
		return nil, nil, nil, fmt.Errorf("bearertest: accept on %s: %w", ln.Endpoint(), a.err)
	}
	server = a.c
	if isDatagram(b) {
		buf := make([]byte, 64)
		_ = server.SetReadDeadline(time.Now().Add(patience))
		n, err := server.Read(buf)
		_ = server.SetReadDeadline(time.Time{})
		if err != nil || string(buf[:n]) != "bearertest-hello" {
			_ = client.Close()
			_ = server.Close()
			_ = ln.Close()
			return nil, nil, nil, fmt.Errorf("bearertest: first datagram on %s: got %q, %v", ln.Endpoint(), buf[:n], err)
		}
	}
	stop = func() {
		_ = client.Close()
		_ = server.Close()
		_ = ln.Close()
	}
	return client, server, stop, nil
}

// TestBearer runs the conformance suite against b, listening on listenEP.
func TestBearer(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	t.Run("Info", func(t *testing.T) { testInfo(t, b, listenEP) })
	t.Run("ListenerEndpoint", func(t *testing.T) { testListenerEndpoint(t, b, listenEP) })
	t.Run("Exchange", func(t *testing.T) { testExchange(t, b, listenEP) })
	t.Run("ConnClose", func(t *testing.T) { testConnClose(t, b, listenEP) })
	t.Run("ListenerClose", func(t *testing.T) { testListenerClose(t, b, listenEP) })
	t.Run("AcceptCancel", func(t *testing.T) { testAcceptCancel(t, b, listenEP) })
	t.Run("DialCancelled", func(t *testing.T) { testDialCancelled(t, b, listenEP) })
	t.Run("DialClosedPort", func(t *testing.T) { testDialClosedPort(t, b, listenEP) })
	t.Run("BadScheme", func(t *testing.T) { testBadScheme(t, b, listenEP) })
	if isDatagram(b) {
		t.Run("DatagramBoundaries", func(t *testing.T) { testDatagramBoundaries(t, b, listenEP) })
		t.Run("DatagramTruncate", func(t *testing.T) { testDatagramTruncate(t, b, listenEP) })
		t.Run("DatagramPeers", func(t *testing.T) { testDatagramPeers(t, b, listenEP) })
		t.Run("DatagramReadDeadline", func(t *testing.T) { testDatagramReadDeadline(t, b, listenEP) })
	} else {
		t.Run("StreamLarge", func(t *testing.T) { testStreamLarge(t, b, listenEP) })
		t.Run("ConnOutlivesListener", func(t *testing.T) { testConnOutlivesListener(t, b, listenEP) })
		t.Run("NetConn", func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				return makePipe(b, listenEP)
			})
		})
	}
}

func testInfo(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	info := b.Info()
	if err := info.Validate(); err != nil {
		t.Fatalf("Info() = %+v: %v", info, err)
	}
	if info.Scheme != listenEP.Scheme {
		t.Errorf("Info().Scheme = %q, but the listen endpoint %s has scheme %q", info.Scheme, listenEP, listenEP.Scheme)
	}
	if b.Info() != info {
		t.Errorf("Info() is not constant: %+v then %+v", info, b.Info())
	}
}

func testListenerEndpoint(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	defer ln.Close()
	ep := ln.Endpoint()
	if ep.Scheme != b.Info().Scheme {
		t.Errorf("Endpoint() = %s: scheme %q, want %q", ep, ep.Scheme, b.Info().Scheme)
	}
	if ep.Port <= 0 || ep.Port > 65535 {
		t.Errorf("Endpoint() = %s: port %d is not a real port", ep, ep.Port)
	}
	if listenEP.Port != 0 && ep.Port != listenEP.Port {
		t.Errorf("Endpoint() = %s: port %d, listened on %d", ep, ep.Port, listenEP.Port)
	}
	if ln.Addr() == nil {
		t.Fatal("Addr() = nil")
	}
	_, port, err := net.SplitHostPort(ln.Addr().String())
	if err != nil {
		t.Fatalf("Addr() = %q: %v", ln.Addr(), err)
	}
	if port != strconv.Itoa(ep.Port) {
		t.Errorf("Addr() = %s but Endpoint() = %s: ports differ", ln.Addr(), ep)
	}
	if _, err := bearers.ParseEndpoint(ep.String()); err != nil {
		t.Errorf("Endpoint().String() = %q does not parse back: %v", ep.String(), err)
	}
}

// exchange writes msg on from and reads it back on to.
func exchange(t *testing.T, b bearers.Bearer, from, to bearers.Conn, msg []byte) {
	t.Helper()
	_ = to.SetReadDeadline(time.Now().Add(patience))
	defer to.SetReadDeadline(time.Time{})
	if _, err := from.Write(msg); err != nil {
		t.Fatalf("Write(%d bytes): %v", len(msg), err)
	}
	got := make([]byte, len(msg)+64)
	var n int
	var err error
	if isDatagram(b) {
		n, err = to.Read(got)
	} else {
		n, err = io.ReadFull(to, got[:len(msg)])
	}
	if err != nil {
		t.Fatalf("Read: %v (after %d bytes)", err, n)
	}
	if !bytes.Equal(got[:n], msg) {
		t.Fatalf("Read %q, want %q", got[:n], msg)
	}
}

func testExchange(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	for _, c := range []bearers.Conn{client, server} {
		if c.LocalAddr() == nil || c.RemoteAddr() == nil {
			t.Errorf("%T: LocalAddr() = %v, RemoteAddr() = %v; want both set", c, c.LocalAddr(), c.RemoteAddr())
		}
		_ = c.Peer()
	}
	for i := 0; i < 3; i++ {
		exchange(t, b, client, server, []byte(fmt.Sprintf("ping %d from client", i)))
		exchange(t, b, server, client, []byte(fmt.Sprintf("pong %d from server", i)))
	}
}

func testConnClose(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	for name, c := range map[string]bearers.Conn{"dialed": client, "accepted": server} {
		if err := c.Close(); err != nil {
			t.Errorf("%s conn: Close: %v", name, err)
		}
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s conn: second Close = %v, want nil or an error wrapping net.ErrClosed", name, err)
		}
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s conn: Read after Close = %v, want an error wrapping net.ErrClosed", name, err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s conn: Write after Close = %v, want an error wrapping net.ErrClosed", name, err)
		}
	}
}

func testListenerClose(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := ln.Accept(context.Background())
		blocked <- err
	}()
	if err := ln.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want nil or an error wrapping net.ErrClosed", err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept blocked during Close returned %v, want an error wrapping net.ErrClosed", err)
		}
	case <-time.After(patience):
		t.Fatal("Accept blocked during Close did not return")
	}
	if _, err := ln.Accept(ctxT(t)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want an error wrapping net.ErrClosed", err)
	}
}

func testAcceptCancel(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	defer ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ln.Accept(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Accept(cancelled ctx) = %v, want an error wrapping context.Canceled", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept(ctx)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Accept cancelled while waiting = %v, want an error wrapping context.Canceled", err)
		}
	case <-time.After(patience):
		t.Fatal("Accept did not return after its context was cancelled")
	}

	// The listener still works after a cancelled Accept.
	client, err := b.Dial(ctxT(t), ln.Endpoint())
	if err != nil {
		t.Fatalf("Dial after a cancelled Accept: %v", err)
	}
	defer client.Close()
	if isDatagram(b) {
		if _, err := client.Write([]byte("hello")); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	server, err := ln.Accept(ctxT(t))
	if err != nil {
		t.Fatalf("Accept after a cancelled Accept: %v", err)
	}
	server.Close()
}

func testDialCancelled(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := b.Dial(ctx, ln.Endpoint())
	if err == nil {
		c.Close()
		t.Fatal("Dial with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Dial(cancelled ctx) = %v, want an error wrapping context.Canceled", err)
	}
}

func testDialClosedPort(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	ep := ln.Endpoint()
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c, err := b.Dial(ctxT(t), ep)
	if err != nil {
		return
	}
	defer c.Close()
	if !isDatagram(b) {
		t.Fatalf("Dial(%s) succeeded although nothing listens there", ep)
	}
	// Datagram bearers cannot know at Dial; nothing must come back.
	if _, err := c.Write([]byte("anyone?")); err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("Read from %s where nothing listens returned %d bytes and no error", ep, n)
	}
}

func testBadScheme(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	bad := listenEP
	bad.Scheme = "bearertest-no-such-scheme"
	if b.Info().Scheme == bad.Scheme {
		t.Skip("the bearer serves the bogus scheme")
	}
	if ln, err := b.Listen(ctxT(t), bad); err == nil {
		ln.Close()
		t.Errorf("Listen(%s) succeeded", bad)
	} else if !errors.Is(err, bearers.ErrBadEndpoint) {
		t.Errorf("Listen(%s) = %v, want an error wrapping bearers.ErrBadEndpoint", bad, err)
	}
	bad.Port = 9 // discard; nothing is sent
	if c, err := b.Dial(ctxT(t), bad); err == nil {
		c.Close()
		t.Errorf("Dial(%s) succeeded", bad)
	} else if !errors.Is(err, bearers.ErrBadEndpoint) {
		t.Errorf("Dial(%s) = %v, want an error wrapping bearers.ErrBadEndpoint", bad, err)
	}
}

func testConnOutlivesListener(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	defer ln.Close()
	client, err := b.Dial(ctxT(t), ln.Endpoint())
	if err != nil {
		t.Fatalf("Dial(%s): %v", ln.Endpoint(), err)
	}
	defer client.Close()
	server, err := ln.Accept(ctxT(t))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer server.Close()
	if err := ln.Close(); err != nil {
		t.Fatalf("Listener.Close: %v", err)
	}
	exchange(t, b, client, server, []byte("after the listener closed"))
	exchange(t, b, server, client, []byte("still here"))
}

// testStreamLarge sends a megabyte each way at once and checks every byte.
func testStreamLarge(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	const size = 1 << 20
	pattern := func(seed byte) []byte {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(i*7) ^ seed
		}
		return p
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(from, to bearers.Conn, seed byte) {
		want := pattern(seed)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := from.Write(want); err != nil {
				errs <- fmt.Errorf("write: %w", err)
			}
		}()
		go func() {
			defer wg.Done()
			_ = to.SetReadDeadline(time.Now().Add(patience))
			got := make([]byte, size)
			if _, err := io.ReadFull(to, got); err != nil {
				errs <- fmt.Errorf("read: %w", err)
				return
			}
			if !bytes.Equal(got, want) {
				errs <- errors.New("received bytes differ from those sent")
			}
		}()
	}
	run(client, server, 1)
	run(server, client, 2)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func readDatagram(t *testing.T, c bearers.Conn, buf []byte) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(patience))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return buf[:n]
}

func testDatagramBoundaries(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	sizes := []int{1, 700, 1400}
	for _, dir := range []struct {
		name     string
		from, to bearers.Conn
	}{{"client to server", client, server}, {"server to client", server, client}} {
		for i, size := range sizes {
			msg := bytes.Repeat([]byte{byte('a' + i)}, size)
			if _, err := dir.from.Write(msg); err != nil {
				t.Fatalf("%s: Write(%d bytes): %v", dir.name, size, err)
			}
		}
		buf := make([]byte, 4096)
		for i, size := range sizes {
			got := readDatagram(t, dir.to, buf)
			if want := bytes.Repeat([]byte{byte('a' + i)}, size); !bytes.Equal(got, want) {
				t.Fatalf("%s: datagram %d: read %d bytes (%.8q...), want %d bytes of %q", dir.name, i, len(got), got, size, rune('a'+i))
			}
		}
	}
}

func testDatagramTruncate(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	if _, err := client.Write(bytes.Repeat([]byte("x"), 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("next")); err != nil {
		t.Fatal(err)
	}
	if got := readDatagram(t, server, make([]byte, 10)); string(got) != "xxxxxxxxxx" {
		t.Fatalf("Read of 100 bytes into 10 = %q, want the first 10 bytes", got)
	}
	if got := readDatagram(t, server, make([]byte, 64)); string(got) != "next" {
		t.Fatalf("Read after a truncated datagram = %q, want %q (the rest of a datagram is discarded)", got, "next")
	}
}

func testDatagramPeers(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	ln, err := b.Listen(ctxT(t), listenEP)
	if err != nil {
		t.Fatalf("Listen(%s): %v", listenEP, err)
	}
	defer ln.Close()
	const peers = 4
	clients := make([]bearers.Conn, peers)
	for i := range clients {
		c, err := b.Dial(ctxT(t), ln.Endpoint())
		if err != nil {
			t.Fatalf("Dial %d: %v", i, err)
		}
		defer c.Close()
		clients[i] = c
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Write([]byte("peer " + strconv.Itoa(i))); err != nil {
				t.Errorf("peer %d: Write: %v", i, err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for range clients {
		s, err := ln.Accept(ctxT(t))
		if err != nil {
			t.Fatalf("Accept: %v (after %d peers)", err, len(seen))
		}
		defer s.Close()
		msg := string(readDatagram(t, s, make([]byte, 64)))
		if seen[msg] {
			t.Fatalf("two accepted conns read %q: peers are not separated", msg)
		}
		seen[msg] = true
		// Answer on the accepted conn: it must reach the right client only.
		if _, err := s.Write([]byte("re: " + msg)); err != nil {
			t.Fatalf("Write to %s: %v", msg, err)
		}
	}
	for i, c := range clients {
		got := string(readDatagram(t, c, make([]byte, 64)))
		if want := "re: peer " + strconv.Itoa(i); got != want {
			t.Errorf("client %d read %q, want %q", i, got, want)
		}
	}
}

func testDatagramReadDeadline(t *testing.T, b bearers.Bearer, listenEP bearers.Endpoint) {
	client, server := Pipe(t, b, listenEP)
	for name, c := range map[string]bearers.Conn{"dialed": client, "accepted": server} {
		// A deadline in the past fails at once.
		_ = c.SetReadDeadline(time.Unix(1, 0))
		_, err := c.Read(make([]byte, 16))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("%s conn: Read past the deadline = %v, want a net.Error with Timeout()", name, err)
		}
		// A deadline set while Read waits wakes it.
		_ = c.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 16))
			done <- err
		}()
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		select {
		case err := <-done:
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("%s conn: Read at the deadline = %v, want a net.Error with Timeout()", name, err)
			}
		case <-time.After(patience):
			t.Fatalf("%s conn: Read did not return at its deadline", name)
		}
		// Clearing the deadline makes the conn usable again.
		_ = c.SetReadDeadline(time.Time{})
	}
	exchange(t, b, client, server, []byte("after deadlines"))
	exchange(t, b, server, client, []byte("after deadlines, back"))
}
