// Command tunnelbench measures the tunnel and the resume layer under it, every
// figure as a ratio against a baseline measured in the same run, on
// loopback (127.0.0.1):
//
//  1. bulk throughput of one tunnelled TCP connection (client side →
//     resume stream → server side → TCP target) against the same bytes
//     through two chained socat relays (`socat -b 262144`), with one socat
//     relay and a direct TCP connection as further references; both
//     directions;
//
//  2. bulk throughput of one resume session (64 KiB messages, read with
//     Recv, and on a second session with CopyTo) against one raw TCP
//     connection with the same 64 KiB writes, the receiver in another
//     process;
//
//  3. the time from a restored link to the first new application message:
//     a session carries a trickle of numbered messages both ways through a
//     relay that this program cuts (resets both sides) and at once lets the
//     client reconnect through; p50 and p99 over -breaks breaks.
//
//     go run ./bench/tunnelbench [-only bulk,session,reconnect] [-bulk-mib 1024]
//     [-bulk-transfers 16] [-session-mib 1024] [-session-transfers 16]
//     [-breaks 200] [-period 1ms] [-outage 0] [-time 30s]
//
// The two tunnel processes are this program re-executed ("tunnelbench
// tunnel-client ADDR", "tunnelbench tunnel-server ADDR"), because
// `connectclient tunnel` and the core's tunnel wiring do not exist yet; once
// they do, the tunnel path should run them instead. The receiver of section
// 2 is "tunnelbench receiver ...". Every loop is bounded by a count and by a
// time cap; every process the program starts (its children and the socat
// relays) is stopped by PID before it exits, on Ctrl-C too. It writes no
// files, except the CPU profiles -profile asks for. docs/BENCHMARKS.md
// explains the method and records the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Goals (docs/BENCHMARKS.md, "Tunnel and resume layer").
const (
	goalTunnelVsSocat2 = 1.5                    // tunnel ≥ 1.5× two chained socat relays
	goalDesignVsSocat1 = 0.7                    // DESIGN.md §6: tunnel ≥ 70% of a plain socat relay
	goalSessionVsRaw   = 0.8                    // one resume session ≥ 0.8× raw loopback TCP
	goalRestoreP50     = 50 * time.Millisecond  // link restored → first new message, p50
	goalRestoreP99     = 200 * time.Millisecond // … and p99
)

type config struct {
	sections map[string]bool
	downToo  bool // measure the download direction in section 1 too

	bulkMiB, bulkTransfers int
	chunkKiB               int
	sessMiB, sessTransfers int
	msgKiB                 int
	breaks, warmBreaks     int
	period, steady, outage time.Duration
	breakTimeout           time.Duration
	limit                  time.Duration
	socat                  string
	socatBuf               int    // socat's -b
	childProcs             int    // GOMAXPROCS of the child processes; 0: Go's default
	profile                string // directory for CPU profiles of every Go process
}

func (c config) bulkTransfer() int64 {
	return max(1, int64(c.bulkMiB)<<20/int64(c.bulkTransfers))
}

func (c config) sessTransfer() int64 {
	// A whole number of messages, so that the receiver's count lands on
	// each transfer's end.
	msg := int64(c.msgKiB) << 10
	return max(1, int64(c.sessMiB)<<20/int64(c.sessTransfers)/msg) * msg
}

