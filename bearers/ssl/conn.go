package ssl

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
)

const (
	// maxPending bounds the bytes a Conn holds between Write and the wire:
	// one buffer being filled by Write plus one being written by the
	// connection's writer goroutine, maxPending each.
	maxPending = 32 << 10
	// lingerTimeout bounds how long a closed Conn keeps trying to deliver
	// bytes that Write had accepted before Close, when the peer does not read.
	lingerTimeout = 5 * time.Second
)

// Conn is a TLS connection produced by the ssl bearer, as returned by Dial and
// Accept. Its handshake is complete. All methods are safe for concurrent use;
// concurrent Writes are serialized so that each one's bytes stay contiguous.
//
// Write behaves like a kernel socket's send buffer: it returns once its bytes
// are queued (at most 64 KiB are queued per connection), and a goroutine owned
// by the Conn encrypts and sends them. That is what lets a write deadline
// expire without corrupting the TLS stream: a Write that times out returns how
// many bytes it queued, and those bytes, and only those, are sent. A write
// error is sticky: after it every Write returns it.
//
// Close returns at once; bytes already queued are still sent (for at most
// five seconds if the peer does not read), then the TLS close_notify alert
// and the TCP close follow, and the writer goroutine ends. CloseWrite sends
// the queued bytes and then close_notify, leaving the read side open.
//
// Conn deliberately does not implement bearers.SocketConn: TLS state lives in
// this process, so the kernel socket underneath cannot be handed to another
// process; a plugin relays the connection's bytes instead.
type Conn struct {
	tc   *tls.Conn
	peer bearers.Peer

	mu          sync.Mutex
	closed      bool   // Close was called
	writeClosed bool   // CloseWrite was called
	pending     []byte // queued by Write, not yet taken by the writer
	werr        error  // sticky error of the writer goroutine
	wdl         deadline

	wsem  chan struct{} // capacity 1: held by the Write in progress
	data  chan struct{} // capacity 1: pending has bytes, or a close was asked for
	space chan struct{} // capacity 1: the writer took pending
	done  chan struct{} // closed by Close
}

func newConn(tc *tls.Conn, peer bearers.Peer) *Conn {
	c := &Conn{
		tc:    tc,
		peer:  peer,
		wsem:  make(chan struct{}, 1),
		data:  make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	go c.writeLoop()
	return c
}

// Peer reports what the handshake established about the far end: on an
// accepted connection, the verified client certificate's subject as
// "CN=<common name>" (empty when the client presented no verified
// certificate); on a dialed connection, the verified server certificate's
// subject in the same form (empty with insecureSkipVerify). When a verified
// certificate has no common name, Identity is its whole subject in RFC 2253
// form.
func (c *Conn) Peer() bearers.Peer { return c.peer }

// ConnectionState returns the TLS connection's negotiated parameters.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// LocalAddr returns the local TCP address.
func (c *Conn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr returns the peer's TCP address.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "ssl", Source: c.tc.LocalAddr(), Addr: c.tc.RemoteAddr(), Err: err}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Read reads decrypted bytes. After Close it returns an error wrapping
// net.ErrClosed; when the peer closes cleanly it returns io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	if c.isClosed() {
		return 0, c.opError("read", net.ErrClosed)
	}
	n, err := c.tc.Read(b)
	if err != nil && !errors.Is(err, io.EOF) && c.isClosed() {
		err = c.opError("read", net.ErrClosed)
	}
	return n, err
}

// signal wakes whoever waits on a capacity-1 channel, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Write queues b for sending; see the type's documentation. It returns the
// number of bytes queued, which is len(b) unless the write deadline passed,
// the Conn was closed (net.ErrClosed) or an earlier write failed.
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
		expired := c.wdl.wait()
		select {
		case <-expired:
			return n, c.opError("write", os.ErrDeadlineExceeded)
		default:
		}
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return n, c.opError("write", net.ErrClosed)
		case c.writeClosed:
			c.mu.Unlock()
			return n, c.opError("write", errors.New("write side closed by CloseWrite"))
		case c.werr != nil:
			err := c.werr
			c.mu.Unlock()
			return n, err
		}
		if k := min(maxPending-len(c.pending), len(b)-n); k > 0 {
			c.pending = append(c.pending, b[n:n+k]...)
			n += k
			signal(c.data)
		}
		c.mu.Unlock()
		if n == len(b) {
			return n, nil
		}
		select {
		case <-c.space:
		case <-c.done:
		case <-expired:
		}
	}
}

// writeLoop is the Conn's writer goroutine. It sends what Write queued, and
// after CloseWrite or Close sends close_notify; after Close it closes the
// TLS connection and returns.
func (c *Conn) writeLoop() {
	var out []byte
	closeWriteSent := false
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.closed && (!c.writeClosed || closeWriteSent) && c.werr == nil {
			c.mu.Unlock()
			select {
			case <-c.data:
			case <-c.done:
			}
			c.mu.Lock()
		}
		if c.werr != nil || len(c.pending) == 0 && c.closed {
			c.mu.Unlock()
			break
		}
		if len(c.pending) == 0 { // write side closed and drained
			c.mu.Unlock()
			closeWriteSent = true
			if err := c.tc.CloseWrite(); err != nil {
				c.fail(err)
			}
			continue
		}
		c.pending, out = out[:0], c.pending
		c.mu.Unlock()
		signal(c.space)
		if _, err := c.tc.Write(out); err != nil {
			c.fail(err)
		}
	}
	// A failed write leaves the read side usable until Close.
	<-c.done
	c.wdl.stop()
	_ = c.tc.Close()
}

func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.pending = nil
	c.mu.Unlock()
	signal(c.space)
}

// CloseWrite sends the bytes already queued and then the TLS close_notify
// alert, after which the peer reads io.EOF. The read side stays open. It
// returns at once; later Writes fail.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	if !c.writeClosed {
		c.writeClosed = true
		signal(c.data)
	}
	return nil
}

// Close closes the connection: pending Reads and Writes return errors
// wrapping net.ErrClosed at once; queued bytes are still sent in the
// background, as the type's documentation says. Close is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	// Wake a Read blocked in the TLS layer; the writer goroutine closes the
	// socket once the queued bytes are out.
	_ = c.tc.SetReadDeadline(time.Unix(1, 0))
	_ = c.tc.SetWriteDeadline(time.Now().Add(lingerTimeout))
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
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set deadline", net.ErrClosed)
	}
	return c.tc.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline for Write calls, pending ones included.
// It bounds how long Write waits to queue bytes, not how long queued bytes
// take to reach the peer.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set deadline", net.ErrClosed)
	}
	c.wdl.set(t)
	return nil
}

// deadline is a settable point in time whose passing closes a channel.
// It is safe for concurrent use; the zero value has no deadline.
type deadline struct {
	mu    sync.Mutex
	gen   uint64 // identifies the timer that may close ch
	timer *time.Timer
	ch    chan struct{}
	fired bool // ch is closed
}

// set moves the deadline; the zero time removes it, a past time expires it
// at once (waking waiters).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	if t.IsZero() {
		d.reopenLocked()
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		if !d.fired {
			close(d.ch)
			d.fired = true
		}
		return
	}
	d.reopenLocked()
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

func (d *deadline) reopenLocked() {
	if d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
}

// wait returns a channel that is closed when the current deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
