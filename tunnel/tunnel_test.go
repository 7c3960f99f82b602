package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

func TestOpenRoundTrip(t *testing.T) {
	for _, o := range []Open{{Service: "redis", Origin: "127.0.0.1:5000"}, {Service: "ssh"}, {Service: strings.Repeat("é", 128), Origin: "[::1]:1"}} {
		b, err := AppendOpen(nil, o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeOpen(b)
		if err != nil || got != o {
			t.Fatalf("DecodeOpen(AppendOpen(%+v)) = %+v, %v", o, got, err)
		}
	}
	if _, err := AppendOpen(nil, Open{}); err == nil {
		t.Fatal("AppendOpen accepted an Open without a service")
	}
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{nil, "not an Open of version 1"},
		{[]byte{2, 0, 1, 'a', 0, 0}, "not an Open of version 1"},
		{[]byte{1, 0}, "cut short"},
		{[]byte{1, 0, 5, 'a'}, "field 1: 5 bytes (at most 256, 1 left)"},
		{[]byte{1, 0, 1, 0xff, 0, 0}, "field 1 is not UTF-8"},
		{[]byte{1, 0, 0, 0, 0}, "names no service"},
		{[]byte{1, 0, 1, 'a', 0, 0, 9}, "1 bytes too many"},
		{[]byte{1, 0, 1, 'a'}, "cut short"},
	} {
		if _, err := DecodeOpen(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("DecodeOpen(%v) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestOpened(t *testing.T) {
	if err := DecodeOpened(AppendOpened(nil, "")); err != nil {
		t.Fatal(err)
	}
	var re *RefusedError
	if err := DecodeOpened(AppendOpened(nil, "no such tunnel")); !errors.As(err, &re) || re.Reason != "no such tunnel" ||
		err.Error() != "tunnel refused by the server: no such tunnel" {
		t.Fatalf("refusal: %v", err)
	}
	for _, b := range [][]byte{nil, {0, 0}, {7}} {
		if err := DecodeOpened(b); err == nil || !strings.Contains(err.Error(), "malformed answer") {
			t.Errorf("DecodeOpened(%v) = %v", b, err)
		}
	}
}

func TestProxyV2(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"192.0.2.7:40000", "127.0.0.1:6379"},
		{"[2001:db8::7]:40000", "[::1]:22"},
		{"[::ffff:192.0.2.7]:1", "127.0.0.1:2"}, // mapped: written as IPv4
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		b, err := AppendProxyV2(nil, src, dst)
		if err != nil {
			t.Fatal(err)
		}
		r := bytes.NewReader(append(b, "payload"...))
		h, err := ParseProxyV2(r)
		if err != nil {
			t.Fatal(err)
		}
		want := ProxyHeader{Source: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), Destination: dst}
		if h != want {
			t.Fatalf("parsed %+v, want %+v", h, want)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "payload" {
			t.Fatalf("ParseProxyV2 read into the payload: %q left", rest)
		}
	}
	// The header's exact bytes for IPv4, from the specification's layout.
	b, _ := AppendProxyV2(nil, netip.MustParseAddrPort("1.2.3.4:258"), netip.MustParseAddrPort("5.6.7.8:772"))
	want := append(append([]byte{}, proxySig[:]...), 0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4)
	if !bytes.Equal(b, want) {
		t.Fatalf("header % x\nwant   % x", b, want)
	}
	// Mixed families: both as IPv6.
	b, _ = AppendProxyV2(nil, netip.MustParseAddrPort("1.2.3.4:1"), netip.MustParseAddrPort("[2001:db8::1]:2"))
	if h, err := ParseProxyV2(bytes.NewReader(b)); err != nil || h.Source != netip.MustParseAddrPort("[::ffff:1.2.3.4]:1") {
		t.Fatalf("mixed families: %+v %v", h, err)
	}
	local := append(append([]byte{}, proxySig[:]...), 0x20, 0x00, 0, 0)
	if h, err := ParseProxyV2(bytes.NewReader(local)); err != nil || !h.Local {
		t.Fatalf("LOCAL: %+v %v", h, err)
	}
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "no version 2 signature"},
		{append(append([]byte{}, proxySig[:]...), 0x21, 0x11, 0xff, 0xff), "65535 bytes of addresses"},
		{append(append([]byte{}, proxySig[:]...), 0x21, 0x11, 0, 4, 1, 2, 3, 4), "too few for the family"},
		{append(append([]byte{}, proxySig[:]...), 0x21, 0x12, 0, 0), "only TCP"},
		{append(append([]byte{}, proxySig[:]...), 0x31, 0x11, 0, 0), "version/command byte"},
		{proxySig[:5], "unexpected EOF"},
	} {
		if _, err := ParseProxyV2(bytes.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseProxyV2(% x) = %v, want %q", c.in, err, c.want)
		}
	}
}

