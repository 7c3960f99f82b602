package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// Section 3: the time from a restored link to the first new application
// message.
//
// Everything runs in this process, on one clock: a client resume.Stream
// (resume.Open, default configuration, so RetryFast 3 and RetryMin 100 ms)
// reaches a resume.Table through a TCP relay that the program can cut.
// Both sides send a trickle of numbered 16-byte messages, one every
// -period, and read the other side's, checking that every message arrives
// once and in order. After -steady of trickle the relay cuts the session's
// connection: it resets both of its sides (SO_LINGER 0), and lets the next
// connection through at once (or after -outage). Per break:
//
//	cut       the moment both sides of the old connection have been reset
//	          (after both closes returned): nothing written after it can
//	          travel on the old connection;
//	restored  the moment the relay's Accept returned the client's new
//	          connection that it forwards to the server (the link is back);
//	first new the moment the receiving side's Recv returned the first
//	          message whose Send was called at or after cut.
//
// The figure is first new − restored, for each direction ("up": client to
// server). cut → restored (the client's detection and redial) and cut →
// first new (what an application sees) are reported beside it.
//
// Each break happens on a fresh session: the client resets its backoff only
// after a connection has lived RetryMax (10 s), so breaks every few
// milliseconds on one session would soon wait seconds before each redial.
// That wait comes before "restored" and would not change the figure, only
// make the run last minutes.

// trickleSize is a trickle message: an 8-byte sequence number and padding.
const trickleSize = 16

// trickle is one direction's bookkeeping: when each message was sent and
// when it arrived, in nanoseconds since the section's base time (0: not
// yet), indexed by sequence number.
type trickle struct {
	sendAt, arriveAt []atomic.Int64
	sent             atomic.Int64 // last sequence number sent
	scan             int64        // where firstAfter's search resumes
}

func newTrickle(n int) *trickle {
	return &trickle{sendAt: make([]atomic.Int64, n), arriveAt: make([]atomic.Int64, n)}
}

func (t *trickle) reset() {
	for i := int64(0); i <= t.sent.Load() && i < int64(len(t.sendAt)); i++ {
		t.sendAt[i].Store(0)
		t.arriveAt[i].Store(0)
	}
	t.sent.Store(0)
	t.scan = 1
}

// relay forwards loopback TCP connections to target and can cut the newest.
type relay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu          sync.Mutex
	pairs       []*relayPair // forwarded connections, oldest first
	refuseUntil time.Time
	refused     int
	changed     chan struct{} // closed and replaced when a pair is added
}

type relayPair struct {
	at             time.Duration // since base: when Accept returned the client's connection
	client, server net.Conn
	once           sync.Once
}

func (p *relayPair) abort() {
	p.once.Do(func() {
		abort(p.server)
		abort(p.client)
	})
}

func newRelay(target string, base time.Time) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, target: target, changed: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			now := time.Now()
			r.mu.Lock()
			refuse := now.Before(r.refuseUntil)
			if refuse {
				r.refused++
			}
			r.mu.Unlock()
			if refuse {
				abort(c)
				continue
			}
			s, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				abort(c)
				continue
			}
			p := &relayPair{at: now.Sub(base), client: c, server: s}
			r.mu.Lock()
			r.pairs = append(r.pairs, p)
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(s, c); p.abort() }()
			go func() { defer r.wg.Done(); io.Copy(c, s); p.abort() }()
		}
	}()
	return r, nil
}

func (r *relay) addr() string { return r.ln.Addr().String() }

// cut resets both sides of the newest connection and refuses new ones for
// outage. It returns the index the next forwarded connection will have.
func (r *relay) cut(outage time.Duration) (int, error) {
	r.mu.Lock()
	n := len(r.pairs)
	if n == 0 {
		r.mu.Unlock()
		return 0, errors.New("relay: nothing to cut")
	}
	p := r.pairs[n-1]
	r.refuseUntil = time.Now().Add(outage)
	r.mu.Unlock()
	p.abort()
	return n, nil
}

// pair waits until the relay has forwarded connection i and returns it.
func (r *relay) pair(ctx context.Context, failed <-chan struct{}, i int) (*relayPair, error) {
	for {
		r.mu.Lock()
		if i < len(r.pairs) {
			p := r.pairs[i]
			r.mu.Unlock()
			return p, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-failed:
			return nil, errors.New("the trickle failed")
		case <-ctx.Done():
			return nil, fmt.Errorf("no reconnection through the relay: %w", ctx.Err())
		}
	}
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	ps := r.pairs
	r.mu.Unlock()
	for _, p := range ps {
		p.abort()
	}
	r.wg.Wait()
}

