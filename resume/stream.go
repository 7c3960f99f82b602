package resume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/wire"
)

type role uint8

const (
	roleClient role = 1
	roleServer role = 2
)

func (r role) String() string {
	if r == roleClient {
		return "client"
	}
	return "server"
}

// msg is a queued message: in the replay buffer (sent, not yet
// acknowledged) or in the receive queue (received, not yet read).
type msg struct {
	buf *[]byte // from getBuf; nil for an empty message and for FIN
	fin bool    // the end of the sender's messages
}

func (m msg) cost() int {
	if m.buf == nil {
		return MessageOverhead
	}
	return len(*m.buf) + MessageOverhead
}

// Stream is one side of a resumable session: a reliable, ordered stream of
// messages in each direction that outlives the connections carrying it.
//
// Each message sent is delivered to the peer's Recv exactly once and in
// order, or the stream ends with an error saying which messages were not
// delivered (*ExpiredError, *PeerClosedError, *LostError; Undelivered returns
// them). Messages keep their boundaries; an empty message is a message.
//
// A client gets a Stream from Open, a server from Table.Accept. On the client
// side the Stream reconnects by itself when its connection fails (through the
// DialFunc given to Open, with backoff); on the server side a resumed session
// reattaches to the same Stream through Table.Accept.
//
// Concurrency: Send, SendFrom, CloseSend, Flush, Stats, Undelivered, Err, ID
// and Close are safe for concurrent use. Concurrent Sends each go out whole,
// in the order in which they enter the replay buffer. Recv and CopyTo must be
// called by one goroutine at a time. Close may be called at any time, more
// than once; it unblocks every pending call and returns once every goroutine
// of the stream has exited (and a CopyTo writer's Write in progress).
type Stream struct {
	cfg    Config
	log    *slog.Logger
	role   role
	id     uuid.UUID
	secret [32]byte

	attachMu sync.Mutex     // serialises resume handshakes (server)
	wg       sync.WaitGroup // every goroutine the stream owns
	done     chan struct{}  // closed when the stream ends

	mu sync.Mutex
	// Send side, guarded by mu.
	out      ring[msg] // unacknowledged messages; out.at(0) has sequence acked+1
	outBytes int       // cost of out, plus the reservations of Sends in progress
	reading  int       // room reserved by SendFroms waiting for their Read
	sent     uint64    // last sequence number assigned
	acked    uint64    // last sequence number acknowledged by the peer
	shut     bool      // CloseSend was called
	sendSig  signal    // room freed, acknowledgement, end
	// Receive side, guarded by mu.
	in      ring[msg] // received messages not yet read
	inBytes int       // cost of in
	recvd   uint64    // last sequence number received
	finIn   bool      // the peer's FIN was received
	eof     bool      // Recv returned the peer's FIN
	ackedIn uint64    // last sequence number acknowledged to the peer
	unacked int       // cost received since the last acknowledgement
	ackNow  bool      // an acknowledgement is due now
	ackAt   time.Time // when an acknowledgement is due; zero if none pending
	flushes int       // Flush calls waiting
	held    *[]byte   // buffer returned by the last Recv
	recvSig signal    // message queued, end
	roomSig signal    // room in the receive queue
	// CopyTo: while it waits with an empty receive queue, the reader writes
	// each message to sink itself, from the connection's read buffer.
	sink     io.Writer // nil unless CopyTo waits
	sinkBusy bool      // the reader is in sink.Write
	sinkN    int64     // bytes the reader wrote to sink, not yet counted by CopyTo
	sinkErr  error     // sink's error; the reader then stops using it
	sinkSig  signal    // sinkBusy went false
	// Peer limits, from the last handshake.
	peerReplay int
	peerMax    int
	// Connection, guarded by mu.
	cur       *link       // attached connection; nil while detached
	last      *link       // most recent connection, possibly stopping
	attaches  int         // connections attached so far
	lingerT   *time.Timer // server: expires the detached session
	lingerGen uint64      // invalidates stale linger timers
	// End, guarded by mu.
	err error // why the stream ended; nil while it lives

	// Explicit round-trip measurements (Ping), guarded by mu.
	pings    map[uint64]*pingWait // waiting for their Pong, by wire Ping id
	pingOut  []uint64             // to write on the attached connection
	pingNext uint64               // last explicit ping number

	// Client only.
	dial   DialFunc
	down   chan *link // lost connections, to the redial loop
	ctx    context.Context
	cancel context.CancelFunc
	// Server only.
	tbl *Table
}

func newStream(c Config, r role, id uuid.UUID, secret [32]byte) *Stream {
	return &Stream{
		cfg:    c,
		log:    c.logger().With("session", id.String(), "role", r.String()),
		role:   r,
		id:     id,
		secret: secret,
		done:   make(chan struct{}),
	}
}

