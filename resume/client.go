package resume

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/bearerkit/connect/wire"
)

// DialFunc opens a new connection to the server for a client stream: it
// dials the bearer, registers (Hello/Welcome, docs/PROTOCOL.md) and returns
// the framed connection, ready for the resume handshake. The connection's
// payload limit must be at least Config.MaxMessage. ctx bounds the dial
// (Config.HandshakeTimeout, and the stream's life): DialFunc must return
// soon after ctx is done, or Close waits for it. DialFunc is called from the
// stream's own goroutine, one call at a time.
//
// A DialFunc error is retried with backoff, unless it has (in its chain, by
// errors.As) a method Permanent() bool that returns true: then the stream
// ends at once with that error (for example a registration the server
// rejected for good, which retrying cannot change).
type DialFunc func(ctx context.Context) (wire.Conn, error)

// Open creates a new session on the server reached through dial and returns
// the client side of its stream. It dials once, within ctx and
// Config.HandshakeTimeout; a refusal is a *RefusedError (ErrBusy is
// retryable). From then on the stream reconnects by itself whenever its
// connection fails: a few immediate attempts (Config.RetryFast), then
// exponential backoff with jitter (Config.RetryMin to RetryMax), resuming the
// session on each new connection, until it succeeds, the server refuses for
// good (for example ErrExpired), Config.Linger passes, or Close is called.
// A nil cfg means DefaultConfig().
func Open(ctx context.Context, dial DialFunc, cfg *Config) (*Stream, error) {
	c, err := config(cfg)
	if err != nil {
		return nil, err
	}
	if dial == nil {
		return nil, errors.New("resume: open: nil DialFunc")
	}
	hctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	conn, err := dial(hctx)
	if err != nil {
		return nil, fmt.Errorf("resume: open: dial: %w", err)
	}
	release := guardConn(hctx, conn)
	acc, secret, err := clientOpen(conn, &c)
	if err == nil && !release() {
		err = fmt.Errorf("resume: open: %w", context.Cause(hctx))
	}
	if err != nil {
		release()
		conn.Close()
		return nil, err
	}
	s := newStream(c, roleClient, acc.id, secret)
	s.dial = dial
	s.down = make(chan *link, 1)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.install(conn, acc.received, acc.replayBuffer, acc.maxMessage); err != nil {
		s.cancel()
		conn.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.redialLoop()
	s.log.Debug("resume: session opened")
	return s, nil
}

// redialLoop reconnects the client stream each time its connection fails.
//
// A connection that fails within RetryMax of being attached without having
// moved a message either way does not reset the backoff: a peer that
// accepts resumes and then drops them at once gets backed off from, not
// hammered. One that moved messages did its job; the next break starts with
// the fast retries again (a path that breaks often but works in between
// must not drift into long backoffs).
func (s *Stream) redialLoop() {
	defer s.wg.Done()
	attempts := 0
	for {
		var l *link
		select {
		case l = <-s.down:
		case <-s.done:
			return
		}
		l.wg.Wait() // the old connection's goroutines are gone: its state is final
		s.mu.Lock()
		progress := s.acked > l.ackedAtAttach || s.recvd > l.recvdAtAttach
		s.mu.Unlock()
		if progress || time.Since(l.attachedAt) >= s.cfg.RetryMax {
			attempts = 0
		}
		var err error
		attempts, err = s.reconnect(attempts)
		if err != nil {
			s.end(err, nil, nil)
			return
		}
	}
}

// reconnect dials and resumes until it succeeds (nil), the stream ends (nil),
// or it must give up (the error that ends the stream). It starts with the
// given attempt number (for the backoff) and returns the next one.
func (s *Stream) reconnect(attempt int) (int, error) {
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for first := attempt; ; attempt++ {
		if d := s.backoff(attempt); d > 0 {
			if left := time.Until(start.Add(s.cfg.Linger)); d > left {
				d = max(left, 0)
			}
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-s.done:
				return attempt, nil
			}
		}
		err := s.attempt()
		if err == nil {
			if attempt > first {
				s.log.Info("resume: session resumed", "attempts", attempt-first+1, "after", time.Since(start))
			}
			return attempt + 1, nil
		}
		select {
		case <-s.done:
			return attempt, nil
		default:
		}
		if permanent(err) {
			return attempt, err
		}
		s.log.Debug("resume: reconnection failed", "attempt", attempt-first+1, "err", err)
		if time.Since(start) >= s.cfg.Linger {
			s.mu.Lock()
			defer s.mu.Unlock()
			return attempt, &ExpiredError{SessionID: s.id, Delivered: s.acked, Sent: s.sent}
		}
	}
}

// backoff returns the delay before reconnection attempt n (0-based): none for
// the first RetryFast attempts, then RetryMin doubling up to RetryMax, each
// jittered down by up to half.
func (s *Stream) backoff(n int) time.Duration {
	if n < max(s.cfg.RetryFast, 1) {
		return 0
	}
	d := s.cfg.RetryMin
	for i := max(s.cfg.RetryFast, 1); i < n && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	return d - rand.N(d/2+1)
}

// attempt dials once and resumes the session on the new connection.
func (s *Stream) attempt() error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	conn, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("resume: dial: %w", err)
	}
	release := guardConn(ctx, conn)
	if err := s.clientResume(conn, release); err != nil {
		release()
		conn.Close()
		return err
	}
	return nil
}
