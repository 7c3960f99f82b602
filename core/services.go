package core

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/internal/histogram"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/diagnostics"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// maxPendingData bounds the runtime-data updates kept while a service's
// description is not known yet (between its plugin's first Ready and the
// end of its start).
const maxPendingData = 4096

// hostedService is one configured service and its plugin.
type hostedService struct {
	cfg config.Service

	calls  atomic.Uint64
	errors atomic.Uint64
	events atomic.Uint64
	link   linkCounters // its sessions' messages on the server link (direct.go)

	lat     histogram.Histogram // call latency (diagnostics on)
	rates   rates               // of calls; under Server.diag.mu
	latency latencyWindow       // under Server.diag.mu

	mu      sync.Mutex
	plugin  serviceBackend // nil until started, if it failed, or while a remote service's runner is gone
	desc    *servicefile.Service
	data    *services.DataTree
	pending []serviceplugin.DataUpdate // updates received before data exists
	failed  string                     // why the plugin could not start

	// up is closed once the plugin's first start has ended, in success or
	// failure; nil for services that have no first start to wait for
	// (remote services, tests).
	up chan struct{}

	persistent []string // top-most persistent data paths (persist.go)
	dirty      bool     // persistent data changed since the last save

	sess sessionSet // open client sessions (sessions.go)

	remote *remoteState // set for a service a runner provides (remote.go)
}

// ServiceInfo describes a hosted service for /servicedescriptions and /healthz.
type ServiceInfo struct {
	Name     string                    `json:"name"`
	Version  string                    `json:"version,omitempty"`
	Builtin  string                    `json:"builtin,omitempty"`
	Plugin   string                    `json:"plugin,omitempty"`
	Status   *pluginhost.ServiceStatus `json:"status,omitempty"`
	Remote   *RemoteInfo               `json:"remote,omitempty"` // the runner of a remote service
	Error    string                    `json:"error,omitempty"`
	Calls    uint64                    `json:"calls"`
	Failures uint64                    `json:"failures"`
	Events   uint64                    `json:"events"`
}

// onData applies a runtime-data update from the plugin. It runs on the
// plugin stream's reader and must not block: it only takes hs.mu.
func (hs *hostedService) onData(u serviceplugin.DataUpdate) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.data == nil {
		if u.Path == "" {
			hs.pending = hs.pending[:0]
		}
		if len(hs.pending) < maxPendingData {
			hs.pending = append(hs.pending, u)
		}
		return
	}
	// The host already checked the update against the service file.
	if hs.data.SetEncoded(u.Path, u.Value) == nil {
		hs.markDirty(u.Path)
		hs.fanOutData(u.Path) // to watching sessions; never waits
	}
}

func (hs *hostedService) onEvent(e serviceplugin.Event) {
	hs.events.Add(1)
	hs.fanOutEvent(e) // to subscribed sessions; never waits
}

