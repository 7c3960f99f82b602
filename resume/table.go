package resume

import (
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/wire"
)

// Table is the server's registry of sessions. It creates sessions (the open
// handshake), finds them again when a client resumes (checking that it knows
// the session secret), expires sessions whose client has not come back
// within Config.Linger, and remembers expired and closed sessions for
// Config.TombstoneTTL so that a late resume is answered "expired" or
// "closed", with the last sequence number received, rather than "unknown".
//
// Concurrency: all methods are safe for concurrent use. Accept runs one
// handshake on the caller's goroutine; run one Accept per connection. Close
// is idempotent.
type Table struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[uuid.UUID]*Stream
	tombs    map[uuid.UUID]tomb
	tombq    ring[uuid.UUID] // tombstones in the order they were made
	closed   bool
}

// tomb is what a Table remembers of an ended session.
type tomb struct {
	secret    [32]byte
	code      RefuseCode // RefuseExpired or RefuseClosed
	delivered uint64     // last sequence number received from the client
	at        time.Time
}

// NewTable returns an empty Table. A nil cfg means DefaultConfig(); an invalid
// one is a *ConfigError.
func NewTable(cfg *Config) (*Table, error) {
	c, err := config(cfg)
	if err != nil {
		return nil, err
	}
	return &Table{cfg: c, log: c.logger(), sessions: map[uuid.UUID]*Stream{}, tombs: map[uuid.UUID]tomb{}}, nil
}

// Accept runs the server side of a handshake on conn, a freshly registered
// connection whose next frame is the client's Open or Resume. For an Open it
// creates a session and returns its Stream with isNew true: the caller serves
// it. For a Resume of a live session it attaches conn to the existing Stream
// (dropping the connection it had, if any, once the client has proved the
// secret) and returns it with isNew false: whoever serves it carries on.
//
// The handshake is bounded by ctx and Config.HandshakeTimeout. On failure
// conn is closed and the error says why: a *RefusedError for what was
// refused (ErrUnknownSession, ErrAuth for a forged resume — which leaves the
// real session untouched —, ErrExpired, ErrPeerClosed, ErrBusy), a
// *ProtocolError for a malformed handshake, or the I/O error. After Close,
// every Accept is refused with ErrBusy ("server shutting down").
func (t *Table) Accept(ctx context.Context, conn wire.Conn) (s *Stream, isNew bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	release := guardConn(ctx, conn)
	s, isNew, err = t.handshake(conn, release)
	if err != nil {
		if !release() && ctx.Err() != nil {
			err = fmt.Errorf("%w (handshake: %w)", err, context.Cause(ctx))
		}
		conn.Close()
		return nil, false, err
	}
	return s, isNew, nil
}

// refuse writes a refusal (best effort) and returns it as an error.
func (t *Table) refuse(conn wire.Conn, id uuid.UUID, m *refuseMsg) error {
	_ = writeControl(conn, m)
	return refusedError(id, m)
}

func (t *Table) handshake(conn wire.Conn, release func() bool) (*Stream, bool, error) {
	m, err := readControl(conn, uuid.Nil, "read Open or Resume")
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			_ = writeControl(conn, &refuseMsg{code: RefuseProtocol, message: trimText(pe.Error())})
		}
		return nil, false, err
	}
	switch m := m.(type) {
	case *openMsg:
		return t.open(conn, m, release)
	case *resumeMsg:
		s, err := t.resume(conn, m, release)
		return s, false, err
	}
	err = unexpected(uuid.Nil, "read Open or Resume", m)
	_ = writeControl(conn, &refuseMsg{code: RefuseProtocol, message: trimText(err.Error())})
	return nil, false, err
}

