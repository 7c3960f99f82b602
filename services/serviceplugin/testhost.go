package serviceplugin

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// TB is the part of testing.TB that NewTestHost uses; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// TestHost runs a service in process for its author's tests, behind the
// real contract: the service is served by the same Server as under Serve,
// over gRPC on an in-memory connection, and called through the same
// HostConn as a real host uses, so what passes here passes in
// connectserver. Values go in and come out in the canonical Go
// representation of package services.
//
// Its methods are safe for concurrent use.
type TestHost struct {
	t    TB
	svc  *Service
	srv  *Server
	gs   *grpc.Server
	cc   *grpc.ClientConn
	conn *HostConn
	desc *servicefile.Service

	events  chan TestEvent
	served  chan struct{} // closed when the gRPC server's Serve returns
	closing chan struct{} // closed first thing in Close: frees a blocked onEvent

	mu      sync.Mutex
	data    *services.DataTree
	changed chan struct{} // closed (and replaced) on every data update

	closeOnce sync.Once
}

// TestEvent is an event the service emitted, decoded.
type TestEvent struct {
	Name      string
	SessionID string // "" for every session
	Args      map[string]any
}

// testEventBuffer is how many events a TestHost holds for the test to read;
// beyond it the service's Emit waits, as with a slow real host.
const testEventBuffer = 1024

// NewTestHost serves svc in process and connects a host to it; the test
// fails at once if svc is not valid. The host is closed when the test
// ends (or by Close).
func NewTestHost(t TB, svc *Service) *TestHost {
	t.Helper()
	srv, err := NewServer(svc)
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: %v", err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	servicepb.RegisterServiceServer(gs, srv)
	h := &TestHost{t: t, svc: svc, srv: srv, gs: gs, events: make(chan TestEvent, testEventBuffer),
		served: make(chan struct{}), closing: make(chan struct{}), changed: make(chan struct{})}
	go func() { defer close(h.served); _ = gs.Serve(lis) }()
	t.Cleanup(h.Close)

	h.cc, err = grpc.NewClient("passthrough:///serviceplugin-testhost",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: %v", err)
	}
	rpc := servicepb.NewServiceClient(h.cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// What a real host does: describe, parse the XML, connect.
	d, err := rpc.Describe(ctx, &servicepb.DescribeRequest{})
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: Describe: %v", err)
	}
	h.desc, err = servicefile.Parse("described.xml", d.ServiceXml)
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: the described XML does not parse: %v", err)
	}
	h.data, err = services.NewDataTree(h.desc.Data)
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: %v", err)
	}
	h.conn, err = NewHostConn(ctx, rpc, h.desc, HostConnOptions{OnEvent: h.onEvent, OnData: h.onData, Logger: svc.Logger})
	if err != nil {
		t.Fatalf("serviceplugin.NewTestHost: %v", err)
	}
	return h
}

func (h *TestHost) onEvent(e Event) {
	ev := h.desc.Event(e.Name)
	args, err := services.DecodeArgs(ev.Args, e.Args) // HostConn checked they decode
	if err != nil {
		h.t.Errorf("serviceplugin.TestHost: event %s: %v", e.Name, err)
		return
	}
	select {
	case h.events <- TestEvent{Name: e.Name, SessionID: e.SessionID, Args: args}:
	case <-h.closing:
	}
}

func (h *TestHost) onData(u DataUpdate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.data.SetEncoded(u.Path, u.Value); err != nil {
		h.t.Errorf("serviceplugin.TestHost: data update of %s does not apply: %v", pathName(u.Path), err)
		return
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Conn returns the host's connection, for what the helpers below do not
// cover (encoded calls, deadlines of your own).
func (h *TestHost) Conn() *HostConn { return h.conn }

// Call calls method outside any session with args (every argument by
// name) and returns its result decoded, nil for a method that returns
// nothing. Errors are *CallError; errors.As finds the service's *Error.
func (h *TestHost) Call(ctx context.Context, method string, args map[string]any) (any, error) {
	return h.CallInSession(ctx, "", method, args)
}

// CallInSession calls method in session sessionID (see OpenSession).
func (h *TestHost) CallInSession(ctx context.Context, sessionID, method string, args map[string]any) (any, error) {
	m := h.desc.Method(method)
	if m == nil {
		return h.conn.Call(ctx, sessionID, method, nil) // the same error as a real host's
	}
	enc, err := services.AppendArgs(nil, m.Args, args)
	if err != nil {
		return nil, fmt.Errorf("serviceplugin.TestHost: call %s: %w", method, err)
	}
	res, err := h.conn.Call(ctx, sessionID, method, enc)
	if err != nil || m.Returns == nil {
		return nil, err
	}
	return services.DecodeValue(m.Returns, res)
}

// OpenSession opens session id (client "test-client"), as a client
// starting a session does.
func (h *TestHost) OpenSession(ctx context.Context, id string) error {
	return h.conn.OpenSession(ctx, SessionInfo{ID: id, ClientID: "test-client"})
}

// CloseSession closes session id with reason.
func (h *TestHost) CloseSession(id, reason string) error { return h.conn.CloseSession(id, reason) }

// Events returns the events the service emits, in order. Read them: once
// 1024 are waiting, the service's Emit waits.
func (h *TestHost) Events() <-chan TestEvent { return h.events }

// Data returns the runtime-data value at path as the host last received it
// (see Service.Set for paths). A path that does not exist fails the test
// and returns nil.
func (h *TestHost) Data(path string) any {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.data.Get(path)
	if err != nil {
		h.t.Errorf("serviceplugin.TestHost.Data: %v", err)
		return nil
	}
	return v
}

// WaitData waits until the runtime-data value at path, as the host
// receives it, equals want (as services.Normalize makes it), or ctx ends.
func (h *TestHost) WaitData(ctx context.Context, path string, want any) error {
	for {
		h.mu.Lock()
		t, v, err := h.data.Lookup(path)
		ch := h.changed
		eq := false
		if err == nil {
			w, nerr := services.Normalize(t, want)
			if nerr != nil {
				h.mu.Unlock()
				return fmt.Errorf("serviceplugin.TestHost.WaitData %s: %w", pathName(path), nerr)
			}
			eq = reflect.DeepEqual(v, w)
		}
		h.mu.Unlock()
		if eq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("serviceplugin.TestHost.WaitData %s: %w (last: %v)", pathName(path), ctx.Err(), err)
			}
			return fmt.Errorf("serviceplugin.TestHost.WaitData %s: %w (value: %v, want %v)", pathName(path), ctx.Err(), h.Data(path), want)
		}
	}
}

// Close disconnects the host (the service sees its sessions end) and stops
// the in-process server. It waits up to 10 seconds for the service's
// methods and hooks to return, and fails the test if they do not: a method
// that ignores its context. Idempotent; run by the test's Cleanup.
func (h *TestHost) Close() {
	h.closeOnce.Do(func() {
		close(h.closing)
		if h.conn != nil {
			h.conn.Close()
		}
		if h.cc != nil {
			h.cc.Close()
		}
		h.gs.Stop()
		<-h.served
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Wait(ctx); err != nil {
			h.t.Errorf("serviceplugin.TestHost: the service's methods or session hooks still run 10s after the host closed (does a method ignore its context?)")
		}
	})
}
