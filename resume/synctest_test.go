package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bearerkit/connect/wire"
)

// These tests run in a testing/synctest bubble over in-memory pipes: time is
// virtual, so timers (acknowledgements, keepalives, dead connections,
// backoff, linger) are tested exactly, without sleeping.

// openPipe opens a session over n and returns both sides.
func openPipe(t *testing.T, n *pipeNet, cfg *Config) (client, server *Stream) {
	t.Helper()
	c, err := Open(context.Background(), n.dial, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	synctest.Wait()
	return c, n.serverStream(t)
}

// vctx bounds a blocking call in virtual time, so that a test that would
// wait forever fails instead (keepalive timers keep a bubble from ever
// deadlocking).
func vctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustSend(t *testing.T, s *Stream, msgs ...[]byte) {
	t.Helper()
	ctx := vctx(t)
	for _, m := range msgs {
		if err := s.Send(ctx, m); err != nil {
			t.Fatalf("%s send: %v", s.role, err)
		}
	}
}

func mustRecv(t *testing.T, s *Stream, want ...[]byte) {
	t.Helper()
	ctx := vctx(t)
	for i, w := range want {
		got, err := s.Recv(ctx)
		if err != nil {
			t.Fatalf("%s recv %d: %v", s.role, i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("%s recv %d: got %q, want %q", s.role, i, trunc(got), trunc(w))
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

func numbered(prefix string, from, to int) [][]byte {
	var ms [][]byte
	for i := from; i <= to; i++ {
		ms = append(ms, fmt.Appendf(nil, "%s %d", prefix, i))
	}
	return ms
}

// TestAckTiming: a receiver acknowledges a lone message after exactly
// AckInterval, and at once when half the sender's replay buffer is
// unacknowledged.
func TestAckTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, nil)
		mustSend(t, c, []byte("x"))
		synctest.Wait()
		if got := s.Stats().Received; got != 1 {
			t.Fatalf("server received %d", got)
		}
		if got := c.Stats().Acked; got != 0 {
			t.Fatalf("acknowledged at once: %d", got)
		}
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		if got := c.Stats().Acked; got != 0 {
			t.Fatalf("acknowledged before AckInterval: %d", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := c.Stats().Acked; got != 1 {
			t.Fatalf("not acknowledged after AckInterval: %d", got)
		}

		// Half the client's 4 MiB replay buffer, 64 KiB of cost at a time.
		m := make([]byte, 64<<10-MessageOverhead)
		for range 31 {
			mustSend(t, c, m)
		}
		synctest.Wait()
		if st := c.Stats(); st.Acked != 1 || st.Buffered != 31*64<<10 {
			t.Fatalf("below half the buffer: %+v", st)
		}
		mustSend(t, c, m)
		synctest.Wait() // no time passes
		if st := c.Stats(); st.Acked != 33 || st.Buffered != 0 {
			t.Fatalf("at half the buffer, not acknowledged at once: %+v", st)
		}
	})
}

// TestBackpressure: when acknowledgements do not come back, a full replay
// buffer blocks Send — for as long as it takes, dropping nothing — and Send
// resumes when they arrive.
func TestBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ReplayBuffer = 64 << 10
		cfg.MaxMessage = 1000
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, cfg)
		n.relay().toClient.hold() // the server's acknowledgements stay in the network

		msgs := numbered("message", 1, 100)
		for i := range msgs {
			msgs[i] = append(msgs[i], make([]byte, 1000-len(msgs[i]))...)
		}
		var sent atomic.Int64
		done := make(chan error, 1)
		go func() {
			for _, m := range msgs {
				if err := c.Send(context.Background(), m); err != nil {
					done <- err
					return
				}
				sent.Add(1)
			}
			done <- nil
		}()
		fit := int64(cfg.ReplayBuffer / (1000 + MessageOverhead))
		synctest.Wait()
		if got := sent.Load(); got != fit {
			t.Fatalf("%d Sends returned with a replay buffer for %d messages", got, fit)
		}
		if st := c.Stats(); st.Buffered > cfg.ReplayBuffer || st.Buffered != int(fit)*(1000+MessageOverhead) {
			t.Fatalf("client %+v", st)
		}
		// Later (within DeadTimeout, after which the client would resume
		// on a new connection and learn the acknowledgements there) the
		// writer is still blocked, and nothing was lost.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := sent.Load(); got != fit {
			t.Fatalf("after 10 s: %d Sends returned", got)
		}
		if got := s.Stats().Received; got != uint64(fit) {
			t.Fatalf("server received %d, want %d", got, fit)
		}
		n.relay().toClient.release()
		synctest.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mustRecv(t, s, msgs...)
		if err := c.Flush(vctx(t)); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.Attaches != 1 || st.Buffered != 0 {
			t.Fatalf("client %+v", st)
		}
	})
}

