package resume

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bearerkit/connect/wire"
)

// TestPing: an explicit Ping measures the round trip on the attached
// connection, goes out ahead of queued messages, survives the loss of the
// connection carrying it, and fails when the stream ends.
func TestPing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, nil)
		ctx := vctx(t)
		if rtt, err := c.Ping(ctx); err != nil || rtt <= 0 {
			t.Fatalf("client Ping: %v, %v", rtt, err)
		}
		if rtt, err := s.Ping(ctx); err != nil || rtt <= 0 {
			t.Fatalf("server Ping: %v, %v", rtt, err)
		}

		// The Pong is held in the network for 3 s: that is the round trip.
		r := n.relay()
		r.toClient.hold()
		type result struct {
			rtt time.Duration
			err error
		}
		res := make(chan result, 1)
		go func() { rtt, err := c.Ping(ctx); res <- result{rtt, err} }()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		r.toClient.release()
		if got := <-res; got.err != nil || got.rtt != 3*time.Second {
			t.Fatalf("held Pong: %v, %v", got.rtt, got.err)
		}

		// Ahead of a backlog: the Ping follows at most the frame the relay
		// holds and the one the writer is blocked writing (as
		// TestAckPriority).
		r.toServer.hold()
		synctest.Wait()
		before := len(r.toServer.headers())
		big := make([]byte, 64<<10)
		for range 20 {
			mustSend(t, c, big)
		}
		synctest.Wait()
		go func() { rtt, err := c.Ping(ctx); res <- result{rtt, err} }()
		synctest.Wait()
		r.toServer.release()
		if got := <-res; got.err != nil {
			t.Fatal(got.err)
		}
		hs := r.toServer.headers()[before:]
		at := -1
		for i, h := range hs {
			if h.Type == wire.TypePing {
				at = i
				break
			}
		}
		if at < 0 || at > 2 {
			t.Fatalf("Ping written as frame %d after the hold (want at most 2)", at)
		}
		for range 20 {
			mustRecv(t, s, big)
		}

		// The connection carrying the Ping is lost before the Pong: the
		// Ping goes out again on the next one.
		r = n.relay()
		r.toClient.hold()
		go func() { rtt, err := c.Ping(ctx); res <- result{rtt, err} }()
		synctest.Wait()
		r.cut()
		if got := <-res; got.err != nil || got.rtt <= 0 {
			t.Fatalf("Ping across a reconnection: %v, %v", got.rtt, got.err)
		}
		if st := c.Stats(); st.Attaches != 2 {
			t.Fatalf("client %+v", st)
		}

		// Waiting while detached, then the stream ends.
		n.setDown(errors.New("network down"))
		n.relay().cut()
		go func() { rtt, err := c.Ping(ctx); res <- result{rtt, err} }()
		synctest.Wait()
		c.Close()
		if got := <-res; !errors.Is(got.err, ErrClosed) {
			t.Fatalf("Ping when the stream ends: %v, %v", got.rtt, got.err)
		}
		if _, err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Ping after Close: %v", err)
		}

		// A cancelled Ping returns at once.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Ping(cctx); err == nil {
			t.Fatal("cancelled Ping succeeded")
		}
	})
}

type permanentErr struct{ msg string }

func (e *permanentErr) Error() string   { return e.msg }
func (e *permanentErr) Permanent() bool { return true }

// TestDialPermanent: a DialFunc error that says it is permanent ends the
// client stream at once; any other is retried.
func TestDialPermanent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, _ := openPipe(t, n, nil)
		n.setDown(errors.New("connection refused"))
		n.relay().cut()
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := c.Err(); err != nil {
			t.Fatalf("a transient dial error ended the stream: %v", err)
		}
		perm := &permanentErr{"registration rejected for good"}
		n.setDown(perm)
		time.Sleep(DefaultConfig().RetryMax)
		synctest.Wait()
		var pe *permanentErr
		if err := c.Err(); !errors.As(err, &pe) {
			t.Fatalf("stream error %v, want the permanent dial error", err)
		}
		select {
		case <-c.Done():
		default:
			t.Fatal("Done not closed")
		}
	})
}

// Concurrent Pings that reach the peer together are all answered: the peer
// keeps one Pong per kind (a flood of Pings holds no memory), and the Pong
// of the latest explicit Ping answers every earlier one.
func TestPingConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newPipeNet(t, nil)
		c, _ := openPipe(t, n, nil)
		ctx := vctx(t)
		r := n.relay()
		r.toServer.hold() // the Pings arrive together
		synctest.Wait()
		const callers = 20
		errs := make(chan error, callers)
		for range callers {
			go func() {
				rtt, err := c.Ping(ctx)
				if err == nil && rtt <= 0 {
					err = fmt.Errorf("rtt %v", rtt)
				}
				errs <- err
			}()
		}
		synctest.Wait()
		r.toServer.release()
		for range callers {
			if err := <-errs; err != nil {
				t.Fatalf("a concurrent Ping: %v", err)
			}
		}
	})
}
