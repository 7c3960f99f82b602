package faultproxy

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within d.
func roundTrip(c net.Conn, msg string, d time.Duration) error {
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	if err == nil && string(buf) != msg {
		err = errors.New("echo mismatch: " + string(buf))
	}
	return err
}

func waitConns(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", p.Conns(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestForwardAndReset(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset reset %d connections", n)
	}
	err := roundTrip(c, "after", 5*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("after Reset: %v, want a connection reset", err)
	}
	waitConns(t, p, 0)
	if err := roundTrip(dial(t, p), "again", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestBlackhole(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	if err := roundTrip(c, "lost", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("through the black hole: %v, want a timeout", err)
	}
	c2 := dial(t, p) // accepted, forwarded nowhere
	if err := roundTrip(c2, "lost too", 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection in the black hole: %v, want a timeout", err)
	}
	waitConns(t, p, 2)
	if n := p.Restore(); n != 2 {
		t.Fatalf("Restore reset %d connections, want 2", n)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("black-holed connection after Restore: %v, want a reset", err)
	}
	if err := roundTrip(dial(t, p), "flowing", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestAbort(t *testing.T) {
	if err := CanAbort(); err != nil {
		t.Skipf("ss -K does not work here: %v", err)
	}
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("after Abort: %v, want ECONNABORTED", err)
	}
	waitConns(t, p, 0)
}

func TestCloseStopsEverything(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	dial(t, p)
	waitConns(t, p, 2)
	done := make(chan struct{})
	go func() { p.Close(); p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts after Close")
	}
}

func TestRate(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	p.SetRate(100 << 10)
	msg := strings.Repeat("x", 50<<10)
	start := time.Now()
	if err := roundTrip(c, msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("50 KiB at 100 KiB/s took %v", d)
	}
	p.SetRate(0)
	if err := roundTrip(c, msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
