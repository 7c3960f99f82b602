package client

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/resume"
)

// The control connection's restart limit (docs/RESUME.md, "The control
// connection"): the connection that carries a client's resume stream is
// its control connection. When it is lost (the ping window passed without
// a frame: a dead-path verdict; or it broke), the stream recreates it.
// As in bisocket, a restart is one recreation per dead-path window: the
// redials the stream makes within one window (its fast retries and
// backoff) are that restart's socket-creation attempts, and the next
// redial a window or more later is the next restart. At most
// Config.MaxControlConnectionRestarts restarts in a row may go without the
// stream attaching again; the next one gives up with a
// *RestartLimitError, which is permanent: the stream ends, and the client
// with it (state Closed). So a far side whose server stays unreachable
// gives up after about maxControlConnectionRestarts × the ping window.

// DefaultMaxControlConnectionRestarts is Config.MaxControlConnectionRestarts
// when zero.
const DefaultMaxControlConnectionRestarts = 10

// RestartLimitError says that the client gave up recreating its control
// connection.
type RestartLimitError struct {
	// Max is the limit (maxControlConnectionRestarts); Window the
	// dead-path window, one restart per window; Attaches how many times
	// the stream had attached.
	Max      int
	Window   time.Duration
	Attaches int
}

func (e *RestartLimitError) Error() string {
	return fmt.Sprintf("client: gave up: the control connection to the server was recreated %d times in a row, one restart per %v dead-path window, without the resume stream attaching again (maxControlConnectionRestarts %d)", e.Max, e.Window, e.Max)
}

// Permanent makes the resume stream stop redialing.
func (e *RestartLimitError) Permanent() bool { return true }

// restartGuard counts one stream's control-connection restarts since its
// last attach.
type restartGuard struct {
	max    int           // ≤ 0: no limit
	window time.Duration // one restart per window
	st     atomic.Pointer[resume.Stream]

	mu       sync.Mutex
	attaches int       // the stream's attach count when the run began
	run      int       // restarts since then
	last     time.Time // when the last restart began
}

func (c *Client) newRestartGuard(cfg *resume.Config) *restartGuard {
	n := c.cfg.MaxControlConnectionRestarts
	switch {
	case n == 0:
		n = DefaultMaxControlConnectionRestarts
	case n < 0:
		n = 0
	}
	w := cfg.DeadTimeout
	if w <= 0 {
		w = cfg.RetryMax
	}
	return &restartGuard{max: n, window: w, attaches: 1}
}

// restart is called before each redial; an error when it would begin one
// restart too many.
func (g *restartGuard) restart() error {
	attaches := g.attaches
	if st := g.st.Load(); st != nil {
		attaches = st.Stats().Attaches
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if attaches != g.attaches { // attached since the last restart: a new run
		g.attaches, g.run = attaches, 0
	}
	if g.run > 0 && now.Sub(g.last) < g.window {
		return nil // another attempt of the same restart
	}
	if g.max > 0 && g.run >= g.max {
		return &RestartLimitError{Max: g.max, Window: g.window, Attaches: attaches}
	}
	g.run++
	g.last = now
	return nil
}