// ID returns the session id.
func (s *Stream) ID() uuid.UUID { return s.id }

// maxSend is the largest message Send accepts. s.mu must be held.
func (s *Stream) maxSend() int {
	if s.peerMax > 0 {
		return min(s.cfg.MaxMessage, s.peerMax)
	}
	return s.cfg.MaxMessage
}

// Send queues a copy of msg for delivery and returns; msg may be reused at
// once. It blocks while the replay buffer has no room for the message
// (backpressure: nothing is dropped), until acknowledgements free some, ctx
// is done (ctx.Err()) or the stream ends (its error). A message longer than
// the smaller of the two sides' MaxMessage is refused with a
// *MessageTooLargeError. After CloseSend it returns ErrSendClosed.
//
// Send returning nil means the message is in the replay buffer, not that the
// peer has it: use Flush to wait for acknowledgements.
func (s *Stream) Send(ctx context.Context, msg []byte) error {
	s.mu.Lock()
	if limit := s.maxSend(); len(msg) > limit {
		s.mu.Unlock()
		return &MessageTooLargeError{Size: len(msg), Limit: limit}
	}
	cost := len(msg) + MessageOverhead
	if err := s.reserve(ctx, cost, &s.outBytes); err != nil {
		return err
	}
	buf := getBuf(len(msg)) // copy without the lock
	if buf != nil {
		copy(*buf, msg)
	}
	return s.commit(buf, cost, &s.outBytes, cost)
}

// reserve waits until the replay buffer has room for cost and adds cost to
// *into (s.outBytes, or s.reading for a reservation that may last). s.mu
// must be held; it is released in every case.
func (s *Stream) reserve(ctx context.Context, cost int, into *int) error {
	for {
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		if s.shut {
			s.mu.Unlock()
			return ErrSendClosed
		}
		if s.outBytes+s.reading+cost <= s.cfg.ReplayBuffer {
			break
		}
		ch := s.sendSig.wait()
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	*into += cost
	s.mu.Unlock()
	return nil
}

// commit queues buf (nil for an empty message), for which reserve added
// reserved to *from; the message costs cost. If the stream ended or was
// shut in the meantime, it gives the room and buf back and returns why.
func (s *Stream) commit(buf *[]byte, reserved int, from *int, cost int) error {
	s.mu.Lock()
	*from -= reserved
	s.outBytes += cost
	if reserved != cost {
		s.sendSig.broadcast() // room freed for other Sends
	}
	if s.err != nil || s.shut {
		err := s.err
		if err == nil {
			err = ErrSendClosed
		}
		s.outBytes -= cost
		s.mu.Unlock()
		putBuf(buf)
		return err
	}
	s.sent++
	s.out.push(msgOf(buf))
	l := s.cur
	kick := l != nil && l.idle // a busy writer finds the message by itself
	s.mu.Unlock()
	if kick {
		l.kickWriter()
	}
	return nil
}

// SendFrom queues, as one message, what one Read call on r returns, read
// straight into the replay buffer: unlike Send, the bytes are not copied
// again on their way to the connection. It reads at most max bytes (the
// smaller of the two sides' MaxMessage when max is 0, negative or larger).
//
// SendFrom first waits, like Send, until the replay buffer has room for max
// bytes, and holds that room while it calls r.Read once (other Sends may
// wait for it; Stats does not count it). It returns the number of bytes
// queued and the Read's error: n > 0 bytes read with an error are queued,
// and both are returned; a Read returning no bytes queues nothing (an empty
// message is only sent by Send).
// If ctx is done or the stream ends before the Read, or the stream ends
// during it, the bytes read are not queued and SendFrom returns 0 and
// ctx.Err() or the stream's error. After CloseSend it returns ErrSendClosed.
//
// A Read that returns less than half of max bytes is copied into a buffer
// of its own size, so that the replay buffer's memory stays within twice
// what its messages cost.
func (s *Stream) SendFrom(ctx context.Context, r io.Reader, max int) (int, error) {
	s.mu.Lock()
	if limit := s.maxSend(); max <= 0 || max > limit {
		max = limit
	}
	reserved := max + MessageOverhead
	if err := s.reserve(ctx, reserved, &s.reading); err != nil {
		return 0, err
	}
	buf := getBuf(max)
	n, rerr := r.Read(*buf)
	n = min(max, n)
	switch {
	case n <= 0:
		putBuf(buf)
		s.mu.Lock()
		s.reading -= reserved
		s.sendSig.broadcast()
		s.mu.Unlock()
		return 0, rerr
	case 2*n < cap(*buf):
		small := getBuf(n)
		copy(*small, (*buf)[:n])
		putBuf(buf)
		buf = small
	default:
		*buf = (*buf)[:n]
	}
	if err := s.commit(buf, reserved, &s.reading, n+MessageOverhead); err != nil {
		return 0, err
	}
	return n, rerr
}

func msgOf(buf *[]byte) msg { return msg{buf: buf} }

// CloseSend ends this side's messages: after the last message sent, the
// peer's Recv returns io.EOF. The end marker is delivered like a message
// (replayed after a break). Later Sends return ErrSendClosed. It does not
// block; a second call does nothing.
func (s *Stream) CloseSend() error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	if s.shut {
		s.mu.Unlock()
		return nil
	}
	s.shut = true
	s.sent++
	m := msg{fin: true}
	s.out.push(m)
	s.outBytes += m.cost()
	l := s.cur
	s.mu.Unlock()
	if l != nil {
		l.kickWriter()
	}
	return nil
}

