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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such endpoint %s %s (try /healthz, /metrics or /servicedescriptions)", r.Method, r.URL.Path)})
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
	var b strings.Builder
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	counter("connect_connections_total", "Connections accepted on all adapters.", s.metrics.connections.Load())
	counter("connect_registrations_total", "Successful client registrations.", s.metrics.registrations.Load())
	counter("connect_registration_failures_total", "Failed registrations (auth, protocol, timeout).", s.metrics.registrationFailures.Load())
	counter("connect_pings_total", "Pings answered.", s.metrics.pings.Load())
	fmt.Fprintf(&b, "# HELP connect_adapter_connections_total Connections accepted per adapter.\n# TYPE connect_adapter_connections_total counter\n")
	for _, a := range s.adapters {
		fmt.Fprintf(&b, "connect_adapter_connections_total{adapter=%q,type=%q} %d\n", a.cfg.Name, a.cfg.Type, a.accepted.Load())
	}
	fmt.Fprintf(&b, "# HELP connect_adapter_bytes_total Bytes received from (direction=\"in\") and sent to (\"out\") clients per adapter.\n# TYPE connect_adapter_bytes_total counter\n")
	for _, a := range s.adapters {
		fmt.Fprintf(&b, "connect_adapter_bytes_total{adapter=%q,type=%q,direction=\"in\"} %d\n", a.cfg.Name, a.cfg.Type, a.bytesIn.Load())
		fmt.Fprintf(&b, "connect_adapter_bytes_total{adapter=%q,type=%q,direction=\"out\"} %d\n", a.cfg.Name, a.cfg.Type, a.bytesOut.Load())
	}
	fmt.Fprintf(&b, "# HELP connect_adapter_restarts_total Bearer plugin restarts per adapter.\n# TYPE connect_adapter_restarts_total counter\n")
	for _, a := range s.adapters {
		fmt.Fprintf(&b, "connect_adapter_restarts_total{adapter=%q,type=%q} %d\n", a.cfg.Name, a.cfg.Type, a.sup.Status().Restarts)
	}
	fmt.Fprintf(&b, "# HELP connect_service_calls_total Method calls per service.\n# TYPE connect_service_calls_total counter\n")
	svcs := s.Services()
	for _, sv := range svcs {
		fmt.Fprintf(&b, "connect_service_calls_total{service=%q} %d\n", sv.Name, sv.Calls)
	}
	fmt.Fprintf(&b, "# HELP connect_service_call_failures_total Failed method calls per service.\n# TYPE connect_service_call_failures_total counter\n")
	for _, sv := range svcs {
		fmt.Fprintf(&b, "connect_service_call_failures_total{service=%q} %d\n", sv.Name, sv.Failures)
	}
	fmt.Fprintf(&b, "# HELP connect_service_events_total Events emitted per service.\n# TYPE connect_service_events_total counter\n")
	for _, sv := range svcs {
		fmt.Fprintf(&b, "connect_service_events_total{service=%q} %d\n", sv.Name, sv.Events)
	}
	s.writeLinkMetrics(&b) // direct.go
	perService := map[string]int{}
	for _, si := range s.Sessions() {
		perService[si.Service]++
	}
	fmt.Fprintf(&b, "# HELP connect_sessions Open client sessions per service.\n# TYPE connect_sessions gauge\n")
	for _, sv := range svcs {
		fmt.Fprintf(&b, "connect_sessions{service=%q} %d\n", sv.Name, perService[sv.Name])
	}
	s.mu.Lock()
	n := len(s.clients)
	s.mu.Unlock()
	fmt.Fprintf(&b, "# HELP connect_clients Registered clients now.\n# TYPE connect_clients gauge\nconnect_clients %d\n", n)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write([]byte(b.String()))
}

// serveSessions lists the open sessions: {"sessions": [...]}.
func (s *Server) serveSessions(w http.ResponseWriter, _ *http.Request) {
	list := s.Sessions()
	if list == nil {
		list = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": list})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
