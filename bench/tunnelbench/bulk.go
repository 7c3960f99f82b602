package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"time"
)

// Section 1: bulk throughput of one tunnelled TCP connection.
//
// The load generator (this process) opens a TCP connection to the path's
// entry; the bytes cross the path's relays and reach the generator's own
// sink listener. Once the sink has accepted the connection (the whole path
// is set up), the writing end writes the transfer's bytes in -chunk-kib
// writes and half-closes; the reading end reads with the same buffer size
// until end of stream. A transfer is timed from its first write to the
// reader's end of stream, and the reader must have received every byte.
// "up" writes at the generator's connection (towards the target, what a
// client uploads), "down" at the sink's.

// bulkPath is one way from the generator to its sink.
type bulkPath struct {
	key, label string
	relays     int // processes in the path: 0, 1 or 2
}

var bulkPaths = []bulkPath{
	{"raw", "raw TCP, generator → sink (reference)", 0},
	{"socat1", "one socat relay (reference)", 1},
	{"socat2", "two chained socat relays (**baseline**)", 2},
	{"tunnel", "tunnel: client side → resume stream → server side", 2},
}

type bulkCase struct {
	path bulkPath
	down bool
}

func (c bulkCase) key() string {
	if c.down {
		return c.path.key + "/down"
	}
	return c.path.key + "/up"
}

// xfer is one timed transfer.
type xfer struct {
	bytes    int64
	elapsed  time.Duration
	relayCPU int64         // clock ticks the path's relay processes used in it
	genCPU   time.Duration // CPU time this process (writer and reader) used in it
	capped   bool          // -time ended it before all bytes were written
}

func (x xfer) gbps() float64 { return float64(x.bytes) / x.elapsed.Seconds() / 1e9 }

type bulkResult struct {
	cases []bulkCase
	xfers map[string][]xfer
}

// route is one set-up connection through a path: the generator's end, the
// sink's end, the relay processes' PIDs (for their CPU time) and what to do
// once the connection is closed.
type route struct {
	gen, sink *net.TCPConn
	pids      []int
	after     func(down bool, n int64) error
}

func bulk(ctx context.Context, cfg config, e *env) (*bulkResult, error) {
	r := &bulkResult{xfers: map[string][]xfer{}}
	for _, p := range bulkPaths {
		r.cases = append(r.cases, bulkCase{path: p})
		if cfg.downToo {
			r.cases = append(r.cases, bulkCase{path: p, down: true})
		}
	}
	// The tunnel's two processes run for the whole section, as a client and
	// a server would; every transfer is a new tunnelled connection (a new
	// resume session). B first: A needs its address.
	b, bAddr, err := e.start("tunnel-server", exec.Command(e.exe, "tunnel-server", e.sink.addr()), true)
	if err != nil {
		return nil, err
	}
	defer b.stop(3 * time.Second)
	a, aAddr, err := e.start("tunnel-client", exec.Command(e.exe, "tunnel-client", bAddr), true)
	if err != nil {
		return nil, err
	}
	defer a.stop(3 * time.Second)

	open := func(p bulkPath) (*route, error) {
		switch p.key {
		case "raw":
			return e.dialRoute(e.sink.addr(), nil, nil)
		case "tunnel":
			return e.dialRoute(aAddr, []int{a.pid(), b.pid()}, func(down bool, n int64) error {
				return tunnelReports(a, b, down, n)
			})
		}
		return e.socatRoute(ctx, cfg, p.relays)
	}

	chunk := cfg.chunkKiB << 10
	buf := make([]byte, chunk)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	run := func(c bulkCase, n int64) (xfer, error) {
		rt, err := open(c.path)
		if err != nil {
			return xfer{}, err
		}
		w, rd := rt.gen, rt.sink
		if c.down {
			w, rd = rd, w
		}
		x, err := transfer(w, rd, buf, n, cfg.limit, rt.pids)
		rt.gen.Close()
		rt.sink.Close()
		if err != nil {
			return xfer{}, err
		}
		if rt.after != nil {
			if err := rt.after(c.down, x.bytes); err != nil {
				return xfer{}, err
			}
		}
		return x, nil
	}

	// One short unmeasured transfer per case, then the cases take turns,
	// one transfer each, in a new random order every turn, so that load
	// that comes and goes hits all of them alike and no case always
	// follows the same other one.
	per := cfg.bulkTransfer()
	progress(e.stderr, "bulk: %d cases, %d transfers of %d MiB each", len(r.cases), cfg.bulkTransfers, per>>20)
	for _, c := range r.cases {
		if _, err := run(c, min(per, 32<<20)); err != nil {
			return nil, fmt.Errorf("warm-up, %s: %w", c.key(), err)
		}
	}
	for turn := range cfg.bulkTransfers {
		for _, i := range rng.Perm(len(r.cases)) {
			c := r.cases[i]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			x, err := run(c, per)
			if err != nil {
				return nil, fmt.Errorf("%s, transfer %d: %w", c.key(), turn+1, err)
			}
			r.xfers[c.key()] = append(r.xfers[c.key()], x)
		}
		if (turn+1)%max(1, cfg.bulkTransfers/4) == 0 || turn+1 == cfg.bulkTransfers {
			progress(e.stderr, "bulk: %d/%d turns; median so far, up: socat×2 %.2f GB/s, tunnel %.2f GB/s",
				turn+1, cfg.bulkTransfers, medianGBps(r.xfers["socat2/up"]), medianGBps(r.xfers["tunnel/up"]))
		}
	}
	return r, nil
}

