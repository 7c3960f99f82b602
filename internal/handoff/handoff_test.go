package handoff

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// guard bounds every wait in these tests. It is a hang guard, never a
// measurement: nothing here asserts how long anything takes.
const guard = 10 * time.Second

// pair returns a running Receiver on the host end of a fresh handoff socket
// and the plugin end as a *net.UnixConn, for a Sender or for writing raw
// messages.
func pair(t *testing.T) (*Receiver, *net.UnixConn) {
	t.Helper()
	host, plugin, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileConn(plugin)
	plugin.Close()
	if err != nil {
		host.Close()
		t.Fatal(err)
	}
	pc := fc.(*net.UnixConn)
	r := NewReceiver(host)
	t.Cleanup(func() {
		r.Close()
		pc.Close()
	})
	return r, pc
}

// probe is a unix stream socket pair. The test passes fd through the handoff
// socket and then closes its own copy, so that peer sees EOF exactly when
// every copy the receiver got has been closed too.
type probe struct {
	fd   int
	peer *net.UnixConn
}

func newProbe(t *testing.T) *probe {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf := os.NewFile(uintptr(fds[1]), "probe-peer")
	c, err := net.FileConn(pf)
	pf.Close()
	if err != nil {
		syscall.Close(fds[0])
		t.Fatal(err)
	}
	p := &probe{fd: fds[0], peer: c.(*net.UnixConn)}
	t.Cleanup(func() {
		p.release()
		p.peer.Close()
	})
	return p
}

// release closes the test's own copy of the passed descriptor.
func (p *probe) release() {
	if p.fd >= 0 {
		syscall.Close(p.fd)
		p.fd = -1
	}
}

// closedEverywhere asserts that the peer sees EOF: no copy of the passed
// descriptor is open any more.
func (p *probe) closedEverywhere(t *testing.T) {
	t.Helper()
	p.peer.SetReadDeadline(time.Now().Add(guard))
	var b [16]byte
	n, err := p.peer.Read(b[:])
	if err != io.EOF {
		t.Fatalf("probe peer read = %d, %v; want EOF (a received descriptor was not closed)", n, err)
	}
}

// isProbe asserts that f is the probe's other end: bytes written on f come
// out at the peer, and back.
func (p *probe) isProbe(t *testing.T, f *os.File) {
	t.Helper()
	if err := p.check(f); err != nil {
		t.Fatal(err)
	}
}

// check is isProbe for goroutines other than the test's.
func (p *probe) check(f *os.File) error {
	if _, err := f.Write([]byte("ping")); err != nil {
		return fmt.Errorf("write on received descriptor: %w", err)
	}
	p.peer.SetReadDeadline(time.Now().Add(guard))
	got := make([]byte, 4)
	if _, err := io.ReadFull(p.peer, got); err != nil || string(got) != "ping" {
		return fmt.Errorf("probe peer read %q, %v; want ping", got, err)
	}
	if _, err := p.peer.Write([]byte("pong")); err != nil {
		return err
	}
	if _, err := io.ReadFull(f, got); err != nil || string(got) != "pong" {
		return fmt.Errorf("read on received descriptor %q, %v; want pong", got, err)
	}
	return nil
}

// waitFor polls cond (under the receiver's lock) until it holds.
func waitFor(t *testing.T, r *Receiver, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitArrived(t *testing.T, r *Receiver, id uint64) {
	t.Helper()
	waitFor(t, r, "descriptor to arrive", func() bool { _, ok := r.arrived[id]; return ok })
}

func waitDone(t *testing.T, r *Receiver) {
	t.Helper()
	select {
	case <-r.Done():
	case <-time.After(guard):
		t.Fatal("receiver did not stop")
	}
}

// rawMsg writes one seqpacket message with the given descriptors, bypassing
// Sender's checks, as a misbehaving plugin would.
func rawMsg(t *testing.T, c *net.UnixConn, b []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatalf("raw write: %v", err)
	}
}

func header(v byte, id uint64) []byte {
	b := make([]byte, 9)
	b[0] = v
	binary.BigEndian.PutUint64(b[1:], id)
	return b
}

