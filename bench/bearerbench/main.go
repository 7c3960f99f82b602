// Command bearerbench measures what the plugin boundary costs the data path:
// bulk throughput, 64-byte round-trip latency and connection setup of the
// stock tcp and ssl bearers running as plugin subprocesses, against raw Go
// loopback TCP (and crypto/tls, and a gRPC-Go unary call) measured in the
// same run on the same machine. It prints Markdown tables with ratios and a
// one-line summary against the targets; docs/BENCHMARKS.md explains the
// figures.
//
//	go run ./bench/bearerbench [-bytes 4GiB] [-transfers 64] [-rtts 20000] [-conns 500] [-runs 5] [-time 5s]
//
// Everything runs on 127.0.0.1. Every loop is bounded by a count and by
// -time; the plugin subprocesses are stopped before the program exits.
//
// The program is its own plugin executable: started as
// "bearerbench plugin bearer NAME" it serves the stock bearer NAME, exactly as
// connectserver re-executes itself for its stock bearers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bearerkit/connect/bearers/stock"
)

type config struct {
	bytes      int64         // streamed per path, all transfers together
	transfers  int           // throughput transfers per path
	chunk      int           // write and read size of the throughput streams
	framePay   int           // wire Data payload size
	rtts       int           // measured round trips per path, all runs together
	warmup     int           // unmeasured round trips per connection
	conns      int           // measured connection setups per path, all runs together
	runs       int           // latency and setup rounds, on fresh connections each
	limit      time.Duration // cap on a transfer, and on a path's series per run
	size       int           // round-trip message size
	sections   map[string]bool
	verbose    bool
	executable string
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "plugin" && os.Args[2] == "bearer" {
		if err := stock.ServePlugin(os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "bearerbench:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bearerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		bytesF   = sizeFlag(4 << 30)
		chunkF   = sizeFlag(256 << 10)
		frameF   = sizeFlag(64 << 10)
		sections string
		cfg      config
	)
	fs.Var(&bytesF, "bytes", "bytes streamed per path, split into -transfers transfers (suffixes KiB, MiB, GiB)")
	fs.IntVar(&cfg.transfers, "transfers", 64, "throughput transfers per path, each on a fresh connection")
	fs.Var(&chunkF, "chunk", "write (and read) size of the throughput streams")
	fs.Var(&frameF, "frame", "payload of each wire Data frame in the framed throughput case")
	fs.IntVar(&cfg.rtts, "rtts", 20000, "measured round trips per path (split across the runs)")
	fs.IntVar(&cfg.warmup, "warmup", 1000, "unmeasured warm-up round trips per path and run")
	fs.IntVar(&cfg.conns, "conns", 500, "measured connection setups per path (split across the runs)")
	fs.IntVar(&cfg.runs, "runs", 5, "latency and setup rounds, each on fresh connections; -rtts and -conns are split across them")
	fs.DurationVar(&cfg.limit, "time", 5*time.Second, "cap on each throughput transfer, and on the time each path spends on its latency or setup samples in one run; a capped measurement reports what it did in that time")
	fs.IntVar(&cfg.size, "size", 64, "round-trip message size in bytes")
	fs.StringVar(&sections, "only", "throughput,latency,setup", "sections to run, comma-separated")
	fs.BoolVar(&cfg.verbose, "v", false, "log the plugins' and the host's messages")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bearerbench [flags]\n\nMeasures the tcp and ssl bearers through the plugin boundary against raw loopback TCP.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bearerbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.bytes, cfg.chunk, cfg.framePay = int64(bytesF), int(chunkF), int(frameF)
	cfg.sections = map[string]bool{}
	for _, s := range strings.Split(sections, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "throughput", "latency", "setup":
			cfg.sections[s] = true
		case "":
		default:
			fmt.Fprintf(stderr, "bearerbench: -only: unknown section %q (want throughput, latency, setup)\n", s)
			return 2
		}
	}
	switch {
	case cfg.bytes <= 0 || cfg.chunk <= 0 || cfg.framePay <= 0:
		fmt.Fprintln(stderr, "bearerbench: -bytes, -chunk and -frame must be positive")
		return 2
	case cfg.framePay > 1<<20:
		fmt.Fprintln(stderr, "bearerbench: -frame must be at most 1MiB (the wire default maximum payload)")
		return 2
	case cfg.rtts <= 0 || cfg.warmup < 0 || cfg.conns <= 0 || cfg.runs <= 0 || cfg.transfers <= 0 || cfg.limit <= 0:
		fmt.Fprintln(stderr, "bearerbench: -rtts, -conns, -runs, -transfers and -time must be positive, -warmup not negative")
		return 2
	case cfg.size <= 0 || cfg.size > 1<<20:
		fmt.Fprintln(stderr, "bearerbench: -size must be from 1 to 1MiB")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "bearerbench: cannot find my own executable to start the plugins:", err)
		return 1
	}
	cfg.executable = exe

	level := slog.LevelWarn
	if cfg.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env, err := setup(ctx, cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "bearerbench:", err)
		return 1
	}
	// On a signal, stop the plugins at once: the measurements notice their
	// connections failing and the program ends through the normal path.
	context.AfterFunc(ctx, env.close)
	defer env.close()

	start := time.Now()
	printHeader(stdout)
	res, err := measure(ctx, cfg, env, stderr)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintln(stderr, "bearerbench:", err)
		return 1
	}
	report(stdout, cfg, res)
	fmt.Fprintf(stdout, "\n(total %.1f s)\n", time.Since(start).Seconds())
	return 0
}

// transferSize is the size of one throughput transfer.
func (c config) transferSize() int64 { return max(1, c.bytes/int64(c.transfers)) }

func printHeader(w io.Writer) {
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "# bearerbench\n\n")
	fmt.Fprintf(w, "%s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s; loopback 127.0.0.1\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), kernel)
}

// sizeFlag is a byte count with an optional binary suffix: 512, 64KiB, 2GiB
// (K, M, G and KB, MB, GB are taken as binary too).
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30},
	} {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q: want a number of bytes, optionally with KiB, MiB or GiB", v)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}
