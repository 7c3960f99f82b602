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
	// OffloadIn counts datagrams that arrived in a train the kernel coalesced
	// (UDP_GRO); OffloadOut those sent in a train (UDP_SEGMENT).
	OffloadIn  uint64
	OffloadOut uint64
	// Peers is the number of peers a listener currently serves.
	Peers int
}

type counters struct {
	in, bytesIn, out, bytesOut         atomic.Uint64
	dropsFull, dropsNoPeer, sendErrors atomic.Uint64
	readBatches, writeBatches          atomic.Uint64
	offloadIn, offloadOut              atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		DatagramsIn: c.in.Load(), BytesIn: c.bytesIn.Load(),
		DatagramsOut: c.out.Load(), BytesOut: c.bytesOut.Load(),
		DropsQueueFull: c.dropsFull.Load(), DropsNoPeer: c.dropsNoPeer.Load(),
		SendErrors:  c.sendErrors.Load(),
		ReadBatches: c.readBatches.Load(), WriteBatches: c.writeBatches.Load(),
		OffloadIn: c.offloadIn.Load(), OffloadOut: c.offloadOut.Load(),
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

	// Segmentation offload, decided when the goroutines start. gso and
	// gsoMax are then the sender goroutine's alone.
	gso    bool
	gro    bool
	gsoMax int // largest segment to offload; lowered when the kernel refuses one

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
		e.sendClosed = true
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
		if !e.opts.NoOffload {
			e.gso, e.gro = setupOffload(e.pc)
			e.gsoMax = maxGSOBytes
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

// connectedReadBatch caps the messages per read of a connected socket, whose
// one peer coalesces (UDP_GRO) up to maxGSOSegments datagrams per message: a
// client with many connections should not hold a full-size read buffer
// (Options.Batch × 64 KiB) for each.
const connectedReadBatch = 16

func (e *engine) readLoop() {
	defer e.readerWG.Done()
	batch := e.opts.Batch
	if e.connected && e.gro && batch > connectedReadBatch {
		batch = connectedReadBatch
	}
	slab := make([]byte, batch*recvSlot)
	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	var oob []byte
	if e.gro {
		oob = make([]byte, batch*oobRecv)
	}
	for i := range msgs {
		bufs[i] = slab[i*recvSlot : (i+1)*recvSlot : (i+1)*recvSlot]
		msgs[i].Buffers = bufs[i : i+1 : i+1]
		if e.gro {
			msgs[i].OOB = oob[i*oobRecv : (i+1)*oobRecv : (i+1)*oobRecv]
		}
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
		if !e.deliver(msgs[:n]) {
			return
		}
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

// deliver demultiplexes one read batch. It reports false if the engine is
// closing (a connected Conn's reader waited for room and was told to stop).
// Reader goroutine only.
func (e *engine) deliver(msgs []ipv4.Message) bool {
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
	var in, bytesIn, offloaded uint64
	ok := true
	for i, c := range targets {
		targets[i] = nil
		if !ok {
			continue
		}
		data := msgs[i].Buffers[0][:msgs[i].N]
		seg := 0
		if e.gro && msgs[i].NN > 0 {
			seg = groSegment(msgs[i].OOB[:msgs[i].NN])
		}
		if c == nil {
			e.stats.dropsNoPeer.Add(uint64(segments(len(data), seg)))
			continue
		}
		var k, b int
		k, b, ok = c.enqueue(data, seg)
		if k == 0 {
			continue
		}
		in += uint64(k)
		bytesIn += uint64(b)
		if seg > 0 && k > 1 {
			offloaded += uint64(k)
		}
		if c.gen != e.gen {
			c.gen = e.gen
			e.touched = append(e.touched, c)
		}
	}
	e.stats.in.Add(in)
	e.stats.bytesIn.Add(bytesIn)
	if offloaded > 0 {
		e.stats.offloadIn.Add(offloaded)
	}
	now := e.tick.Load()
	for i, c := range e.touched {
		c.lastActive.Store(now)
		c.signal()
		e.touched[i] = nil
	}
	return ok
}

// segments is how many datagrams a received message of n bytes holds when
// the kernel coalesced segments of seg bytes (seg 0: not coalesced).
func segments(n, seg int) int {
	if seg <= 0 || n <= seg {
		return 1
	}
	return (n + seg - 1) / seg
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

// sender is the sender goroutine's scratch space, reused for every batch.
type sender struct {
	items  []sendItem
	msgs   []ipv4.Message
	counts []int // datagrams per message
	iov    [][]byte
	oob    []byte
	// for resending the datagrams of a refused offload message one by one
	single       []ipv4.Message
	singleCounts []int
}

func (e *engine) sendLoop() {
	defer e.senderWG.Done()
	batch := e.opts.Batch
	s := &sender{
		items:        make([]sendItem, batch),
		msgs:         make([]ipv4.Message, batch),
		counts:       make([]int, batch),
		iov:          make([][]byte, batch),
		oob:          make([]byte, batch*oobSend),
		single:       make([]ipv4.Message, maxGSOSegments),
		singleCounts: make([]int, maxGSOSegments),
	}
	for i := range s.singleCounts {
		s.singleCounts[i] = 1
	}
	for {
		closing := false
		select {
		case <-e.sqWake:
		case <-e.closing:
			closing = true // flush what is queued, then stop
		}
		for {
			e.smu.Lock()
			k := 0
			for k < batch {
				it, ok := e.sq.pop()
				if !ok {
					break
				}
				s.items[k] = it
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
			m := e.pack(s, k)
			e.writeAll(s, s.msgs[:m], s.counts[:m], s.items[:k])
			for i := 0; i < k; i++ {
				putPacket(s.items[i].p)
				s.items[i] = sendItem{}
				s.iov[i] = nil
			}
			for i := 0; i < m; i++ {
				s.msgs[i] = ipv4.Message{}
			}
		}
		if closing {
			return
		}
	}
}

// pack turns the first k queued datagrams into messages: with offload, runs
// of datagrams for the same peer that have the same size (the last may be
// shorter) travel as one message. It returns the number of messages.
func (e *engine) pack(s *sender, k int) int {
	m := 0
	for i := 0; i < k; {
		first := s.items[i]
		seg := len(first.p.b)
		j := i + 1
		if e.gso && seg > 0 && seg <= e.gsoMax {
			total := seg
			for j < k && j-i < maxGSOSegments {
				next := s.items[j]
				l := len(next.p.b)
				if next.from != first.from || l == 0 || l > seg || total+l > maxGSOBytes {
					break
				}
				total += l
				j++
				if l < seg {
					break // only the last segment may be shorter
				}
			}
		}
		for x := i; x < j; x++ {
			s.iov[x] = s.items[x].p.b
		}
		msg := &s.msgs[m]
		msg.Buffers = s.iov[i:j:j]
		msg.Addr = first.dest
		msg.OOB = nil
		if j-i > 1 {
			msg.OOB = putSegmentCmsg(s.oob[m*oobSend:(m+1)*oobSend], seg)
		}
		s.counts[m] = j - i
		m++
		i = j
	}
	return m
}

// writeAll sends msgs (counts[i] datagrams each, items in order), dropping
// and counting any datagram the kernel refuses. An offload message the
// kernel refuses is resent one datagram at a time.
func (e *engine) writeAll(s *sender, msgs []ipv4.Message, counts []int, items []sendItem) {
	for len(msgs) > 0 {
		n, err := e.bc.WriteBatch(msgs, 0)
		if n < 0 {
			n = 0
		}
		if n > 0 {
			dgs, bytes, offloaded := 0, 0, 0
			for _, c := range counts[:n] {
				for _, it := range items[dgs : dgs+c] {
					bytes += len(it.p.b)
				}
				if c > 1 {
					offloaded += c
				}
				dgs += c
			}
			if offloaded > 0 {
				e.stats.offloadOut.Add(uint64(offloaded))
			}
			e.stats.out.Add(uint64(dgs))
			e.stats.bytesOut.Add(uint64(bytes))
			e.stats.writeBatches.Add(1)
			msgs, counts, items = msgs[n:], counts[n:], items[dgs:]
		}
		if err == nil {
			continue
		}
		if len(msgs) == 0 {
			return
		}
		if !transient(err) {
			// Closed socket or the flush deadline: nothing more will go out.
			e.stats.sendErrors.Add(uint64(len(items)))
			return
		}
		if c := counts[0]; c > 1 {
			e.offloadRefused(err, len(items[0].p.b))
			for x := 0; x < c; x++ {
				s.single[x] = ipv4.Message{Buffers: msgs[0].Buffers[x : x+1 : x+1], Addr: msgs[0].Addr}
			}
			e.writeAll(s, s.single[:c], s.singleCounts[:c], items[:c])
			clear(s.single[:c])
			msgs, counts, items = msgs[1:], counts[1:], items[c:]
			continue
		}
		e.stats.sendErrors.Add(1)
		if e.connected {
			items[0].from.setErr(err)
		}
		msgs, counts, items = msgs[1:], counts[1:], items[1:]
	}
}

// offloadRefused adapts after the kernel refused an offload message of
// segments of seg bytes: a device that cannot offload at all turns offload
// off; a segment too large for the path lowers the largest offloaded size.
func (e *engine) offloadRefused(err error, seg int) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return
	}
	switch errno {
	case syscall.EIO, syscall.ENOPROTOOPT, syscall.EOPNOTSUPP:
		e.gso = false
	case syscall.EINVAL, syscall.EMSGSIZE:
		e.gsoMax = seg - 1
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
