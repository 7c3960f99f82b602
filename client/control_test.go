package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/resume"
)

// deadBearer is a pipeBearer whose new connections can be black holes
// from the start: a path that stays dead however often it is recreated.
type deadBearer struct {
	*pipeBearer
	dead atomic.Bool
}

func (b *deadBearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	c, err := b.pipeBearer.Dial(ctx, ep)
	if err == nil && b.dead.Load() {
		b.blackholeCurrent()
	}
	return c, err
}

// dialRestarts connects a client with the given restart limit to a fake
// server over b, recording the error of every state change.
func dialRestarts(t *testing.T, b *deadBearer, limit int) (*client.Client, func() error) {
	t.Helper()
	var mu sync.Mutex
	var last error
	c, err := client.Dial(context.Background(), client.Config{
		Server: bearers.MustParseEndpoint("tcp://pipe:1"), Bearer: b, ClientID: uuid.New(), Token: "t",
		RegistrationTimeout: time.Second, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
		MaxControlConnectionRestarts: limit,
		OnState: func(s client.State, err error) {
			mu.Lock()
			last = err
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, func() error { mu.Lock(); defer mu.Unlock(); return last }
}

// TestControlConnectionRestartLimit: a control connection declared dead
// whose path stays dead is recreated once per dead-path window (the
// redials within a window are that restart's attempts); after
// maxControlConnectionRestarts restarts the next one gives up with a
// *RestartLimitError (state Closed) and nothing is dialed any more — in
// virtual time (testing/synctest), so exactly and without sleeping.
func TestControlConnectionRestartLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 2 * time.Second
		scfg := resume.DefaultConfig()
		scfg.KeepaliveInterval = time.Second
		scfg.DeadTimeout = time.Hour
		ss := newStreamServer(t, scfg)
		ss.window = uint32(window.Milliseconds())
		defer ss.close()
		b := &deadBearer{pipeBearer: &pipeBearer{ss: ss}}
		c, lastErr := dialRestarts(t, b, 3)
		defer c.Close()
		if _, err := c.Ping(context.Background()); err != nil { // the last frame the client receives
			t.Fatal(err)
		}
		b.dead.Store(true)
		b.blackholeCurrent()
		// Dead a window after the black hole: restart 1; restarts 2 and 3 a window
		// apart at the earliest; the fourth, refused, a window later.
		time.Sleep(4*window - time.Nanosecond)
		synctest.Wait()
		if c.State() == client.Closed {
			t.Fatalf("gave up before 3 restarts a window apart: %v", lastErr())
		}
		// Black-holed attempts end at the registration timeout (1 s), the
		// backoff adds at most RetryMax (10 ms): the refused restart
		// comes within that of the earliest moment.
		time.Sleep(time.Second + 10*time.Millisecond + time.Nanosecond)
		synctest.Wait()
		var rle *client.RestartLimitError
		if c.State() != client.Closed || !errors.As(lastErr(), &rle) || rle.Max != 3 || rle.Window != window {
			t.Fatalf("state %v, last error %v; want Closed with a *RestartLimitError", c.State(), lastErr())
		}
		dials := b.dials.Load()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if b.dials.Load() != dials {
			t.Fatalf("dialing went on after giving up: %d dials, then %d", dials, b.dials.Load())
		}
		t.Logf("%v; %d dials", lastErr(), dials)
	})
}

// TestControlConnectionRestartsReset: restarts that attach again start
// the count afresh, so a path that dies more often than the limit, but
// comes back each time, is never given up on.
func TestControlConnectionRestartsReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scfg := resume.DefaultConfig()
		scfg.KeepaliveInterval = time.Second
		scfg.DeadTimeout = time.Hour
		ss := newStreamServer(t, scfg)
		ss.window = 2000
		defer ss.close()
		b := &deadBearer{pipeBearer: &pipeBearer{ss: ss}}
		c, lastErr := dialRestarts(t, b, 2)
		defer c.Close()
		for i := range 6 {
			// One dead restart, then a live one: two in a row at most.
			b.dead.Store(true)
			b.blackholeCurrent()
			time.Sleep(2*time.Second + time.Nanosecond) // the window: declared dead, redialed into a black hole
			synctest.Wait()
			b.dead.Store(false)
			time.Sleep(time.Minute) // the black-holed attempt times out; the next attaches
			synctest.Wait()
			if c.State() != client.Connected {
				t.Fatalf("break %d: state %v (%v)", i+1, c.State(), lastErr())
			}
		}
		if got := b.dials.Load(); got != 1+6*2 {
			t.Errorf("%d dials, want 1 + 6 × 2", got)
		}
		if st := ss.stream(t).Stats(); st.Attaches != 1+6 {
			t.Errorf("server stream attached %d times, want 7", st.Attaches)
		}
	})
}
