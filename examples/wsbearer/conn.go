package wsbearer

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/websocket"

	"github.com/bearerkit/connect/bearers"
)

const (
	// maxBuffered bounds each direction's buffer: bytes Write queued and not
	// yet taken by the writer goroutine, and bytes the reader goroutine
	// received and Read has not consumed yet.
	maxBuffered = 32 << 10
	// lingerTimeout bounds how long a closed Conn keeps trying to deliver
	// bytes Write accepted before Close.
	lingerTimeout = 5 * time.Second
)

// Conn is a WebSocket connection seen as a byte stream: every Write is sent as
// binary frames, and Read returns the payload bytes of incoming data frames
// in order, ignoring frame boundaries (a Read may return part of a frame, or
// bytes of several). All methods are safe for concurrent use.
//
// The Conn owns two goroutines: a writer that sends what Write queued, and a
// reader that receives frames into a bounded buffer. Deadlines apply to
// Read and Write waiting on those buffers, never to the socket, so that a
// timeout cannot cut a frame in half: after a timeout the stream is intact
// and can be used again, as net.Conn requires. Close returns at once: queued
// bytes are still sent (for at most five seconds if the peer does not read),
// then a close frame, then the socket is closed and both goroutines end.
//
// A Conn carries WebSocket framing state, so it is not a kernel socket a
// plugin could hand over (it does not implement bearers.SocketConn).
type Conn struct {
	ws            *websocket.Conn
	local, remote net.Addr

	mu     sync.Mutex
	closed bool

	// Write side.
	pending []byte
	werr    error
	wdl     deadline
	wsem    chan struct{} // capacity 1: held by the Write in progress
	wdata   chan struct{} // capacity 1: pending has bytes, or Close was called
	wspace  chan struct{} // capacity 1: the writer took pending

	// Read side.
	rbuf   []byte // received, unread bytes are rbuf[roff:]
	roff   int
	rerr   error // the reader's final error, returned once rbuf is drained
	rdl    deadline
	rdata  chan struct{} // capacity 1: rbuf has bytes
	rspace chan struct{} // capacity 1: Read consumed bytes
	rdone  chan struct{} // closed when the reader goroutine has stopped

	done     chan struct{} // closed by Close
	finished chan struct{} // closed once the WebSocket is closed
}

func newConn(ws *websocket.Conn, local, remote net.Addr) *Conn {
	ws.PayloadType = websocket.BinaryFrame
	c := &Conn{
		ws: ws, local: local, remote: remote,
		wsem:     make(chan struct{}, 1),
		wdata:    make(chan struct{}, 1),
		wspace:   make(chan struct{}, 1),
		rdata:    make(chan struct{}, 1),
		rspace:   make(chan struct{}, 1),
		rdone:    make(chan struct{}),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	go c.writeLoop()
	go c.readLoop()
	return c
}

// Peer is empty: the WebSocket bearer authenticates nobody.
func (c *Conn) Peer() bearers.Peer { return bearers.Peer{} }

// LocalAddr returns the local TCP address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's TCP address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "ws", Source: c.local, Addr: c.remote, Err: err}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func expired(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Read reads received payload bytes. It returns io.EOF once the peer has
// closed the WebSocket and everything it sent has been read, and an error
// wrapping net.ErrClosed after Close.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		exp := c.rdl.wait()
		if expired(exp) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, c.opError("read", net.ErrClosed)
		}
		if avail := len(c.rbuf) - c.roff; avail > 0 || len(b) == 0 {
			n := copy(b, c.rbuf[c.roff:])
			c.roff += n
			if c.roff == len(c.rbuf) {
				c.rbuf, c.roff = c.rbuf[:0], 0
			} else {
				signal(c.rdata) // more for another Read
			}
			c.mu.Unlock()
			signal(c.rspace)
			return n, nil
		}
		if c.rerr != nil {
			err := c.rerr
			c.mu.Unlock()
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, c.opError("read", err)
		}
		c.mu.Unlock()
		select {
		case <-c.rdata:
		case <-c.rdone:
		case <-c.done:
		case <-exp:
		}
	}
}

