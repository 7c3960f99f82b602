package dgram

import (
	"testing"
	"time"
)

// TestDeadlineSetAfterStop: a Conn's Close stops its deadlines' timers; a
// SetReadDeadline racing the Close (a context's AfterFunc) must not wait
// for the stopped timer forever.
func TestDeadlineSetAfterStop(t *testing.T) {
	d := newDeadline()
	d.set(time.Now().Add(time.Hour))
	d.stop()
	done := make(chan struct{})
	go func() {
		d.set(time.Now()) // in the past: closes the channel at once
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("set after stop blocks")
	}
	select {
	case <-d.wait():
	default:
		t.Fatal("a past deadline did not close the channel")
	}
}
