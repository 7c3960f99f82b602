package dgram

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ErrIdleTimeout is wrapped (together with net.ErrClosed) by the errors of a
// listener's peer Conn that was forgotten after Options.IdleTimeout.
var ErrIdleTimeout = errors.New("dgram: peer forgotten after idle timeout")

// ErrTooLarge is wrapped by the error of a Write larger than MaxDatagramSize.
var ErrTooLarge = errors.New("dgram: datagram too large")

// recvSlot is the buffer size per message of a read batch: any UDP payload fits.
const recvSlot = 64 << 10

// flushTimeout bounds how long Close lets the sender flush queued datagrams.
const flushTimeout = time.Second

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Stats are counters of one socket (Listener.Stats, Conn.Stats of a dialed
// Conn) or of one peer of a listener (Conn.Stats of an accepted Conn, where
// the batch and send-error counters stay zero and DatagramsOut counts
// datagrams queued for sending).
type Stats struct {
	DatagramsIn  uint64 // datagrams received and queued for a Conn
	BytesIn      uint64
	DatagramsOut uint64 // datagrams handed to the kernel
	BytesOut     uint64
	// DropsQueueFull counts received datagrams dropped because a receive queue
	// or Options.MaxQueuedBytes was full.
	DropsQueueFull uint64
	// DropsNoPeer counts received datagrams dropped because they came from a
	// new address while Options.MaxPeers peers existed or the accept backlog
	// was full, or arrived while the peer was being closed.
	DropsNoPeer uint64
	// SendErrors counts datagrams the kernel refused to send.
	SendErrors uint64
	// ReadBatches and WriteBatches count the system calls; DatagramsIn per
	// ReadBatches is the mean read batch.
	ReadBatches  uint64
	WriteBatches uint64
	// Peers is the number of peers a listener currently serves.
	Peers int
}

type counters struct {
	in, bytesIn, out, bytesOut         atomic.Uint64
	dropsFull, dropsNoPeer, sendErrors atomic.Uint64
	readBatches, writeBatches          atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		DatagramsIn: c.in.Load(), BytesIn: c.bytesIn.Load(),
		DatagramsOut: c.out.Load(), BytesOut: c.bytesOut.Load(),
		DropsQueueFull: c.dropsFull.Load(), DropsNoPeer: c.dropsNoPeer.Load(),
		SendErrors:  c.sendErrors.Load(),
		ReadBatches: c.readBatches.Load(), WriteBatches: c.writeBatches.Load(),
	}
}

// sendItem is one queued outgoing datagram. dest is nil on a connected socket
// (an untyped nil: a typed nil *net.UDPAddr would be dereferenced by x/net).
type sendItem struct {
	p    *packet
	dest net.Addr
	from *Conn
}

// engine runs the batched I/O of one socket: the reader goroutine that
// demultiplexes into Conns, the sender goroutine that drains the send queue,
// and for listeners the idle reaper.
type engine struct {
	pc        *net.UDPConn
	bc        batchConn
	opts      Options
	laddr     net.Addr
	connected bool // NewConn: every datagram belongs to single

	startOnce sync.Once
	readerWG  sync.WaitGroup
	senderWG  sync.WaitGroup
	reaperWG  sync.WaitGroup
	closeOnce sync.Once
	closing   chan struct{} // closed when Close starts

	// mu guards closed, why, peers and single.
	mu     sync.Mutex
	closed bool
	why    error // the reader's fatal error, if that is why the socket closed
	peers  map[netip.AddrPort]*Conn
	single *Conn
	accept chan *Conn // new peers for Accept (listener only)

	// smu guards the send queue.
	smu        sync.Mutex
	sq         ring[sendItem]
	sqBytes    int
	sendClosed bool
	sqWake     chan struct{} // capacity 1: wakes the sender
	sqSpace    chan struct{} // closed and replaced when room is made and sqWaiters > 0
	sqWaiters  int

	recvBytes atomic.Int64 // bytes queued in all receive queues
	tick      atomic.Int64 // coarse clock advanced by the reaper
	stats     counters

	// reader goroutine only
	gen     uint64
	touched []*Conn
	targets []*Conn
}

