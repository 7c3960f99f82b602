package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// The channels of Subscribe and Watch: each is fed by a pump goroutine of
// the Session from a bounded buffer that the link's reader fills without
// ever blocking.

// subscription hands events to its channel without ever blocking the
// link's reader: a bounded queue, then gap markers.
type subscription struct {
	id    uint64
	all   bool
	names map[string]bool
	wake  chan struct{}
	out   chan Event

	mu    sync.Mutex
	queue []Event
	lost  uint64 // dropped since the last queued event
}

func (sub *subscription) push(ev Event) {
	sub.mu.Lock()
	if sub.lost > 0 && len(sub.queue) < EventBuffer {
		sub.queue = append(sub.queue, Event{Lost: sub.lost, Time: ev.Time})
		sub.lost = 0
	}
	if len(sub.queue) < EventBuffer {
		sub.queue = append(sub.queue, ev)
	} else {
		sub.lost++
	}
	sub.mu.Unlock()
	signal(sub.wake)
}

// lose records n events the server dropped, at this point of the stream.
func (sub *subscription) lose(n uint64) {
	sub.mu.Lock()
	if l := len(sub.queue); l > 0 && sub.queue[l-1].Lost > 0 {
		sub.queue[l-1].Lost += n
	} else if l < EventBuffer && sub.lost == 0 {
		sub.queue = append(sub.queue, Event{Lost: n, Time: time.Now()})
	} else {
		sub.lost += n
	}
	sub.mu.Unlock()
	signal(sub.wake)
}

func (sub *subscription) next() (Event, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.queue) > 0 {
		ev := sub.queue[0]
		sub.queue[0] = Event{}
		sub.queue = sub.queue[1:]
		return ev, true
	}
	if sub.lost > 0 {
		ev := Event{Lost: sub.lost, Time: time.Now()}
		sub.lost = 0
		return ev, true
	}
	return Event{}, false
}

