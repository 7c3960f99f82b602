// Command diagcost measures what diagnostics cost (docs/DIAGNOSTICS.md):
// the same method call and the same bulk transfer against two connectserver
// processes that differ only in their diagnostics, in the same run:
//
//   - on:  <diagnostics enabled="true"/> (the default) with the built-in
//     Diagnostics service, so that every measurement runs and the sampler
//     publishes a snapshot each second; with -watch, a client also watches
//     the Diagnostics service's whole tree, as connectclient top does;
//   - off: <diagnostics enabled="false"/>, no Diagnostics service.
//
// Both host the example echo service (examples/echoservice) as a plugin
// and take a Go client over the tcp bearer. Three series, each taking
// turns between on and off so that machine noise hits both alike:
//
//  1. latency of one 64-byte echo call, one caller: p50 and p99, the two
//     servers alternating every 100 calls (bench/internal/measure);
//  2. calls per second, -callers concurrent callers, one session each;
//  3. bulk: -bulk-callers callers echoing -bulk bytes per call, in bytes
//     per second both ways (the largest payload a session carries is 1 MiB).
//
// Every series runs in -rounds rounds (series 2 and 3: -time per server,
// the order alternating from round to round). The report gives each figure
// pooled over all rounds, and the median over the rounds of the on/off
// ratio of the round: on a shared machine, where other work comes in bursts
// that hit one side of a round more than the other, the median is the
// steadier figure.
//
//	go run ./bench/diagcost [-calls 20000] [-warmup 2000] [-callers 16] [-rounds 20] [-time 500ms]
//	    [-bulk 262144] [-bulk-callers 4] [-watch]
//
// It builds connectserver and the echo service into a temporary directory
// (run it inside the checkout), runs both servers on loopback with free
// ports, and stops every process it started, by PID, before it exits.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bench/internal/measure"
	"github.com/bearerkit/connect/client"
)

const (
	serviceName = "example.echo"
	token       = "diagcost-bench-token"
)

type config struct {
	calls, warmup, callers, rounds, size, bulk, bulkCallers int
	limit, latLimit                                         time.Duration
	watch                                                   bool
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("diagcost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.IntVar(&cfg.calls, "calls", 20000, "measured sequential calls per server (latency)")
	fs.IntVar(&cfg.warmup, "warmup", 2000, "unmeasured calls per server before the latency series")
	fs.IntVar(&cfg.callers, "callers", 16, "concurrent callers (call rate)")
	fs.IntVar(&cfg.rounds, "rounds", 20, "rounds of each series")
	fs.DurationVar(&cfg.limit, "time", 500*time.Millisecond, "duration of each server's turn in a round of the call-rate and bulk series")
	fs.DurationVar(&cfg.latLimit, "lattime", 20*time.Second, "cap on each server's latency series")
	fs.IntVar(&cfg.size, "size", 64, "payload bytes of a call")
	fs.IntVar(&cfg.bulk, "bulk", 256<<10, "payload bytes of a bulk call")
	fs.IntVar(&cfg.bulkCallers, "bulk-callers", 4, "concurrent bulk callers")
	fs.BoolVar(&cfg.watch, "watch", false, "also watch the Diagnostics service on the server with diagnostics on")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || cfg.calls <= 0 || cfg.warmup < 0 || cfg.callers <= 0 || cfg.rounds <= 0 || cfg.limit <= 0 || cfg.latLimit <= 0 ||
		cfg.size < 1 || cfg.size > 1<<16 || cfg.bulk < 1 || cfg.bulk > 768<<10 || cfg.bulkCallers <= 0 {
		fmt.Fprintln(stderr, "diagcost: bad arguments (see -h): counts and durations must be positive, -size at most 64KiB, -bulk at most 768KiB")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute+2*cfg.latLimit+time.Duration(4*cfg.rounds)*cfg.limit)
	defer cancel()

	e := &env{stderr: stderr}
	defer e.close()
	context.AfterFunc(ctx, e.close)
	if err := e.setup(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "diagcost:", err)
		return 1
	}
	if err := report(ctx, e, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "diagcost:", err)
		return 1
	}
	return 0
}

// server is one connectserver process and a client of it.
type server struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{}
	http     string
	endpoint bearers.Endpoint
	client   *client.Client
	log      string
}

type env struct {
	stderr  io.Writer
	dir     string
	mu      sync.Mutex
	servers []*server
	once    sync.Once
}

