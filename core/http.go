package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/internal/histogram"
	"github.com/bearerkit/connect/pluginhost"
)

// metrics are the server's always-on counters.
type metrics struct {
	connections          atomic.Uint64
	registrations        atomic.Uint64
	registrationFailures atomic.Uint64
	pings                atomic.Uint64
	unhandled            atomic.Uint64
}

// HTTPAddr is the bound HTTP API address, "" when the API is off.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

func (s *Server) startHTTP() error {
	if s.cfg.HTTPAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("core: HTTP API on %s: %w", s.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealthz)
	mux.HandleFunc("GET /metrics", s.serveMetrics)
	s.registerServiceHTTP(mux)
	mux.HandleFunc("GET /sessions", s.serveSessions)
	s.registerDashboard(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such endpoint %s %s (try /healthz, /metrics, /servicedescriptions or /diagnostics)", r.Method, r.URL.Path)})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.httpLn, s.httpSrv = ln, srv
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP API stopped", "error", err)
		}
	}()
	return nil
}

// Health is the /healthz document.
type Health struct {
	Status   string              `json:"status"` // "ok" when every adapter runs, else "degraded"
	ServerID string              `json:"serverId"`
	Uptime   string              `json:"uptime"`
	Clients  int                 `json:"clients"`
	Adapters []pluginhost.Status `json:"adapters"`
	Services []ServiceInfo       `json:"services"`
}

// Health reports the server's state.
func (s *Server) Health() Health {
	h := Health{Status: "ok", ServerID: s.id, Uptime: time.Since(s.started).Round(time.Second).String(), Adapters: s.Adapters()}
	for _, a := range h.Adapters {
		if a.State != pluginhost.StateRunning {
			h.Status = "degraded"
		}
	}
	h.Services = s.Services()
	for _, sv := range h.Services {
		if sv.Status == nil || sv.Status.State != pluginhost.StateRunning {
			h.Status = "degraded"
		}
	}
	s.mu.Lock()
	h.Clients = len(s.clients)
	s.mu.Unlock()
	return h
}

