package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin"
	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
	"github.com/bearerkit/connect/bearers/bearertest"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bearers/udp"
	"github.com/bearerkit/connect/internal/handoff"
)

// The test binary doubles as every plugin these tests need: with
// CONNECT_TEST_PLUGIN set it serves that plugin instead of running tests
// (the pattern of go-plugin's own helperProcess).
const modeEnv = "CONNECT_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if mode := os.Getenv(modeEnv); mode != "" {
		servePluginMode(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func servePluginMode(mode string) {
	switch mode {
	case "tcp":
		bearerplugin.Serve(tcp.Registration)
	case "udp":
		bearerplugin.Serve(udp.Registration)
	case "hang": // never completes the handshake
		time.Sleep(time.Hour)
	case "garbage": // prints nonsense where the handshake line belongs
		fmt.Println("HTTP/1.1 200 OK hello there")
		time.Sleep(time.Hour)
	case "badinfo": // describes itself with an invalid type and capabilities
		reg := tcp.Registration
		reg.Info = bearers.Info{Type: "Not A Type", Scheme: "tcp", Capabilities: 0}
		bearerplugin.Serve(reg)
	case "badattr": // Configure fails: the factory rejects attributes
		reg := tcp.Registration
		bearerplugin.Serve(reg)
	case "nonsense-fd": // hands over a pipe claiming it is a TCP socket
		serveRaw(&nonsenseServer{})
	case "crash-on-dial":
		reg := tcp.Registration
		reg.New = func(cfg bearers.Config) (bearers.Bearer, error) {
			b, err := tcp.New(cfg)
			return crashBearer{b}, err
		}
		bearerplugin.Serve(reg)
	}
}

// serveRaw serves a hand-written gRPC implementation, for plugins that
// misbehave below what bearerplugin.Serve allows.
func serveRaw(impl interface {
	bearerpb.BearerServer
	setSender(*handoff.Sender)
}) {
	f := os.NewFile(bearerplugin.HandoffFD, "handoff")
	c, err := net.FileConn(f)
	if err != nil {
		os.Exit(3)
	}
	impl.setSender(handoff.NewSender(c.(*net.UnixConn)))
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: bearerplugin.Handshake,
		Plugins:         plugin.PluginSet{bearerplugin.PluginName: &bearerplugin.GRPCPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hclog.NewNullLogger(),
	})
}

type nonsenseServer struct {
	bearerpb.UnimplementedBearerServer
	send *handoff.Sender
}

func (n *nonsenseServer) setSender(s *handoff.Sender) { n.send = s }
func (n *nonsenseServer) Describe(context.Context, *bearerpb.DescribeRequest) (*bearerpb.DescribeResponse, error) {
	return &bearerpb.DescribeResponse{Type: "test.bearer.nonsense", Scheme: "tcp", Capabilities: uint32(bearers.Reliable | bearers.Ordered), ContractVersion: bearerplugin.ContractVersion}, nil
}
func (n *nonsenseServer) Configure(context.Context, *bearerpb.ConfigureRequest) (*bearerpb.ConfigureResponse, error) {
	return &bearerpb.ConfigureResponse{}, nil
}
func (n *nonsenseServer) Dial(_ context.Context, req *bearerpb.DialRequest) (*bearerpb.Connection, error) {
	switch req.Endpoint {
	case "tcp://127.0.0.1:1": // a pipe, claimed to be a TCP socket
		r, w, _ := os.Pipe()
		defer r.Close()
		defer w.Close()
		n.send.Send(7, int(r.Fd()))
		return &bearerpb.Connection{ConnId: 7, Handoff: bearerpb.Handoff_HANDOFF_STREAM_SOCKET}, nil
	default: // a connection id whose descriptor never comes
		return &bearerpb.Connection{ConnId: 99, Handoff: bearerpb.Handoff_HANDOFF_STREAM_SOCKET}, nil
	}
}

type crashBearer struct{ bearers.Bearer }

