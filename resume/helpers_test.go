package resume

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

// tcpServer is a Table behind a loopback TCP listener, as a Connect server
// would run it (minus registration). New sessions arrive on streams.
type tcpServer struct {
	tbl     *Table
	ln      net.Listener
	streams chan *Stream
	max     int

	mu   sync.Mutex
	errs []error    // Accept failures
	errc chan error // the same, as they happen
	wg   sync.WaitGroup
}

func newTCPServer(t testing.TB, cfg *Config) *tcpServer {
	t.Helper()
	tbl, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{tbl: tbl, ln: ln, streams: make(chan *Stream, 16), max: tbl.cfg.MaxMessage, errc: make(chan error, 1024)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				st, isNew, err := tbl.Accept(context.Background(), wire.NewStreamConn(c, s.max))
				if err != nil {
					s.mu.Lock()
					s.errs = append(s.errs, err)
					s.mu.Unlock()
					select {
					case s.errc <- err:
					default: // nobody is counting
					}
					return
				}
				if isNew {
					s.streams <- st
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tbl.Close()
		s.wg.Wait()
	})
	return s
}

// waitErrors waits until the server has recorded n Accept failures.
func (s *tcpServer) waitErrors(t testing.TB, n int) []error {
	t.Helper()
	for len(s.acceptErrors()) < n {
		select {
		case <-s.errc:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d Accept errors after 10 s, want %d: %v", len(s.acceptErrors()), n, s.acceptErrors())
		}
	}
	return s.acceptErrors()
}

func (s *tcpServer) acceptErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

func (s *tcpServer) next(t testing.TB) *Stream {
	t.Helper()
	select {
	case st := <-s.streams:
		return st
	case <-time.After(10 * time.Second):
		t.Fatal("no session arrived at the server")
		return nil
	}
}

// tcpDialer dials addr over loopback TCP and frames the connection.
func tcpDialer(addr string, maxPayload int) DialFunc {
	return func(ctx context.Context) (wire.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, maxPayload), nil
	}
}

// The test traffic: message seq of a direction has a size and content that
// both ends compute from (seed, seq), so that the receiver checks every
// byte and every position: an 8-byte sequence number, then bytes of a shared
// random pattern at an offset that depends on seq.

type traffic struct {
	seed    uint64
	maxSize int
	pattern []byte
}

func newTraffic(seed uint64, maxSize int) *traffic {
	r := rand.New(rand.NewPCG(seed, 7))
	p := make([]byte, 1<<20+maxSize)
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	return &traffic{seed: seed, maxSize: maxSize, pattern: p}
}

func mix(x uint64) uint64 { // splitmix64
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func (tr *traffic) size(seq uint64) int {
	h := mix(tr.seed ^ seq)
	if h%16 == 0 {
		return 8 + int(h>>8)%64 // some tiny messages
	}
	return 8 + int(h>>8)%(tr.maxSize-8+1)
}

func (tr *traffic) body(seq uint64, n int) []byte {
	off := int(mix(seq^tr.seed<<1) % (1 << 20))
	return tr.pattern[off : off+n-8]
}

func (tr *traffic) message(buf []byte, seq uint64) []byte {
	n := tr.size(seq)
	buf = binary.BigEndian.AppendUint64(buf[:0], seq)
	return append(buf, tr.body(seq, n)...)
}

func (tr *traffic) check(m []byte, seq uint64) error {
	if len(m) < 8 {
		return fmt.Errorf("message %d: %d bytes, want %d", seq, len(m), tr.size(seq))
	}
	if got := binary.BigEndian.Uint64(m); got != seq {
		return fmt.Errorf("got message %d where %d was due (lost, duplicated or reordered)", got, seq)
	}
	if n := tr.size(seq); len(m) != n {
		return fmt.Errorf("message %d: %d bytes, want %d", seq, len(m), n)
	}
	if !bytes.Equal(m[8:], tr.body(seq, len(m))) {
		return fmt.Errorf("message %d: content differs", seq)
	}
	return nil
}

// sendAll sends messages 1, 2, ... of tr until total bytes are sent, then
// CloseSend. It returns the count and a digest of everything sent.
func sendAll(ctx context.Context, s *Stream, tr *traffic, total int) (n uint64, digest []byte, err error) {
	h := sha256.New()
	buf := make([]byte, 0, tr.maxSize)
	for sent := 0; sent < total; {
		n++
		m := tr.message(buf, n)
		if err := s.Send(ctx, m); err != nil {
			return n, nil, fmt.Errorf("send %d: %w", n, err)
		}
		h.Write(m)
		sent += len(m)
	}
	return n, h.Sum(nil), s.CloseSend()
}

// recvAll receives and checks messages until io.EOF.
func recvAll(ctx context.Context, s *Stream, tr *traffic) (n uint64, digest []byte, err error) {
	var h hash.Hash = sha256.New()
	for {
		m, err := s.Recv(ctx)
		if err == io.EOF {
			return n, h.Sum(nil), nil
		}
		if err != nil {
			return n, nil, fmt.Errorf("recv after %d messages: %w", n, err)
		}
		n++
		if err := tr.check(m, n); err != nil {
			return n, nil, err
		}
		h.Write(m)
	}
}

// faultProxy is a loopback TCP proxy that breaks the connections it relays:
// each connection is cut after a number of bytes (both directions counted)
// drawn from a seeded schedule — mostly in the middle of a frame — by a
// clean close, a reset, or a black hole (nothing forwarded any more, the
// sockets left open until the endpoints give up on them).
type faultProxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	rng        *rand.Rand
	breaks     int
	maxBreaks  int
	blackholes int // still to inject
	kinds      map[string]int
	conns      map[*proxyConn]struct{}
	closed     bool
	wg         sync.WaitGroup
}