func (s *Server) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	h := s.Health()
	code := http.StatusOK
	if h.Status != "ok" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	snap := s.Diagnostics() // the same figures as every other view
	var b strings.Builder
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	t := snap.Totals
	counter("connect_connections_total", "Connections accepted on all adapters.", uint64(t.Connections))
	counter("connect_registrations_total", "Successful client registrations.", uint64(t.Registrations))
	counter("connect_registration_failures_total", "Failed registrations (auth, protocol, timeout).", uint64(t.RegistrationFailures))
	counter("connect_pings_total", "Pings answered.", uint64(t.PingsAnswered))
	if s.diag.on {
		family("connect_messages_total", "counter", "Protocol messages received from (direction=\"in\") and sent to (\"out\") clients.")
		fmt.Fprintf(&b, "connect_messages_total{direction=\"in\"} %d\nconnect_messages_total{direction=\"out\"} %d\n", t.MessagesIn, t.MessagesOut)
	}
	family("connect_adapter_connections_total", "counter", "Connections accepted per adapter.")
	for _, a := range snap.Bearers {
		fmt.Fprintf(&b, "connect_adapter_connections_total{adapter=%q,type=%q} %d\n", a.Name, a.Type, a.Connections)
	}
	family("connect_adapter_bytes_total", "counter", "Bytes received from (direction=\"in\") and sent to (\"out\") clients per adapter.")
	for _, a := range snap.Bearers {
		fmt.Fprintf(&b, "connect_adapter_bytes_total{adapter=%q,type=%q,direction=\"in\"} %d\n", a.Name, a.Type, a.BytesIn)
		fmt.Fprintf(&b, "connect_adapter_bytes_total{adapter=%q,type=%q,direction=\"out\"} %d\n", a.Name, a.Type, a.BytesOut)
	}
	family("connect_adapter_accept_errors_total", "counter", "Accepted connections that failed to register, per adapter.")
	for _, a := range snap.Bearers {
		fmt.Fprintf(&b, "connect_adapter_accept_errors_total{adapter=%q,type=%q} %d\n", a.Name, a.Type, a.AcceptErrors)
	}
	family("connect_adapter_clients", "gauge", "Registered clients per adapter now.")
	for _, a := range snap.Bearers {
		fmt.Fprintf(&b, "connect_adapter_clients{adapter=%q,type=%q} %d\n", a.Name, a.Type, a.Clients)
	}
	family("connect_adapter_restarts_total", "counter", "Bearer plugin restarts per adapter.")
	for _, p := range snap.Plugins {
		if p.Kind == "bearer" {
			fmt.Fprintf(&b, "connect_adapter_restarts_total{adapter=%q,type=%q} %d\n", p.Name, s.adapterType(p.Name), p.Restarts)
		}
	}
	family("connect_service_calls_total", "counter", "Method calls per service.")
	for _, sv := range snap.Services {
		fmt.Fprintf(&b, "connect_service_calls_total{service=%q} %d\n", sv.Name, sv.Calls)
	}
	family("connect_service_call_failures_total", "counter", "Failed method calls per service.")
	for _, sv := range snap.Services {
		fmt.Fprintf(&b, "connect_service_call_failures_total{service=%q} %d\n", sv.Name, sv.Errors)
	}
	family("connect_service_events_total", "counter", "Events emitted per service.")
	for _, sv := range snap.Services {
		fmt.Fprintf(&b, "connect_service_events_total{service=%q} %d\n", sv.Name, sv.Events)
	}
	s.writeLinkMetrics(&b)     // direct.go
	s.writeRelayMetrics(&b)    // relay.go
	s.writeRelayUDPMetrics(&b) // relay_udp_server.go
	family("connect_sessions", "gauge", "Open client sessions per service.")
	for _, sv := range snap.Services {
		fmt.Fprintf(&b, "connect_sessions{service=%q} %d\n", sv.Name, sv.Sessions)
	}
	if s.diag.on {
		family("connect_service_call_duration_seconds", "summary", "Method call latency per service: quantiles over the last second, sum and count since the start.")
		for _, sv := range snap.Services {
			var c histogram.Counts
			if hs := s.lookupService(sv.Name); hs != nil {
				hs.lat.Snapshot(&c)
			}
			fmt.Fprintf(&b, "connect_service_call_duration_seconds{service=%q,quantile=\"0.5\"} %g\n", sv.Name, sv.LatencyP50Micros/1e6)
			fmt.Fprintf(&b, "connect_service_call_duration_seconds{service=%q,quantile=\"0.99\"} %g\n", sv.Name, sv.LatencyP99Micros/1e6)
			fmt.Fprintf(&b, "connect_service_call_duration_seconds_sum{service=%q} %g\n", sv.Name, c.Sum.Seconds())
			fmt.Fprintf(&b, "connect_service_call_duration_seconds_count{service=%q} %d\n", sv.Name, c.Count())
		}
	}
	family("connect_plugin_up", "gauge", "1 when the plugin process runs, per plugin (kind bearer or service).")
	for _, p := range snap.Plugins {
		up := 0
		if p.State == string(pluginhost.StateRunning) {
			up = 1
		}
		fmt.Fprintf(&b, "connect_plugin_up{kind=%q,name=%q} %d\n", p.Kind, p.Name, up)
	}
	family("connect_plugin_restarts_total", "counter", "Plugin restarts, per plugin.")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "connect_plugin_restarts_total{kind=%q,name=%q} %d\n", p.Kind, p.Name, p.Restarts)
	}
	family("connect_plugin_resident_memory_bytes", "gauge", "Resident memory of each plugin process (VmRSS).")
	for _, p := range snap.Plugins {
		fmt.Fprintf(&b, "connect_plugin_resident_memory_bytes{kind=%q,name=%q} %d\n", p.Kind, p.Name, p.RSSBytes)
	}
	gauge("connect_resident_memory_bytes", "Resident memory of the server process (VmRSS).", snap.Server.RSSBytes)
	gauge("connect_clients", "Registered clients now.", snap.Server.Clients)
	gauge("connect_clients_connecting", "Connections accepted and not registered yet.", snap.Server.Connecting)
	streams, detached := 0, 0
	for _, st := range s.Streams() {
		streams++
		if !st.Connected {
			detached++
		}
	}
	fmt.Fprintf(&b, "# HELP connect_resume_streams Clients' resume streams now (detached: waiting for their client to come back).\n# TYPE connect_resume_streams gauge\n")
	fmt.Fprintf(&b, "connect_resume_streams{state=\"attached\"} %d\nconnect_resume_streams{state=\"detached\"} %d\n", streams-detached, detached)
	s.writeTunnelMetrics(&b) // tunnels.go
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write([]byte(b.String()))
}

// adapterType is the configured type of the adapter name.
func (s *Server) adapterType(name string) string {
	for _, a := range s.adapters {
		if a.cfg.Name == name {
			return a.cfg.Type
		}
	}
	return ""
}

// serveSessions lists the open sessions and the clients' resume streams:
// {"sessions": [...], "streams": [...]}.
func (s *Server) serveSessions(w http.ResponseWriter, _ *http.Request) {
	list := s.Sessions()
	if list == nil {
		list = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": list, "streams": s.Streams()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