// loopback returns both ends of a TCP connection over 127.0.0.1.
func loopback(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// The descriptor of an accepted TCP connection crosses the socket and is the
// same connection on the far side: same addresses, and bytes flow both ways
// between it and the original peer, also after the sender's copy is closed.
func TestSendTCPConn(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	client, server := loopback(t)

	if err := s.SendConn(42, server); err != nil {
		t.Fatal(err)
	}
	local, remote := server.LocalAddr().String(), server.RemoteAddr().String()
	server.Close() // the plugin's copy; the connection must live on in the host

	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	f, err := r.Take(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	if fc.LocalAddr().String() != local || fc.RemoteAddr().String() != remote {
		t.Fatalf("received conn %v -> %v, sent %v -> %v", fc.LocalAddr(), fc.RemoteAddr(), local, remote)
	}
	if fc.RemoteAddr().String() != client.LocalAddr().String() {
		t.Fatalf("received conn's peer %v is not the client %v", fc.RemoteAddr(), client.LocalAddr())
	}

	fc.SetDeadline(time.Now().Add(guard))
	client.SetDeadline(time.Now().Add(guard))
	if _, err := fc.Write([]byte("from host")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "from host" {
		t.Fatalf("client read %q, %v", got, err)
	}
	if _, err := client.Write([]byte("from peer")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(fc, got); err != nil || string(got) != "from peer" {
		t.Fatalf("host read %q, %v", got, err)
	}
	// Closing the host's copy, the last one, ends the connection.
	fc.Close()
	if n, err := client.Read(got); err != io.EOF {
		t.Fatalf("client read after host close = %d, %v; want EOF", n, err)
	}
}

// Send takes a raw descriptor and leaves the caller's copy open.
func TestSendRawFD(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	p := newProbe(t)
	if err := s.Send(1, p.fd); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(p.fd, &st); err != nil {
		t.Fatalf("Send closed the caller's descriptor: %v", err)
	}
	p.release()
	f, err := r.Take(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !strings.Contains(f.Name(), "1") {
		t.Errorf("received file is named %q; want the connection id in it", f.Name())
	}
	p.isProbe(t, f)
	// The host must not leak it into children it starts.
	flags, err := fcntl(f, syscall.F_GETFD)
	if err != nil || flags&syscall.FD_CLOEXEC == 0 {
		t.Errorf("received descriptor flags %#x, %v; want FD_CLOEXEC", flags, err)
	}
}

func fcntl(f *os.File, cmd int) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var v uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		v, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, uintptr(cmd), 0)
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}

// Take may be called before the descriptor arrives, or after.
func TestTakeBeforeAndAfterArrival(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()

	t.Run("before", func(t *testing.T) {
		p := newProbe(t)
		type result struct {
			f   *os.File
			err error
		}
		res := make(chan result, 1)
		go func() {
			f, err := r.Take(ctx, 10)
			res <- result{f, err}
		}()
		waitFor(t, r, "Take to wait", func() bool { _, ok := r.waiting[10]; return ok })
		if err := s.Send(10, p.fd); err != nil {
			t.Fatal(err)
		}
		p.release()
		got := <-res
		if got.err != nil {
			t.Fatal(got.err)
		}
		defer got.f.Close()
		p.isProbe(t, got.f)
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.waiting) != 0 || len(r.arrived) != 0 {
			t.Errorf("after the handoff: %d waiting, %d arrived; want none", len(r.waiting), len(r.arrived))
		}
	})

	t.Run("after", func(t *testing.T) {
		p := newProbe(t)
		if err := s.Send(11, p.fd); err != nil {
			t.Fatal(err)
		}
		p.release()
		waitArrived(t, r, 11)
		f, err := r.Take(ctx, 11)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		p.isProbe(t, f)
	})

	t.Run("interleaved", func(t *testing.T) {
		// Descriptors go to the Take that names their id, whatever the order.
		probes := map[uint64]*probe{20: newProbe(t), 21: newProbe(t), 22: newProbe(t)}
		var wg sync.WaitGroup
		for id, p := range probes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f, err := r.Take(ctx, id)
				if err != nil {
					t.Errorf("Take(%d): %v", id, err)
					return
				}
				defer f.Close()
				if err := p.check(f); err != nil {
					t.Errorf("Take(%d): %v", id, err)
				}
			}()
		}
		for _, id := range []uint64{22, 20, 21} {
			if err := s.Send(id, probes[id].fd); err != nil {
				t.Fatal(err)
			}
			probes[id].release()
		}
		wg.Wait()
	})
	if err := r.Err(); err != nil {
		t.Fatalf("receiver failed: %v", err)
	}
}

