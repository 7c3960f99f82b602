package serviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// outboxSize bounds the messages (results, events) a side queues before
// the producers wait for the peer.
const outboxSize = 1024

// Server implements the gRPC contract (servicepb.ServiceServer) for a
// Service. Plugin authors call Serve, which uses it; it is exported for
// embedders that serve a service over their own transport. One host at a
// time: a second Connect stream while one is open is refused.
type Server struct {
	servicepb.UnimplementedServiceServer
	svc *Service

	running    atomic.Int64   // calls running (stream and unary), bounded by MaxConcurrentCalls
	wg         sync.WaitGroup // every goroutine the server started
	attached   chan struct{}  // closed when a host's Connect stream first starts
	ended      chan struct{}  // closed when that stream ends
	attachOnce sync.Once
	endOnce    sync.Once
}

// NewServer checks svc (see Service.Check) and returns a Server for it.
func NewServer(svc *Service) (*Server, error) {
	if err := svc.init(); err != nil {
		return nil, err
	}
	return &Server{svc: svc, attached: make(chan struct{}), ended: make(chan struct{})}, nil
}

// Describe implements servicepb.ServiceServer.
func (s *Server) Describe(context.Context, *servicepb.DescribeRequest) (*servicepb.DescribeResponse, error) {
	d := s.svc.desc
	return &servicepb.DescribeResponse{Name: d.Name, Version: d.Version, ServiceXml: s.svc.xmlText, ContractVersion: ContractVersion}, nil
}

// Connect implements servicepb.ServiceServer: it serves the host's stream
// until the host ends it. Calls still running are cancelled and finish in
// their own goroutines (see Wait).
func (s *Server) Connect(stream servicepb.Service_ConnectServer) error {
	// Wait waits for the handler, and so for the goroutines it starts
	// (closing sessions when the host goes away).
	s.wg.Add(1)
	defer s.wg.Done()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Errorf(codes.FailedPrecondition, "the first message on a Connect stream must be Start, got %T", first.Msg)
	}
	if start.ContractVersion != ContractVersion {
		return status.Errorf(codes.FailedPrecondition, "host speaks service contract version %d, this plugin speaks %d", start.ContractVersion, ContractVersion)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	c := &conn{srv: s, svc: s.svc, ctx: ctx, cancel: cancel, out: newOutbox[*servicepb.PluginMessage](outboxSize),
		calls: map[uint64]context.CancelCauseFunc{}, sessions: map[string]*Session{}}
	if err := s.svc.attach(c, start.Restore); err != nil {
		cancel(err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	firstHost := false
	s.attachOnce.Do(func() { firstHost = true; close(s.attached) })
	if firstHost {
		defer s.endOnce.Do(func() { close(s.ended) })
	}
	// The writer: the only goroutine that sends on the stream. Connect
	// waits for it, since gRPC forbids sending after the handler returned;
	// its Send returns once the host reads or the stream ends.
	written := make(chan struct{})
	go func() {
		defer close(written)
		for {
			m, ok := c.out.pop(ctx)
			if !ok {
				return
			}
			if err := stream.Send(m); err != nil {
				cancel(fmt.Errorf("send to host: %w", err))
				return
			}
		}
	}()
	err = c.serve(stream)
	cancel(errHostGone)
	s.svc.detach(c)
	c.out.close()
	c.closeSessions("host disconnected")
	<-written
	if errors.Is(err, errHostGone) || errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

var errHostGone = errors.New("the host disconnected")

// Invoke implements servicepb.ServiceServer: one call as a unary RPC.
func (s *Server) Invoke(ctx context.Context, req *servicepb.Call) (*servicepb.Result, error) {
	if !s.acquire() {
		return overloaded(req.CallId, s.svc.MaxConcurrentCalls), nil
	}
	defer s.release()
	s.svc.mu.Lock()
	c := s.svc.conn
	s.svc.mu.Unlock()
	var sess *Session
	if req.SessionId != "" && c != nil {
		sess = c.session(req.SessionId)
	}
	return s.svc.execute(ctx, req, sess), nil
}

// Wait waits until every goroutine the server started has returned (after
// the streams ended, methods that ignore their context may run on), or ctx
// ends.
func (s *Server) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) acquire() bool {
	if s.running.Add(1) > int64(s.svc.MaxConcurrentCalls) {
		s.running.Add(-1)
		return false
	}
	return true
}

func (s *Server) release() { s.running.Add(-1) }

func overloaded(id uint64, max int) *servicepb.Result {
	return &servicepb.Result{CallId: id, Error: toProtoError(Errorf(CodeOverloaded, "the service runs %d calls already, its limit", max))}
}

// attach makes c the connected host: it applies the restored values and
// queues Ready with the whole tree, atomically with respect to Set, so
// that every later Set reaches the host after the snapshot.
func (s *Service) attach(c *conn, restore []*servicepb.DataUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		return errors.New("the service is already connected to a host")
	}
	for _, u := range restore {
		if err := s.data.SetEncoded(u.Path, u.Value); err != nil {
			// A value kept from an older version of the service file, say:
			// the default stays, the service runs.
			s.Logger.Warn("a restored runtime-data value does not fit the service file; keeping the current value",
				"service", s.desc.Name, "path", u.Path, "error", err)
		}
	}
	snap, err := s.data.Encoded("")
	if err != nil {
		return fmt.Errorf("internal: the data tree does not encode: %w", err)
	}
	if len(snap) > MaxPayload {
		return fmt.Errorf("the runtime data takes %d bytes, more than a message carries (%d)", len(snap), MaxPayload)
	}
	if err := c.out.pushUrgent(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Ready{Ready: &servicepb.Ready{Data: snap}}}); err != nil {
		return err
	}
	s.conn = c
	return nil
}