func trimText(s string) string {
	if len(s) > wire.MaxTextLen {
		s = s[:wire.MaxTextLen]
	}
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// admit checks that the table takes one more session.
func (t *Table) admit() *refuseMsg {
	if t.closed {
		return &refuseMsg{code: RefuseBusy, message: "server shutting down", retryable: true}
	}
	if len(t.sessions) >= t.cfg.MaxSessions {
		return &refuseMsg{code: RefuseBusy, message: fmt.Sprintf("server holds its maximum of %d sessions", t.cfg.MaxSessions), retryable: true}
	}
	return nil
}

func (t *Table) open(conn wire.Conn, m *openMsg, release func() bool) (*Stream, bool, error) {
	t.mu.Lock()
	rm := t.admit()
	t.mu.Unlock()
	if rm != nil {
		return nil, false, t.refuse(conn, uuid.Nil, rm)
	}
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("resume: open: %w", err)
	}
	id, err := uuid.NewRandom()
	if err != nil {
		return nil, false, fmt.Errorf("resume: open: session id: %w", err)
	}
	am := &acceptMsg{id: id, replayBuffer: uint64(t.cfg.ReplayBuffer), maxMessage: uint32(t.cfg.MaxMessage)}
	copy(am.key[:], priv.PublicKey().Bytes())
	secret, err := deriveSecret(priv, m.key[:], id, m.key[:], am.key[:])
	if err != nil {
		err = &ProtocolError{Op: "handshake: derive secret", Err: err}
		return nil, false, t.refuse(conn, uuid.Nil, &refuseMsg{code: RefuseProtocol, message: trimText(err.Error())})
	}
	s := newStream(t.cfg, roleServer, id, secret)
	s.tbl = t

	t.mu.Lock()
	if rm := t.admit(); rm != nil {
		t.mu.Unlock()
		return nil, false, t.refuse(conn, uuid.Nil, rm)
	}
	t.sessions[id] = s
	t.mu.Unlock()

	err = writeControl(conn, am)
	if err == nil && !release() {
		err = errors.New("resume: open: handshake timed out")
	}
	if err == nil {
		err = s.install(conn, 0, m.replayBuffer, m.maxMessage)
	}
	if err != nil {
		t.forget(s) // the client never got the session
		s.end(ErrClosed, nil, nil)
		return nil, false, err
	}
	s.log.Debug("resume: session created")
	return s, true, nil
}

func (t *Table) resume(conn wire.Conn, m *resumeMsg, release func() bool) (*Stream, error) {
	id := m.id
	t.mu.Lock()
	s := t.sessions[id]
	tb, buried := t.tombstone(id)
	t.mu.Unlock()
	if s == nil && !buried {
		return nil, t.refuse(conn, id, &refuseMsg{code: RefuseUnknown, message: "no session " + id.String()})
	}
	secret := tb.secret
	if s != nil {
		secret = s.secret
	}
	sn := nonce()
	if err := writeControl(conn, &challengeMsg{nonce: sn, proof: proof(secret, labelServerProof, id, m.nonce, sn)}); err != nil {
		return nil, fmt.Errorf("resume: handshake: write Challenge: %w", err)
	}
	pm, err := readControl(conn, id, "read Proof")
	if err != nil {
		return nil, err
	}
	p, ok := pm.(*proofMsg)
	if !ok {
		err := unexpected(id, "read Proof", pm)
		return nil, t.refuse(conn, id, &refuseMsg{code: RefuseProtocol, message: trimText(err.Error())})
	}
	want := proof(secret, labelClientProof, id, m.nonce, sn)
	if !hmac.Equal(want[:], p.proof[:]) {
		t.log.Warn("resume: refused a resume with a wrong proof of the session secret (forged or corrupted)", "session", id.String())
		return nil, t.refuse(conn, id, &refuseMsg{code: RefuseAuth, message: "wrong proof of the session secret"})
	}
	if s == nil {
		return nil, t.refuse(conn, id, &refuseMsg{code: tb.code, delivered: tb.delivered, message: tombText(tb)})
	}

	s.attachMu.Lock()
	defer s.attachMu.Unlock()
	s.detach() // the client proved the secret: its old connection is done for
	s.mu.Lock()
	ended, recvd, acked, sent := s.err, s.recvd, s.acked, s.sent
	s.mu.Unlock()
	if ended != nil {
		code := RefuseClosed
		var exp *ExpiredError
		if errors.As(ended, &exp) {
			code = RefuseExpired
		}
		return nil, t.refuse(conn, id, &refuseMsg{code: code, delivered: recvd, message: tombText(tomb{code: code, delivered: recvd})})
	}
	switch {
	case p.received < acked:
		lost := &LostError{SessionID: id, Reported: p.received, Acked: acked, Sent: sent}
		s.end(lost, nil, nil)
		return nil, t.refuse(conn, id, &refuseMsg{code: RefuseLost, message: trimText(lost.Error())})
	case p.received > sent:
		err := &ProtocolError{SessionID: id, Op: "handshake: read Proof",
			Err: fmt.Errorf("the client reports receiving message %d, but only %d were sent", p.received, sent)}
		return nil, t.refuse(conn, id, &refuseMsg{code: RefuseProtocol, message: trimText(err.Error())})
	}
	am := &acceptMsg{id: id, received: recvd, replayBuffer: uint64(t.cfg.ReplayBuffer), maxMessage: uint32(t.cfg.MaxMessage)}
	if err := writeControl(conn, am); err != nil {
		return nil, fmt.Errorf("resume: handshake: write Accept: %w", err)
	}
	if !release() {
		return nil, errors.New("resume: handshake timed out")
	}
	if err := s.install(conn, p.received, p.replayBuffer, p.maxMessage); err != nil {
		return nil, err
	}
	return s, nil
}

