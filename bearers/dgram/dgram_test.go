package dgram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// patience bounds waits so that a bug fails a test instead of hanging it.
const patience = 10 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func listen(t *testing.T, opts Options) *Listener {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(pc, bearers.Endpoint{Scheme: "udp"}, opts)
	t.Cleanup(func() { l.Close() })
	return l
}

// rawClient is a plain connected UDP socket to l.
func rawClient(t *testing.T, l *Listener) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dial is a dgram Conn connected to l.
func dial(t *testing.T, l *Listener, opts Options) *Conn {
	t.Helper()
	uc, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(uc, opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("Write(%q): %v", msg, err)
	}
}

func recv(t *testing.T, c net.Conn) string {
	t.Helper()
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(patience))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return string(buf[:n])
}

func accept(t *testing.T, l *Listener) *Conn {
	t.Helper()
	c, err := l.Accept(ctxT(t))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return c.(*Conn)
}

// eventually polls cond (there is no event to wait for in counters).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDemuxAndReply(t *testing.T) {
	l := listen(t, Options{})
	a, b := rawClient(t, l), rawClient(t, l)
	send(t, a, "from a")
	pa := accept(t, l)
	if got := recv(t, pa); got != "from a" {
		t.Fatalf("peer a read %q", got)
	}
	send(t, b, "from b")
	pb := accept(t, l)
	if got := recv(t, pb); got != "from b" {
		t.Fatalf("peer b read %q", got)
	}
	if pa.RemoteAddr().String() != a.LocalAddr().String() || pb.RemoteAddr().String() != b.LocalAddr().String() {
		t.Fatalf("remote addrs %v, %v; clients %v, %v", pa.RemoteAddr(), pb.RemoteAddr(), a.LocalAddr(), b.LocalAddr())
	}
	send(t, a, "again a")
	if got := recv(t, pa); got != "again a" {
		t.Fatalf("peer a read %q", got)
	}
	send(t, pb, "to b")
	send(t, pa, "to a")
	if got := recv(t, a); got != "to a" {
		t.Fatalf("client a read %q", got)
	}
	if got := recv(t, b); got != "to b" {
		t.Fatalf("client b read %q", got)
	}
	// The sender counts after its system call returns, which may be after the
	// datagram has arrived.
	eventually(t, "2 datagrams out", func() bool { return l.Stats().DatagramsOut == 2 })
	if s := l.Stats(); s.Peers != 2 || s.DatagramsIn != 3 || s.DatagramsOut != 2 {
		t.Fatalf("Stats = %+v, want 2 peers, 3 in, 2 out", s)
	}
}

func TestPeerCloseForgetsPeer(t *testing.T) {
	l := listen(t, Options{})
	a := rawClient(t, l)
	send(t, a, "one")
	p1 := accept(t, l)
	recv(t, p1)
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p1.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p1.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v", err)
	}
	send(t, a, "two")
	p2 := accept(t, l)
	if p2 == p1 {
		t.Fatal("Accept returned the closed peer")
	}
	if got := recv(t, p2); got != "two" {
		t.Fatalf("new peer read %q, want %q", got, "two")
	}
	// The socket and the new peer still work.
	send(t, p2, "still here")
	if got := recv(t, a); got != "still here" {
		t.Fatalf("client read %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	l := listen(t, Options{IdleTimeout: 30 * time.Millisecond})
	a := rawClient(t, l)
	send(t, a, "hello")
	p := accept(t, l)
	// Nothing more is sent: the peer is forgotten and Read fails (perhaps
	// after returning "hello", if it comes first).
	var err error
	for err == nil {
		_, err = p.Read(make([]byte, 8))
	}
	if !errors.Is(err, ErrIdleTimeout) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read of an idle peer = %v, want an error wrapping ErrIdleTimeout and net.ErrClosed", err)
	}
	if _, err := p.Write([]byte("x")); !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("Write to an idle peer = %v, want an error wrapping ErrIdleTimeout", err)
	}
	send(t, a, "back")
	p2 := accept(t, l)
	if p2 == p || p2.RemoteAddr().String() != a.LocalAddr().String() {
		t.Fatalf("Accept after expiry = %p from %v, want a new peer from %v", p2, p2.RemoteAddr(), a.LocalAddr())
	}
}

