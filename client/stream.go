package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// The client's resume stream (docs/RESUME.md, "Wiring: the core and the
// client").
//
// Over a stream bearer, once registered, the client opens one resume stream
// on the connection, and every session message travels in it. When the
// connection fails, the stream redials through the client (a new bearer
// connection and a new registration, reported as state changes) and
// resumes on it; the session layer above notices nothing. Only when the
// stream is lost for good (the server refused to resume it: expired,
// unknown after a server restart; or the client gave up after the linger
// window) do its sessions end; the client then opens a new stream.
//
// Goroutines: the stream's own (owned by the resume.Stream, stopped by its
// Close), one reader per stream (readStream) and one supervisor
// (runStreams), both owned by the Client's wait group.

// clientStream is a resume stream and the session layer it carries.
type clientStream struct {
	st   *resume.Stream
	sl   *sessLink
	done chan struct{} // closed when the reader has ended the session layer
}

// resumable reports whether sessions travel in a resume stream.
func (c *Client) resumable() bool {
	return !c.cfg.NoResume && !c.cfg.Bearer.Info().Capabilities.Has(bearers.Datagram)
}

// resumeConfig is the stream's configuration: Config.Resume, or the
// defaults with the server's keepalive interval and dead-path window.
func (c *Client) resumeConfig(w *wire.Welcome) (*resume.Config, error) {
	var cfg resume.Config
	if c.cfg.Resume != nil {
		cfg = *c.cfg.Resume
	} else {
		cfg = *resume.DefaultConfig()
		cfg.KeepaliveInterval = w.PingInterval()
		cfg.DeadTimeout = max(w.PingWindow(), 2*cfg.KeepaliveInterval)
		cfg.RetryMin, cfg.RetryMax = c.cfg.RetryMin, max(c.cfg.RetryMax, c.cfg.RetryMin)
		// A redial registers before the resume handshake: both fit.
		cfg.HandshakeTimeout = 2 * c.cfg.RegistrationTimeout
	}
	cfg.MaxMessage = min(cfg.MaxMessage, wire.DefaultMaxPayload) // the connections' payload limit
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	if err := resume.VerifyConfig(&cfg); err != nil {
		return nil, fmt.Errorf("client: resume configuration: %w", err)
	}
	return &cfg, nil
}

// establish connects, registers and opens a stream, retrying transient
// failures with backoff until ctx (or the client) ends.
func (c *Client) establish(ctx context.Context) (*clientStream, error) {
	backoff := c.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		l, err := c.connect(ctx)
		if err != nil {
			return nil, err
		}
		cs, err := c.openStream(ctx, l)
		if err == nil {
			return cs, nil
		}
		var ref *resume.RefusedError
		var se *Error // the server answered the reclaim with an error: it will again
		if errors.As(err, &ref) && !ref.Retryable && ref.Code != resume.RefuseProtocol || errors.As(err, &se) || errors.Is(err, ErrClosed) {
			return nil, err
		}
		if ctx.Err() != nil || c.ctx.Err() != nil {
			return nil, giveUp(attempt, err, ctx)
		}
		c.setState(Connecting, err)
		c.log.Info("opening the resume stream failed; retrying", "attempt", attempt, "error", err)
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))
		backoff = min(2*backoff, c.cfg.RetryMax)
		select {
		case <-ctx.Done():
			return nil, giveUp(attempt, err, ctx)
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(wait):
		}
	}
}

// openStream opens a stream on the registered link l, starts its reader,
// reclaims the state file's sessions (with a StateFile) and makes it the
// client's session layer.
func (c *Client) openStream(ctx context.Context, l *link) (*clientStream, error) {
	cfg, err := c.resumeConfig(l.welcome)
	if err != nil {
		l.close()
		return nil, err
	}
	first := l
	guard := c.newRestartGuard(cfg) // control.go
	dial := func(dctx context.Context) (wire.Conn, error) {
		if l := first; l != nil {
			first = nil // Open's call, before the stream's redial loop starts
			return c.streamConn(l), nil
		}
		if err := guard.restart(); err != nil {
			return nil, err
		}
		return c.redial(dctx)
	}
	st, err := resume.Open(ctx, dial, cfg)
	if err != nil {
		l.close()
		return nil, fmt.Errorf("opening the resume stream: %w", err)
	}
	cs := &clientStream{st: st, done: make(chan struct{})}
	guard.st.Store(st)
	cs.sl = newSessLink(st.Send, true, cfg.MaxMessage, c.log)
	c.mu.Lock()
	c.link = l
	c.mu.Unlock()
	c.setState(Connected, nil)
	c.wg.Add(1)
	go c.readStream(cs)
	if c.store != nil {
		if err := c.reclaim(ctx, cs); err != nil {
			st.Close()
			<-cs.done
			return nil, err
		}
	}
	c.mu.Lock()
	if c.ctx.Err() != nil { // Close ran meanwhile: it did not see this stream
		c.mu.Unlock()
		st.Close()
		<-cs.done
		return nil, ErrClosed
	}
	c.stream, c.sl = cs, cs.sl
	c.notifyLocked()
	c.mu.Unlock()
	c.log.Debug("resume stream open", "stream", st.ID().String())
	return cs, nil
}

