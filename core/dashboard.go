package core

import (
	"embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/bearerkit/connect/config"
)

// The web dashboard (docs/DIAGNOSTICS.md): one page whose script reads the
// snapshots from GET /diagnostics/events (server-sent events). Everything
// it needs is embedded; it fetches nothing from the network and has no
// actions: it only shows.
//
//go:embed web/index.html web/app.js web/style.css
var webFiles embed.FS

// sseHeartbeat is how often an event stream without snapshots (diagnostics
// off) sends a comment, so that proxies and browsers keep it open.
const sseHeartbeat = 15 * time.Second

func (s *Server) registerDashboard(mux *http.ServeMux) {
	if s.cfg.Diagnostics.Dashboard == config.DashboardOff {
		return
	}
	mux.HandleFunc("GET /{$}", s.dashboardOnly(s.serveDashboardFile("web/index.html", "text/html; charset=utf-8")))
	mux.HandleFunc("GET /dashboard/app.js", s.dashboardOnly(s.serveDashboardFile("web/app.js", "text/javascript; charset=utf-8")))
	mux.HandleFunc("GET /dashboard/style.css", s.dashboardOnly(s.serveDashboardFile("web/style.css", "text/css; charset=utf-8")))
	mux.HandleFunc("GET /diagnostics", s.dashboardOnly(s.serveDiagnostics))
	mux.HandleFunc("GET /diagnostics/events", s.dashboardOnly(s.serveDiagnosticEvents))
}

// dashboardOnly applies <diagnostics dashboard="..">: with "loopback" (the
// default) only requests from a loopback address that name the server by
// a loopback address or "localhost" are served (the second check keeps a
// web page that rebinds its own DNS name to 127.0.0.1 from reading the
// figures). It also sets the headers that keep the page self-contained.
func (s *Server) dashboardOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Diagnostics.Dashboard != config.DashboardAny {
			if !loopbackRemote(r.RemoteAddr) || !loopbackHost(r.Host) {
				httpError(w, http.StatusForbidden, "the dashboard and /diagnostics answer loopback clients only (<diagnostics dashboard=\"any\"/> in the configuration opens them to whoever reaches the HTTP address)")
				return
			}
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h(w, r)
	}
}

func loopbackRemote(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) serveDashboardFile(name, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		b, err := webFiles.ReadFile(name)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal: %v", err)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Write(b)
	}
}

// serveDiagnostics answers the latest snapshot (at most a second old), or
// a fresh one before the first sample and when diagnostics are off.
func (s *Server) serveDiagnostics(w http.ResponseWriter, _ *http.Request) {
	doc, _ := s.latestSnapshot()
	if doc == nil {
		writeJSON(w, http.StatusOK, s.Diagnostics())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(doc)
	w.Write([]byte("\n"))
}

// serveDiagnosticEvents streams every snapshot as a server-sent event
// ("event: snapshot", the JSON in "data:") until the client goes away or
// the server closes; the first one at once.
func (s *Server) serveDiagnosticEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "internal: streaming is not supported")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(doc []byte) bool {
		// The JSON holds no line breaks (json.Marshal escapes them in
		// strings), so one data line carries it.
		_, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", doc)
		flusher.Flush()
		return err == nil
	}
	doc, next := s.latestSnapshot()
	if doc == nil {
		// Diagnostics off, or before the first sample: one fresh snapshot.
		b, err := jsonLine(s.Diagnostics())
		if err != nil || !send(b) {
			return
		}
	} else if !send(doc) {
		return
	}
	heartbeat := time.NewTicker(sseHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-next:
			doc, next = s.latestSnapshot()
			if !send(doc) {
				return
			}
		}
	}
}

func jsonLine(v any) ([]byte, error) { return json.Marshal(v) }