func TestMaxPeers(t *testing.T) {
	l := listen(t, Options{MaxPeers: 2})
	cs := []*net.UDPConn{rawClient(t, l), rawClient(t, l), rawClient(t, l)}
	for i, c := range cs {
		send(t, c, "peer "+strconv.Itoa(i))
		if i < 2 {
			recv(t, accept(t, l))
		}
	}
	eventually(t, "the third datagram to be dropped", func() bool { return l.Stats().DropsNoPeer == 1 })
	if s := l.Stats(); s.Peers != 2 || s.DatagramsIn != 2 {
		t.Fatalf("Stats = %+v, want 2 peers and 2 datagrams in", s)
	}
}

func TestRecvQueueBound(t *testing.T) {
	l := listen(t, Options{RecvQueue: 4})
	a := rawClient(t, l)
	send(t, a, "0")
	p := accept(t, l)
	for i := 1; i < 20; i++ {
		send(t, a, strconv.Itoa(i))
	}
	eventually(t, "20 datagrams to be queued or dropped", func() bool {
		s := l.Stats()
		return s.DatagramsIn+s.DropsQueueFull == 20
	})
	if s := l.Stats(); s.DatagramsIn != 4 || s.DropsQueueFull != 16 {
		t.Fatalf("Stats = %+v, want 4 queued and 16 dropped", s)
	}
	if s := p.Stats(); s.DatagramsIn != 4 || s.DropsQueueFull != 16 {
		t.Fatalf("peer Stats = %+v, want 4 queued and 16 dropped", s)
	}
	for i := 0; i < 4; i++ {
		if got := recv(t, p); got != strconv.Itoa(i) {
			t.Fatalf("datagram %d = %q (the oldest are kept)", i, got)
		}
	}
}

func TestSizes(t *testing.T) {
	l := listen(t, Options{})
	c := dial(t, l, Options{})
	send(t, c, "hi")
	p := accept(t, l)
	recv(t, p)
	for _, size := range []int{0, 1, 255, 256, 257, 2048, 2049, 16384, 65507} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("Write(%d bytes): %v", size, err)
		}
		if got := recv(t, p); got != string(msg) {
			t.Fatalf("sent %d bytes, read %d", size, len(got))
		}
		if _, err := p.Write(msg); err != nil {
			t.Fatalf("peer Write(%d bytes): %v", size, err)
		}
		if got := recv(t, c); got != string(msg) {
			t.Fatalf("peer sent %d bytes, read %d", size, len(got))
		}
	}
	big := make([]byte, MaxDatagramSize+1)
	for name, w := range map[string]*Conn{"dialed": c, "peer": p} {
		if n, err := w.Write(big); n != 0 || !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: Write(%d bytes) = %d, %v; want 0 and ErrTooLarge", name, len(big), n, err)
		}
		if n, err := w.WriteBatch([][]byte{[]byte("ok"), big}); n != 0 || !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: WriteBatch with an oversized datagram = %d, %v; want 0 and ErrTooLarge", name, n, err)
		}
	}
}

func TestBatchAPIs(t *testing.T) {
	l := listen(t, Options{})
	c := dial(t, l, Options{})
	send(t, c, "hi")
	p := accept(t, l)
	recv(t, p)
	const count = 64
	bufs := make([][]byte, count)
	for i := range bufs {
		bufs[i] = []byte(fmt.Sprintf("datagram %02d", i))
	}
	eventually(t, "the first datagram to be counted", func() bool { return c.Stats().DatagramsOut == 1 })
	before := c.Stats()
	if n, err := c.WriteBatch(bufs); n != count || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := 0
	rbufs := make([][]byte, 16)
	for i := range rbufs {
		rbufs[i] = make([]byte, 64)
	}
	sizes := make([]int, len(rbufs))
	for got < count {
		_ = p.SetReadDeadline(time.Now().Add(patience))
		n, err := p.ReadBatch(rbufs, sizes)
		if err != nil {
			t.Fatalf("ReadBatch after %d: %v", got, err)
		}
		for i := 0; i < n; i++ {
			if want := fmt.Sprintf("datagram %02d", got); string(rbufs[i][:sizes[i]]) != want {
				t.Fatalf("datagram %d = %q, want %q", got, rbufs[i][:sizes[i]], want)
			}
			got++
		}
	}
	eventually(t, "the sender to count", func() bool { return c.Stats().DatagramsOut-before.DatagramsOut == count })
	after := c.Stats()
	if sent := after.DatagramsOut - before.DatagramsOut; sent != count {
		t.Fatalf("DatagramsOut grew by %d, want %d", sent, count)
	}
	if calls := after.WriteBatches - before.WriteBatches; calls >= count {
		t.Errorf("%d datagrams took %d sendmmsg calls: no coalescing", count, calls)
	}
	if _, err := p.ReadBatch(rbufs, sizes[:1]); err == nil {
		t.Error("ReadBatch with too few sizes succeeded")
	}
}

