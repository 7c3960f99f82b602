package dgram

import (
	"sync"
	"time"
)

// packet is one queued datagram. b has the datagram's length; its capacity is
// the size class it came from.
type packet struct {
	b []byte
}

// Size classes of pooled datagram buffers. The last one holds any UDP payload.
var classSizes = [...]int{256, 2048, 16 << 10, 64 << 10}

var pools [len(classSizes)]sync.Pool

func classOf(n int) int {
	for i, s := range classSizes {
		if n <= s {
			return i
		}
	}
	return -1
}

// getPacket returns a packet holding a copy of data. len(data) must be at most
// the largest size class; callers check MaxDatagramSize first.
func getPacket(data []byte) *packet {
	ci := classOf(len(data))
	p, _ := pools[ci].Get().(*packet)
	if p == nil {
		p = &packet{b: make([]byte, 0, classSizes[ci])}
	}
	p.b = append(p.b[:0], data...)
	return p
}

func putPacket(p *packet) {
	ci := classOf(cap(p.b))
	if ci < 0 || cap(p.b) != classSizes[ci] {
		return
	}
	p.b = p.b[:0]
	pools[ci].Put(p)
}

// ring is a FIFO with a fixed maximum length whose storage grows on demand
// up to that maximum. It is not safe for concurrent use; owners lock it.
type ring[T any] struct {
	buf  []T
	head int
	n    int
	max  int
}

func (r *ring[T]) len() int   { return r.n }
func (r *ring[T]) full() bool { return r.n >= r.max }

// push appends v; it reports false if the ring is full.
func (r *ring[T]) push(v T) bool {
	if r.n >= r.max {
		return false
	}
	if r.n == len(r.buf) {
		size := 2 * len(r.buf)
		if size < 16 {
			size = 16
		}
		if size > r.max {
			size = r.max
		}
		nb := make([]T, size)
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
	return true
}

// pop removes and returns the oldest element.
func (r *ring[T]) pop() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v, true
}

// deadline is a settable point in time with a channel that is closed once it
// has passed, so that blocked operations can select on it. Safe for
// concurrent use.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func closedChan(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// set moves the deadline; the zero time means none. Operations already waiting
// on the channel see the change: a deadline in the past closes the current
// channel at once, a future one arms a timer that will.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired; wait until its function has closed ch
	}
	d.timer = nil
	expired := closedChan(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !expired {
		close(d.ch)
	}
}

// wait returns a channel closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// stop releases the timer. A later set works as on a fresh deadline (it
// must not wait for a timer that was stopped and will never close ch).
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
