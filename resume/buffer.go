package resume

import (
	"math/bits"
	"sync"
)

// Message buffers come from size-class pools (powers of two from 64 bytes to
// 16 MiB), so that a stream moving gigabytes neither allocates nor zeroes
// memory per message, and an idle stream holds none: buffers go back to the
// pool when a message is acknowledged (send side) or read (receive side).
// A buffer is at most twice the message it holds.

const (
	minClass = 6  // 64 bytes
	maxClass = 24 // 16 MiB = wire.MaxFrameHardLimit
)

var pools [maxClass + 1]sync.Pool

func class(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

// getBuf returns a buffer of length n (nil for n == 0). n must be at most
// 1<<maxClass.
func getBuf(n int) *[]byte {
	if n == 0 {
		return nil
	}
	c := class(n)
	if p, ok := pools[c].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putBuf returns a buffer obtained from getBuf to its pool. nil is ignored.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	c := class(cap(*p))
	if c > maxClass || 1<<c != cap(*p) {
		return // not one of ours
	}
	pools[c].Put(p)
}

// ring is a FIFO queue that grows by doubling. It is not safe for concurrent
// use.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		grown := make([]T, max(8, 2*len(r.buf)))
		for i := range r.n {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

// at returns the i-th element from the front; 0 <= i < len.
func (r *ring[T]) at(i int) *T { return &r.buf[(r.head+i)%len(r.buf)] }

func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if r.n == 0 {
		r.head = 0
		if len(r.buf) > 1024 {
			r.buf = nil // an idle stream keeps no large queue
		}
	}
	return v
}

// signal is a broadcast to goroutines waiting for a state change. Both
// methods must be called with the lock that guards the state held.
type signal struct{ ch chan struct{} }

// wait returns a channel that is closed at the next broadcast.
func (g *signal) wait() <-chan struct{} {
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	return g.ch
}

func (g *signal) broadcast() {
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}