// TestAckPriority: an acknowledgement due while the writer has a backlog of
// messages goes out ahead of the backlog, not behind it.
func TestAckPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, nil)
		r := n.relay()
		r.toServer.hold()
		before := len(r.toServer.headers())

		backlog := numbered("bulk", 1, 40)
		for i := range backlog {
			backlog[i] = append(backlog[i], make([]byte, 64<<10)...)
		}
		mustSend(t, c, backlog...) // all fit in the replay buffer; the writer is stuck on the network
		mustSend(t, s, []byte("to be acknowledged"))
		mustRecv(t, c, []byte("to be acknowledged"))
		time.Sleep(2 * time.Second) // the acknowledgement is due
		r.toServer.release()
		mustRecv(t, s, backlog...)

		hs := r.toServer.headers()[before:]
		data := 0
		for _, h := range hs {
			if h.Flags == flagControl|uint16(kindAck) {
				break
			}
			if h.Type == wire.TypeData && h.Flags == 0 {
				data++
			}
		}
		if data == len(hs) || data > 2 {
			t.Fatalf("the acknowledgement went out after %d of the %d messages of the backlog", data, len(backlog))
		}
		synctest.Wait()
		if got := s.Stats().Acked; got != 1 {
			t.Fatalf("server's message acknowledged through %d", got)
		}
	})
}

// TestExpiry: a server session whose client does not come back within the
// linger window expires; the client, when it finally reaches the server, is
// told "expired" with the last message the server received, and keeps its
// undelivered messages. Later still, the tombstone is gone: "unknown".
func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs lockedBuffer
		scfg := DefaultConfig()
		scfg.Logger = newTestLogger(&logs)
		ccfg := DefaultConfig()
		ccfg.Linger = time.Hour // the client keeps trying longer than the server waits
		n := newPipeNet(t, scfg)
		c, s := openPipe(t, n, ccfg)
		msgs := numbered("m", 1, 5)
		mustSend(t, c, msgs[:3]...)
		mustRecv(t, s, msgs[:3]...)
		synctest.Wait()

		n.setDown(errors.New("network unreachable"))
		n.relay().cut()
		synctest.Wait()
		mustSend(t, c, msgs[3:]...) // kept for replay
		brokeAt := time.Now()

		time.Sleep(scfg.Linger - time.Millisecond)
		synctest.Wait()
		if s.Err() != nil || n.tbl.Len() != 1 {
			t.Fatalf("session ended before the linger window: %v", s.Err())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		var exp *ExpiredError
		if _, err := s.Recv(vctx(t)); !errors.As(err, &exp) || !exp.ByServer {
			t.Fatalf("server Recv after the linger window: %v", err)
		}
		if n.tbl.Len() != 0 {
			t.Fatal("expired session still in the table")
		}
		if time.Since(brokeAt) != scfg.Linger {
			t.Fatalf("expired %v after the break, want %v", time.Since(brokeAt), scfg.Linger)
		}
		if !bytes.Contains(logs.Bytes(), []byte("session expired")) {
			t.Fatalf("no log of the expiry:\n%s", logs.Bytes())
		}
		if c.Err() != nil {
			t.Fatalf("client gave up: %v", c.Err())
		}

		n.setDown(nil)
		time.Sleep(ccfg.RetryMax) // the next attempt reaches the server
		synctest.Wait()
		err := c.Err()
		if !errors.As(err, &exp) || !exp.ByServer || exp.Delivered != 3 || exp.Sent != 5 || exp.SessionID != c.ID() {
			t.Fatalf("client ended with %v, want expired, delivered 3 of 5", err)
		}
		if _, err := c.Recv(vctx(t)); !errors.Is(err, ErrExpired) {
			t.Fatalf("client Recv: %v", err)
		}
		if err := c.Send(context.Background(), nil); !errors.Is(err, ErrExpired) {
			t.Fatalf("client Send: %v", err)
		}
		if u := c.Undelivered(); len(u) != 2 || !bytes.Equal(u[0], msgs[3]) || !bytes.Equal(u[1], msgs[4]) {
			t.Fatalf("undelivered %q, want messages 4 and 5", u)
		}

		// Another resume of the same session, later: still "expired"...
		late := func() error {
			ghost := newStream(*ccfg, roleClient, c.ID(), c.secret)
			ghost.sent, ghost.acked = 5, 3
			ghost.out.push(msg{}) // messages 4 and 5
			ghost.out.push(msg{})
			conn, err := n.dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			return ghost.clientResume(conn, func() bool { return true })
		}
		if err := late(); !errors.As(err, &exp) || exp.Delivered != 3 {
			t.Fatalf("late resume: %v", err)
		}
		// ...until the tombstone is dropped: then "unknown", still explicit.
		time.Sleep(scfg.TombstoneTTL)
		if err := late(); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("resume after the tombstone TTL: %v", err)
		}
	})
}