// breakSample is one break's figures.
type breakSample struct {
	redial               time.Duration // cut → restored
	upNew, downNew       time.Duration // restored → first new message
	upSince, downSince   time.Duration // cut → first new message
	upQueued, downQueued bool          // the first new message was sent before restored
}

type reconnResult struct {
	samples  []breakSample
	messages int64 // messages checked (both directions, measured breaks)
	refused  int   // connections the relay refused during outages
	attaches int   // client connections attached, measured breaks
}

func reconnect(ctx context.Context, cfg config, logw io.Writer) (*reconnResult, error) {
	base := time.Now()
	since := func() int64 { return int64(time.Since(base)) }
	rcfg := resume.DefaultConfig()
	progress(logw, "reconnect: %d breaks after %d unmeasured, one message each way every %s", cfg.breaks, cfg.warmBreaks, cfg.period)

	// The server: a Table behind a loopback listener; new sessions go to
	// the break loop, resumed ones carry on where they were.
	tbl, err := resume.NewTable(rcfg)
	if err != nil {
		return nil, err
	}
	srvLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tbl.Close()
		return nil, err
	}
	sctx, scancel := context.WithCancel(ctx)
	streams := make(chan *resume.Stream)
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for {
			c, err := srvLn.Accept()
			if err != nil {
				return
			}
			swg.Add(1)
			go func() {
				defer swg.Done()
				s, isNew, err := tbl.Accept(sctx, wire.NewStreamConn(c, rcfg.MaxMessage))
				if err != nil || !isNew {
					return
				}
				select {
				case streams <- s:
				case <-sctx.Done():
					s.Close()
				}
			}()
		}
	}()
	rl, err := newRelay(srvLn.Addr().String(), base)
	if err != nil {
		scancel()
		srvLn.Close()
		tbl.Close()
		swg.Wait()
		return nil, err
	}
	defer func() {
		scancel()
		rl.close()
		srvLn.Close()
		tbl.Close()
		swg.Wait()
	}()
	dial := func(ctx context.Context) (wire.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", rl.addr())
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, rcfg.MaxMessage), nil
	}

	// Room for every message of a cycle: the longest a cycle may run,
	// divided by the period.
	cycleCap := cfg.steady + cfg.outage + cfg.breakTimeout + 10*time.Second
	slots := int(cycleCap/cfg.period) + 16
	up, down := newTrickle(slots), newTrickle(slots)

	res := &reconnResult{}
	cycle := func(measured bool) error {
		cctx, cancel := context.WithTimeout(ctx, cycleCap+20*time.Second)
		defer cancel()
		up.reset()
		down.reset()
		cs, err := resume.Open(cctx, dial, rcfg)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		defer cs.Close()
		var ss *resume.Stream
		select {
		case ss = <-streams:
		case <-cctx.Done():
			return errors.New("the server got no session")
		}
		defer ss.Close()

		var (
			wg     sync.WaitGroup
			once   sync.Once
			first  error
			failed = make(chan struct{})
			stop   = make(chan struct{})
		)
		fail := func(err error) { once.Do(func() { first = err; close(failed) }) }
		for _, d := range []struct {
			from, to *resume.Stream
			t        *trickle
			name     string
		}{{cs, ss, up, "up"}, {ss, cs, down, "down"}} {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := sendTrickle(cctx, d.from, d.t, cfg.period, stop, since); err != nil {
					fail(fmt.Errorf("%s: send: %w", d.name, err))
				}
			}()
			go func() {
				defer wg.Done()
				if err := recvTrickle(cctx, d.to, d.t, since); err != nil {
					fail(fmt.Errorf("%s: receive: %w", d.name, err))
				}
			}()
		}
		measure := func() (breakSample, error) {
			select {
			case <-time.After(cfg.steady):
			case <-failed:
				return breakSample{}, first
			}
			n, err := rl.cut(cfg.outage)
			if err != nil {
				return breakSample{}, err
			}
			cut := since()
			wctx, wcancel := context.WithTimeout(cctx, cfg.outage+cfg.breakTimeout)
			defer wcancel()
			p, err := rl.pair(wctx, failed, n)
			if err != nil {
				return breakSample{}, err
			}
			restored := int64(p.at)
			upAt, upSent, err := firstAfter(wctx, failed, up, cut)
			if err != nil {
				return breakSample{}, fmt.Errorf("up: %w", err)
			}
			downAt, downSent, err := firstAfter(wctx, failed, down, cut)
			if err != nil {
				return breakSample{}, fmt.Errorf("down: %w", err)
			}
			return breakSample{
				redial: time.Duration(restored - cut),
				upNew:  time.Duration(upAt - restored), downNew: time.Duration(downAt - restored),
				upSince: time.Duration(upAt - cut), downSince: time.Duration(downAt - cut),
				upQueued: upSent < restored, downQueued: downSent < restored,
			}, nil
		}
		sample, merr := measure()
		if merr == nil {
			// A few more messages on the new connection, then both sides
			// end; the receivers check that everything arrived.
			select {
			case <-time.After(5 * cfg.period):
			case <-failed:
			}
		}
		close(stop)
		if merr != nil { // unblock the receivers at once
			cs.Close()
			ss.Close()
		}
		wg.Wait()
		if merr != nil {
			return merr
		}
		if first != nil {
			return first
		}
		fctx, fcancel := context.WithTimeout(cctx, 10*time.Second)
		defer fcancel()
		if err := errors.Join(cs.Flush(fctx), ss.Flush(fctx)); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if measured {
			res.samples = append(res.samples, sample)
			res.messages += up.sent.Load() + down.sent.Load()
			res.attaches += cs.Stats().Attaches
		}
		return nil
	}
	for i := range cfg.warmBreaks {
		if err := cycle(false); err != nil {
			return nil, fmt.Errorf("warm-up break %d: %w", i+1, err)
		}
	}
	for i := range cfg.breaks {
		if err := cycle(true); err != nil {
			return nil, fmt.Errorf("break %d: %w", i+1, err)
		}
		if (i+1)%max(1, cfg.breaks/4) == 0 || i+1 == cfg.breaks {
			s := slices.Clone(res.samples)
			slices.SortFunc(s, func(a, b breakSample) int { return cmp.Compare(a.upNew, b.upNew) })
			progress(logw, "reconnect: %d/%d breaks; restored → first new message, up, median so far %s",
				i+1, cfg.breaks, ms(s[len(s)/2].upNew))
		}
	}
	rl.mu.Lock()
	res.refused = rl.refused
	rl.mu.Unlock()
	return res, nil
}

