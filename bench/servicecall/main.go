// Command servicecall measures what a method call to a service plugin
// costs: a 64-byte call round trip host → plugin → host, p50 and p99, and
// calls per second with 64 concurrent callers, made four ways against the
// same plugin process:
//
//   - grpc:   a plain gRPC-Go unary call that echoes a protobuf bytes
//     message (hand-registered in the plugin process): the baseline;
//   - unary:  the contract's Invoke, one unary gRPC call per method call,
//     through the service's dispatch and value codec;
//   - stream: the contract's Connect stream (serviceplugin.HostConn.Call),
//     every call multiplexed on one long-lived stream: what hosts use;
//   - host:   pluginhost.ServicePlugin.Call, the stream behind the plugin
//     host's supervision, on a second process of the same plugin.
//
// It prints Markdown tables with ratios; docs/BENCHMARKS.md explains them.
//
//	go run ./bench/servicecall [-calls 20000] [-warmup 2000] [-callers 64] [-time 3s] [-size 64]
//
// Everything runs on this machine; every series is bounded by a count and by
// -time, and the plugin processes are stopped before the program exits. The
// program is its own plugin executable ("servicecall plugin").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/bearerkit/connect/bench/internal/measure"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

const serviceXML = `<service name="bench.call" version="1.0">
  <method name="echo" returns="binary"><arg name="data" type="binary"/></method>
</service>`

var benchService = &serviceplugin.Service{
	XML: []byte(serviceXML),
	Methods: map[string]serviceplugin.MethodFunc{
		"echo": func(_ context.Context, c *serviceplugin.Call) (any, error) { return c.Binary("data"), nil },
	},
}

// The baseline: one unary method echoing a protobuf message with one bytes
// field (servicepb.DataUpdate, reused), registered beside the contract.
const echoMethod = "/servicecall.Echo/Echo"

var echoDesc = grpc.ServiceDesc{
	ServiceName: "servicecall.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(servicepb.DataUpdate)
		if err := dec(in); err != nil {
			return nil, err
		}
		return in, nil
	}}},
	Metadata: "servicecall (hand-written)",
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "plugin" {
		servePlugin()
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// servePlugin serves the bench service and the baseline echo. Like
// serviceplugin.Serve, it never outlives its host.
func servePlugin() {
	srv, err := serviceplugin.NewServer(benchService)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parent := os.Getppid()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(0)
			}
		}
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: serviceplugin.Handshake,
		Plugins:         plugin.PluginSet{serviceplugin.PluginName: &serviceplugin.GRPCPlugin{Impl: srv}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			s := plugin.DefaultGRPCServer(opts)
			s.RegisterService(&echoDesc, struct{}{})
			return s
		},
		Logger: hclog.NewNullLogger(),
	})
}

