package serviceplugin

import (
	"context"
	"strings"
	"sync"
)

// outbox is the send queue of one side of a Connect stream. gRPC lets one
// goroutine at a time send on a stream, and a blocked send cannot be
// interrupted by a caller's context, so callers put messages here and one
// writer goroutine sends them.
//
// Three kinds of entry, in one FIFO:
//   - ordinary messages (calls, results, events): at most cap are queued;
//     push blocks while the queue is full, until its context ends
//     (backpressure: a slow peer slows the producers, nothing is dropped);
//   - urgent messages (cancels): never block; their number is bounded by
//     the caller (one per pending call);
//   - data updates, keyed by path: runtime data is state, so an update of
//     a path still queued replaces the queued value in place, and a queued
//     update of a node below the path is removed (the new value covers it).
//     They never block; their number is bounded by the paths of the tree.
//     An update is never moved behind a message queued after it, so a peer
//     that sees an event has seen every update set before it was emitted.
//
// All methods are safe for concurrent use.
type outbox[M any] struct {
	mu         sync.Mutex
	head, tail *entry[M]
	n, cap     int                  // ordinary entries queued, and their bound
	data       map[string]*entry[M] // queued data updates by path
	closed     bool
	nonEmpty   chan struct{} // capacity 1: wakes the writer
	space      chan struct{} // closed (and replaced) when a full queue gets room
	done       chan struct{} // closed by close
}

type entry[M any] struct {
	msg        M
	path       string // data updates only
	data       bool
	ordinary   bool
	prev, next *entry[M]
}

func newOutbox[M any](capacity int) *outbox[M] {
	return &outbox[M]{cap: capacity, data: map[string]*entry[M]{}, nonEmpty: make(chan struct{}, 1),
		space: make(chan struct{}), done: make(chan struct{})}
}

func (o *outbox[M]) link(e *entry[M]) {
	e.prev = o.tail
	if o.tail == nil {
		o.head = e
	} else {
		o.tail.next = e
	}
	o.tail = e
	select {
	case o.nonEmpty <- struct{}{}:
	default:
	}
}

func (o *outbox[M]) unlink(e *entry[M]) {
	if e.prev == nil {
		o.head = e.next
	} else {
		e.prev.next = e.next
	}
	if e.next == nil {
		o.tail = e.prev
	} else {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
}

// push queues an ordinary message, waiting while the queue is full. It
// fails with ctx's error, or ErrClosed once the outbox is closed.
func (o *outbox[M]) push(ctx context.Context, m M) error {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		if o.n < o.cap {
			o.n++
			o.link(&entry[M]{msg: m, ordinary: true})
			o.mu.Unlock()
			return nil
		}
		space := o.space
		o.mu.Unlock()
		select {
		case <-space:
		case <-o.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pushUrgent queues a message without waiting.
func (o *outbox[M]) pushUrgent(m M) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	o.link(&entry[M]{msg: m})
	return nil
}

// pushData queues a data update of path, replacing a queued update of the
// same path and dropping queued updates below it. Never waits.
func (o *outbox[M]) pushData(path string, m M) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	for p, e := range o.data {
		if p != path && below(p, path) {
			o.unlink(e)
			delete(o.data, p)
		}
	}
	if e := o.data[path]; e != nil {
		e.msg = m
		return nil
	}
	e := &entry[M]{msg: m, path: path, data: true}
	o.data[path] = e
	o.link(e)
	return nil
}

// below reports whether path p is at or below path anc ("" is the root).
func below(p, anc string) bool {
	return anc == "" || p == anc || strings.HasPrefix(p, anc) && len(p) > len(anc) && p[len(anc)] == '.'
}

// pop returns the next message, waiting until there is one. ok is false
// once the outbox is closed or ctx ends.
func (o *outbox[M]) pop(ctx context.Context) (m M, ok bool) {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return m, false
		}
		if e := o.head; e != nil {
			o.unlink(e)
			if e.data {
				delete(o.data, e.path)
			}
			if e.ordinary {
				if o.n == o.cap {
					close(o.space)
					o.space = make(chan struct{})
				}
				o.n--
			}
			o.mu.Unlock()
			return e.msg, true
		}
		o.mu.Unlock()
		select {
		case <-o.nonEmpty:
		case <-o.done:
		case <-ctx.Done():
			return m, false
		}
	}
}

// close discards what is queued and wakes every waiter. Idempotent.
func (o *outbox[M]) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	o.head, o.tail, o.data = nil, nil, nil
	close(o.done)
}
