// Command e2ecall measures a Connect method call end to end: a Go client
// (package client, in-process tcp bearer) calls the example echo service
// through a real connectserver process, which calls the service plugin
// process and answers. In the same run it measures a plain gRPC-Go unary
// echo between this process and a gRPC server subprocess (this program
// re-executed as "e2ecall grpc-server"), and the server's memory per idle
// session:
//
//  1. round trip of one 64-byte call, one caller: p50 and p99, the paths
//     taking turns in blocks of 100 calls; two controls ride along: the
//     same call to the server's built-in Demo service (also a plugin
//     process, but its echo sets no runtime data) and client.Ping (a wire
//     Ping/Pong that the server answers without the session layer);
//
//  2. calls per second with 64 concurrent callers: for Connect one session
//     per caller, all sessions on one client connection; for gRPC the
//     callers share one ClientConn (one HTTP/2 connection);
//
//  3. memory per idle session: the server's VmRSS before and after opening
//     -sessions sessions spread over client connections of -per-client
//     sessions each (each with its own client id).
//
//     go run ./bench/e2ecall [-calls 20000] [-warmup 2000] [-callers 64] [-time 3s]
//     [-size 64] [-sessions 10000] [-per-client 100] [-server-procs 0]
//
// A fifth path, the floor (floor.go), is three Go processes relaying the
// same bytes over raw sockets: the least any design with the service in its
// own process can take.
//
// It builds connectserver and the echo service example with `go build` into
// a temporary directory (run it inside the checkout), starts the server on
// loopback with free ports, and stops every process it started, by PID,
// before it exits. Every series is bounded by a count and by a time cap.
// docs/BENCHMARKS.md explains the figures.
package main

import (
	"bufio"
	"bytes"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/client"

	"github.com/bearerkit/connect/bench/internal/grpcecho"
	"github.com/bearerkit/connect/bench/internal/measure"
)