func (crashBearer) Dial(context.Context, bearers.Endpoint) (bearers.Conn, error) {
	os.Exit(3)
	return nil, nil
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func options(t *testing.T, mode string, logs io.Writer) Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	return Options{
		Name:         mode,
		Path:         exe,
		Env:          []string{modeEnv + "=" + mode},
		StartTimeout: 5 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func startPlugin(t *testing.T, mode string) *Plugin {
	t.Helper()
	p, err := Start(context.Background(), options(t, mode, nil))
	if err != nil {
		t.Fatalf("Start(%s): %v", mode, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestTCPPluginHandsOverKernelSockets(t *testing.T) {
	p := startPlugin(t, "tcp")
	if p.Info().Type != "connect.bearer.tcp" || p.PID() <= 0 || p.PID() == os.Getpid() {
		t.Fatalf("info %+v pid %d", p.Info(), p.PID())
	}
	ctx := context.Background()
	l, err := p.Listen(ctx, bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Endpoint().Port == 0 {
		t.Fatalf("listener endpoint %s has no real port", l.Endpoint())
	}
	dialed, err := p.Dial(ctx, l.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	accepted, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	for _, c := range []bearers.Conn{dialed, accepted} {
		sc, ok := c.(bearers.SocketConn)
		if !ok {
			t.Fatalf("%T is not a SocketConn", c)
		}
		if _, ok := sc.NetConn().(*net.TCPConn); !ok {
			t.Fatalf("connection was not handed over as a TCP socket: %T", sc.NetConn())
		}
	}
	if dialed.LocalAddr().String() != accepted.RemoteAddr().String() {
		t.Fatalf("addresses disagree: dialed local %s, accepted remote %s", dialed.LocalAddr(), accepted.RemoteAddr())
	}
	msg := []byte("through the kernel socket")
	if _, err := dialed.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(accepted, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("read %q, %v", got, err)
	}

	// The handed-over socket survives the plugin's death.
	syscall.Kill(p.PID(), syscall.SIGKILL)
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("plugin death not noticed")
	}
	if _, err := accepted.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 10)
	if _, err := io.ReadFull(dialed, got); err != nil || string(got) != "still here" {
		t.Fatalf("after plugin death read %q, %v", got, err)
	}
	if _, err := p.Dial(ctx, l.Endpoint()); !errors.Is(err, ErrPluginExited) {
		t.Fatalf("Dial on a dead plugin: %v, want ErrPluginExited", err)
	}
}

func TestUDPPluginHandsOverTheSocket(t *testing.T) {
	p := startPlugin(t, "udp")
	ctx := context.Background()
	l, err := p.Listen(ctx, bearers.MustParseEndpoint("udp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !HostOwned(l) {
		t.Fatal("udp listener is not host-owned: datagrams would cross the plugin")
	}
	syscall.Kill(p.PID(), syscall.SIGKILL) // the socket is ours now
	<-p.Exited()
	c, err := udp.Registration.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Dial(ctx, l.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Write([]byte("one datagram"))
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a, err := l.Accept(actx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	buf := make([]byte, 100)
	n, err := a.Read(buf)
	if err != nil || string(buf[:n]) != "one datagram" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestBadPluginsFailClearly(t *testing.T) {
	cases := []struct {
		mode, want string
	}{
		{"hang", "timeout"},
		{"garbage", "handshake"},
		{"badinfo", "invalid description"},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			o := options(t, c.mode, nil)
			o.StartTimeout = 2 * time.Second
			p, err := Start(context.Background(), o)
			if err == nil {
				p.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "plugin "+c.mode) {
				t.Fatalf("error %q does not name the plugin and mention %q", err, c.want)
			}
		})
	}
	t.Run("wrong type", func(t *testing.T) {
		o := options(t, "tcp", nil)
		o.WantType = "connect.bearer.ssl"
		if _, err := Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), `configuration says "connect.bearer.ssl"`) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("bad attribute", func(t *testing.T) {
		o := options(t, "badattr", nil)
		o.Config.Attributes = bearers.Attributes{"nodelya": "true"}
		if _, err := Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), "nodelya") || !strings.Contains(err.Error(), "configure") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestNonsenseHandoff(t *testing.T) {
	p := startPlugin(t, "nonsense-fd")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Dial(ctx, bearers.MustParseEndpoint("tcp://127.0.0.1:1"))
	if err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("pipe claimed as TCP socket: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	_, err = p.Dial(short, bearers.MustParseEndpoint("tcp://127.0.0.1:2"))
	if err == nil || !strings.Contains(err.Error(), "descriptor of conn 99") {
		t.Fatalf("missing descriptor: %v", err)
	}
}

func TestSupervisorRestartsADeadPlugin(t *testing.T) {
	logs := &logBuffer{}
	o := options(t, "tcp", logs)
	// A fixed port, so the restarted plugin listens where clients expect.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := bearers.Endpoint{}.WithAddr(probe.Addr())
	ep.Scheme = "tcp"
	probe.Close()

	got := make(chan bearers.Conn, 4)
	s := NewSupervisor(o, ep, func(c bearers.Conn) { got <- c })
	s.BackoffMin = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-s.Ready()
	first := s.Status()
	if first.State != StateRunning || first.PID == 0 {
		t.Fatalf("status %+v", first)
	}
	dialAndExpect := func() {
		t.Helper()
		var c net.Conn
		var err error
		for i := 0; i < 100; i++ { // the listener may be coming back
			if c, err = net.Dial("tcp", ep.HostPort()); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case a := <-got:
			a.Close()
		case <-time.After(10 * time.Second):
			t.Fatal("no connection handed to Handle")
		}
	}
	dialAndExpect()
	syscall.Kill(first.PID, syscall.SIGKILL)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.Status()
		if st.Restarts >= 1 && st.State == StateRunning && st.PID != first.PID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not restarted: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dialAndExpect()
	if !strings.Contains(logs.String(), "bearer plugin process exited") || !strings.Contains(logs.String(), "restarting bearer plugin") {
		t.Fatalf("log does not say what happened:\n%s", logs)
	}
}

// The tcp bearer behind the plugin boundary passes the same conformance
// suite as in process.
func TestPluginPassesTheConformanceSuite(t *testing.T) {
	bearertest.TestBearer(t, startPlugin(t, "tcp"), bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
}