type config struct {
	calls, warmup, callers, size int
	limit                        time.Duration
	maxCalls                     int64
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("servicecall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.IntVar(&cfg.calls, "calls", 20000, "measured sequential calls per path (latency)")
	fs.IntVar(&cfg.warmup, "warmup", 2000, "unmeasured calls per path before the latency series")
	fs.IntVar(&cfg.callers, "callers", 64, "concurrent callers (throughput)")
	fs.DurationVar(&cfg.limit, "time", 3*time.Second, "duration of each throughput run, and cap on each latency series")
	fs.IntVar(&cfg.size, "size", 64, "payload bytes per call")
	fs.Int64Var(&cfg.maxCalls, "max", 10_000_000, "cap on the calls of one throughput run")
	verbose := fs.Bool("v", false, "log the host's and the plugins' messages")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || cfg.calls <= 0 || cfg.warmup < 0 || cfg.callers <= 0 || cfg.limit <= 0 || cfg.size < 0 || cfg.size > 1<<20 || cfg.maxCalls <= 0 {
		fmt.Fprintln(stderr, "servicecall: bad arguments (see -h): -calls, -callers, -time and -max must be positive, -size from 0 to 1MiB")
		return 2
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	e, err := setup(ctx, logger)
	if err != nil {
		fmt.Fprintln(stderr, "servicecall:", err)
		return 1
	}
	context.AfterFunc(ctx, e.close) // on a signal, the calls fail and we end
	defer e.close()

	start := time.Now()
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(stdout, "# servicecall\n\n%s %s/%s, %d CPUs (GOMAXPROCS %d), kernel %s; %d-byte payload\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), kernel, cfg.size)

	payload := make([]byte, cfg.size)
	for i := range payload {
		payload[i] = byte(i)
	}
	paths, err := e.paths(payload)
	if err != nil {
		fmt.Fprintln(stderr, "servicecall:", err)
		return 1
	}
	lat, err := latency(ctx, cfg, paths)
	if err != nil {
		fmt.Fprintln(stderr, "servicecall: latency:", err)
		return 1
	}
	thr, err := throughput(ctx, cfg, paths)
	if err != nil {
		fmt.Fprintln(stderr, "servicecall: throughput:", err)
		return 1
	}
	report(stdout, cfg, paths, lat, thr)
	fmt.Fprintf(stdout, "\n(total %.1f s)\n", time.Since(start).Seconds())
	return 0
}

// env holds the plugin processes.
type env struct {
	client *plugin.Client // process 1, hosted here directly
	cc     *grpc.ClientConn
	rpc    servicepb.ServiceClient
	conn   *serviceplugin.HostConn
	host   *pluginhost.ServicePlugin // process 2
	desc   *servicefile.Service
	once   sync.Once
}

func setup(ctx context.Context, logger *slog.Logger) (*env, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find my own executable to start the plugin: %w", err)
	}
	e := &env{}
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	// Process 1: hosted the way pluginhost hosts a generation, keeping the
	// gRPC connection so that the baseline reaches the same process.
	e.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  serviceplugin.Handshake,
		Plugins:          plugin.PluginSet{serviceplugin.PluginName: &serviceplugin.GRPCPlugin{}},
		Cmd:              exec.Command(exe, "plugin"),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.NewNullLogger(),
	})
	proto, err := e.client.Client()
	if err != nil {
		return nil, fmt.Errorf("start the plugin: %w", err)
	}
	gc, isGRPC := proto.(*plugin.GRPCClient)
	if !isGRPC {
		return nil, fmt.Errorf("plugin protocol %T is not gRPC", proto)
	}
	e.cc = gc.Conn
	raw, err := proto.Dispense(serviceplugin.PluginName)
	if err != nil {
		return nil, err
	}
	e.rpc = raw.(servicepb.ServiceClient)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := e.rpc.Describe(sctx, &servicepb.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", err)
	}
	if e.desc, err = servicefile.Parse("bench.xml", d.ServiceXml); err != nil {
		return nil, err
	}
	if e.conn, err = serviceplugin.NewHostConn(sctx, e.rpc, e.desc, serviceplugin.HostConnOptions{Logger: logger}); err != nil {
		return nil, err
	}
	// Process 2: through the plugin host.
	if e.host, err = pluginhost.StartService(ctx, pluginhost.ServiceOptions{
		Service: "bench.call", Path: exe, Args: []string{"plugin"}, Logger: logger,
	}); err != nil {
		return nil, err
	}
	ok = true
	return e, nil
}

func (e *env) close() {
	e.once.Do(func() {
		if e.conn != nil {
			e.conn.Close()
		}
		if e.client != nil {
			e.client.Kill()
		}
		if e.host != nil {
			e.host.Close()
		}
	})
}

// path makes one call and checks the answer.
type path struct {
	key, label string
	call       func(ctx context.Context) error
}