// sendTrickle sends message 1, 2, ... one per period until stop, then
// CloseSend. It notes each Send's start in t.sendAt.
func sendTrickle(ctx context.Context, s *resume.Stream, t *trickle, period time.Duration, stop <-chan struct{}, since func() int64) error {
	tk := time.NewTicker(period)
	defer tk.Stop()
	msg := make([]byte, trickleSize)
	for seq := int64(1); ; seq++ {
		select {
		case <-stop:
			return s.CloseSend()
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
		}
		if seq >= int64(len(t.sendAt)) {
			return errors.New("out of sequence numbers (the cycle ran too long)")
		}
		binary.BigEndian.PutUint64(msg, uint64(seq))
		t.sendAt[seq].Store(since())
		if err := s.Send(ctx, msg); err != nil {
			return err
		}
		t.sent.Store(seq)
	}
}

// recvTrickle reads messages until the end of the peer's messages, checks
// that they come once each and in order, and notes when each arrived.
func recvTrickle(ctx context.Context, s *resume.Stream, t *trickle, since func() int64) error {
	var last int64
	for {
		m, err := s.Recv(ctx)
		now := since()
		if err == io.EOF {
			if sent := t.sent.Load(); last != sent {
				return fmt.Errorf("end after message %d of %d", last, sent)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if len(m) != trickleSize {
			return fmt.Errorf("message of %d bytes after message %d", len(m), last)
		}
		seq := int64(binary.BigEndian.Uint64(m))
		if seq != last+1 {
			return fmt.Errorf("message %d after message %d: lost, duplicated or reordered", seq, last)
		}
		if seq < int64(len(t.arriveAt)) {
			t.arriveAt[seq].Store(now)
		}
		last = seq
	}
}

// firstAfter waits for the first message sent at or after cut to arrive
// and returns its arrival and send times. It polls every 100 µs; the
// arrival time is the receiver's own note, so the polling does not change
// it.
func firstAfter(ctx context.Context, failed <-chan struct{}, t *trickle, cut int64) (arrived, sent int64, err error) {
	tk := time.NewTicker(100 * time.Microsecond)
	defer tk.Stop()
	seq := int64(0)
	for {
		for ; seq == 0 && t.scan <= t.sent.Load(); t.scan++ {
			if t.sendAt[t.scan].Load() >= cut {
				seq = t.scan
			}
		}
		if seq != 0 {
			if at := t.arriveAt[seq].Load(); at != 0 {
				return at, t.sendAt[seq].Load(), nil
			}
		}
		select {
		case <-tk.C:
		case <-failed:
			return 0, 0, errors.New("the trickle failed")
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("the first message sent after the cut (%d) has not arrived: %w", seq, ctx.Err())
		}
	}
}
