// Command directcall measures direct links (docs/REMOTE.md, "Direct
// links"): a method call from a client to a remote service's runner over
// the direct reliable (tcp) link against the same call through the server
// route, in the same run; and runtime-data updates per second over the
// direct unreliable (udp) link against the server route.
//
//  1. Calls: connectserver and remoteservicerunner (with the echo example
//     plugin) run as processes on loopback; this process is the client
//     (package client, in-process tcp bearer). The runner's service file
//     routes echo over the reliable link with the server as the
//     alternative, so one client with link bearers calls it directly
//     (client → runner → plugin) and one without through the server
//     (client → server → runner → plugin): the same method, the same
//     64-byte text. p50/p99 of one caller, the paths taking turns in
//     blocks of 100 calls, then calls per second with -callers callers.
//
//  2. Runtime data: a provider in this process (package client's
//     Provider, in-process udp listener) provides two services, each one
//     int of runtime data, feed.direct routed over the unreliable link
//     and feed.server through the server; a producer sets the value as
//     fast as it can for -time, and a client session watches it. The
//     figures: values produced per second, and values the client received
//     per second on the link (runtime data is coalesced: a path that
//     changes faster than the link carries is sent as its latest value).
//
//     go run ./bench/directcall [-calls 20000] [-warmup 2000] [-callers 16] [-time 3s]
//
// It builds the binaries with `go build` into a temporary directory (run
// it inside the checkout) and stops every process it started, by PID,
// before it exits. docs/BENCHMARKS.md has the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bearers/udp"
	"github.com/bearerkit/connect/bench/internal/measure"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
)

const token = "directcall-bench-token"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type config struct {
	calls, warmup, callers int
	limit, latLimit        time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directcall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.IntVar(&cfg.calls, "calls", 20000, "measured sequential calls per path (latency)")
	fs.IntVar(&cfg.warmup, "warmup", 2000, "unmeasured calls per path before the latency series")
	fs.IntVar(&cfg.callers, "callers", 16, "concurrent callers (call rate)")
	fs.DurationVar(&cfg.limit, "time", 3*time.Second, "duration of each rate run (calls and runtime data)")
	fs.DurationVar(&cfg.latLimit, "lattime", 15*time.Second, "cap on each path's latency series")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || cfg.calls <= 0 || cfg.warmup < 0 || cfg.callers <= 0 || cfg.limit <= 0 || cfg.latLimit <= 0 {
		fmt.Fprintln(stderr, "directcall: bad arguments (see -h): -calls, -callers, -time and -lattime must be positive")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute+4*cfg.limit+2*cfg.latLimit)
	defer cancel()
	start := time.Now()
	e := &env{stderr: stderr}
	defer e.close()
	context.AfterFunc(ctx, e.close)
	if err := e.setup(ctx); err != nil {
		fmt.Fprintln(stderr, "directcall:", err)
		e.dumpLogs()
		return 1
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(stdout, "# directcall\n\n%s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), kernel)
	if err := e.calls(ctx, cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "directcall: calls:", err)
		e.dumpLogs()
		return 1
	}
	if err := e.data(ctx, cfg, stdout); err != nil {
		fmt.Fprintln(stderr, "directcall: runtime data:", err)
		e.dumpLogs()
		return 1
	}
	fmt.Fprintf(stdout, "\n(total %.1f s, including the builds)\n", time.Since(start).Seconds())
	return 0
}

func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "directcall: "+format+"\n", args...)
}

// env holds the processes and clients of the run.
type env struct {
	stderr   io.Writer
	dir      string
	httpAddr string
	server   bearers.Endpoint
	logs     []string
	closed   atomic.Bool

	mu      sync.Mutex // close may run on a signal, concurrently
	procs   []*proc
	closers []func()
}

// onClose registers f to run at close (or runs it now, after close).
func (e *env) onClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed.Load() {
		f()
		return
	}
	e.closers = append(e.closers, f)
}

