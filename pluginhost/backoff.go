package pluginhost

import (
	"math/rand/v2"
	"time"
)

// Restart delays, shared by the bearer Supervisor and ServicePlugin.
const (
	defaultBackoffMin = 100 * time.Millisecond
	defaultBackoffMax = 30 * time.Second
	// backoffReset: a plugin that ran this long before dying restarts
	// after the minimum delay again.
	backoffReset = time.Minute
)

// backoff is the delay before restarting a plugin that died: exponential
// from min to max, with up to 50% jitter so that plugins that died together
// do not restart in lockstep, and back to min once a plugin has run for
// backoffReset. Not safe for concurrent use: one supervising goroutine owns it.
type backoff struct {
	min, max, cur time.Duration
}

// newBackoff returns a backoff from lo to hi; zero values take the
// defaults (100ms, 30s).
func newBackoff(lo, hi time.Duration) *backoff {
	if lo <= 0 {
		lo = defaultBackoffMin
	}
	if hi < lo {
		hi = max(defaultBackoffMax, lo)
	}
	return &backoff{min: lo, max: hi, cur: lo}
}

// next returns how long to wait before the next start and doubles the
// delay for the start after it.
func (b *backoff) next() time.Duration {
	d := b.cur + time.Duration(rand.Int64N(int64(b.cur)/2+1))
	b.cur = min(2*b.cur, b.max)
	return d
}

// ran records how long the last plugin ran before it died.
func (b *backoff) ran(d time.Duration) {
	if d > backoffReset {
		b.cur = b.min
	}
}
