package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Services: the session layer of the client (docs/PROTOCOL.md, "Sessions").
//
// Over a stream bearer (tcp, ssl, ...) session messages travel in the
// client's resume stream (stream.go): when the connection breaks, the
// client redials, registers and resumes the stream, and its sessions, calls
// in flight, subscriptions and watches carry on — every request and every
// answer is delivered exactly once, in order. A Session ends with its
// stream only when the stream is lost for good (the server expired it after
// its linger window, or refused to resume it): then calls waiting for an
// answer fail with an error that wraps ErrConnectionLost, and every later
// method returns a *SessionEndedError whose Cause says why (errors.Is
// resume.ErrExpired, for example). The client then opens a new stream by
// itself; start new sessions on it.
//
// Over a datagram bearer (udp), or with Config.NoResume, session messages
// travel in Data frames on session.Channel of each registered connection,
// and a Session lives on the connection it was started on: when it breaks,
// the Session ends the same way.
//
// A request made through the Client (Services, Describe, StartSession)
// waits while the client reconnects and is made again on the next
// connection or stream if the previous one was lost before the answer:
// they are safe to repeat (a session opened on a connection or stream that
// was lost is closed by the server).

// Sentinel errors of the session layer.
var (
	// ErrConnectionLost: the connection to the server broke before the
	// server answered. For a call, whether the method ran is unknown.
	ErrConnectionLost = errors.New("the connection to the server was lost")
	// ErrSessionEnded: the session is over: closed with Close, ended by
	// the server, or gone with the connection it was started on.
	ErrSessionEnded = errors.New("the session ended")
)

// Error is the failure of a request: answered by the server (an unknown
// service or method, a failed call, ...) or found by the client before
// sending (arguments that do not fit the method). Code classifies it; Err
// is the local cause, if any (a *services.Error for bad arguments).
type Error struct {
	// Op says what was asked: "call example.echo.add", "describe
	// example.echo", ...
	Op      string
	Code    session.Code
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Op + ": " + e.Message }

// Unwrap returns the local cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// SessionEndedError says why a session ended. It matches ErrSessionEnded,
// and ErrConnectionLost when the session ended with its connection.
type SessionEndedError struct {
	Session string
	Service string
	// Reason says why: "closed by Close", the server's reason, or that the
	// connection was lost.
	Reason string
	// Cause is the connection's error when the session ended with it.
	Cause error
}

