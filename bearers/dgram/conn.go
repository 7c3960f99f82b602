package dgram

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// Conn is a datagram connection: one Write sends one datagram, one Read
// returns one datagram, truncated to the buffer like a UDP socket does. It is
// either a peer of a Listener (from Accept) or the only Conn of a connected
// socket (from NewConn). All methods are safe for concurrent use.
type Conn struct {
	e     *engine
	raddr net.Addr
	dest  net.Addr // sendmmsg destination; nil on a connected socket
	key   netip.AddrPort
	owns  bool // from NewConn: Close closes the socket

	rmu    sync.Mutex
	rq     ring[*packet]
	rqErr  error         // transient socket error for the next Read
	notify chan struct{} // capacity 1: data or an error was queued
	// rqWaiting: the reader goroutine waits on space for room in rq (Conn
	// from NewConn only).
	rqWaiting bool
	space     chan struct{} // capacity 1

	done      chan struct{}
	closeOnce sync.Once
	why       error // set before done is closed

	rdl, wdl *deadline

	lastActive atomic.Int64
	stats      counters
	gen        uint64 // reader goroutine only
}

var _ bearers.Conn = (*Conn)(nil)

func newConn(e *engine, raddr, dest net.Addr, key netip.AddrPort) *Conn {
	c := &Conn{
		e: e, raddr: raddr, dest: dest, key: key,
		notify: make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
		done:   make(chan struct{}),
		rdl:    newDeadline(),
		wdl:    newDeadline(),
	}
	c.rq.max = e.opts.RecvQueue
	c.lastActive.Store(e.tick.Load())
	return c
}

// NewConn wraps a connected UDP socket (from net.DialUDP or a connected
// descriptor) in a Conn with batched reads and writes. The Conn owns c:
// closing the Conn closes c. Nothing is read from c before the first Read or
// Write. A nil or unconnected c gives a Conn whose methods fail.
func NewConn(c *net.UDPConn, opts Options) *Conn {
	e := newEngine(c, opts, true)
	var raddr net.Addr
	if c != nil {
		raddr = c.RemoteAddr()
	}
	if raddr == nil {
		if c != nil {
			e.close(fmt.Errorf("dgram: socket %s is not connected; use NewListener for a bound socket", c.LocalAddr()), false)
		}
		conn := newConn(e, nil, nil, netip.AddrPort{})
		conn.owns = true
		conn.shut(nil)
		return conn
	}
	conn := newConn(e, raddr, nil, netip.AddrPort{})
	conn.owns = true
	e.single = conn
	return conn
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.e.laddr, Addr: c.raddr, Err: err}
}

func (c *Conn) isClosed() bool { return closedChan(c.done) }

// closedErr explains why the Conn is closed. Call only once done is closed.
func (c *Conn) closedErr() error {
	if c.why != nil {
		return fmt.Errorf("%w: %w", c.why, net.ErrClosed)
	}
	if c.owns {
		return c.e.closedErr()
	}
	return net.ErrClosed
}

// shut closes the Conn (once) and releases its queue. why is nil for an
// ordinary Close.
func (c *Conn) shut(why error) {
	c.closeOnce.Do(func() {
		if !c.owns {
			c.e.forget(c)
		}
		c.rmu.Lock()
		c.why = why
		close(c.done)
		var freed int64
		for {
			p, ok := c.rq.pop()
			if !ok {
				break
			}
			freed += int64(len(p.b))
			putPacket(p)
		}
		c.rmu.Unlock()
		c.e.recvBytes.Add(-freed)
		c.rdl.stop()
		c.wdl.stop()
	})
}

// enqueue appends the datagrams of a received message to the receive queue:
// one datagram, or several of seg bytes each (the last may be shorter) when
// the kernel coalesced them. It returns how many datagrams and bytes it
// queued, and false if the engine is closing. A listener's peer drops what
// does not fit; a Conn from NewConn waits for room instead. Reader goroutine
// only.
func (c *Conn) enqueue(data []byte, seg int) (queued, bytes int, ok bool) {
	if seg <= 0 || seg > len(data) {
		seg = len(data)
	}
	maxBytes := int64(c.e.opts.MaxQueuedBytes)
	c.rmu.Lock()
	for first := true; first || len(data) > 0; first = false {
		d := data[:min(seg, len(data))]
		data = data[len(d):]
		for {
			if c.isClosed() {
				c.rmu.Unlock()
				dropped := 1
				if len(data) > 0 {
					dropped += segments(len(data), seg)
				}
				c.e.stats.dropsNoPeer.Add(uint64(dropped))
				return queued, bytes, true
			}
			if !c.rq.full() && (c.rq.len() == 0 || c.e.recvBytes.Load()+int64(len(d)) <= maxBytes) {
				break
			}
			if !c.owns {
				d = nil // full: drop
				c.stats.dropsFull.Add(1)
				c.e.stats.dropsFull.Add(1)
				break
			}
			// A connected socket has one reader: wait until Read makes room.
			c.rqWaiting = true
			c.rmu.Unlock()
			c.signal()
			select {
			case <-c.space:
			case <-c.done:
			case <-c.e.closing:
				return queued, bytes, false
			}
			c.rmu.Lock()
		}
		if d == nil {
			continue
		}
		c.rq.push(getPacket(d))
		c.e.recvBytes.Add(int64(len(d)))
		queued++
		bytes += len(d)
	}
	c.rmu.Unlock()
	c.stats.in.Add(uint64(queued))
	c.stats.bytesIn.Add(uint64(bytes))
	return queued, bytes, true
}

