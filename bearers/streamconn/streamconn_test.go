package streamconn_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/bearerkit/connect/bearers/streamconn"
)

// patience bounds every wait, so that a broken Conn fails a test instead of
// hanging it. It is not a performance expectation.
const patience = 10 * time.Second

// errCorrupted is what a fragile conn returns once a timeout has hit it.
var errCorrupted = errors.New("fragile: stream corrupted by an earlier timeout")

// fragile is a net.Conn that behaves like a TLS or WebSocket connection whose
// deadlines are set on the socket: once a call times out (possibly halfway
// through a record or frame), every later call fails. Only writes are fragile
// unless reads is set.
type fragile struct {
	net.Conn
	reads bool

	mu     sync.Mutex
	broken bool
}

func (f *fragile) Read(b []byte) (int, error) {
	if !f.reads {
		return f.Conn.Read(b)
	}
	return f.do(f.Conn.Read, b)
}

func (f *fragile) Write(b []byte) (int, error) { return f.do(f.Conn.Write, b) }

func (f *fragile) do(op func([]byte) (int, error), b []byte) (int, error) {
	f.mu.Lock()
	broken := f.broken
	f.mu.Unlock()
	if broken {
		return 0, errCorrupted
	}
	n, err := op(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		f.mu.Lock()
		f.broken = true
		f.mu.Unlock()
	}
	return n, err
}

// pipe returns a nettest.MakePipe whose ends are Conns with opts over the two
// ends of a net.Pipe, each made fragile (reads too unless opts.DirectReads:
// with direct reads, read deadlines reach the inner stream by design). stop
// closes both and waits until they are done.
func pipe(opts streamconn.Options) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		a, b := net.Pipe()
		s1 := streamconn.New(&fragile{Conn: a, reads: !opts.DirectReads}, opts)
		s2 := streamconn.New(&fragile{Conn: b, reads: !opts.DirectReads}, opts)
		stop = func() {
			s1.Close()
			s2.Close()
			<-s1.Done()
			<-s2.Done()
		}
		return s1, s2, stop, nil
	}
}

// tcpPair returns the two ends of a loopback TCP connection, closed when the
// test ends.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := nettest.NewLocalListener("tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// modes are the two ways of reading. Linger is short because nettest's
// CloseTimeout closes both ends with bytes in flight: each then waits for
// Linger before giving up on a peer that no longer reads.
var modes = []struct {
	name string
	opts streamconn.Options
}{
	{"buffered reads", streamconn.Options{Net: "test", Linger: 500 * time.Millisecond}},
	{"direct reads", streamconn.Options{Net: "test", Linger: 500 * time.Millisecond, DirectReads: true}},
}

// eachMode runs f as a subtest for each of the modes.
func eachMode(t *testing.T, f func(t *testing.T, opts streamconn.Options)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { f(t, m.opts) })
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// newPair is pipe for one test: the ends are closed when it ends.
func newPair(t *testing.T, opts streamconn.Options) (a, b net.Conn) {
	a, b, stop, _ := pipe(opts)()
	t.Cleanup(stop)
	return a, b
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(patience):
		t.Fatalf("%s did not happen within %v", what, patience)
	}
}

func TestFragileBreaks(t *testing.T) {
	// The test double must really model the problem: a timeout on it is
	// fatal, so nettest.TestConn over it passes only if no deadline reaches
	// it.
	a, b := net.Pipe()
	defer b.Close()
	f := &fragile{Conn: a, reads: true}
	defer f.Close()
	f.SetWriteDeadline(time.Now())
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past the deadline: %v", err)
	}
	f.SetWriteDeadline(time.Time{})
	if _, err := f.Write([]byte("x")); !errors.Is(err, errCorrupted) {
		t.Fatalf("Write after a timeout: %v, want %v", err, errCorrupted)
	}
}

func TestNetConn(t *testing.T) {
	eachMode(t, func(t *testing.T, opts streamconn.Options) { nettest.TestConn(t, pipe(opts)) })
	t.Run("small buffers", func(t *testing.T) {
		nettest.TestConn(t, pipe(streamconn.Options{BufferSize: 7, Linger: 500 * time.Millisecond}))
	})
}

func TestWriteTimeoutQueuesExactlyN(t *testing.T) {
	eachMode(t, func(t *testing.T, opts streamconn.Options) {
		a, b := newPair(t, opts)
		want := randomBytes(1 << 20)
		a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := a.Write(want) // b does not read yet: the queue fills up
		if !errors.Is(err, os.ErrDeadlineExceeded) || n >= len(want) {
			t.Fatalf("Write = %d, %v; want a short write and a timeout", n, err)
		}
		got := make([]byte, n+4)
		read := make(chan error, 1)
		go func() {
			b.SetReadDeadline(time.Now().Add(patience))
			_, err := io.ReadFull(b, got)
			read <- err
		}()
		a.SetWriteDeadline(time.Time{})
		if _, err := a.Write([]byte("tail")); err != nil {
			t.Fatalf("Write after a timeout: %v", err)
		}
		if err := <-read; err != nil {
			t.Fatalf("read %d bytes: %v", len(got), err)
		}
		if !bytes.Equal(got[:n], want[:n]) || string(got[n:]) != "tail" {
			t.Fatal("the peer did not read exactly the n bytes Write queued, then the next Write's")
		}
	})
}