// readLoop receives frames into rbuf until the WebSocket fails or closes.
func (c *Conn) readLoop() {
	defer close(c.rdone)
	buf := make([]byte, maxBuffered/2)
	for {
		n, err := c.ws.Read(buf)
		for n > 0 {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				return
			}
			if len(c.rbuf)-c.roff+n <= maxBuffered {
				if c.roff > 0 && len(c.rbuf)+n > cap(c.rbuf) {
					c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[c.roff:])]
					c.roff = 0
				}
				c.rbuf = append(c.rbuf, buf[:n]...)
				n = 0
				signal(c.rdata)
			}
			c.mu.Unlock()
			if n > 0 {
				select {
				case <-c.rspace:
				case <-c.done:
				}
			}
		}
		if err != nil {
			c.mu.Lock()
			c.rerr = err
			c.mu.Unlock()
			return
		}
	}
}

// Write queues b to be sent and returns the number of bytes queued: len(b),
// unless the write deadline passed, the Conn was closed (net.ErrClosed) or
// an earlier send failed (that error, from then on).
func (c *Conn) Write(b []byte) (int, error) {
	select {
	case c.wsem <- struct{}{}:
	case <-c.done:
		return 0, c.opError("write", net.ErrClosed)
	case <-c.wdl.wait():
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	defer func() { <-c.wsem }()
	n := 0
	for {
		exp := c.wdl.wait()
		if expired(exp) {
			return n, c.opError("write", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return n, c.opError("write", net.ErrClosed)
		}
		if c.werr != nil {
			err := c.werr
			c.mu.Unlock()
			return n, c.opError("write", err)
		}
		if k := min(maxBuffered-len(c.pending), len(b)-n); k > 0 {
			c.pending = append(c.pending, b[n:n+k]...)
			n += k
			signal(c.wdata)
		}
		c.mu.Unlock()
		if n == len(b) {
			return n, nil
		}
		select {
		case <-c.wspace:
		case <-c.done:
		case <-exp:
		}
	}
}

// writeLoop sends queued bytes, one binary frame per batch; after Close it
// sends what is left, closes the WebSocket and returns.
func (c *Conn) writeLoop() {
	defer close(c.finished)
	var out []byte
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.closed && c.werr == nil {
			c.mu.Unlock()
			select {
			case <-c.wdata:
			case <-c.done:
			}
			c.mu.Lock()
		}
		if c.werr != nil || len(c.pending) == 0 {
			c.mu.Unlock()
			break
		}
		c.pending, out = out[:0], c.pending
		c.mu.Unlock()
		signal(c.wspace)
		if _, err := c.ws.Write(out); err != nil {
			c.mu.Lock()
			c.werr = err
			c.pending = nil
			c.mu.Unlock()
			signal(c.wspace)
		}
	}
	<-c.done // after a failed send, reads may still succeed until Close
	c.wdl.stop()
	c.rdl.stop()
	_ = c.ws.Close()
}

// Close closes the connection as the type's documentation says. Pending
// Reads and Writes return errors wrapping net.ErrClosed at once. Close is
// idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	_ = c.ws.SetWriteDeadline(time.Now().Add(lingerTimeout))
	close(c.done)
	return nil
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read calls, pending ones included.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadline(&c.rdl, t) }

// SetWriteDeadline sets the deadline for Write calls, pending ones included:
// how long Write may wait to queue bytes.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(&c.wdl, t) }

func (c *Conn) setDeadline(d *deadline, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set deadline", net.ErrClosed)
	}
	d.set(t)
	return nil
}

// deadline is a settable point in time whose passing closes a channel. The
// zero value has no deadline; it is safe for concurrent use.
type deadline struct {
	mu    sync.Mutex
	gen   uint64 // identifies the timer allowed to close ch
	timer *time.Timer
	ch    chan struct{}
	fired bool
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	wait := time.Until(t)
	if !t.IsZero() && wait <= 0 {
		if !d.fired {
			close(d.ch)
			d.fired = true
		}
		return
	}
	if d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.fired {
			close(d.ch)
			d.fired = true
		}
	})
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
