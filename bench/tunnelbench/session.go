package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// Section 2: one resume session's bulk throughput against raw loopback TCP.
//
// The receiver is another process (this program as "receiver"). On each
// resume path this process opens one session (resume.Open over loopback
// TCP, default configuration) to a resume.Table there and sends -msg-kib
// messages; the receiver Recvs them (path "resume") or reads them with
// CopyTo (path "resume-copyto"), as the session's first message says. On
// the raw path this process writes the same bytes with the same write size
// on one TCP connection; the receiver reads them with a buffer of that size.
// All run for the whole section; each transfer moves a fixed number of bytes and is timed from
// its first write (Send) to the receiver's ack, a 16-byte answer sent once
// it has read them all; a transfer that takes longer than -time plus 20 s
// fails the run. The ack carries the receiver's CPU time, so each
// transfer's CPU cost on both sides is known.

type sessXfer struct {
	bytes   int64
	elapsed time.Duration
	sendCPU time.Duration // this process
	recvCPU time.Duration // the receiver process
}

func (x sessXfer) gbps() float64 { return float64(x.bytes) / x.elapsed.Seconds() / 1e9 }

type sessResult struct {
	transfer int64
	xfers    map[string][]sessXfer
}

// sessPath sends n bytes and returns the receiver's ack.
type sessPath struct {
	key  string
	send func(ctx context.Context, n int64) (acked int64, recvCPU time.Duration, err error)
}

func session(ctx context.Context, cfg config, e *env) (*sessResult, error) {
	transfer := cfg.sessTransfer()
	msgSize := cfg.msgKiB << 10
	p, addrs, err := e.start("receiver", exec.Command(e.exe, "receiver", strconv.FormatInt(transfer, 10), strconv.Itoa(msgSize)), true)
	if err != nil {
		return nil, err
	}
	defer p.stop(3 * time.Second)
	var rawAddr, resAddr string
	if f := strings.Fields(addrs); len(f) == 2 {
		rawAddr, resAddr = f[0], f[1]
	} else {
		return nil, fmt.Errorf("receiver: unexpected first line %q", addrs)
	}

	msg := make([]byte, msgSize)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range msg {
		msg[i] = byte(rng.Uint32())
	}
	parseAck := func(b []byte) (int64, time.Duration, error) {
		if len(b) != ackSize {
			return 0, 0, fmt.Errorf("ack of %d bytes", len(b))
		}
		return int64(binary.BigEndian.Uint64(b)), time.Duration(binary.BigEndian.Uint64(b[8:])), nil
	}

	raw, err := net.DialTimeout("tcp", rawAddr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	rcfg := resume.DefaultConfig()
	open := func(mode string) (*resume.Stream, error) {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := resume.Open(sctx, func(ctx context.Context) (wire.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", resAddr)
			if err != nil {
				return nil, err
			}
			return wire.NewStreamConn(c, rcfg.MaxMessage), nil
		}, rcfg)
		if err != nil {
			return nil, fmt.Errorf("open a session to the receiver: %w", err)
		}
		if err := s.Send(sctx, []byte(mode)); err != nil {
			s.Close()
			return nil, fmt.Errorf("open a session to the receiver: %w", err)
		}
		return s, nil
	}
	resumePath := func(key, mode string) (sessPath, *resume.Stream, error) {
		s, err := open(mode)
		if err != nil {
			return sessPath{}, nil, err
		}
		return sessPath{key, func(ctx context.Context, n int64) (int64, time.Duration, error) {
			for sent := int64(0); sent < n; sent += int64(len(msg)) {
				if err := s.Send(ctx, msg); err != nil {
					return 0, 0, err
				}
			}
			ack, err := s.Recv(ctx)
			if err != nil {
				return 0, 0, fmt.Errorf("wait for the ack: %w", err)
			}
			return parseAck(ack)
		}}, s, nil
	}
	recvPath, s, err := resumePath("resume", modeRecv)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	copyPath, s2, err := resumePath("resume-copyto", modeCopyTo)
	if err != nil {
		return nil, err
	}
	defer s2.Close()

	paths := []sessPath{
		{"raw", func(ctx context.Context, n int64) (int64, time.Duration, error) {
			dl, _ := ctx.Deadline()
			raw.SetDeadline(dl)
			for sent := int64(0); sent < n; sent += int64(len(msg)) {
				if _, err := raw.Write(msg); err != nil {
					return 0, 0, err
				}
			}
			var ack [ackSize]byte
			if _, err := io.ReadFull(raw, ack[:]); err != nil {
				return 0, 0, fmt.Errorf("wait for the ack: %w", err)
			}
			return parseAck(ack[:])
		}},
		recvPath,
		copyPath,
	}

	r := &sessResult{transfer: transfer, xfers: map[string][]sessXfer{}}
	total := map[string]int64{}
	var lastRecvCPU time.Duration
	one := func(p sessPath) (sessXfer, error) {
		tctx, cancel := context.WithTimeout(ctx, cfg.limit+slack)
		defer cancel()
		cpu0 := ownCPU()
		start := time.Now()
		acked, rcpu, err := p.send(tctx, transfer)
		elapsed := time.Since(start)
		cpu1 := ownCPU()
		if err != nil {
			return sessXfer{}, err
		}
		total[p.key] += transfer
		if acked != total[p.key] {
			return sessXfer{}, fmt.Errorf("the receiver acknowledged %d bytes, %d were sent", acked, total[p.key])
		}
		x := sessXfer{bytes: transfer, elapsed: elapsed, sendCPU: cpu1 - cpu0, recvCPU: rcpu - lastRecvCPU}
		lastRecvCPU = rcpu
		return x, nil
	}
	progress(e.stderr, "session: %d transfers of %d MiB per path, %d KiB messages", cfg.sessTransfers, transfer>>20, cfg.msgKiB)
	for _, p := range paths { // warm-up, unmeasured
		if _, err := one(p); err != nil {
			return nil, fmt.Errorf("warm-up, %s: %w", p.key, err)
		}
	}
	for turn := range cfg.sessTransfers {
		for _, i := range rng.Perm(len(paths)) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			x, err := one(paths[i])
			if err != nil {
				return nil, fmt.Errorf("%s, transfer %d: %w", paths[i].key, turn+1, err)
			}
			r.xfers[paths[i].key] = append(r.xfers[paths[i].key], x)
		}
	}
	// A clean end of the sessions.
	for _, s := range []*resume.Stream{s, s2} {
		s.CloseSend()
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s.Flush(fctx)
		cancel()
	}
	return r, nil
}
