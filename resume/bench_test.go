package resume

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

// BenchmarkBulkThroughput measures the bulk throughput of one session over
// loopback TCP with the resume layer (numbering, replay buffer, acks, both
// ends' copies) against raw loopback TCP, in the same run: each iteration
// makes one 16 MiB transfer on each path, in random order, on a long-lived
// connection (one session) per path. The writer writes 256 KiB at a time (a
// 256 KiB message on the resume path); the reader reads 256 KiB at a time
// (a message). It reports the median throughput of each path and their
// ratio (goal: resume/raw ≥ 0.8). Run it with enough iterations for a
// median, for example:
//
//	go test ./resume -run '^$' -bench BulkThroughput -benchtime 60x
func BenchmarkBulkThroughput(b *testing.B) {
	const (
		chunk    = 256 << 10
		transfer = 16 << 20
	)
	ctx := context.Background()

	// Raw TCP: a reader that counts bytes and reports each full transfer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	rawDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			rawDone <- err
			return
		}
		defer c.Close()
		buf := make([]byte, chunk)
		n := 0
		for {
			m, err := c.Read(buf)
			n += m
			for n >= transfer {
				n -= transfer
				rawDone <- nil
			}
			if err != nil {
				if err != io.EOF {
					rawDone <- err
				}
				return
			}
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()

	// The resume layer: a Table behind a TCP listener, one session.
	srv := newTCPServer(b, nil)
	c, err := Open(ctx, tcpDialer(srv.ln.Addr().String(), wire.DefaultMaxPayload), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s := srv.next(b)
	resDone := make(chan error, 1)
	go func() {
		n := 0
		for {
			m, err := s.Recv(ctx)
			if err != nil {
				resDone <- err
				return
			}
			n += len(m)
			if n >= transfer {
				n -= transfer
				resDone <- nil
			}
		}
	}()

	msg := make([]byte, chunk)
	var rawCPU, resCPU time.Duration
	runRaw := func() time.Duration {
		defer func(c time.Duration) { rawCPU += cpuTime() - c }(cpuTime())
		start := time.Now()
		for sent := 0; sent < transfer; sent += chunk {
			if _, err := raw.Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-rawDone; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	runResume := func() time.Duration {
		defer func(c time.Duration) { resCPU += cpuTime() - c }(cpuTime())
		start := time.Now()
		for sent := 0; sent < transfer; sent += chunk {
			if err := c.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-resDone; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	runRaw() // warm up both paths
	runResume()
	rawCPU, resCPU = 0, 0

	var rawT, resT []time.Duration
	b.SetBytes(2 * transfer)
	b.ResetTimer()
	for range b.N {
		if rand.IntN(2) == 0 {
			rawT = append(rawT, runRaw())
			resT = append(resT, runResume())
		} else {
			resT = append(resT, runResume())
			rawT = append(rawT, runRaw())
		}
	}
	b.StopTimer()
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		d := ds[len(ds)/2]
		if len(ds)%2 == 0 {
			d = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
		}
		return float64(transfer) / d.Seconds() / 1e6
	}
	rawMB, resMB := median(rawT), median(resT)
	b.ReportMetric(rawMB, "raw-MB/s")
	b.ReportMetric(resMB, "resume-MB/s")
	b.ReportMetric(resMB/rawMB, "resume/raw")
	// CPU time (all threads of the process, user and system) per MiB
	// moved: the cost of each path independent of what else the machine
	// runs.
	mib := float64(b.N) * transfer / (1 << 20)
	b.ReportMetric(float64(rawCPU.Microseconds())/mib, "raw-cpu-µs/MiB")
	b.ReportMetric(float64(resCPU.Microseconds())/mib, "resume-cpu-µs/MiB")
	b.Logf("%d transfers of %d MiB per path: raw TCP %.0f MB/s, resume layer %.0f MB/s (median): ratio %.2f (goal >= 0.80); CPU per MiB: raw %.0f µs, resume %.0f µs",
		b.N, transfer>>20, rawMB, resMB, resMB/rawMB, float64(rawCPU.Microseconds())/mib, float64(resCPU.Microseconds())/mib)
}

// cpuTime returns the CPU time the process has used, user plus system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
