// Package streamconn makes a byte stream that frames or encrypts what it
// carries (TLS, WebSocket, ...) honour the whole net.Conn contract, deadlines
// included, the way a kernel socket does. A bearer whose connections are such
// streams wraps each one with New and passes bearertest (which runs
// golang.org/x/net/nettest.TestConn).
//
// The problem it solves: net.Conn requires that after a Read or Write times
// out the connection still works. A stream whose deadline is set on the socket
// underneath does not: a write that times out halfway through a TLS record or
// a WebSocket frame has corrupted the stream for good. A Conn therefore never
// lets a deadline reach the inner stream:
//
//   - Write copies bytes into a bounded queue and returns the number it
//     queued; a writer goroutine owned by the Conn sends the queue to the
//     inner stream with no deadline. A write deadline bounds only the wait for
//     room in the queue, so a Write that times out returns n < len(b) with
//     exactly those n bytes queued, and the stream stays whole. A send error
//     is sticky: every later Write returns it.
//   - Reads are buffered the same way by default: a reader goroutine owned by
//     the Conn fills a bounded buffer from the inner stream and Read waits on
//     it. With Options.DirectReads, Read calls the inner stream directly and
//     read deadlines are set on it, for streams whose reads survive a timeout
//     (crypto/tls resumes a record after a read timeout).
//   - Deadlines are channels closed by timers, so a deadline set in the past
//     wakes pending calls at once.
//   - Close returns at once, and pending and later calls fail with errors
//     wrapping net.ErrClosed. The writer goroutine still sends what Write had
//     queued (for at most Options.Linger if the peer does not read), then
//     closes the inner stream, which sends whatever the transport says goodbye
//     with (TLS close_notify, a WebSocket close frame), and ends.
//   - CloseWrite, when the transport has a half-close (Options.CloseWrite),
//     sends the queued bytes and then half-closes, leaving the read side open.
//
// Package streamconn imports only the standard library.
package streamconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const (
	// DefaultBufferSize is the default Options.BufferSize.
	DefaultBufferSize = 32 << 10
	// DefaultLinger is the default Options.Linger.
	DefaultLinger = 5 * time.Second
)

// Options says how New wraps an inner stream. The zero value is usable:
// buffered reads, no half-close, default sizes.
type Options struct {
	// Net is the network named in the *net.OpError values the Conn returns
	// ("ssl", "ws").
	Net string

	// LocalAddr and RemoteAddr are what the Conn's methods of the same names
	// return; nil means the inner stream's.
	LocalAddr, RemoteAddr net.Addr

	// BufferSize bounds, in bytes, the queue between Write and the writer
	// goroutine and the buffer between the reader goroutine and Read. The
	// writer may be sending up to as many bytes again that it already took
	// from the queue. Zero or negative means DefaultBufferSize.
	BufferSize int

	// Linger bounds how long a closed Conn keeps trying to deliver bytes that
	// Write accepted before Close, when the peer does not read: Close sets
	// the inner stream's write deadline that far ahead. Zero means
	// DefaultLinger; negative means the queued bytes are dropped.
	Linger time.Duration

	// DirectReads makes Read call the inner stream's Read itself, with the
	// read deadline set on the inner stream, instead of a reader goroutine
	// filling a bounded buffer. Set it only if a read that times out leaves
	// the inner stream usable, as with crypto/tls; a WebSocket does not.
	DirectReads bool

	// CloseWrite half-closes the inner stream, for example
	// (*tls.Conn).CloseWrite, which sends close_notify. The writer goroutine
	// calls it once, after sending the bytes queued before the Conn's
	// CloseWrite was called. If nil, the Conn's CloseWrite fails with an
	// error wrapping errors.ErrUnsupported.
	CloseWrite func() error
}

// Conn is an inner stream seen through a send queue and, unless
// Options.DirectReads, a receive buffer; see the package documentation. All
// methods are safe for concurrent use; concurrent Writes are serialized so
// that each one's bytes stay contiguous.
//
// A Conn owns a writer goroutine and, unless Options.DirectReads, a reader
// goroutine. Both end after Close: the writer once it has delivered (or given
// up on) the queued bytes and closed the inner stream, the reader once the
// inner stream's Read returns. Done reports when they have.
//
// The inner stream belongs to the Conn from New on: use it directly only for
// what does not touch its byte stream or deadlines (a TLS connection's
// ConnectionState, for example).
type Conn struct {
	inner net.Conn
	opts  Options

	mu          sync.Mutex
	closed      bool // Close was called
	writeClosed bool // CloseWrite was called

	// Write side.
	pending []byte        // queued by Write, not yet taken by the writer
	werr    error         // sticky error of the writer goroutine
	wdl     deadline      // write deadline
	wsem    chan struct{} // capacity 1: held by the Write in progress
	wdata   chan struct{} // capacity 1: pending has bytes, or a close was asked for
	wspace  chan struct{} // capacity 1: the writer took pending

	// Read side, unless DirectReads.
	rbuf   []byte // received, unread bytes are rbuf[roff:]
	roff   int
	rerr   error         // the reader's final error, returned once rbuf is drained
	rdl    deadline      // read deadline
	rdata  chan struct{} // capacity 1: rbuf has bytes
	rspace chan struct{} // capacity 1: Read consumed bytes
	rdone  chan struct{} // closed when the reader goroutine has stopped

	done     chan struct{} // closed by Close
	finished chan struct{} // closed when the goroutines have ended, see Done
}