func (s *Service) detach(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn = nil
	}
}

// conn is one host's Connect stream.
type conn struct {
	srv    *Server
	svc    *Service
	ctx    context.Context // ends with the stream
	cancel context.CancelCauseFunc
	out    *outbox[*servicepb.PluginMessage]

	mu       sync.Mutex
	calls    map[uint64]context.CancelCauseFunc // running calls, for Cancel
	sessions map[string]*Session                // opening and open sessions
}

func (c *conn) session(id string) *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sessions[id]
}

func (c *conn) openSessions() []*Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		if s.isOpen() {
			out = append(out, s)
		}
	}
	return out
}

// serve reads the host's messages until the stream ends.
func (c *conn) serve(stream servicepb.Service_ConnectServer) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			if c.ctx.Err() != nil {
				return context.Cause(c.ctx)
			}
			return err
		}
		switch m := m.Msg.(type) {
		case *servicepb.HostMessage_Call:
			c.call(m.Call)
		case *servicepb.HostMessage_Cancel:
			c.mu.Lock()
			cancel := c.calls[m.Cancel.CallId]
			c.mu.Unlock()
			if cancel != nil {
				cancel(errors.New("the caller cancelled the call"))
			}
		case *servicepb.HostMessage_SessionOpen:
			c.openSession(m.SessionOpen)
		case *servicepb.HostMessage_SessionClose:
			c.closeSession(m.SessionClose.SessionId, m.SessionClose.Reason)
		case *servicepb.HostMessage_Start:
			return status.Error(codes.FailedPrecondition, "Start sent twice on one Connect stream")
		default:
			// A newer host's message this plugin does not know: ignore it,
			// as the contract's compatibility rules say.
			c.svc.Logger.Warn("ignoring an unknown message from the host", "service", c.svc.desc.Name, "type", fmt.Sprintf("%T", m))
		}
	}
}

func (c *conn) reply(r *servicepb.Result) {
	// Fails only when the stream is gone, and with it whoever waited.
	_ = c.out.push(c.ctx, &servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Result{Result: r}})
}

