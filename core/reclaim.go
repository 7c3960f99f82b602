package core

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/session"
)

// Reclaiming sessions after a client restart (docs/PROTOCOL.md, "Reclaim";
// docs/RESUME.md, "Client reboot").
//
// Every session started on a resume stream has a secret, handed to the
// client in SessionStarted. A client that keeps its sessions' ids and
// secrets on disk opens a new stream after a restart and sends a Reclaim
// listing them. The server then, for that client id:
//
//   - moves every listed session it still holds, whose secret matches,
//     onto the new stream (restored): its subscriptions and watches, and
//     the calls of the dead process, are dropped; the service keeps the
//     session;
//   - ends every other session of the client's other streams (the client
//     no longer has them), telling the services, and closes those streams;
//   - answers each listed session that it does not restore with why:
//     expired, closed, unknown, or denied (wrong secret, logged), and for
//     an ended session how many of its requests arrived and the id of the
//     last one — never silence.
//
// Ended sessions that could have been reclaimed leave a tombstone
// (bounded in number and time) so that a late reclaim learns how they
// ended.

// Reasons for sessions a reclaim ends.
const reasonNotReclaimed = "the client restarted without it (not reclaimed)"

// Tombstone bounds.
const (
	maxSessionTombs = 1 << 16
	sessionTombTTL  = 24 * time.Hour
)

// newSecret returns a fresh session reclaim secret.
func newSecret() []byte {
	b := make([]byte, session.SecretSize)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

// sessionTomb is what the server remembers of an ended reclaimable
// session.
type sessionTomb struct {
	clientID    uuid.UUID
	secret      []byte
	service     string
	status      session.ReclaimStatus // ReclaimExpired or ReclaimClosed
	reason      string
	requests    uint64
	lastRequest uint64
	ended       time.Time
}

// sessionTombs remembers ended sessions, oldest first out.
type sessionTombs struct {
	linger time.Duration // the streams' linger window, for the reason of an expiry

	mu    sync.Mutex
	m     map[string]sessionTomb
	order []string // session ids in burial order, from head
	head  int
}

// bury records how a reclaimable session ended.
func (t *sessionTombs) bury(s *clientSession, clientID uuid.UUID, reason string) {
	st := session.ReclaimClosed
	if reason == reasonExpired {
		st = session.ReclaimExpired
		reason = fmt.Sprintf("its client did not come back within the server's linger window (%s)", t.linger)
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]sessionTomb{}
	}
	if _, dup := t.m[s.id]; !dup {
		t.order = append(t.order, s.id)
	}
	t.m[s.id] = sessionTomb{clientID: clientID, secret: s.secret, service: s.hs.cfg.Name, status: st,
		reason: session.CutText(reason, session.MaxText), requests: s.requests.Load(), lastRequest: s.lastRequest.Load(), ended: now}
	t.prune(now)
}

