package serviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// Event is an event a service emitted, as the host receives it.
type Event struct {
	// Name is the event's name, declared in the service file.
	Name string
	// SessionID is the one session the event is for; "" for every session.
	SessionID string
	// Args are the event's arguments, encoded (services.DecodeArgs with
	// the event's Args decodes them; the host checked that they do).
	Args []byte
}

// DataUpdate is a change of a service's runtime data: the node at Path
// (see Service.Set; "" for the whole tree) has the encoded value Value.
type DataUpdate struct {
	Path  string
	Value []byte
}

// SessionInfo describes a session the host opens with a service.
type SessionInfo struct {
	ID       string
	ClientID string
}

// HostConnOptions configure a HostConn.
type HostConnOptions struct {
	// Restore are runtime-data values the plugin applies before anything
	// else (persistent values kept across restarts).
	Restore []DataUpdate
	// OnEvent receives every event the service emits, checked against the
	// service file, in order.
	OnEvent func(Event)
	// OnData receives every runtime-data update, checked against the
	// service file, in order. The first, delivered before NewHostConn
	// returns, is the whole tree (Path "").
	OnData func(DataUpdate)
	// MaxPendingCalls bounds the calls (and session opens) waiting for an
	// answer; beyond it Call fails at once with ErrTooManyCalls. Default
	// 10000.
	MaxPendingCalls int
	// Logger receives what the plugin got wrong (events and updates that
	// do not fit the service file are dropped and logged, at most one line
	// a second). Default slog.Default().
	Logger *slog.Logger
	// Lost, if set, is called once if the stream ends other than by
	// Close, with the stream's error; what it returns says what happened
	// (for example that the plugin process exited) in the errors of the
	// calls that were waiting.
	Lost func(streamErr error) error
}

// HostConn is the host's end of a service plugin's Connect stream: it
// multiplexes calls and session notices over the one stream, matches the
// results to their calls, and delivers events and data updates. Everything
// the plugin sends is checked against the service file; a result that does
// not fit fails its call with ErrProtocol, an event or update that does not
// fit is dropped and logged, and nothing the plugin sends makes the host
// panic or allocate without bound (gRPC bounds each message to 4 MiB).
//
// Its methods are safe for concurrent use. OnEvent and OnData run on the
// stream's one reading goroutine, in order: while one runs, no result is
// delivered either, so they must hand work off rather than block.
type HostConn struct {
	svc    *servicefile.Service
	opts   HostConnOptions
	stream servicepb.Service_ConnectClient
	cancel context.CancelFunc // ends the stream
	out    *outbox[*servicepb.HostMessage]
	nextID atomic.Uint64
	warn   limiter

	mu      sync.Mutex
	pending map[uint64]*pendingCall
	err     error // why the connection ended; nil while it runs

	done chan struct{}
	wg   sync.WaitGroup
}

type pendingCall struct {
	ch chan outcome // capacity 1: delivery never blocks
}

type outcome struct {
	res *servicepb.Result
	err error
}

