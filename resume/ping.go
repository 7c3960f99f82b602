package resume

import (
	"context"
	"slices"
	"time"

	"github.com/bearerkit/connect/wire"
)

// pingBit marks the wire Ping ids of explicit round-trip measurements
// (Stream.Ping), so that they never match a keepalive's or a Flush's.
const pingBit = 1 << 63

// pingWait is one Ping call waiting for its Pong.
type pingWait struct {
	done chan struct{} // closed when the Pong arrived or the stream ended
	sent time.Time     // when the Ping was last written
	rtt  time.Duration // set before done is closed, if answered
}

// Ping measures one round trip over the attached connection: it writes a
// wire Ping ahead of any queued message (behind at most the frame being
// written) and waits for the peer's Pong. With no connection attached it
// waits for one; when the connection carrying the Ping is lost, the Ping is
// written again on the next one, and the round trip is measured from that
// last write. It returns when the Pong arrives, ctx is done (ctx.Err()) or
// the stream ends (its error). Either side may call it; the peer answers
// every Ping.
func (s *Stream) Ping(ctx context.Context) (time.Duration, error) {
	w := &pingWait{done: make(chan struct{})}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return 0, err
	}
	if s.pings == nil {
		s.pings = map[uint64]*pingWait{}
	}
	s.pingNext++
	id := pingBit | s.pingNext
	s.pings[id] = w
	s.pingOut = append(s.pingOut, id)
	l := s.cur
	s.mu.Unlock()
	if l != nil {
		l.kickWriter()
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pings, id) // a Pong that comes later is ignored
		s.mu.Unlock()
		return 0, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.rtt > 0 {
		return w.rtt, nil
	}
	return 0, s.err
}

// nextPing returns the frame of the next explicit Ping to write, and notes
// when it was written. s.mu must be held; s.pingOut is not empty.
func (s *Stream) nextPing(now time.Time) wire.Frame {
	id := s.pingOut[0]
	s.pingOut = s.pingOut[1:]
	if w := s.pings[id]; w != nil {
		w.sent = now
	}
	return wire.MessageFrame(&wire.Ping{ID: id, SentUnixNano: now.UnixNano()})
}

// onPong completes the Ping call a Pong answers and every earlier one
// written on the same connection: explicit Pings are written in increasing
// id order, the peer reads them in order and, when several arrive before
// it can answer, answers only the latest.
func (s *Stream) onPong(id uint64) {
	if id&pingBit == 0 {
		return // a keepalive's or a Flush's: answered by the acknowledgement
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for pid, w := range s.pings {
		if pid > id || w.sent.IsZero() {
			continue // later, or not written on this connection yet
		}
		delete(s.pings, pid)
		w.rtt = max(now.Sub(w.sent), time.Nanosecond)
		close(w.done)
	}
}

// requeuePings queues the Pings still waiting for a Pong to be written on a
// newly attached connection, in id order. s.mu must be held.
func (s *Stream) requeuePings() {
	s.pingOut = s.pingOut[:0]
	for id, w := range s.pings {
		w.sent = time.Time{} // measured from its write on the new connection
		s.pingOut = append(s.pingOut, id)
	}
	slices.Sort(s.pingOut)
}

// failPings releases every waiting Ping when the stream ends. s.mu must be
// held.
func (s *Stream) failPings() {
	for id, w := range s.pings {
		delete(s.pings, id)
		close(w.done)
	}
	s.pingOut = nil
}