func (c *conn) call(m *servicepb.Call) {
	if !c.srv.acquire() {
		c.srv.wg.Add(1)
		go func() { // never block the reader on the outbox
			defer c.srv.wg.Done()
			c.reply(overloaded(m.CallId, c.svc.MaxConcurrentCalls))
		}()
		return
	}
	var sess *Session
	if m.SessionId != "" {
		sess = c.session(m.SessionId)
		if sess == nil {
			c.srv.release()
			c.srv.wg.Add(1)
			go func() {
				defer c.srv.wg.Done()
				c.reply(&servicepb.Result{CallId: m.CallId, Error: toProtoError(Errorf(CodeNoSession, "session %q is not open", m.SessionId))})
			}()
			return
		}
	}
	ctx, cancel := context.WithCancelCause(c.ctx)
	c.mu.Lock()
	if c.calls[m.CallId] != nil {
		c.mu.Unlock()
		cancel(nil)
		c.srv.release()
		c.svc.Logger.Error("the host reused a call id; ignoring the call", "service", c.svc.desc.Name, "call", m.CallId)
		return
	}
	c.calls[m.CallId] = cancel
	c.mu.Unlock()
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		defer c.srv.release()
		r := c.svc.execute(ctx, m, sess)
		c.mu.Lock()
		delete(c.calls, m.CallId)
		c.mu.Unlock()
		cancel(nil)
		c.reply(r)
	}()
}

// execute runs one call and returns its result. ctx is the call's parent:
// the stream's, or the unary RPC's.
func (s *Service) execute(ctx context.Context, m *servicepb.Call, sess *Session) *servicepb.Result {
	fail := func(code Code, format string, args ...any) *servicepb.Result {
		return &servicepb.Result{CallId: m.CallId, Error: toProtoError(Errorf(code, format, args...))}
	}
	method := s.desc.Method(m.Method)
	if method == nil {
		return fail(CodeUnknownMethod, "service %s has no method %q (methods: %s)", s.desc.Name, m.Method, methodNames(s.desc))
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if m.TimeoutNanos > 0 {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithTimeout(ctx, time.Duration(m.TimeoutNanos))
		defer cancelT()
	}
	if m.SessionId != "" {
		if sess == nil {
			return fail(CodeNoSession, "session %q is not open", m.SessionId)
		}
		select { // a call sent right after SessionOpen waits for OnSessionOpen
		case <-sess.opened:
		case <-ctx.Done():
			return ctxResult(m.CallId, ctx)
		}
		if sess.err != nil || sess.ctx.Err() != nil {
			return fail(CodeNoSession, "session %q is not open", m.SessionId)
		}
		stop := context.AfterFunc(sess.ctx, func() { cancel(context.Cause(sess.ctx)) })
		defer stop()
	}
	args, err := services.DecodeArgs(method.Args, m.Args)
	if err != nil {
		return fail(CodeInvalidArgument, "method %s: %v", method.Name, err)
	}
	call := &Call{ID: m.CallId, Method: method, Session: sess, Args: args, Service: s}
	v, err := s.invoke(ctx, call)
	if err != nil {
		var e *Error
		switch {
		case errors.As(err, &e):
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
			e = Errorf(CodeDeadlineExceeded, "method %s: %v", method.Name, err)
		case errors.Is(err, context.Canceled) && ctx.Err() != nil:
			e = Errorf(CodeCanceled, "method %s: %v (%v)", method.Name, err, context.Cause(ctx))
		default:
			e = &Error{Code: CodeApplication, Message: err.Error()}
		}
		return &servicepb.Result{CallId: m.CallId, Error: toProtoError(e)}
	}
	if method.Returns == nil {
		if v != nil {
			return fail(CodeBadResult, "method %s returns nothing, but its implementation returned a %T", method.Name, v)
		}
		return &servicepb.Result{CallId: m.CallId}
	}
	enc, err := services.AppendValue(nil, method.Returns, v)
	if err != nil {
		s.Logger.Error("a method returned a value that is not of its return type", "service", s.desc.Name, "method", method.Name, "error", err)
		return fail(CodeBadResult, "method %s returned a value that is not a %s: %v", method.Name, method.Returns, err)
	}
	if len(enc) > MaxPayload {
		return fail(CodeBadResult, "method %s returned %d bytes, more than a message carries (%d)", method.Name, len(enc), MaxPayload)
	}
	return &servicepb.Result{CallId: m.CallId, Value: enc}
}

func ctxResult(id uint64, ctx context.Context) *servicepb.Result {
	code := CodeCanceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		code = CodeDeadlineExceeded
	}
	return &servicepb.Result{CallId: id, Error: toProtoError(Errorf(code, "%v", context.Cause(ctx)))}
}

