// Package client connects to a Connect server over any bearer and keeps the
// connection registered: it runs the connection state machine
// Connecting → Registration → Connected, authenticates in-channel with the
// client's persistent client id and a token (or the TLS client certificate
// an ssl bearer presented), keeps the connection alive with pings and goes
// back to Connecting when the connection or the registration fails.
//
// Over a stream bearer the client carries its sessions in one resume stream
// (package resume) that outlives the connections: a link break costs a
// reconnection, not the sessions (see Session). With Config.StateFile the
// sessions also survive a restart of the client (Client.Reclaimed).
//
// connectclient is built on this package, and so is remoteservicerunner,
// whose services a Provider serves for the server (provide.go). Sessions of
// remote services open the direct links of their routing documents to the
// service's runner (direct.go), which a Provider accepts
// (provide_direct.go).
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// State is a connection state.
type State int32

const (
	// Connecting: opening a connection through the bearer.
	Connecting State = iota
	// Registration: connected, Hello sent, waiting for Welcome or Reject.
	Registration
	// Connected: registered; calls can be made.
	Connected
	// Closed: Close was called or a permanent failure ended the client.
	Closed
)

func (s State) String() string {
	switch s {
	case Connecting:
		return "Connecting"
	case Registration:
		return "Registration"
	case Connected:
		return "Connected"
	case Closed:
		return "Closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Config configures a Client.
type Config struct {
	// Server is the endpoint to reach; Bearer dials it.
	Server bearers.Endpoint
	Bearer bearers.Bearer
	// ClientID is the persistent client id (statedir.ClientID keeps one).
	ClientID uuid.UUID
	// Token authenticates the client; may be empty when the bearer presents
	// a client certificate the server accepts.
	Token string
	// Name is shown in the server's logs and client lists.
	Name string
	// RegistrationTimeout bounds Connecting plus Registration of one
	// attempt. Default 10s.
	RegistrationTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts (defaults
	// 100ms and 5s). Retries go on until the context given to Dial ends,
	// or, after the first success, until Close.
	RetryMin, RetryMax time.Duration
	// LinkBearers are the bearers the client opens the direct links of
	// remote services' sessions with (docs/ROUTING.md, "How a client uses
	// the document"), at most one per bearer type; StartSession declares
	// their types to the server, which routes each session with them.
	// Nil: the client opens no direct links, and its sessions route
	// everything through the server (or are refused, naming what to
	// configure, when a service routes something only directly).
	LinkBearers []bearers.Bearer
	// LinkOpenTimeout bounds opening one direct link (dial and LinkOpen).
	// Default 5s.
	LinkOpenTimeout time.Duration
	// LinkResume tunes the resume streams that carry reliable direct links
	// (direct_resume.go). Nil means resume.DefaultConfig() with a linger
	// window of DefaultLinkLinger, the keepalive interval and dead-path
	// window the server announces, and the direct links' reopening backoff
	// (250ms to 5s). Its Logger defaults to Logger.
	LinkResume *resume.Config
	// OnState, if set, is called with Connecting when Dial starts and then
	// on every state change, with the error that caused a fall back to
	// Connecting. It must not block.
	OnState func(to State, err error)
	// Resume tunes the resume stream that carries the sessions over a
	// stream bearer. Nil means resume.DefaultConfig() with the keepalive
	// interval and dead-path window the server announces in its Welcome,
	// and RetryMin and RetryMax above. Its Logger defaults to Logger.
	Resume *resume.Config
	// MaxControlConnectionRestarts bounds how many times in a row the
	// client recreates its control connection (the connection carrying
	// its resume stream) after losing it — a dead-path verdict, a break —
	// without the stream attaching again, counting one restart per
	// dead-path window; a successful attach starts the count afresh. Past
	// it the client gives up: the state becomes Closed with a
	// *RestartLimitError (control.go). 0 means 10 (the default);
	// negative, no limit.
	MaxControlConnectionRestarts int
	// NoResume carries the session layer directly on each connection, as
	// over a datagram bearer: sessions end with their connection.
	NoResume bool
	// StateFile, if set, is the file in which the client keeps the id and
	// secret of each open session (JSON, mode 0600, rewritten as sessions
	// open and end), so that a client restarted with the same file and
	// client id reclaims them: the server restores those it still holds
	// and ends every other session of the client id (Client.Reclaimed).
	// One process per file. Needs a stream bearer.
	StateFile string
	// Logger; default discards.
	Logger *slog.Logger
}

// RejectError is the server's refusal of a registration.
type RejectError struct {
	Code      wire.RejectCode
	Message   string
	Retryable bool
	// RetryAfter is how long the server asked the client to wait before
	// retrying (zero: no request).
	RetryAfter time.Duration
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("server rejected the registration (%v): %s", e.Code, e.Message)
}

// Permanent reports whether retrying cannot help (the resume stream then
// stops redialing).
func (e *RejectError) Permanent() bool { return !e.Retryable }

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("client: closed")

// ErrReplaced: the server closed the connection because another connection
// registered with the same client id (another process using the same state
// directory). The client stops rather than take the id back.
var ErrReplaced = errors.New("client: another connection registered with this client id; give each process its own --state-dir")

// Client is a registered connection to a server. Its methods are safe for
// concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	nextPing atomic.Uint64

	store     *stateStore     // Config.StateFile; nil without
	reclaimed []ReclaimResult // what the first stream's reclaim gave
	replaced  atomic.Bool     // a newer connection took our client id

	mu      sync.Mutex
	state   State
	link    *link         // current registered link, nil unless Connected
	sl      *sessLink     // current session layer (the stream's or the link's); nil when none
	stream  *clientStream // current resume stream; nil without
	changed chan struct{} // closed and replaced on every state change (and session layer change)
	lastErr error
}

// Dial connects and registers, retrying transient failures (connection
// refused, timeouts, retryable rejections) with backoff until ctx ends.
// A permanent rejection (authentication, protocol version) is returned at
// once as a *RejectError. After Dial succeeds the client reconnects by
// itself whenever the connection fails, until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Bearer == nil {
		return nil, errors.New("client: no bearer to reach " + cfg.Server.String())
	}
	if cfg.ClientID == uuid.Nil {
		return nil, errors.New("client: no client id")
	}
	if cfg.RegistrationTimeout <= 0 {
		cfg.RegistrationTimeout = 10 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(5*time.Second, cfg.RetryMin)
	}
	if err := checkLinkBearers(cfg.LinkBearers); err != nil { // direct.go
		return nil, err
	}
	if cfg.LinkOpenTimeout <= 0 {
		cfg.LinkOpenTimeout = 5 * time.Second
	}
	c := &Client{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}), state: Connecting}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.StateFile != "" {
		if cfg.NoResume || cfg.Bearer.Info().Capabilities.Has(bearers.Datagram) {
			return nil, errors.New("client: a state file needs sessions on a resume stream (a stream bearer, without NoResume)")
		}
		st, err := openStateStore(cfg.StateFile, cfg.ClientID, c.log)
		if err != nil {
			return nil, err
		}
		c.store = st
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if cfg.OnState != nil {
		cfg.OnState(Connecting, nil) // the initial state is reported too
	}
	if c.resumable() {
		cs, err := c.establish(ctx)
		if err != nil {
			c.setState(Closed, err)
			c.cancel()
			c.store.close()
			return nil, err
		}
		c.wg.Add(1)
		go c.runStreams(cs)
		return c, nil
	}
	l, err := c.connect(ctx)
	if err != nil {
		c.setState(Closed, err)
		c.cancel()
		return nil, err
	}
	c.start(l)
	return c, nil
}