// New wraps inner and starts the Conn's goroutines. inner must not be used
// for reading or writing afterwards, nor its deadlines set.
func New(inner net.Conn, opts Options) *Conn {
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if opts.Linger == 0 {
		opts.Linger = DefaultLinger
	}
	if opts.LocalAddr == nil {
		opts.LocalAddr = inner.LocalAddr()
	}
	if opts.RemoteAddr == nil {
		opts.RemoteAddr = inner.RemoteAddr()
	}
	c := &Conn{
		inner:    inner,
		opts:     opts,
		wsem:     make(chan struct{}, 1),
		wdata:    make(chan struct{}, 1),
		wspace:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	if !opts.DirectReads {
		c.rdata = make(chan struct{}, 1)
		c.rspace = make(chan struct{}, 1)
		c.rdone = make(chan struct{})
		go c.readLoop()
	}
	go c.writeLoop()
	return c
}

// LocalAddr returns Options.LocalAddr, or else the inner stream's.
func (c *Conn) LocalAddr() net.Addr { return c.opts.LocalAddr }

// RemoteAddr returns Options.RemoteAddr, or else the inner stream's.
func (c *Conn) RemoteAddr() net.Addr { return c.opts.RemoteAddr }

// Done returns a channel that is closed once the Conn has finished closing:
// Close was called, the writer goroutine has delivered or given up on the
// queued bytes and closed the inner stream, and the reader goroutine, if
// any, has ended.
func (c *Conn) Done() <-chan struct{} { return c.finished }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.opts.Net, Source: c.opts.LocalAddr, Addr: c.opts.RemoteAddr, Err: err}
}

// signal wakes whoever waits on a capacity-1 channel, without blocking.
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

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Read reads received bytes. It returns io.EOF once the peer has closed its
// side and everything it sent has been read, and an error wrapping
// net.ErrClosed after Close.
func (c *Conn) Read(b []byte) (int, error) {
	if c.opts.DirectReads {
		return c.readDirect(b)
	}
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

// readDirect is Read with Options.DirectReads: the inner stream's errors are
// returned as they are, except that after Close they wrap net.ErrClosed.
func (c *Conn) readDirect(b []byte) (int, error) {
	if c.isClosed() {
		return 0, c.opError("read", net.ErrClosed)
	}
	n, err := c.inner.Read(b)
	if err != nil && !errors.Is(err, io.EOF) && c.isClosed() {
		err = c.opError("read", net.ErrClosed)
	}
	return n, err
}

// readLoop is the reader goroutine: it reads the inner stream into rbuf
// until the stream fails or ends, or the Conn is closed.
func (c *Conn) readLoop() {
	defer close(c.rdone)
	buf := make([]byte, max(c.opts.BufferSize/2, 1))
	for {
		n, err := c.inner.Read(buf)
		for n > 0 {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				return
			}
			if len(c.rbuf)-c.roff+n <= c.opts.BufferSize {
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

// Write queues b for sending and returns the number of bytes queued: len(b),
// unless the write deadline passed, the Conn was closed (net.ErrClosed),
// CloseWrite was called, or an earlier send failed (that error, from then
// on).
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
			return n, c.opError("write", err)
		}
		if k := min(c.opts.BufferSize-len(c.pending), len(b)-n); k > 0 {
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

// writeLoop is the writer goroutine. It sends what Write queued, and after
// CloseWrite half-closes the inner stream; after Close it sends what is left,
// closes the inner stream and returns.
func (c *Conn) writeLoop() {
	defer close(c.finished)
	var out []byte
	closeWriteSent := false
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.closed && (!c.writeClosed || closeWriteSent) && c.werr == nil {
			c.mu.Unlock()
			select {
			case <-c.wdata:
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
			if err := c.opts.CloseWrite(); err != nil {
				c.fail(err)
			}
			continue
		}
		c.pending, out = out[:0], c.pending
		c.mu.Unlock()
		signal(c.wspace)
		if _, err := c.inner.Write(out); err != nil {
			c.fail(err)
		}
	}
	<-c.done // after a failed send, reads may still succeed until Close
	c.wdl.stop()
	c.rdl.stop()
	_ = c.inner.Close()
	if c.rdone != nil {
		<-c.rdone
	}
}

// fail records the writer's sticky error and drops what is queued.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.pending = nil
	c.mu.Unlock()
	signal(c.wspace)
}

// CloseWrite half-closes the connection: the bytes already queued are sent,
// then Options.CloseWrite is called, after which the peer reads io.EOF. The
// read side stays open. It returns at once; later Writes fail. Without
// Options.CloseWrite it returns an error wrapping errors.ErrUnsupported.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("close", net.ErrClosed)
	}
	if c.opts.CloseWrite == nil {
		return c.opError("close", errors.ErrUnsupported)
	}
	if !c.writeClosed {
		c.writeClosed = true
		signal(c.wdata)
	}
	return nil
}

// Close closes the connection: pending Reads and Writes return errors
// wrapping net.ErrClosed at once; queued bytes are still sent in the
// background, as the package documentation says. Close is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.opts.DirectReads {
		// Wake a Read blocked in the inner stream.
		_ = c.inner.SetReadDeadline(time.Unix(1, 0))
	}
	_ = c.inner.SetWriteDeadline(time.Now().Add(c.opts.Linger))
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
// With Options.DirectReads it sets the inner stream's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set deadline", net.ErrClosed)
	}
	if c.opts.DirectReads {
		return c.inner.SetReadDeadline(t)
	}
	c.rdl.set(t)
	return nil
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