// Flush waits until the peer has acknowledged every message sent so far
// (including the end marker of CloseSend), ctx is done or the stream ends.
//
// While Flush waits, the writer asks the peer for an immediate
// acknowledgement (a Ping, which a peer answers with its acknowledgement
// first) once every message is written, so Flush takes about a round trip
// rather than Config.AckInterval.
func (s *Stream) Flush(ctx context.Context) error {
	s.mu.Lock()
	s.flushes++
	defer func() {
		s.mu.Lock()
		s.flushes--
		s.mu.Unlock()
	}()
	for s.acked < s.sent {
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		ch := s.sendSig.wait()
		l := s.cur
		s.mu.Unlock()
		if l != nil {
			l.kickWriter()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return nil
}

// Recv returns the next message. The slice is valid until the next call to
// Recv; copy it to keep it. After the peer's CloseSend and its last message,
// Recv returns io.EOF. If the stream ended otherwise, Recv first returns the
// messages already received, then the error that ended it (after Close:
// ErrClosed at once). It blocks until a message arrives, ctx is done
// (ctx.Err()) or the stream ends.
func (s *Stream) Recv(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	if s.held != nil {
		putBuf(s.held)
		s.held = nil
	}
	for {
		if s.in.len() > 0 {
			m := s.in.pop()
			s.inBytes -= m.cost()
			s.roomSig.broadcast()
			if m.fin {
				s.eof = true
				s.mu.Unlock()
				return nil, io.EOF
			}
			s.held = m.buf
			s.mu.Unlock()
			if m.buf == nil {
				return []byte{}, nil
			}
			return *m.buf, nil
		}
		if s.eof {
			s.mu.Unlock()
			return nil, io.EOF
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		ch := s.recvSig.wait()
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
	}
}

// CopyTo writes the stream's messages to w, in order, one Write call per
// message, until the peer's CloseSend, and returns the number of bytes
// written: like io.Copy from the stream, it returns a nil error at the end
// of the stream. Otherwise it returns w's error (io.ErrShortWrite for a
// short write), ctx.Err(), or the error that ended the stream; a message
// handed to w counts as received even if w fails. Message boundaries are
// not kept (an empty message writes nothing): CopyTo is for byte streams,
// such as a tunnel's.
//
// Messages already queued are written by CopyTo itself. While CopyTo waits
// with an empty queue, the goroutine reading the connection writes each
// message as it arrives, straight from the connection's read buffer: no
// copy into the receive queue, and no hand-off between goroutines. Until
// such a Write returns, the stream reads nothing more from its connection —
// acknowledgements and Pings included — so w should not wait for anything
// this stream's peer must do; a tunnel's local TCP connection is fine (a
// TCP relay also stops reading while its write blocks). CopyTo does not use
// w once it has returned; Close waits for a Write in progress.
//
// Recv and CopyTo must be called by one goroutine at a time, not
// concurrently.
func (s *Stream) CopyTo(ctx context.Context, w io.Writer) (int64, error) {
	var total int64
	s.mu.Lock()
	if s.held != nil {
		putBuf(s.held)
		s.held = nil
	}
	for {
		for s.in.len() > 0 {
			m := s.in.pop()
			s.inBytes -= m.cost()
			s.roomSig.broadcast()
			if m.fin {
				s.eof = true
				s.mu.Unlock()
				return total, nil
			}
			if m.buf == nil {
				continue
			}
			s.mu.Unlock()
			n, err := w.Write(*m.buf)
			if err == nil && n < len(*m.buf) {
				err = io.ErrShortWrite
			}
			putBuf(m.buf)
			total += int64(n)
			if err != nil {
				return total, err
			}
			s.mu.Lock()
		}
		if s.eof {
			s.mu.Unlock()
			return total, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return total, err
		}
		// Wait with the writer handed to the reader; it wakes us for a
		// queued message (the end marker, or one after a write error),
		// its writer's error, or the end of the stream.
		s.sink, s.sinkErr = w, nil
		ch := s.recvSig.wait()
		s.mu.Unlock()
		var cerr error
		select {
		case <-ch:
		case <-ctx.Done():
			cerr = ctx.Err()
		}
		s.mu.Lock()
		s.sink = nil
		for s.sinkBusy { // w is ours again only once the reader is done with it
			ch := s.sinkSig.wait()
			s.mu.Unlock()
			<-ch
			s.mu.Lock()
		}
		total += s.sinkN
		s.sinkN = 0
		if err := s.sinkErr; err != nil {
			s.sinkErr = nil
			s.mu.Unlock()
			return total, err
		}
		if cerr != nil {
			s.mu.Unlock()
			return total, cerr
		}
	}
}

// Close ends the session now, on both sides: it tells the peer (best effort,
// within HandshakeTimeout) that the session is over, and its pending calls
// return ErrClosed. Messages not yet acknowledged may not be delivered (the
// peer's *PeerClosedError says which of its own were); for a clean end call
// CloseSend and Flush first. Close is idempotent and returns once every
// goroutine of the stream has exited; it returns nil.
func (s *Stream) Close() error {
	s.end(ErrClosed, &closeMsg{code: CloseNormal}, nil)
	s.release()
	return nil
}

// release frees what the ended stream still holds for Recv and waits for
// its goroutines.
func (s *Stream) release() {
	s.mu.Lock()
	for s.in.len() > 0 {
		putBuf(s.in.pop().buf)
	}
	s.inBytes = 0
	s.mu.Unlock()
	s.wg.Wait()
}

// Abandon ends the stream on this side only: its connection is dropped
// without the Close message, so the peer sees a lost connection and keeps
// its side for its linger window, as after a crash. It is for a process
// that stops on purpose and means to come back (a client that saved its
// sessions' secrets to reclaim them after a restart). What was not yet
// acknowledged stays with the peer's replay logic, not with this side,
// which forgets everything. Later calls return ErrAbandoned (or the error
// that ended the stream before). Idempotent; Close after Abandon does
// nothing more.
func (s *Stream) Abandon() {
	s.end(ErrAbandoned, nil, nil)
	s.release()
}

// Err returns the error that ended the stream, or nil while it lives.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done returns a channel that is closed when the stream ends; Err then says
// why.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Undelivered returns copies of the messages sent but not acknowledged by
// the peer, oldest first (without the end marker of CloseSend). After the
// stream ended with an *ExpiredError or *PeerClosedError they are the
// messages the error names as not delivered.
func (s *Stream) Undelivered() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := make([][]byte, 0, s.out.len())
	for i := range s.out.len() {
		m := s.out.at(i)
		if m.fin {
			continue
		}
		var b []byte
		if m.buf != nil {
			b = append([]byte{}, *m.buf...)
		} else {
			b = []byte{}
		}
		res = append(res, b)
	}
	return res
}

// Stats is a snapshot of a stream's counters.
type Stats struct {
	Sent      uint64 // last sequence number sent (messages, plus the end marker)
	Acked     uint64 // last sequence number the peer acknowledged
	Received  uint64 // last sequence number received
	Buffered  int    // bytes in the replay buffer (message lengths plus MessageOverhead each)
	Queued    int    // bytes received and not yet read, same measure
	Attaches  int    // connections attached so far (1 + resumptions)
	Connected bool   // whether a connection is attached now
}

// Stats returns a snapshot of the stream's counters.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Sent: s.sent, Acked: s.acked, Received: s.recvd, Buffered: s.outBytes,
		Queued: s.inBytes, Attaches: s.attaches, Connected: s.cur != nil}
}