func main() {
	if len(os.Args) >= 2 {
		if code, ok := child(os.Args[1], os.Args[2:]); ok {
			os.Exit(code)
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tunnelbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg       config
		only, dir string
	)
	fs.StringVar(&only, "only", "bulk,session,reconnect", "sections to run, comma-separated")
	fs.StringVar(&dir, "dir", "up,down", "section 1 directions: up (towards the target), down, or both")
	fs.IntVar(&cfg.bulkMiB, "bulk-mib", 1024, "section 1: MiB per path and direction, split into -bulk-transfers transfers")
	fs.IntVar(&cfg.bulkTransfers, "bulk-transfers", 16, "section 1: transfers per path and direction, each on a fresh tunnelled connection")
	fs.IntVar(&cfg.chunkKiB, "chunk-kib", 256, "section 1: the load generator's write and read size, KiB")
	fs.IntVar(&cfg.sessMiB, "session-mib", 1024, "section 2: MiB per path, split into -session-transfers transfers")
	fs.IntVar(&cfg.sessTransfers, "session-transfers", 16, "section 2: transfers per path, on one long-lived session (connection)")
	fs.IntVar(&cfg.msgKiB, "msg-kib", 64, "section 2: message (and raw write and read) size, KiB")
	fs.IntVar(&cfg.breaks, "breaks", 200, "section 3: measured link breaks")
	fs.IntVar(&cfg.warmBreaks, "warmup-breaks", 5, "section 3: unmeasured link breaks first")
	fs.DurationVar(&cfg.period, "period", time.Millisecond, "section 3: one message each way every period")
	fs.DurationVar(&cfg.steady, "steady", 20*time.Millisecond, "section 3: trickle time before each break")
	fs.DurationVar(&cfg.outage, "outage", 0, "section 3: after a cut the relay refuses (resets) connections for this long; 0 lets the client back at once")
	fs.DurationVar(&cfg.breakTimeout, "break-timeout", 30*time.Second, "section 3: cap on waiting for the first new message after one break")
	fs.DurationVar(&cfg.limit, "time", 30*time.Second, "cap on each transfer of sections 1 and 2 (a capped transfer reports what it moved, marked †)")
	fs.StringVar(&cfg.socat, "socat", "socat", "the socat executable")
	fs.IntVar(&cfg.socatBuf, "socat-buf", 262144, "socat's -b (its read and write size), bytes")
	fs.IntVar(&cfg.childProcs, "child-procs", 0, "GOMAXPROCS of the tunnel processes and the receiver (0: Go's default, the number of CPUs)")
	fs.StringVar(&cfg.profile, "profile", "", "write CPU profiles of this process and of each child process (MODE.pprof) into this existing directory")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tunnelbench [flags]\n\nMeasures the tunnel against chained socat relays, a resume session against raw TCP,\nand the time from a restored link to the first new message.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tunnelbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.sections = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		switch s = strings.TrimSpace(s); s {
		case "bulk", "session", "reconnect":
			cfg.sections[s] = true
		case "":
		default:
			fmt.Fprintf(stderr, "tunnelbench: -only: unknown section %q (want bulk, session, reconnect)\n", s)
			return 2
		}
	}
	switch strings.ReplaceAll(dir, " ", "") {
	case "up":
	case "up,down", "down,up", "both":
		cfg.downToo = true
	default:
		fmt.Fprintf(stderr, "tunnelbench: -dir: want up or up,down, not %q\n", dir)
		return 2
	}
	switch {
	case cfg.bulkMiB <= 0 || cfg.bulkTransfers <= 0 || cfg.sessMiB <= 0 || cfg.sessTransfers <= 0:
		fmt.Fprintln(stderr, "tunnelbench: -bulk-mib, -bulk-transfers, -session-mib and -session-transfers must be positive")
		return 2
	case cfg.bulkMiB > 1<<20 || cfg.sessMiB > 1<<20 || cfg.bulkTransfers > 100000 || cfg.sessTransfers > 100000:
		fmt.Fprintln(stderr, "tunnelbench: at most 1 TiB and 100000 transfers per section")
		return 2
	case cfg.chunkKiB <= 0 || cfg.chunkKiB > 16<<10:
		fmt.Fprintln(stderr, "tunnelbench: -chunk-kib must be from 1 to 16384")
		return 2
	case cfg.msgKiB <= 0 || cfg.msgKiB > 1<<10:
		fmt.Fprintln(stderr, "tunnelbench: -msg-kib must be from 1 to 1024 (the resume layer's default MaxMessage)")
		return 2
	case cfg.breaks <= 0 || cfg.breaks > 100000 || cfg.warmBreaks < 0 || cfg.warmBreaks > 1000:
		fmt.Fprintln(stderr, "tunnelbench: -breaks must be from 1 to 100000, -warmup-breaks from 0 to 1000")
		return 2
	case cfg.period < 100*time.Microsecond || cfg.steady < cfg.period || cfg.outage < 0 || cfg.outage > time.Minute ||
		cfg.breakTimeout <= 0 || cfg.limit <= 0:
		fmt.Fprintln(stderr, "tunnelbench: -period at least 100µs, -steady at least -period, -outage from 0 to 1m, -break-timeout and -time positive")
		return 2
	case cfg.childProcs < 0 || cfg.socatBuf <= 0:
		fmt.Fprintln(stderr, "tunnelbench: -child-procs must not be negative, -socat-buf must be positive")
		return 2
	}
	if cfg.profile != "" {
		if st, err := os.Stat(cfg.profile); err != nil || !st.IsDir() {
			fmt.Fprintf(stderr, "tunnelbench: -profile %s: not a directory\n", cfg.profile)
			return 2
		}
	}
	if cfg.sections["bulk"] {
		p, err := exec.LookPath(cfg.socat)
		if err != nil {
			fmt.Fprintf(stderr, "tunnelbench: section 1 needs socat (-socat, or -only session,reconnect): %v\n", err)
			return 1
		}
		cfg.socat = p
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A cap on the whole run, whatever happens.
	total := 10*time.Minute + time.Duration(2*cfg.bulkTransfers*4+2*cfg.sessTransfers)*cfg.limit/4 +
		time.Duration(cfg.breaks+cfg.warmBreaks)*(cfg.steady+cfg.outage+time.Second)
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()

	var childEnv []string
	if cfg.childProcs > 0 {
		childEnv = append(childEnv, fmt.Sprintf("GOMAXPROCS=%d", cfg.childProcs))
	}
	if cfg.profile != "" {
		childEnv = append(childEnv, profileEnv+"="+cfg.profile)
		defer startProfile(cfg.profile, "tunnelbench")()
	}
	e, err := newEnv(stderr, childEnv)
	if err != nil {
		fmt.Fprintln(stderr, "tunnelbench:", err)
		return 1
	}
	defer e.close()
	// On a signal or the cap, stop every process at once: the measurements
	// see their connections fail and the program ends the normal way.
	context.AfterFunc(ctx, e.close)

	start := time.Now()
	printHeader(stdout, cfg)
	fail := func(section string, err error) int {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%v): %w", context.Cause(ctx), err)
		}
		fmt.Fprintf(stderr, "tunnelbench: %s: %v\n", section, err)
		return 1
	}
	var sum summary
	if cfg.sections["bulk"] {
		r, err := bulk(ctx, cfg, e)
		if err != nil {
			return fail("bulk throughput", err)
		}
		reportBulk(stdout, cfg, r, &sum)
	}
	if cfg.sections["session"] {
		r, err := session(ctx, cfg, e)
		if err != nil {
			return fail("session throughput", err)
		}
		reportSession(stdout, cfg, r, &sum)
	}
	if cfg.sections["reconnect"] {
		r, err := reconnect(ctx, cfg, stderr)
		if err != nil {
			return fail("reconnection", err)
		}
		reportReconnect(stdout, cfg, r, &sum)
	}
	sum.print(stdout)
	fmt.Fprintf(stdout, "\n(total %.1f s; load average at the end: %s)\n", time.Since(start).Seconds(), loadavg())
	return 0
}

func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "tunnelbench: "+format+"\n", args...)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func printHeader(w io.Writer, cfg config) {
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "# tunnelbench\n\n%s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s; loopback 127.0.0.1; load average at the start: %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), kernel, loadavg())
	if cfg.childProcs > 0 {
		fmt.Fprintf(w, "child processes (tunnel client and server sides, receiver) with GOMAXPROCS %d\n", cfg.childProcs)
	}
	if cfg.sections["bulk"] {
		v := "?"
		if out, err := exec.Command(cfg.socat, "-V").Output(); err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "socat version") {
					v = strings.TrimSpace(l)
					break
				}
			}
		}
		fmt.Fprintf(w, "%s (%s), relays run as `socat -b %d TCP-LISTEN:PORT,reuseaddr,bind=127.0.0.1 TCP:127.0.0.1:NEXT`\n", v, cfg.socat, cfg.socatBuf)
	}
}
