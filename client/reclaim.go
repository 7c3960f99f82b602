package client

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/bearerkit/connect/session"
)

// Reclaiming sessions after a restart (Config.StateFile; docs/PROTOCOL.md,
// "Reclaim").

// ErrSessionExpired: a session the client presented after a restart had
// expired on the server (its client did not come back within the linger
// window). The *ReclaimError says what was last delivered.
var ErrSessionExpired = errors.New("the session expired")

// ReclaimResult is what became of one session the state file held when the
// client started.
type ReclaimResult struct {
	// ID and Service name the session.
	ID, Service string
	// Session is the restored session, nil if it was not restored.
	Session *Session
	// Err says why it was not restored: a *ReclaimError (errors.Is
	// ErrSessionEnded, and ErrSessionExpired when it expired), or the
	// failure to set the restored session up (its service file).
	Err error
}

// ReclaimError says why a session the client presented after a restart
// was not restored, and what the server last received of it.
type ReclaimError struct {
	Session, Service string
	// Status is the server's answer: expired, closed, unknown or denied.
	Status session.ReclaimStatus
	// Reason is the server's explanation (the reason the session ended).
	Reason string
	// Requests counts the requests of the session the server received,
	// and LastRequest is the id of the last one; zero when unknown.
	Requests, LastRequest uint64
	// Ended is when the session ended; zero when unknown.
	Ended time.Time
}

func (e *ReclaimError) Error() string {
	s := fmt.Sprintf("session %s", e.Session)
	if e.Service != "" {
		s += " with " + e.Service
	}
	s += " not restored: " + e.Status.String()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Status == session.ReclaimExpired || e.Status == session.ReclaimClosed {
		s += fmt.Sprintf(" (the server had received %d requests of it, the last #%d", e.Requests, e.LastRequest)
		if !e.Ended.IsZero() {
			s += "; ended " + e.Ended.UTC().Format(time.RFC3339)
		}
		s += ")"
	}
	return s
}

// Is matches ErrSessionEnded, and ErrSessionExpired when the session
// expired.
func (e *ReclaimError) Is(target error) bool {
	return target == ErrSessionEnded || target == ErrSessionExpired && e.Status == session.ReclaimExpired
}

// Reclaimed returns what became of each session the state file held when
// Dial started, by session id: restored (Session set) or not (Err says
// why). Empty without Config.StateFile or when the file held none.
func (c *Client) Reclaimed() []ReclaimResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ReclaimResult(nil), c.reclaimed...)
}

// Sessions returns the client's open sessions, by id: those started with
// StartSession and those restored after a restart.
func (c *Client) Sessions() []*Session {
	c.mu.Lock()
	sl := c.sl
	c.mu.Unlock()
	if sl == nil {
		return nil
	}
	sl.mu.Lock()
	out := make([]*Session, 0, len(sl.sessions))
	for _, s := range sl.sessions {
		out = append(out, s)
	}
	sl.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// reclaim presents the state file's sessions on a new stream (always, even
// none: the server then ends every session of this client id that the
// client no longer holds), sets up the restored ones, and rewrites the file
// with them.
func (c *Client) reclaim(ctx context.Context, cs *clientStream) error {
	stored := c.store.list()
	entries := make([]session.ReclaimEntry, len(stored))
	for i, s := range stored {
		entries[i] = session.ReclaimEntry{Session: s.ID, Secret: s.Secret}
	}
	const op = "reclaim sessions"
	r, err := cs.sl.roundTrip(ctx, op, func(id uint64) session.Message { return &session.Reclaim{ID: id, Sessions: entries} }, nil)
	if err != nil {
		return err
	}
	rm, ok := r.(*session.Reclaimed)
	if !ok {
		return unexpected(op, r)
	}
	if len(rm.Results) != len(entries) {
		return &Error{Op: op, Code: session.CodeInternal, Message: fmt.Sprintf("the server answered %d results for %d sessions", len(rm.Results), len(entries))}
	}
	secrets := make(map[string][]byte, len(stored))
	for _, s := range stored {
		secrets[s.ID] = s.Secret
	}
	var results []ReclaimResult
	var keep []storedSession
	for _, res := range rm.Results {
		rr := ReclaimResult{ID: res.Session, Service: res.Service}
		if res.Status != session.ReclaimRestored {
			rr.Err = &ReclaimError{Session: res.Session, Service: res.Service, Status: res.Status, Reason: res.Reason,
				Requests: res.Requests, LastRequest: res.LastRequest, Ended: unixMilli(res.EndedUnixMilli)}
			c.log.Info("session not restored", "session", res.Session, "error", rr.Err)
			results = append(results, rr)
			continue
		}
		s, err := c.restore(ctx, cs.sl, res)
		if err != nil {
			rr.Err = err
			c.log.Warn("restored session unusable; closing it", "session", res.Session, "error", err)
			cctx, cancel := context.WithTimeout(ctx, closeTimeout)
			cs.sl.roundTrip(cctx, "close session "+res.Session, func(id uint64) session.Message {
				return &session.CloseSession{ID: id, Session: res.Session}
			}, nil)
			cancel()
		} else {
			rr.Session = s
			s.setLinkKey(secrets[s.ID]) // unreliable.go
			keep = append(keep, storedSession{ID: s.ID, Service: s.service, Secret: secrets[s.ID]})
		}
		results = append(results, rr)
	}
	c.store.replace(keep)
	sort.Slice(results, func(i, j int) bool { return results[i].ID < results[j].ID })
	c.mu.Lock()
	if c.reclaimed == nil {
		c.reclaimed = results
	}
	c.mu.Unlock()
	c.log.Info("sessions reclaimed", "presented", len(entries), "restored", len(keep))
	return nil
}

// restore makes the Session of a session the server restored.
func (c *Client) restore(ctx context.Context, sl *sessLink, res session.ReclaimResult) (*Session, error) {
	d, err := sl.describe(ctx, res.Service)
	if err != nil {
		return nil, err
	}
	st := &session.SessionStarted{Session: res.Session, Routing: res.Routing}
	doc, err := checkRouting(st, res.Service)
	if err != nil {
		return nil, &Error{Op: "restore session " + res.Session, Code: session.CodeServiceFault, Message: err.Error(), Err: err}
	}
	s := newSession(c, sl, res.Session, res.Service, d.desc, res.Routing, doc)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.err != nil {
		return nil, &lostError{op: "restore session " + res.Session, cause: sl.err}
	}
	sl.sessions[s.ID] = s
	return s, nil
}

func unixMilli(ms uint64) time.Time {
	if ms == 0 || ms > 1<<62 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}
