package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// DefaultHTTPCallTimeout bounds a /serviceinvoke call that names no timeout.
const DefaultHTTPCallTimeout = 30 * time.Second

// maxInvokeBody bounds a POST /serviceinvoke body.
const maxInvokeBody = 1 << 20

func (s *Server) registerServiceHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /servicedescriptions", s.serveServiceList)
	mux.HandleFunc("GET /servicedescriptions/{service}", s.serveDescription)
	mux.HandleFunc("GET /serviceinvoke/{service}/method/{method}", s.serveInvoke)
	mux.HandleFunc("POST /serviceinvoke/{service}/method/{method}", s.serveInvoke)
	mux.HandleFunc("GET /serviceruntimedata/{service}", s.serveRuntimeData)
}

// httpError writes a JSON error body: {"error": "..."}.
func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// service finds a running service for an HTTP request, or answers the error.
func (s *Server) service(w http.ResponseWriter, r *http.Request, name string) (*hostedService, bool) {
	hs := s.lookupService(name)
	if hs == nil {
		httpError(w, http.StatusNotFound, "no service %q (GET /servicedescriptions lists them)", name)
		return nil, false
	}
	if p, _, failed := hs.available(r.Context(), s.startWait()); p == nil {
		httpError(w, http.StatusServiceUnavailable, "service %s is unavailable: %s", name, failed)
		return nil, false
	}
	return hs, true
}

func (s *Server) serveServiceList(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"services": s.Services()})
}

func (s *Server) serveDescription(w http.ResponseWriter, r *http.Request) {
	hs, ok := s.service(w, r, r.PathValue("service"))
	if !ok {
		return
	}
	p, _, _ := hs.current()
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Write(p.ServiceXML())
}

// serveInvoke calls a method outside any session. Arguments come from the
// query string (typed text: 42, 0.5, true, base64 or hex: for binary, JSON
// for lists and structs) or, for POST with a JSON body, as one JSON object
// of typed values. `timeout` (a Go duration) in the query bounds the call.
func (s *Server) serveInvoke(w http.ResponseWriter, r *http.Request) {
	hs, ok := s.service(w, r, r.PathValue("service"))
	if !ok {
		return
	}
	p, desc, _ := hs.current()
	name := r.PathValue("method")
	m := desc.Method(name)
	if m == nil {
		httpError(w, http.StatusNotFound, "service %s has no method %q (GET /servicedescriptions/%s shows its methods)", desc.Name, name, desc.Name)
		return
	}
	if err := s.authorize(principal{}, hs, m.Name); err != nil {
		httpError(w, http.StatusForbidden, "%v", err)
		return
	}
	query := r.URL.Query()
	timeout := DefaultHTTPCallTimeout
	if v := query.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			httpError(w, http.StatusBadRequest, "timeout %q: want a positive duration such as 500ms or 5s", v)
			return
		}
		timeout = d
		query.Del("timeout")
	}
	args, err := invokeArgs(r, m, query)
	if err != nil {
		httpError(w, http.StatusBadRequest, "%s.%s: %v", desc.Name, m.Name, err)
		return
	}
	enc, err := services.AppendArgs(nil, m.Args, args)
	if err != nil {
		httpError(w, http.StatusBadRequest, "%s.%s: %v", desc.Name, m.Name, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	hs.calls.Add(1)
	var start time.Time
	if s.diag.on {
		start = time.Now()
	}
	res, err := p.Call(ctx, "", m.Name, enc)
	if s.diag.on {
		hs.lat.Record(time.Since(start))
	}
	if err != nil {
		hs.errors.Add(1)
		httpError(w, callStatus(err), "%v", err)
		return
	}
	body := []byte("null")
	if m.Returns != nil {
		v, err := services.DecodeValue(m.Returns, res)
		if err == nil {
			body, err = services.MarshalJSON(m.Returns, v)
		}
		if err != nil {
			hs.errors.Add(1)
			httpError(w, http.StatusBadGateway, "%s.%s: the service's result does not decode: %v", desc.Name, m.Name, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"service\":%q,\"method\":%q,\"result\":%s}\n", desc.Name, m.Name, body)
}

// invokeArgs reads a method's arguments from a JSON body or the query.
func invokeArgs(r *http.Request, m *servicefile.Method, query url.Values) (map[string]any, error) {
	args := map[string]any{}
	if r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxInvokeBody+1))
		if err != nil {
			return nil, err
		}
		if len(body) > maxInvokeBody {
			return nil, fmt.Errorf("body larger than %d bytes", maxInvokeBody)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, fmt.Errorf("body: want a JSON object of arguments: %v", err)
		}
		for k, v := range raw {
			f := field(m.Args, k)
			if f == nil {
				return nil, fmt.Errorf("unknown argument %q (arguments: %s)", k, argList(m.Args))
			}
			val, err := services.UnmarshalJSON(f.Type, v)
			if err != nil {
				return nil, fmt.Errorf("argument %s: %v", k, err)
			}
			args[k] = val
		}
	}
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err == nil {
			for k, v := range r.PostForm {
				query[k] = v
			}
		}
	}
	for k, vs := range query {
		f := field(m.Args, k)
		if f == nil {
			return nil, fmt.Errorf("unknown argument %q (arguments: %s)", k, argList(m.Args))
		}
		if len(vs) != 1 {
			return nil, fmt.Errorf("argument %s given %d times", k, len(vs))
		}
		v, err := services.ParseText(f.Type, vs[0])
		if err != nil {
			return nil, fmt.Errorf("argument %s: %v", k, err)
		}
		args[k] = v
	}
	for _, f := range m.Args {
		if _, ok := args[f.Name]; !ok {
			return nil, fmt.Errorf("missing argument %s (%s)", f.Name, f.Type)
		}
	}
	return args, nil
}