func newEngine(pc *net.UDPConn, opts Options, connected bool) *engine {
	e := &engine{
		pc:        pc,
		opts:      opts.normalized(),
		connected: connected,
		closing:   make(chan struct{}),
		sqWake:    make(chan struct{}, 1),
		sqSpace:   make(chan struct{}),
	}
	e.sq.max = e.opts.SendQueue
	if pc == nil {
		e.closed = true
		close(e.closing)
		e.why = errors.New("dgram: nil socket")
		return e
	}
	e.laddr = pc.LocalAddr()
	if ua, ok := e.laddr.(*net.UDPAddr); ok && ua.IP.To4() != nil {
		e.bc = ipv4.NewPacketConn(pc)
	} else {
		e.bc = ipv6.NewPacketConn(pc)
	}
	if !connected {
		e.peers = make(map[netip.AddrPort]*Conn)
		e.accept = make(chan *Conn, e.opts.AcceptBacklog)
	}
	return e
}

// start launches the goroutines once; it does nothing after close.
func (e *engine) start() {
	e.startOnce.Do(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			return
		}
		e.readerWG.Add(1)
		go e.readLoop()
		e.senderWG.Add(1)
		go e.sendLoop()
		if !e.connected && e.opts.IdleTimeout > 0 {
			e.reaperWG.Add(1)
			go e.reapLoop()
		}
	})
}

func (e *engine) isClosing() bool { return closedChan(e.closing) }

// closedErr is the error wrapped by operations after close.
func (e *engine) closedErr() error {
	e.mu.Lock()
	why := e.why
	e.mu.Unlock()
	if why != nil {
		return fmt.Errorf("%w (socket failed: %w)", net.ErrClosed, why)
	}
	return net.ErrClosed
}

// close shuts the socket down: no more sends are queued, the sender flushes
// what is queued (bounded by flushTimeout), the socket is closed, goroutines
// are waited for and every Conn is closed. fromReader is set when the reader
// goroutine itself closes after a fatal error.
func (e *engine) close(why error, fromReader bool) {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		already := e.closed
		e.closed = true
		if why != nil {
			e.why = why
		}
		peers := make([]*Conn, 0, len(e.peers))
		for _, c := range e.peers {
			peers = append(peers, c)
		}
		e.peers = nil
		single := e.single
		e.mu.Unlock()
		if already { // nil socket
			return
		}

		e.smu.Lock()
		e.sendClosed = true
		e.smu.Unlock()
		close(e.closing)
		_ = e.pc.SetWriteDeadline(time.Now().Add(flushTimeout))
		e.senderWG.Wait()
		_ = e.pc.Close()
		if !fromReader {
			e.readerWG.Wait()
		}
		e.reaperWG.Wait()

		e.smu.Lock()
		for {
			it, ok := e.sq.pop()
			if !ok {
				break
			}
			putPacket(it.p)
		}
		e.sqBytes = 0
		if e.sqWaiters > 0 {
			close(e.sqSpace)
			e.sqSpace = make(chan struct{})
		}
		e.smu.Unlock()

		if e.accept != nil {
		drain:
			for {
				select {
				case c := <-e.accept:
					c.shut(nil)
				default:
					break drain
				}
			}
		}
		for _, c := range peers {
			c.shut(nil)
		}
		if single != nil {
			single.shut(nil)
		}
	})
}

// forget removes a closed peer from the demultiplexer.
func (e *engine) forget(c *Conn) {
	e.mu.Lock()
	if e.peers[c.key] == c {
		delete(e.peers, c.key)
	}
	e.mu.Unlock()
}

func (e *engine) peerCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers)
}

// transient reports whether a socket error concerns one datagram or one ICMP
// report rather than the socket itself.
func transient(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
		syscall.EHOSTDOWN, syscall.ENETDOWN, syscall.EINTR, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ETIMEDOUT, syscall.EMSGSIZE, syscall.EPERM, syscall.EACCES, syscall.EPROTO,
		syscall.EINVAL, syscall.EAFNOSUPPORT, syscall.EADDRNOTAVAIL, syscall.EDESTADDRREQ:
		return true
	}
	return false
}

