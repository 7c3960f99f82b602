package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Conn reads and writes frames over one bearer connection.
//
// Concurrency: WriteFrame and WriteMessage are safe for concurrent use; each
// frame goes out whole, never interleaved with another. ReadFrame and
// ReadMessage must be called by one goroutine at a time, and may run
// concurrently with writes. Close is safe to call at any time from any
// goroutine, more than once; it closes the underlying net.Conn, which
// unblocks pending reads and writes.
//
// The payload of a frame returned by ReadFrame (and of a *Data returned by
// ReadMessage) is valid only until the next call to ReadFrame or
// ReadMessage: the connection reuses its buffers. Copy it to keep it.
//
// Deadlines are set on the underlying net.Conn. A read or write that fails
// before any byte of a frame was consumed or sent (for example a deadline
// that expired while waiting for the next frame) may be retried; any other
// failure is final for that direction and is returned by every later call.
type Conn interface {
	// ReadFrame reads the next frame. At the end of a stream between two
	// frames it returns io.EOF itself. Decode failures are *DecodeError.
	ReadFrame() (Frame, error)
	// WriteFrame writes one frame. It refuses, writing nothing, a frame
	// of unknown type (ErrUnknownType), a control frame with a channel or
	// flags (ErrMalformed), or a payload larger than the connection's
	// maximum (ErrFrameTooLarge).
	WriteFrame(Frame) error
	// WriteMessage validates m and writes it as one frame. It refuses,
	// writing nothing, a message that breaks a field rule (a zero client
	// id, a token over MaxTokenLen, ...), and what WriteFrame refuses.
	WriteMessage(Message) error
	// ReadMessage reads the next frame and decodes it with DecodeMessage:
	// control frames give *Hello, *Welcome, ...; Data frames give a *Data
	// whose payload follows the ReadFrame validity rule. A message that
	// fails to decode leaves the connection usable (the framing is intact):
	// whether to go on is the caller's decision.
	ReadMessage() (Message, error)
	// Close closes the underlying connection. It is idempotent and returns
	// the first Close's result every time.
	Close() error
}

const (
	// streamReadBuffer is the stream reader's buffer. Frames that fit in it
	// are returned without copying; larger ones go to a separate buffer.
	streamReadBuffer = 16 << 10
	// copyWriteMax: frames with a payload up to this size are copied
	// behind their header and written with one Write; larger payloads are
	// written from the caller's slice with the header in one writev
	// (net.Buffers).
	copyWriteMax = 16 << 10
	// largeReadStep is the first allocation for a payload larger than the
	// read buffer. The buffer then at most doubles with each step, so a
	// peer must send bytes to make the reader allocate for them.
	largeReadStep = 64 << 10
	// keepLargeBuffer: a large payload buffer up to this capacity is kept
	// for the next frame; larger ones are dropped once the frame is done.
	keepLargeBuffer = 256 << 10
	// keepWriteBuffer: the write buffer is dropped after a frame that grew
	// it beyond this capacity.
	keepWriteBuffer = 64 << 10
)

// NewStreamConn returns a Conn that frames a byte stream (a TCP or TLS
// connection, a unix stream socket, ...). maxPayload bounds frames in both
// directions: reads reject longer declared payloads before allocating
// (ErrFrameTooLarge), writes refuse them. Zero or negative means
// DefaultMaxPayload; values above MaxFrameHardLimit mean MaxFrameHardLimit.
// Frames to a peer must also respect the MaxPayload the peer announced in its
// Welcome; that is the caller's business.
//
// The reader buffers 16 KiB; a frame that fits is returned without copying.
// A longer payload is read into a separate buffer that grows as the bytes
// arrive rather than as the header claims. Once the stream has lost its
// framing (a bad header, a truncated frame, an I/O error in mid-frame), every
// later ReadFrame returns the same error. A frame is written with one Write
// (or one writev for payloads over 16 KiB).
func NewStreamConn(c net.Conn, maxPayload int) Conn {
	return &streamConn{
		c:   c,
		max: normMax(maxPayload),
		br:  bufio.NewReaderSize(c, streamReadBuffer),
		w:   writer{c: c},
	}
}

type streamConn struct {
	c   net.Conn
	max int

	// Reader state, owned by the one reading goroutine.
	br      *bufio.Reader
	pending int    // bytes of the last frame still in br, discarded by the next read
	large   []byte // buffer for payloads that do not fit in br
	rerr    error  // sticky read error

	w writer

	closeOnce sync.Once
	closeErr  error
}