func field(fs []*servicefile.Field, name string) *servicefile.Field {
	for _, f := range fs {
		if f.Name == name {
			return f
		}
	}
	return nil
}

func argList(fs []*servicefile.Field) string {
	if len(fs) == 0 {
		return "none"
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Name + " " + f.Type.String()
	}
	return strings.Join(parts, ", ")
}

// callStatus maps a failed call to an HTTP status.
func callStatus(err error) int {
	var se *serviceplugin.Error
	if errors.As(err, &se) {
		switch se.Code {
		case serviceplugin.CodeInvalidArgument:
			return http.StatusBadRequest
		case serviceplugin.CodeUnknownMethod, serviceplugin.CodeNoSession:
			return http.StatusNotFound
		case serviceplugin.CodeDeadlineExceeded:
			return http.StatusGatewayTimeout
		case serviceplugin.CodeOverloaded:
			return http.StatusServiceUnavailable
		case serviceplugin.CodePanic, serviceplugin.CodeBadResult:
			return http.StatusBadGateway
		case serviceplugin.CodeApplication:
			return http.StatusUnprocessableEntity
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, serviceplugin.ErrProtocol):
		return http.StatusBadGateway
	}
	return http.StatusServiceUnavailable // the plugin died, is restarting, or is saturated
}

// serveRuntimeData answers the service's runtime data as typed JSON: the
// whole tree, or the node at ?path=a.b.c.
func (s *Server) serveRuntimeData(w http.ResponseWriter, r *http.Request) {
	hs, ok := s.service(w, r, r.PathValue("service"))
	if !ok {
		return
	}
	path := r.URL.Query().Get("path")
	hs.mu.Lock()
	t, v, err := hs.data.Lookup(path)
	var body []byte
	if err == nil {
		body, err = services.MarshalJSON(t, v)
	}
	hs.mu.Unlock()
	if err != nil {
		httpError(w, http.StatusNotFound, "service %s runtime data: %v", hs.cfg.Name, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
	w.Write([]byte("\n"))
}
