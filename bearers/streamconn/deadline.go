package streamconn

import (
	"sync"
	"time"
)

// deadline is a settable point in time whose passing closes a channel. The
// zero value has no deadline; it is safe for concurrent use.
type deadline struct {
	mu    sync.Mutex
	gen   uint64 // identifies the timer allowed to close ch
	timer *time.Timer
	ch    chan struct{}
	fired bool // ch is closed
}

// set moves the deadline; the zero time removes it, a past time expires it
// at once (waking waiters).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	wait := time.Until(t)
	if !t.IsZero() && wait <= 0 {
		if !d.fired {
			close(d.ch)
			d.fired = true
		}
		return
	}
	if d.fired {
		d.ch = make(chan struct{})
		d.fired = false
	}
	if t.IsZero() {
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen && !d.fired {
			close(d.ch)
			d.fired = true
		}
	})
}

// wait returns a channel that is closed when the current deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked()
}

func (d *deadline) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