// TestClientGivesUp: a client that cannot reach the server for its whole
// linger window ends its stream with an *ExpiredError naming the messages
// not confirmed, and backs off as configured in the meantime.
func TestClientGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ccfg := DefaultConfig()
		ccfg.Linger = time.Minute
		n := newPipeNet(t, nil)
		var mu sync.Mutex
		var attempts []time.Duration
		var brokeAt time.Time
		dial := func(ctx context.Context) (wire.Conn, error) {
			mu.Lock()
			if !brokeAt.IsZero() {
				attempts = append(attempts, time.Since(brokeAt))
			}
			mu.Unlock()
			return n.dial(ctx)
		}
		c, err := Open(context.Background(), dial, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		synctest.Wait()
		s := n.serverStream(t)
		mustSend(t, c, []byte("one"))
		mustRecv(t, s, []byte("one"))
		if err := c.Flush(vctx(t)); err != nil {
			t.Fatal(err)
		}
		mustSend(t, c, []byte("two"))
		n.setDown(errors.New("no route to host"))
		mu.Lock()
		brokeAt = time.Now()
		mu.Unlock()
		n.relay().cut()

		time.Sleep(ccfg.Linger + time.Second)
		synctest.Wait()
		var exp *ExpiredError
		if err := c.Err(); !errors.As(err, &exp) || exp.ByServer || exp.Delivered != 1 || exp.Sent != 2 {
			t.Fatalf("client ended with %v, want expired (given up), 1 of 2 confirmed", err)
		}
		if u := c.Undelivered(); len(u) != 1 || string(u[0]) != "two" {
			t.Fatalf("undelivered %q", u)
		}
		// The schedule: RetryFast attempts at once, then RetryMin doubling
		// up to RetryMax, each jittered down by at most half; the last
		// attempt within the linger window.
		mu.Lock()
		defer mu.Unlock()
		for i := range ccfg.RetryFast {
			if attempts[i] != 0 {
				t.Fatalf("fast attempt %d after %v", i, attempts[i])
			}
		}
		want := ccfg.RetryMin
		for i := ccfg.RetryFast; i < len(attempts); i++ {
			gap := attempts[i] - attempts[i-1]
			if last := i == len(attempts)-1; (gap < want/2 || gap > want) && !(last && attempts[i] == ccfg.Linger) {
				t.Fatalf("attempt %d: %v after the previous one, want between %v and %v (attempts %v)", i, gap, want/2, want, attempts)
			}
			want = min(2*want, ccfg.RetryMax)
		}
		if attempts[len(attempts)-1] > ccfg.Linger {
			t.Fatalf("attempt after the linger window: %v", attempts)
		}
	})
}

// TestDeadConnection: a black-holed connection (nothing arrives, nothing is
// closed) is declared dead after DeadTimeout — not before — and the session
// resumes on a new one, losing nothing of what vanished in the hole. The
// server, slower to notice, still holds the old connection when the client
// comes back: it drops it once the client has proved the secret.
func TestDeadConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scfg := DefaultConfig()
		scfg.DeadTimeout = time.Hour
		n := newPipeNet(t, scfg)
		c, s := openPipe(t, n, nil)
		mustSend(t, c, []byte("before"))
		mustRecv(t, s, []byte("before"))
		n.relay().blackhole()
		up, down := numbered("up", 1, 10), numbered("down", 1, 10)
		mustSend(t, c, up...)
		mustSend(t, s, down...)
		time.Sleep(DefaultConfig().DeadTimeout - time.Millisecond)
		synctest.Wait()
		if st := c.Stats(); st.Attaches != 1 || !st.Connected {
			t.Fatalf("client gave up on the connection early: %+v", st)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		mustRecv(t, s, up...)
		mustRecv(t, c, down...)
		if cs, ss := c.Stats(), s.Stats(); cs.Attaches != 2 || ss.Attaches != 2 || n.dials() != 2 {
			t.Fatalf("client %+v, server %+v, %d dials", cs, ss, n.dials())
		}
	})
}