func TestCloseDeliversQueued(t *testing.T) {
	eachMode(t, func(t *testing.T, opts streamconn.Options) {
		a, b := newPair(t, opts)
		want := randomBytes(1 << 20)
		type result struct {
			got []byte
			err error
		}
		read := make(chan result, 1)
		go func() {
			got, err := io.ReadAll(b)
			read <- result{got, err}
		}()
		if n, err := a.Write(want); n != len(want) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		r := <-read
		if r.err != nil || !bytes.Equal(r.got, want) {
			t.Fatalf("peer read %d bytes (%v), want the %d written before Close", len(r.got), r.err, len(want))
		}
	})
}

func TestLingerIsBounded(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close() // and nobody reads it
	c := streamconn.New(a, streamconn.Options{Linger: 50 * time.Millisecond})
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	wait(t, c.Done(), "giving up on undeliverable bytes after Linger")
}

func TestClosed(t *testing.T) {
	eachMode(t, func(t *testing.T, opts streamconn.Options) {
		a, _ := newPair(t, opts)
		pending := make(chan error, 1)
		go func() {
			_, err := a.Read(make([]byte, 1))
			pending <- err
		}()
		time.Sleep(10 * time.Millisecond) // let the Read block, most likely
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-pending:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("pending Read: %v, want net.ErrClosed", err)
			}
		case <-time.After(patience):
			t.Fatal("Close did not wake a pending Read")
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v, want net.ErrClosed", err)
		}
		if err := a.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("SetDeadline after Close: %v, want net.ErrClosed", err)
		}
		if err := a.(*streamconn.Conn).CloseWrite(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("CloseWrite after Close: %v, want net.ErrClosed", err)
		}
		wait(t, a.(*streamconn.Conn).Done(), "Done after Close")
	})
}

func TestCloseWrite(t *testing.T) {
	eachMode(t, func(t *testing.T, opts streamconn.Options) {
		tc, s := tcpPair(t)
		opts.CloseWrite = tc.CloseWrite
		c := streamconn.New(tc, opts)
		defer c.Close()
		s.SetDeadline(time.Now().Add(patience))
		c.SetDeadline(time.Now().Add(patience))

		c.Write([]byte("request"))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "request" {
			t.Fatalf("peer read %q, %v; want request then EOF", got, err)
		}
		if _, err := c.Write([]byte("more")); err == nil {
			t.Error("Write after CloseWrite succeeded")
		}
		if err := c.CloseWrite(); err != nil {
			t.Errorf("second CloseWrite: %v", err)
		}
		s.Write([]byte("reply"))
		s.Close()
		got, err = io.ReadAll(c)
		if err != nil || string(got) != "reply" {
			t.Fatalf("read %q, %v; want reply then EOF", got, err)
		}
	})
}

func TestCloseWriteUnsupported(t *testing.T) {
	a, b := newPair(t, streamconn.Options{})
	if err := a.(*streamconn.Conn).CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite without Options.CloseWrite: %v, want errors.ErrUnsupported", err)
	}
	// The connection is unaffected.
	go a.Write([]byte("still open"))
	got := make([]byte, len("still open"))
	b.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
}

func TestWriteErrorIsSticky(t *testing.T) {
	a, b := net.Pipe()
	b.Close() // every write on a fails from now on
	c := streamconn.New(a, streamconn.Options{Net: "test"})
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(patience))
	var err error
	for err == nil { // the first Writes may only be queued
		_, err = c.Write([]byte("x"))
	}
	for range 3 {
		if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("Write after a failed send: %v, want the send's error (%v)", err, io.ErrClosedPipe)
		}
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" || op.Net != "test" {
		t.Errorf("error %#v, want a *net.OpError for write on test", err)
	}
}

type addr string

func (a addr) Network() string { return "test" }
func (a addr) String() string  { return string(a) }

func TestAddrs(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c := streamconn.New(a, streamconn.Options{})
	if c.LocalAddr() != a.LocalAddr() || c.RemoteAddr() != a.RemoteAddr() {
		t.Errorf("addresses %v, %v; want the inner stream's", c.LocalAddr(), c.RemoteAddr())
	}
	c.Close()

	a, b = net.Pipe()
	defer b.Close()
	c = streamconn.New(a, streamconn.Options{Net: "test", LocalAddr: addr("here"), RemoteAddr: addr("there")})
	c.Close()
	if c.LocalAddr() != addr("here") || c.RemoteAddr() != addr("there") {
		t.Errorf("addresses %v, %v; want here, there", c.LocalAddr(), c.RemoteAddr())
	}
	_, err := c.Write(nil)
	if want := "write test here->there: use of closed network connection"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}