func TestDeadlines(t *testing.T) {
	l := listen(t, Options{})
	c := dial(t, l, Options{})
	send(t, c, "hi")
	p := accept(t, l)
	recv(t, p)
	for _, conn := range []*Conn{p, c} { // the dialed conn is closed last
		name := "peer"
		if conn == c {
			name = "dialed"
		}
		_ = conn.SetDeadline(time.Unix(1, 0))
		_, rerr := conn.Read(make([]byte, 8))
		_, werr := conn.Write([]byte("x"))
		for op, err := range map[string]error{"Read": rerr, "Write": werr} {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("%s: %s past the deadline = %v, want a timeout", name, op, err)
			}
		}
		_ = conn.SetDeadline(time.Time{})
		// A future deadline fires while Read waits.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s: Read with a future deadline = %v, want a timeout", name, err)
		}
		// Extending a deadline that has passed makes Read wait again.
		_ = conn.SetReadDeadline(time.Now().Add(patience))
		done := make(chan error, 1)
		go func() {
			_, err := conn.Read(make([]byte, 8))
			done <- err
		}()
		// Close wakes the blocked Read for the dialed conn; for the peer,
		// a datagram does.
		if conn == p {
			send(t, c, "wake")
			if err := <-done; err != nil {
				t.Errorf("peer: Read = %v", err)
			}
		} else {
			conn.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Errorf("dialed: Read during Close = %v, want net.ErrClosed", err)
			}
		}
	}
}

func TestListenerClose(t *testing.T) {
	l := listen(t, Options{})
	a := rawClient(t, l)
	send(t, a, "hi")
	p := accept(t, l)
	blocked := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 8))
		if err == nil { // the first datagram
			_, err = p.Read(make([]byte, 8))
		}
		blocked <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := <-blocked; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("peer Read during listener Close = %v", err)
	}
	if _, err := p.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("peer Write after listener Close = %v", err)
	}
	if _, err := l.Accept(ctxT(t)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v", err)
	}
	if _, err := l.PacketConn().WriteTo([]byte("x"), a.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the socket is still open after Close: %v", err)
	}
}

func TestCloseFlushes(t *testing.T) {
	l := listen(t, Options{})
	c := dial(t, l, Options{})
	const count = 100
	for i := 0; i < count; i++ {
		send(t, c, strconv.Itoa(i))
	}
	c.Close()
	p := accept(t, l)
	for i := 0; i < count; i++ {
		if got := recv(t, p); got != strconv.Itoa(i) {
			t.Fatalf("datagram %d = %q", i, got)
		}
	}
}

func TestBadSockets(t *testing.T) {
	l := NewListener(nil, bearers.Endpoint{}, Options{})
	if _, err := l.Accept(ctxT(t)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a nil socket = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if c := NewConn(nil, Options{}); c != nil {
		if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on a nil socket = %v", err)
		}
		c.Close()
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(pc, Options{})
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write on an unconnected socket = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	l := listen(t, Options{})
	addr := l.Addr().(*net.UDPAddr)
	l.Close()
	uc, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(uc, Options{})
	defer c.Close()
	send(t, c, "anyone?")
	_ = c.SetReadDeadline(time.Now().Add(patience))
	if _, err := c.Read(make([]byte, 8)); err == nil || errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after sending to a closed port = %v, want the kernel's refusal", err)
	}
	eventually(t, "1 datagram out", func() bool { return c.Stats().DatagramsOut == 1 })
}

func TestIPv6(t *testing.T) {
	pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	l := NewListener(pc, bearers.Endpoint{Scheme: "udp"}, Options{})
	defer l.Close()
	if ep := l.Endpoint(); ep.Host != "::1" || ep.Port == 0 {
		t.Fatalf("Endpoint = %s", ep)
	}
	c := dial(t, l, Options{})
	send(t, c, "over v6")
	p := accept(t, l)
	if got := recv(t, p); got != "over v6" {
		t.Fatalf("read %q", got)
	}
	send(t, p, "back over v6")
	if got := recv(t, c); got != "back over v6" {
		t.Fatalf("read %q", got)
	}
}