func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	if c.state == Closed || c.state == s && err == nil {
		c.mu.Unlock()
		return
	}
	c.state = s
	if err != nil {
		c.lastErr = err
	}
	c.notifyLocked()
	c.mu.Unlock()
	c.log.Debug("client state", "state", s, "error", err)
	if c.cfg.OnState != nil {
		c.cfg.OnState(s, err)
	}
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// ServerID is the id the server announced in its last Welcome.
func (c *Client) ServerID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.link == nil {
		return ""
	}
	return c.link.welcome.ServerID
}

// connect runs Connecting → Registration → Connected until it succeeds, a
// permanent error occurs, or ctx (or the client) ends.
func (c *Client) connect(ctx context.Context) (*link, error) {
	backoff := c.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		l, err := c.attempt(ctx)
		if err == nil {
			return l, nil
		}
		var rej *RejectError
		if errors.As(err, &rej) && !rej.Retryable {
			return nil, err
		}
		if ctx.Err() != nil || c.ctx.Err() != nil {
			return nil, giveUp(attempt, err, ctx)
		}
		c.setState(Connecting, err)
		c.log.Info("connection attempt failed; retrying", "attempt", attempt, "error", err)
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))
		backoff = min(2*backoff, c.cfg.RetryMax)
		if rej != nil {
			wait = max(wait, rej.RetryAfter) // docs/PROTOCOL.md: retry after retry_after_ms
		}
		select {
		case <-ctx.Done():
			return nil, giveUp(attempt, err, ctx)
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(wait):
		}
	}
}

// giveUp is the error of a connect loop that ran out of time: it wraps the
// last attempt's error and ctx's, so that errors.Is finds either.
func giveUp(attempts int, last error, ctx context.Context) error {
	if ctx.Err() == nil {
		return fmt.Errorf("giving up after %d attempt(s); last: %w", attempts, last)
	}
	return fmt.Errorf("giving up after %d attempt(s) (%w); last: %w", attempts, ctx.Err(), last)
}