// A Take that gives up leaves nothing behind; a descriptor that arrives
// later for that id is kept for a later Take (and closed by Close if nobody
// takes it).
func TestTakeTimeout(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	f, err := r.Take(ctx, 99)
	if err == nil {
		f.Close()
		t.Fatal("Take of an id never sent succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "conn 99") {
		t.Fatalf("Take(99) = %v; want a deadline error naming conn 99", err)
	}
	r.mu.Lock()
	_, stillWaiting := r.waiting[99]
	r.mu.Unlock()
	if stillWaiting {
		t.Fatal("an abandoned Take is still registered as waiting")
	}
	if r.Err() != nil {
		t.Fatalf("a Take timeout broke the receiver: %v", r.Err())
	}

	// The late arrival is kept...
	late := newProbe(t)
	if err := s.Send(99, late.fd); err != nil {
		t.Fatal(err)
	}
	late.release()
	waitArrived(t, r, 99)
	f, err = r.Take(context.Background(), 99)
	if err != nil {
		t.Fatalf("Take of the late arrival: %v", err)
	}
	late.isProbe(t, f)
	f.Close()
	late.closedEverywhere(t)

	// ...and one nobody claims is closed with the receiver.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := r.Take(ctx2, 100); !errors.Is(err, context.Canceled) {
		t.Fatalf("Take with a cancelled context = %v", err)
	}
	orphan := newProbe(t)
	if err := s.Send(100, orphan.fd); err != nil {
		t.Fatal(err)
	}
	orphan.release()
	waitArrived(t, r, 100)
	r.Close()
	orphan.closedEverywhere(t)
}

// A plugin that sends two descriptors under one id breaks the protocol; the
// receiver stops and closes both.
func TestDuplicateID(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	a, b := newProbe(t), newProbe(t)
	if err := s.Send(5, a.fd); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(5, b.fd); err != nil {
		t.Fatal(err)
	}
	a.release()
	b.release()
	waitDone(t, r)
	err := r.Err()
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "connection id 5 sent twice") {
		t.Fatalf("Err() = %v; want ErrProtocol naming id 5", err)
	}
	a.closedEverywhere(t)
	b.closedEverywhere(t)
	if _, err := r.Take(context.Background(), 5); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Take after the violation = %v; want the ErrProtocol", err)
	}
}

// Two Takes for one id: the second is refused at once; the first still gets
// the descriptor.
func TestTakeTwice(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	res := make(chan error, 1)
	go func() {
		f, err := r.Take(context.Background(), 8)
		if err == nil {
			f.Close()
		}
		res <- err
	}()
	waitFor(t, r, "Take to wait", func() bool { _, ok := r.waiting[8]; return ok })
	if _, err := r.Take(context.Background(), 8); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "8 claimed twice") {
		t.Fatalf("second Take(8) = %v; want ErrProtocol naming id 8", err)
	}
	p := newProbe(t)
	if err := s.Send(8, p.fd); err != nil {
		t.Fatal(err)
	}
	p.release()
	if err := <-res; err != nil {
		t.Fatalf("first Take(8) = %v", err)
	}
	p.closedEverywhere(t) // the Take goroutine closed the only copy
}

// When the plugin end closes (the plugin exited), Done closes, Take fails
// with ErrClosed, waiting Takes are released and unclaimed descriptors are
// closed.
func TestPluginEndClosed(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	orphan := newProbe(t)
	if err := s.Send(1, orphan.fd); err != nil {
		t.Fatal(err)
	}
	orphan.release()
	waitArrived(t, r, 1)

	res := make(chan error, 1)
	go func() {
		_, err := r.Take(context.Background(), 2)
		res <- err
	}()
	waitFor(t, r, "Take to wait", func() bool { _, ok := r.waiting[2]; return ok })

	select {
	case <-r.Done():
		t.Fatal("Done closed while the socket is open")
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, r)
	if err := r.Err(); !errors.Is(err, ErrClosed) || errors.Is(err, ErrProtocol) {
		t.Fatalf("Err() = %v; want ErrClosed", err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting Take = %v; want ErrClosed", err)
	}
	if _, err := r.Take(context.Background(), 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Take after close = %v; want ErrClosed", err)
	}
	orphan.closedEverywhere(t)
}

// Messages a well-behaved Sender never writes make the receiver fail with
// ErrProtocol, closing the descriptors of the bad message and every
// unclaimed one that arrived before it.
func TestProtocolViolations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   []byte
		nfds  int
		wants string
	}{
		{"no descriptor", header(1, 7), 0, "carries 0 descriptors, want 1"},
		{"two descriptors", header(1, 7), 2, "carries 2 descriptors, want 1"},
		{"five descriptors", header(1, 7), 5, "truncated"}, // more than the control buffer holds
		{"short", header(1, 7)[:8], 1, "message of 8 bytes, want 9"},
		{"one byte", []byte{1}, 1, "message of 1 bytes"},
		{"long", append(header(1, 7), 0), 1, "message of 10 bytes, want 9"},
		{"very long", bytes.Repeat([]byte{1}, 100), 1, "truncated"},
		{"version 0", header(0, 7), 1, "starting with version 1"},
		{"version 2", header(2, 7), 1, "starting with version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, pc := pair(t)
			// An unclaimed descriptor from before the violation.
			earlier := newProbe(t)
			NewSender(pc).Send(6, earlier.fd)
			earlier.release()
			waitArrived(t, r, 6)

			var carried []*probe
			var fds []int
			for range tc.nfds {
				p := newProbe(t)
				carried = append(carried, p)
				fds = append(fds, p.fd)
			}
			rawMsg(t, pc, tc.msg, fds...)
			for _, p := range carried {
				p.release()
			}
			waitDone(t, r)
			err := r.Err()
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("Err() = %v; want ErrProtocol saying %q", err, tc.wants)
			}
			earlier.closedEverywhere(t)
			for _, p := range carried {
				p.closedEverywhere(t)
			}
			if _, err := r.Take(context.Background(), 6); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Take after the violation = %v; want the ErrProtocol", err)
			}
		})
	}
}