func (e *SessionEndedError) Error() string {
	s := fmt.Sprintf("session %s with %s ended: %s", e.Session, e.Service, e.Reason)
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Is matches ErrSessionEnded, and ErrConnectionLost when the connection's
// loss ended the session.
func (e *SessionEndedError) Is(target error) bool {
	return target == ErrSessionEnded || target == ErrConnectionLost && e.Cause != nil
}

// Unwrap returns the connection's error, if any.
func (e *SessionEndedError) Unwrap() error { return e.Cause }

// lostError is the error of a request whose connection broke before the
// answer: the connection to the server, or a direct link (link is its
// name).
type lostError struct {
	op    string
	cause error
	link  string
	id    uint64 // the request's id, when known
}

func (e *lostError) Error() string {
	if e.link != "" {
		return fmt.Sprintf("%s: no answer: the direct link %q to the service's runner was lost (%v); %s", e.op, e.link, e.cause, ranVerdict(e.cause, e.id))
	}
	return fmt.Sprintf("%s: no answer: %v (%v)", e.op, ErrConnectionLost, e.cause)
}
func (e *lostError) Is(target error) bool {
	return e.link == "" && target == ErrConnectionLost || e.link != "" && target == ErrLinkLost
}
func (e *lostError) Unwrap() error { return e.cause }

// Buffers of the channels a Session hands out.
const (
	// EventBuffer bounds the events a subscription holds for a reader that
	// is slower than the service; beyond it events are dropped and the
	// subscription delivers an Event whose Lost counts them.
	EventBuffer = 1024
	// maxPendingChanges bounds the distinct changed paths a watch holds;
	// beyond it the watch sends the whole watched node instead.
	maxPendingChanges = 256
	// maxCachedDescriptions bounds the parsed service files a connection
	// keeps.
	maxCachedDescriptions = 256
	// closeTimeout bounds telling the server that a session closed.
	closeTimeout = 5 * time.Second
)

// ServiceInfo describes a service the server hosts.
type ServiceInfo struct {
	Name        string `json:"name"`
	Version     string `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
	// Available is true when the service accepts sessions now.
	Available bool `json:"available"`
	// Problem says why the service is unavailable or degraded.
	Problem string `json:"problem,omitempty"`
	// Runner names the runner of a remote service ("NAME (client ID)");
	// empty for a service inside the server.
	Runner string `json:"runner,omitempty"`
}

// Event is an event a service emitted, received through Subscribe.
type Event struct {
	// Name is the event's name in the service file.
	Name string
	// Args are its arguments in the services package's canonical Go
	// representation (int64, float64, bool, string, []byte, []any,
	// map[string]any).
	Args map[string]any
	// Lost, when non-zero, makes this Event a gap marker: Lost events were
	// dropped here because the reader did not keep up (the server's queue
	// for the session, or this subscription's buffer of EventBuffer
	// events, was full). Name and Args are then empty. Lost may count
	// events that another subscription of the same session, not this one,
	// would have received.
	Lost uint64
	// Time is when the client received the event (or noticed the loss).
	Time time.Time
}

// DataChange is a value of runtime data received through Watch.
type DataChange struct {
	// Path is the node the value is for: the watched path or one below it
	// ("meter.level"; list elements by index: "player.queue.2").
	Path string
	// Value is the node's value in the services package's canonical Go
	// representation; the receiver owns it.
	Value any
	// Type is the node's type in the service file.
	Type *servicefile.Type
	// Snapshot is true for the first DataChange of a watch: the watched
	// node's whole value. Later ones are changes, coalesced: a reader
	// slower than the changes gets the latest value of each path that
	// changed, not every value it had, and (when very many paths changed)
	// a new value of the whole watched node.
	Snapshot bool
	// Time is when the client received the value.
	Time time.Time
}

// sessLink is the session layer of one link, or of one resume stream.
type sessLink struct {
	write  func(ctx context.Context, b []byte) error // sends one message
	stream bool                                      // carried by a resume stream
	log    *slog.Logger
	limit  int // the largest message the server accepts

	nextID atomic.Uint64
	done   chan struct{} // closed by end

	mu       sync.Mutex
	err      error // why the link ended
	pending  map[uint64]*pendingReq
	sessions map[string]*Session
	descs    map[string]*described
	runner   runnerHandler // serves the server's runner requests, once the client provides services (provide.go)
	direct   *directLink   // set when this is a direct link of one session (direct.go)
}

type pendingReq struct {
	ch    chan session.Message // capacity 1: delivery never blocks
	watch *watchState          // for a Watch: receives the Snapshot first
	ctr   *linkCounter         // counts the answer, if set
}

type described struct {
	xml  []byte
	desc *servicefile.Service
}

// newLinkSessions returns the session layer carried directly by l.
func newLinkSessions(l *link, log *slog.Logger) *sessLink {
	limit := wire.DefaultMaxPayload
	if l.welcome != nil && l.welcome.MaxPayload > 0 {
		limit = int(l.welcome.MaxPayload)
	}
	if l.datagram {
		limit = min(limit, wire.MaxDatagramPayload)
	}
	limit = min(limit, wire.DefaultMaxPayload) // what our own writer sends
	write := func(_ context.Context, b []byte) error {
		return l.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b})
	}
	return newSessLink(write, false, limit, log)
}

func newSessLink(write func(context.Context, []byte) error, stream bool, limit int, log *slog.Logger) *sessLink {
	return &sessLink{write: write, stream: stream, log: log, limit: limit, done: make(chan struct{}),
		pending: map[uint64]*pendingReq{}, sessions: map[string]*Session{}, descs: map[string]*described{}}
}

// end fails the link's pending requests and ends its sessions. It runs
// once, when the link's reader stops.
func (sl *sessLink) end(cause error) {
	if cause == nil {
		cause = errors.New("the connection closed")
	}
	sl.mu.Lock()
	if sl.err != nil {
		sl.mu.Unlock()
		return
	}
	sl.err = cause
	sessions := sl.sessions
	sl.pending, sl.sessions = nil, nil
	sl.mu.Unlock()
	close(sl.done)
	if sl.direct != nil {
		return // a direct link's end is not its session's (direct.go)
	}
	reason := "the connection to the server was lost (sessions without a resume stream end with their connection)"
	if sl.stream {
		reason = "the stream to the server was lost for good"
	}
	for _, s := range sessions {
		s.end(&SessionEndedError{Session: s.ID, Service: s.service, Reason: reason, Cause: cause})
	}
}

// ended reports whether the session layer is over.
func (sl *sessLink) ended() bool {
	select {
	case <-sl.done:
		return true
	default:
		return false
	}
}

func (sl *sessLink) cause() error {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.err
}

// send writes one message on the link, or queues it in the stream (within
// ctx while the stream pushes back).
func (sl *sessLink) send(ctx context.Context, op string, m session.Message) error {
	_, err := sl.sendN(ctx, op, m)
	return err
}

// sendN is send, returning the message's size.
func (sl *sessLink) sendN(ctx context.Context, op string, m session.Message) (int, error) {
	enc, err := session.Encode(m)
	if err != nil {
		return 0, &Error{Op: op, Code: session.CodeBadRequest, Message: err.Error(), Err: err}
	}
	if len(enc) > sl.limit {
		return 0, &Error{Op: op, Code: session.CodeTooLarge,
			Message: fmt.Sprintf("the request takes %d bytes, more than the connection carries in one message (%d)", len(enc), sl.limit)}
	}
	if err := sl.write(ctx, enc); err != nil {
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return 0, fmt.Errorf("%s: %w", op, err)
		case errors.Is(err, resume.ErrMessageTooLarge):
			return 0, &Error{Op: op, Code: session.CodeTooLarge, Message: err.Error(), Err: err}
		}
		return 0, sl.lost(op, err)
	}
	return len(enc), nil
}

// lost is the error of a request that got no answer because the link
// ended.
func (sl *sessLink) lost(op string, cause error) error {
	if sl.direct != nil {
		return &lostError{op: op, cause: cause, link: sl.direct.name}
	}
	return &lostError{op: op, cause: cause}
}

// roundTrip sends the request build makes with a fresh id and waits for its
// answer. An Error answer is returned as *Error. When ctx ends first, a
// Call is cancelled on the server.
func (sl *sessLink) roundTrip(ctx context.Context, op string, build func(id uint64) session.Message, w *watchState) (session.Message, error) {
	return sl.roundTripOn(ctx, op, build, w, nil)
}

// roundTripOn is roundTrip counting the request and its answer in ctr
// (nil: not counted).
func (sl *sessLink) roundTripOn(ctx context.Context, op string, build func(id uint64) session.Message, w *watchState, ctr *linkCounter) (session.Message, error) {
	id := sl.nextID.Add(1)
	m := build(id)
	p := &pendingReq{ch: make(chan session.Message, 1), watch: w, ctr: ctr}
	sl.mu.Lock()
	if sl.err != nil {
		err := sl.err
		sl.mu.Unlock()
		return nil, sl.lost(op, err)
	}
	sl.pending[id] = p
	sl.mu.Unlock()
	unregister := func() {
		sl.mu.Lock()
		delete(sl.pending, id)
		sl.mu.Unlock()
	}
	n, err := sl.sendN(ctx, op, m)
	if err != nil {
		unregister()
		return nil, err
	}
	ctr.sent(m, n)
	var r session.Message
	select {
	case r = <-p.ch:
	case <-sl.done:
		select {
		case r = <-p.ch: // answered just before the end
		default:
			return nil, sl.lostID(op, id, sl.cause()) // direct_resume.go
		}
	case <-ctx.Done():
		unregister()
		if _, isCall := m.(*session.Call); isCall {
			cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			sl.send(cctx, op, &session.Cancel{Target: id}) // best effort
			cancel()
		}
		return nil, fmt.Errorf("%s: %w", op, ctx.Err())
	}
	if e, ok := r.(*session.Error); ok {
		return nil, &Error{Op: op, Code: e.Code, Message: e.Message}
	}
	return r, nil
}

// handle dispatches one session message from the server; it runs on the
// link's reader goroutine and never blocks.
func (sl *sessLink) handle(payload []byte) {
	m, err := session.Decode(payload)
	if err != nil {
		var de *session.DecodeError
		if errors.As(err, &de) && de.ID != 0 && de.Kind.IsResponse() {
			sl.mu.Lock()
			p := sl.pending[de.ID]
			delete(sl.pending, de.ID)
			sl.mu.Unlock()
			if p != nil {
				p.ch <- session.NewError(de.ID, session.CodeInternal, "the server's answer does not decode: "+err.Error())
			}
		}
		if h := sl.runnerHandler(); h != nil && errors.As(err, &de) && de.ID != 0 && de.Kind.IsRunnerRequest() {
			h.badRequest(de.ID, err)
		}
		sl.log.Warn("bad session message from the server; ignored", "error", err)
		return
	}
	switch m := m.(type) {
	case session.Response:
		sl.mu.Lock()
		p := sl.pending[m.ResponseTo()]
		delete(sl.pending, m.ResponseTo())
		sl.mu.Unlock()
		if p == nil {
			return // the caller stopped waiting
		}
		p.ctr.received(m, len(payload))
		if snap, ok := m.(*session.Snapshot); ok && p.watch != nil {
			p.watch.snapshot(snap)
		}
		p.ch <- m
	case session.Notification:
		sl.mu.Lock()
		s := sl.sessions[m.SessionID()]
		sl.mu.Unlock()
		if s == nil {
			return // closed meanwhile
		}
		s.counterOn(sl).received(m, len(payload))
		switch m := m.(type) {
		case *session.Event:
			s.onEvent(m)
		case *session.EventsLost:
			s.onLost(m.Count)
		case *session.DataChange:
			if sl.direct != nil {
				s.onDirectData(sl.direct, m) // direct.go
			} else {
				s.onData(m)
			}
		case *session.SessionClosed:
			sl.mu.Lock()
			delete(sl.sessions, s.ID)
			sl.mu.Unlock()
			s.end(&SessionEndedError{Session: s.ID, Service: s.service, Reason: "the server ended it: " + m.Reason})
		}
	default:
		if h := sl.runnerHandler(); h != nil && h.handle(m) {
			return
		}
		sl.log.Warn("the server sent a session request; ignored", "kind", m.Kind().String())
	}
}

// onLink runs f with the current session layer (the stream's, or the
// link's), waiting while the client reconnects, and again on the next one
// when the previous was lost before the answer.
func (c *Client) onLink(ctx context.Context, f func(sl *sessLink) error) error {
	for {
		sl, err := c.sessionLayer(ctx)
		if err != nil {
			return err
		}
		err = f(sl)
		if err == nil || !errors.Is(err, ErrConnectionLost) || ctx.Err() != nil {
			return err
		}
		c.log.Info("connection lost during a request; trying again on the next connection", "error", err)
	}
}

// Services lists the services the server hosts, sorted by name.
func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	var out []ServiceInfo
	err := c.onLink(ctx, func(sl *sessLink) error {
		r, err := sl.roundTrip(ctx, "list services", func(id uint64) session.Message { return &session.ListServices{ID: id} }, nil)
		if err != nil {
			return err
		}
		list, ok := r.(*session.ServiceList)
		if !ok {
			return unexpected("list services", r)
		}
		out = make([]ServiceInfo, len(list.Services))
		for i, e := range list.Services {
			out[i] = ServiceInfo{Name: e.Name, Version: e.Version, Description: e.Description, Available: e.Available, Problem: e.Problem, Runner: e.Runner}
		}
		return nil
	})
	return out, err
}

func unexpected(op string, m session.Message) error {
	return &Error{Op: op, Code: session.CodeInternal, Message: fmt.Sprintf("the server answered %v", m.Kind())}
}

// Describe returns the text of a service's service file and its parsed
// model. The model is shared: do not modify it.
func (c *Client) Describe(ctx context.Context, service string) ([]byte, *servicefile.Service, error) {
	var d *described
	err := c.onLink(ctx, func(sl *sessLink) (err error) {
		d, err = sl.describe(ctx, service)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return bytes.Clone(d.xml), d.desc, nil
}

func (sl *sessLink) describe(ctx context.Context, service string) (*described, error) {
	sl.mu.Lock()
	d := sl.descs[service]
	sl.mu.Unlock()
	if d != nil {
		return d, nil
	}
	op := "describe " + service
	r, err := sl.roundTrip(ctx, op, func(id uint64) session.Message { return &session.Describe{ID: id, Service: service} }, nil)
	if err != nil {
		return nil, err
	}
	dm, ok := r.(*session.Description)
	if !ok {
		return nil, unexpected(op, r)
	}
	desc, err := servicefile.Parse(service+" (service file from the server)", dm.XML)
	if err != nil {
		return nil, &Error{Op: op, Code: session.CodeServiceFault, Message: "the service file does not parse: " + err.Error(), Err: err}
	}
	if desc.Name != service {
		return nil, &Error{Op: op, Code: session.CodeServiceFault, Message: fmt.Sprintf("the server described service %q", desc.Name)}
	}
	d = &described{xml: dm.XML, desc: desc}
	sl.mu.Lock()
	if len(sl.descs) < maxCachedDescriptions {
		sl.descs[service] = d
	}
	sl.mu.Unlock()
	return d, nil
}

// StartSession starts a session with a service. The Session lives in the
// client's resume stream (over a datagram bearer: on the current
// connection): see the package documentation for what happens when the
// connection breaks. With Config.StateFile, the session's id and secret
// are kept there while it is open.
func (c *Client) StartSession(ctx context.Context, service string) (*Session, error) {
	var s *Session
	err := c.onLink(ctx, func(sl *sessLink) error {
		d, err := sl.describe(ctx, service)
		if err != nil {
			return err
		}
		op := "start session with " + service
		r, err := sl.roundTrip(ctx, op, func(id uint64) session.Message {
			return &session.StartSession{ID: id, Service: service, Direct: len(c.cfg.LinkBearers) > 0, Bearers: linkTypes(c.cfg.LinkBearers)}
		}, nil)
		if err != nil {
			return err
		}
		st, ok := r.(*session.SessionStarted)
		if !ok {
			return unexpected(op, r)
		}
		doc, err := checkRouting(st, service)
		if err != nil {
			// The server opened a session this client cannot use: close it.
			sl.roundTrip(ctx, op, func(id uint64) session.Message { return &session.CloseSession{ID: id, Session: st.Session} }, nil)
			return &Error{Op: op, Code: session.CodeServiceFault, Message: err.Error(), Err: err}
		}
		s = newSession(c, sl, st.Session, service, d.desc, st.Routing, doc)
		s.setLinkKey(st.Secret) // tags of datagram links (unreliable.go)
		sl.mu.Lock()
		if sl.err != nil {
			err := sl.err
			sl.mu.Unlock()
			return &lostError{op: op, cause: err}
		}
		sl.sessions[s.ID] = s
		sl.mu.Unlock()
		if c.store != nil && len(st.Secret) == session.SecretSize {
			c.store.add(s.ID, service, st.Secret)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.openLinks(ctx); err != nil { // direct.go
		s.Close()
		return nil, err
	}
	return s, nil
}

// Session is a client's session with one service. Its methods are safe for
// concurrent use.
//
// Over a stream bearer a Session lives in the client's resume stream: a
// broken connection does not end it, and its calls, subscriptions and
// watches go on after the client resumed (each request and each answer
// delivered once). It ends when it is closed, when the server ends it, or
// when the stream is lost for good (Err says why). Over a datagram bearer
// it ends with its connection.
type Session struct {
	// ID is the session id the server gave.
	ID string

	service string
	c       *Client
	sl      *sessLink
	desc    *servicefile.Service
	routing []byte
	doc     *routing.Document
	table   *routing.Table

	serverCtr linkCounter // its messages on the server link (direct.go)

	mu      sync.Mutex
	err     error // why the session ended; nil while open
	subs    map[uint64]*subscription
	watches map[uint64]*watchState
	done    chan struct{} // closed when the session ends
	direct  directState   // its direct links (direct.go)

	pumps     sync.WaitGroup
	closeOnce sync.Once
}

// Service is the name of the session's service.
func (s *Session) Service() string { return s.service }

// Description is the service's parsed service file. Do not modify it.
func (s *Session) Description() *servicefile.Service { return s.desc }

// Routing returns the session's routing document (XML). For a service
// hosted inside the server it routes everything over the server link; the
// format is provisional (docs/PROTOCOL.md, "Routing documents").
func (s *Session) Routing() []byte { return bytes.Clone(s.routing) }

// RoutingDocument returns the session's routing document, parsed
// (docs/ROUTING.md). The caller must not change it.
func (s *Session) RoutingDocument() *routing.Document { return s.doc }

// DirectLinks reports whether the session's routing document names direct
// links to the service's runner (LinkStats says which are open).
func (s *Session) DirectLinks() bool {
	for _, l := range s.doc.Links {
		if l.Kind == routing.DirectLink {
			return true
		}
	}
	return false
}

// checkRouting parses the routing document of a session just started with
// service and checks that it is this session's.
func checkRouting(st *session.SessionStarted, service string) (*routing.Document, error) {
	doc, err := routing.Parse("routing document of session "+st.Session, st.Routing)
	if err != nil {
		return nil, fmt.Errorf("the server sent a routing document this client cannot use:\n%w", err)
	}
	if doc.Session != st.Session || doc.Service != service {
		return nil, fmt.Errorf("the server sent the routing document of session %q of service %q for session %q of service %q", doc.Session, doc.Service, st.Session, service)
	}
	return doc, nil
}

// Done is closed when the session ends; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session is open, then a *SessionEndedError.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func newSession(c *Client, sl *sessLink, id, service string, desc *servicefile.Service, routingXML []byte, doc *routing.Document) *Session {
	return &Session{ID: id, service: service, c: c, sl: sl, desc: desc, routing: routingXML, doc: doc, table: routing.NewTable(doc),
		subs: map[uint64]*subscription{}, watches: map[uint64]*watchState{}, done: make(chan struct{})}
}

// end marks the session ended; it reports whether it was open.
func (s *Session) end(err error) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	s.err = err
	s.subs, s.watches = nil, nil
	links := s.direct.takeAll()
	s.mu.Unlock()
	close(s.done)
	for _, dl := range links {
		dl.close()
	}
	if s.c.store != nil {
		s.c.store.remove(s.ID)
	}
	return true
}

// Close ends the session: its subscriptions and watches end (their
// channels are closed), and the server is told, so that its running calls
// are cancelled and the service sees the session close. It waits at most a
// few seconds for the server; a session whose connection is gone has ended
// already. Idempotent; the error is always nil.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		if s.end(&SessionEndedError{Session: s.ID, Service: s.service, Reason: "closed by Close"}) {
			s.sl.mu.Lock()
			if s.sl.sessions != nil {
				delete(s.sl.sessions, s.ID)
			}
			s.sl.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			_, err := s.sl.roundTripOn(ctx, "close session "+s.ID, func(id uint64) session.Message {
				return &session.CloseSession{ID: id, Session: s.ID}
			}, nil, &s.serverCtr)
			cancel()
			if err != nil && !errors.Is(err, ErrConnectionLost) {
				s.c.log.Info("closing a session on the server failed", "session", s.ID, "error", err)
			}
		}
		s.pumps.Wait()
	})
	return nil
}

// Call calls a method of the service. args holds every argument by name, in
// any Go form the services package accepts (an int for an int, a []float64
// for float[], a map[string]any for a struct); they are checked and encoded
// against the service file, and the result is decoded the same way, into
// the canonical representation (nil for a method that returns nothing).
// ctx's deadline travels to the service as the method's deadline; when ctx
// ends first, the call is cancelled on the server.
//
// Errors: *Error (Code says which: session.CodeUnknownMethod,
// CodeInvalidArgument, CodeApplication, CodeUnavailable when the service
// plugin died before it answered, ...); an error wrapping ErrConnectionLost
// when the connection broke before the answer (whether the method ran is
// unknown, and the session has ended); *SessionEndedError after the
// session ended.
func (s *Session) Call(ctx context.Context, method string, args map[string]any) (any, error) {
	op := fmt.Sprintf("call %s.%s", s.service, method)
	if err := s.Err(); err != nil {
		return nil, err
	}
	m := s.desc.Method(method)
	if m == nil {
		return nil, &Error{Op: op, Code: session.CodeUnknownMethod,
			Message: fmt.Sprintf("service %s has no method %q (methods: %s)", s.service, method, methodNames(s.desc))}
	}
	enc, err := services.AppendArgs(nil, m.Args, args)
	if err != nil {
		return nil, &Error{Op: op, Code: session.CodeInvalidArgument, Message: err.Error(), Err: err}
	}
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, fmt.Errorf("%s: %w", op, context.DeadlineExceeded)
		}
	}
	sl, ctr, err := s.callLink(op, method) // direct.go
	if err != nil {
		return nil, err
	}
	r, err := sl.roundTripOn(ctx, op, func(id uint64) session.Message {
		return &session.Call{ID: id, Session: s.ID, Method: method, Timeout: timeout, Args: enc}
	}, nil, ctr)
	if err != nil {
		if errors.Is(err, ErrConnectionLost) {
			if s.sl.stream {
				return nil, fmt.Errorf("%w; the session ended with its stream", err)
			}
			return nil, fmt.Errorf("%w; the session ended with the connection", err)
		}
		return nil, err
	}
	res, ok := r.(*session.Result)
	if !ok {
		return nil, unexpected(op, r)
	}
	if m.Returns == nil {
		if len(res.Value) != 0 {
			return nil, &Error{Op: op, Code: session.CodeServiceFault, Message: fmt.Sprintf("the server answered %d bytes for a method that returns nothing", len(res.Value))}
		}
		return nil, nil
	}
	v, err := services.DecodeValue(m.Returns, res.Value)
	if err != nil {
		return nil, &Error{Op: op, Code: session.CodeServiceFault, Message: "the result does not decode: " + err.Error(), Err: err}
	}
	return v, nil
}

func methodNames(desc *servicefile.Service) string {
	if len(desc.Methods) == 0 {
		return "none"
	}
	names := make([]string, len(desc.Methods))
	for i, m := range desc.Methods {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

func eventNames(desc *servicefile.Service) string {
	if len(desc.Events) == 0 {
		return "none"
	}
	names := make([]string, len(desc.Events))
	for i, e := range desc.Events {
		names[i] = e.Name
	}
	return strings.Join(names, ", ")
}

// addPump registers a pump goroutine with the session and the client
// (whose Close waits for it too), unless the client is closed.
func (s *Session) addPump() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.state == Closed {
		return ErrClosed
	}
	s.pumps.Add(1)
	s.c.wg.Add(1)
	return nil
}

func (s *Session) pumpDone() {
	s.pumps.Done()
	s.c.wg.Done()
}

// Subscribe subscribes to the service's events: those named, or every
// event when none is named. Events arrive on the returned channel, in the
// order the service emitted them, until ctx ends or the session ends; then
// the channel is closed (events not yet received are dropped). A reader
// slower than the events loses some: see Event.Lost.
func (s *Session) Subscribe(ctx context.Context, events ...string) (<-chan Event, error) {
	op := "subscribe to " + s.service + " events"
	if err := s.Err(); err != nil {
		return nil, err
	}
	sub := &subscription{all: len(events) == 0, names: map[string]bool{}, wake: make(chan struct{}, 1), out: make(chan Event)}
	for _, e := range events {
		if s.desc.Event(e) == nil {
			return nil, &Error{Op: op, Code: session.CodeUnknownEvent,
				Message: fmt.Sprintf("service %s has no event %q (events: %s)", s.service, e, eventNames(s.desc))}
		}
		sub.names[e] = true
	}
	if err := s.addPump(); err != nil {
		return nil, err
	}
	// Registered before the request, so that no event after the server's
	// OK is missed; the server sends none before it.
	_, err := s.sl.roundTripOn(ctx, op, func(id uint64) session.Message {
		sub.id = id
		s.mu.Lock()
		if s.subs != nil {
			s.subs[id] = sub
		}
		s.mu.Unlock()
		return &session.Subscribe{ID: id, Session: s.ID, Events: events, All: len(events) == 0}
	}, nil, &s.serverCtr)
	if err != nil {
		s.mu.Lock()
		if s.subs != nil {
			delete(s.subs, sub.id)
		}
		s.mu.Unlock()
		s.pumpDone()
		return nil, err
	}
	go func() {
		defer s.pumpDone()
		sub.run(ctx, s)
	}()
	return sub.out, nil
}

// Watch watches the runtime data at path ("" for the whole tree; dot
// paths, list elements by index). The first DataChange on the returned
// channel is the snapshot of the node; changes at or below it follow,
// coalesced for a slow reader (see DataChange), until ctx ends or the
// session ends; then the channel is closed.
func (s *Session) Watch(ctx context.Context, path string) (<-chan DataChange, error) {
	op := fmt.Sprintf("watch %s runtime data %q", s.service, path)
	if err := s.Err(); err != nil {
		return nil, err
	}
	t, err := typeAt(s.desc.Data.Type, path)
	if err != nil {
		return nil, &Error{Op: op, Code: session.CodeNotFound, Message: err.Error()}
	}
	w := &watchState{path: path, typ: t, wake: make(chan struct{}, 1), out: make(chan DataChange)}
	if err := s.addPump(); err != nil {
		return nil, err
	}
	r, err := s.sl.roundTripOn(ctx, op, func(id uint64) session.Message {
		w.id = id
		s.mu.Lock()
		if s.watches != nil {
			s.watches[id] = w
		}
		s.mu.Unlock()
		return &session.Watch{ID: id, Session: s.ID, Path: path}
	}, w, &s.serverCtr)
	if err == nil {
		snap, ok := r.(*session.Snapshot)
		switch {
		case !ok:
			err = unexpected(op, r)
		case !w.started():
			_, derr := services.DecodeValue(t, snap.Value)
			err = &Error{Op: op, Code: session.CodeServiceFault, Message: fmt.Sprintf("the snapshot does not decode as %s: %v", t, derr), Err: derr}
		}
		if err != nil {
			s.stopRemote(w.id)
		}
	}
	if err != nil {
		s.mu.Lock()
		if s.watches != nil {
			delete(s.watches, w.id)
		}
		s.mu.Unlock()
		s.pumpDone()
		return nil, err
	}
	s.applyDirect(w) // values that came on direct links (direct.go)
	go func() {
		defer s.pumpDone()
		w.run(ctx, s)
	}()
	return w.out, nil
}

// stopRemote tells the server that a subscription or watch ended, unless
// the session has.
func (s *Session) stopRemote(id uint64) {
	s.mu.Lock()
	open := s.err == nil
	if open {
		delete(s.subs, id)
		delete(s.watches, id)
	}
	s.mu.Unlock()
	if !open {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	// The answer is not needed; waiting for it bounds the write.
	s.sl.roundTripOn(ctx, "stop", func(rid uint64) session.Message { return &session.Stop{ID: rid, Session: s.ID, Target: id} }, nil, &s.serverCtr)
}

func (s *Session) onEvent(m *session.Event) {
	ev := s.desc.Event(m.Name)
	if ev == nil {
		s.sl.log.Warn("the server sent an event the service file does not declare; dropped", "event", m.Name)
		return
	}
	args, err := services.DecodeArgs(ev.Args, m.Args)
	if err != nil {
		s.sl.log.Warn("the server sent an event whose arguments do not decode; dropped", "event", m.Name, "error", err)
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	first := true
	for _, sub := range s.subs {
		if sub.all || sub.names[m.Name] {
			a := args
			if !first {
				a = deepCopy(args).(map[string]any)
			}
			first = false
			sub.push(Event{Name: m.Name, Args: a, Time: now})
		}
	}
}

func (s *Session) onLost(n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		sub.lose(n)
	}
}

func (s *Session) onData(m *session.DataChange) {
	s.mu.Lock()
	w := s.watches[m.Watch]
	s.mu.Unlock()
	if w == nil {
		return
	}
	if err := w.change(m.Path, m.Value); err != nil {
		s.sl.log.Warn("the server sent a runtime-data change that does not fit; dropped", "path", m.Path, "error", err)
		return
	}
	s.reapplyDirect(w, m.Path) // what came directly below it is newer (direct.go)
}