// started records the running plugin and builds the data tree from what
// arrived meanwhile.
func (hs *hostedService) started(p *pluginhost.ServicePlugin) error {
	desc := p.Description()
	tree, err := services.NewDataTree(desc.Data)
	if err != nil {
		return fmt.Errorf("service %s: runtime data: %w", hs.cfg.Name, err)
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, u := range hs.pending {
		tree.SetEncoded(u.Path, u.Value)
	}
	hs.pending = nil
	hs.plugin, hs.desc, hs.data = p, desc, tree
	hs.persistent = persistentPaths(desc.Data)
	return nil
}

func (hs *hostedService) current() (serviceBackend, *servicefile.Service, string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.plugin, hs.desc, hs.failed
}

// available is current for a request: while the plugin's first start is
// under way (a client that connected as the server came up), it waits
// for that start to end, up to wait or ctx, instead of failing the request
// with "starting". The reason is "" when the backend is set.
func (hs *hostedService) available(ctx context.Context, wait time.Duration) (serviceBackend, *servicefile.Service, string) {
	p, desc, failed := hs.current()
	if p != nil || failed != "" || hs.up == nil {
		if p == nil && failed == "" {
			failed = "it is starting"
		}
		return p, desc, failed
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-hs.up:
	case <-t.C:
	case <-ctx.Done():
	}
	p, desc, failed = hs.current()
	if p == nil && failed == "" {
		failed = fmt.Sprintf("it is starting (not up after %s)", wait)
	}
	return p, desc, failed
}

// startServices starts every configured service plugin. A service that
// cannot start is logged and reported as unavailable; the others and the
// bearers keep serving.
// The returned channel is closed once every first start has ended (in
// success or failure).
func (s *Server) startServices(ctx context.Context) <-chan struct{} {
	var first sync.WaitGroup
	for _, sc := range s.cfg.Services {
		hs := s.services[sc.Name] // made by New, so that the HTTP API never sees the map change
		opts := pluginhost.ServiceOptions{
			Service:      sc.Name,
			Path:         sc.Plugin,
			StartTimeout: s.cfg.Plugins.StartTimeout,
			BackoffMin:   s.cfg.Plugins.RestartBackoffMin,
			BackoffMax:   s.cfg.Plugins.RestartBackoffMax,
			OnData:       hs.onData,
			OnEvent:      hs.onEvent,
			Logger:       s.log,
		}
		opts.OnSessionLost = hs.onSessionLost // ends the client's session (sessions.go)
		opts.Restore = s.restore(hs)          // persistent runtime data (persist.go)
		if sc.Builtin != "" {
			if s.opts.BuiltinService == nil {
				hs.failed = "this server has no built-in services"
				s.log.Error("service unavailable", "service", sc.Name, "error", hs.failed)
				continue
			}
			opts.Path, opts.Args = s.opts.BuiltinService(sc.Builtin)
			if sc.Builtin == "configuration" {
				gs := make([]config.ConfigGroup, len(s.cfg.Configuration))
				for i, g := range s.cfg.Configuration {
					gs[i] = g
					if gs[i].Values == nil {
						gs[i].Values = []config.ConfigValue{} // "values": [], never null
					}
				}
				groups, err := json.Marshal(gs)
				if err != nil {
					hs.failed = err.Error()
					continue
				}
				// The contract with services/configuration (EnvGroups).
				opts.Env = append(opts.Env, "CONNECT_CONFIGURATION_GROUPS="+string(groups))
			}
			if sc.Builtin == "diagnostics" && s.diag.svc == nil {
				// The server publishes its figures to the service with a
				// key only it knows (diag.go, services/diagnostics).
				s.diag.key, s.diag.svc = newDiagKey(), hs
				opts.Env = append(opts.Env, diagnostics.EnvKey+"="+s.diag.key)
				if !s.diag.on {
					s.log.Warn("the Diagnostics service is configured but diagnostics are off (<diagnostics enabled=\"false\"/>): it will show no figures", "service", sc.Name)
				}
			}
		}
		s.wg.Add(1)
		first.Add(1)
		go func() {
			defer s.wg.Done()
			p, err := pluginhost.StartService(ctx, opts)
			if err == nil {
				if err = hs.started(p); err != nil {
					p.Close()
				}
			}
			if err != nil {
				hs.mu.Lock()
				hs.failed = err.Error()
				hs.mu.Unlock()
			}
			if hs.up != nil {
				close(hs.up)
			}
			first.Done()
			if err != nil {
				s.log.Error("service unavailable", "service", sc.Name, "error", err)
				return
			}
			s.log.Info("service running", "service", sc.Name, "version", p.Description().Version, "pid", p.Status().PID)
			s.persistLoop(ctx, hs) // until ctx ends, then a last save
			p.Close()
		}()
	}
	done := make(chan struct{})
	go func() { first.Wait(); close(done) }()
	return done
}

// Services lists the hosted services, sorted by name.
func (s *Server) Services() []ServiceInfo {
	all := s.allServices()
	out := make([]ServiceInfo, 0, len(all))
	for _, hs := range all {
		p, desc, failed := hs.current()
		si := ServiceInfo{Name: hs.cfg.Name, Builtin: hs.cfg.Builtin, Plugin: hs.cfg.Plugin, Error: failed,
			Calls: hs.calls.Load(), Failures: hs.errors.Load(), Events: hs.events.Load(), Remote: hs.remoteInfo()}
		if p != nil {
			st := p.Status()
			si.Status, si.Version = &st, desc.Version
		} else if desc != nil {
			si.Version = desc.Version // a remote service whose runner is away
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// startWait bounds how long a request waits for a service plugin's first
// start: the plugin start timeout and the margin Start gives it.
func (s *Server) startWait() time.Duration {
	if s.cfg == nil { // unit tests build servers by hand
		return 5 * time.Second
	}
	return s.cfg.Plugins.StartTimeout + 5*time.Second
}