// rig is a server accepting resume streams for tunnels on loopback, whose
// connections the test can break, and a backend.
type rig struct {
	t      *testing.T
	tbl    *resume.Table
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn // server-side connections, newest last
	wg     sync.WaitGroup
	opened chan Open
	errs   chan error
}

func fastConfig() *resume.Config {
	c := resume.DefaultConfig()
	c.RetryMin, c.RetryMax = 5*time.Millisecond, 50*time.Millisecond
	c.Linger = 30 * time.Second
	return c
}

func newRig(t *testing.T, target func(Open) (Target, error)) *rig {
	tbl, err := resume.NewTable(fastConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, tbl: tbl, ln: ln, opened: make(chan Open, 16), errs: make(chan error, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				s, isNew, err := tbl.Accept(ctx, wire.NewStreamConn(c, wire.DefaultMaxPayload))
				if err != nil || !isNew {
					return
				}
				o, _, err := Accept(ctx, s, target, func(ctx context.Context, addr string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				})
				r.opened <- o
				s.Flush(ctx)
				s.Close()
				r.errs <- err
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		tbl.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// breakNewest resets the server's newest connection.
func (r *rig) breakNewest() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.conns); n > 0 {
		abort(r.conns[n-1])
	}
}

func (r *rig) open(ctx context.Context) *resume.Stream {
	s, err := resume.Open(ctx, func(ctx context.Context) (wire.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, wire.DefaultMaxPayload), nil
	}, fastConfig())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	return s
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// digestBackend serves one connection: optionally reads a PROXY header
// (sent on hdr), then writes reply while it reads everything until the
// client's half-close, then writes the SHA-256 of what it read, and closes.
func digestBackend(t *testing.T, proxy bool, reply []byte, hdr chan<- ProxyHeader) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if proxy {
			h, err := ParseProxyV2(c)
			if err != nil {
				t.Errorf("backend: %v", err)
				return
			}
			hdr <- h
		}
		wrote := make(chan error, 1)
		go func() { _, err := c.Write(reply); wrote <- err }()
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		if err := <-wrote; err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		c.Write(h.Sum(nil))
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestTunnelAcrossBreaks streams megabytes both ways through a tunnel whose
// link is reset again and again, and checks both directions byte for byte;
// the backend sees one connection throughout, and the half-close reaches it
// (it answers only after its input ended). The server side pumps with
// resume's SendFrom and CopyTo; the client side too, or (plain) with Send
// and Recv only.
func TestTunnelAcrossBreaks(t *testing.T) {
	t.Run("resume", func(t *testing.T) { testTunnelAcrossBreaks(t, false) })
	t.Run("plain", func(t *testing.T) { testTunnelAcrossBreaks(t, true) })
}

// plainStream hides every method of a Stream but those of the interface.
type plainStream struct{ Stream }

func testTunnelAcrossBreaks(t *testing.T, plain bool) {
	down := make([]byte, 16<<20)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range down {
		down[i] = byte(rnd.Uint32())
	}
	hdrs := make(chan ProxyHeader, 1)
	backend := digestBackend(t, true, down, hdrs)
	src := netip.MustParseAddrPort("192.0.2.9:41000")
	r := newRig(t, func(o Open) (Target, error) {
		if o.Service != "echo" {
			return Target{}, errors.New("no tunnel " + o.Service)
		}
		h, err := AppendProxyV2(nil, src, netip.MustParseAddrPort(backend))
		return Target{Address: backend, ProxyHeader: h}, err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := r.open(ctx)
	if err := Dial(ctx, s, "echo", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	app, local := tcpPair(t)

	// Break the link again and again while the bytes flow: each time the
	// client has reconnected, reset the server's side of the connection.
	// Bounded: at most maxBreaks, and the upload stops when they are done
	// or after 15 s.
	const maxBreaks = 40
	breaks := 0
	stop := make(chan struct{})
	var bw sync.WaitGroup
	bw.Add(1)
	go func() {
		defer bw.Done()
		defer close(stop)
		deadline := time.Now().Add(15 * time.Second)
		seen := 0
		for breaks < maxBreaks && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			st := s.Stats()
			if !st.Connected || st.Attaches == seen {
				continue // not resumed yet
			}
			seen = st.Attaches
			time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
			r.breakNewest()
			breaks++
		}
	}()

	pumped := make(chan error, 1)
	var ps Stream = s
	if plain {
		ps = plainStream{s}
	}
	go func() { _, err := Pump(ctx, local, ps); pumped <- err }()
	sent := sha256.New()
	var upBytes int
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		src := rand.New(rand.NewPCG(3, 4))
		chunk := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				app.CloseWrite()
				return
			default:
			}
			for i := range chunk {
				chunk[i] = byte(src.Uint32())
			}
			if _, err := app.Write(chunk); err != nil {
				return
			}
			sent.Write(chunk)
			upBytes += len(chunk)
		}
	}()
	got, err := io.ReadAll(app)
	bw.Wait()
	<-wrote
	if err != nil {
		t.Fatal(err)
	}
	sum := sent.Sum(nil)
	if len(got) != len(down)+len(sum) || !bytes.Equal(got[:len(down)], down) || !bytes.Equal(got[len(down):], sum) {
		t.Fatalf("received %d bytes, want %d (the reply, then the digest of the %d bytes sent)", len(got), len(down)+len(sum), upBytes)
	}
	if err := <-pumped; err != nil {
		t.Fatalf("client pump: %v", err)
	}
	if err := <-r.errs; err != nil {
		t.Fatalf("server side: %v", err)
	}
	if h := <-hdrs; h.Source != src {
		t.Fatalf("backend saw source %v, want %v", h.Source, src)
	}
	if breaks == 0 {
		t.Fatal("the link was never broken")
	}
	if a := s.Stats().Attaches; a < breaks {
		t.Fatalf("%d connections for %d breaks", a, breaks)
	}
	t.Logf("%d link breaks, %d bytes up, %d down, %d connections", breaks, upBytes, len(down), s.Stats().Attaches)
}