type proxyConn struct {
	a, b   *net.TCPConn
	cutAt  int64 // bytes after which to break; <0: never
	kind   string
	mu     sync.Mutex
	moved  int64
	broken bool
	done   chan struct{}
	once   sync.Once
}

func newFaultProxy(t testing.TB, target string, seed uint64, maxBreaks, blackholes int) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, rng: rand.New(rand.NewPCG(seed, 99)), maxBreaks: maxBreaks,
		blackholes: blackholes, kinds: map[string]int{}, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// plan draws when and how the next connection breaks: ~10% within the
// first 300 bytes (during the handshake), ~25% within the first 64 KiB
// (during the replay), the rest within 1 MiB.
func (p *faultProxy) plan() (int64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.breaks >= p.maxBreaks {
		return -1, ""
	}
	p.breaks++
	var at int64
	switch r := p.rng.IntN(100); {
	case r < 10:
		at = 1 + p.rng.Int64N(300)
	case r < 35:
		at = 300 + p.rng.Int64N(64<<10)
	default:
		at = 64<<10 + p.rng.Int64N(1<<20)
	}
	kind := "close"
	switch {
	case p.blackholes > 0 && p.breaks%50 == 25:
		p.blackholes--
		kind = "blackhole"
	case p.rng.IntN(2) == 0:
		kind = "reset"
	}
	p.kinds[kind]++
	return at, kind
}

func (p *faultProxy) stats() (int, map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := map[string]int{}
	for n, v := range p.kinds {
		k[n] = v
	}
	return p.breaks, k
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		at, kind := p.plan()
		pc := &proxyConn{a: c.(*net.TCPConn), b: up.(*net.TCPConn), cutAt: at, kind: kind, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			pc.a.Close()
			pc.b.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(pc, pc.a, pc.b)
		go p.pipe(pc, pc.b, pc.a)
	}
}

// pipe copies src to dst until an error or the planned break.
func (p *faultProxy) pipe(pc *proxyConn, src, dst *net.TCPConn) {
	defer p.wg.Done()
	defer pc.shut(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			pc.mu.Lock()
			take := int64(n)
			cut := false
			if pc.broken {
				take, cut = 0, true
			} else if pc.cutAt >= 0 && pc.moved+take >= pc.cutAt {
				take = pc.cutAt - pc.moved
				pc.broken, cut = true, true
			}
			pc.moved += take
			pc.mu.Unlock()
			if take > 0 {
				if _, err := dst.Write(buf[:take]); err != nil {
					return
				}
			}
			if cut {
				if pc.kind == "blackhole" {
					<-pc.done // forward nothing more; the endpoints give up
					return
				}
				pc.shut(pc.kind == "reset")
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (pc *proxyConn) shut(reset bool) {
	pc.once.Do(func() {
		if reset {
			pc.a.SetLinger(0)
			pc.b.SetLinger(0)
		}
		pc.a.Close()
		pc.b.Close()
		close(pc.done)
	})
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		conns = append(conns, pc)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, pc := range conns {
		pc.shut(false)
	}
	p.wg.Wait()
}

// pipeNet connects clients to a Table over in-memory net.Pipe connections,
// for tests under testing/synctest. Each connection goes through a relay
// that the test can hold, black-hole or cut.
type pipeNet struct {
	tbl *Table
	max int

	mu     sync.Mutex
	down   error // dial fails with it while set
	cuts   []int // cutFrames for the next relays, in dial order
	relays []*relay
	news   []*Stream
	newSig chan struct{}
	errs   []error
	wg     sync.WaitGroup
}

func newPipeNet(t testing.TB, cfg *Config) *pipeNet {
	t.Helper()
	tbl, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &pipeNet{tbl: tbl, max: tbl.cfg.MaxMessage, newSig: make(chan struct{}, 64)}
	t.Cleanup(func() {
		tbl.Close()
		n.mu.Lock()
		rs := n.relays
		n.mu.Unlock()
		for _, r := range rs {
			r.cut()
		}
		n.wg.Wait()
	})
	return n
}

func (n *pipeNet) setDown(err error) {
	n.mu.Lock()
	n.down = err
	n.mu.Unlock()
}

// cutNext makes the next dialed connections break after the given numbers
// of frames.
func (n *pipeNet) cutNext(frames ...int) {
	n.mu.Lock()
	n.cuts = append(n.cuts, frames...)
	n.mu.Unlock()
}

func (n *pipeNet) dial(ctx context.Context) (wire.Conn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down != nil {
		return nil, n.down
	}
	c1, r1 := net.Pipe()
	r2, s2 := net.Pipe()
	r := newRelay(r1, r2)
	if len(n.cuts) > 0 {
		r.cutFrames, n.cuts = n.cuts[0], n.cuts[1:]
	}
	n.relays = append(n.relays, r)
	n.wg.Add(3)
	go func() { defer n.wg.Done(); r.run(r.toServer, r1, r2) }()
	go func() { defer n.wg.Done(); r.run(r.toClient, r2, r1) }()
	go func() {
		defer n.wg.Done()
		st, isNew, err := n.tbl.Accept(context.Background(), wire.NewStreamConn(s2, n.max))
		n.mu.Lock()
		defer n.mu.Unlock()
		if err != nil {
			n.errs = append(n.errs, err)
			return
		}
		if isNew {
			n.news = append(n.news, st)
		}
	}()
	return wire.NewStreamConn(c1, n.max), nil
}

// relay returns the current (last dialed) relay.
func (n *pipeNet) relay() *relay {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.relays[len(n.relays)-1]
}

func (n *pipeNet) dials() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.relays)
}

func (n *pipeNet) acceptErrors() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]error(nil), n.errs...)
}