// start makes l the current link and runs its reader and keepalive, with
// the session layer on the link (no resume stream).
func (c *Client) start(l *link) {
	l.sess = newLinkSessions(l, c.log)
	c.mu.Lock()
	c.link, c.sl = l, l.sess
	c.notifyLocked()
	c.mu.Unlock()
	c.setState(Connected, nil)
	c.wg.Add(1)
	go c.run(l)
}

// run owns one link: it reads until the link fails, then reconnects.
func (c *Client) run(l *link) {
	defer c.wg.Done()
	err := l.serve(c.ctx)
	l.close()
	c.mu.Lock()
	if c.link == l {
		c.link = nil
	}
	if c.sl == l.sess {
		c.sl = nil
	}
	c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	if errors.Is(err, ErrReplaced) {
		// Another process registered with our client id: reconnecting
		// would replace it in turn, forever. Stop instead.
		c.log.Error("connection replaced; not reconnecting", "error", err)
		c.setState(Closed, err)
		return
	}
	c.setState(Connecting, err)
	c.log.Info("connection lost; reconnecting", "error", err)
	nl, err := c.connect(c.ctx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Error("cannot reconnect", "error", err)
			c.setState(Closed, err)
		}
		return
	}
	c.start(nl)
}

// current waits until the client is Connected and returns its link.
func (c *Client) current(ctx context.Context) (*link, error) {
	for {
		c.mu.Lock()
		l, st, ch, lastErr := c.link, c.state, c.changed, c.lastErr
		c.mu.Unlock()
		if st == Connected && l != nil {
			return l, nil
		}
		if st == Closed {
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %v", ErrClosed, lastErr)
			}
			return nil, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("not connected (%v): %w", lastErr, ctx.Err())
		}
	}
}

// Ping measures one round trip to the server. On a datagram bearer the ping
// is retransmitted until answered or ctx ends. Over a resume stream it
// travels ahead of queued session messages, and waits for the stream to
// reconnect if it must.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	if c.resumable() {
		return c.pingStream(ctx)
	}
	l, err := c.current(ctx)
	if err != nil {
		return 0, err
	}
	return l.ping(ctx, c.nextPing.Add(1))
}

// Close says goodbye to the server, closes the connection and stops every
// goroutine of the client. Idempotent.
//
// Over a resume stream, Close ends the stream, so that the server ends the
// client's sessions at once (and the state file, if any, ends up empty).
func (c *Client) Close() error {
	c.mu.Lock()
	l, cs := c.link, c.stream
	c.mu.Unlock()
	if cs == nil && l != nil {
		// A link without a stream says goodbye before the cancellation:
		// once c.ctx ends, its reader closes the connection, and a
		// goodbye written after that would be lost.
		l.goodbye()
	}
	// Then cancel: run does not start a reconnect, and a stream being
	// opened either is published before the lock below or sees the
	// cancellation and closes itself.
	c.cancel()
	c.mu.Lock()
	l, cs = c.link, c.stream
	c.mu.Unlock()
	if cs != nil {
		cs.st.Close() // tells the server, and closes the connection
	} else if l != nil {
		l.close()
	}
	c.setState(Closed, nil)
	c.wg.Wait()
	c.store.close()
	return nil
}

// Detach stops the client without ending its sessions: the connection is
// dropped without a goodbye, as if the process had died, so the server
// keeps the sessions for its linger window (`<resume linger>`), and the
// state file (Config.StateFile) keeps listing them, so that a client
// started again with the same client id and state file reclaims them
// (Client.Reclaimed). For a planned restart; Close is the clean end.
//
// Over a connection without a resume stream (a datagram bearer, or
// Config.NoResume) there is nothing to come back to, and Detach is Close.
// Idempotent; Close after Detach does nothing more.
func (c *Client) Detach() error {
	c.mu.Lock()
	cs := c.stream
	c.mu.Unlock()
	if cs == nil {
		return c.Close()
	}
	// The state file first: what it holds now is what a restart reclaims;
	// the sessions ending below on this side must not leave it.
	c.store.close()
	c.cancel()
	c.mu.Lock()
	cs = c.stream
	c.mu.Unlock()
	if cs != nil {
		cs.st.Abandon()
	}
	c.setState(Closed, nil)
	c.wg.Wait()
	return nil
}

// notifyLocked wakes whoever waits for a change; c.mu is held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// welcome is the Welcome of the client's current connection, nil while it
// has none.
func (c *Client) welcome() *wire.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.link == nil {
		return nil
	}
	return c.link.welcome
}

// sessionLayer waits until the client has a session layer (a live stream,
// or a Connected link) and returns it.
func (c *Client) sessionLayer(ctx context.Context) (*sessLink, error) {
	for {
		c.mu.Lock()
		sl, st, ch, lastErr := c.sl, c.state, c.changed, c.lastErr
		c.mu.Unlock()
		if sl != nil && !sl.ended() {
			return sl, nil
		}
		if st == Closed {
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %v", ErrClosed, lastErr)
			}
			return nil, ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("not connected (%v): %w", lastErr, ctx.Err())
		}
	}
}