// A tunnel to a target that does not exist, or not configured, is refused
// with the reason.
func TestTunnelRefused(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	r := newRig(t, func(o Open) (Target, error) {
		if o.Service == "gone" {
			return Target{Address: deadAddr}, nil
		}
		return Target{}, errors.New(`no tunnel "` + o.Service + `" on this server`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var re *RefusedError
	if err := Dial(ctx, r.open(ctx), "nope", ""); !errors.As(err, &re) || re.Reason != `no tunnel "nope" on this server` {
		t.Fatalf("unknown tunnel: %v", err)
	}
	if err := Dial(ctx, r.open(ctx), "gone", ""); !errors.As(err, &re) || !strings.Contains(re.Reason, "tunnel gone: cannot connect to its target "+deadAddr) {
		t.Fatalf("dead target: %v", err)
	}
}

// A reset of the local connection resets the backend's too.
func TestTunnelReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	backendErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			backendErr <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		backendErr <- err
	}()
	r := newRig(t, func(Open) (Target, error) { return Target{Address: ln.Addr().String()}, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := r.open(ctx)
	if err := Dial(ctx, s, "x", ""); err != nil {
		t.Fatal(err)
	}
	app, local := tcpPair(t)
	pumped := make(chan error, 1)
	go func() { _, err := Pump(ctx, local, s); pumped <- err }()
	app.Write([]byte("some bytes"))
	app.SetLinger(0)
	app.Close() // a reset
	if err := <-pumped; err == nil {
		t.Fatal("the client pump ended cleanly after a reset")
	}
	s.Close() // tells the server
	select {
	case err := <-backendErr:
		if err == nil {
			t.Fatal("the backend saw a clean end, not a reset")
		}
	case <-ctx.Done():
		t.Fatal("the backend connection was never ended")
	}
}