// NewHostConn opens the Connect stream on rpc for the service svc (the
// parsed description the plugin gave), sends Start and waits for Ready
// until ctx ends. The connection lives until Close or until the stream
// breaks (see Done); ctx only bounds the start.
func NewHostConn(ctx context.Context, rpc servicepb.ServiceClient, svc *servicefile.Service, opts HostConnOptions) (*HostConn, error) {
	if opts.MaxPendingCalls <= 0 {
		opts.MaxPendingCalls = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel) // the start is bounded by ctx
	fail := func(what string, err error) (*HostConn, error) {
		stop()
		cancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("service %s: %s: %w", svc.Name, what, err)
	}
	stream, err := rpc.Connect(sctx)
	if err != nil {
		return fail("open the stream", err)
	}
	restore := make([]*servicepb.DataUpdate, len(opts.Restore))
	size := 0
	for i, u := range opts.Restore {
		restore[i] = &servicepb.DataUpdate{Path: u.Path, Value: u.Value}
		size += len(u.Path) + len(u.Value)
	}
	if size > MaxPayload {
		return fail("send Start", fmt.Errorf("the restored values take %d bytes, more than a message carries (%d)", size, MaxPayload))
	}
	if err := stream.Send(&servicepb.HostMessage{Msg: &servicepb.HostMessage_Start{Start: &servicepb.Start{ContractVersion: ContractVersion, Restore: restore}}}); err != nil {
		return fail("send Start", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fail("wait for Ready", err)
	}
	ready := first.GetReady()
	if ready == nil {
		return fail("wait for Ready", fmt.Errorf("%w: the plugin's first message is a %T, not Ready", ErrProtocol, first.Msg))
	}
	if _, err := services.DecodeValue(svc.Data.Type, ready.Data); err != nil {
		return fail("Ready", fmt.Errorf("%w: the runtime data does not fit the service file: %v", ErrProtocol, err))
	}
	if !stop() {
		return fail("start", ctx.Err())
	}
	h := &HostConn{svc: svc, opts: opts, stream: stream, cancel: cancel, out: newOutbox[*servicepb.HostMessage](outboxSize),
		pending: map[uint64]*pendingCall{}, done: make(chan struct{})}
	if opts.OnData != nil {
		opts.OnData(DataUpdate{Path: "", Value: ready.Data})
	}
	h.wg.Add(2)
	go h.write(sctx)
	go h.read()
	return h, nil
}

// Service returns the service's description.
func (h *HostConn) Service() *servicefile.Service { return h.svc }

// Done is closed when the connection has ended (Close, or the stream
// broke); Err says why.
func (h *HostConn) Done() <-chan struct{} { return h.done }

// Err returns why the connection ended, or nil while it runs: ErrClosed
// after Close, else an error wrapping ErrConnLost.
func (h *HostConn) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Close ends the stream; calls still waiting fail with ErrClosed. It waits
// for the connection's goroutines. Idempotent.
func (h *HostConn) Close() error {
	h.end(ErrClosed)
	h.wg.Wait()
	return nil
}

// end records why the connection ended (the first reason wins), fails
// every waiting call with it and stops the stream.
func (h *HostConn) end(err error) {
	h.mu.Lock()
	if h.err != nil {
		h.mu.Unlock()
		return
	}
	h.err = err
	pending := h.pending
	h.pending = nil
	h.mu.Unlock()
	h.cancel()
	h.out.close()
	for _, p := range pending {
		p.ch <- outcome{err: err}
	}
	close(h.done)
}

func (h *HostConn) write(ctx context.Context) {
	defer h.wg.Done()
	for {
		m, ok := h.out.pop(ctx)
		if !ok {
			return
		}
		if err := h.stream.Send(m); err != nil {
			// The reader sees the same failure, with the plugin's side
			// of the story (Send reports io.EOF); make sure it ends.
			h.cancel()
			return
		}
	}
}

func (h *HostConn) read() {
	defer h.wg.Done()
	for {
		m, err := h.stream.Recv()
		if err != nil {
			h.mu.Lock()
			closed := h.err != nil
			h.mu.Unlock()
			if closed {
				return
			}
			cause := err
			if h.opts.Lost != nil {
				cause = h.opts.Lost(err)
			}
			h.end(fmt.Errorf("%w (%w)", ErrConnLost, cause))
			return
		}
		switch m := m.Msg.(type) {
		case *servicepb.PluginMessage_Result:
			h.deliver(m.Result)
		case *servicepb.PluginMessage_Event:
			h.event(m.Event)
		case *servicepb.PluginMessage_Data:
			h.data(m.Data)
		case *servicepb.PluginMessage_Ready:
			h.bad("the plugin sent Ready twice; ignored")
		default:
			h.bad("ignoring a message of a type this host does not know", "type", fmt.Sprintf("%T", m))
		}
	}
}

// bad logs something the plugin got wrong, at most once a second.
func (h *HostConn) bad(msg string, args ...any) {
	if n, ok := h.warn.allow(); ok {
		args = append(args, "service", h.svc.Name)
		if n > 0 {
			args = append(args, "suppressed", n)
		}
		h.opts.Logger.Warn(msg, args...)
	}
}

func (h *HostConn) deliver(r *servicepb.Result) {
	h.mu.Lock()
	p := h.pending[r.CallId]
	delete(h.pending, r.CallId)
	h.mu.Unlock()
	if p == nil {
		// A call its caller stopped waiting for, or nonsense.
		if r.CallId == 0 || r.CallId > h.nextID.Load() {
			h.bad("the plugin answered a call that was never made; ignored", "call", r.CallId)
		}
		return
	}
	p.ch <- outcome{res: r}
}

func (h *HostConn) event(e *servicepb.Event) {
	ev := h.svc.Event(e.Name)
	if ev == nil {
		h.bad("the plugin emitted an event the service file does not declare; dropped", "event", cut(e.Name))
		return
	}
	if _, err := services.DecodeArgs(ev.Args, e.Args); err != nil {
		h.bad("the plugin emitted an event whose arguments do not fit the service file; dropped", "event", e.Name, "error", err)
		return
	}
	if h.opts.OnEvent != nil {
		h.opts.OnEvent(Event{Name: e.Name, SessionID: e.SessionId, Args: e.Args})
	}
}

func (h *HostConn) data(u *servicepb.DataUpdate) {
	t, err := PathType(h.svc.Data.Type, u.Path)
	if err != nil {
		h.bad("the plugin updated runtime data the service file does not declare; dropped", "path", cut(u.Path), "error", err)
		return
	}
	if _, err := services.DecodeValue(t, u.Value); err != nil {
		h.bad("the plugin updated runtime data with a value that does not fit the service file; dropped", "path", u.Path, "error", err)
		return
	}
	if h.opts.OnData != nil {
		h.opts.OnData(DataUpdate{Path: u.Path, Value: u.Value})
	}
}

// register adds a waiting call, or says why it cannot wait.
func (h *HostConn) register() (uint64, *pendingCall, error) {
	p := &pendingCall{ch: make(chan outcome, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, nil, h.err
	}
	if len(h.pending) >= h.opts.MaxPendingCalls {
		return 0, nil, ErrTooManyCalls
	}
	id := h.nextID.Add(1)
	h.pending[id] = p
	return id, p, nil
}

func (h *HostConn) unregister(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.pending[id]; !ok {
		return false
	}
	delete(h.pending, id)
	return true
}

func timeoutOf(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return max(int64(time.Until(d)), 1)
	}
	return 0
}

// roundTrip sends a call or a session open and waits for its answer.
func (h *HostConn) roundTrip(ctx context.Context, cerr *CallError, msg func(id uint64) *servicepb.HostMessage) (*servicepb.Result, error) {
	if err := ctx.Err(); err != nil {
		cerr.Err = err
		return nil, cerr
	}
	id, p, err := h.register()
	if err != nil {
		cerr.Err = err
		return nil, cerr
	}
	cerr.ID = id
	if err := h.out.push(ctx, msg(id)); err != nil {
		h.unregister(id)
		if errors.Is(err, ErrClosed) {
			err = h.Err()
		}
		cerr.ID, cerr.Err = 0, err // never sent
		return nil, cerr
	}
	select {
	case o := <-p.ch:
		if o.err != nil {
			cerr.Err = o.err
			return nil, cerr
		}
		if o.res.Error != nil {
			cerr.Err = fromProtoError(o.res.Error)
			return nil, cerr
		}
		return o.res, nil
	case <-ctx.Done():
		if h.unregister(id) {
			// Tell the plugin to stop; never blocks (one per pending call).
			_ = h.out.pushUrgent(&servicepb.HostMessage{Msg: &servicepb.HostMessage_Cancel{Cancel: &servicepb.Cancel{CallId: id}}})
		}
		cerr.Err = ctx.Err()
		return nil, cerr
	}
}

// Call calls method in session sessionID ("" for none) with args encoded
// by services.AppendArgs, and returns the result encoded by
// services.AppendValue (nil for a method that returns nothing). ctx's
// deadline travels with the call and becomes the method's deadline; when
// ctx ends first the plugin is told to cancel the method. Every error is a
// *CallError.
func (h *HostConn) Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	cerr := &CallError{Service: h.svc.Name, Method: method, Session: sessionID}
	m := h.svc.Method(method)
	if m == nil {
		cerr.Err = Errorf(CodeUnknownMethod, "service %s has no method %q (methods: %s)", h.svc.Name, method, methodNames(h.svc))
		return nil, cerr
	}
	if len(args) > MaxPayload {
		cerr.Err = Errorf(CodeInvalidArgument, "the arguments take %d bytes, more than a message carries (%d)", len(args), MaxPayload)
		return nil, cerr
	}
	res, err := h.roundTrip(ctx, cerr, func(id uint64) *servicepb.HostMessage {
		return &servicepb.HostMessage{Msg: &servicepb.HostMessage_Call{Call: &servicepb.Call{
			CallId: id, SessionId: sessionID, Method: method, Args: args, TimeoutNanos: timeoutOf(ctx)}}}
	})
	if err != nil {
		return nil, err
	}
	return h.checkResult(m, res.Value, cerr)
}