// redial is the stream's DialFunc after the first connection: one bearer
// connection and registration (the stream backs off between calls).
func (c *Client) redial(ctx context.Context) (wire.Conn, error) {
	if c.replaced.Load() {
		return nil, errReplacedPermanent
	}
	l, err := c.attempt(ctx)
	if err != nil {
		c.setState(Connecting, err)
		return nil, err // a *RejectError that is not retryable is Permanent
	}
	c.mu.Lock()
	c.link = l
	c.mu.Unlock()
	c.setState(Connected, nil)
	return c.streamConn(l), nil
}

// readStream hands the stream's messages to its session layer until the
// stream ends, then ends the session layer (its sessions and waiting
// requests fail with the stream's error).
func (c *Client) readStream(cs *clientStream) {
	defer c.wg.Done()
	defer close(cs.done)
	for {
		b, err := cs.st.Recv(context.Background()) // returns when the stream ends
		if err != nil {
			cs.sl.end(err)
			return
		}
		cs.sl.handle(b)
	}
}

// runStreams supervises the client's stream: when one is lost for good it
// opens a new one, until Close or a permanent failure.
func (c *Client) runStreams(cs *clientStream) {
	defer c.wg.Done()
	for {
		select {
		case <-cs.st.Done():
		case <-c.ctx.Done():
			return
		}
		<-cs.done
		err := cs.st.Err()
		c.mu.Lock()
		if c.stream == cs {
			c.stream, c.sl = nil, nil
			c.notifyLocked()
		}
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		var rej *RejectError
		var rle *RestartLimitError
		if errors.Is(err, ErrReplaced) || errors.As(err, &rej) && !rej.Retryable || errors.As(err, &rle) {
			c.log.Error("the stream to the server ended; not reconnecting", "error", err)
			c.setState(Closed, err)
			return
		}
		c.setState(Connecting, err)
		c.log.Warn("the stream to the server was lost for good (its sessions are over); opening a new one", "error", err)
		cs.st.Close()
		var oerr error
		cs, oerr = c.establish(c.ctx)
		if oerr != nil {
			if c.ctx.Err() == nil {
				c.log.Error("cannot reconnect", "error", oerr)
				c.setState(Closed, oerr)
			}
			return
		}
	}
}

// pingStream measures a round trip over the stream (see Client.Ping).
func (c *Client) pingStream(ctx context.Context) (time.Duration, error) {
	for {
		c.mu.Lock()
		cs, st, ch, lastErr := c.stream, c.state, c.changed, c.lastErr
		c.mu.Unlock()
		if st == Closed {
			return 0, ErrClosed
		}
		if cs != nil {
			rtt, err := cs.st.Ping(ctx)
			if err != nil {
				return 0, fmt.Errorf("ping: %w", err)
			}
			return rtt, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("ping: not connected (%v): %w", lastErr, ctx.Err())
		}
	}
}

// errLinkLost is the state-change cause when the stream's connection ends.
var errLinkLost = errors.New("the connection to the server was lost; resuming the stream")

// replacedError is ErrReplaced as a permanent dial failure.
type replacedError struct{}

func (replacedError) Error() string        { return ErrReplaced.Error() }
func (replacedError) Is(target error) bool { return target == ErrReplaced }
func (replacedError) Permanent() bool      { return true }

var errReplacedPermanent error = replacedError{}

// streamConn is a registered link handed to the stream: its Close reports
// the link's loss as a state change, and a Close frame that says another
// connection took the client id stops the redialing.
type streamConn struct {
	wire.Conn
	c    *Client
	l    *link
	once sync.Once
}

func (c *Client) streamConn(l *link) *streamConn { return &streamConn{Conn: l.wc, c: c, l: l} }

func (sc *streamConn) ReadFrame() (wire.Frame, error) {
	f, err := sc.Conn.ReadFrame()
	if err == nil && f.Type == wire.TypeClose {
		if m, derr := wire.DecodeMessage(f); derr == nil && m.(*wire.Close).Code == wire.CloseReplaced {
			sc.c.replaced.Store(true)
		}
	}
	return f, err
}

func (sc *streamConn) Close() error {
	err := sc.Conn.Close()
	sc.once.Do(func() {
		c := sc.c
		c.mu.Lock()
		current := c.link == sc.l
		if current {
			c.link = nil
		}
		c.mu.Unlock()
		if current && c.ctx.Err() == nil {
			c.setState(Connecting, errLinkLost)
		}
	})
	return err
}