func (e *engine) readLoop() {
	defer e.readerWG.Done()
	batch := e.opts.Batch
	slab := make([]byte, batch*recvSlot)
	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	for i := range msgs {
		bufs[i] = slab[i*recvSlot : (i+1)*recvSlot : (i+1)*recvSlot]
		msgs[i].Buffers = bufs[i : i+1 : i+1]
	}
	e.targets = make([]*Conn, batch)
	for {
		n, err := e.bc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || e.isClosing() {
				return
			}
			if transient(err) {
				e.reportToSingle(err)
				var errno syscall.Errno
				if errors.As(err, &errno) && (errno == syscall.ENOBUFS || errno == syscall.ENOMEM) {
					select { // do not spin while the kernel is short of memory
					case <-e.closing:
						return
					case <-time.After(time.Millisecond):
					}
				}
				continue
			}
			e.close(fmt.Errorf("dgram: read from %s: %w", e.laddr, err), true)
			return
		}
		if n <= 0 {
			continue
		}
		e.stats.readBatches.Add(1)
		e.deliver(msgs[:n])
		for i := range msgs[:n] {
			msgs[i].Addr = nil // let the addresses go
		}
	}
}

// reportToSingle hands a transient error of a connected socket to its Conn,
// whose next Read returns it.
func (e *engine) reportToSingle(err error) {
	if !e.connected {
		return
	}
	e.mu.Lock()
	c := e.single
	e.mu.Unlock()
	if c != nil {
		c.setErr(err)
	}
}

// deliver demultiplexes one read batch. Reader goroutine only.
func (e *engine) deliver(msgs []ipv4.Message) {
	e.gen++
	e.touched = e.touched[:0]
	targets := e.targets[:len(msgs)]
	if e.connected {
		e.mu.Lock()
		c := e.single
		e.mu.Unlock()
		for i := range targets {
			targets[i] = c
		}
	} else {
		e.mu.Lock()
		for i := range msgs {
			targets[i] = e.lookupLocked(msgs[i].Addr)
		}
		e.mu.Unlock()
	}
	var in, bytesIn uint64
	for i, c := range targets {
		targets[i] = nil
		data := msgs[i].Buffers[0][:msgs[i].N]
		if c == nil {
			e.stats.dropsNoPeer.Add(1)
			continue
		}
		if !c.enqueue(data) {
			continue
		}
		in++
		bytesIn += uint64(len(data))
		if c.gen != e.gen {
			c.gen = e.gen
			e.touched = append(e.touched, c)
		}
	}
	e.stats.in.Add(in)
	e.stats.bytesIn.Add(bytesIn)
	now := e.tick.Load()
	for i, c := range e.touched {
		c.lastActive.Store(now)
		c.signal()
		e.touched[i] = nil
	}
}

// lookupLocked finds or creates the peer for a source address. e.mu is held.
func (e *engine) lookupLocked(a net.Addr) *Conn {
	ua, ok := a.(*net.UDPAddr)
	if !ok || e.closed {
		return nil
	}
	key := ua.AddrPort()
	c := e.peers[key]
	if c == nil {
		if len(e.peers) >= e.opts.MaxPeers {
			return nil
		}
		c = newConn(e, ua, ua, key)
		select {
		case e.accept <- c:
		default:
			return nil // accept backlog full
		}
		e.peers[key] = c
	}
	return c
}

// enqueueSend queues datagrams for the sender, blocking while the queue is
// full. It returns how many were queued; on error the caller still owns the
// packets from that index on.
func (e *engine) enqueueSend(c *Conn, ps []*packet) (int, error) {
	queued := 0
	for {
		e.smu.Lock()
		if e.sendClosed {
			e.smu.Unlock()
			return queued, e.closedErr()
		}
		for queued < len(ps) && !e.sq.full() &&
			(e.sqBytes == 0 || e.sqBytes+len(ps[queued].b) <= e.opts.MaxQueuedBytes) {
			e.sq.push(sendItem{p: ps[queued], dest: c.dest, from: c})
			e.sqBytes += len(ps[queued].b)
			queued++
		}
		if queued == len(ps) {
			e.smu.Unlock()
			e.wakeSender()
			return queued, nil
		}
		space := e.sqSpace
		e.sqWaiters++
		e.smu.Unlock()
		e.wakeSender()
		var err error
		select {
		case <-space:
		case <-c.wdl.wait():
			err = c.opErr("write", os.ErrDeadlineExceeded)
		case <-c.done:
			err = c.opErr("write", c.closedErr())
		case <-e.closing:
			err = c.opErr("write", e.closedErr())
		}
		e.smu.Lock()
		e.sqWaiters--
		e.smu.Unlock()
		if err != nil {
			return queued, err
		}
	}
}

