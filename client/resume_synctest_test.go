package client_test

import (
	"context"
	"errors"
	"net"
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

// pipeBearer dials in-memory pipes served by a streamServer, and can
// black-hole the current one (what either side writes is dropped, nothing
// is closed): a dead path that only the client's ping window detects.
type pipeBearer struct {
	ss    *streamServer
	dials atomic.Int32
	mu    sync.Mutex
	last  *holeConn
}

func (b *pipeBearer) Info() bearers.Info {
	return bearers.Info{Type: "test.bearer.pipe", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}
}

func (b *pipeBearer) Listen(context.Context, bearers.Endpoint) (bearers.Listener, error) {
	return nil, errors.New("pipeBearer does not listen")
}

func (b *pipeBearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	b.dials.Add(1)
	c1, c2 := net.Pipe()
	h := &holeConn{Conn: c2}
	b.mu.Lock()
	b.last = h
	b.mu.Unlock()
	b.ss.serveConn(h)
	return pipeConn{c1}, nil
}

func (b *pipeBearer) blackholeCurrent() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last.black.Store(true)
}

type pipeConn struct{ net.Conn }

func (pipeConn) Peer() bearers.Peer { return bearers.Peer{} }

// holeConn is the server's end of a pipe; while black it drops what it
// reads and what is written to it.
type holeConn struct {
	net.Conn
	black atomic.Bool
}

func (h *holeConn) Read(p []byte) (int, error) {
	for {
		n, err := h.Conn.Read(p)
		if err != nil || !h.black.Load() {
			return n, err
		}
	}
}

func (h *holeConn) Write(p []byte) (int, error) {
	if h.black.Load() {
		return len(p), nil
	}
	return h.Conn.Write(p)
}

type timedState struct {
	state client.State
	at    time.Time
}

// TestStreamDeadPathWindow: the client applies the dead-path window the
// server announces in its Welcome (ping_window_ms), exactly: a path that
// falls silent is declared dead, and the stream resumed on a new
// connection, at the window and not a nanosecond before — in virtual time
// (testing/synctest), so without sleeping.
func TestStreamDeadPathWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		scfg := resume.DefaultConfig()
		scfg.KeepaliveInterval = time.Second
		scfg.DeadTimeout = time.Hour // only the client's verdict is under test
		ss := newStreamServer(t, scfg)
		ss.window = 3000
		defer ss.close()
		b := &pipeBearer{ss: ss}
		var mu sync.Mutex
		var states []timedState
		c, err := client.Dial(context.Background(), client.Config{
			Server: bearers.MustParseEndpoint("tcp://pipe:1"), Bearer: b, ClientID: uuid.New(), Token: "t",
			RegistrationTimeout: time.Second, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
			OnState: func(s client.State, err error) {
				mu.Lock()
				states = append(states, timedState{s, time.Now()})
				mu.Unlock()
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		s, err := c.StartSession(ctx, "example.echo")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Ping(ctx); err != nil { // the last frame the client receives
			t.Fatal(err)
		}
		t0 := time.Now()
		b.blackholeCurrent()
		mu.Lock()
		before := len(states)
		mu.Unlock()

		time.Sleep(3*time.Second - time.Nanosecond)
		synctest.Wait()
		if c.State() != client.Connected || b.dials.Load() != 1 {
			t.Fatalf("declared dead before the window: state %v, %d dials", c.State(), b.dials.Load())
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		mu.Lock()
		after := append([]timedState(nil), states[before:]...)
		mu.Unlock()
		if len(after) == 0 || after[0].state != client.Connecting || !after[0].at.Equal(t0.Add(3*time.Second)) {
			t.Fatalf("after the window: state changes %+v, want Connecting at t0+3s", after)
		}
		if c.State() != client.Connected || b.dials.Load() != 2 {
			t.Fatalf("not resumed on a new connection: state %v, %d dials", c.State(), b.dials.Load())
		}
		if v, err := s.Call(ctx, "add", map[string]any{"a": 1, "b": 2}); err != nil || v != int64(3) {
			t.Fatalf("call after the resume: %v, %v", v, err)
		}
		if st := ss.stream(t).Stats(); st.Attaches != 2 {
			t.Fatalf("server stream %+v", st)
		}
	})
}
