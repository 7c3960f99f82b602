// Command udprate measures the datagram rate of the udp bearer's batched I/O
// against plain one-datagram-per-system-call UDP, in one run over loopback.
//
//	go run ./bench/udprate -n 1000000 -size 64
//
// Each mode sends -n datagrams of -size bytes from one socket to another as
// fast as it can (stopping early after -time), while a receiver counts what
// arrives. UDP drops what the receiver cannot keep up with, so the figure
// that matters is the receiver's rate: datagrams delivered per second between
// the first and the last arrival. The sender's rate and the loss are printed
// too. Modes:
//
//	single       net.UDPConn WriteToUDPAddrPort / ReadFromUDPAddrPort, one datagram per system call
//	bearer-mmsg  udp bearer (dgram), Conn.Write / Conn.Read per datagram, sendmmsg and recvmmsg
//	             underneath, segmentation offload off (attribute offload=false)
//	bearer       the same with the default segmentation offload (UDP_SEGMENT / UDP_GRO): runs of
//	             equal-sized datagrams travel the kernel as one packet
//	bearer-vec   bearer with Conn.WriteBatch / Conn.ReadBatch, handing -batch datagrams at a time
//
// Both sides of every mode ask for -buffer bytes of socket buffer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/dgram"
	"github.com/bearerkit/connect/bearers/udp"
)

type config struct {
	n      int
	size   int
	limit  time.Duration
	batch  int
	buffer int
}

type result struct {
	mode     string
	cpu      time.Duration // user+system CPU time of the process during the mode
	sent     int64
	sendDur  time.Duration
	received int64
	recvDur  time.Duration
	note     string
}

// cpuPerDatagram is CPU time per datagram sent, in microseconds: both ends
// and all goroutines of the mode together. Unlike rates it barely moves when
// other processes compete for the CPUs.
func (r result) cpuPerDatagram() float64 {
	return float64(r.cpu.Microseconds()) / float64(r.sent)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r result) sendRate() float64 { return float64(r.sent) / r.sendDur.Seconds() }
func (r result) recvRate() float64 {
	if r.recvDur <= 0 {
		return 0
	}
	return float64(r.received) / r.recvDur.Seconds()
}

// quiet is how long the receiver waits for stragglers after the sender is done.
const quiet = 200 * time.Millisecond

// receiver counts datagrams. Its read loop sets no deadline per read (that
// would cost more than the reads); a watchdog stops it with a past deadline
// once the sender is done and nothing arrived for quiet, or at the time limit.
type receiver struct {
	count       atomic.Int64
	first, last time.Time
}

// run reads until cfg.n datagrams arrived or the watchdog stops it. read
// blocks for the next datagrams and returns how many it got.
func (r *receiver) run(cfg config, senderDone <-chan struct{}, setDeadline func(time.Time) error, read func() (int, error)) error {
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the watchdog; ends with run
		hardStop := time.NewTimer(cfg.limit + 5*time.Second)
		defer hardStop.Stop()
		tick := time.NewTicker(quiet / 4)
		defer tick.Stop()
		var prev int64 = -1
		var idleSince time.Time
		for {
			select {
			case <-stop:
				return
			case <-hardStop.C:
				_ = setDeadline(time.Unix(1, 0))
				return
			case now := <-tick.C:
				select {
				case <-senderDone:
				default:
					continue
				}
				if c := r.count.Load(); c != prev {
					prev, idleSince = c, now
				} else if now.Sub(idleSince) >= quiet {
					_ = setDeadline(time.Unix(1, 0))
					return
				}
			}
		}
	}()
	for int(r.count.Load()) < cfg.n {
		k, err := read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		now := time.Now()
		if r.first.IsZero() {
			r.first = now
		}
		r.last = now
		r.count.Add(int64(k))
	}
	return nil
}

func (r *receiver) result(mode string, sent int64, sendDur time.Duration) result {
	res := result{mode: mode, sent: sent, sendDur: sendDur, received: r.count.Load()}
	if res.received > 1 {
		// Rate over the arrivals: the first datagram opens the interval.
		res.recvDur = r.last.Sub(r.first)
		res.received--
	}
	return res
}