// proc is a child process; done is closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs a child process with its output in a log file of the run.
func (e *env) start(name string, args ...string) (*proc, error) {
	logPath := filepath.Join(e.dir, filepath.Base(name)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	closed := e.closed.Load()
	e.mu.Unlock()
	if closed {
		p.stop(15 * time.Second)
		return nil, errors.New("stopping")
	}
	e.logs = append(e.logs, logPath)
	return p, nil
}

// stop sends SIGTERM (by PID), then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *env) setup(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "directcall-")
	if err != nil {
		return err
	}
	e.dir = dir
	bins := map[string]string{
		"connectserver":       "github.com/bearerkit/connect/cmd/connectserver",
		"remoteservicerunner": "github.com/bearerkit/connect/cmd/remoteservicerunner",
		"echoservice":         "github.com/bearerkit/connect/examples/echoservice",
	}
	progress(e.stderr, "building connectserver, remoteservicerunner and examples/echoservice into %s", dir)
	for out, pkg := range bins {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Stdout, cmd.Stderr = e.stderr, e.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s (run this inside the checkout): %w", pkg, err)
		}
	}
	ports := map[string]int{}
	for _, k := range []string{"server", "http", "link"} {
		if ports[k], err = freePort("tcp"); err != nil {
			return err
		}
	}
	if ports["linkudp"], err = freePort("udp"); err != nil {
		return err
	}
	e.httpAddr = fmt.Sprintf("127.0.0.1:%d", ports["http"])
	e.server, _ = bearers.ParseEndpoint(fmt.Sprintf("tcp://127.0.0.1:%d", ports["server"]))
	cfgPath := filepath.Join(dir, "connectserver.xml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, `<connectserver>
  <http address=%q/>
  <log level="warn"/>
  <authentication><token value=%q/></authentication>
  <connectionAdapter name="tcp" type="connect.bearer.tcp" address=%q/>
</connectserver>
`, e.httpAddr, token, e.server.String()), 0o600); err != nil {
		return err
	}
	if _, err := e.start(filepath.Join(dir, "connectserver"), "--config", cfgPath, "--state-dir", filepath.Join(dir, "state")); err != nil {
		return err
	}
	if err := e.waitService(ctx, ""); err != nil {
		return err
	}

	// The echo example under the runner: echo over the reliable link, or
	// through the server for a client without link bearers.
	xml, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", "github.com/bearerkit/connect/examples/echoservice").Output()
	if err != nil {
		return err
	}
	echo, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(xml)), "echo.xml"))
	if err != nil {
		return err
	}
	echo = []byte(strings.Replace(string(echo), "</service>", `  <routing>
    <route method="echo">
      <alternative link="reliable"/>
      <alternative link="server"/>
    </route>
  </routing>
</service>`, 1))
	svcPath := filepath.Join(dir, "echo.xml")
	if err := os.WriteFile(svcPath, echo, 0o644); err != nil {
		return err
	}
	if _, err := e.start(filepath.Join(dir, "remoteservicerunner"), "--server", e.server.String(), "--token", token,
		"--state-dir", filepath.Join(dir, "runner"), "--service", svcPath, "--plugin", filepath.Join(dir, "echoservice"),
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", ports["link"]), "--listen", fmt.Sprintf("udp://127.0.0.1:%d", ports["linkudp"]), "--log-level", "warn"); err != nil {
		return err
	}
	return e.waitService(ctx, "example.echo")
}

// waitService waits until the server is healthy and (unless "") the
// service is available.
func (e *env) waitService(ctx context.Context, name string) error {
	deadline := time.Now().Add(60 * time.Second)
	hc := http.Client{Timeout: 5 * time.Second}
	for {
		var err error
		resp, gerr := hc.Get("http://" + e.httpAddr + "/servicedescriptions")
		if gerr == nil {
			var list struct {
				Services []struct {
					Name   string `json:"name"`
					Remote *struct {
						Connected bool `json:"connected"`
					} `json:"remote"`
				} `json:"services"`
			}
			err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list)
			resp.Body.Close()
			if err == nil && name == "" {
				return nil
			}
			err = fmt.Errorf("service %s is not available", name)
			for _, s := range list.Services {
				if s.Name == name && s.Remote != nil && s.Remote.Connected {
					return nil
				}
			}
		} else {
			err = gerr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for the server: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dial connects a client; links are its link bearers.
func (e *env) dial(ctx context.Context, name string, links ...bearers.Bearer) (*client.Client, error) {
	b, err := tcp.New(bearers.Config{})
	if err != nil {
		return nil, err
	}
	c, err := client.Dial(ctx, client.Config{Server: e.server, Bearer: b, ClientID: uuid.New(), Token: token, Name: name, LinkBearers: links})
	if err != nil {
		return nil, err
	}
	e.onClose(func() { c.Close() })
	return c, nil
}

func linkBearers() ([]bearers.Bearer, error) {
	t, err := tcp.New(bearers.Config{})
	if err != nil {
		return nil, err
	}
	u, err := udp.New(bearers.Config{})
	if err != nil {
		return nil, err
	}
	return []bearers.Bearer{t, u}, nil
}

// calls measures echo over the direct link and through the server.
func (e *env) calls(ctx context.Context, cfg config, stdout io.Writer) error {
	links, err := linkBearers()
	if err != nil {
		return err
	}
	dc, err := e.dial(ctx, "directcall-direct", links...)
	if err != nil {
		return err
	}
	sc, err := e.dial(ctx, "directcall-server")
	if err != nil {
		return err
	}
	text := strings.Repeat("x", 64)
	path := func(c *client.Client, key, label, wantLink string) (measure.Path, error) {
		sessions := make([]*client.Session, cfg.callers)
		for i := range sessions {
			s, err := c.StartSession(ctx, "example.echo")
			if err != nil {
				return measure.Path{}, err
			}
			sessions[i] = s
		}
		for _, st := range sessions[0].LinkStats() {
			if st.Link == wantLink && st.Kind != "" && !st.Open {
				return measure.Path{}, fmt.Errorf("%s: link %s is down: %s", key, st.Link, st.Down)
			}
		}
		return measure.Path{Key: key, Label: label, Call: func(ctx context.Context, i int) error {
			v, err := sessions[i].Call(ctx, "echo", map[string]any{"text": text})
			if err == nil && v != text {
				err = fmt.Errorf("echo answered %v", v)
			}
			return err
		}}, nil
	}
	direct, err := path(dc, "direct", "client → runner over the direct reliable (tcp) link → plugin", "reliable")
	if err != nil {
		return err
	}
	server, err := path(sc, "server", "client → server → runner → plugin (server route)", "server")
	if err != nil {
		return err
	}
	paths := []measure.Path{direct, server}
	progress(e.stderr, "latency: %d calls per path after %d warm-up calls", cfg.calls, cfg.warmup)
	lat, err := measure.Latency(ctx, paths, cfg.warmup, cfg.calls, cfg.latLimit)
	if err != nil {
		return err
	}
	progress(e.stderr, "call rate: %d callers, %s per path", cfg.callers, cfg.limit)
	thr, err := measure.Throughput(ctx, paths, cfg.callers, 10_000_000, cfg.limit)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n## echo, 64 bytes: direct link vs server route\n\n| path | calls | p50 | p99 | calls/s (%d callers) |\n|---|---|---|---|---|\n", cfg.callers)
	for _, p := range paths {
		s := lat[p.Key]
		fmt.Fprintf(stdout, "| %s | %d | %v | %v | %.0f |\n", p.Label, len(s), measure.Pct(s, 50).Round(time.Microsecond), measure.Pct(s, 99).Round(time.Microsecond), thr[p.Key].PerSec())
	}
	d, s := lat["direct"], lat["server"]
	fmt.Fprintf(stdout, "\ndirect / server: p50 %.2f×, p99 %.2f×, rate %.2f×\n",
		ratio(measure.Pct(d, 50), measure.Pct(s, 50)), ratio(measure.Pct(d, 99), measure.Pct(s, 99)), thr["direct"].PerSec()/thr["server"].PerSec())
	return nil
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// feedXML is a service with one int of runtime data, routed by routing.
func feedXML(name, routing, endpoints string) []byte {
	return fmt.Appendf(nil, `<service name=%q version="1.0">
  <data><value name="seq" type="int"/></data>
  %s
  %s
</service>`, name, routing, endpoints)
}

// nopHandler serves the feeds' sessions; they have no methods.
type nopHandler struct{}

func (nopHandler) OpenSession(context.Context, string, string) error { return nil }
func (nopHandler) CloseSession(string, string)                       {}
func (nopHandler) Call(context.Context, string, string, []byte) ([]byte, error) {
	return nil, errors.New("no methods")
}

// data measures runtime-data updates per second over the unreliable link
// and through the server.
func (e *env) data(ctx context.Context, cfg config, stdout io.Writer) error {
	port, err := freePort("udp")
	if err != nil {
		return err
	}
	ep, _ := bearers.ParseEndpoint(fmt.Sprintf("udp://127.0.0.1:%d", port))
	ub, err := udp.New(bearers.Config{})
	if err != nil {
		return err
	}
	ln, err := ub.Listen(ctx, ep)
	if err != nil {
		return err
	}
	endpoints := fmt.Sprintf(`<endpoints><endpoint address=%q/></endpoints>`, ep.String())
	prov, err := client.NewProvider(client.ProviderConfig{
		Services: []client.ProvidedService{
			{XML: feedXML("feed.direct", `<routing><route data="*" link="unreliable"/></routing>`, endpoints), Handler: nopHandler{},
				Endpoints: []client.ProviderEndpoint{{Address: ep, Bearer: udp.Info}}},
			{XML: feedXML("feed.server", "", ""), Handler: nopHandler{}},
		},
		Listeners: []client.ProviderListener{{Listener: ln, Bearer: udp.Info}},
		Logger:    slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		ln.Close()
		return err
	}
	e.onClose(func() { prov.Close() })
	pc, err := e.dial(ctx, "directcall-feeds")
	if err != nil {
		return err
	}
	if err := prov.Serve(pc); err != nil {
		return err
	}
	if err := e.waitService(ctx, "feed.server"); err != nil {
		return err
	}
	if err := e.waitService(ctx, "feed.direct"); err != nil {
		return err
	}
	links, err := linkBearers()
	if err != nil {
		return err
	}
	wc, err := e.dial(ctx, "directcall-watcher", links...)
	if err != nil {
		return err
	}
	intT := &servicefile.Type{Kind: servicefile.Int}
	type result struct {
		produced, received uint64
		elapsed            time.Duration
	}
	feed := func(service, link string) (result, error) {
		s, err := wc.StartSession(ctx, service)
		if err != nil {
			return result{}, err
		}
		defer s.Close()
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := s.Watch(wctx, "seq")
		if err != nil {
			return result{}, err
		}
		go func() {
			for range ch { // the reader keeps up; the link counters count
			}
		}()
		count := func() uint64 {
			for _, st := range s.LinkStats() {
				if st.Link == link {
					return st.DataChanges
				}
			}
			return 0
		}
		time.Sleep(200 * time.Millisecond) // the link's first values
		before := count()
		var produced uint64
		buf := make([]byte, 0, 16)
		start := time.Now()
		for stop := start.Add(cfg.limit); time.Now().Before(stop); {
			for range 64 {
				produced++
				buf, _ = services.AppendValue(buf[:0], intT, int64(produced))
				if err := prov.SetData(service, "seq", buf); err != nil {
					return result{}, err
				}
			}
			runtime.Gosched()
		}
		elapsed := time.Since(start)
		time.Sleep(200 * time.Millisecond) // what was in flight
		return result{produced: produced, received: count() - before, elapsed: elapsed}, nil
	}
	progress(e.stderr, "runtime data: a producer in this process, %s per path", cfg.limit)
	direct, err := feed("feed.direct", "unreliable")
	if err != nil {
		return err
	}
	server, err := feed("feed.server", "server")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n## runtime data (one int, set as fast as possible for %s)\n\n| path | set/s (producer) | received/s (client) |\n|---|---|---|\n", cfg.limit)
	for _, r := range []struct {
		label string
		res   result
	}{{"runner → client over the direct unreliable (udp) link", direct}, {"runner → server → client (server route)", server}} {
		fmt.Fprintf(stdout, "| %s | %.0f | %.0f |\n", r.label, float64(r.res.produced)/r.res.elapsed.Seconds(), float64(r.res.received)/r.res.elapsed.Seconds())
	}
	fmt.Fprintf(stdout, "\ndirect / server, values received per second: %.2f×\n", float64(direct.received)/float64(max(server.received, 1)))
	return nil
}

func (e *env) dumpLogs() {
	for _, path := range e.logs {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 4<<10 {
			b = b[len(b)-4<<10:]
		}
		fmt.Fprintf(e.stderr, "--- end of %s ---\n%s\n", filepath.Base(path), b)
	}
}

func (e *env) close() {
	e.mu.Lock()
	if e.closed.Swap(true) {
		e.mu.Unlock()
		return
	}
	closers, procs := e.closers, e.procs
	e.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	for i := len(procs) - 1; i >= 0; i-- { // the runner, then the server
		procs[i].stop(15 * time.Second)
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}
