// Package tunnel carries TCP connections through Connect as through an
// unbreakable cable. Each tunnelled connection gets its own resumable
// message stream (package resume): the client side reads its local TCP
// connection and sends the bytes as messages, the server side writes them to
// one backend connection that it keeps for the life of the stream — across
// any number of link breaks — and the same the other way. A TCP half-close
// travels as the stream's CloseSend, so a peer that stops sending still
// receives; a reset or a failure on either side ends the other side with a
// reset too.
//
// The conversation on a tunnel stream:
//
//	client -> Open     first message: the service (tunnel) name and where
//	                   the local connection came from, for logs
//	server -> Opened   first message: the backend is connected, or why not
//	both   -> data     any number of messages, each a chunk of bytes
//	both   -> end      CloseSend: no more bytes this way (TCP half-close)
//
// Optionally the server writes a PROXY protocol v2 header (AppendProxyV2)
// before anything else on the backend connection, so that a backend that
// understands it sees the client's address rather than the server's.
package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Stream is what carries one tunnelled connection: *resume.Stream has these
// methods.
type Stream interface {
	Send(ctx context.Context, msg []byte) error
	Recv(ctx context.Context) ([]byte, error)
	CloseSend() error
}

// ChunkSize is the most bytes one data message carries.
const ChunkSize = 256 << 10

// openVersion is the version byte that starts an Open message.
const openVersion = 1

const (
	maxName   = 256 // a service name's bytes in Open
	maxOrigin = 256 // an origin's bytes in Open
	maxReason = 1024
)

// Open is the client's first message.
type Open struct {
	Service string // the tunnel's name in the server configuration
	Origin  string // where the local connection came from ("127.0.0.1:50122"), for logs
}

