package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// ServiceOptions say how to run one service plugin.
type ServiceOptions struct {
	// Service is the name of the service the configuration expects the
	// plugin to serve; a plugin describing another service is refused.
	// Required.
	Service string
	// Name identifies the plugin in logs; default Service.
	Name string
	// Path is the plugin executable; Args are its arguments and Env is
	// added to its environment.
	Path string
	Args []string
	Env  []string
	// StartTimeout bounds one start: the handshake, Describe, and the
	// stream's Start and Ready. Default 10s.
	StartTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay before restarting a plugin
	// that died (defaults 100ms, 30s), as for bearer plugins.
	BackoffMin, BackoffMax time.Duration
	// MaxPendingCalls bounds the calls waiting for an answer
	// (serviceplugin.HostConnOptions); default 10000.
	MaxPendingCalls int
	// Restore, if set, is called before every start of the plugin; the
	// values it returns (persistent runtime data) are applied by the plugin
	// before anything else.
	Restore func() []serviceplugin.DataUpdate
	// OnEvent and OnData receive the service's events and runtime-data
	// updates, checked against its service file, in order, on one
	// goroutine per plugin process; they must not block (see
	// serviceplugin.HostConn). After every start, OnData first receives the
	// whole tree (Path ""): after a restart, that replaces what the
	// previous process published.
	OnEvent func(serviceplugin.Event)
	OnData  func(serviceplugin.DataUpdate)
	// OnSessionLost, if set, is called when a restarted plugin refuses to
	// reopen a session that was open before its restart; the session is
	// gone from the service and should be closed for its client.
	OnSessionLost func(sessionID string, err error)
	// Logger receives the host's and the plugin's log lines. Default
	// slog.Default().
	Logger *slog.Logger
}