// madeRoomLocked wakes the reader goroutine if it waits for room. rmu is held.
func (c *Conn) madeRoomLocked() {
	if c.rqWaiting {
		c.rqWaiting = false
		select {
		case c.space <- struct{}{}:
		default:
		}
	}
}

// setErr records a transient socket error for the next Read.
func (c *Conn) setErr(err error) {
	c.rmu.Lock()
	c.rqErr = err
	c.rmu.Unlock()
	c.signal()
}

func (c *Conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Read reads one datagram into b. If the datagram is longer than b, the rest
// is discarded, as with a UDP socket. It blocks until a datagram arrives, the
// read deadline passes (an error with Timeout() true, wrapping
// os.ErrDeadlineExceeded) or the Conn is closed (an error wrapping
// net.ErrClosed).
func (c *Conn) Read(b []byte) (int, error) {
	c.e.start()
	for {
		dl := c.rdl.wait()
		if closedChan(dl) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		c.rmu.Lock()
		if c.isClosed() {
			c.rmu.Unlock()
			return 0, c.opErr("read", c.closedErr())
		}
		if p, ok := c.rq.pop(); ok {
			more := c.rq.len() > 0 || c.rqErr != nil
			c.madeRoomLocked()
			c.rmu.Unlock()
			if more {
				c.signal() // another reader may be waiting
			}
			n := copy(b, p.b)
			c.e.recvBytes.Add(-int64(len(p.b)))
			putPacket(p)
			return n, nil
		}
		if err := c.rqErr; err != nil {
			c.rqErr = nil
			c.rmu.Unlock()
			return 0, c.opErr("read", err)
		}
		c.rmu.Unlock()
		select {
		case <-c.notify:
		case <-dl:
		case <-c.done:
		}
	}
}

// ReadBatch reads up to len(bufs) datagrams, datagram i into bufs[i] with its
// (possibly truncated) length in sizes[i]. It blocks like Read for the first
// datagram only and returns those already queued after it. len(sizes) must be
// at least len(bufs).
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int) (int, error) {
	if len(sizes) < len(bufs) {
		return 0, c.opErr("read", fmt.Errorf("dgram: ReadBatch: %d sizes for %d buffers", len(sizes), len(bufs)))
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	n, err := c.Read(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	k := 1
	var freed int64
	c.rmu.Lock()
	for k < len(bufs) {
		p, ok := c.rq.pop()
		if !ok {
			break
		}
		sizes[k] = copy(bufs[k], p.b)
		freed += int64(len(p.b))
		putPacket(p)
		k++
	}
	more := c.rq.len() > 0 || c.rqErr != nil
	c.madeRoomLocked()
	c.rmu.Unlock()
	c.e.recvBytes.Add(-freed)
	if more {
		c.signal()
	}
	return k, nil
}

// Write sends b as one datagram. It returns once the datagram is queued for
// the sender goroutine; it blocks only while the send queue is full. A
// datagram longer than MaxDatagramSize is rejected with an error wrapping
// ErrTooLarge. Errors the kernel reports for a queued datagram are not
// returned here (see the package documentation).
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) > MaxDatagramSize {
		return 0, c.opErr("write", fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), MaxDatagramSize))
	}
	if err := c.writable(); err != nil {
		return 0, err
	}
	p := getPacket(b)
	ps := [1]*packet{p}
	if _, err := c.e.enqueueSend(c, ps[:]); err != nil {
		putPacket(p)
		return 0, err
	}
	c.wrote(1, len(b))
	return len(b), nil
}

// WriteBatch sends each element of bufs as one datagram, queuing them all
// under one lock. It returns how many were queued; if that is fewer than
// len(bufs) the error says why. All sizes are checked before anything is
// queued.
func (c *Conn) WriteBatch(bufs [][]byte) (int, error) {
	total := 0
	for i, b := range bufs {
		if len(b) > MaxDatagramSize {
			return 0, c.opErr("write", fmt.Errorf("%w: datagram %d has %d bytes, at most %d", ErrTooLarge, i, len(b), MaxDatagramSize))
		}
		total += len(b)
	}
	if err := c.writable(); err != nil {
		return 0, err
	}
	var small [64]*packet
	ps := small[:0]
	if len(bufs) > len(small) {
		ps = make([]*packet, 0, len(bufs))
	}
	for _, b := range bufs {
		ps = append(ps, getPacket(b))
	}
	n, err := c.e.enqueueSend(c, ps)
	for _, p := range ps[n:] {
		putPacket(p)
	}
	bytes := 0
	for _, b := range bufs[:n] {
		bytes += len(b)
	}
	c.wrote(n, bytes)
	return n, err
}