// prune drops tombstones beyond the bounds; t.mu is held.
func (t *sessionTombs) prune(now time.Time) {
	for t.head < len(t.order) {
		id := t.order[t.head]
		tb, ok := t.m[id]
		if ok && len(t.m) <= maxSessionTombs && now.Sub(tb.ended) < sessionTombTTL {
			break
		}
		delete(t.m, id)
		t.order[t.head] = ""
		t.head++
	}
	if t.head > len(t.order)/2 && t.head > 64 {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

func (t *sessionTombs) find(id string) (sessionTomb, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(time.Now())
	tb, ok := t.m[id]
	return tb, ok
}

func secretEqual(a, b []byte) bool {
	return len(a) == session.SecretSize && subtle.ConstantTimeCompare(a, b) == 1
}

// reclaim answers a Reclaim (see the top of this file). It runs on the
// stream's reader goroutine: a client sends it first, before any other
// request, and waits for the answer.
func (cs *connSessions) reclaim(m *session.Reclaim) session.Message {
	if cs.stream == nil {
		return session.NewError(m.ID, session.CodeUnsupported, "reclaim needs a resume stream: sessions on a connection without resume (a datagram bearer) end with it")
	}
	srv := cs.s
	srv.reclaimMu.Lock() // one reclaim at a time: sessions move between layers
	defer srv.reclaimMu.Unlock()

	// The client's other streams, closed to new sessions, and their
	// sessions: the candidates.
	srv.mu.Lock()
	var others []*streamClient
	for sc := range srv.byClient[cs.clientID] {
		if sc != cs.stream {
			others = append(others, sc)
		}
	}
	srv.mu.Unlock()
	cand := map[string]*clientSession{}
	for _, o := range others {
		o.cs.mu.Lock()
		o.cs.closed = true
		for id, s := range o.cs.sessions {
			cand[id] = s
		}
		o.cs.mu.Unlock()
	}

	out := &session.Reclaimed{ID: m.ID, Results: make([]session.ReclaimResult, 0, len(m.Sessions))}
	restored := 0
	for _, e := range m.Sessions {
		r := session.ReclaimResult{Session: e.Session}
		s := cand[e.Session]
		if s == nil {
			cs.mu.Lock()
			s = cs.sessions[e.Session] // already on this stream (a repeated reclaim)
			cs.mu.Unlock()
		}
		switch {
		case s != nil && !secretEqual(s.secret, e.Secret):
			r.Status, r.Service, r.Reason = session.ReclaimDenied, s.hs.cfg.Name, "wrong session secret"
			cs.log.Warn("refused to reclaim a session: wrong secret (forged or corrupted state); it ends with the client's unclaimed sessions", "session", e.Session)
		case s != nil && (s.owner() == cs || cs.adopt(s)):
			delete(cand, e.Session)
			doc, err := serverRouting(s.id, s.hs.cfg.Name)
			if err != nil {
				r.Status, r.Reason = session.ReclaimClosed, "the server could not make its routing document: "+err.Error()
				cs.endSession(s, r.Reason, false)
				break
			}
			r.Status, r.Service, r.Routing = session.ReclaimRestored, s.hs.cfg.Name, doc
			restored++
		default:
			r = cs.tombResult(e)
		}
		out.Results = append(out.Results, r)
	}
	for _, s := range cand {
		s.owner().endSession(s, reasonNotReclaimed, false)
	}
	for _, o := range others {
		srv.wg.Add(1)
		go func() { // Close waits for the stream's goodbye: not on this reader
			defer srv.wg.Done()
			o.close(reasonNotReclaimed)
		}()
	}
	cs.log.Info("client reclaimed its sessions", "presented", len(m.Sessions), "restored", restored,
		"ended", len(cand), "old_streams", len(others))
	return out
}

// tombResult says why a presented session, not held any more, cannot be
// restored.
func (cs *connSessions) tombResult(e session.ReclaimEntry) session.ReclaimResult {
	r := session.ReclaimResult{Session: e.Session, Status: session.ReclaimUnknown,
		Reason: "no such session of this client (never started, or ended too long ago)"}
	tb, ok := cs.s.tombs.find(e.Session)
	if !ok || tb.clientID != cs.clientID {
		return r
	}
	if !secretEqual(tb.secret, e.Secret) {
		cs.log.Warn("refused to reclaim an ended session: wrong secret (forged or corrupted state)", "session", e.Session)
		r.Status, r.Service, r.Reason = session.ReclaimDenied, tb.service, "wrong session secret"
		return r
	}
	r.Status, r.Service, r.Reason = tb.status, tb.service, tb.reason
	r.Requests, r.LastRequest = tb.requests, tb.lastRequest
	r.EndedUnixMilli = uint64(tb.ended.UnixMilli())
	return r
}

// adopt moves s from the layer that carries it onto cs: its calls from the
// previous process are cancelled, its subscriptions and watches dropped.
// False if s ended meanwhile.
func (cs *connSessions) adopt(s *clientSession) bool {
	from := s.owner()
	from.mu.Lock()
	defer from.mu.Unlock()
	if from.sessions[s.id] != s {
		return false
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	if len(cs.sessions)+cs.opening >= maxSessionsPerConn {
		return false
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	cancel := s.cancel
	s.ctx, s.cancel = context.WithCancelCause(cs.ctx)
	s.cs = cs
	s.subs, s.watches = map[uint64]eventFilter{}, map[uint64]*watch{}
	s.queue, s.lost, s.dirty, s.closedNote = nil, 0, false, ""
	s.mu.Unlock()
	delete(from.sessions, s.id)
	cs.sessions[s.id] = s
	cancel(errors.New("the session moved to the client's new stream (reclaim)"))
	cs.log.Info("session restored onto the client's new stream", "service", s.hs.cfg.Name, "session", s.id,
		"from_stream", from.stream.id.String())
	return true
}
