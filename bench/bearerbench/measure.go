package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/bearerkit/connect/wire"
)

// slack is added to -time for the I/O deadlines that guard every connection
// against a path that stalls: nothing waits forever.
const slack = 20 * time.Second

// xfer is one throughput transfer.
type xfer struct {
	bytes   int64
	elapsed time.Duration
	capped  bool // -time ended it before -bytes were sent
}

func (x xfer) gbps() float64 { return float64(x.bytes) / x.elapsed.Seconds() / 1e9 }

// series is a set of timed samples (round trips or connection setups).
type series struct {
	samples []time.Duration
	capped  bool // -time ended a run before its count
}

// thrCase is one row of the throughput table.
type thrCase struct {
	key, label string
	path       string // key of the path
	framed     bool   // wrap the stream in wire Data frames
}

// sampleCase is one row of the latency or setup table; path "" is the gRPC
// baseline.
type sampleCase struct {
	key, label, path string
}

type results struct {
	thrCases   []thrCase
	latCases   []sampleCase
	setupCases []sampleCase
	thr        map[string][]xfer
	lat        map[string]*series
	setup      map[string]*series
}

// Latency and setup samples are taken in blocks, the paths taking turns
// block by block, so that whatever else the machine does at a given moment
// hits all paths alike.
const (
	latencyBlock = 100 // round trips per turn
	setupBlock   = 10  // connections per turn
	setupWarmup  = 20  // unmeasured connections per path and run
)