func (c *Conn) writable() error {
	c.e.start()
	if c.isClosed() {
		return c.opErr("write", c.closedErr())
	}
	if closedChan(c.wdl.wait()) {
		return c.opErr("write", os.ErrDeadlineExceeded)
	}
	return nil
}

func (c *Conn) wrote(n, bytes int) {
	if n == 0 {
		return
	}
	c.lastActive.Store(c.e.tick.Load())
	if !c.owns {
		c.stats.out.Add(uint64(n))
		c.stats.bytesOut.Add(uint64(bytes))
	}
}

// Close closes the Conn. For a peer of a Listener it removes the peer from the
// demultiplexer (a later datagram from the same address is a new peer) and
// leaves the socket open; for a Conn from NewConn it closes the socket after
// flushing queued datagrams. Close is idempotent and returns nil.
func (c *Conn) Close() error {
	if c.owns {
		c.e.close(nil, false)
	}
	c.shut(nil)
	return nil
}

// LocalAddr is the socket's bound address.
func (c *Conn) LocalAddr() net.Addr { return c.e.laddr }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// Peer returns an empty Peer: UDP authenticates nothing.
func (c *Conn) Peer() bearers.Peer { return bearers.Peer{} }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set deadline", c.closedErr())
	}
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline sets the read deadline; it also wakes a blocked Read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set deadline", c.closedErr())
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline; it bounds how long Write waits
// for room in a full send queue.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opErr("set deadline", c.closedErr())
	}
	c.wdl.set(t)
	return nil
}

// Stats returns the counters of the Conn's socket (Conn from NewConn) or of
// this peer (Conn from Accept).
func (c *Conn) Stats() Stats {
	if c.owns {
		return c.e.stats.snapshot()
	}
	return c.stats.snapshot()
}

// Listener serves many peers over one bound UDP socket. It is safe for
// concurrent use.
type Listener struct {
	e  *engine
	ep bearers.Endpoint
}

var _ bearers.Listener = (*Listener)(nil)

// NewListener serves the bound, unconnected socket pc, demultiplexing it into
// one Conn per remote address. ep supplies the scheme of Endpoint (the host
// and port come from pc; an empty scheme means "udp"). The Listener owns pc:
// Close closes it. Nothing is read from pc before the first Accept. A nil pc
// gives a Listener whose Accept fails.
func NewListener(pc *net.UDPConn, ep bearers.Endpoint, opts Options) *Listener {
	if ep.Scheme == "" {
		ep.Scheme = "udp"
	}
	l := &Listener{e: newEngine(pc, opts, false), ep: ep}
	if pc != nil {
		l.ep = ep.WithAddr(pc.LocalAddr())
	}
	return l
}

// Accept waits for a datagram from a new remote address and returns the Conn
// for that peer; that first datagram is its first Read. It returns an error
// wrapping net.ErrClosed after Close and one wrapping ctx.Err() when ctx ends.
// The first Accept starts reading the socket.
func (l *Listener) Accept(ctx context.Context) (bearers.Conn, error) {
	e := l.e
	if e.isClosing() {
		return nil, l.acceptErr(e.closedErr())
	}
	if err := ctx.Err(); err != nil {
		return nil, l.acceptErr(err)
	}
	e.start()
	for {
		select {
		case c := <-e.accept:
			if c.isClosed() { // forgotten while waiting in the backlog
				continue
			}
			return c, nil
		case <-ctx.Done():
			return nil, l.acceptErr(ctx.Err())
		case <-e.closing:
			return nil, l.acceptErr(e.closedErr())
		}
	}
}

func (l *Listener) acceptErr(err error) error {
	return &net.OpError{Op: "accept", Net: "udp", Addr: l.e.laddr, Err: err}
}

// Addr is the socket's bound address.
func (l *Listener) Addr() net.Addr {
	if l.e.laddr == nil {
		return &net.UDPAddr{}
	}
	return l.e.laddr
}

// Endpoint is the bound address with the listener's scheme.
func (l *Listener) Endpoint() bearers.Endpoint { return l.ep }

// PacketConn returns the socket the Listener serves, for handing its
// descriptor to another process. Do not read from it while the Listener is
// being Accepted from.
func (l *Listener) PacketConn() *net.UDPConn { return l.e.pc }

// Close closes the socket and every peer Conn, after flushing datagrams
// already queued for sending. It is idempotent and returns nil.
func (l *Listener) Close() error {
	l.e.close(nil, false)
	return nil
}

// Stats returns the socket's counters.
func (l *Listener) Stats() Stats {
	s := l.e.stats.snapshot()
	s.Peers = l.e.peerCount()
	return s
}