// send calls write until cfg.n datagrams are sent or the time limit passes.
// write sends up to want datagrams and returns how many it sent.
func send(cfg config, write func(want int) (int, error)) (int64, time.Duration, error) {
	start := time.Now()
	stop := start.Add(cfg.limit)
	var sent int64
	for int(sent) < cfg.n {
		want := cfg.n - int(sent)
		k, err := write(want)
		sent += int64(k)
		if err != nil {
			return sent, time.Since(start), err
		}
		if sent&1023 < int64(k) && time.Now().After(stop) {
			break
		}
	}
	return sent, time.Since(start), nil
}

func runSingle(cfg config) (result, error) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return result{}, err
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return result{}, err
	}
	defer tx.Close()
	_ = rx.SetReadBuffer(cfg.buffer)
	_ = tx.SetWriteBuffer(cfg.buffer)
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()

	var r receiver
	senderDone := make(chan struct{})
	recvErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 65536)
		recvErr <- r.run(cfg, senderDone, rx.SetReadDeadline, func() (int, error) {
			_, _, err := rx.ReadFromUDPAddrPort(buf)
			return 1, err
		})
	}()
	payload := make([]byte, cfg.size)
	sent, dur, err := send(cfg, func(int) (int, error) {
		if _, err := tx.WriteToUDPAddrPort(payload, dst); err != nil {
			return 0, err
		}
		return 1, nil
	})
	close(senderDone)
	if rerr := <-recvErr; err == nil {
		err = rerr
	}
	return r.result("single", sent, dur), err
}

