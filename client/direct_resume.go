package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Reliable direct links on resume streams, client side (docs/ROUTING.md,
// "When a direct link breaks or moves"; docs/PROTOCOL.md §15.3).
//
// A session with a secret (so with a link key, which the runner got from
// the server in RemoteOpen) opens each direct link over a stream bearer
// with LinkOpen.Resume. When the runner answers OK with Resume, the client
// opens a resume stream on the connection, and both sides prove the link's
// resume key (derived from the link key, session.DeriveLinkResumeKey) over
// the stream's id in its first message each way. From then on the link's
// session layer rides the stream: a connection that breaks is redialled by
// the stream (the same address, through the same bearer, LinkOpen again,
// then the resume handshake; the reopening backoff of 250 ms to 5 s), the
// gap is replayed, and calls in flight, events and runtime data neither
// get lost nor arrive twice. The routes keep using the link meanwhile.
//
// Only when the stream is lost for good — the runner no longer knows it
// (it restarted; its linger window passed), it refuses the LinkOpen (it
// no longer has the session), or the client gave up after the linger
// window — does the link go down as a plain link does (direct.go): the
// waiting calls fail with ErrLinkLost, saying whether the call may have
// run, the routes take their fallbacks, the server is told, and the link
// is reopened with a new stream.
//
// Goroutines: the stream's own (stopped by its Close, which closing the
// link calls) and one reader per link, a pump of the session.

// DefaultLinkLinger is how long a reliable direct link's resume stream
// outlives its connections, on both sides, unless configured
// (Config.LinkResume, ProviderConfig.LinkResume): long enough for any
// short break (a Wi-Fi drop, NAT rebinding, a brief suspend), short enough
// that a client cut off from a runner falls back to the server, and a
// runner frees an abandoned stream, within minutes.
const DefaultLinkLinger = 2 * time.Minute

// linkResumeConfig is the configuration of the client's direct link
// streams.
func (c *Client) linkResumeConfig() (*resume.Config, error) {
	var cfg resume.Config
	if c.cfg.LinkResume != nil {
		cfg = *c.cfg.LinkResume
	} else {
		cfg = *resume.DefaultConfig()
		cfg.Linger = DefaultLinkLinger
		if w := c.welcome(); w != nil {
			cfg.KeepaliveInterval = w.PingInterval()
			cfg.DeadTimeout = max(w.PingWindow(), 2*cfg.KeepaliveInterval)
		}
		cfg.RetryMin, cfg.RetryMax = reopenMin, reopenMax
		// A redial dials and sends LinkOpen before the resume handshake.
		cfg.HandshakeTimeout = 2 * c.cfg.LinkOpenTimeout
	}
	cfg.MaxMessage = min(cfg.MaxMessage, wire.DefaultMaxPayload) // the links' payload limit
	if cfg.Logger == nil {
		cfg.Logger = c.log
	}
	if err := resume.VerifyConfig(&cfg); err != nil {
		return nil, fmt.Errorf("client: direct link resume configuration: %w", err)
	}
	return &cfg, nil
}

// linkResumeKey is the resume key of the session's reliable link name, or
// nil when the session has no link key (its links are plain).
func (s *Session) linkResumeKey(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return session.DeriveLinkResumeKey(s.direct.linkKey, name)
}

// linkRefusedError is the runner's refusal of a LinkOpen.
type linkRefusedError struct{ msg string }

func (e *linkRefusedError) Error() string { return "the runner refused the link: " + e.msg }

// permanentLinkError ends a link's stream instead of being retried.
type permanentLinkError struct{ err error }

func (e *permanentLinkError) Error() string   { return e.err.Error() }
func (e *permanentLinkError) Unwrap() error   { return e.err }
func (e *permanentLinkError) Permanent() bool { return true }

// startLinkStream opens the resume stream of a link just opened with
// Resume, and proves the link's key both ways; nothing for a plain link.
func (s *Session) startLinkStream(ctx context.Context, dl *directLink) error {
	if dl.key == nil {
		return nil
	}
	cfg, err := s.c.linkResumeConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	first, l := dl.l, dl.link
	dial := func(dctx context.Context) (wire.Conn, error) {
		if f := first; f != nil {
			first = nil // Open's own call, before the stream's redial loop starts
			dl.cur.set(f.wc)
			return f.wc, nil
		}
		c, err := s.redialLink(dctx, l)
		dl.cur.set(c)
		return c, err
	}
	st, err := resume.Open(ctx, dial, cfg)
	if err != nil {
		return fmt.Errorf("opening the link's resume stream: %w", err)
	}
	id := [16]byte(st.ID())
	if err := st.Send(ctx, session.LinkBindProof(dl.key, id, false)); err != nil {
		st.Close()
		return fmt.Errorf("sending the link's bind proof: %w", err)
	}
	proof, err := st.Recv(ctx)
	if err != nil {
		st.Close()
		return fmt.Errorf("waiting for the runner's bind proof: %w", err)
	}
	if !session.VerifyLinkBindProof(dl.key, id, true, proof) {
		st.Close()
		return errors.New("the runner's bind proof is wrong: it does not know the session's link key")
	}
	sl := newSessLink(st.Send, true, cfg.MaxMessage, s.c.log)
	sl.direct = dl
	sl.sessions[s.ID] = s
	sl.nextID.Store(dl.openID) // ids after the LinkOpen's
	dl.sl, dl.st = sl, st
	s.c.log.Debug("direct link on a resume stream", "session", s.ID, "link", dl.name, "stream", st.ID().String())
	return nil
}

// redialLink is a link stream's DialFunc after its first connection: the
// bearer dial and LinkOpen again. A refusal ends the stream (the runner no
// longer has the session, so not the stream either), as does a runner that
// no longer offers resume streams.
func (s *Session) redialLink(ctx context.Context, l routing.Link) (wire.Conn, error) {
	if err := s.Err(); err != nil {
		return nil, &permanentLinkError{err}
	}
	dl, err := s.dialConn(ctx, l)
	if err != nil {
		var re *linkRefusedError
		if errors.As(err, &re) {
			return nil, &permanentLinkError{err}
		}
		return nil, err
	}
	if dl.key == nil {
		dl.close()
		return nil, &permanentLinkError{errors.New("the runner answered LinkOpen without resume: it no longer resumes the link's stream")}
	}
	return dl.l.wc, nil
}

// startStreamLink runs a stream link's reader, a pump of the session: it
// hands the stream's messages to the link's session layer until the
// stream ends for good, then takes the link down (direct.go).
func (s *Session) startStreamLink(dl *directLink) {
	if s.addPump() != nil {
		dl.close()
		return
	}
	go func() {
		defer s.pumpDone()
		var err error
		for {
			b, rerr := dl.st.Recv(context.Background()) // returns when the stream ends
			if rerr != nil {
				err = rerr
				break
			}
			dl.sl.handle(b)
		}
		cause := newLinkStreamLost(dl.st, err)
		dl.sl.end(cause)
		dl.close()
		s.linkEnded(dl, cause)
	}()
}

// linkConnRef is the connection a link's stream uses now.
type linkConnRef struct {
	mu sync.Mutex
	c  wire.Conn
}

func (r *linkConnRef) set(c wire.Conn) {
	r.mu.Lock()
	r.c = c
	r.mu.Unlock()
}

// drop closes the connection (the stream redials); false when there was
// none.
func (r *linkConnRef) drop() bool {
	r.mu.Lock()
	c := r.c
	r.c = nil
	r.mu.Unlock()
	if c == nil {
		return false
	}
	c.Close()
	return true
}

// fillStream adds a stream link's state to its LinkStats.
func (dl *directLink) fillStream(st *LinkStats) {
	if dl.st == nil {
		return
	}
	ss := dl.st.Stats()
	st.Resumable, st.Attaches, st.Connected = true, ss.Attaches, ss.Connected
}

// linkStreamLost is why a link's stream ended for good, with the calls
// the runner is known not to have received.
type linkStreamLost struct {
	err    error
	notRun map[uint64]bool // request ids the runner never received
}

// newLinkStreamLost reads what st, ended with err, did not deliver: only
// when the runner said what it received (its expiry or its Close) is it
// exact, so only then is a call known not to have run.
func newLinkStreamLost(st *resume.Stream, err error) *linkStreamLost {
	e := &linkStreamLost{err: err}
	var exp *resume.ExpiredError
	var closed *resume.PeerClosedError
	if errors.As(err, &exp) && exp.ByServer || errors.As(err, &closed) {
		for _, b := range st.Undelivered() {
			if m, derr := session.Decode(b); derr == nil {
				if r, ok := m.(session.Request); ok {
					if e.notRun == nil {
						e.notRun = map[uint64]bool{}
					}
					e.notRun[r.RequestID()] = true
				}
			}
		}
	}
	return e
}

func (e *linkStreamLost) Error() string {
	var why string
	switch {
	case errors.Is(e.err, resume.ErrUnknownSession):
		why = "the runner does not know it (it restarted)"
	case errors.Is(e.err, resume.ErrExpired):
		why = "its linger window passed"
	case errors.Is(e.err, resume.ErrPeerClosed):
		why = "the runner closed it"
	default:
		return "its resume stream was lost for good: " + e.err.Error()
	}
	return fmt.Sprintf("its resume stream was lost for good: %s: %v", why, e.err)
}

func (e *linkStreamLost) Unwrap() error { return e.err }

// ranVerdict says, for the request id whose link ended with cause,
// whether the method may have run.
func ranVerdict(cause error, id uint64) string {
	var lost *linkStreamLost
	if id != 0 && errors.As(cause, &lost) && lost.notRun[id] {
		return "the call never reached the runner: it did not run"
	}
	return "whether it ran is unknown"
}

// lostID is lost for the request id.
func (sl *sessLink) lostID(op string, id uint64, cause error) error {
	err := sl.lost(op, cause)
	if le, ok := err.(*lostError); ok {
		le.id = id
	}
	return err
}