// AppendOpen appends o's encoding: a version byte, then the service and the
// origin, each a 2-byte big-endian length and UTF-8 bytes.
func AppendOpen(b []byte, o Open) ([]byte, error) {
	if o.Service == "" || len(o.Service) > maxName || len(o.Origin) > maxOrigin {
		return b, fmt.Errorf("tunnel: Open: service name of %d bytes (1 to %d), origin of %d (at most %d)", len(o.Service), maxName, len(o.Origin), maxOrigin)
	}
	b = append(b, openVersion)
	for _, s := range []string{o.Service, o.Origin} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// DecodeOpen decodes an Open message. Errors say what is wrong.
func DecodeOpen(b []byte) (Open, error) {
	var o Open
	if len(b) == 0 || b[0] != openVersion {
		return o, errors.New("tunnel: the first message is not an Open of version 1")
	}
	b = b[1:]
	var fields [2]string
	for i, limit := range []int{maxName, maxOrigin} {
		if len(b) < 2 {
			return o, errors.New("tunnel: Open is cut short")
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n > limit || n > len(b) {
			return o, fmt.Errorf("tunnel: Open field %d: %d bytes (at most %d, %d left)", i+1, n, limit, len(b))
		}
		if !utf8.Valid(b[:n]) {
			return o, fmt.Errorf("tunnel: Open field %d is not UTF-8", i+1)
		}
		fields[i] = string(b[:n])
		b = b[n:]
	}
	if len(b) != 0 {
		return o, fmt.Errorf("tunnel: Open has %d bytes too many", len(b))
	}
	if fields[0] == "" {
		return o, errors.New("tunnel: Open names no service")
	}
	return Open{Service: fields[0], Origin: fields[1]}, nil
}

// The server's answer: one byte, 0 when the backend is connected, 1 then a
// UTF-8 reason when it is not.
const (
	openedOK      = 0
	openedRefused = 1
)

// AppendOpened appends the server's answer: ok when reason is "".
func AppendOpened(b []byte, reason string) []byte {
	if reason == "" {
		return append(b, openedOK)
	}
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	return append(append(b, openedRefused), reason...)
}

// RefusedError is the server's refusal of a tunnel.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "tunnel refused by the server: " + e.Reason }

// DecodeOpened decodes the server's answer: nil, a *RefusedError, or an
// error saying the answer is malformed.
func DecodeOpened(b []byte) error {
	switch {
	case len(b) == 1 && b[0] == openedOK:
		return nil
	case len(b) >= 1 && b[0] == openedRefused && len(b) <= 1+maxReason:
		return &RefusedError{Reason: string([]rune(string(b[1:])))} // invalid UTF-8 becomes U+FFFD
	default:
		return fmt.Errorf("tunnel: malformed answer to Open (%d bytes)", len(b))
	}
}

// Stats count a pump's bytes.
type Stats struct {
	Up   uint64 // from the local connection into the stream
	Down uint64 // from the stream to the local connection
}

// Pump copies bytes between c and s in both directions until both have
// ended, and returns how many it copied. The end of c's input becomes
// s.CloseSend, and s's io.EOF becomes a half-close of c's output
// (CloseWrite when c has it). A failure either way ends both: c is closed
// with a reset where it allows one (so that its peer sees the failure too),
// and the error is returned; the caller then closes s, which tells the far
// side. Pump returns once both of its goroutines have; it closes c before it
// returns in every case.
//
// When s also has SendFrom and CopyTo (a *resume.Stream does), Pump uses
// them: bytes go from c's socket straight into the replay buffer, and from
// the connection's read buffer straight to c (one copy fewer each way, and
// no hand-off between goroutines on the way to c). While a write to c
// blocks, the stream then does not read its connection, as a TCP relay
// stops reading while its write blocks.
func Pump(ctx context.Context, c net.Conn, s Stream) (Stats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var st Stats
	var up, down atomic.Uint64
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() {
			first = err
			abort(c)
			cancel()
		})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // up: c -> s
		defer wg.Done()
		read := chunkReader(c, s)
		for {
			n, err, serr := read(ctx)
			if serr != nil {
				fail(fmt.Errorf("tunnel: send: %w", serr))
				return
			}
			up.Add(uint64(n))
			if err == io.EOF {
				if serr := s.CloseSend(); serr != nil {
					fail(fmt.Errorf("tunnel: end of input: %w", serr))
				}
				return
			}
			if err != nil {
				fail(fmt.Errorf("tunnel: read the local connection: %w", err))
				return
			}
		}
	}()
	// down: s -> c, on this goroutine.
	n, err, werr := copyDown(ctx, c, s)
	down.Add(uint64(n))
	switch {
	case werr != nil:
		fail(fmt.Errorf("tunnel: write the local connection: %w", werr))
	case err != nil:
		fail(fmt.Errorf("tunnel: receive: %w", err))
	default: // the end of the stream
		if hc, ok := c.(interface{ CloseWrite() error }); ok {
			if werr := hc.CloseWrite(); werr != nil {
				fail(fmt.Errorf("tunnel: half-close the local connection: %w", werr))
			}
		}
	}
	wg.Wait()
	c.Close()
	st.Up, st.Down = up.Load(), down.Load()
	return st, first
}

// senderFrom is what a Stream may have besides Send: *resume.Stream reads
// the local connection straight into its replay buffer (one copy fewer).
type senderFrom interface {
	SendFrom(ctx context.Context, r io.Reader, max int) (int, error)
}

// chunkReader returns the up direction's step: read at most ChunkSize bytes
// from c and send them as one message. It reports the bytes sent, the read's
// error and the send's error (which ends the pump).
func chunkReader(c net.Conn, s Stream) func(context.Context) (n int, rerr, serr error) {
	if sf, ok := s.(senderFrom); ok {
		r := &errReader{r: c}
		return func(ctx context.Context) (int, error, error) {
			r.err = nil
			n, err := sf.SendFrom(ctx, r, ChunkSize)
			if err != nil && err != r.err {
				return n, nil, err // the stream's error, not the read's
			}
			return n, err, nil
		}
	}
	buf := make([]byte, ChunkSize)
	return func(ctx context.Context) (int, error, error) {
		n, err := c.Read(buf)
		if n > 0 {
			if serr := s.Send(ctx, buf[:n]); serr != nil {
				return 0, err, serr
			}
		}
		return n, err, nil
	}
}