func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "diagcost: "+format+"\n", args...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *env) setup(ctx context.Context, cfg config) error {
	dir, err := os.MkdirTemp("", "diagcost-")
	if err != nil {
		return err
	}
	e.dir = dir
	serverBin := filepath.Join(dir, "connectserver")
	echoBin := filepath.Join(dir, "echoservice")
	progress(e.stderr, "building connectserver and examples/echoservice into %s", dir)
	for out, pkg := range map[string]string{
		serverBin: "github.com/bearerkit/connect/cmd/connectserver",
		echoBin:   "github.com/bearerkit/connect/examples/echoservice",
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s (run this inside the checkout): %w", pkg, err)
		}
	}
	bearer, err := tcp.New(bearers.Config{})
	if err != nil {
		return err
	}
	for _, on := range []bool{true, false} {
		s := &server{name: "off", done: make(chan struct{})}
		extra := `<diagnostics enabled="false"/>`
		if on {
			s.name = "on"
			extra = `<diagnostics enabled="true"/>
  <service name="Diagnostics" builtin="diagnostics"/>`
		}
		tcpPort, err := freePort()
		if err != nil {
			return err
		}
		httpPort, err := freePort()
		if err != nil {
			return err
		}
		s.http = fmt.Sprintf("127.0.0.1:%d", httpPort)
		if s.endpoint, err = bearers.ParseEndpoint(fmt.Sprintf("tcp://127.0.0.1:%d", tcpPort)); err != nil {
			return err
		}
		xml := fmt.Sprintf(`<connectserver>
  <http address=%q/>
  <log level="warn"/>
  <authentication><token value=%q/></authentication>
  <service name=%q plugin=%q/>
  %s
  <connectionAdapter name="tcp" type="connect.bearer.tcp" address=%q/>
</connectserver>
`, s.http, token, serviceName, echoBin, extra, s.endpoint.String())
		cfgPath := filepath.Join(dir, "connectserver-"+s.name+".xml")
		if err := os.WriteFile(cfgPath, []byte(xml), 0o600); err != nil {
			return err
		}
		s.log = filepath.Join(dir, "connectserver-"+s.name+".log")
		logf, err := os.Create(s.log)
		if err != nil {
			return err
		}
		s.cmd = exec.Command(serverBin, "--config", cfgPath, "--state-dir", filepath.Join(dir, "state-"+s.name))
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		err = s.cmd.Start()
		logf.Close()
		if err != nil {
			return fmt.Errorf("start connectserver: %w", err)
		}
		go func() { s.cmd.Wait(); close(s.done) }()
		e.mu.Lock()
		e.servers = append(e.servers, s)
		e.mu.Unlock()
		if err := s.waitHealthy(ctx); err != nil {
			return fmt.Errorf("server %s: %w (log: %s)", s.name, err, s.log)
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.client, err = client.Dial(dctx, client.Config{Server: s.endpoint, Bearer: bearer, ClientID: uuid.New(), Token: token, Name: "diagcost"})
		cancel()
		if err != nil {
			return fmt.Errorf("server %s: %w", s.name, err)
		}
		if on && cfg.watch {
			sess, err := s.client.StartSession(ctx, "Diagnostics")
			if err != nil {
				return err
			}
			ch, err := sess.Watch(ctx, "")
			if err != nil {
				return err
			}
			go func() { // ends when the client closes
				for range ch {
				}
			}()
		}
	}
	return nil
}

func (s *server) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	hc := http.Client{Timeout: 2 * time.Second}
	for {
		var h struct{ Status string }
		resp, err := hc.Get("http://" + s.http + "/healthz")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
		}
		if err == nil && h.Status == "ok" {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("connectserver exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy within 30s: %v %+v", err, h)
		}
	}
}

func (e *env) close() {
	e.once.Do(func() {
		e.mu.Lock()
		servers := e.servers
		e.mu.Unlock()
		for _, s := range servers {
			if s.client != nil {
				s.client.Close()
			}
			select {
			case <-s.done:
				continue
			default:
			}
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				s.cmd.Process.Kill()
				<-s.done
			}
		}
		if e.dir != "" {
			os.RemoveAll(e.dir)
		}
	})
}

// echoPaths returns, per server, a path calling echo with text, one session
// per caller.
func echoPaths(ctx context.Context, e *env, callers int, text string) ([]measure.Path, error) {
	var paths []measure.Path
	for _, s := range e.servers {
		sess := make([]*client.Session, callers)
		for i := range sess {
			var err error
			if sess[i], err = s.client.StartSession(ctx, serviceName); err != nil {
				return nil, fmt.Errorf("server %s: %w", s.name, err)
			}
		}
		args := map[string]any{"text": text}
		paths = append(paths, measure.Path{Key: s.name, Label: "diagnostics " + s.name, Call: func(ctx context.Context, caller int) error {
			v, err := sess[caller%len(sess)].Call(ctx, "echo", args)
			if err != nil {
				return err
			}
			if got, ok := v.(string); !ok || len(got) != len(text) {
				return fmt.Errorf("wrong answer: %T", v)
			}
			return nil
		}})
	}
	return paths, nil
}

// rounds runs the paths' throughput in rounds, the order alternating, and
// returns the pooled rates and, per round, the rate of "on" over "off".
func rounds(ctx context.Context, paths []measure.Path, callers, n int, limit time.Duration) (map[string]measure.Rate, []float64, error) {
	total := map[string]measure.Rate{}
	var ratios []float64
	for r := 0; r < n; r++ {
		order := paths
		if r%2 == 1 {
			order = []measure.Path{paths[1], paths[0]}
		}
		res, err := measure.Throughput(ctx, order, callers, 1<<40, limit)
		if err != nil {
			return nil, nil, err
		}
		for k, v := range res {
			t := total[k]
			t.Calls += v.Calls
			t.Elapsed += v.Elapsed
			total[k] = t
		}
		if off := res["off"].PerSec(); off > 0 {
			ratios = append(ratios, res["on"].PerSec()/off)
		}
	}
	return total, ratios, nil
}