// invoke runs the method, turning a panic into an error.
func (s *Service) invoke(ctx context.Context, call *Call) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.Logger.Error("method panicked", "service", s.desc.Name, "method", call.Method.Name, "call", call.ID,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			v, err = nil, Errorf(CodePanic, "method %s panicked: %v", call.Method.Name, r)
		}
	}()
	return s.Methods[call.Method.Name](ctx, call)
}

// hook runs a session hook, turning a panic into an error.
func (s *Service) hook(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.Logger.Error(what+" panicked", "service", s.desc.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = Errorf(CodePanic, "%s panicked: %v", what, r)
		}
	}()
	return f()
}

func (c *conn) openSession(m *servicepb.SessionOpen) {
	c.mu.Lock()
	if c.sessions[m.SessionId] != nil || m.SessionId == "" {
		c.mu.Unlock()
		c.srv.wg.Add(1)
		go func() {
			defer c.srv.wg.Done()
			c.reply(&servicepb.Result{CallId: m.CallId, Error: toProtoError(Errorf(CodeInvalidArgument, "session %q is already open (or empty)", m.SessionId))})
		}()
		return
	}
	sctx, scancel := context.WithCancelCause(c.ctx)
	sess := &Session{ID: m.SessionId, ClientID: m.ClientId, svc: c.svc, ctx: sctx, cancel: scancel, opened: make(chan struct{})}
	c.sessions[m.SessionId] = sess
	c.mu.Unlock()
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		var err error
		if f := c.svc.OnSessionOpen; f != nil {
			ctx, cancel := context.WithCancel(sctx)
			if m.TimeoutNanos > 0 {
				ctx, cancel = context.WithTimeout(sctx, time.Duration(m.TimeoutNanos))
			}
			err = c.svc.hook("OnSessionOpen", func() error { return f(ctx, sess) })
			cancel()
		}
		sess.err = err
		close(sess.opened)
		r := &servicepb.Result{CallId: m.CallId}
		if err != nil {
			c.mu.Lock()
			if c.sessions[m.SessionId] == sess {
				delete(c.sessions, m.SessionId)
			}
			c.mu.Unlock()
			scancel(fmt.Errorf("session refused: %w", err))
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Code: CodeApplication, Message: err.Error()}
			}
			r.Error = toProtoError(e)
		}
		c.reply(r)
	}()
}

// closeSession ends a session: its calls are cancelled, and OnSessionClose
// runs once OnSessionOpen has returned (if it accepted the session).
func (c *conn) closeSession(id, reason string) {
	c.mu.Lock()
	sess := c.sessions[id]
	delete(c.sessions, id)
	c.mu.Unlock()
	if sess == nil {
		return // closed twice, or refused: nothing to do
	}
	c.endSession(sess, reason)
}

func (c *conn) endSession(sess *Session, reason string) {
	sess.cancel(fmt.Errorf("session %s ended: %s", sess.ID, reason))
	f := c.svc.OnSessionClose
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		<-sess.opened
		if sess.err != nil || f == nil {
			return
		}
		// The hook's context is not the stream's: it runs to its end even
		// when the host has gone.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.svc.hook("OnSessionClose", func() error { f(ctx, sess, reason); return nil })
	}()
}

func (c *conn) closeSessions(reason string) {
	c.mu.Lock()
	all := c.sessions
	c.sessions = map[string]*Session{}
	c.mu.Unlock()
	for _, s := range all {
		c.endSession(s, reason)
	}
}
