package ssl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// Listener accepts TLS connections for one endpoint. Its methods are safe for
// concurrent use.
//
// The listener owns an accept goroutine and one goroutine per handshake in
// progress (at most 256, counting handshaken connections that wait for
// Accept); Close stops them all and waits for them. A handshake that fails
// or outlasts handshakeTimeout closes its connection and is counted; it never
// reaches Accept.
type Listener struct {
	raw       net.Listener
	ep        bearers.Endpoint
	cfg       *tls.Config
	hsTimeout time.Duration

	ctx    context.Context // cancelled by Close: interrupts handshakes
	cancel context.CancelFunc
	slots  chan struct{}  // one per handshake or handshaken connection not yet accepted
	ready  chan *tls.Conn // handshaken connections, to Accept
	failed chan struct{}  // closed when the accept loop stops on an error
	fail   error          // set before failed is closed
	wg     sync.WaitGroup // accept loop and handshakes

	closeOnce sync.Once
	closeErr  error

	errMu    sync.Mutex
	hsErrors uint64
	lastErr  error
}

func newListener(raw net.Listener, ep bearers.Endpoint, cfg *tls.Config, hsTimeout time.Duration) *Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		raw: raw, ep: ep, cfg: cfg, hsTimeout: hsTimeout,
		ctx: ctx, cancel: cancel,
		slots:  make(chan struct{}, maxHandshakes),
		ready:  make(chan *tls.Conn),
		failed: make(chan struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Addr is the bound TCP address.
func (l *Listener) Addr() net.Addr { return l.raw.Addr() }

// Endpoint is the bound address as an ssl endpoint.
func (l *Listener) Endpoint() bearers.Endpoint { return l.ep }

// HandshakeErrors reports how many incoming handshakes failed (bad or slow
// clients, untrusted client certificates, ...) and the latest failure, nil
// if none.
func (l *Listener) HandshakeErrors() (count uint64, last error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.hsErrors, l.lastErr
}

func (l *Listener) closedError() error {
	return &net.OpError{Op: "accept", Net: "ssl", Addr: l.raw.Addr(), Err: net.ErrClosed}
}

// Accept returns the next connection whose handshake completed. After Close
// it returns an error wrapping net.ErrClosed; if the socket failed, that
// error.
func (l *Listener) Accept(ctx context.Context) (bearers.Conn, error) {
	select {
	case <-l.ctx.Done():
		return nil, l.closedError()
	default:
	}
	select {
	case tc := <-l.ready:
		return newConn(tc, peerOf(tc.ConnectionState())), nil
	case <-l.ctx.Done():
		return nil, l.closedError()
	case <-l.failed:
		return nil, l.fail
	case <-ctx.Done():
		return nil, fmt.Errorf("ssl: accept on %s: %w", l.ep, ctx.Err())
	}
}

// Close stops listening, interrupts handshakes in progress and waits for the
// listener's goroutines. Connections already accepted stay open. Close is
// idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.closeErr = l.raw.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

// temporary reports accept errors worth retrying after a pause.
func temporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	backoff := time.Duration(0)
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		raw, err := l.raw.Accept()
		if err != nil {
			<-l.slots
			if l.ctx.Err() != nil {
				return
			}
			if temporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-l.ctx.Done():
					t.Stop()
					return
				}
				continue
			}
			l.fail = fmt.Errorf("ssl: accept on %s: %w", l.ep, err)
			close(l.failed)
			return
		}
		backoff = 0
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

// handshake runs one server handshake and hands the connection to Accept.
// It holds a slot until Accept takes the connection or the listener closes.
func (l *Listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	tc := tls.Server(raw, l.cfg)
	ctx, cancel := context.WithTimeout(l.ctx, l.hsTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		_ = raw.Close()
		if l.ctx.Err() == nil { // not a failure: we are closing
			l.errMu.Lock()
			l.hsErrors++
			l.lastErr = fmt.Errorf("ssl: handshake with %s on %s: %w", raw.RemoteAddr(), l.ep, err)
			l.errMu.Unlock()
		}
		return
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		_ = tc.Close()
	}
}