func runBearer(cfg config, vectored, offload bool) (result, error) {
	b, err := udp.New(bearers.Config{Attributes: bearers.Attributes{
		"batch":       strconv.Itoa(cfg.batch),
		"readBuffer":  strconv.Itoa(cfg.buffer),
		"writeBuffer": strconv.Itoa(cfg.buffer),
		"offload":     strconv.FormatBool(offload),
	}})
	if err != nil {
		return result{}, err
	}
	ctx := context.Background()
	ln, err := b.Listen(ctx, bearers.MustParseEndpoint("udp://127.0.0.1:0"))
	if err != nil {
		return result{}, err
	}
	defer ln.Close()
	c, err := b.Dial(ctx, ln.Endpoint())
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	client := c.(*udp.Conn)

	var r receiver
	senderDone := make(chan struct{})
	recvErr := make(chan error, 1)
	go func() {
		actx, cancel := context.WithTimeout(ctx, cfg.limit+5*time.Second)
		defer cancel()
		sc, err := ln.Accept(actx)
		if err != nil {
			recvErr <- err
			return
		}
		defer sc.Close()
		r.first = time.Now()
		r.count.Add(1) // the datagram that made the peer; read below
		server := sc.(*dgram.Conn)
		bufs := make([][]byte, cfg.batch)
		for i := range bufs {
			bufs[i] = make([]byte, 65536)
		}
		sizes := make([]int, cfg.batch)
		_, _ = server.Read(bufs[0])
		if vectored {
			recvErr <- r.run(cfg, senderDone, server.SetReadDeadline, func() (int, error) {
				return server.ReadBatch(bufs, sizes)
			})
			return
		}
		recvErr <- r.run(cfg, senderDone, server.SetReadDeadline, func() (int, error) {
			_, err := server.Read(bufs[0])
			return 1, err
		})
	}()
	payload := make([]byte, cfg.size)
	var write func(int) (int, error)
	if vectored {
		vec := make([][]byte, cfg.batch)
		for i := range vec {
			vec[i] = payload
		}
		write = func(want int) (int, error) { return client.WriteBatch(vec[:min(want, len(vec))]) }
	} else {
		write = func(int) (int, error) {
			if _, err := client.Write(payload); err != nil {
				return 0, err
			}
			return 1, nil
		}
	}
	sent, dur, err := send(cfg, write)
	close(senderDone)
	rerr := <-recvErr
	if err == nil {
		err = rerr
	}
	mode := "bearer"
	if vectored {
		mode += "-vec"
	}
	if !offload {
		mode += "-mmsg"
	}
	res := r.result(mode, sent, dur)
	cs, ls := client.Stats(), ln.(*dgram.Listener).Stats()
	res.note = fmt.Sprintf("(%.0f dg/sendmmsg, %.0f dg/recvmmsg, %.0f%% sent offloaded, %d dropped in dgram queues)",
		ratio(float64(cs.DatagramsOut), float64(cs.WriteBatches)),
		ratio(float64(ls.DatagramsIn+ls.DropsQueueFull), float64(ls.ReadBatches)),
		100*ratio(float64(cs.OffloadOut), float64(cs.DatagramsOut)), ls.DropsQueueFull)
	return res, err
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func main() {
	var cfg config
	var seconds float64
	var rounds int
	flag.IntVar(&cfg.n, "n", 1000000, "datagrams to send per mode")
	flag.IntVar(&cfg.size, "size", 64, "datagram payload size in bytes")
	flag.Float64Var(&seconds, "time", 10, "stop sending after this many seconds per mode, if -n is not reached")
	flag.IntVar(&cfg.batch, "batch", dgram.DefaultBatch, "datagrams per system call (and per WriteBatch/ReadBatch call)")
	flag.IntVar(&cfg.buffer, "buffer", 4<<20, "socket buffer size requested on both sides, bytes")
	flag.IntVar(&rounds, "rounds", 3, "rounds of all modes; the median is printed")
	only := flag.String("modes", "", "comma-separated modes to run (default all); single always runs as the baseline")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	cfg.limit = time.Duration(seconds * float64(time.Second))
	switch {
	case cfg.n < 2:
		fatalf("-n must be at least 2")
	case cfg.size < 1 || cfg.size > dgram.MaxDatagramSize:
		fatalf("-size must be from 1 to %d", dgram.MaxDatagramSize)
	case cfg.limit <= 0:
		fatalf("-time must be positive")
	case rounds < 1:
		fatalf("-rounds must be at least 1")
	case cfg.batch < 1 || cfg.batch > dgram.MaxBatch:
		fatalf("-batch must be from 1 to %d", dgram.MaxBatch)
	}

	fmt.Printf("udprate: %d datagrams of %d bytes per mode over loopback, batch %d, GOMAXPROCS %d, %s/%s\n",
		cfg.n, cfg.size, cfg.batch, runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatalf("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatalf("%v", err)
		}
		defer pprof.StopCPUProfile()
	}
	modes := []struct {
		name string
		run  func(config) (result, error)
	}{
		{"single", runSingle},
		{"bearer-mmsg", func(c config) (result, error) { return runBearer(c, false, false) }},
		{"bearer", func(c config) (result, error) { return runBearer(c, false, true) }},
		{"bearer-vec", func(c config) (result, error) { return runBearer(c, true, true) }},
	}
	if *only != "" {
		keep := modes[:1]
		for _, m := range modes[1:] {
			if strings.Contains(","+*only+",", ","+m.name+",") {
				keep = append(keep, m)
			}
		}
		modes = keep
	}
	// Rounds interleave the modes, so that a burst of load from elsewhere on
	// the machine does not fall on one mode only; the median round counts.
	all := make([][]result, len(modes))
	for round := 0; round < rounds; round++ {
		for i, m := range modes {
			before := cpuTime()
			res, err := m.run(cfg)
			res.cpu = cpuTime() - before
			if err != nil {
				fatalf("%s: %v", m.name, err)
			}
			all[i] = append(all[i], res)
			runtime.GC()
		}
	}
	results := make([]result, len(modes))
	for i, rs := range all {
		sort.Slice(rs, func(a, b int) bool { return rs[a].recvRate() < rs[b].recvRate() })
		results[i] = rs[len(rs)/2]
	}
	fmt.Printf("median of %d rounds\n", rounds)
	fmt.Printf("%-12s %11s %11s %7s %10s %9s %9s\n", "mode", "sent/s", "received/s", "loss", "rx ratio", "CPU µs/dg", "CPU ratio")
	base := results[0]
	for _, r := range results {
		loss := 100 * (1 - float64(r.received+1)/float64(r.sent))
		fmt.Printf("%-12s %11.0f %11.0f %6.1f%% %9.2fx %9.2f %8.2fx", r.mode, r.sendRate(), r.recvRate(), loss,
			ratio(r.recvRate(), base.recvRate()), r.cpuPerDatagram(), ratio(base.cpuPerDatagram(), r.cpuPerDatagram()))
		if r.note != "" {
			fmt.Printf("  %s", r.note)
		}
		fmt.Println()
	}
	fmt.Println("rx ratio: received/s against single (the target); CPU ratio: single's CPU per datagram over the mode's (higher is cheaper)")
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "udprate: "+format+"\n", args...)
	os.Exit(2)
}
