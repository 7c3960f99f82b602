// Package handoff implements the handoff socket between a bearer plugin and
// its host: a unix SOCK_SEQPACKET socket over which the plugin passes one file
// descriptor per connection (SCM_RIGHTS), tagged with a connection id that
// the gRPC control messages refer to.
//
// Message format (one seqpacket message per descriptor):
//
//	byte 0     version, 1
//	bytes 1-8  connection id, big-endian uint64
//	ancillary  SCM_RIGHTS carrying exactly one descriptor
package handoff

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
)

const (
	version = 1
	msgLen  = 9
	// MaxPending bounds descriptors received but not yet claimed by a control
	// message. A plugin that sends more is misbehaving.
	MaxPending = 1024
)

// Sentinel errors.
var (
	// ErrClosed: the handoff socket is closed (usually: the plugin exited).
	ErrClosed = errors.New("handoff: socket closed")
	// ErrProtocol: the peer sent something that is not a handoff message.
	ErrProtocol = errors.New("handoff: protocol violation")
)

// Pair creates a connected socket pair: the host end as a *net.UnixConn and
// the plugin end as an *os.File to pass in exec.Cmd.ExtraFiles. The caller
// must close the plugin end after the child has started.
func Pair() (host *net.UnixConn, plugin *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handoff: socketpair: %w", err)
	}
	hf := os.NewFile(uintptr(fds[0]), "handoff-host")
	defer hf.Close()
	c, err := net.FileConn(hf)
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, fmt.Errorf("handoff: host end: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "handoff-plugin"), nil
}

// Sender is the plugin side. It is safe for concurrent use.
type Sender struct {
	mu        sync.Mutex
	c         *net.UnixConn
	closeOnce sync.Once
	closeErr  error
}

// NewSender wraps the plugin end of the handoff socket.
func NewSender(c *net.UnixConn) *Sender { return &Sender{c: c} }

// Send passes a duplicate of fd under id. The caller keeps ownership of fd
// and may close it as soon as Send returns.
func (s *Sender) Send(id uint64, fd int) error {
	var b [msgLen]byte
	b[0] = version
	binary.BigEndian.PutUint64(b[1:], id)
	s.mu.Lock()
	defer s.mu.Unlock()
	n, oobn, err := s.c.WriteMsgUnix(b[:], syscall.UnixRights(fd), nil)
	if err != nil {
		return fmt.Errorf("handoff: send conn %d: %w", id, err)
	}
	if n != msgLen || oobn == 0 {
		return fmt.Errorf("handoff: send conn %d: short write", id)
	}
	return nil
}

// SendConn passes the descriptor underneath a syscall.Conn (a *net.TCPConn,
// *net.UDPConn, *net.UnixConn or *os.File) without duplicating it in this
// process first.
func (s *Sender) SendConn(id uint64, c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("handoff: conn %d: %w", id, err)
	}
	var sendErr error
	if err := rc.Control(func(fd uintptr) { sendErr = s.Send(id, int(fd)) }); err != nil {
		return fmt.Errorf("handoff: conn %d: %w", id, err)
	}
	return sendErr
}

// Close closes the plugin end. Idempotent.
func (s *Sender) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.c.Close() })
	return s.closeErr
}

// WaitPeerGone blocks until the host's end of the socket is closed (the host
// process exited, even by SIGKILL) or the socket fails. The host never sends
// anything on the socket, so any read result means it is gone.
func (s *Sender) WaitPeerGone() {
	var b [1]byte
	for {
		n, _, _, _, err := s.c.ReadMsgUnix(b[:], nil)
		if err != nil || n == 0 {
			return
		}
	}
}

// Receiver is the host side: it reads descriptors as they arrive and lets
// callers claim them by id. Create it with NewReceiver and stop it with Close.
type Receiver struct {
	c    *net.UnixConn
	done chan struct{}

	mu      sync.Mutex
	arrived map[uint64]*os.File
	waiting map[uint64]chan *os.File
	err     error // set once the socket fails; then no more arrivals
}

// NewReceiver starts reading the host end. Done is closed when the socket
// fails or closes, which happens when the plugin process exits.
func NewReceiver(c *net.UnixConn) *Receiver {
	r := &Receiver{c: c, done: make(chan struct{}), arrived: map[uint64]*os.File{}, waiting: map[uint64]chan *os.File{}}
	go r.loop()
	return r
}