func (sub *subscription) run(ctx context.Context, s *Session) {
	defer close(sub.out)
	for {
		ev, ok := sub.next()
		if !ok {
			select {
			case <-sub.wake:
				continue
			case <-s.done:
				return
			case <-ctx.Done():
				s.stopRemote(sub.id)
				return
			}
		}
		select {
		case sub.out <- ev:
		case <-s.done:
			return
		case <-ctx.Done():
			s.stopRemote(sub.id)
			return
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// watchState keeps a mirror of the watched node, updated by every change
// the server sends, and the paths that changed since the reader last got
// them; values are taken from the mirror when delivered, so a slow reader
// gets the latest value of each path.
type watchState struct {
	id   uint64
	path string
	typ  *servicefile.Type
	wake chan struct{}
	out  chan DataChange

	mu        sync.Mutex
	have      bool // the snapshot arrived
	value     any  // the watched node's value
	pending   []string
	snapFirst bool // the first pending entry is the snapshot
}

// snapshot takes the Watch's answer.
func (w *watchState) snapshot(m *session.Snapshot) {
	v, err := services.DecodeValue(w.typ, m.Value)
	if err != nil {
		return // the caller's Watch fails: see run's first delivery
	}
	w.mu.Lock()
	w.have, w.value, w.snapFirst = true, v, true
	w.pending = append(w.pending[:0], w.path)
	w.mu.Unlock()
	signal(w.wake)
}

func (w *watchState) started() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.have
}

// change applies one DataChange to the mirror.
func (w *watchState) change(path string, enc []byte) error {
	if !below(path, w.path) {
		return fmt.Errorf("%q is not under the watched path %q", path, w.path)
	}
	rel := relative(path, w.path)
	t, err := typeAt(w.typ, rel)
	if err != nil {
		return err
	}
	v, err := services.DecodeValue(t, enc)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.have {
		return errors.New("a change before the snapshot")
	}
	nv, err := setAt(w.typ, w.value, splitPath(rel), v)
	if err != nil {
		return err
	}
	w.value = nv
	w.add(path)
	signal(w.wake)
	return nil
}

// add records that path changed (the caller holds w.mu), coalescing.
func (w *watchState) add(p string) {
	for _, q := range w.pending {
		if below(p, q) {
			return
		}
	}
	kept := w.pending[:0]
	for i, q := range w.pending {
		if below(q, p) {
			if i == 0 {
				w.snapFirst = false // replaced; p is no snapshot
			}
			continue
		}
		kept = append(kept, q)
	}
	w.pending = append(kept, p)
	if len(w.pending) > maxPendingChanges {
		w.pending, w.snapFirst = append(w.pending[:0], w.path), false
	}
}

func (w *watchState) next() (DataChange, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.pending) > 0 {
		p := w.pending[0]
		w.pending = w.pending[1:]
		snap := w.snapFirst
		w.snapFirst = false
		rel := relative(p, w.path)
		v, err := lookupAt(w.value, splitPath(rel))
		if err != nil {
			continue // cannot happen: the mirror took every change
		}
		t, _ := typeAt(w.typ, rel)
		return DataChange{Path: p, Value: deepCopy(v), Type: t, Snapshot: snap, Time: time.Now()}, true
	}
	return DataChange{}, false
}

func (w *watchState) run(ctx context.Context, s *Session) {
	defer close(w.out)
	for {
		dc, ok := w.next()
		if !ok {
			select {
			case <-w.wake:
				continue
			case <-s.done:
				return
			case <-ctx.Done():
				s.stopRemote(w.id)
				return
			}
		}
		select {
		case w.out <- dc:
		case <-s.done:
			return
		case <-ctx.Done():
			s.stopRemote(w.id)
			return
		}
	}
}

// Paths of runtime data.

func below(p, anc string) bool {
	return anc == "" || p == anc || len(p) > len(anc) && p[len(anc)] == '.' && p[:len(anc)] == anc
}

// relative returns p below base ("" for base itself).
func relative(p, base string) string {
	if base == "" {
		return p
	}
	return strings.TrimPrefix(strings.TrimPrefix(p, base), ".")
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

// index parses a list index: a decimal number without sign or leading
// zeros.
func index(seg string) (int, bool) {
	i, err := strconv.Atoi(seg)
	return i, err == nil && i >= 0 && strconv.Itoa(i) == seg
}

// typeAt returns the type at a dot path below root.
func typeAt(root *servicefile.Type, path string) (*servicefile.Type, error) {
	t := root
	for i, seg := range splitPath(path) {
		where := strings.Join(splitPath(path)[:i], ".")
		if where == "" {
			where = "the watched node"
		}
		switch t.Kind {
		case servicefile.Struct:
			f := t.Field(seg)
			if f == nil {
				return nil, fmt.Errorf("no runtime data %q: %s has no %q", path, where, seg)
			}
			t = f.Type
		case servicefile.List:
			if _, ok := index(seg); !ok {
				return nil, fmt.Errorf("no runtime data %q: %s is a list, and %q is not an index", path, where, seg)
			}
			t = t.Elem
		default:
			return nil, fmt.Errorf("no runtime data %q: %s is a %s, which has no %q", path, where, t, seg)
		}
	}
	return t, nil
}

// lookupAt returns the value at segs below v.
func lookupAt(v any, segs []string) (any, error) {
	for _, seg := range segs {
		switch c := v.(type) {
		case map[string]any:
			x, ok := c[seg]
			if !ok {
				return nil, fmt.Errorf("no field %q", seg)
			}
			v = x
		case []any:
			i, ok := index(seg)
			if !ok || i >= len(c) {
				return nil, fmt.Errorf("no element %q", seg)
			}
			v = c[i]
		default:
			return nil, fmt.Errorf("%T has no %q", v, seg)
		}
	}
	return v, nil
}

// setAt stores nv at segs below cur (a value of type t) and returns the new
// value of cur.
func setAt(t *servicefile.Type, cur any, segs []string, nv any) (any, error) {
	if len(segs) == 0 {
		return nv, nil
	}
	switch t.Kind {
	case servicefile.Struct:
		m, ok := cur.(map[string]any)
		f := t.Field(segs[0])
		if !ok || f == nil {
			return nil, fmt.Errorf("no field %q", segs[0])
		}
		x, err := setAt(f.Type, m[segs[0]], segs[1:], nv)
		if err != nil {
			return nil, err
		}
		m[segs[0]] = x
		return m, nil
	case servicefile.List:
		l, ok := cur.([]any)
		i, isIndex := index(segs[0])
		if !ok || !isIndex || i >= len(l) {
			return nil, fmt.Errorf("no element %q", segs[0])
		}
		x, err := setAt(t.Elem, l[i], segs[1:], nv)
		if err != nil {
			return nil, err
		}
		l[i] = x
		return l, nil
	}
	return nil, fmt.Errorf("a %s has no %q", t, segs[0])
}

// deepCopy copies a value in the canonical representation.
func deepCopy(v any) any {
	switch c := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(c))
		for k, x := range c {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		l := make([]any, len(c))
		for i, x := range c {
			l[i] = deepCopy(x)
		}
		return l
	case []byte:
		return bytes.Clone(c)
	}
	return v
}
