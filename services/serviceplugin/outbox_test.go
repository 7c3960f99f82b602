package serviceplugin

import (
	"context"
	"errors"
	"testing"
	"time"
)

type msg struct {
	kind, path string
	n          int
}

func drain(t *testing.T, o *outbox[msg]) []msg {
	t.Helper()
	var out []msg
	for {
		o.mu.Lock()
		empty := o.head == nil
		o.mu.Unlock()
		if empty {
			return out
		}
		m, ok := o.pop(context.Background())
		if !ok {
			t.Fatal("pop failed")
		}
		out = append(out, m)
	}
}

func TestOutboxOrderAndCoalescing(t *testing.T) {
	o := newOutbox[msg](10)
	ctx := context.Background()
	o.pushData("a.x", msg{"data", "a.x", 1})
	o.push(ctx, msg{kind: "event", n: 1})
	o.pushData("a.x", msg{"data", "a.x", 2})           // replaces the queued a.x in place, ahead of the event
	o.pushData("b.list.3", msg{"data", "b.list.3", 1}) // dropped by the next update of its list
	o.pushData("b.list", msg{"data", "b.list", 1})
	o.pushUrgent(msg{kind: "cancel"})
	o.pushData("b.list.0", msg{"data", "b.list.0", 1}) // below a queued update: stays, after it
	o.pushData("bb", msg{"data", "bb", 1})             // "bb" is not below "b"
	o.pushData("b", msg{"data", "b", 1})               // drops b.list, b.list.0, not bb
	got := drain(t, o)
	want := []msg{{"data", "a.x", 2}, {kind: "event", n: 1}, {kind: "cancel"}, {"data", "bb", 1}, {"data", "b", 1}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	// The whole tree drops everything queued below it.
	o.pushData("a", msg{"data", "a", 3})
	o.pushData("", msg{"data", "", 4})
	if got := drain(t, o); len(got) != 1 || got[0].path != "" {
		t.Fatalf("got %v", got)
	}
	if len(o.data) != 0 || o.n != 0 {
		t.Fatalf("bookkeeping left: %d data, %d ordinary", len(o.data), o.n)
	}
}

func TestOutboxBackpressure(t *testing.T) {
	o := newOutbox[msg](2)
	ctx := context.Background()
	o.push(ctx, msg{n: 1})
	o.push(ctx, msg{n: 2})
	// Urgent messages and data never wait.
	if err := o.pushUrgent(msg{n: 3}); err != nil {
		t.Fatal(err)
	}
	o.pushData("x", msg{n: 4})
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := o.push(short, msg{n: 5}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("push to a full outbox: %v", err)
	}
	pushed := make(chan error, 1)
	go func() { pushed <- o.push(ctx, msg{n: 6}) }()
	if m, _ := o.pop(ctx); m.n != 1 {
		t.Fatalf("popped %v", m)
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	got := drain(t, o)
	if len(got) != 4 || got[3].n != 6 {
		t.Fatalf("got %v", got)
	}

	// close wakes a waiting producer and a waiting consumer.
	o.push(ctx, msg{n: 7})
	o.push(ctx, msg{n: 8})
	go func() { pushed <- o.push(ctx, msg{n: 9}) }()
	popped := make(chan bool, 1)
	o2 := newOutbox[msg](1)
	go func() { _, ok := o2.pop(ctx); popped <- ok }()
	o.close()
	o2.close()
	o.close() // idempotent
	if err := <-pushed; !errors.Is(err, ErrClosed) {
		t.Fatalf("push during close: %v", err)
	}
	if <-popped {
		t.Fatal("pop on a closed outbox succeeded")
	}
	if o.pushData("x", msg{}) == nil || o.pushUrgent(msg{}) == nil {
		t.Fatal("pushed to a closed outbox")
	}
}