func (s *streamConn) ReadFrame() (Frame, error) {
	if s.rerr != nil {
		return Frame{}, s.rerr
	}
	if s.pending > 0 {
		s.br.Discard(s.pending) // cannot fail: the bytes are buffered
		s.pending = 0
	}
	if cap(s.large) > keepLargeBuffer {
		s.large = nil
	}
	b, err := s.br.Peek(1)
	if len(b) == 0 {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("wire: read frame: %w", err)
	}
	if b[0] != Version {
		seen, _ := s.br.Peek(s.br.Buffered())
		return Frame{}, s.fail(versionError(seen))
	}
	hb, err := s.br.Peek(HeaderSize)
	if len(hb) < HeaderSize {
		if err == io.EOF {
			return Frame{}, s.fail(truncatedStream(&DecodeError{Field: "header", Offset: len(hb),
				Err: fmt.Errorf("%w: connection closed after %d of %d header bytes", ErrTruncated, len(hb), HeaderSize)}))
		}
		return Frame{}, fmt.Errorf("wire: read frame header: %w", err)
	}
	h, err := ParseHeader(hb)
	if err != nil {
		return Frame{}, s.fail(err)
	}
	if h.Length > uint32(s.max) {
		return Frame{}, s.fail(tooLarge(h.Type, h.Length, s.max))
	}
	n := HeaderSize + int(h.Length)
	if n <= s.br.Size() {
		fb, err := s.br.Peek(n)
		if len(fb) < n {
			if err == io.EOF {
				return Frame{}, s.fail(truncatedPayload(h, len(fb)-HeaderSize))
			}
			return Frame{}, fmt.Errorf("wire: read %s frame payload: %w", h.Type, err)
		}
		s.pending = n
		return Frame{Type: h.Type, Flags: h.Flags, Channel: h.Channel, Payload: fb[HeaderSize:n:n]}, nil
	}
	s.br.Discard(HeaderSize)
	payload, err := s.readLarge(h)
	if err != nil {
		return Frame{}, s.fail(err)
	}
	return Frame{Type: h.Type, Flags: h.Flags, Channel: h.Channel, Payload: payload}, nil
}

// readLarge reads a payload that does not fit in the read buffer. The buffer
// grows with the bytes received: first largeReadStep, then at most double
// what has arrived.
func (s *streamConn) readLarge(h Header) ([]byte, error) {
	n := int(h.Length)
	buf := s.large[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, max(largeReadStep, 2*len(buf))))
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(s.br, buf[len(buf):min(n, cap(buf))])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, truncatedPayload(h, len(buf))
			}
			return nil, fmt.Errorf("wire: read %s frame payload (%d of %d bytes; the stream has lost its framing): %w", h.Type, len(buf), n, err)
		}
	}
	s.large = buf
	return buf[:n:n], nil
}

func truncatedPayload(h Header, got int) error {
	return truncatedStream(&DecodeError{Type: h.Type, Field: "payload", Offset: HeaderSize + got,
		Err: fmt.Errorf("%w: connection closed after %d of %d payload bytes", ErrTruncated, got, h.Length)})
}

// truncatedStream makes a truncation error on a stream also match
// io.ErrUnexpectedEOF.
func truncatedStream(e *DecodeError) error {
	e.Err = fmt.Errorf("%w (%w)", e.Err, io.ErrUnexpectedEOF)
	return e
}

func (s *streamConn) fail(err error) error {
	s.rerr = err
	return err
}

func (s *streamConn) ReadMessage() (Message, error) {
	f, err := s.ReadFrame()
	if err != nil {
		return nil, err
	}
	return DecodeMessage(f)
}

func (s *streamConn) WriteFrame(f Frame) error {
	if err := checkWriteFrame(f, s.max); err != nil {
		return err
	}
	if len(f.Payload) <= copyWriteMax {
		return s.w.write(f.Type, func(b []byte) []byte { return AppendFrame(b, f) })
	}
	return s.w.writev(f)
}

func (s *streamConn) WriteMessage(m Message) error {
	return writeMessage(&s.w, m, s.max, s.WriteFrame)
}

func (s *streamConn) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.c.Close() })
	return s.closeErr
}

// NewDatagramConn returns a Conn over a message-preserving connection (a
// connected UDP socket, a unix datagram or seqpacket socket, a datagram
// bearer's connection): every Write sends one datagram, every Read returns
// one. Each datagram carries exactly one frame.
//
// maxPayload bounds frames in both directions as for NewStreamConn, and is
// further capped at MaxDatagramPayload. The read buffer (HeaderSize+maxPayload
// +1 bytes) is allocated on the first read.
//
// Decode failures concern one datagram only: a datagram that is not exactly
// one valid frame (garbage, a truncated frame, trailing bytes:
// ErrTrailingData, an oversized frame) makes ReadFrame return a *DecodeError,
// and the next ReadFrame reads the next datagram. Datagrams may be lost,
// duplicated or reordered; the protocol above copes (docs/PROTOCOL.md,
// "Datagram bearers").
func NewDatagramConn(c net.Conn, maxPayload int) Conn {
	return &datagramConn{
		c:   c,
		max: min(normMax(maxPayload), MaxDatagramPayload),
		w:   writer{c: c},
	}
}

type datagramConn struct {
	c    net.Conn
	max  int
	rbuf []byte // owned by the reading goroutine
	w    writer

	closeOnce sync.Once
	closeErr  error
}