// serverStream returns the server side of the only session opened so far.
func (n *pipeNet) serverStream(t testing.TB) *Stream {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.news) != 1 {
		t.Fatalf("%d sessions opened, want 1", len(n.news))
	}
	return n.news[0]
}

// relay forwards frames between two pipes, one direction at a time each.
// A direction can be held (frames are read but not forwarded until
// released, so the writer blocks on the next one) and tapped (the header of
// every frame forwarded is recorded).
type relay struct {
	a, b     net.Conn
	toServer *direction
	toClient *direction
	once     sync.Once
	done     chan struct{} // closed by cut

	mu        sync.Mutex
	frames    int // frames forwarded, both directions
	cutFrames int // cut after this many frames; 0: never
}

type direction struct {
	mu    sync.Mutex
	gate  chan struct{} // closed while the direction flows
	black bool          // forward nothing, ever again
	tap   []wire.Header
}

func newRelay(a, b net.Conn) *relay {
	open := func() *direction {
		d := &direction{gate: make(chan struct{})}
		close(d.gate)
		return d
	}
	return &relay{a: a, b: b, toServer: open(), toClient: open(), done: make(chan struct{})}
}

// hold stops forwarding in d after the frame in progress.
func (d *direction) hold() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.gate:
		d.gate = make(chan struct{})
	default:
	}
}

func (d *direction) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.gate:
	default:
		close(d.gate)
	}
}

func (d *direction) headers() []wire.Header {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]wire.Header(nil), d.tap...)
}

// blackhole makes both directions forward nothing more, without closing.
func (r *relay) blackhole() {
	for _, d := range []*direction{r.toServer, r.toClient} {
		d.mu.Lock()
		d.black = true
		d.mu.Unlock()
	}
}

// cut closes both pipes.
func (r *relay) cut() {
	r.once.Do(func() {
		close(r.done)
		r.a.Close()
		r.b.Close()
	})
}

func (r *relay) run(d *direction, src, dst net.Conn) {
	defer r.cut()
	hdr := make([]byte, wire.HeaderSize)
	for {
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		h, err := wire.ParseHeader(hdr)
		if err != nil {
			return
		}
		frame := make([]byte, wire.HeaderSize+int(h.Length))
		copy(frame, hdr)
		if _, err := io.ReadFull(src, frame[wire.HeaderSize:]); err != nil {
			return
		}
		d.mu.Lock()
		gate, black := d.gate, d.black
		d.mu.Unlock()
		if black {
			continue // swallowed
		}
		select {
		case <-gate:
		case <-r.done:
			return
		}
		d.mu.Lock()
		black = d.black
		if !black {
			d.tap = append(d.tap, h)
		}
		d.mu.Unlock()
		if black {
			continue
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
		r.mu.Lock()
		r.frames++
		stop := r.cutFrames > 0 && r.frames >= r.cutFrames
		r.mu.Unlock()
		if stop {
			return
		}
	}
}

func errorsIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