// ackThrough releases the messages up to sequence n, which the peer has
// received. s.mu must be held; n <= s.sent.
func (s *Stream) ackThrough(n uint64) {
	if n <= s.acked {
		return
	}
	if l := s.cur; l != nil {
		l.polled = false // the peer answered; a later Flush may ask again
	}
	for s.acked < n {
		m := s.out.pop()
		s.outBytes -= m.cost()
		s.acked++
		if l := s.cur; l != nil && l.writing == s.acked {
			l.release = m.buf // the writer may still be reading it
		} else {
			putBuf(m.buf)
		}
	}
	s.sendSig.broadcast()
}

// install attaches conn, on which a handshake just succeeded. peerRecv is the
// last sequence number the peer received: it acknowledges everything up to
// it, and replay starts after it. The caller holds attachMu (server) or is
// the redial loop (client); any previous connection has stopped.
func (s *Stream) install(conn wire.Conn, peerRecv uint64, peerReplay uint64, peerMax uint32) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	if peerRecv > s.sent {
		s.mu.Unlock()
		return &ProtocolError{SessionID: s.id, Op: "attach",
			Err: fmt.Errorf("the peer reports receiving message %d, but only %d were sent", peerRecv, s.sent)}
	}
	if peerRecv < s.acked {
		lost := &LostError{SessionID: s.id, Reported: peerRecv, Acked: s.acked, Sent: s.sent}
		s.mu.Unlock()
		s.end(lost, nil, nil)
		return lost
	}
	s.ackThrough(peerRecv)
	l := &link{s: s, conn: conn, kick: make(chan struct{}, 1), done: make(chan struct{}),
		writerDone: make(chan struct{}), attachedAt: time.Now(), next: peerRecv + 1, recvNext: s.recvd + 1,
		ackedAtAttach: s.acked, recvdAtAttach: s.recvd}
	s.ackedIn, s.unacked, s.ackNow, s.ackAt = s.recvd, 0, false, time.Time{}
	s.requeuePings()
	s.peerReplay = int(min(peerReplay, 1<<30))
	s.peerMax = int(peerMax)
	s.cur, s.last = l, l
	s.attaches++
	s.lingerGen++
	if s.lingerT != nil {
		s.lingerT.Stop()
		s.lingerT = nil
	}
	s.wg.Add(2)
	l.wg.Add(2)
	n := s.attaches
	s.mu.Unlock()
	s.log.Debug("resume: connection attached", "attach", n, "replay_from", peerRecv+1)
	l.touch()
	l.startDeadTimer()
	go l.readLoop()
	go l.writeLoop()
	return nil
}