// TestSlowReaderNoFalseDead: a receiver that does not read for much longer
// than DeadTimeout blocks the sender (its receive queue, then the network,
// then the sender's replay buffer fill up) but neither side takes the
// stalled connection for a dead one.
func TestSlowReaderNoFalseDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ReplayBuffer = 256 << 10
		cfg.ReceiveBuffer = 256 << 10
		cfg.MaxMessage = 64 << 10
		n := newPipeNet(t, cfg)
		c, s := openPipe(t, n, cfg)
		msgs := numbered("m", 1, 200)
		for i := range msgs {
			msgs[i] = append(msgs[i], make([]byte, 8<<10)...)
		}
		var sent atomic.Int64
		go func() {
			for _, m := range msgs {
				if c.Send(context.Background(), m) != nil {
					return
				}
				sent.Add(1)
			}
		}()
		time.Sleep(8 * cfg.DeadTimeout)
		synctest.Wait()
		if got := sent.Load(); got == int64(len(msgs)) || got == 0 {
			t.Fatalf("%d of %d Sends returned: the sender was not held back", got, len(msgs))
		}
		if cs, ss := c.Stats(), s.Stats(); cs.Attaches != 1 || ss.Attaches != 1 || !cs.Connected || !ss.Connected {
			t.Fatalf("a stalled connection was taken for dead: client %+v, server %+v", cs, ss)
		}
		mustRecv(t, s, msgs...)
		if cs := c.Stats(); cs.Attaches != 1 {
			t.Fatalf("client %+v", cs)
		}
	})
}

// TestResumeRaces breaks the resume itself, at every step, several times in
// a row: before the Challenge, before the Proof, before the Accept (the
// server has taken the client's "last received" as an acknowledgement, the
// client does not know it was accepted), and during the replay of each
// direction. Every message still arrives exactly once and in order.
func TestResumeRaces(t *testing.T) {
	for cutAt := 1; cutAt <= 8; cutAt++ {
		t.Run(fmt.Sprintf("cut after %d frames", cutAt), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := newPipeNet(t, nil)
				c, s := openPipe(t, n, nil)
				mustSend(t, c, []byte("hello"))
				mustRecv(t, s, []byte("hello"))
				r := n.relay()
				r.toServer.hold()
				r.toClient.hold()
				up, down := numbered("up", 1, 20), numbered("down", 1, 20)
				mustSend(t, c, up...)
				mustSend(t, s, down...)
				synctest.Wait()
				// Three consecutive resumes break at the same point, the
				// fourth succeeds.
				n.cutNext(cutAt, cutAt, cutAt)
				r.cut()
				mustRecv(t, s, up...)
				mustRecv(t, c, down...)
				more := numbered("more", 1, 5)
				mustSend(t, c, more...)
				mustRecv(t, s, more...)
				for _, st := range []*Stream{c, s} {
					if err := st.Flush(vctx(t)); err != nil {
						t.Fatal(err)
					}
					if len(st.Undelivered()) != 0 || st.Err() != nil {
						t.Fatalf("%s: %+v, %v", st.role, st.Stats(), st.Err())
					}
				}
				if n.dials() != 5 {
					t.Fatalf("%d dials, want 5", n.dials())
				}
			})
		})
	}
}

// TestCloseUnblocksAndStops: Close wakes blocked Send and Recv calls with
// ErrClosed, is idempotent and safe from several goroutines, and leaves no
// goroutine behind (synctest.Test fails if one is left in the bubble).
func TestCloseUnblocksAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ReplayBuffer = 64 << 10
		cfg.MaxMessage = 32 << 10
		n := newPipeNet(t, cfg)
		c, s := openPipe(t, n, cfg)
		n.relay().toClient.hold() // no acknowledgements: Send will block
		errs := make(chan error, 2)
		go func() {
			for {
				if err := c.Send(context.Background(), make([]byte, 1000)); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			_, err := c.Recv(context.Background())
			errs <- err
		}()
		synctest.Wait()
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
		wg.Wait()
		for range 2 {
			if err := <-errs; !errors.Is(err, ErrClosed) {
				t.Fatalf("blocked call returned %v, want ErrClosed", err)
			}
		}
		n.relay().toClient.release()
		s.Close()
		s.Close()
		if err := n.tbl.Close(); err != nil {
			t.Fatal(err)
		}
		n.tbl.Close()
	})
}

