package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// retransmitInterval is how often Hello and Ping are resent over datagram
// bearers until answered.
const retransmitInterval = 250 * time.Millisecond

// link is one registered connection.
type link struct {
	bc       bearers.Conn
	wc       wire.Conn
	datagram bool
	welcome  *wire.Welcome
	sess     *sessLink // the session layer (session.go)
	features uint64    // Hello's feature bits (wire.FeatureTunnel for a tunnel's link)

	mu      sync.Mutex
	pending map[uint64]chan struct{}
	done    chan struct{} // closed when serve returns
	once    sync.Once
}

// attempt makes one connection and registers on it.
func (c *Client) attempt(ctx context.Context) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RegistrationTimeout)
	defer cancel()
	c.setState(Connecting, nil)
	bc, err := c.cfg.Bearer.Dial(ctx, c.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.cfg.Server, err)
	}
	l := &link{bc: bc, datagram: c.cfg.Bearer.Info().Capabilities.Has(bearers.Datagram),
		pending: map[uint64]chan struct{}{}, done: make(chan struct{})}
	if l.datagram {
		l.wc = wire.NewDatagramConn(bc, wire.MaxDatagramPayload)
	} else {
		l.wc = wire.NewStreamConn(bc, wire.DefaultMaxPayload)
	}
	c.setState(Registration, nil)
	w, err := l.register(ctx, c.cfg)
	if err != nil {
		l.close()
		return nil, err
	}
	l.welcome = w
	return l, nil
}

func (l *link) register(ctx context.Context, cfg Config) (*wire.Welcome, error) {
	hello := &wire.Hello{MinVersion: wire.Version, MaxVersion: wire.Version, ClientID: cfg.ClientID,
		Token: cfg.Token, ClientName: cfg.Name, Features: l.features}
	if err := l.wc.WriteMessage(hello); err != nil {
		return nil, fmt.Errorf("registration: sending Hello: %w", err)
	}
	deadline, _ := ctx.Deadline()
	l.bc.SetReadDeadline(deadline)
	stop := make(chan struct{})
	defer close(stop)
	if l.datagram {
		go func() { // resend Hello until answered
			t := time.NewTicker(retransmitInterval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					l.wc.WriteMessage(hello)
				}
			}
		}()
	}
	// Unblock the read if ctx is cancelled before its deadline.
	unblock := context.AfterFunc(ctx, func() { l.bc.SetReadDeadline(time.Now()) })
	defer unblock()
	for {
		m, err := l.wc.ReadMessage()
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, fmt.Errorf("registration: %w", ctx.Err())
			}
			if isTimeout(err) {
				return nil, fmt.Errorf("registration timed out after %s: the server did not answer Hello", cfg.RegistrationTimeout)
			}
			return nil, fmt.Errorf("registration: %w", err)
		}
		switch m := m.(type) {
		case *wire.Welcome:
			if uuid.UUID(m.ClientID) != cfg.ClientID {
				return nil, fmt.Errorf("registration: server welcomed client id %s, we are %s", uuid.UUID(m.ClientID), cfg.ClientID)
			}
			if m.Version != wire.Version {
				return nil, fmt.Errorf("registration: server chose protocol version %d, we offered %d", m.Version, wire.Version)
			}
			l.bc.SetReadDeadline(time.Time{})
			return m, nil
		case *wire.Reject:
			return nil, &RejectError{Code: m.Code, Message: m.Message, Retryable: m.Retryable,
				RetryAfter: time.Duration(m.RetryAfterMillis) * time.Millisecond}
		case *wire.Close:
			return nil, fmt.Errorf("registration: server closed the connection: %s", m.Reason)
		}
	}
}

// serve reads until the link fails and sends keepalive pings meanwhile.
// When it returns, the link's pending session requests have failed and its
// sessions have ended.
func (l *link) serve(ctx context.Context) (err error) {
	defer close(l.done)
	defer func() { l.sess.end(err) }()
	stop := context.AfterFunc(ctx, func() { l.bc.SetReadDeadline(time.Now()) })
	defer stop()
	// docs/PROTOCOL.md, "Keepalive"; a datagram Ping or Pong may be lost,
	// so never less than three intervals here.
	interval := l.welcome.PingInterval()
	window := max(l.welcome.PingWindow(), 3*interval)
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go l.keepalive(kctx, interval)
	for {
		// Our own keepalive pongs keep the read side busy, so a silent
		// window means a dead path.
		l.bc.SetReadDeadline(time.Now().Add(window))
		m, err := l.wc.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTimeout(err) {
				return fmt.Errorf("no traffic from the server for %s", window)
			}
			return err
		}
		switch m := m.(type) {
		case *wire.Pong:
			l.mu.Lock()
			if ch, ok := l.pending[m.ID]; ok {
				delete(l.pending, m.ID)
				close(ch)
			}
			l.mu.Unlock()
		case *wire.Ping:
			l.wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
		case *wire.Close:
			if m.Code == wire.CloseReplaced {
				return fmt.Errorf("%w: %s", ErrReplaced, m.Reason)
			}
			return fmt.Errorf("server closed the connection: %s", m.Reason)
		case *wire.Data:
			if m.Channel == session.Channel {
				l.sess.handle(m.Payload)
			}
		}
	}
}

func (l *link) keepalive(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.wc.WriteMessage(&wire.Ping{ID: 0, SentUnixNano: time.Now().UnixNano()})
		}
	}
}

func (l *link) ping(ctx context.Context, id uint64) (time.Duration, error) {
	ch := make(chan struct{})
	l.mu.Lock()
	l.pending[id] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, id)
		l.mu.Unlock()
	}()
	start := time.Now()
	msg := &wire.Ping{ID: id, SentUnixNano: start.UnixNano()}
	if err := l.wc.WriteMessage(msg); err != nil {
		return 0, fmt.Errorf("ping: %w", err)
	}
	var resend <-chan time.Time
	if l.datagram {
		t := time.NewTicker(retransmitInterval)
		defer t.Stop()
		resend = t.C
	}
	for {
		select {
		case <-ch:
			return time.Since(start), nil
		case <-resend:
			l.wc.WriteMessage(msg)
		case <-l.done:
			return 0, errors.New("ping: connection lost before the answer")
		case <-ctx.Done():
			return 0, fmt.Errorf("ping: no answer: %w", ctx.Err())
		}
	}
}

func (l *link) goodbye() {
	l.bc.SetWriteDeadline(time.Now().Add(time.Second))
	l.wc.WriteMessage(&wire.Close{Code: wire.CloseNormal, Reason: "client closing"})
}

func (l *link) close() { l.once.Do(func() { l.wc.Close() }) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