func tombText(tb tomb) string {
	if tb.code == RefuseExpired {
		return fmt.Sprintf("session expired; the server received messages up to %d", tb.delivered)
	}
	return fmt.Sprintf("session closed; the server received messages up to %d", tb.delivered)
}

// tombstone returns the tombstone of id, dropping stale ones. t.mu must be
// held.
func (t *Table) tombstone(id uuid.UUID) (tomb, bool) {
	t.pruneTombs(time.Now())
	tb, ok := t.tombs[id]
	return tb, ok
}

func (t *Table) pruneTombs(now time.Time) {
	for t.tombq.len() > 0 {
		id := *t.tombq.at(0)
		tb, ok := t.tombs[id]
		if ok && t.tombq.len() <= t.cfg.MaxTombstones && now.Sub(tb.at) < t.cfg.TombstoneTTL {
			return
		}
		t.tombq.pop()
		delete(t.tombs, id)
	}
}

// remove takes an ended session out of the table and leaves a tombstone.
func (t *Table) remove(s *Stream, code RefuseCode, delivered uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sessions[s.id] != s {
		return
	}
	delete(t.sessions, s.id)
	if t.closed || t.cfg.TombstoneTTL <= 0 || t.cfg.MaxTombstones <= 0 {
		return
	}
	now := time.Now()
	t.tombs[s.id] = tomb{secret: s.secret, code: code, delivered: delivered, at: now}
	t.tombq.push(s.id)
	t.pruneTombs(now)
}

// forget takes a session out of the table without a tombstone.
func (t *Table) forget(s *Stream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sessions[s.id] == s {
		delete(t.sessions, s.id)
	}
}

// Lookup returns the live session with the given id.
func (t *Table) Lookup(id uuid.UUID) (*Stream, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.sessions[id]
	return s, ok
}

// Len returns the number of live sessions.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sessions)
}

// Close ends every session (telling attached clients that the server is
// going away) and refuses later Accepts. It returns once every session's
// goroutines have exited. It is idempotent and returns nil.
func (t *Table) Close() error {
	t.mu.Lock()
	t.closed = true
	all := make([]*Stream, 0, len(t.sessions))
	for _, s := range t.sessions {
		all = append(all, s)
	}
	t.tombs, t.tombq = map[uuid.UUID]tomb{}, ring[uuid.UUID]{}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() { // in parallel: each goodbye may wait for a congested writer
			defer wg.Done()
			s.end(ErrClosed, &closeMsg{code: CloseGoingAway, reason: "server shutting down"}, nil)
			s.wg.Wait()
		}()
	}
	wg.Wait()
	return nil
}