// detach stops the most recent connection and waits for its goroutines.
func (s *Stream) detach() {
	s.mu.Lock()
	l := s.last
	s.mu.Unlock()
	if l != nil {
		l.fail(errReplaced)
		l.wg.Wait()
	}
}

// linkDown is called once when the attached connection l fails.
func (s *Stream) linkDown(l *link) {
	if s.role == roleClient {
		select {
		case s.down <- l:
		default:
		}
		return
	}
	s.armLinger()
}

// armLinger starts the server's linger window for a detached session.
func (s *Stream) armLinger() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.cur != nil {
		return
	}
	s.lingerGen++
	gen := s.lingerGen
	if s.lingerT != nil {
		s.lingerT.Stop()
	}
	s.lingerT = time.AfterFunc(s.cfg.Linger, func() { s.expire(gen) })
}

// expire ends a server session whose linger window passed without a resume.
func (s *Stream) expire(gen uint64) {
	var exp *ExpiredError
	ended := s.end(nil, nil, func() error {
		if s.cur != nil || gen != s.lingerGen {
			return nil
		}
		exp = &ExpiredError{SessionID: s.id, Delivered: s.acked, Sent: s.sent, ByServer: true}
		return exp
	})
	if ended {
		s.log.Info("resume: session expired", "linger", s.cfg.Linger, "delivered", exp.Delivered, "sent", exp.Sent)
	}
}

// end ends the stream with err (or, if cond is not nil, with the error cond
// returns under the lock, not at all if it returns nil). If goodbye is not
// nil and a connection is attached, it is written to the peer first. It
// reports whether it ended the stream. It does not wait for the stream's
// goroutines (it may run on one of them); Close does.
func (s *Stream) end(err error, goodbye *closeMsg, cond func() error) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	if cond != nil {
		if err = cond(); err == nil {
			s.mu.Unlock()
			return false
		}
	}
	s.err = err
	if s.tbl != nil {
		// Before Done: whoever sees the stream ended finds it out of the
		// table. (Lock order: Stream.mu, then Table.mu.)
		code := RefuseClosed
		var exp *ExpiredError
		if errors.As(err, &exp) {
			code = RefuseExpired
		}
		s.tbl.remove(s, code, s.recvd)
	}
	close(s.done)
	l := s.cur
	s.cur = nil
	if s.lingerT != nil {
		s.lingerT.Stop()
		s.lingerT = nil
	}
	if goodbye != nil && l != nil {
		goodbye.received = s.recvd
		l.goodbye = goodbye
	}
	s.sendSig.broadcast()
	s.recvSig.broadcast()
	s.roomSig.broadcast()
	s.failPings()
	s.mu.Unlock()

	if s.cancel != nil {
		s.cancel()
	}
	if l != nil {
		if goodbye != nil {
			// The writer sends the goodbye next and exits; a writer stuck
			// on a congested connection gets HandshakeTimeout to do so.
			l.kickWriter()
			t := time.AfterFunc(s.cfg.HandshakeTimeout, func() { l.stop(errStopped) })
			<-l.writerDone
			t.Stop()
		}
		l.stop(err)
	}
	if err != ErrClosed && err != ErrAbandoned {
		s.log.Info("resume: session ended", "err", err)
	}
	return true
}