// Done is closed when the handoff socket is gone.
func (r *Receiver) Done() <-chan struct{} { return r.done }

// Err tells why the socket is gone (nil while it is open).
func (r *Receiver) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Receiver) loop() {
	defer close(r.done)
	buf := make([]byte, msgLen+1)
	oob := make([]byte, syscall.CmsgSpace(4*4)) // room for a few fds, to catch abuse
	for {
		n, oobn, flags, _, err := r.c.ReadMsgUnix(buf, oob)
		if err == nil && n == 0 && oobn == 0 {
			err = ErrClosed // EOF on seqpacket: peer closed
		}
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				err = fmt.Errorf("%w: %v", ErrClosed, err)
			}
			r.fail(err)
			return
		}
		f, id, perr := parse(buf[:n], oob[:oobn], flags)
		if perr != nil {
			r.fail(perr)
			return
		}
		if perr := r.put(id, f); perr != nil {
			r.fail(perr)
			return
		}
	}
}

func parse(b, oob []byte, flags int) (*os.File, uint64, error) {
	// Take ownership of every descriptor first so none leaks on error.
	var fds []int
	if scms, err := syscall.ParseSocketControlMessage(oob); err == nil {
		for _, m := range scms {
			if got, err := syscall.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	} else if len(oob) > 0 {
		return nil, 0, fmt.Errorf("%w: bad control message: %v", ErrProtocol, err)
	}
	closeAll := func() {
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
	switch {
	case flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0:
		closeAll()
		return nil, 0, fmt.Errorf("%w: truncated message", ErrProtocol)
	case len(b) != msgLen || b[0] != version:
		closeAll()
		return nil, 0, fmt.Errorf("%w: message of %d bytes, want %d starting with version %d", ErrProtocol, len(b), msgLen, version)
	case len(fds) != 1:
		closeAll()
		return nil, 0, fmt.Errorf("%w: message carries %d descriptors, want 1", ErrProtocol, len(fds))
	}
	syscall.CloseOnExec(fds[0])
	id := binary.BigEndian.Uint64(b[1:])
	return os.NewFile(uintptr(fds[0]), fmt.Sprintf("handoff-%d", id)), id, nil
}

func (r *Receiver) put(id uint64, f *os.File) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.waiting[id]; ok {
		delete(r.waiting, id)
		w <- f // buffered, never blocks
		return nil
	}
	if _, dup := r.arrived[id]; dup {
		f.Close()
		return fmt.Errorf("%w: connection id %d sent twice", ErrProtocol, id)
	}
	if len(r.arrived) >= MaxPending {
		f.Close()
		return fmt.Errorf("%w: more than %d unclaimed descriptors", ErrProtocol, MaxPending)
	}
	r.arrived[id] = f
	return nil
}

func (r *Receiver) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
	for id, f := range r.arrived {
		f.Close()
		delete(r.arrived, id)
	}
	for id, w := range r.waiting {
		close(w)
		delete(r.waiting, id)
	}
	r.c.Close()
}

// Take waits for the descriptor sent under id and returns it; the caller owns
// the file. It fails when ctx ends first or the socket is gone.
func (r *Receiver) Take(ctx context.Context, id uint64) (*os.File, error) {
	r.mu.Lock()
	if f, ok := r.arrived[id]; ok {
		delete(r.arrived, id)
		r.mu.Unlock()
		return f, nil
	}
	if r.err != nil {
		err := r.err
		r.mu.Unlock()
		return nil, err
	}
	if _, dup := r.waiting[id]; dup {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: connection id %d claimed twice", ErrProtocol, id)
	}
	w := make(chan *os.File, 1)
	r.waiting[id] = w
	r.mu.Unlock()

	select {
	case f, ok := <-w:
		if !ok {
			return nil, r.Err()
		}
		return f, nil
	case <-ctx.Done():
		r.mu.Lock()
		delete(r.waiting, id)
		r.mu.Unlock()
		// A descriptor may have been delivered between ctx firing and the
		// delete above; do not leak it.
		select {
		case f, ok := <-w:
			if ok {
				f.Close()
			}
		default:
		}
		return nil, fmt.Errorf("handoff: waiting for descriptor of conn %d: %w", id, ctx.Err())
	}
}

// Close stops the receiver and closes every unclaimed descriptor. Idempotent.
func (r *Receiver) Close() error {
	r.fail(ErrClosed)
	<-r.done
	return nil
}