// measure runs the three sections. See docs/BENCHMARKS.md for the method.
func measure(ctx context.Context, cfg config, e *env, progress io.Writer) (*results, error) {
	r := &results{thr: map[string][]xfer{}, lat: map[string]*series{}, setup: map[string]*series{}}
	label := func(k string) string { return e.paths[k].label }
	r.thrCases = []thrCase{
		{key: "raw", label: label("raw"), path: "raw"},
		{key: "tcp-inproc", label: label("tcp-inproc"), path: "tcp-inproc"},
		{key: "tcp", label: label("tcp"), path: "tcp"},
		{key: "tcp-wire", label: label("tcp") + ", wire Data frames", path: "tcp", framed: true},
		{key: "tls", label: label("tls"), path: "tls"},
		{key: "ssl-inproc", label: label("ssl-inproc"), path: "ssl-inproc"},
		{key: "ssl", label: label("ssl"), path: "ssl"},
	}
	r.latCases = []sampleCase{
		{key: "raw", label: label("raw"), path: "raw"},
		{key: "tcp", label: label("tcp"), path: "tcp"},
		{key: "grpc", label: "gRPC-Go unary call, loopback TCP"},
		{key: "tls", label: label("tls"), path: "tls"},
		{key: "ssl-inproc", label: label("ssl-inproc"), path: "ssl-inproc"},
		{key: "ssl", label: label("ssl"), path: "ssl"},
	}
	r.setupCases = []sampleCase{
		{key: "raw", label: label("raw"), path: "raw"},
		{key: "tcp-inproc", label: label("tcp-inproc"), path: "tcp-inproc"},
		{key: "tcp", label: label("tcp"), path: "tcp"},
		{key: "tls", label: label("tls"), path: "tls"},
		{key: "ssl-inproc", label: label("ssl-inproc"), path: "ssl-inproc"},
		{key: "ssl", label: label("ssl"), path: "ssl"},
	}
	perRun := func(total int) int { return (total + cfg.runs - 1) / cfg.runs }

	if cfg.sections["throughput"] {
		// One short unmeasured transfer per case first, so that the first
		// measured one does not pay for cold buffers and code.
		warm := cfg
		warm.bytes = min(cfg.transferSize(), 64<<20)
		for _, c := range r.thrCases {
			if _, err := throughput(ctx, e.paths[c.path], warm, c.framed); err != nil {
				return nil, fmt.Errorf("throughput warm-up, %s: %w", c.label, err)
			}
		}
		// The paths take turns, one transfer each, in a new random order
		// every turn: load that comes and goes on a shared machine then hits
		// all paths alike, and no path always follows the same other one
		// (what ran just before affects a transfer). Single transfers vary
		// a lot (where the kernel and the Go scheduler put writer and reader
		// decides much of loopback throughput), so there are many short
		// ones and the figure is their median.
		per := cfg.transferSize()
		one := cfg
		one.bytes = per
		rng := rand.New(rand.NewPCG(1, 1))
		for turn := range cfg.transfers {
			for _, i := range rng.Perm(len(r.thrCases)) {
				c := r.thrCases[i]
				x, err := throughput(ctx, e.paths[c.path], one, c.framed)
				if err != nil {
					return nil, fmt.Errorf("throughput, %s: %w", c.label, err)
				}
				r.thr[c.key] = append(r.thr[c.key], x)
			}
			if (turn+1)%max(1, cfg.transfers/4) == 0 || turn+1 == cfg.transfers {
				fmt.Fprintf(progress, "throughput: %d/%d transfers per path done; median so far: raw %.2f GB/s, tcp bearer via plugin %.2f GB/s\n",
					turn+1, cfg.transfers, summarizeThr(r.thr["raw"]).median, summarizeThr(r.thr["tcp"]).median)
			}
		}
	}
	if cfg.sections["latency"] {
		open := func(c sampleCase, guard time.Time) (stepper, error) {
			if c.path == "" {
				return newGRPCStepper(ctx, e.grpc, cfg, guard), nil
			}
			return newEchoStepper(ctx, e.paths[c.path], cfg, guard)
		}
		for run := range cfg.runs {
			got, err := interleave(cfg, run, r.latCases, open, perRun(cfg.rtts), latencyBlock, cfg.warmup)
			if err != nil {
				return nil, fmt.Errorf("latency, %w", err)
			}
			for i, c := range r.latCases {
				r.lat[c.key] = r.lat[c.key].add(got[i])
				fmt.Fprintf(progress, "run %d/%d latency    %-48s p50 %6.1f µs (%d round trips)\n",
					run+1, cfg.runs, c.label, micros(percentile(got[i].samples, 50)), len(got[i].samples))
			}
		}
	}
	if cfg.sections["setup"] {
		open := func(c sampleCase, guard time.Time) (stepper, error) {
			return newSetupStepper(ctx, e.paths[c.path], guard)
		}
		for run := range cfg.runs {
			got, err := interleave(cfg, run, r.setupCases, open, perRun(cfg.conns), setupBlock, setupWarmup)
			if err != nil {
				return nil, fmt.Errorf("connection setup, %w", err)
			}
			for i, c := range r.setupCases {
				r.setup[c.key] = r.setup[c.key].add(got[i])
				fmt.Fprintf(progress, "run %d/%d setup      %-48s p50 %6.1f µs (%d connections)\n",
					run+1, cfg.runs, c.label, micros(percentile(got[i].samples, 50)), len(got[i].samples))
			}
		}
	}
	return r, nil
}

func (s *series) add(o *series) *series {
	if s == nil {
		s = &series{}
	}
	s.samples = append(s.samples, o.samples...)
	s.capped = s.capped || o.capped
	return s
}

// stepper performs one timed operation per step: a round trip, a call, a
// connection setup.
type stepper interface {
	step() (time.Duration, error)
	close()
}