// A plugin may leave at most MaxPending descriptors unclaimed; one more is a
// protocol violation, and all of them are closed.
func TestMaxPending(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	p := newProbe(t) // every message carries a copy of the same socket
	for id := range uint64(MaxPending) {
		if err := s.Send(id, p.fd); err != nil {
			t.Fatalf("Send(%d): %v", id, err)
		}
	}
	waitFor(t, r, "MaxPending descriptors", func() bool { return len(r.arrived) == MaxPending })
	if err := r.Err(); err != nil {
		t.Fatalf("MaxPending unclaimed descriptors are allowed, got %v", err)
	}
	if err := s.Send(MaxPending, p.fd); err != nil {
		t.Fatal(err)
	}
	p.release()
	waitDone(t, r)
	if err := r.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "more than 1024 unclaimed") {
		t.Fatalf("Err() = %v; want ErrProtocol about unclaimed descriptors", err)
	}
	p.closedEverywhere(t) // all 1025 copies
}

// Close releases waiting Takes and unclaimed descriptors, makes later calls
// fail with ErrClosed, and may be called again.
func TestReceiverClose(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	orphan := newProbe(t)
	if err := s.Send(1, orphan.fd); err != nil {
		t.Fatal(err)
	}
	orphan.release()
	waitArrived(t, r, 1)
	res := make(chan error, 1)
	go func() {
		_, err := r.Take(context.Background(), 2)
		res <- err
	}()
	waitFor(t, r, "Take to wait", func() bool { _, ok := r.waiting[2]; return ok })

	for i := range 3 {
		if err := r.Close(); err != nil {
			t.Fatalf("Close #%d = %v", i+1, err)
		}
	}
	waitDone(t, r)
	if err := r.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Err() = %v; want ErrClosed", err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting Take = %v; want ErrClosed", err)
	}
	if _, err := r.Take(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Take of an arrived id after Close = %v; want ErrClosed", err)
	}
	orphan.closedEverywhere(t)

	// The plugin notices: sending now fails and names the connection.
	late := newProbe(t)
	if err := s.Send(3, late.fd); err == nil || !strings.Contains(err.Error(), "conn 3") {
		t.Fatalf("Send after the host closed = %v; want an error naming conn 3", err)
	}
	late.release()
	late.closedEverywhere(t)
}

// Concurrent senders and takers: every descriptor reaches its Take.
func TestConcurrent(t *testing.T) {
	r, pc := pair(t)
	s := NewSender(pc)
	const n = 64
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	var wg sync.WaitGroup
	for id := range uint64(n) {
		p := newProbe(t)
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := s.Send(id, p.fd); err != nil {
				t.Errorf("Send(%d): %v", id, err)
			}
			p.release()
		}()
		go func() {
			defer wg.Done()
			f, err := r.Take(ctx, id)
			if err != nil {
				t.Errorf("Take(%d): %v", id, err)
				return
			}
			if err := p.check(f); err != nil {
				t.Errorf("Take(%d): %v", id, err)
			}
			f.Close()
		}()
	}
	wg.Wait()
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}