// TestTableLimits: beyond MaxSessions, Open is refused with ErrBusy
// (retryable); after Table.Close, too.
func TestTableLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scfg := DefaultConfig()
		scfg.MaxSessions = 2
		n := newPipeNet(t, scfg)
		for range 2 {
			c, err := Open(context.Background(), n.dial, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		_, err := Open(context.Background(), n.dial, nil)
		var re *RefusedError
		if !errors.As(err, &re) || !errors.Is(err, ErrBusy) || !re.Retryable {
			t.Fatalf("third Open: %v, want a retryable ErrBusy", err)
		}
		n.tbl.Close()
		if _, err := Open(context.Background(), n.dial, nil); !errors.Is(err, ErrBusy) {
			t.Fatalf("Open after Table.Close: %v", err)
		}
	})
}

// TestHandshakeTimeout: a client that connects and says nothing is dropped
// after HandshakeTimeout.
func TestHandshakeTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		conn, err := n.dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := conn.ReadFrame(); err != io.EOF {
			t.Fatalf("silent client: %v, want io.EOF", err)
		}
		if d := time.Since(start); d != DefaultConfig().HandshakeTimeout {
			t.Fatalf("dropped after %v", d)
		}
		synctest.Wait()
		if errs := n.acceptErrors(); len(errs) != 1 || !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Fatalf("Accept errors %v", errs)
		}
	})
}

// TestBackoffAfterProgress: a connection that moved messages resets the
// backoff, so a path broken again and again while data flows is redialed
// at once every time; connections that break before moving anything are
// backed off from after the fast retries (RetryFast).
func TestBackoffAfterProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, nil)
		for i := range 10 { // each connection carries a message, then breaks
			mustSend(t, s, fmt.Appendf(nil, "m%d", i))
			mustRecv(t, c, fmt.Appendf(nil, "m%d", i))
			before := n.dials()
			n.relay().cut()
			synctest.Wait() // no virtual time passes
			if got := n.dials(); got != before+1 {
				t.Fatalf("break %d after progress: %d redials without waiting, want 1", i+1, got-before)
			}
		}
		if st := c.Stats(); st.Attaches != 11 {
			t.Fatalf("attaches %d, want 11", st.Attaches)
		}
		// Now connections that carry nothing: the fast attempts
		// (RetryFast, counting the one that made the last connection)
		// run out, and the next redial waits.
		fast := 0
		for range DefaultConfig().RetryFast + 2 {
			before := n.dials()
			n.relay().cut()
			synctest.Wait()
			if n.dials() == before {
				break
			}
			fast++
		}
		if want := DefaultConfig().RetryFast - 1; fast != want {
			t.Fatalf("%d redials without waiting after breaks without progress, want RetryFast-1 = %d", fast, want)
		}
	})
}

// TestAbandon: a client that abandons its stream drops the connection
// without a goodbye; the server keeps its side for the linger window (as
// after a crash) and then expires it; the client's stream is over.
func TestAbandon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scfg := DefaultConfig()
		n := newPipeNet(t, scfg)
		c, s := openPipe(t, n, nil)
		mustSend(t, c, []byte("before"))
		mustRecv(t, s, []byte("before"))
		c.Abandon()
		c.Abandon() // idempotent
		if err := c.Send(vctx(t), []byte("after")); !errors.Is(err, ErrAbandoned) {
			t.Fatalf("Send after Abandon: %v", err)
		}
		synctest.Wait()
		if s.Err() != nil || n.tbl.Len() != 1 {
			t.Fatalf("the server's side ended at once: %v", s.Err())
		}
		if st := s.Stats(); st.Connected {
			t.Fatalf("the server's side still has a connection: %+v", st)
		}
		time.Sleep(scfg.Linger)
		synctest.Wait()
		var exp *ExpiredError
		if _, err := s.Recv(vctx(t)); !errors.As(err, &exp) {
			t.Fatalf("server Recv after the linger window: %v", err)
		}
		if c.Close() != nil || !errors.Is(c.Err(), ErrAbandoned) {
			t.Fatalf("the client's stream: %v", c.Err())
		}
	})
}