// checkResult checks a result against the method's return type.
func (h *HostConn) checkResult(m *servicefile.Method, v []byte, cerr *CallError) ([]byte, error) {
	if m.Returns == nil {
		if len(v) != 0 {
			cerr.Err = fmt.Errorf("%w: the plugin answered %d bytes for method %s, which returns nothing", ErrProtocol, len(v), m.Name)
			return nil, cerr
		}
		return nil, nil
	}
	if _, err := services.DecodeValue(m.Returns, v); err != nil {
		cerr.Err = fmt.Errorf("%w: the plugin's result is not a %s: %v", ErrProtocol, m.Returns, err)
		return nil, cerr
	}
	return v, nil
}

// CallUnary makes the same call as Call as one unary gRPC request on rpc
// (the plugin's client) instead of the stream. It exists to measure what
// the stream saves (bench/servicecall) and for tools; hosts use Call.
func (h *HostConn) CallUnary(ctx context.Context, rpc servicepb.ServiceClient, sessionID, method string, args []byte) ([]byte, error) {
	cerr := &CallError{Service: h.svc.Name, Method: method, Session: sessionID}
	m := h.svc.Method(method)
	if m == nil {
		cerr.Err = Errorf(CodeUnknownMethod, "service %s has no method %q (methods: %s)", h.svc.Name, method, methodNames(h.svc))
		return nil, cerr
	}
	res, err := rpc.Invoke(ctx, &servicepb.Call{SessionId: sessionID, Method: method, Args: args, TimeoutNanos: timeoutOf(ctx)})
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		cerr.Err = err
		return nil, cerr
	}
	if res.Error != nil {
		cerr.Err = fromProtoError(res.Error)
		return nil, cerr
	}
	return h.checkResult(m, res.Value, cerr)
}