const (
	serviceName = "example.echo"
	// builtinName is the server's built-in demo service. connectserver runs
	// it as a plugin subprocess too, but its echo, unlike the example's,
	// sets no runtime data: the difference is what that Set costs.
	builtinName = "Demo"
	token       = "e2ecall-bench-token"
	// maxPerClient is the server's limit of sessions per connection
	// (maxSessionsPerConn in core/sessions.go).
	maxPerClient = 1024
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "grpc-server" {
		os.Exit(serveGRPC())
	}
	if len(os.Args) == 3 && strings.HasPrefix(os.Args[1], "floor-") {
		os.Exit(serveFloor(os.Args[1], os.Args[2]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	calls, warmup, callers, size int
	sessions, perClient          int
	serverProcs                  int
	limit, latLimit, memLimit    time.Duration
	maxCalls                     int64
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("e2ecall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.IntVar(&cfg.calls, "calls", 20000, "measured sequential calls per path (latency)")
	fs.IntVar(&cfg.warmup, "warmup", 2000, "unmeasured calls per path before the latency series")
	fs.IntVar(&cfg.callers, "callers", 64, "concurrent callers (throughput)")
	fs.DurationVar(&cfg.limit, "time", 3*time.Second, "duration of each throughput run")
	fs.DurationVar(&cfg.latLimit, "lattime", 15*time.Second, "cap on each path's latency series (a capped series has fewer calls)")
	fs.IntVar(&cfg.size, "size", 64, "payload bytes per call")
	fs.Int64Var(&cfg.maxCalls, "max", 10_000_000, "cap on the calls of one throughput run")
	fs.IntVar(&cfg.sessions, "sessions", 10000, "idle sessions to open for the memory figure (0: skip)")
	fs.IntVar(&cfg.perClient, "per-client", 100, fmt.Sprintf("sessions per client connection (at most %d, the server's limit)", maxPerClient))
	fs.IntVar(&cfg.serverProcs, "server-procs", 0, "GOMAXPROCS of connectserver and its service plugins (0: Go's default, the number of CPUs)")
	fs.DurationVar(&cfg.memLimit, "memtime", 120*time.Second, "cap on opening the idle sessions")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || cfg.calls <= 0 || cfg.warmup < 0 || cfg.callers <= 0 || cfg.limit <= 0 || cfg.latLimit <= 0 || cfg.size < 1 || cfg.size > 1<<16 ||
		cfg.maxCalls <= 0 || cfg.sessions < 0 || cfg.sessions > 1_000_000 || cfg.perClient <= 0 || cfg.perClient > maxPerClient || cfg.memLimit <= 0 || cfg.serverProcs < 0 {
		fmt.Fprintf(stderr, "e2ecall: bad arguments (see -h): -calls, -callers, -time, -lattime, -memtime and -max must be positive, -size from 1 to 64KiB, -sessions from 0 to 1000000, -per-client from 1 to %d\n", maxPerClient)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A cap on the whole run, whatever happens.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute+cfg.memLimit+4*cfg.limit+2*cfg.latLimit)
	defer cancel()

	start := time.Now()
	e := &env{stderr: stderr, serverProcs: cfg.serverProcs}
	defer e.close()
	context.AfterFunc(ctx, e.close) // on a signal or the cap, everything stops and the calls fail
	if err := e.setup(ctx); err != nil {
		fmt.Fprintln(stderr, "e2ecall:", err)
		e.dumpLog()
		return 1
	}

	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(stdout, "# e2ecall\n\n%s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s; %d-byte payload\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), kernel, cfg.size)

	var mem *memResult
	if cfg.sessions > 0 {
		progress(stderr, "memory: opening %d idle sessions, %d per client connection", cfg.sessions, cfg.perClient)
		m, err := e.memory(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "e2ecall: memory:", err)
			e.dumpLog()
			return 1
		}
		mem = m
	}

	paths, err := e.paths(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "e2ecall:", err)
		e.dumpLog()
		return 1
	}
	progress(stderr, "latency: %d calls per path after %d warm-up calls", cfg.calls, cfg.warmup)
	lat, err := latency(ctx, cfg, paths)
	if err != nil {
		fmt.Fprintln(stderr, "e2ecall: latency:", err)
		e.dumpLog()
		return 1
	}
	progress(stderr, "throughput: %d callers, %s per path", cfg.callers, cfg.limit)
	thr, err := throughput(ctx, cfg, paths)
	if err != nil {
		fmt.Fprintln(stderr, "e2ecall: throughput:", err)
		e.dumpLog()
		return 1
	}
	report(stdout, cfg, paths, lat, thr, mem)
	fmt.Fprintf(stdout, "\n(total %.1f s, including the builds)\n", time.Since(start).Seconds())
	return 0
}

func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "e2ecall: "+format+"\n", args...)
}

// env holds the processes and the connections of the run.
type env struct {
	stderr      io.Writer
	serverProcs int    // GOMAXPROCS of connectserver and its plugins; 0: Go's default
	dir         string // temporary: binaries, configuration, state, logs

	server     *proc
	pluginPID  int
	httpAddr   string
	endpoint   bearers.Endpoint
	bearer     bearers.Bearer
	serverLog  string
	grpcServer *proc
	floor      []*proc // the floor's relay and echo processes (floor.go)
	floorPool  *floorPool
	cc         *grpc.ClientConn

	mu      sync.Mutex
	clients []*client.Client

	once sync.Once
}

// proc is a child process; done is closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM to the process (by PID), then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *env) setup(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "e2ecall-")
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

	tcpPort, err := freePort()
	if err != nil {
		return err
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	e.httpAddr = fmt.Sprintf("127.0.0.1:%d", httpPort)
	e.endpoint, err = bearers.ParseEndpoint(fmt.Sprintf("tcp://127.0.0.1:%d", tcpPort))
	if err != nil {
		return err
	}
	xml := fmt.Sprintf(`<connectserver>
  <http address=%q/>
  <log level="warn"/>
  <authentication><token value=%q/></authentication>
  <service name=%q plugin=%q/>
  <service name=%q builtin="demo"/>
  <connectionAdapter name="tcp" type="connect.bearer.tcp" address=%q/>
</connectserver>
`, e.httpAddr, token, serviceName, echoBin, builtinName, e.endpoint.String())
	cfgPath := filepath.Join(dir, "connectserver.xml")
	if err := os.WriteFile(cfgPath, []byte(xml), 0o600); err != nil {
		return err
	}
	e.serverLog = filepath.Join(dir, "connectserver.log")
	logf, err := os.Create(e.serverLog)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(serverBin, "--config", cfgPath, "--state-dir", filepath.Join(dir, "state"))
	if e.serverProcs > 0 { // the service plugin inherits it
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", e.serverProcs))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	e.mu.Lock()
	e.server, err = startProc(cmd)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("start connectserver: %w", err)
	}
	if err := e.waitHealthy(ctx); err != nil {
		return err
	}
	if e.bearer, err = tcp.New(bearers.Config{}); err != nil {
		return err
	}

	// The gRPC baseline's server: this program, re-executed.
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find my own executable to start the gRPC server: %w", err)
	}
	gcmd := exec.Command(exe, "grpc-server")
	// The pipe stays open until the child exits or this process does; its
	// end of file tells the server to exit.
	if _, err := gcmd.StdinPipe(); err != nil {
		return err
	}
	out, err := gcmd.StdoutPipe()
	if err != nil {
		return err
	}
	gcmd.Stderr = e.stderr
	e.mu.Lock()
	e.grpcServer, err = startProc(gcmd)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("start the gRPC server: %w", err)
	}
	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		addrc <- strings.TrimSpace(line)
		io.Copy(io.Discard, out)
	}()
	var addr string
	select {
	case addr = <-addrc:
	case <-time.After(30 * time.Second):
	}
	if addr == "" {
		return errors.New("the gRPC server did not report its address")
	}
	e.cc, err = grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(grpcecho.Codec{})))
	return err
}