var (
	errReplaced = errors.New("resume: connection replaced by a resumed one")
	errStopped  = errors.New("resume: connection stopped")
)

// deadError ends a connection on which nothing arrived for DeadTimeout.
type deadError struct{ after time.Duration }

func (e *deadError) Error() string {
	return fmt.Sprintf("resume: connection dead: nothing received for %v", e.after)
}

// link is one attached connection and its two goroutines: the reader, which
// delivers messages and processes acknowledgements, and the writer, which
// sends (in this order of priority) Pongs, acknowledgements, messages in
// sequence order, and keepalive Pings.
type link struct {
	s    *Stream
	conn wire.Conn
	kick chan struct{} // wakes the writer; capacity 1
	done chan struct{} // closed by stop
	wg   sync.WaitGroup

	writerDone chan struct{} // closed when the writer exits
	attachedAt time.Time

	// What the stream had acknowledged and received when the connection
	// was attached: a connection that moved messages either way made
	// progress (client.go, redialLoop).
	ackedAtAttach, recvdAtAttach uint64

	stopOnce sync.Once

	// Guarded by s.mu.
	next    uint64     // next sequence number to write
	writing uint64     // sequence number being written; 0 if none
	release *[]byte    // acknowledged while being written; freed by the writer
	pong    *wire.Pong // Pong to send to a keepalive's or Flush's Ping
	pongX   *wire.Pong // Pong to send to the latest explicit Ping (Stream.Ping)
	goodbye *closeMsg  // the session's Close, the writer's last frame
	polled  bool       // a Ping asked the peer to acknowledge
	idle    bool       // the writer waits for a kick or a timer

	// Reader only.
	recvNext uint64 // sequence number of the next message frame

	lastRecv atomic.Int64 // unix nanoseconds of the last frame received
	paused   atomic.Bool  // the reader waits for room, not for the peer

	deadMu      sync.Mutex
	deadT       *time.Timer
	deadStopped bool
}

func (l *link) kickWriter() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *link) touch() { l.lastRecv.Store(time.Now().UnixNano()) }

func (l *link) stopped() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop closes the connection, which ends both goroutines. Idempotent.
func (l *link) stop(error) {
	l.stopOnce.Do(func() {
		close(l.done)
		l.conn.Close()
		l.deadMu.Lock()
		l.deadStopped = true
		if l.deadT != nil {
			l.deadT.Stop()
		}
		l.deadMu.Unlock()
	})
}

// fail stops l and, if it was the stream's attached connection, detaches it
// (the client then reconnects; the server starts the linger window).
func (l *link) fail(err error) {
	l.stop(err)
	s := l.s
	s.mu.Lock()
	if s.cur != l {
		s.mu.Unlock()
		return
	}
	s.cur = nil
	s.mu.Unlock()
	if err != errReplaced {
		s.log.Info("resume: connection lost", "err", err)
	}
	s.linkDown(l)
}

func (l *link) startDeadTimer() {
	d := l.s.cfg.DeadTimeout
	if d <= 0 {
		return
	}
	l.deadMu.Lock()
	defer l.deadMu.Unlock()
	if !l.deadStopped {
		l.deadT = time.AfterFunc(d, l.checkDead)
	}
}

func (l *link) checkDead() {
	d := l.s.cfg.DeadTimeout
	left := d
	if !l.paused.Load() {
		left = time.Duration(l.lastRecv.Load() + int64(d) - time.Now().UnixNano())
	}
	if left <= 0 {
		l.fail(&deadError{after: d})
		return
	}
	l.deadMu.Lock()
	defer l.deadMu.Unlock()
	if !l.deadStopped {
		l.deadT.Reset(left)
	}
}