func (e *engine) wakeSender() {
	select {
	case e.sqWake <- struct{}{}:
	default:
	}
}

func (e *engine) sendLoop() {
	defer e.senderWG.Done()
	batch := e.opts.Batch
	items := make([]sendItem, batch)
	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	for i := range msgs {
		msgs[i].Buffers = bufs[i : i+1 : i+1]
	}
	for {
		closing := false
		select {
		case <-e.sqWake:
		case <-e.closing:
			closing = true
		}
		for {
			e.smu.Lock()
			k := 0
			for k < batch {
				it, ok := e.sq.pop()
				if !ok {
					break
				}
				items[k] = it
				e.sqBytes -= len(it.p.b)
				k++
			}
			if k > 0 && e.sqWaiters > 0 {
				close(e.sqSpace)
				e.sqSpace = make(chan struct{})
			}
			e.smu.Unlock()
			if k == 0 {
				break
			}
			for i := 0; i < k; i++ {
				bufs[i] = items[i].p.b
				msgs[i].Addr = items[i].dest
			}
			e.writeAll(msgs[:k], items[:k])
			for i := 0; i < k; i++ {
				putPacket(items[i].p)
				items[i] = sendItem{}
				bufs[i] = nil
				msgs[i].Addr = nil
			}
		}
		if closing {
			return
		}
	}
}

// writeAll sends msgs, dropping (and counting) any datagram the kernel
// refuses. items are the queue entries msgs were built from.
func (e *engine) writeAll(msgs []ipv4.Message, items []sendItem) {
	for len(msgs) > 0 {
		n, err := e.bc.WriteBatch(msgs, 0)
		if n < 0 {
			n = 0
		}
		if n > 0 {
			var bytes uint64
			for i := range msgs[:n] {
				bytes += uint64(len(msgs[i].Buffers[0]))
			}
			e.stats.out.Add(uint64(n))
			e.stats.bytesOut.Add(bytes)
			e.stats.writeBatches.Add(1)
		}
		msgs, items = msgs[n:], items[n:]
		if err == nil {
			continue
		}
		if len(msgs) == 0 {
			return
		}
		if !transient(err) {
			// Closed socket or the flush deadline: nothing more will go out.
			e.stats.sendErrors.Add(uint64(len(msgs)))
			return
		}
		e.stats.sendErrors.Add(1)
		if e.connected {
			items[0].from.setErr(err)
		}
		msgs, items = msgs[1:], items[1:]
	}
}

// reapLoop advances the coarse clock and forgets idle peers.
func (e *engine) reapLoop() {
	defer e.reaperWG.Done()
	idle := e.opts.IdleTimeout
	period := idle / 4
	if period < 10*time.Millisecond {
		period = 10 * time.Millisecond
	}
	if period > 10*time.Second {
		period = 10 * time.Second
	}
	limit := int64((idle + period - 1) / period) // idle, in ticks
	t := time.NewTicker(period)
	defer t.Stop()
	var expired []*Conn
	for {
		select {
		case <-e.closing:
			return
		case <-t.C:
		}
		now := e.tick.Add(1)
		e.mu.Lock()
		for _, c := range e.peers {
			if now-c.lastActive.Load() > limit {
				expired = append(expired, c)
			}
		}
		e.mu.Unlock()
		for i, c := range expired {
			c.shut(ErrIdleTimeout)
			expired[i] = nil
		}
		expired = expired[:0]
	}
}