// interleave opens one stepper per case, warms each up with warm steps,
// then takes n samples from each in blocks, the cases taking turns in a new
// random order every turn. A case that has spent -time on its samples
// stops early and is marked capped. guard bounds every connection's I/O.
func interleave(cfg config, run int, cases []sampleCase, open func(sampleCase, time.Time) (stepper, error), n, block, warm int) ([]*series, error) {
	guard := time.Now().Add(time.Duration(len(cases))*(cfg.limit+cfg.limit/2) + slack)
	steppers := make([]stepper, len(cases))
	defer func() {
		for _, st := range steppers {
			if st != nil {
				st.close()
			}
		}
	}()
	for i, c := range cases {
		st, err := open(c, guard)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.label, err)
		}
		steppers[i] = st
	}
	for i, st := range steppers {
		for range warm {
			if _, err := st.step(); err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", cases[i].label, err)
			}
		}
	}
	out := make([]*series, len(cases))
	used := make([]time.Duration, len(cases))
	for i := range out {
		out[i] = &series{samples: make([]time.Duration, 0, n)}
	}
	rng := rand.New(rand.NewPCG(2, uint64(run)))
	for {
		busy := false
		for _, i := range rng.Perm(len(cases)) {
			s := out[i]
			if len(s.samples) >= n || s.capped {
				continue
			}
			busy = true
			start := time.Now()
			for k := 0; k < block && len(s.samples) < n; k++ {
				d, err := steppers[i].step()
				if err != nil {
					return nil, fmt.Errorf("%s: %w", cases[i].label, err)
				}
				s.samples = append(s.samples, d)
			}
			used[i] += time.Since(start)
			if used[i] > cfg.limit && len(s.samples) < n {
				s.capped = true
			}
		}
		if !busy {
			return out, nil
		}
	}
}

// throughput streams cfg.bytes (or what -time allows) from the dialing side
// to the accepting side of a fresh connection, in cfg.chunk writes (or
// cfg.framePay Data frames), and times it from the first write to the
// reader's end of stream.
func throughput(ctx context.Context, p *path, cfg config, framed bool) (xfer, error) {
	l, err := p.open(ctx)
	if err != nil {
		return xfer{}, fmt.Errorf("listen: %w", err)
	}
	defer l.close()
	c, s, err := pair(ctx, l, slack)
	if err != nil {
		return xfer{}, err
	}
	defer c.Close()
	defer s.Close()
	guard := time.Now().Add(cfg.limit + slack)
	if err := c.SetDeadline(guard); err != nil {
		return xfer{}, err
	}
	if err := s.SetDeadline(guard); err != nil {
		return xfer{}, err
	}

	type readResult struct {
		n   int64
		end time.Time
		err error
	}
	done := make(chan readResult, 1)
	go func() {
		var n int64
		var err error
		if framed {
			wc := wire.NewStreamConn(s, 0)
			for {
				f, e := wc.ReadFrame()
				if e != nil {
					if e != io.EOF {
						err = e
					}
					break
				}
				n += int64(len(f.Payload))
			}
		} else {
			buf := make([]byte, cfg.chunk)
			for {
				k, e := s.Read(buf)
				n += int64(k)
				if e != nil {
					if !errors.Is(e, io.EOF) {
						err = e
					}
					break
				}
			}
		}
		done <- readResult{n: n, end: time.Now(), err: err}
	}()

	buf := make([]byte, max(cfg.chunk, cfg.framePay))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
	}
	var wc wire.Conn
	if framed {
		wc = wire.NewStreamConn(c, 0)
	}
	var sent int64
	var werr error
	capped := false
	start := time.Now()
	stopAt := start.Add(cfg.limit)
	for sent < cfg.bytes && werr == nil {
		if time.Now().After(stopAt) {
			capped = true
			break
		}
		if framed {
			n := min(int64(cfg.framePay), cfg.bytes-sent)
			if werr = wc.WriteFrame(wire.Frame{Type: wire.TypeData, Channel: 1, Payload: buf[:n]}); werr == nil {
				sent += n
			}
		} else {
			n := min(int64(cfg.chunk), cfg.bytes-sent)
			k, err := c.Write(buf[:n])
			sent += int64(k)
			werr = err
		}
	}
	if werr == nil {
		werr = closeWrite(c)
	}
	if werr != nil {
		c.Close()
		s.Close()
		<-done
		return xfer{}, fmt.Errorf("write after %d bytes: %w", sent, werr)
	}
	rr := <-done // bounded by the guard deadline
	if rr.err != nil {
		return xfer{}, fmt.Errorf("read after %d bytes: %w", rr.n, rr.err)
	}
	if rr.n != sent {
		return xfer{}, fmt.Errorf("reader got %d bytes, writer sent %d", rr.n, sent)
	}
	return xfer{bytes: rr.n, elapsed: rr.end.Sub(start), capped: capped}, nil
}