func (l *link) writeLoop() {
	defer l.s.wg.Done()
	defer l.wg.Done()
	defer close(l.writerDone)
	s := l.s
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	scratch := make([]byte, 0, 32)
	lastWrite := time.Now()
	var pings uint64
	for {
		var f wire.Frame
		wait := time.Duration(-1)
		now := time.Now()

		s.mu.Lock()
		if l.release != nil {
			putBuf(l.release)
			l.release = nil
		}
		l.writing = 0
		l.idle = false
		if l.stopped() {
			s.mu.Unlock()
			return
		}
		last := false
		if l.goodbye != nil {
			f = controlFrame(scratch, l.goodbye)
			l.goodbye, last = nil, true
		} else if s.ackNow || (!s.ackAt.IsZero() && !now.Before(s.ackAt)) {
			s.ackNow, s.ackAt = false, time.Time{}
			if s.recvd > s.ackedIn {
				f = controlFrame(scratch, &ackMsg{received: s.recvd})
				s.ackedIn, s.unacked = s.recvd, 0
			}
		}
		if f.Type == 0 && l.pongX != nil {
			f = wire.MessageFrame(l.pongX)
			l.pongX = nil
		}
		if f.Type == 0 && l.pong != nil {
			f = wire.MessageFrame(l.pong)
			l.pong = nil
		}
		if f.Type == 0 && len(s.pingOut) > 0 {
			f = s.nextPing(now)
		}
		if f.Type == 0 && l.next <= s.sent {
			m := s.out.at(int(l.next - s.acked - 1))
			f = wire.Frame{Type: wire.TypeData, Channel: Channel}
			if m.fin {
				f.Flags = flagFIN
			} else if m.buf != nil {
				f.Payload = *m.buf
			}
			l.writing = l.next
			l.next++
		}
		if f.Type == 0 && s.flushes > 0 && s.acked < s.sent && !l.polled {
			l.polled = true
			pings++
			f = wire.MessageFrame(&wire.Ping{ID: pings, SentUnixNano: now.UnixNano()})
		}
		if f.Type == 0 {
			if ka := s.cfg.KeepaliveInterval; ka > 0 {
				if d := lastWrite.Add(ka).Sub(now); d <= 0 {
					pings++
					f = wire.MessageFrame(&wire.Ping{ID: pings, SentUnixNano: now.UnixNano()})
				} else {
					wait = d
				}
			}
			if !s.ackAt.IsZero() {
				if d := s.ackAt.Sub(now); wait < 0 || d < wait {
					wait = d
				}
			}
			l.idle = true
		}
		s.mu.Unlock()

		if f.Type != 0 {
			if err := l.conn.WriteFrame(f); err != nil {
				l.fail(fmt.Errorf("resume: write: %w", err))
				return
			}
			if last {
				return
			}
			lastWrite = time.Now()
			continue
		}
		var tc <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-l.kick:
		case <-tc:
		case <-l.done:
		}
		timer.Stop()
	}
}

func (l *link) readLoop() {
	defer l.s.wg.Done()
	defer l.wg.Done()
	for {
		f, err := l.conn.ReadFrame()
		if err != nil {
			if l.stopped() {
				err = errStopped
			} else {
				err = fmt.Errorf("resume: read: %w", err)
			}
			l.fail(err)
			return
		}
		l.touch()
		if err := l.handle(f); err != nil {
			l.fail(err)
			return
		}
	}
}

func (l *link) protocolError(format string, args ...any) error {
	return &ProtocolError{SessionID: l.s.id, Op: "read", Err: fmt.Errorf(format, args...)}
}

// handle processes one frame read from the attached connection. An error
// ends the connection (not the stream).
func (l *link) handle(f wire.Frame) error {
	s := l.s
	switch f.Type {
	case wire.TypeData:
	case wire.TypePing:
		m, err := wire.DecodeMessage(f)
		if err != nil {
			return &ProtocolError{SessionID: s.id, Op: "read", Err: err}
		}
		p := m.(*wire.Ping)
		s.mu.Lock()
		// One Pong of each kind waits at most (a flood of Pings holds no
		// memory): the latest explicit Ping's answers every explicit Ping
		// before it (onPong), and a keepalive's never displaces it.
		if p.ID&pingBit != 0 {
			l.pongX = &wire.Pong{ID: p.ID, SentUnixNano: p.SentUnixNano}
		} else {
			l.pong = &wire.Pong{ID: p.ID, SentUnixNano: p.SentUnixNano}
		}
		s.ackNow = true // a Ping asks for our acknowledgement too
		s.mu.Unlock()
		l.kickWriter()
		return nil
	case wire.TypePong:
		m, err := wire.DecodeMessage(f)
		if err != nil {
			return &ProtocolError{SessionID: s.id, Op: "read", Err: err}
		}
		s.onPong(m.(*wire.Pong).ID)
		return nil
	case wire.TypeClose:
		m, err := wire.DecodeMessage(f)
		if err != nil {
			return &ProtocolError{SessionID: s.id, Op: "read", Err: err}
		}
		c := m.(*wire.Close)
		return fmt.Errorf("resume: the peer closed the connection (%s: %q): %w", c.Code, c.Reason, io.EOF)
	default:
		return l.protocolError("unexpected %s frame on a resumable connection", f.Type)
	}
	if f.Channel != Channel {
		return l.protocolError("Data frame on channel %d, want %d", f.Channel, Channel)
	}
	if f.Flags&flagControl != 0 {
		m, err := decodeControl(f.Flags, f.Payload)
		if err != nil {
			return &ProtocolError{SessionID: s.id, Op: "read", Err: err}
		}
		switch m := m.(type) {
		case *ackMsg:
			return l.onAck(m.received)
		case *closeMsg:
			l.onClose(m)
			return nil
		}
		return l.protocolError("unexpected %s message after the handshake", m.kind())
	}
	if f.Flags&^flagFIN != 0 {
		return l.protocolError("Data frame with unknown flags 0x%04x", f.Flags)
	}
	return l.onData(f.Payload, f.Flags&flagFIN != 0)
}