// copierTo is what a Stream may have besides Recv: *resume.Stream writes
// the messages to the local connection straight from its connection's read
// buffer (one copy and one hand-off between goroutines fewer).
type copierTo interface {
	CopyTo(ctx context.Context, w io.Writer) (int64, error)
}

// copyDown writes s's messages to c until the end of s. It returns the bytes
// written, the stream's error (nil at its end) and the write's error.
func copyDown(ctx context.Context, c net.Conn, s Stream) (n int64, rerr, werr error) {
	if ct, ok := s.(copierTo); ok {
		w := &errWriter{w: c}
		n, err := ct.CopyTo(ctx, w)
		if err != nil && err == w.err {
			return n, nil, err
		}
		return n, err, nil
	}
	for {
		msg, err := s.Recv(ctx)
		if err == io.EOF {
			return n, nil, nil
		}
		if err != nil {
			return n, err, nil
		}
		k, werr := c.Write(msg)
		n += int64(k)
		if werr != nil {
			return n, nil, werr
		}
	}
}

// errWriter remembers the error of the last Write.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// errReader remembers the error of the last Read.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.err = err
	return n, err
}

// abort closes c with a reset when it is a TCP connection, else plainly.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Dial opens a tunnel on s, a fresh stream to the server: it sends Open for
// service and waits for the server's answer. origin says where the local
// connection came from, for the server's logs.
func Dial(ctx context.Context, s Stream, service, origin string) error {
	b, err := AppendOpen(nil, Open{Service: service, Origin: origin})
	if err != nil {
		return err
	}
	if err := s.Send(ctx, b); err != nil {
		return fmt.Errorf("tunnel: send Open: %w", err)
	}
	ans, err := s.Recv(ctx)
	if err != nil {
		return fmt.Errorf("tunnel: wait for the server's answer: %w", err)
	}
	return DecodeOpened(ans)
}

// Target is where a tunnel's connections go.
type Target struct {
	// Address is the backend's TCP address, "host:port".
	Address string
	// ProxyHeader, if set, is written first on the backend connection
	// (AppendProxyV2).
	ProxyHeader []byte
}

// Accept serves the server side of a tunnel on s, a stream whose first
// message is an Open: it calls target with the Open (an error refuses the
// tunnel with that error's text), connects to the target with dial, answers,
// and pumps until both directions have ended. It returns the Open and the
// pump's figures; the caller closes s afterwards (after Flush, for a clean
// end).
func Accept(ctx context.Context, s Stream, target func(Open) (Target, error), dial func(ctx context.Context, addr string) (net.Conn, error)) (Open, Stats, error) {
	first, err := s.Recv(ctx)
	if err != nil {
		return Open{}, Stats{}, fmt.Errorf("tunnel: wait for Open: %w", err)
	}
	o, err := DecodeOpen(first)
	if err != nil {
		return o, Stats{}, err
	}
	refuse := func(err error) (Open, Stats, error) {
		s.Send(ctx, AppendOpened(nil, err.Error()))
		s.CloseSend()
		return o, Stats{}, err
	}
	t, err := target(o)
	if err != nil {
		return refuse(err)
	}
	c, err := dial(ctx, t.Address)
	if err != nil {
		return refuse(fmt.Errorf("tunnel %s: cannot connect to its target %s: %w", o.Service, t.Address, err))
	}
	if len(t.ProxyHeader) > 0 {
		if _, err := c.Write(t.ProxyHeader); err != nil {
			c.Close()
			return refuse(fmt.Errorf("tunnel %s: write the PROXY header to %s: %w", o.Service, t.Address, err))
		}
	}
	if err := s.Send(ctx, AppendOpened(nil, "")); err != nil {
		c.Close()
		return o, Stats{}, fmt.Errorf("tunnel: answer Open: %w", err)
	}
	st, err := Pump(ctx, c, s)
	return o, st, err
}