type healthz struct {
	Status  string `json:"status"`
	Clients int    `json:"clients"`
}

func (e *env) getJSON(path string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.httpAddr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(v)
}

// waitHealthy waits until the server is healthy and the echo service's
// plugin runs, and notes the plugin's PID.
func (e *env) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		var h healthz
		err := e.getJSON("/healthz", &h)
		if err == nil && h.Status != "ok" {
			err = fmt.Errorf("status %q", h.Status)
		}
		if err == nil {
			var list struct {
				Services []struct {
					Name   string `json:"name"`
					Status *struct {
						State string `json:"state"`
						PID   int    `json:"pid"`
					} `json:"status"`
				} `json:"services"`
			}
			if err = e.getJSON("/servicedescriptions", &list); err == nil {
				err = fmt.Errorf("service %s not running", serviceName)
				for _, s := range list.Services {
					if s.Name == serviceName && s.Status != nil && s.Status.PID > 0 {
						e.pluginPID = s.Status.PID
						return nil
					}
				}
			}
		}
		last = err
		select {
		case <-e.server.done:
			return errors.New("connectserver exited early")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("connectserver not ready within 30s: %v", last)
		}
	}
}

// dial connects one client with its own client id.
func (e *env) dial(ctx context.Context, name string) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, client.Config{
		Server: e.endpoint, Bearer: e.bearer, ClientID: uuid.New(), Token: token, Name: name,
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.clients = append(e.clients, c)
	e.mu.Unlock()
	return c, nil
}

