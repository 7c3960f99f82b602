package pluginhost

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// State is a supervised adapter's state.
type State string

const (
	StateStarting   State = "starting"
	StateRunning    State = "running"
	StateRestarting State = "restarting"
	StateStopped    State = "stopped"
)

// Status is a snapshot of a supervised adapter, for /healthz and logs.
type Status struct {
	Name string `json:"name"`
	Type string `json:"type"`
	// Capabilities of the bearer, known once a plugin has described itself.
	Capabilities bearers.Capabilities `json:"-"`
	State        State                `json:"state"`
	PID          int                  `json:"pid,omitempty"`
	Endpoint     string               `json:"endpoint,omitempty"`
	Restarts     int                  `json:"restarts"`
	LastError    string               `json:"lastError,omitempty"`
	Since        time.Time            `json:"since"`
	endpoint     bearers.Endpoint     `json:"-"`
}

// Supervisor keeps one listening bearer plugin alive: it starts the plugin,
// listens on the endpoint, passes every accepted connection to Handle, and
// when the plugin dies logs what happened and starts it again after an
// exponential backoff with jitter (reset once a plugin has run for a
// minute). Connections already handed over as kernel sockets are not
// affected by a plugin's death, and a handed-over UDP socket keeps serving
// while the plugin restarts.
type Supervisor struct {
	Options  Options
	Endpoint bearers.Endpoint
	// Handle is called in its own goroutine for every accepted connection
	// and owns it.
	Handle func(bearers.Conn)
	// BackoffMin and BackoffMax bound the restart delay (defaults 100ms, 30s).
	BackoffMin, BackoffMax time.Duration

	mu     sync.Mutex
	status Status
	ready  chan struct{} // closed when first running
}

// NewSupervisor returns a supervisor; call Run to start it.
func NewSupervisor(opts Options, ep bearers.Endpoint, handle func(bearers.Conn)) *Supervisor {
	opts.defaults()
	return &Supervisor{Options: opts, Endpoint: ep, Handle: handle, ready: make(chan struct{}),
		status: Status{Name: opts.Name, Type: opts.WantType, State: StateStarting, Since: time.Now()}}
}

// Status returns a snapshot.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Ready is closed the first time the adapter is running (listening).
func (s *Supervisor) Ready() <-chan struct{} { return s.ready }

func (s *Supervisor) set(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// Run supervises until ctx ends, then stops the plugin and listener and
// returns. Connection handlers are not waited for: they belong to Handle.
func (s *Supervisor) Run(ctx context.Context) {
	log := s.Options.Logger.With("adapter", s.Options.Name)
	backoff := newBackoff(s.BackoffMin, s.BackoffMax)
	var readyOnce sync.Once
	var hostListener bearers.Listener // a listener that outlives plugins
	defer func() {
		if hostListener != nil {
			hostListener.Close()
		}
		s.set(func(st *Status) { st.State, st.PID, st.Since = StateStopped, 0, time.Now() })
	}()

	for first := true; ctx.Err() == nil; first = false {
		if !first {
			s.set(func(st *Status) { st.State, st.Restarts = StateRestarting, st.Restarts+1 })
			delay := backoff.next()
			log.Warn("restarting bearer plugin", "in", delay.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
		started := time.Now()
		err := s.runOnce(ctx, log, &hostListener, func() { readyOnce.Do(func() { close(s.ready) }) })
		if ctx.Err() != nil {
			return
		}
		backoff.ran(time.Since(started))
		s.set(func(st *Status) { st.LastError, st.PID = err.Error(), 0 })
		log.Error("bearer adapter failed", "error", err)
	}
}

// runOnce runs one plugin generation until it dies or ctx ends.
func (s *Supervisor) runOnce(ctx context.Context, log *slog.Logger, hostListener *bearers.Listener, ready func()) error {
	s.set(func(st *Status) { st.State, st.Since = StateStarting, time.Now() })
	p, err := Start(ctx, s.Options)
	if err != nil {
		return err
	}
	defer p.Close()
	s.set(func(st *Status) { st.PID, st.Type, st.Capabilities = p.PID(), p.Info().Type, p.Info().Capabilities })

	var l bearers.Listener
	if *hostListener != nil {
		l = *hostListener // still serving; the new plugin is there for the next bind
	} else {
		l, err = p.Listen(ctx, s.Endpoint)
		if err != nil {
			return err
		}
		if HostOwned(l) {
			*hostListener = l
			go s.acceptLoop(ctx, l) // lives as long as the socket
		}
	}
	s.set(func(st *Status) {
		st.State, st.Since, st.endpoint, st.Endpoint = StateRunning, time.Now(), l.Endpoint(), l.Endpoint().String()
	})
	log.Info("bearer adapter listening", "type", p.Info().Type, "endpoint", l.Endpoint().String(), "pid", p.PID())
	ready()

	if HostOwned(l) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.Exited():
			return fmt.Errorf("bearer plugin process exited (pid %d); the server holds its UDP socket, which keeps serving", p.PID())
		}
	}
	defer l.Close()
	acceptErr := make(chan error, 1)
	go func() { acceptErr <- s.acceptLoop(ctx, l) }()
	select {
	case <-ctx.Done():
		l.Close()
		<-acceptErr
		return ctx.Err()
	case <-p.Exited():
		l.Close()
		<-acceptErr
		return fmt.Errorf("bearer plugin process exited (pid %d)", p.PID())
	case err := <-acceptErr:
		// The Accept stream usually breaks a moment before the handoff
		// socket reports the death; say which it was.
		select {
		case <-p.Exited():
			return fmt.Errorf("bearer plugin process exited (pid %d)", p.PID())
		case <-time.After(time.Second):
			return err
		}
	}
}

func (s *Supervisor) acceptLoop(ctx context.Context, l bearers.Listener) error {
	for {
		c, err := l.Accept(ctx)
		if err != nil {
			return err
		}
		go s.Handle(c)
	}
}