func (d *datagramConn) ReadFrame() (Frame, error) {
	if d.rbuf == nil {
		// One byte more than the largest valid datagram, so that a longer
		// one is seen as such rather than silently truncated to fit.
		d.rbuf = make([]byte, HeaderSize+d.max+1)
	}
	n, err := d.c.Read(d.rbuf)
	if err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("wire: read datagram: %w", err)
	}
	f, used, err := DecodeFrame(d.rbuf[:n], d.max)
	if err != nil {
		return Frame{}, err
	}
	if used != n {
		extra := fmt.Sprintf("%d bytes", n-used)
		if n == len(d.rbuf) {
			extra = "at least " + extra
		}
		return Frame{}, &DecodeError{Type: f.Type, Field: "datagram", Offset: used,
			Err: fmt.Errorf("%w: %s after a frame of %d bytes", ErrTrailingData, extra, used)}
	}
	return f, nil
}

func (d *datagramConn) ReadMessage() (Message, error) {
	f, err := d.ReadFrame()
	if err != nil {
		return nil, err
	}
	return DecodeMessage(f)
}

func (d *datagramConn) WriteFrame(f Frame) error {
	if err := checkWriteFrame(f, d.max); err != nil {
		return err
	}
	return d.w.write(f.Type, func(b []byte) []byte { return AppendFrame(b, f) })
}

func (d *datagramConn) WriteMessage(m Message) error {
	return writeMessage(&d.w, m, d.max, d.WriteFrame)
}

func (d *datagramConn) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.c.Close() })
	return d.closeErr
}

// checkWriteFrame refuses frames no v1 reader would accept.
func checkWriteFrame(f Frame, maxPayload int) error {
	if !f.Type.Known() {
		return fmt.Errorf("wire: write frame: %w 0x%02x", ErrUnknownType, uint8(f.Type))
	}
	if err := checkControlHeader(f.Type, f.Flags, f.Channel); err != nil {
		var de *DecodeError
		errors.As(err, &de)
		return fmt.Errorf("wire: write %s frame: %s: %w", f.Type, de.Field, de.Err)
	}
	if len(f.Payload) > maxPayload {
		return fmt.Errorf("wire: write %s frame: %w: payload of %d bytes exceeds the limit of %d", f.Type, ErrFrameTooLarge, len(f.Payload), maxPayload)
	}
	return nil
}

// writeMessage validates m and writes it. Data goes through writeFrame (which
// may use writev); control messages are encoded straight into the write
// buffer.
func writeMessage(w *writer, m Message, maxPayload int, writeFrame func(Frame) error) error {
	if m == nil {
		return errors.New("wire: write message: nil message")
	}
	if _, ok := m.(*Data); ok || m.Type() == TypeData {
		return writeFrame(MessageFrame(m))
	}
	t := m.Type()
	if !t.Known() {
		return fmt.Errorf("wire: write message: %w 0x%02x", ErrUnknownType, uint8(t))
	}
	if err := checkMessage(m); err != nil {
		return err
	}
	var tooBig error
	err := w.write(t, func(b []byte) []byte {
		start := len(b)
		b = AppendMessage(b, m)
		if n := len(b) - start - HeaderSize; n > maxPayload {
			tooBig = fmt.Errorf("wire: write %s: %w: payload of %d bytes exceeds the limit of %d", t, ErrFrameTooLarge, n, maxPayload)
			return b[:start]
		}
		return b
	})
	if tooBig != nil {
		return tooBig
	}
	return err
}

// writer serialises frame writes on one connection.
type writer struct {
	c   net.Conn
	mu  sync.Mutex
	buf []byte      // frame being written; guarded by mu
	vec [2][]byte   // header and payload for writev; guarded by mu
	nb  net.Buffers // guarded by mu
	hdr [HeaderSize]byte
	err error // sticky: set once a frame was partly written
}

// write encodes a frame with enc into the write buffer and writes it with one
// Write. If enc appends nothing, nothing is written.
func (w *writer) write(t Type, enc func([]byte) []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.buf = enc(w.buf[:0])
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.c.Write(w.buf)
	if cap(w.buf) > keepWriteBuffer {
		w.buf = nil
	}
	return w.result(t, n, err)
}

// writev writes the header from the write buffer and the payload from the
// caller's slice in one writev where the connection supports it.
func (w *writer) writev(f Frame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.vec[0] = appendHeader(w.hdr[:0], f.Type, f.Flags, f.Channel, uint32(len(f.Payload)))
	w.vec[1] = f.Payload
	w.nb = w.vec[:]
	n, err := w.nb.WriteTo(w.c)
	w.vec = [2][]byte{} // do not keep the caller's payload
	w.nb = nil
	return w.result(f.Type, int(n), err)
}

func (w *writer) result(t Type, n int, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("wire: write %s frame: %w", t, err)
	if n > 0 {
		// Part of the frame went out: the peer's framing is broken.
		w.err = fmt.Errorf("%w (frame partly written; the connection can no longer be written)", err)
		return w.err
	}
	return err
}