// OpenSession tells the service that a session opened and waits for it to
// accept (nil) or refuse (a *CallError wrapping the service's *Error).
// Calls in the session may be made as soon as OpenSession returns nil.
func (h *HostConn) OpenSession(ctx context.Context, s SessionInfo) error {
	cerr := &CallError{Service: h.svc.Name, Session: s.ID}
	if s.ID == "" {
		cerr.Err = errors.New("empty session id")
		return cerr
	}
	_, err := h.roundTrip(ctx, cerr, func(id uint64) *servicepb.HostMessage {
		return &servicepb.HostMessage{Msg: &servicepb.HostMessage_SessionOpen{SessionOpen: &servicepb.SessionOpen{
			CallId: id, SessionId: s.ID, ClientId: s.ClientID, TimeoutNanos: timeoutOf(ctx)}}}
	})
	return err
}

// CloseSession tells the service that a session ended; its running calls
// are cancelled. It never waits; it fails only when the connection has
// ended.
func (h *HostConn) CloseSession(sessionID, reason string) error {
	err := h.out.pushUrgent(&servicepb.HostMessage{Msg: &servicepb.HostMessage_SessionClose{SessionClose: &servicepb.SessionClose{SessionId: sessionID, Reason: reason}}})
	if err != nil {
		if e := h.Err(); e != nil {
			err = e
		}
		return fmt.Errorf("service %s: close session %q: %w", h.svc.Name, sessionID, err)
	}
	return nil
}

// PathType returns the type of the runtime-data node at path below root
// (a service's Data.Type): a path walks a struct's fields (an object's
// children) by name and a list's elements by index ("player.queue.2.title").
// Whether an index exists depends on the value, not the type: PathType
// checks only that it is one (a decimal number without sign or leading
// zeros). "" is root itself.
func PathType(root *servicefile.Type, path string) (*servicefile.Type, error) {
	t := root
	if path == "" {
		return t, nil
	}
	for i, seg := range strings.Split(path, ".") {
		switch t.Kind {
		case servicefile.Struct:
			f := t.Field(seg)
			if f == nil {
				return nil, fmt.Errorf("data path %s: no %s at segment %d (there: %s)", strconv.Quote(cut(path)), strconv.Quote(cut(seg)), i+1, fieldNames(t))
			}
			t = f.Type
		case servicefile.List:
			n, err := strconv.Atoi(seg)
			if err != nil || n < 0 || strconv.Itoa(n) != seg {
				return nil, fmt.Errorf("data path %s: segment %d, %s, is not a list index", strconv.Quote(cut(path)), i+1, strconv.Quote(cut(seg)))
			}
			t = t.Elem
		default:
			return nil, fmt.Errorf("data path %s: segment %d, %s, is below a %s", strconv.Quote(cut(path)), i+1, strconv.Quote(cut(seg)), t)
		}
	}
	return t, nil
}

// cut shortens a string from the plugin for a log line or message.
func cut(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// limiter lets one log line a second through and counts the rest.
type limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *limiter) allow() (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.last) >= time.Second {
		l.last, suppressed, l.suppressed = now, l.suppressed, 0
		return suppressed, true
	}
	l.suppressed++
	return 0, false
}