func (l *link) onAck(n uint64) error {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if n >= l.next {
		return l.protocolError("the peer acknowledged message %d, but only messages up to %d were sent on this connection", n, l.next-1)
	}
	s.ackThrough(n)
	return nil
}

func (l *link) onClose(m *closeMsg) {
	s := l.s
	s.end(nil, nil, func() error {
		if m.received < l.next {
			s.ackThrough(m.received)
		}
		return &PeerClosedError{SessionID: s.id, Code: m.code, Reason: m.reason, Delivered: s.acked, Sent: s.sent}
	})
}

func (l *link) onData(p []byte, fin bool) error {
	s := l.s
	if fin && len(p) != 0 {
		return l.protocolError("end-of-stream frame with %d payload bytes", len(p))
	}
	seq := l.recvNext
	l.recvNext++
	m := msg{fin: fin}
	cost := len(p) + MessageOverhead

	s.mu.Lock()
	if seq <= s.recvd {
		s.mu.Unlock()
		return nil // already received: discarded
	}
	if seq != s.recvd+1 {
		s.mu.Unlock()
		return l.protocolError("message %d arrived after %d", seq, s.recvd)
	}
	if s.finIn {
		s.mu.Unlock()
		return l.protocolError("message %d after the end of the stream", seq)
	}
	if len(p) > s.cfg.MaxMessage {
		s.mu.Unlock()
		return l.protocolError("message %d of %d bytes exceeds MaxMessage %d", seq, len(p), s.cfg.MaxMessage)
	}
	for s.inBytes > 0 && s.inBytes+cost > s.cfg.ReceiveBuffer {
		ch := s.roomSig.wait()
		s.mu.Unlock()
		l.paused.Store(true)
		select {
		case <-ch:
		case <-l.done:
			l.paused.Store(false)
			return errStopped
		}
		l.touch()
		l.paused.Store(false)
		s.mu.Lock()
	}
	if s.err != nil {
		s.mu.Unlock()
		return errStopped
	}
	if s.sink != nil && !fin && s.in.len() == 0 {
		return l.deliver(p, seq, cost)
	}
	s.mu.Unlock()

	if len(p) > 0 {
		m.buf = getBuf(len(p))
		copy(*m.buf, p)
	}

	s.mu.Lock()
	s.in.push(m)
	s.inBytes += cost
	kick := s.received(seq, cost, fin)
	s.recvSig.broadcast()
	s.mu.Unlock()
	if kick {
		l.kickWriter()
	}
	return nil
}

// received records that message seq, costing cost, has arrived (queued or
// handed to CopyTo's writer) and schedules its acknowledgement. It reports
// whether the writer must be woken. s.mu must be held.
func (s *Stream) received(seq uint64, cost int, fin bool) (kick bool) {
	s.recvd = seq
	s.finIn = s.finIn || fin
	s.unacked += cost
	if s.unacked >= max(s.peerReplay/2, 1) || fin {
		kick = !s.ackNow
		s.ackNow = true
	} else if s.ackAt.IsZero() {
		s.ackAt = time.Now().Add(s.cfg.AckInterval)
		kick = true
	}
	return kick
}

// deliver writes message seq, payload p, to the writer of a waiting CopyTo,
// straight from the connection's read buffer. It is called with s.mu held,
// the receive queue empty, and releases s.mu.
func (l *link) deliver(p []byte, seq uint64, cost int) error {
	s := l.s
	w := s.sink
	s.sinkBusy = true
	kick := s.received(seq, cost, false)
	s.mu.Unlock()
	if kick {
		l.kickWriter()
	}
	var n int
	var err error
	if len(p) > 0 {
		l.paused.Store(true) // waiting for the application, not the peer
		n, err = w.Write(p)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		l.touch()
		l.paused.Store(false)
	}
	s.mu.Lock()
	s.sinkBusy = false
	s.sinkN += int64(n)
	if err != nil {
		s.sinkErr, s.sink = err, nil
		s.recvSig.broadcast()
	}
	s.sinkSig.broadcast()
	s.mu.Unlock()
	return nil
}
