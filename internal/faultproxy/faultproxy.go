// Package faultproxy is a TCP proxy for tests that breaks connections on
// demand: it forwards every connection accepted on a loopback port to a
// target, and can
//
//   - Reset every connection: both sides get a TCP reset (SO_LINGER 0,
//     then close), as when a middlebox or a crashed peer drops state;
//   - Blackhole the path: bytes in both directions are read and dropped
//     while the sockets stay open, and new connections are accepted but go
//     nowhere — a silent dead path that only keepalives can detect. Restore
//     ends it: the black-holed connections are reset (their streams have a
//     hole) and new connections flow again;
//   - Abort the client-side sockets from outside the processes with
//     iproute2's "ss -K" (the kernel destroys the sockets; needs Linux,
//     CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN).
//
// Every goroutine belongs to the Proxy; Close stops them all.
package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections from Addr to a target.
type Proxy struct {
	target string
	ln     *net.TCPListener
	wg     sync.WaitGroup

	accepted atomic.Int64
	resets   atomic.Int64
	rate     atomic.Int64 // bytes per second toward the client; 0: unlimited

	mu     sync.Mutex
	closed bool
	black  bool
	pairs  map[*pair]struct{}
}

// pair is one proxied connection: the client's and the target's sockets
// (server is nil while black-holed from the start).
type pair struct {
	client *net.TCPConn
	black  atomic.Bool

	mu     sync.Mutex
	server *net.TCPConn
	ended  bool
}

// New listens on a free loopback port and forwards to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, pairs: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's listening address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port is the proxy's listening port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Accepted counts the connections accepted so far.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// Conns counts the connections open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		pr := &pair{client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		black := p.black
		p.mu.Unlock()
		pr.black.Store(black)
		p.wg.Add(1)
		go p.serve(pr)
	}
}

// serve connects pr to the target (unless black-holed from the start) and
// copies both ways until either side ends.
func (p *Proxy) serve(pr *pair) {
	defer p.wg.Done()
	defer p.forget(pr)
	var server *net.TCPConn
	if !pr.black.Load() {
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			return
		}
		server = s.(*net.TCPConn)
		if !pr.setServer(server) || pr.black.Load() {
			server.Close()
			pr.end(true)
			return
		}
	}
	if server == nil {
		p.copy(pr, nil, pr.client) // read and drop
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.copy(pr, pr.client, server) // toward the client: throttled by SetRate
	}()
	p.copy(pr, server, pr.client)
	wg.Wait()
}

// setServer records the target's socket; false if the pair already ended.
func (pr *pair) setServer(s *net.TCPConn) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.ended {
		return false
	}
	pr.server = s
	return true
}

// end closes both sockets, with a TCP reset if rst. Idempotent.
func (pr *pair) end(rst bool) {
	pr.mu.Lock()
	if pr.ended {
		pr.mu.Unlock()
		return
	}
	pr.ended = true
	s := pr.server
	pr.mu.Unlock()
	for _, c := range []*net.TCPConn{pr.client, s} {
		if c == nil {
			continue
		}
		if rst {
			c.SetLinger(0)
		}
		c.Close()
	}
}

// copy forwards src to dst (dst nil: drop) until an error; then it closes
// both sides. While the pair is black-holed, what it reads is dropped.
func (p *Proxy) copy(pr *pair, dst, src *net.TCPConn) {
	buf := make([]byte, 32<<10)
	for {
		toClient := dst == pr.client
		chunk := buf
		if r := p.rate.Load(); toClient && r > 0 {
			chunk = buf[:min(len(buf), max(int(r/100), 1))] // about 10 ms of data per read
		}
		n, err := src.Read(chunk)
		if n > 0 && dst != nil && !pr.black.Load() {
			if _, werr := dst.Write(chunk[:n]); werr != nil {
				err = werr
			}
			if r := p.rate.Load(); toClient && r > 0 {
				time.Sleep(time.Duration(int64(n) * int64(time.Second) / r))
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && dst != nil && !pr.black.Load() {
				dst.CloseWrite() // pass a clean half-close on
				return
			}
			pr.end(false)
			return
		}
	}
}

func (p *Proxy) forget(pr *pair) {
	pr.end(false)
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

func (p *Proxy) snapshot() []*pair {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		out = append(out, pr)
	}
	return out
}

// SetRate limits what the proxy forwards toward the clients to about
// bytesPerSecond (0: no limit), as a slow link would: the target's writes
// back up, the clients receive a steady trickle.
func (p *Proxy) SetRate(bytesPerSecond int) { p.rate.Store(int64(bytesPerSecond)) }

// Reset sends a TCP reset to both sides of every open connection and
// returns how many it reset.
func (p *Proxy) Reset() int {
	prs := p.snapshot()
	for _, pr := range prs {
		pr.end(true)
	}
	p.resets.Add(int64(len(prs)))
	return len(prs)
}

// Blackhole makes the path silent: open connections stop forwarding (what
// arrives is dropped, the sockets stay open) and new connections are
// accepted but forwarded nowhere, until Restore.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.black = true
	p.mu.Unlock()
	for _, pr := range p.snapshot() {
		pr.black.Store(true)
	}
}

// Restore ends a black hole: the connections it swallowed are reset (bytes
// were lost in them) and new connections are forwarded again. It returns
// how many connections it reset.
func (p *Proxy) Restore() int {
	p.mu.Lock()
	p.black = false
	p.mu.Unlock()
	n := 0
	for _, pr := range p.snapshot() {
		if pr.black.Load() {
			pr.end(true)
			n++
		}
	}
	return n
}

// Abort destroys, with "ss -K", the client-side sockets of the proxy's
// connections (those whose destination is the proxy's port): the kernel
// aborts them at once, the client's pending and next system calls fail
// with ECONNABORTED, and the proxy's side gets a reset. It returns ss's
// report of the sockets it killed.
func (p *Proxy) Abort() (string, error) {
	port := p.Port()
	if port <= 0 {
		return "", errors.New("faultproxy: no port") // never kill with an empty filter
	}
	out, err := exec.Command("ss", "-K", "-t", "-n", "dst", "127.0.0.1:"+strconv.Itoa(port)).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("faultproxy: ss -K: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// CanAbort reports whether Abort works here: ss exists and destroys a
// socket of a loopback connection made for the purpose (root and a kernel
// with socket destruction are needed). The error says why not.
func CanAbort() error {
	if _, err := exec.LookPath("ss"); err != nil {
		return fmt.Errorf("iproute2's ss is not installed: %w", err)
	}
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := ln.AcceptTCP()
	if err != nil {
		return err
	}
	defer a.Close()
	src, dst := c.LocalAddr().(*net.TCPAddr), ln.Addr().(*net.TCPAddr)
	out, err := exec.Command("ss", "-K", "-t", "-n", "src", "127.0.0.1:"+strconv.Itoa(src.Port),
		"dst", "127.0.0.1:"+strconv.Itoa(dst.Port)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ss -K failed (root and CONFIG_INET_DIAG_DESTROY are needed): %v: %s", err, strings.TrimSpace(string(out)))
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) || isTimeout(err) {
		return fmt.Errorf("ss -K ran but did not abort the socket (read: %v)", err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close stops accepting, closes every connection and waits for every
// goroutine of the proxy. Idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		p.ln.Close()
		for _, pr := range p.snapshot() {
			pr.end(false)
		}
	}
	p.wg.Wait()
	return nil
}