// ServiceStatus is a snapshot of a service plugin, for /healthz and logs.
type ServiceStatus struct {
	Service   string    `json:"service"`
	Name      string    `json:"name"`
	State     State     `json:"state"`
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"lastError,omitempty"`
	Since     time.Time `json:"since"`
}

// ServicePlugin runs one service plugin subprocess and keeps it running: it
// starts the plugin with go-plugin's handshake, checks that the service file
// it describes parses and names the expected service, and serves calls,
// session notices, events and runtime data over one Connect stream
// (serviceplugin.HostConn). When the plugin dies, calls waiting for it fail
// with a *serviceplugin.CallError naming the service, the method and the
// session and wrapping ErrPluginExited (and serviceplugin.ErrConnLost); the
// plugin is restarted with the bearer supervisor's backoff, the sessions
// open before are opened again, and new calls go to the new process. A
// call made while the plugin restarts waits for it, within its context.
//
// Its methods are safe for concurrent use.
type ServicePlugin struct {
	opts ServiceOptions
	log  *slog.Logger
	desc *servicefile.Service
	xml  []byte // the service file the first process described

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the supervising goroutine returns

	mu       sync.Mutex
	gen      *generation   // the running process; nil while (re)starting
	genReady chan struct{} // closed when gen is set again
	sessions map[string]serviceplugin.SessionInfo
	status   ServiceStatus

	closeOnce sync.Once
}

// generation is one plugin process and its stream.
type generation struct {
	client  *plugin.Client
	cmd     *exec.Cmd
	rpc     servicepb.ServiceClient
	conn    *serviceplugin.HostConn
	pid     int
	started time.Time
	retired chan struct{} // closed once the supervisor stopped publishing it
}

func (g *generation) kill() {
	if g.conn != nil {
		g.conn.Close()
	}
	g.client.Kill()
}

// processExit is the error a call gets when the plugin process died.
type processExit struct {
	pid   int
	state string
}

func (e *processExit) Error() string {
	return fmt.Sprintf("plugin process exited: pid %d, %s", e.pid, e.state)
}

func (e *processExit) Is(target error) bool { return target == ErrPluginExited }

// lost says what happened to the process after its stream broke: waits a
// moment for the process to be reaped, since a process that dies breaks
// its stream a moment before its parent learns that it exited.
func (g *generation) lost(streamErr error) error {
	for i := 0; i < 100 && !g.client.Exited(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if g.client.Exited() {
		state := "exit status unknown"
		if ps := g.cmd.ProcessState; ps != nil { // set before Exited reports true
			state = ps.String()
		}
		return &processExit{pid: g.pid, state: state}
	}
	return fmt.Errorf("plugin (pid %d) broke its stream: %v", g.pid, grpcMessage(streamErr))
}

// StartService starts the plugin and waits until it serves (the handshake,
// Describe, and the stream's Start and Ready, within opts.StartTimeout and
// ctx), then supervises it until Close. An error says which step failed: a
// plugin that cannot start, describes a service file that does not parse
// or names another service than opts.Service is not supervised.
func StartService(ctx context.Context, opts ServiceOptions) (*ServicePlugin, error) {
	if opts.Service == "" {
		return nil, errors.New("pluginhost: ServiceOptions.Service is empty: say which service the plugin must serve")
	}
	if opts.Path == "" {
		return nil, fmt.Errorf("pluginhost: service %s: ServiceOptions.Path is empty", opts.Service)
	}
	if opts.Name == "" {
		opts.Name = opts.Service
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &ServicePlugin{opts: opts, log: opts.Logger.With("service", opts.Service, "plugin", opts.Name),
		done: make(chan struct{}), genReady: make(chan struct{}), sessions: map[string]serviceplugin.SessionInfo{},
		status: ServiceStatus{Service: opts.Service, Name: opts.Name, State: StateStarting, Since: time.Now()}}
	g, err := s.start(ctx)
	if err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.publish(g, nil)
	go s.supervise(g)
	return s, nil
}

// start runs one plugin process up to a ready stream.
func (s *ServicePlugin) start(ctx context.Context) (_ *generation, err error) {
	o := s.opts
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	cmd := exec.Command(o.Path, o.Args...)
	cmd.Env = append(os.Environ(), o.Env...)
	g := &generation{cmd: cmd, started: time.Now(), retired: make(chan struct{})}
	g.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  serviceplugin.Handshake,
		Plugins:          plugin.PluginSet{serviceplugin.PluginName: &serviceplugin.GRPCPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     o.StartTimeout,
		Logger:           hclogToSlog(o.Logger, o.Name),
	})
	defer func() {
		if err != nil {
			g.kill()
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			err = fmt.Errorf("service plugin %s (%s): %w", o.Name, o.Path, err)
		}
	}()
	proto, err := g.client.Client()
	if err != nil {
		return nil, fmt.Errorf("start and handshake: %w", err)
	}
	if rc := g.client.ReattachConfig(); rc != nil {
		g.pid = rc.Pid
	}
	raw, err := proto.Dispense(serviceplugin.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense: %w", err)
	}
	rpc, ok := raw.(servicepb.ServiceClient)
	if !ok {
		return nil, fmt.Errorf("dispense: got %T, want a service client", raw)
	}
	g.rpc = rpc
	d, err := rpc.Describe(ctx, &servicepb.DescribeRequest{})
	if err != nil {
		return nil, fmt.Errorf("describe: %w", grpcMessage(err))
	}
	if d.ContractVersion != serviceplugin.ContractVersion {
		return nil, fmt.Errorf("describe: plugin speaks service contract version %d, this host speaks %d", d.ContractVersion, serviceplugin.ContractVersion)
	}
	desc := s.desc
	if s.xml == nil {
		desc, err = servicefile.Parse(o.Path+" (described service file)", d.ServiceXml)
		if err != nil {
			return nil, fmt.Errorf("describe: the service file the plugin describes is not valid:\n%w", err)
		}
		if desc.Name != o.Service {
			return nil, fmt.Errorf("describe: plugin serves service %q, configuration says %q", desc.Name, o.Service)
		}
		if d.Name != desc.Name || d.Version != desc.Version {
			return nil, fmt.Errorf("describe: plugin says it serves %s %s, but its service file says %s %s", d.Name, d.Version, desc.Name, desc.Version)
		}
	} else if !bytes.Equal(d.ServiceXml, s.xml) {
		return nil, fmt.Errorf("describe: the restarted plugin describes another service file than the one it started with; restart the server to change a service's file")
	}
	var restore []serviceplugin.DataUpdate
	if o.Restore != nil {
		restore = o.Restore()
	}
	g.conn, err = serviceplugin.NewHostConn(ctx, rpc, desc, serviceplugin.HostConnOptions{
		Restore:         restore,
		OnEvent:         o.OnEvent,
		OnData:          o.OnData,
		MaxPendingCalls: o.MaxPendingCalls,
		Logger:          s.log,
		Lost:            g.lost,
	})
	if err != nil {
		return nil, fmt.Errorf("connect: %w", grpcMessage(err))
	}
	if s.xml == nil {
		s.desc, s.xml = desc, d.ServiceXml
	}
	s.log.Debug("service plugin started", "pid", g.pid, "version", desc.Version)
	return g, nil
}

// publish makes g the running process; calls waiting for one go ahead.
// Sessions reopened on g but closed meanwhile are closed on g.
func (s *ServicePlugin) publish(g *generation, reopened []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range reopened {
		if _, ok := s.sessions[id]; !ok {
			g.conn.CloseSession(id, "closed while the service restarted")
		}
	}
	s.gen = g
	close(s.genReady)
	s.status.State, s.status.PID, s.status.Since = StateRunning, g.pid, time.Now()
}

// supervise waits for the running process to die and restarts it, until
// Close.
func (s *ServicePlugin) supervise(g *generation) {
	defer close(s.done)
	b := newBackoff(s.opts.BackoffMin, s.opts.BackoffMax)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-g.conn.Done():
		}
		cause := g.conn.Err()
		s.mu.Lock()
		s.gen, s.genReady = nil, make(chan struct{})
		close(g.retired)
		s.status.State, s.status.PID, s.status.LastError, s.status.Since = StateRestarting, 0, cause.Error(), time.Now()
		s.mu.Unlock()
		g.kill()
		s.log.Error("service plugin died; calls waiting for it failed", "pid", g.pid, "error", cause)
		b.ran(time.Since(g.started))
		for {
			delay := b.next()
			s.log.Warn("restarting service plugin", "in", delay.Round(time.Millisecond))
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			s.mu.Lock()
			s.status.Restarts++
			s.mu.Unlock()
			ng, err := s.start(s.ctx)
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.mu.Lock()
				s.status.LastError = err.Error()
				s.mu.Unlock()
				s.log.Error("service plugin did not start", "error", err)
				continue
			}
			g = ng
			break
		}
		reopened := s.reopen(g)
		s.publish(g, reopened)
		s.log.Info("service plugin restarted", "pid", g.pid)
	}
}

// reopen opens, on a new process, the sessions open on the previous one
// (up to 64 at a time). A session the service refuses is dropped and
// reported to OnSessionLost. It returns the ids it reopened.
func (s *ServicePlugin) reopen(g *generation) []string {
	s.mu.Lock()
	infos := make([]serviceplugin.SessionInfo, 0, len(s.sessions))
	for _, in := range s.sessions {
		infos = append(infos, in)
	}
	s.mu.Unlock()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		reopened []string
		sem      = make(chan struct{}, 64)
	)
	for _, in := range infos {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(s.ctx, s.opts.StartTimeout)
			defer cancel()
			err := g.conn.OpenSession(ctx, in)
			switch {
			case err == nil:
				mu.Lock()
				reopened = append(reopened, in.ID)
				mu.Unlock()
			case g.conn.Err() != nil || s.ctx.Err() != nil:
				// The new process died too, or we are closing: the session
				// stays, for the next process.
			default:
				s.mu.Lock()
				_, open := s.sessions[in.ID]
				delete(s.sessions, in.ID)
				s.mu.Unlock()
				if open {
					s.log.Warn("the restarted service plugin did not reopen a session; it is lost", "session", in.ID, "error", err)
					if s.opts.OnSessionLost != nil {
						s.opts.OnSessionLost(in.ID, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	return reopened
}

// current returns the running process, waiting while the plugin restarts
// (also when it has died and the supervisor is about to notice).
func (s *ServicePlugin) current(ctx context.Context) (*generation, error) {
	for {
		s.mu.Lock()
		g, ready := s.gen, s.genReady
		s.mu.Unlock()
		var retired chan struct{}
		if g != nil {
			if g.conn.Err() == nil {
				return g, nil
			}
			retired = g.retired
		}
		select {
		case <-retired:
		case <-ready:
		case <-s.ctx.Done():
			return nil, serviceplugin.ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the service plugin to restart: %w", ctx.Err())
		}
	}
}

// Description returns the service file the plugin serves. Do not modify it.
func (s *ServicePlugin) Description() *servicefile.Service { return s.desc }

// ServiceXML returns the text of the service file the plugin serves.
func (s *ServicePlugin) ServiceXML() []byte { return bytes.Clone(s.xml) }

// Status returns a snapshot.
func (s *ServicePlugin) Status() ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Call calls method in session sessionID ("" for a call outside sessions)
// with arguments encoded by services.AppendArgs, and returns the result
// encoded by services.AppendValue (nil for a method that returns nothing).
// ctx's deadline becomes the method's. Every error is a
// *serviceplugin.CallError.
func (s *ServicePlugin) Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	for {
		g, err := s.current(ctx)
		if err != nil {
			return nil, &serviceplugin.CallError{Service: s.opts.Service, Method: method, Session: sessionID, Err: err}
		}
		res, err := g.conn.Call(ctx, sessionID, method, args)
		if unsent(err) && ctx.Err() == nil {
			continue // the process died before the call left: the next one gets it
		}
		return res, err
	}
}

// unsent reports whether err is a call the plugin never received because
// its process had died: then the call can go to the next process.
func unsent(err error) bool {
	var ce *serviceplugin.CallError
	return errors.As(err, &ce) && ce.ID == 0 && errors.Is(err, serviceplugin.ErrConnLost)
}

// CallUnary is Call made as one unary gRPC request instead of on the
// stream: slower (bench/servicecall measures both); for comparison and
// tools.
func (s *ServicePlugin) CallUnary(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	g, err := s.current(ctx)
	if err != nil {
		return nil, &serviceplugin.CallError{Service: s.opts.Service, Method: method, Session: sessionID, Err: err}
	}
	return g.conn.CallUnary(ctx, g.rpc, sessionID, method, args)
}

// OpenSession opens a session with the service: nil once the service
// accepted it, a *serviceplugin.CallError when it refused or could not be
// asked. The session stays open across plugin restarts until CloseSession.
func (s *ServicePlugin) OpenSession(ctx context.Context, in serviceplugin.SessionInfo) error {
	for {
		g, err := s.current(ctx)
		if err != nil {
			return &serviceplugin.CallError{Service: s.opts.Service, Session: in.ID, Err: err}
		}
		err = g.conn.OpenSession(ctx, in)
		s.mu.Lock()
		if s.gen == g {
			if err == nil {
				s.sessions[in.ID] = in
			}
			s.mu.Unlock()
			return err
		}
		s.mu.Unlock()
		// The process died meanwhile: the session is not among those the
		// next one reopens; open it there.
		if ctx.Err() != nil {
			if err == nil {
				err = &serviceplugin.CallError{Service: s.opts.Service, Session: in.ID, Err: ctx.Err()}
			}
			return err
		}
	}
}

// CloseSession tells the service that a session ended. It never waits; a
// session that is not open (or whose OpenSession has not returned) is
// ignored.
func (s *ServicePlugin) CloseSession(sessionID, reason string) {
	s.mu.Lock()
	_, open := s.sessions[sessionID]
	delete(s.sessions, sessionID)
	g := s.gen
	s.mu.Unlock()
	if open && g != nil {
		g.conn.CloseSession(sessionID, reason) // fails only if g died: the session is gone with it
	}
}

// Close stops supervising and stops the plugin process; calls waiting fail
// with serviceplugin.ErrClosed. Idempotent.
func (s *ServicePlugin) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.mu.Lock()
		g := s.gen
		s.gen = nil
		s.status.State, s.status.PID, s.status.Since = StateStopped, 0, time.Now()
		s.mu.Unlock()
		if g != nil {
			g.kill()
		}
	})
	<-s.done
	return nil
}