// echoStepper times round trips of cfg.size bytes on one connection of a
// path: the dialing side writes, the accepting side echoes. Each message
// carries a sequence number, checked on return.
type echoStepper struct {
	l       *listener
	c       net.Conn
	echoed  chan struct{}
	out, in []byte
	seq     uint64
}

func newEchoStepper(ctx context.Context, p *path, cfg config, guard time.Time) (_ *echoStepper, err error) {
	l, err := p.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	c, s, err := pair(ctx, l, slack)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(c.SetDeadline(guard), s.SetDeadline(guard)); err != nil {
		c.Close()
		s.Close()
		return nil, err
	}
	e := &echoStepper{l: l, c: c, echoed: make(chan struct{}), out: make([]byte, cfg.size), in: make([]byte, cfg.size)}
	go func() {
		defer close(e.echoed)
		defer s.Close()
		buf := make([]byte, cfg.size)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
	}()
	return e, nil
}

func (e *echoStepper) step() (time.Duration, error) {
	e.seq++
	var tag [8]byte
	binary.LittleEndian.PutUint64(tag[:], e.seq)
	copy(e.out, tag[:])
	t0 := time.Now()
	if _, err := e.c.Write(e.out); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(e.c, e.in); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if !bytes.Equal(e.in, e.out) {
		return 0, fmt.Errorf("round trip %d: the echo differs from what was sent", e.seq)
	}
	return d, nil
}

func (e *echoStepper) close() {
	e.c.Close()
	<-e.echoed
	e.l.close()
}

// grpcStepper times unary calls of cfg.size bytes on the baseline's client
// connection.
type grpcStepper struct {
	g      *grpcBaseline
	ctx    context.Context
	cancel context.CancelFunc
	in     []byte
	out    []byte
	seq    uint64
}

func newGRPCStepper(ctx context.Context, g *grpcBaseline, cfg config, guard time.Time) *grpcStepper {
	ctx, cancel := context.WithDeadline(ctx, guard)
	return &grpcStepper{g: g, ctx: ctx, cancel: cancel, in: make([]byte, cfg.size)}
}

func (s *grpcStepper) step() (time.Duration, error) {
	s.seq++
	var tag [8]byte
	binary.LittleEndian.PutUint64(tag[:], s.seq)
	copy(s.in, tag[:])
	t0 := time.Now()
	if err := s.g.call(s.ctx, s.in, &s.out); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if !bytes.Equal(s.in, s.out) {
		return 0, fmt.Errorf("call %d: the echo differs from what was sent", s.seq)
	}
	return d, nil
}

func (s *grpcStepper) close() { s.cancel() }

// setupStepper opens one connection per step and times it from the start of
// Dial to the return of Accept on the listening side, where a goroutine
// accepts continuously, as a server does.
type setupStepper struct {
	l      *listener
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan accepted
}

func newSetupStepper(ctx context.Context, p *path, guard time.Time) (*setupStepper, error) {
	ctx, cancel := context.WithDeadline(ctx, guard)
	l, err := p.open(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &setupStepper{l: l, ctx: ctx, cancel: cancel, ch: make(chan accepted, 1)}
	go func() {
		defer close(s.ch)
		for {
			c, err := l.accept(ctx)
			s.ch <- accepted{c: c, at: time.Now(), err: err}
			if err != nil {
				return
			}
		}
	}()
	return s, nil
}

func (s *setupStepper) step() (time.Duration, error) {
	t0 := time.Now()
	c, err := s.l.dial(s.ctx)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	select {
	case a, ok := <-s.ch:
		if !ok {
			return 0, errors.New("accept: the listener stopped")
		}
		if a.err != nil {
			return 0, fmt.Errorf("accept: %w", a.err)
		}
		a.c.Close()
		return a.at.Sub(t0), nil
	case <-s.ctx.Done():
		return 0, fmt.Errorf("accept: %w", s.ctx.Err())
	}
}

func (s *setupStepper) close() {
	s.l.close() // ends the acceptor's Accept
	s.cancel()
	for a := range s.ch {
		if a.c != nil {
			a.c.Close()
		}
	}
}
