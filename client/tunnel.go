package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/tunnel"
	"github.com/bearerkit/connect/wire"
)

// Tunnels (docs/TUNNEL.md).
//
// Each tunnelled TCP connection travels in its own resume stream, on its own
// bearer connection: a connection registered with the client's id, token
// and name plus the Hello feature bit wire.FeatureTunnel, which tells the
// server that it is an additional connection of this client (it neither
// replaces the client's registered connection nor is replaced by it) and
// that the stream it opens is a tunnel stream. When that connection fails,
// the stream redials the same way and resumes; the client's own connection
// and sessions are not involved.

// ErrNoTunnels: the server's Welcome did not accept the tunnel feature (a
// server older than tunnels).
var ErrNoTunnels = errors.New("client: the server does not support tunnels (its Welcome lacks the tunnel feature)")

// Tunnel is one open tunnel: a resume stream whose far end is a backend
// connection on the server. It is a tunnel.Stream (for tunnel.Pump); Close
// ends it. Send and Recv may each be used by one goroutine at a time.
type Tunnel struct {
	st   *resume.Stream
	stop func() bool // detaches the Client's Close from the stream
}

// Send sends bytes to the backend (at most tunnel.ChunkSize per call).
func (t *Tunnel) Send(ctx context.Context, b []byte) error { return t.st.Send(ctx, b) }

// Recv returns the backend's next bytes; io.EOF once the backend closed its
// side.
func (t *Tunnel) Recv(ctx context.Context) ([]byte, error) { return t.st.Recv(ctx) }

// CloseSend tells the backend that no more bytes come (a TCP half-close).
func (t *Tunnel) CloseSend() error { return t.st.CloseSend() }

// Flush waits until the server has received everything sent.
func (t *Tunnel) Flush(ctx context.Context) error { return t.st.Flush(ctx) }

// Stream is the tunnel's resume stream (for its figures).
func (t *Tunnel) Stream() *resume.Stream { return t.st }

// Close ends the tunnel at once; the server resets its backend connection
// unless both sides had already ended.
func (t *Tunnel) Close() error {
	t.stop()
	return t.st.Close()
}

// Tunnel opens the server's tunnel named service: it connects and registers
// a tunnel connection, opens a resume stream on it and asks the server to
// connect to the tunnel's target. origin says where the local connection
// comes from, for the server's logs. A refusal (unknown tunnel, denied by
// the policy, target unreachable) is a *tunnel.RefusedError with the
// server's reason. Transient failures (the connection or the stream's
// handshake broke) are retried with backoff until ctx ends; once the
// stream is open, link breaks are the stream's business. Client.Close
// closes the tunnels still open.
func (c *Client) Tunnel(ctx context.Context, service, origin string) (*Tunnel, error) {
	if c.cfg.Bearer.Info().Capabilities.Has(bearers.Datagram) {
		return nil, fmt.Errorf("client: tunnel %s: tunnels need a stream bearer (tcp, ssl), not %s", service, c.cfg.Server.Scheme)
	}
	backoff := c.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		st, err := c.openTunnelStream(ctx)
		if err == nil {
			t := &Tunnel{st: st, stop: context.AfterFunc(c.ctx, func() { st.Close() })}
			if err := tunnel.Dial(ctx, st, service, origin); err != nil {
				t.Close()
				return nil, err
			}
			return t, nil
		}
		var rej *RejectError
		var ref *resume.RefusedError
		if errors.As(err, &rej) && !rej.Retryable || errors.Is(err, ErrNoTunnels) ||
			errors.As(err, &ref) && !ref.Retryable && ref.Code != resume.RefuseProtocol {
			return nil, fmt.Errorf("client: tunnel %s: %w", service, err)
		}
		c.log.Info("opening a tunnel stream failed; retrying", "tunnel", service, "attempt", attempt, "error", err)
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))
		backoff = min(2*backoff, max(c.cfg.RetryMax, c.cfg.RetryMin))
		if rej != nil {
			wait = max(wait, rej.RetryAfter)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: tunnel %s: %w", service, giveUp(attempt, err, ctx))
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(wait):
		}
	}
}

// openTunnelStream makes one tunnel connection and opens a resume stream
// on it; later connections of the stream are tunnel connections too.
func (c *Client) openTunnelStream(ctx context.Context) (*resume.Stream, error) {
	l, err := c.tunnelLink(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := c.resumeConfig(l.welcome)
	if err != nil {
		l.close()
		return nil, &permanentError{err}
	}
	first := l
	dial := func(dctx context.Context) (wire.Conn, error) {
		if l := first; l != nil {
			first = nil // Open's call, before the stream's redial loop starts
			return l.wc, nil
		}
		if c.ctx.Err() != nil {
			return nil, &permanentError{ErrClosed}
		}
		l, err := c.tunnelLink(dctx)
		if err != nil {
			return nil, err
		}
		return l.wc, nil
	}
	st, err := resume.Open(ctx, dial, cfg)
	if err != nil {
		l.close()
		return nil, fmt.Errorf("opening its stream: %w", err)
	}
	return st, nil
}

// ServeTunnel carries conn through a new tunnel to service until both
// directions have ended (tunnel.Pump: half-close and resets carried both
// ways), then closes conn and the tunnel. It returns the bytes carried.
//
// Opening the tunnel is retried for at most the stream's linger window (how
// long a stream would wait for its link), or until ctx ends.
func (c *Client) ServeTunnel(ctx context.Context, conn net.Conn, service string) (tunnel.Stats, error) {
	octx, cancel := context.WithTimeout(ctx, c.tunnelOpenTimeout())
	t, err := c.Tunnel(octx, service, conn.RemoteAddr().String())
	cancel()
	if err != nil {
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // the application sees an abort, not a clean end
		}
		conn.Close()
		return tunnel.Stats{}, err
	}
	defer t.Close()
	st, err := tunnel.Pump(ctx, conn, t)
	if err == nil {
		err = t.Flush(ctx) // the server has everything before the stream ends
	}
	return st, err
}

// tunnelLink makes one bearer connection and registers it as a tunnel
// connection. It does not change the client's state.
func (c *Client) tunnelLink(ctx context.Context) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RegistrationTimeout)
	defer cancel()
	bc, err := c.cfg.Bearer.Dial(ctx, c.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.cfg.Server, err)
	}
	l := &link{bc: bc, wc: wire.NewStreamConn(bc, wire.DefaultMaxPayload), features: wire.FeatureTunnel,
		pending: map[uint64]chan struct{}{}, done: make(chan struct{})}
	w, err := l.register(ctx, c.cfg)
	if err != nil {
		l.close()
		return nil, err
	}
	if w.Features&wire.FeatureTunnel == 0 {
		l.close()
		return nil, &permanentError{ErrNoTunnels}
	}
	l.welcome = w
	return l, nil
}

// permanentError is a dial failure that the stream does not retry.
type permanentError struct{ error }

func (e *permanentError) Unwrap() error   { return e.error }
func (e *permanentError) Permanent() bool { return true }

// tunnelOpenTimeout is the resume configuration's Linger.
func (c *Client) tunnelOpenTimeout() time.Duration {
	if c.cfg.Resume != nil && c.cfg.Resume.Linger > 0 {
		return c.cfg.Resume.Linger
	}
	return resume.DefaultConfig().Linger
}