func (e *env) paths(payload []byte) ([]path, error) {
	m := e.desc.Method("echo")
	args, err := services.AppendArgs(nil, m.Args, map[string]any{"data": payload})
	if err != nil {
		return nil, err
	}
	want, _ := services.AppendValue(nil, m.Returns, payload)
	check := func(res []byte, err error) error {
		if err == nil && string(res) != string(want) {
			err = fmt.Errorf("wrong answer: %d bytes", len(res))
		}
		return err
	}
	return []path{
		{"grpc", "gRPC-Go unary echo, same plugin process (baseline)", func(ctx context.Context) error {
			out := new(servicepb.DataUpdate)
			if err := e.cc.Invoke(ctx, echoMethod, &servicepb.DataUpdate{Value: payload}, out); err != nil {
				return err
			}
			if string(out.Value) != string(payload) {
				return fmt.Errorf("wrong answer: %d bytes", len(out.Value))
			}
			return nil
		}},
		{"unary", "contract, one unary Invoke per call", func(ctx context.Context) error {
			return check(e.conn.CallUnary(ctx, e.rpc, "", "echo", args))
		}},
		{"stream", "contract, calls on the Connect stream (HostConn)", func(ctx context.Context) error {
			return check(e.conn.Call(ctx, "", "echo", args))
		}},
		{"host", "pluginhost.ServicePlugin.Call (stream, supervised)", func(ctx context.Context) error {
			return check(e.host.Call(ctx, "", "echo", args))
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
		out[i] = measure.Path{Key: p.key, Label: p.label, Call: func(ctx context.Context, _ int) error { return p.call(ctx) }}
	}
	return out
}

func latency(ctx context.Context, cfg config, paths []path) (latencies, error) {
	return measure.Latency(ctx, measured(paths), cfg.warmup, cfg.calls, cfg.limit)
}

func throughput(ctx context.Context, cfg config, paths []path) (map[string]measure.Rate, error) {
	return measure.Throughput(ctx, measured(paths), cfg.callers, cfg.maxCalls, cfg.limit)
}

var pct = measure.Pct

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

func report(w io.Writer, cfg config, paths []path, lat latencies, thr map[string]measure.Rate) {
	fmt.Fprintf(w, "\n## Round trip, one caller (%d calls per path, after %d warm-up calls)\n\n", len(lat["stream"]), cfg.warmup)
	fmt.Fprintf(w, "| path | p50 | p99 | p50 vs gRPC | p99 vs gRPC |\n|---|---:|---:|---:|---:|\n")
	base := lat["grpc"]
	for _, p := range paths {
		s := lat[p.key]
		fmt.Fprintf(w, "| %s | %s | %s | %.2f× | %.2f× |\n", p.label, us(pct(s, 50)), us(pct(s, 99)),
			float64(pct(s, 50))/float64(pct(base, 50)), float64(pct(s, 99))/float64(pct(base, 99)))
	}
	fmt.Fprintf(w, "\n## Throughput, %d concurrent callers, %s per path\n\n", cfg.callers, cfg.limit)
	fmt.Fprintf(w, "| path | calls/s | vs gRPC |\n|---|---:|---:|\n")
	for _, p := range paths {
		fmt.Fprintf(w, "| %s | %.0f | %.2f× |\n", p.label, thr[p.key].PerSec(), thr[p.key].PerSec()/thr["grpc"].PerSec())
	}
	st, un := lat["stream"], lat["unary"]
	fmt.Fprintf(w, "\nstream vs unary Invoke: p50 %.2f×, p99 %.2f× the latency; %.2f× the calls/s with %d callers\n",
		float64(pct(st, 50))/float64(pct(un, 50)), float64(pct(st, 99))/float64(pct(un, 99)),
		thr["stream"].PerSec()/thr["unary"].PerSec(), cfg.callers)
	verdict := "the stream wins"
	if pct(st, 50) >= pct(un, 50) || thr["stream"].PerSec() <= thr["unary"].PerSec() {
		verdict = "the stream does NOT win on every figure"
	}
	fmt.Fprintf(w, "verdict: %s\n", verdict)
}