func (e *env) dumpLog() {
	if e.serverLog == "" {
		return
	}
	b, err := os.ReadFile(e.serverLog)
	if err != nil || len(b) == 0 {
		return
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	fmt.Fprintf(e.stderr, "--- end of the connectserver log ---\n%s\n", b)
}

func (e *env) close() {
	e.once.Do(func() {
		e.mu.Lock()
		clients := e.clients
		e.clients = nil
		server, grpcServer, floor, pool := e.server, e.grpcServer, e.floor, e.floorPool
		e.mu.Unlock()
		closeClients(clients)
		if pool != nil {
			pool.close()
		}
		for _, p := range floor {
			p.stop(5 * time.Second)
		}
		if e.cc != nil {
			e.cc.Close()
		}
		grpcServer.stop(5 * time.Second)
		server.stop(15 * time.Second)
		// The server stops its plugin; make sure (by PID) that it did.
		if e.pluginPID > 0 && server != nil && alive(e.pluginPID) {
			time.Sleep(time.Second)
			if alive(e.pluginPID) {
				syscall.Kill(e.pluginPID, syscall.SIGKILL)
			}
		}
		if e.dir != "" {
			os.RemoveAll(e.dir)
		}
	})
}

func closeClients(cs []*client.Client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// alive reports whether pid is a live process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

// rss returns the process's resident set size (VmRSS) in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// settledRSS reads the RSS of pid five times 200 ms apart, after a pause,
// and returns the median: the figure a moment after the work stopped.
func settledRSS(pid int) (int64, error) {
	time.Sleep(500 * time.Millisecond)
	var s []int64
	for i := 0; i < 5; i++ {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		v, err := rss(pid)
		if err != nil {
			return 0, err
		}
		s = append(s, v)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], nil
}

type memResult struct {
	sessions, clients         int
	open, settle              time.Duration
	server0, server1, server2 int64 // before connecting, after connecting, after the sessions
	plugin0, plugin2          int64
}

// memory connects the clients, opens the sessions, reads the RSS of the
// server (and of the plugin) before and after, and closes the clients.
func (e *env) memory(ctx context.Context, cfg config) (*memResult, error) {
	nClients := (cfg.sessions + cfg.perClient - 1) / cfg.perClient
	r := &memResult{clients: nClients}
	var err error
	if r.server0, err = settledRSS(e.server.cmd.Process.Pid); err != nil {
		return nil, err
	}
	if r.plugin0, err = rss(e.pluginPID); err != nil {
		return nil, err
	}
	mctx, cancel := context.WithTimeout(ctx, cfg.memLimit)
	defer cancel()

	clients := make([]*client.Client, nClients)
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
	)
	fail := func(err error) { errOnce.Do(func() { firstErr = err; cancel() }) }
	sem := make(chan struct{}, 16)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := e.dial(mctx, fmt.Sprintf("e2ecall-idle-%d", i))
			if err != nil {
				fail(fmt.Errorf("client %d: %w", i, err))
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if r.server1, err = settledRSS(e.server.cmd.Process.Pid); err != nil {
		return nil, err
	}

	// Sessions: at most 128 opens in flight, 8 per client.
	var opened atomic.Int64
	t0 := time.Now()
	sem = make(chan struct{}, 128)
	sessions := make([][]*client.Session, nClients)
	for i, c := range clients {
		n := min(cfg.perClient, cfg.sessions-i*cfg.perClient)
		sessions[i] = make([]*client.Session, n)
		const workers = 8
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; j < n; j += workers {
					sem <- struct{}{}
					s, err := c.StartSession(mctx, serviceName)
					<-sem
					if err != nil {
						fail(fmt.Errorf("client %d, session %d (after %d opened): %w", i, j, opened.Load(), err))
						return
					}
					sessions[i][j] = s
					opened.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	r.open = time.Since(t0)
	if firstErr != nil {
		return nil, firstErr
	}
	r.sessions = int(opened.Load())
	progress(e.stderr, "memory: %d sessions open on %d connections in %.1f s", r.sessions, nClients, r.open.Seconds())
	if r.server2, err = settledRSS(e.server.cmd.Process.Pid); err != nil {
		return nil, err
	}
	if r.plugin2, err = rss(e.pluginPID); err != nil {
		return nil, err
	}
	// The sessions end with their connections.
	e.mu.Lock()
	rest := e.clients[:0]
	for _, c := range e.clients {
		idle := false
		for _, ic := range clients {
			idle = idle || c == ic
		}
		if !idle {
			rest = append(rest, c)
		}
	}
	e.clients = rest
	e.mu.Unlock()
	closeClients(clients)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var h healthz
		if err := e.getJSON("/healthz", &h); err == nil && h.Clients == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The server and the plugin close the sessions after the connections
	// went; let them finish before anything is timed.
	r.settle = waitIdle(e.server.cmd.Process.Pid, e.pluginPID)
	progress(e.stderr, "memory: server and plugin idle %.1f s after the idle clients closed", r.settle.Seconds())
	return r, nil
}

// cpuTicks returns the user + system CPU time of pid, in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// waitIdle waits, at most 30 s, until the processes together use less than
// 5 % of a CPU over 200 ms (clock ticks are 10 ms), and returns how long
// that took.
func waitIdle(pids ...int) time.Duration {
	start := time.Now()
	total := func() int64 {
		var t int64
		for _, p := range pids {
			t += cpuTicks(p)
		}
		return t
	}
	prev := total()
	for time.Since(start) < 30*time.Second {
		time.Sleep(200 * time.Millisecond)
		cur := total()
		if cur-prev <= 1 {
			break
		}
		prev = cur
	}
	return time.Since(start)
}

// path makes one call and checks the answer; caller is the caller's index
// (0 for the latency series).
type path struct {
	key, label string
	call       func(ctx context.Context, caller int) error
}

func (e *env) paths(ctx context.Context, cfg config) ([]path, error) {
	text := strings.Repeat("0123456789abcdef", cfg.size/16+1)[:cfg.size]
	payload := []byte(text)
	c, err := e.dial(ctx, "e2ecall")
	if err != nil {
		return nil, err
	}
	n := max(cfg.callers, 1)
	sess := make([]*client.Session, n)
	for i := range sess {
		if sess[i], err = c.StartSession(ctx, serviceName); err != nil {
			return nil, err
		}
	}
	demo := make([]*client.Session, n)
	for i := range demo {
		if demo[i], err = c.StartSession(ctx, builtinName); err != nil {
			return nil, err
		}
	}
	args := map[string]any{"text": text}
	check := func(v any, err error) error {
		if err != nil {
			return err
		}
		if s, ok := v.(string); !ok || s != text {
			return fmt.Errorf("wrong answer: %T %d", v, len(fmt.Sprint(v)))
		}
		return nil
	}
	pool, err := e.startFloor()
	if err != nil {
		return nil, fmt.Errorf("the floor's processes: %w", err)
	}
	e.mu.Lock()
	e.floorPool = pool
	e.mu.Unlock()
	return []path{
		{"grpc", "gRPC-Go unary echo, separate process (baseline)", func(ctx context.Context, _ int) error {
			var out []byte
			if err := grpcecho.Call(ctx, e.cc, payload, &out); err != nil {
				return err
			}
			if !bytes.Equal(out, payload) {
				return fmt.Errorf("wrong answer: %d bytes", len(out))
			}
			return nil
		}},
		{"connect", "Connect: client → connectserver → echo plugin → back", func(ctx context.Context, caller int) error {
			return check(sess[caller%n].Call(ctx, "echo", args))
		}},
		{"builtin", "Connect, builtin Demo.echo (also a plugin process; sets no runtime data)", func(ctx context.Context, caller int) error {
			return check(demo[caller%n].Call(ctx, "echo", args))
		}},
		{"ping", "control: client.Ping, wire Ping/Pong (no session layer, no payload)", func(ctx context.Context, _ int) error {
			_, err := c.Ping(ctx)
			return err
		}},
		{"floor", "floor: raw sockets, client → relay process (tcp) → echo process (unix) → back", func(_ context.Context, caller int) error {
			return pool.call(caller, payload)
		}},
	}, nil
}

// latencyBlock is how many calls a path makes per turn: the paths take
// turns block by block, so that whatever else the machine does hits them
// alike.
type latencies = map[string][]time.Duration

// measured adapts the benchmark's paths to package measure.
func measured(paths []path) []measure.Path {
	out := make([]measure.Path, len(paths))
	for i, p := range paths {
		out[i] = measure.Path{Key: p.key, Label: p.label, Call: p.call}
	}
	return out
}

func latency(ctx context.Context, cfg config, paths []path) (latencies, error) {
	return measure.Latency(ctx, measured(paths), cfg.warmup, cfg.calls, cfg.latLimit)
}

func throughput(ctx context.Context, cfg config, paths []path) (map[string]measure.Rate, error) {
	return measure.Throughput(ctx, measured(paths), cfg.callers, cfg.maxCalls, cfg.limit)
}

var pct = measure.Pct

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func report(w io.Writer, cfg config, paths []path, lat latencies, thr map[string]measure.Rate, mem *memResult) {
	base := lat["grpc"]
	fmt.Fprintf(w, "\n## Round trip, one caller (up to %d calls per path, after %d warm-up calls)\n\n", cfg.calls, cfg.warmup)
	fmt.Fprintf(w, "| path | calls | p50 | p99 | mean | p50 vs gRPC | p99 vs gRPC |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range paths {
		s := lat[p.key]
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		mean := time.Duration(0)
		if len(s) > 0 {
			mean = sum / time.Duration(len(s))
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.2f× | %.2f× |\n", p.label, len(s), us(pct(s, 50)), us(pct(s, 99)), us(mean),
			float64(pct(s, 50))/float64(pct(base, 50)), float64(pct(s, 99))/float64(pct(base, 99)))
	}
	fmt.Fprintf(w, "\n## Throughput, %d concurrent callers, %s per path\n\n", cfg.callers, cfg.limit)
	fmt.Fprintf(w, "Connect: one session per caller, all on one client connection; gRPC: one shared ClientConn.\n\n")
	fmt.Fprintf(w, "| path | calls | calls/s | vs gRPC |\n|---|---:|---:|---:|\n")
	for _, p := range paths {
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f× |\n", p.label, thr[p.key].Calls, thr[p.key].PerSec(), thr[p.key].PerSec()/thr["grpc"].PerSec())
	}
	if mem != nil {
		fmt.Fprintf(w, "\n## Memory per idle session (%d sessions on %d client connections, opened in %.1f s)\n\n",
			mem.sessions, mem.clients, mem.open.Seconds())
		fmt.Fprintf(w, "| process | VmRSS before | after connecting | after the sessions | per session | per session incl. its share of the connection |\n|---|---:|---:|---:|---:|---:|\n")
		per := float64(mem.server2-mem.server1) / float64(mem.sessions)
		perAll := float64(mem.server2-mem.server0) / float64(mem.sessions)
		fmt.Fprintf(w, "| connectserver | %s | %s | %s | %.0f B | %.0f B |\n", mib(mem.server0), mib(mem.server1), mib(mem.server2), per, perAll)
		pp := float64(mem.plugin2-mem.plugin0) / float64(mem.sessions)
		fmt.Fprintf(w, "| echo service plugin | %s | – | %s | %.0f B | – |\n", mib(mem.plugin0), mib(mem.plugin2), pp)
		// The whole process at 100,000 sessions: its RSS before the
		// clients connected plus 100,000 times the per-session cost
		// including the connections.
		ext := float64(mem.server0) + perAll*100000
		how := "extrapolated"
		if mem.sessions == 100000 {
			how = "measured"
		}
		verdict := "within"
		if ext > 2<<30 {
			verdict = "NOT within"
		}
		fmt.Fprintf(w, "\nconnectserver VmRSS at 100,000 sessions (%d per connection), %s: %.2f GiB, %s the 2 GiB goal\n",
			cfg.perClient, how, ext/(1<<30), verdict)
	}
	c, g := lat["connect"], lat["grpc"]
	verdict := "MET"
	if float64(pct(c, 50)) > 0.7*float64(pct(g, 50)) {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "\nsummary: Connect end to end p50 %.2f× gRPC unary (goal ≤ 0.70×: %s), p99 %.2f×; %.2f× the calls/s with %d callers\n",
		float64(pct(c, 50))/float64(pct(g, 50)), verdict, float64(pct(c, 99))/float64(pct(g, 99)),
		thr["connect"].PerSec()/thr["grpc"].PerSec(), cfg.callers)
	f := lat["floor"]
	fmt.Fprintf(w, "floor: three processes with raw sockets take %.2f× gRPC unary at p50; Connect takes %.2f× the floor (p50 +%s)\n",
		float64(pct(f, 50))/float64(pct(g, 50)), float64(pct(c, 50))/float64(pct(f, 50)), us(pct(c, 50)-pct(f, 50)))
}