// dialRoute connects the generator to addr and waits for the sink to accept
// the far end.
func (e *env) dialRoute(addr string, pids []int, after func(bool, int64) error) (*route, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	s, err := e.sink.next(30 * time.Second)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &route{gen: c.(*net.TCPConn), sink: s, pids: pids, after: after}, nil
}

// socatRoute starts n chained socat relays in front of the sink (the last
// one first, each listening before the next starts) and connects through
// them. Each socat serves this one connection and exits; after waits for
// that (and kills them by PID after 5 s).
func (e *env) socatRoute(ctx context.Context, cfg config, n int) (*route, error) {
	target := e.sink.addr()
	var procs []*proc
	stopAll := func() {
		for _, p := range procs {
			p.stop(time.Second)
		}
	}
	for i := 0; i < n; i++ {
		port, err := freePort()
		if err != nil {
			stopAll()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, cfg.socat, "-b", strconv.Itoa(cfg.socatBuf),
			"TCP-LISTEN:"+strconv.Itoa(port)+",reuseaddr,bind=127.0.0.1", "TCP:"+target)
		p, _, err := e.start("socat", cmd, false)
		if err != nil {
			stopAll()
			return nil, err
		}
		procs = append(procs, p)
		if err := waitListening(p, port, 10*time.Second); err != nil {
			stopAll()
			return nil, err
		}
		target = "127.0.0.1:" + strconv.Itoa(port)
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.pid()
	}
	rt, err := e.dialRoute(target, pids, func(bool, int64) error {
		deadline := time.After(5 * time.Second)
		for _, p := range procs {
			select {
			case <-p.done:
			case <-deadline:
				stopAll()
				return errors.New("a socat relay did not exit after its connection ended")
			}
		}
		return nil
	})
	if err != nil {
		stopAll()
		return nil, err
	}
	return rt, nil
}

// tunnelReports reads both tunnel processes' reports of the connection just
// closed and checks that each moved n bytes the right way.
func tunnelReports(a, b *proc, down bool, n int64) error {
	for _, p := range []*proc{a, b} {
		l, err := p.line(15 * time.Second)
		if err != nil {
			return err
		}
		var up, dn int64
		var msg string
		if _, err := fmt.Sscanf(l, "done %d %d %q", &up, &dn, &msg); err != nil {
			return fmt.Errorf("%s: unexpected report %q", p.name, l)
		}
		if msg != "" {
			return fmt.Errorf("%s: %s", p.name, msg)
		}
		// A's Up is towards the target, B's Up away from it.
		want := [2]int64{n, 0}
		if down != (p == b) {
			want = [2]int64{0, n}
		}
		if [2]int64{up, dn} != want {
			return fmt.Errorf("%s moved %d bytes up and %d down, want %d and %d", p.name, up, dn, want[0], want[1])
		}
	}
	return nil
}

// transfer writes n bytes (buf at a time) on w, half-closes it, and reads
// on r until end of stream; then it ends the other direction the same way
// (outside the timing), so that every relay sees a clean end. pids are the
// relays whose CPU time is counted.
func transfer(w, r *net.TCPConn, buf []byte, n int64, limit time.Duration, pids []int) (xfer, error) {
	guard := time.Now().Add(limit + slack)
	if err := errors.Join(w.SetDeadline(guard), r.SetDeadline(guard)); err != nil {
		return xfer{}, err
	}
	type result struct {
		n   int64
		end time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		rb := make([]byte, len(buf))
		var got int64
		for {
			k, err := r.Read(rb)
			got += int64(k)
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				done <- result{got, time.Now(), err}
				return
			}
		}
	}()
	cpu0, own0 := sumTicks(pids), ownCPU()
	start := time.Now()
	stopAt := start.Add(limit)
	var sent int64
	var werr error
	capped := false
	for sent < n {
		if time.Now().After(stopAt) {
			capped = true
			break
		}
		k, err := w.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(k)
		if err != nil {
			werr = err
			break
		}
	}
	if werr == nil {
		werr = w.CloseWrite()
	}
	if werr != nil {
		abort(w)
		abort(r)
		<-done
		return xfer{}, fmt.Errorf("write after %d bytes: %w", sent, werr)
	}
	res := <-done // bounded by the guard deadline
	cpu1, own1 := sumTicks(pids), ownCPU()
	if res.err != nil {
		return xfer{}, fmt.Errorf("read after %d bytes: %w", res.n, res.err)
	}
	if res.n != sent {
		return xfer{}, fmt.Errorf("the reader got %d bytes, the writer sent %d", res.n, sent)
	}
	// The other direction ends too; the writer sees that end, nothing else.
	if err := r.CloseWrite(); err != nil {
		return xfer{}, fmt.Errorf("half-close the reading end: %w", err)
	}
	if k, err := io.Copy(io.Discard, w); err != nil || k != 0 {
		return xfer{}, fmt.Errorf("the writing end read %d bytes before its end of stream: %v", k, err)
	}
	return xfer{bytes: res.n, elapsed: res.end.Sub(start), relayCPU: cpu1 - cpu0, genCPU: own1 - own0, capped: capped}, nil
}
