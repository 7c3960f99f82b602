// Package pluginhost runs bearer plugins as subprocesses: it starts them with
// hashicorp/go-plugin's handshake, checks what they describe, configures them,
// receives their connections on the handoff socket and restarts them with
// backoff when they die. The server and remoteservicerunner use it; a Plugin
// is itself a bearers.Bearer, so the rest of the code does not care whether a
// bearer runs in process or behind the plugin boundary.
package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin"
	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
	"github.com/bearerkit/connect/bearers/dgram"
	"github.com/bearerkit/connect/internal/handoff"
)

// Options say how to start one plugin.
type Options struct {
	// Name identifies the plugin in logs (usually the adapter name).
	Name string
	// Path is the plugin executable; Args are its arguments (for the stock
	// bearers: the host's own executable and "plugin bearer tcp").
	Path string
	Args []string
	// Env is added to the plugin's environment.
	Env []string
	// WantType, if set, is the bearer type the plugin must describe itself as.
	WantType string
	// Config is passed to the plugin's Configure.
	Config bearers.Config
	// StartTimeout bounds the handshake, Describe and Configure together.
	// Default 10s.
	StartTimeout time.Duration
	// ControlTimeout bounds each later control call that has no deadline of
	// its own (Listen, CloseListener, descriptor arrival). Default 10s.
	ControlTimeout time.Duration
	// Logger receives the host's and the plugin's log lines. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	if o.ControlTimeout <= 0 {
		o.ControlTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Name == "" {
		o.Name = o.Path
	}
}

// Plugin is a running bearer plugin. It implements bearers.Bearer. Its
// methods are safe for concurrent use.
type Plugin struct {
	opts   Options
	client *plugin.Client
	rpc    bearerpb.BearerClient
	recv   *handoff.Receiver
	info   bearers.Info
	pid    int
	exited chan struct{}

	closeOnce sync.Once
	killOnce  sync.Once
}

// kill stops the process once: gracefully (go-plugin's Shutdown call), then
// by force. Close and the death watcher both call it.
func (p *Plugin) kill() { p.killOnce.Do(p.client.Kill) }

// ErrPluginExited is returned by calls on a plugin whose process is gone.
var ErrPluginExited = errors.New("pluginhost: plugin process exited")

// Start launches the plugin, performs the handshake, checks Describe and
// calls Configure. On any failure the process is killed and the error says
// which step failed.
func Start(ctx context.Context, opts Options) (_ *Plugin, err error) {
	opts.defaults()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	hostEnd, pluginEnd, err := handoff.Pair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Env = append(os.Environ(), opts.Env...)
	cmd.ExtraFiles = []*os.File{pluginEnd} // descriptor 3 in the child
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  bearerplugin.Handshake,
		Plugins:          plugin.PluginSet{bearerplugin.PluginName: &bearerplugin.GRPCPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     opts.StartTimeout,
		Logger:           hclogToSlog(opts.Logger, opts.Name),
	})
	p := &Plugin{opts: opts, client: client, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			client.Kill()
			hostEnd.Close()
			err = fmt.Errorf("plugin %s (%s): %w", opts.Name, opts.Path, err)
		}
	}()
	proto, err := client.Client()
	pluginEnd.Close() // the child has its copy (or failed to start)
	if err != nil {
		return nil, fmt.Errorf("start and handshake: %w", err)
	}
	if rc := client.ReattachConfig(); rc != nil {
		p.pid = rc.Pid
	}
	raw, err := proto.Dispense(bearerplugin.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense: %w", err)
	}
	rpc, ok := raw.(bearerpb.BearerClient)
	if !ok {
		return nil, fmt.Errorf("dispense: got %T, want a bearer client", raw)
	}
	p.rpc = rpc

	desc, err := rpc.Describe(ctx, &bearerpb.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", err)
	}
	if desc.ContractVersion != bearerplugin.ContractVersion {
		return nil, fmt.Errorf("describe: plugin speaks bearer contract version %d, this host speaks %d", desc.ContractVersion, bearerplugin.ContractVersion)
	}
	p.info = bearers.Info{Type: desc.Type, Scheme: desc.Scheme, Capabilities: bearers.Capabilities(desc.Capabilities)}
	if err := p.info.Validate(); err != nil {
		return nil, fmt.Errorf("describe: plugin answered an invalid description: %w", err)
	}
	if opts.WantType != "" && p.info.Type != opts.WantType {
		return nil, fmt.Errorf("describe: plugin is bearer type %q, configuration says %q", p.info.Type, opts.WantType)
	}
	cres, err := rpc.Configure(ctx, &bearerpb.ConfigureRequest{Attributes: opts.Config.Attributes, StateDir: opts.Config.StateDir})
	if err != nil {
		return nil, fmt.Errorf("configure: %w", grpcMessage(err))
	}
	for _, n := range cres.Notices {
		opts.Logger.Info(n, "plugin", opts.Name)
	}
	p.recv = handoff.NewReceiver(hostEnd)
	go p.watch()
	opts.Logger.Debug("bearer plugin started", "plugin", opts.Name, "type", p.info.Type, "pid", p.pid)
	return p, nil
}