// median of ratios, as a difference in percent.
func median(ratios []float64) string {
	if len(ratios) == 0 {
		return "–"
	}
	s := append([]float64(nil), ratios...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%+.1f%%", (m-1)*100)
}

func diff(on, off float64) string {
	if off == 0 {
		return "–"
	}
	return fmt.Sprintf("%+.1f%%", (on-off)/off*100)
}

func report(ctx context.Context, e *env, cfg config, stdout, stderr io.Writer) error {
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	fmt.Fprintf(stdout, "# diagcost\n\n%s %s/%s, %d CPUs, kernel %s, load average %s at the start; watch %v\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), kernel, load, cfg.watch)

	text := strings.Repeat("0123456789abcdef", cfg.size/16+1)[:cfg.size]
	lat, err := echoPaths(ctx, e, 1, text)
	if err != nil {
		return err
	}
	per := max(cfg.calls/cfg.rounds, measure.Block)
	progress(stderr, "latency: %d rounds of %d calls per server, taking turns every %d", cfg.rounds, per, measure.Block)
	var on, off []time.Duration
	var p50s, p99s []float64
	for r := 0; r < cfg.rounds; r++ {
		warm := 0
		if r == 0 {
			warm = cfg.warmup
		}
		series, err := measure.Latency(ctx, lat, warm, per, cfg.latLimit/time.Duration(cfg.rounds))
		if err != nil {
			return err
		}
		a, b := series["on"], series["off"]
		if x := measure.Pct(b, 50); x > 0 {
			p50s = append(p50s, float64(measure.Pct(a, 50))/float64(x))
		}
		if x := measure.Pct(b, 99); x > 0 {
			p99s = append(p99s, float64(measure.Pct(a, 99))/float64(x))
		}
		on, off = append(on, a...), append(off, b...)
	}
	sort.Slice(on, func(i, j int) bool { return on[i] < on[j] })
	sort.Slice(off, func(i, j int) bool { return off[i] < off[j] })
	fmt.Fprintf(stdout, "%d-byte echo calls, one caller, %d calls per server (interleaved every %d); call rate and bulk in %d rounds of %v per server, the order alternating:\n\n",
		cfg.size, len(on), measure.Block, cfg.rounds, cfg.limit)
	fmt.Fprintf(stdout, "| | diagnostics on | diagnostics off | on vs off, pooled | on vs off, median of %d rounds |\n|---|---:|---:|---:|---:|\n", cfg.rounds)
	for i, p := range []int{50, 99} {
		a, b := measure.Pct(on, p), measure.Pct(off, p)
		m := median(p50s)
		if i == 1 {
			m = median(p99s)
		}
		fmt.Fprintf(stdout, "| call latency p%d | %v | %v | %s | %s |\n", p, a.Round(100*time.Nanosecond), b.Round(100*time.Nanosecond), diff(float64(a), float64(b)), m)
	}

	calls, err := echoPaths(ctx, e, cfg.callers, text)
	if err != nil {
		return err
	}
	progress(stderr, "call rate: %d callers, %d rounds of %v per server", cfg.callers, cfg.rounds, cfg.limit)
	rates, ratios, err := rounds(ctx, calls, cfg.callers, cfg.rounds, cfg.limit)
	if err != nil {
		return err
	}
	ron, roff := rates["on"].PerSec(), rates["off"].PerSec()
	fmt.Fprintf(stdout, "| calls/s, %d callers | %.0f | %.0f | %s | %s |\n", cfg.callers, ron, roff, diff(ron, roff), median(ratios))

	bulkText := strings.Repeat("0123456789abcdef", cfg.bulk/16+1)[:cfg.bulk]
	bulk, err := echoPaths(ctx, e, cfg.bulkCallers, bulkText)
	if err != nil {
		return err
	}
	progress(stderr, "bulk: %d callers of %d bytes, %d rounds of %v per server", cfg.bulkCallers, cfg.bulk, cfg.rounds, cfg.limit)
	brates, bratios, err := rounds(ctx, bulk, cfg.bulkCallers, cfg.rounds, cfg.limit)
	if err != nil {
		return err
	}
	mb := func(r measure.Rate) float64 { return r.PerSec() * float64(2*cfg.bulk) / (1 << 20) }
	bon, boff := mb(brates["on"]), mb(brates["off"])
	fmt.Fprintf(stdout, "| bulk MiB/s (both ways), %d × %d KiB calls | %.1f | %.1f | %s | %s |\n", cfg.bulkCallers, cfg.bulk>>10, bon, boff, diff(bon, boff), median(bratios))
	return nil
}