// TestConcurrent hammers one listener from several clients while peers are
// read, written, given deadlines and closed, for the race detector.
func TestConcurrent(t *testing.T) {
	l := listen(t, Options{RecvQueue: 64})
	const clients, msgs = 4, 200
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		c := dial(t, l, Options{})
		send(t, c, "hi")
		p := accept(t, l)
		recv(t, p)
		wg.Add(5)
		go func() {
			defer wg.Done()
			for j := 0; j < msgs; j++ {
				if _, err := c.Write([]byte("x")); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 8)
			for {
				_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 8)
			for {
				_ = p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if _, err := p.Read(buf); err != nil {
					return
				}
				_, _ = p.Write(buf[:1])
			}
		}()
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				_ = p.SetDeadline(time.Now().Add(time.Duration(j) * time.Millisecond))
				_ = p.Stats()
				_ = l.Stats()
			}
		}()
		go func() {
			defer wg.Done()
			time.Sleep(20 * time.Millisecond)
			p.Close()
		}()
	}
	// Datagrams after a peer's Close make new peers; accept and close them.
	ctx, cancel := context.WithCancel(context.Background())
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := l.Accept(ctx)
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	wg.Wait()
	cancel()
	<-acceptDone
}

// TestOffloadBoundaries sends runs of datagrams that segmentation offload
// coalesces (equal sizes, a shorter last one, an empty one, large ones) and
// checks that every datagram arrives with its own size, with offload on and
// off, from a dialed Conn and from a listener's peer.
func TestOffloadBoundaries(t *testing.T) {
	sizes := []int{100, 100, 100, 50, 100, 100, 0, 100, 7, 7, 7, 7, 3000, 3000, 3000, 2999, 1, 1}
	for i := 0; i < 64+10; i++ {
		sizes = append(sizes, 1200)
	}
	for _, noOffload := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoOffload=%v", noOffload), func(t *testing.T) {
			opts := Options{NoOffload: noOffload}
			l := listen(t, opts)
			c := dial(t, l, opts)
			send(t, c, "hi")
			p := accept(t, l)
			recv(t, p)
			for _, dir := range []struct {
				name     string
				from, to *Conn
			}{{"dialed to peer", c, p}, {"peer to dialed", p, c}} {
				bufs := make([][]byte, len(sizes))
				for i, n := range sizes {
					bufs[i] = bytes.Repeat([]byte{byte(i)}, n)
				}
				if n, err := dir.from.WriteBatch(bufs); n != len(bufs) || err != nil {
					t.Fatalf("%s: WriteBatch = %d, %v", dir.name, n, err)
				}
				for i, want := range bufs {
					if got := recv(t, dir.to); got != string(want) {
						t.Fatalf("%s: datagram %d: %d bytes, want %d bytes of %d", dir.name, i, len(got), len(want), i)
					}
				}
			}
			gso, gro := false, false
			if !noOffload {
				gso, gro = setupOffload(l.PacketConn())
			}
			eventually(t, "the sender to count", func() bool { return l.Stats().DatagramsOut == uint64(len(sizes)) })
			ls, cs := l.Stats(), c.Stats()
			t.Logf("listener %+v", ls)
			t.Logf("dialed   %+v", cs)
			if gso != (ls.OffloadOut > 0) || gso != (cs.OffloadOut > 0) {
				t.Errorf("segmentation offload available: %v, but OffloadOut = %d, %d", gso, ls.OffloadOut, cs.OffloadOut)
			}
			if gso && gro && (ls.OffloadIn == 0 || cs.OffloadIn == 0) {
				t.Errorf("UDP_GRO available but OffloadIn = %d, %d", ls.OffloadIn, cs.OffloadIn)
			}
		})
	}
}

// TestDialedBackpressure fills a dialed Conn's receive queue: its reader
// stops taking datagrams from the socket instead of dropping them.
func TestDialedBackpressure(t *testing.T) {
	l := listen(t, Options{})
	c := dial(t, l, Options{RecvQueue: 4})
	send(t, c, "hi")
	p := accept(t, l)
	recv(t, p)
	const count = 50
	for i := 0; i < count; i++ {
		send(t, p, strconv.Itoa(i))
	}
	for i := 0; i < count; i++ {
		if got := recv(t, c); got != strconv.Itoa(i) {
			t.Fatalf("datagram %d = %q", i, got)
		}
	}
	if s := c.Stats(); s.DropsQueueFull != 0 {
		t.Fatalf("Stats = %+v: a dialed Conn dropped datagrams", s)
	}
}