// watch notices the plugin's death: its end of the handoff socket closes
// when the process exits (or breaks the handoff protocol).
func (p *Plugin) watch() {
	<-p.recv.Done()
	if err := p.recv.Err(); err != nil && !errors.Is(err, handoff.ErrClosed) {
		p.opts.Logger.Error("bearer plugin broke the handoff protocol; killing it", "plugin", p.opts.Name, "pid", p.pid, "error", err)
	}
	p.kill()
	close(p.exited)
}

// Info implements bearers.Bearer.
func (p *Plugin) Info() bearers.Info { return p.info }

// PID is the plugin's process id.
func (p *Plugin) PID() int { return p.pid }

// Exited is closed once the plugin process is gone.
func (p *Plugin) Exited() <-chan struct{} { return p.exited }

// Close stops the plugin process (gracefully, then by force) and waits for
// it. Connections handed over as kernel sockets stay open; relayed ones end.
// Idempotent.
func (p *Plugin) Close() error {
	p.closeOnce.Do(func() {
		p.kill()
		p.recv.Close()
	})
	<-p.exited
	return nil
}

func (p *Plugin) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("plugin %s: %w", p.opts.Name, ErrPluginExited)
	default:
		return nil
	}
}

// check rejects calls on a dead plugin, with a done ctx or for a foreign scheme.
func (p *Plugin) check(ctx context.Context, ep bearers.Endpoint) error {
	if err := p.alive(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if ep.Scheme != p.info.Scheme {
		return fmt.Errorf("%w %s: %w: plugin %s serves %q", bearers.ErrBadEndpoint, ep, bearers.ErrUnknownScheme, p.opts.Name, p.info.Scheme)
	}
	return nil
}

func (p *Plugin) controlCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.opts.ControlTimeout)
}

// Dial implements bearers.Bearer.
func (p *Plugin) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	if err := p.check(ctx, ep); err != nil {
		return nil, err
	}
	ctx, cancel := p.controlCtx(ctx)
	defer cancel()
	m, err := p.rpc.Dial(ctx, &bearerpb.DialRequest{Endpoint: ep.String()})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s via plugin %s: %w", ep, p.opts.Name, ctx.Err())
		}
		return nil, fmt.Errorf("dial %s via plugin %s: %w", ep, p.opts.Name, grpcMessage(err))
	}
	return p.receive(ctx, m)
}

func (p *Plugin) receive(ctx context.Context, m *bearerpb.Connection) (bearers.Conn, error) {
	f, err := p.recv.Take(ctx, m.ConnId)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", p.opts.Name, err)
	}
	c, err := wrapConn(f, m, p.info.Scheme)
	if err != nil {
		return nil, fmt.Errorf("plugin %s answered nonsense: %w", p.opts.Name, err)
	}
	return c, nil
}

// Listen implements bearers.Bearer.
func (p *Plugin) Listen(ctx context.Context, ep bearers.Endpoint) (bearers.Listener, error) {
	if err := p.check(ctx, ep); err != nil {
		return nil, err
	}
	cctx, cancel := p.controlCtx(ctx)
	defer cancel()
	res, err := p.rpc.Listen(cctx, &bearerpb.ListenRequest{Endpoint: ep.String()})
	if err != nil {
		return nil, fmt.Errorf("listen %s via plugin %s: %w", ep, p.opts.Name, grpcMessage(err))
	}
	for _, n := range res.Notices {
		p.opts.Logger.Info(n, "plugin", p.opts.Name)
	}
	bound, err := bearers.ParseEndpoint(res.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("plugin %s answered nonsense: bound endpoint: %w", p.opts.Name, err)
	}
	if ps := res.PacketSocket; ps != nil {
		if ps.Handoff != bearerpb.Handoff_HANDOFF_PACKET_LISTENER {
			return nil, fmt.Errorf("plugin %s answered nonsense: packet socket with handoff %v", p.opts.Name, ps.Handoff)
		}
		f, err := p.recv.Take(cctx, ps.ConnId)
		if err != nil {
			return nil, fmt.Errorf("plugin %s: %w", p.opts.Name, err)
		}
		pc, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("plugin %s answered nonsense: packet socket: %w", p.opts.Name, err)
		}
		uc, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return nil, fmt.Errorf("plugin %s answered nonsense: packet socket is a %T, not UDP", p.opts.Name, pc)
		}
		// Serve the socket with the engine options the adapter configured.
		opts, _, err := dgram.ParseAttributes(p.opts.Config.Attributes)
		if err != nil {
			uc.Close()
			return nil, fmt.Errorf("plugin %s: %w", p.opts.Name, err)
		}
		return &hostListener{Listener: dgram.NewListener(uc, bound, opts)}, nil
	}
	return newStreamListener(p, res.ListenerId, bound), nil
}

// hostListener is a listener whose socket the host owns (a handed-over UDP
// socket): it outlives the plugin.
type hostListener struct{ bearers.Listener }

// HostOwned reports whether a listener returned by Plugin.Listen keeps
// working after its plugin exits (true for handed-over datagram sockets).
func HostOwned(l bearers.Listener) bool {
	_, ok := l.(*hostListener)
	return ok
}
