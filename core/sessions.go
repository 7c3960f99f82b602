package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// The session layer of a registered connection (docs/PROTOCOL.md,
// "Sessions"): requests arrive in Data frames on session.Channel, are
// answered on the same channel, and the server pushes events and
// runtime-data changes of the connection's sessions there.
//
// Concurrency. The connection's reader goroutine decodes every request and
// answers the quick ones itself; StartSession and Call run in a goroutine
// each (at most maxRunning at once; one more is answered CodeOverloaded).
// One writer goroutine per connection writes everything: the answers first,
// then, per session that has output, its queued events and its watches'
// changes. Nothing the plugin stream's reader does (OnEvent, OnData) ever
// waits for a client:
//
//   - events go to a bounded queue per session (maxEventQueue); when it is
//     full, further events of that session are dropped and counted, and the
//     client gets an EventsLost notification at the place of the gap;
//   - runtime-data changes are coalesced per watch: the watch remembers
//     which paths changed (at most maxPendingPaths, then only "the whole
//     watched node changed"), and the writer reads their current values
//     from the service's data tree when it sends them. A slow watcher gets
//     the latest value of a path, not every value it had.
//
// Answers wait in a queue bounded in bytes (maxQueuedBytes); when the
// client does not read them, the reader stops reading requests
// (backpressure on this connection only). A write that does not finish
// within sessionWriteTimeout closes the connection.
const (
	maxSessionsPerConn   = 1024
	maxRunning           = 512 // calls and session opens running per connection
	maxQueuedBytes       = 4 << 20
	maxEventQueue        = 256
	maxSubscriptions     = 64 // per session
	maxWatches           = 64 // per session
	maxPendingPaths      = 64 // per watch
	sessionWriteTimeout  = 30 * time.Second
	sessionOpenTimeout   = 30 * time.Second
	sessionClosedOnClose = "the client's connection ended"
)

// SessionInfo describes an open session, for GET /sessions.
type SessionInfo struct {
	ID            string    `json:"id"`
	Service       string    `json:"service"`
	ClientID      string    `json:"clientId"`
	ClientName    string    `json:"clientName,omitempty"`
	Adapter       string    `json:"adapter"`
	Since         time.Time `json:"since"`
	Calls         uint64    `json:"calls"`
	Subscriptions int       `json:"subscriptions"`
	Watches       int       `json:"watches"`
	// Stream is the id of the client's resume stream that carries the
	// session; empty for a session on a connection without resume.
	Stream string `json:"stream,omitempty"`
	// Detached is true while the stream has no connection: the session
	// waits for its client to come back (within the linger window).
	Detached bool `json:"detached,omitempty"`
	// ServerLink counts the session's messages on the server link; its
	// direct links bypass the server (docs/REMOTE.md, "Direct links").
	ServerLink LinkCounters `json:"serverLink"`
}

// sessionSet is a hosted service's open sessions, for the fan-out of its
// events and runtime data.
type sessionSet struct {
	mu sync.RWMutex
	m  map[string]*clientSession
}

func (ss *sessionSet) add(s *clientSession) {
	ss.mu.Lock()
	if ss.m == nil {
		ss.m = map[string]*clientSession{}
	}
	ss.m[s.id] = s
	ss.mu.Unlock()
}

func (ss *sessionSet) remove(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

func (ss *sessionSet) get(id string) *clientSession {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	return ss.m[id]
}

// fanOutEvent hands an event to the sessions it is for (all of them when
// SessionID is empty) that subscribed to it. It never waits.
func (hs *hostedService) fanOutEvent(e serviceplugin.Event) {
	hs.sess.mu.RLock()
	defer hs.sess.mu.RUnlock()
	if e.SessionID != "" {
		if s := hs.sess.m[e.SessionID]; s != nil {
			s.event(e)
		}
		return
	}
	for _, s := range hs.sess.m {
		s.event(e)
	}
}

// fanOutData tells every watch whose path is under, or above, the changed
// path. The caller holds hs.mu (the tree already has the new value). It
// never waits.
func (hs *hostedService) fanOutData(path string) {
	hs.sess.mu.RLock()
	defer hs.sess.mu.RUnlock()
	for _, s := range hs.sess.m {
		s.dataChanged(path)
	}
}

// onSessionLost ends a session the restarted plugin refused to reopen.
func (hs *hostedService) onSessionLost(id string, err error) {
	if s := hs.sess.get(id); s != nil {
		s.owner().endSession(s, "the service plugin restarted and did not reopen the session: "+err.Error(), true)
	}
}

// Sessions lists the open sessions, by service then start time.
func (s *Server) Sessions() []SessionInfo {
	var out []SessionInfo
	for _, hs := range s.allServices() {
		hs.sess.mu.RLock()
		for _, cs := range hs.sess.m {
			out = append(out, cs.info())
		}
		hs.sess.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// sessionTransport carries a session layer's messages: a registered
// connection (clientConn), or a client's resume stream (streamClient,
// streams.go) that outlives its connections.
type sessionTransport interface {
	// writeSession writes one session message, blocking while the
	// transport pushes back; an error ends the session layer's output.
	writeSession(ctx context.Context, b []byte) error
	// abort stops the transport at once (after a failed write).
	abort()
	// principal is who the client is, for policies.
	principal() principal
	// peer names the client and the adapter of its connection ("" while a
	// stream has none).
	peer() (name, adapter string)
}

// connSessions is the session layer of one registered connection, or of
// one client's resume stream.
type connSessions struct {
	tr       sessionTransport
	stream   *streamClient // nil on a connection without resume
	clientID uuid.UUID
	s        *Server
	log      *slog.Logger
	limit    int // the largest message the client accepts

	ctx    context.Context // ends with the connection
	cancel context.CancelFunc
	wg     sync.WaitGroup // the writer and the request goroutines

	running atomic.Int32
	warn    rateLimit

	runner atomic.Pointer[runnerLink] // set once the client provides a service (remote.go)

	mu       sync.Mutex
	closed   bool
	opening  int
	sessions map[string]*clientSession
	calls    map[uint64]context.CancelCauseFunc // running calls by request id

	omu       sync.Mutex
	ocond     *sync.Cond // signalled when answers leave the queue or output stops
	outClosed bool
	answers   [][]byte
	queued    int // bytes in answers
	ready     []*clientSession
	wake      chan struct{}
}

// sessionLayer returns the connection's session layer, created on first use.
// Only the connection's reader goroutine calls it.
func (c *clientConn) sessionLayer() *connSessions {
	if c.sessions != nil {
		return c.sessions
	}
	limit := wire.DefaultMaxPayload
	if c.peerMaxPayload > 0 {
		limit = c.peerMaxPayload
	}
	if c.adapter.sup.Status().Capabilities.Has(bearers.Datagram) {
		limit = min(limit, wire.MaxDatagramPayload)
	}
	limit = min(limit, wire.DefaultMaxPayload) // what our own writer sends
	c.sessions = newConnSessions(c.s, c, nil, c.clientID, c.log, limit)
	return c.sessions
}

// conn returns the connection carrying the session layer now: the
// registered connection, or the one its stream rides on; nil while a
// stream has none.
func (cs *connSessions) conn() *clientConn {
	if cs.stream != nil {
		cs.stream.mu.Lock()
		defer cs.stream.mu.Unlock()
		return cs.stream.conn
	}
	c, _ := cs.tr.(*clientConn)
	return c
}

// remoteAddr is the client's address now, "" while it has no connection.
func (cs *connSessions) remoteAddr() string {
	if c := cs.conn(); c != nil {
		return c.bc.RemoteAddr().String()
	}
	return ""
}

// bearerType is the bearer type of the client's connection now, "" while
// it has none.
func (cs *connSessions) bearerType() string {
	if c := cs.conn(); c != nil {
		return c.adapter.cfg.Type
	}
	return ""
}

// newConnSessions starts a session layer (its writer goroutine) over tr.
func newConnSessions(srv *Server, tr sessionTransport, st *streamClient, clientID uuid.UUID, log *slog.Logger, limit int) *connSessions {
	cs := &connSessions{tr: tr, stream: st, clientID: clientID, s: srv, log: log, limit: limit,
		sessions: map[string]*clientSession{}, calls: map[uint64]context.CancelCauseFunc{}, wake: make(chan struct{}, 1)}
	cs.ocond = sync.NewCond(&cs.omu)
	cs.ctx, cs.cancel = context.WithCancel(srv.ctx)
	context.AfterFunc(cs.ctx, cs.stopOutput)
	cs.wg.Add(1)
	go cs.writer()
	return cs
}

// closeSessions ends the connection's session layer (see shutdown).
func (c *clientConn) closeSessions() {
	if c.sessions != nil {
		c.sessions.shutdown(sessionClosedOnClose)
	}
}

// shutdown ends the session layer: every session is closed with the
// service (with reason), running calls are cancelled, and every goroutine
// has returned when it returns. The transport is stopped first, so that a
// write blocked on a client that stopped reading ends too.
func (cs *connSessions) shutdown(reason string) {
	cs.cancel()
	cs.endRunner() // its remote services become unavailable (remote.go)
	cs.tr.abort()
	cs.mu.Lock()
	cs.closed = true
	list := make([]*clientSession, 0, len(cs.sessions))
	for _, s := range cs.sessions {
		list = append(list, s)
	}
	cs.mu.Unlock()
	for _, s := range list {
		cs.endSession(s, reason, false)
	}
	cs.wg.Wait()
}

// stopOutput makes every waiting and later answer a no-op.
func (cs *connSessions) stopOutput() {
	cs.omu.Lock()
	cs.outClosed = true
	cs.answers, cs.ready, cs.queued = nil, nil, 0
	cs.ocond.Broadcast()
	cs.omu.Unlock()
}

// rateLimit lets one log line through per second.
type rateLimit struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

func (r *rateLimit) allow() (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < time.Second {
		r.n++
		return 0, false
	}
	suppressed, r.n, r.last = r.n, 0, time.Now()
	return suppressed, true
}

func (cs *connSessions) warnf(msg string, args ...any) {
	if n, ok := cs.warn.allow(); ok {
		if n > 0 {
			args = append(args, "suppressed", n)
		}
		cs.log.Warn(msg, args...)
	}
}

// handle decodes and dispatches one session message. payload is valid only
// during the call. It runs on the connection's reader goroutine.
func (cs *connSessions) handle(payload []byte) {
	m, err := session.Decode(payload)
	if err != nil {
		var de *session.DecodeError
		if errors.As(err, &de) && de.ID != 0 && de.Kind.IsRequest() {
			code := session.CodeBadRequest
			if errors.Is(err, session.ErrUnknownKind) {
				code = session.CodeUnsupported
			}
			cs.answer(session.NewError(de.ID, code, err.Error()))
		}
		cs.runnerDecodeError(de) // an answer of a runner that does not decode (remote.go)
		cs.warnf("bad session message from the client; ignored", "error", err)
		return
	}
	cs.countIn(m, len(payload)) // direct.go
	switch m := m.(type) {
	case *session.ListServices:
		cs.answer(cs.listServices(m))
	case *session.Describe: // may wait for a starting service
		cs.spawn(m.ID, func() session.Message { return cs.describe(m) })
	case *session.StartSession:
		cs.spawn(m.ID, func() session.Message { return cs.startSession(m) })
	case *session.CloseSession:
		cs.answer(cs.closeSession(m))
	case *session.Call:
		cs.call(m)
	case *session.Subscribe:
		cs.answerFor(cs.lookup(m.Session), countOther, cs.subscribe(m))
	case *session.Watch:
		cs.watch(m)
	case *session.Stop:
		cs.answerFor(cs.lookup(m.Session), countOther, cs.stop(m))
	case *session.LinksDown:
		cs.linksDown(m) // direct.go
	case *session.LinkOpen:
		cs.answer(session.NewError(m.ID, session.CodeBadRequest, "LinkOpen opens a direct link to a service's runner: send it on the link, at the address of the routing document, not to the server"))
	case *session.Cancel:
		cs.mu.Lock()
		cancel := cs.calls[m.Target]
		cs.mu.Unlock()
		if cancel != nil {
			cancel(errors.New("the client cancelled the call"))
		}
	case *session.ProvideService:
		cs.spawn(m.ID, func() session.Message { return cs.provide(m) }) // remote.go
	case session.Response, session.RunnerNotification:
		cs.fromRunner(m) // remote.go
	case *session.Reclaim:
		cs.answer(cs.reclaim(m)) // on the reader: it comes first, before any other request
	default:
		cs.warnf("the client sent a session message only a server sends; ignored", "kind", m.Kind().String())
	}
}

// spawn runs a request in its own goroutine and answers its result, or
// answers CodeOverloaded when too many run already (and returns false).
func (cs *connSessions) spawn(id uint64, run func() session.Message) bool {
	return cs.spawnFor(nil, id, run)
}

// spawnFor is spawn for a call of session s (nil: none), whose answer it
// counts.
func (cs *connSessions) spawnFor(s *clientSession, id uint64, run func() session.Message) bool {
	if cs.running.Add(1) > maxRunning {
		cs.running.Add(-1)
		cs.answerFor(s, countCall, session.NewError(id, session.CodeOverloaded,
			fmt.Sprintf("too many calls in progress on this connection (limit %d); try again when some have finished", maxRunning)))
		return false
	}
	cs.wg.Add(1)
	go func() {
		defer cs.wg.Done()
		defer cs.running.Add(-1)
		cs.answerFor(s, countCall, run())
	}()
	return true
}

// lookup finds an open session of this connection, or nil.
func (cs *connSessions) lookup(sid string) *clientSession {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.sessions[sid]
}

// answer queues a response for the writer. It waits while the queue is
// full (the client does not read), and drops the answer once output has
// stopped. It returns the bytes queued (0: dropped).
func (cs *connSessions) answer(m session.Message) int {
	b, err := session.Encode(m)
	if err != nil {
		cs.log.Error("internal: a session answer does not encode", "kind", m.Kind().String(), "error", err)
		r, ok := m.(session.Response)
		if !ok {
			return 0
		}
		b, _ = session.Encode(session.NewError(r.ResponseTo(), session.CodeInternal, "the server could not encode its answer: "+err.Error()))
	}
	if len(b) > cs.limit {
		r := m.(session.Response)
		b, _ = session.Encode(session.NewError(r.ResponseTo(), session.CodeTooLarge,
			fmt.Sprintf("the answer takes %d bytes, more than the connection carries in one message (%d)", len(b), cs.limit)))
	}
	cs.omu.Lock()
	for cs.queued > 0 && cs.queued+len(b) > maxQueuedBytes && !cs.outClosed {
		cs.ocond.Wait()
	}
	if cs.outClosed {
		cs.omu.Unlock()
		return 0
	}
	cs.answers = append(cs.answers, b)
	cs.queued += len(b)
	cs.signal()
	cs.omu.Unlock()
	return len(b)
}

// signal wakes the writer; the caller holds omu.
func (cs *connSessions) signal() {
	select {
	case cs.wake <- struct{}{}:
	default:
	}
}

// markReady puts s on the writer's list; the caller holds s.mu.
func (cs *connSessions) markReady(s *clientSession) {
	if s.dirty {
		return
	}
	s.dirty = true
	cs.omu.Lock()
	if !cs.outClosed {
		cs.ready = append(cs.ready, s)
		cs.signal()
	}
	cs.omu.Unlock()
}

// writer writes answers, then the sessions' notifications, until the
// connection ends.
func (cs *connSessions) writer() {
	defer cs.wg.Done()
	var buf [][]byte
	for {
		select {
		case <-cs.ctx.Done():
			return
		case <-cs.wake:
		}
		for {
			// Answers and ready sessions are taken together, so an
			// answer queued before a session became ready (a Watch's
			// Snapshot before its first change) is written first.
			cs.omu.Lock()
			answers, ready := cs.answers, cs.ready
			cs.answers, cs.ready, cs.queued = nil, nil, 0
			cs.ocond.Broadcast()
			cs.omu.Unlock()
			if len(answers) == 0 && len(ready) == 0 {
				break
			}
			for _, b := range answers {
				if !cs.write(b) {
					return
				}
			}
			for _, s := range ready {
				buf = s.drain(buf[:0])
				for _, b := range buf {
					if !cs.write(b) {
						return
					}
				}
			}
			clear(buf)
		}
	}
}

// write writes one message through the transport. A failed write ends the
// session layer's output and stops the transport.
func (cs *connSessions) write(b []byte) bool {
	if err := cs.tr.writeSession(cs.ctx, b); err != nil {
		if cs.ctx.Err() == nil {
			cs.log.Info("writing a session message failed; the session layer's output ends", "error", err)
		}
		cs.stopOutput()
		cs.tr.abort()
		return false
	}
	return true
}

// writeSession writes one session message on the connection; a write that
// takes longer than sessionWriteTimeout (a client that stopped reading)
// closes the connection.
func (c *clientConn) writeSession(_ context.Context, b []byte) error {
	t := time.AfterFunc(sessionWriteTimeout, func() {
		c.log.Warn("the client has not read its session messages for a while; closing the connection", "after", sessionWriteTimeout)
		c.close()
	})
	defer t.Stop()
	return c.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b})
}

func (c *clientConn) abort() { c.close() }

func (c *clientConn) peer() (string, string) { return c.name, c.adapter.cfg.Name }

// service finds a hosted service that can take requests now.
func (cs *connSessions) service(id uint64, name string) (*hostedService, serviceBackend, *session.Error) {
	hs := cs.s.lookupService(name)
	if hs == nil {
		return nil, nil, session.NewError(id, session.CodeUnknownService,
			fmt.Sprintf("no service %q on this server (services: %s)", name, cs.s.serviceNames()))
	}
	p, _, failed := hs.available(cs.ctx, cs.s.startWait())
	if p == nil {
		return nil, nil, session.NewError(id, session.CodeUnavailable, fmt.Sprintf("service %s is unavailable: %s", name, failed))
	}
	return hs, p, nil
}

func (s *Server) serviceNames() string {
	all := s.allServices()
	names := make([]string, 0, len(all))
	for _, hs := range all {
		names = append(names, hs.cfg.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (cs *connSessions) listServices(m *session.ListServices) session.Message {
	out := &session.ServiceList{ID: m.ID}
	for _, si := range cs.s.Services() {
		e := session.ServiceEntry{Name: si.Name, Version: si.Version, Problem: session.CutText(si.Error, session.MaxText)}
		if si.Remote != nil {
			e.Runner = session.CutText(si.Remote.Runner, session.MaxText)
		}
		if hs := cs.s.lookupService(si.Name); hs != nil {
			if p, desc, _ := hs.current(); p != nil {
				e.Available = true
				e.Description = session.CutText(desc.Description, session.MaxText)
				if st := p.Status(); st.State != pluginhost.StateRunning {
					e.Problem = session.CutText(fmt.Sprintf("%s: %s", st.State, st.LastError), session.MaxText)
				}
			}
		}
		out.Services = append(out.Services, e)
	}
	return out
}

func (cs *connSessions) describe(m *session.Describe) session.Message {
	if xml := cs.s.remoteXML(m.Service); xml != nil { // known even while its runner is away (remote.go)
		return &session.Description{ID: m.ID, XML: xml}
	}
	_, p, e := cs.service(m.ID, m.Service)
	if e != nil {
		return e
	}
	return &session.Description{ID: m.ID, XML: p.ServiceXML()}
}

// serverRouting is the routing document of a session with a service inside
// the server: everything goes over the server link (docs/ROUTING.md).
func serverRouting(sessionID, service string) ([]byte, error) {
	return routing.Generate(&routing.Document{Session: sessionID, Service: service,
		Links: []routing.Link{{Name: routing.ServerLinkName, Kind: routing.ServerLink}}})
}

func (cs *connSessions) startSession(m *session.StartSession) session.Message {
	hs, p, e := cs.service(m.ID, m.Service)
	if e != nil {
		return e
	}
	if err := cs.s.authorize(cs.tr.principal(), hs, ""); err != nil {
		return session.NewError(m.ID, session.CodeDenied, err.Error())
	}
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return session.NewError(m.ID, session.CodeCanceled, "the connection is closing")
	}
	if len(cs.sessions)+cs.opening >= maxSessionsPerConn {
		cs.mu.Unlock()
		return session.NewError(m.ID, session.CodeOverloaded, fmt.Sprintf("too many sessions on this connection (limit %d)", maxSessionsPerConn))
	}
	cs.opening++
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		cs.opening--
		cs.mu.Unlock()
	}()

	id := uuid.NewString()
	var secret []byte
	if cs.stream != nil {
		// Only a session on a resume stream outlives its connection, so
		// only it can be reclaimed after a client restart.
		secret = newSecret()
	}
	doc, d, e := cs.sessionRouting(m, hs, id) // remote.go
	if e != nil {
		return e
	}
	hs.setLinkKey(id, secret)             // unreliable.go: before the runner's RemoteOpen
	cs.s.relayUDPRegister(hs, id, secret) // relay_udp_server.go
	ctx, cancel := context.WithTimeout(cs.ctx, sessionOpenTimeout)
	err := p.OpenSession(ctx, serviceplugin.SessionInfo{ID: id, ClientID: cs.clientID.String()})
	cancel()
	if err != nil {
		code, msg := callErrorCode(err)
		var se *serviceplugin.Error
		if errors.As(err, &se) && se.Code == serviceplugin.CodeApplication {
			code, msg = session.CodeRefused, fmt.Sprintf("service %s refused the session: %s", hs.cfg.Name, se.Message)
		}
		return session.NewError(m.ID, code, msg)
	}
	if cs.addSession(hs, id, secret, newSessionRoutes(d)) == nil {
		p.CloseSession(id, sessionClosedOnClose)
		return session.NewError(m.ID, session.CodeCanceled, "the connection is closing")
	}
	cs.log.Info("session started", "service", hs.cfg.Name, "session", id)
	return &session.SessionStarted{ID: m.ID, Session: id, Routing: doc, Secret: secret}
}

// addSession records a session the service accepted, with its reclaim
// secret (nil without a resume stream) and what the server knows of its
// direct links (nil: it has none); nil when the connection closed
// meanwhile.
func (cs *connSessions) addSession(hs *hostedService, id string, secret []byte, routes *sessionRoutes) *clientSession {
	sctx, scancel := context.WithCancelCause(cs.ctx)
	s := &clientSession{id: id, hs: hs, cs: cs, since: time.Now(), ctx: sctx, cancel: scancel, secret: secret, routes: routes,
		subs: map[uint64]eventFilter{}, watches: map[uint64]*watch{}}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		scancel(errors.New(sessionClosedOnClose))
		return nil
	}
	cs.sessions[id] = s
	hs.sess.add(s) // under cs.mu, so that closeSessions finds it in both places
	return s
}

// session finds an open session of this connection.
func (cs *connSessions) session(id uint64, sid string) (*clientSession, *session.Error) {
	cs.mu.Lock()
	s := cs.sessions[sid]
	cs.mu.Unlock()
	if s == nil {
		if cs.stream != nil {
			return nil, session.NewError(id, session.CodeUnknownSession,
				fmt.Sprintf("no session %q on this client's stream (closed, expired, or started on another stream)", sid))
		}
		return nil, session.NewError(id, session.CodeUnknownSession,
			fmt.Sprintf("no session %q on this connection (closed, or started on an earlier connection: sessions end with the connection that started them)", sid))
	}
	s.requests.Add(1)
	s.lastRequest.Store(id)
	if cs.s.diag.on {
		s.msgsIn.Add(1)
	}
	return s, nil
}

func (cs *connSessions) closeSession(m *session.CloseSession) session.Message {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		return e
	}
	cs.endSession(s, "closed by the client", false)
	return &session.OK{ID: m.ID}
}

// endSession ends a session: with the service, for its running calls and
// its subscriptions and watches. With notify, the client is told why.
// Idempotent. A session that can be reclaimed leaves a tombstone, so that
// a client that comes back for it learns how it ended (reclaim.go).
func (cs *connSessions) endSession(s *clientSession, reason string, notify bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	cs = s.cs // the session's layer now (a reclaim may have moved it)
	s.subs, s.watches, s.queue, s.lost = nil, nil, nil, 0
	if notify {
		s.closedNote = reason
		cs.markReady(s)
	}
	cancel := s.cancel
	s.mu.Unlock()
	cancel(errors.New("session closed: " + reason))
	cs.mu.Lock()
	delete(cs.sessions, s.id)
	s.hs.sess.remove(s.id)
	cs.mu.Unlock()
	if s.secret != nil {
		cs.s.tombs.bury(s, cs.clientID, reason)
	}
	if p, _, _ := s.hs.current(); p != nil {
		p.CloseSession(s.id, reason)
	}
	cs.log.Info("session ended", "service", s.hs.cfg.Name, "session", s.id, "reason", reason)
}

func (cs *connSessions) call(m *session.Call) {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		cs.answer(e)
		return
	}
	_, desc, _ := s.hs.current()
	if desc == nil || desc.Method(m.Method) == nil {
		cs.answerFor(s, countCall, session.NewError(m.ID, session.CodeUnknownMethod,
			fmt.Sprintf("service %s has no method %q (methods: %s)", s.hs.cfg.Name, m.Method, methodList(desc))))
		return
	}
	if err := cs.s.authorize(cs.tr.principal(), s.hs, m.Method); err != nil {
		cs.answerFor(s, countCall, session.NewError(m.ID, session.CodeDenied, err.Error()))
		return
	}
	cs.mu.Lock()
	if _, dup := cs.calls[m.ID]; dup {
		cs.mu.Unlock()
		cs.answerFor(s, countCall, session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("request id %d is already used by a running call", m.ID)))
		return
	}
	ctx, cancel := context.WithCancelCause(s.context())
	cs.calls[m.ID] = cancel
	cs.mu.Unlock()
	done := func() {
		cs.mu.Lock()
		delete(cs.calls, m.ID)
		cs.mu.Unlock()
		cancel(nil)
	}
	if m.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, m.Timeout)
		prev := done
		done = func() { stop(); prev() }
	}
	if !cs.spawnFor(s, m.ID, func() session.Message {
		defer done()
		return cs.invoke(ctx, s, m)
	}) {
		done()
	}
}

func (cs *connSessions) invoke(ctx context.Context, s *clientSession, m *session.Call) session.Message {
	hs := s.hs
	p, _, failed := hs.current()
	if p == nil {
		return session.NewError(m.ID, session.CodeUnavailable, fmt.Sprintf("service %s is unavailable: %s", hs.cfg.Name, failed))
	}
	hs.calls.Add(1)
	s.calls.Add(1)
	var start time.Time
	if cs.s.diag.on {
		start = time.Now()
	}
	res, err := p.Call(ctx, s.id, m.Method, m.Args)
	if cs.s.diag.on {
		hs.lat.Record(time.Since(start))
		s.msgsOut.Add(1)
	}
	if err != nil {
		hs.errors.Add(1)
		code, msg := callErrorCode(err)
		return session.NewError(m.ID, code, msg)
	}
	return &session.Result{ID: m.ID, Value: res}
}

// callErrorCode maps a failed plugin call (or session open) to a session
// error code and message.
func callErrorCode(err error) (session.Code, string) {
	msg := err.Error()
	var se *serviceplugin.Error
	if errors.As(err, &se) {
		switch se.Code {
		case serviceplugin.CodeApplication:
			return session.CodeApplication, msg
		case serviceplugin.CodeInvalidArgument:
			return session.CodeInvalidArgument, msg
		case serviceplugin.CodeUnknownMethod:
			return session.CodeUnknownMethod, msg
		case serviceplugin.CodePanic, serviceplugin.CodeBadResult:
			return session.CodeServiceFault, msg
		case serviceplugin.CodeDeadlineExceeded:
			return session.CodeDeadlineExceeded, msg
		case serviceplugin.CodeCanceled:
			return session.CodeCanceled, msg
		case serviceplugin.CodeNoSession:
			return session.CodeUnknownSession, msg
		case serviceplugin.CodeOverloaded:
			return session.CodeOverloaded, msg
		}
		return session.CodeApplication, msg
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return session.CodeDeadlineExceeded, msg
	case errors.Is(err, context.Canceled):
		return session.CodeCanceled, msg
	case errors.Is(err, serviceplugin.ErrProtocol):
		return session.CodeServiceFault, msg
	case errors.Is(err, serviceplugin.ErrTooManyCalls):
		return session.CodeOverloaded, msg
	}
	return session.CodeUnavailable, msg // the plugin died, is restarting, or was closed
}

func (cs *connSessions) subscribe(m *session.Subscribe) session.Message {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		return e
	}
	f := eventFilter{all: m.All}
	if !m.All {
		_, desc, _ := s.hs.current()
		f.names = make(map[string]struct{}, len(m.Events))
		for _, name := range m.Events {
			if desc == nil || desc.Event(name) == nil {
				return session.NewError(m.ID, session.CodeUnknownEvent,
					fmt.Sprintf("service %s has no event %q (events: %s)", s.hs.cfg.Name, name, eventList(desc)))
			}
			f.names[name] = struct{}{}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return session.NewError(m.ID, session.CodeUnknownSession, fmt.Sprintf("session %q is closed", s.id))
	case len(s.subs) >= maxSubscriptions:
		return session.NewError(m.ID, session.CodeOverloaded, fmt.Sprintf("too many subscriptions in session %s (limit %d)", s.id, maxSubscriptions))
	case s.uses(m.ID):
		return session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("request id %d already names a subscription or watch of this session", m.ID))
	}
	s.subs[m.ID] = f
	return &session.OK{ID: m.ID}
}

// watch answers a Watch with the snapshot; the watch's changes follow it.
func (cs *connSessions) watch(m *session.Watch) {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		cs.answer(e)
		return
	}
	hs := s.hs
	var w *watch
	fail := func(code session.Code, msg string) {
		cs.answer(session.NewError(m.ID, code, msg))
	}
	hs.mu.Lock()
	if hs.data == nil {
		hs.mu.Unlock()
		fail(session.CodeUnavailable, fmt.Sprintf("service %s has not published its runtime data yet", hs.cfg.Name))
		return
	}
	t, v, err := hs.data.Lookup(m.Path)
	var enc []byte
	if err == nil {
		enc, err = services.AppendValue(nil, t, v)
	}
	if err != nil {
		hs.mu.Unlock()
		fail(session.CodeNotFound, fmt.Sprintf("service %s runtime data: %v", hs.cfg.Name, err))
		return
	}
	// Registered under hs.mu, so that no change falls between the
	// snapshot and the watch; muted until the snapshot is queued.
	s.mu.Lock()
	switch {
	case s.closed:
		err = fmt.Errorf("session %q is closed", s.id)
	case len(s.watches) >= maxWatches:
		err = fmt.Errorf("too many watches in session %s (limit %d)", s.id, maxWatches)
	case s.uses(m.ID):
		err = fmt.Errorf("request id %d already names a subscription or watch of this session", m.ID)
	default:
		w = &watch{id: m.ID, path: m.Path, muted: true}
		s.watches[m.ID] = w
	}
	s.mu.Unlock()
	hs.mu.Unlock()
	if w == nil {
		fail(session.CodeBadRequest, err.Error())
		return
	}
	snap := &session.Snapshot{ID: m.ID, Path: m.Path, Value: enc}
	if n := len(enc) + len(m.Path) + 32; n > cs.limit {
		s.mu.Lock()
		delete(s.watches, m.ID)
		s.mu.Unlock()
		fail(session.CodeTooLarge, fmt.Sprintf("the runtime data at %q takes %d bytes, more than the connection carries in one message (%d); watch a path below it", m.Path, len(enc), cs.limit))
		return
	}
	cs.answerFor(s, countData, snap)
	s.mu.Lock()
	w.muted = false
	if len(w.pending) > 0 && !s.closed {
		cs.markReady(s)
	}
	s.mu.Unlock()
}

func (cs *connSessions) stop(m *session.Stop) session.Message {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[m.Target]; ok {
		delete(s.subs, m.Target)
		return &session.OK{ID: m.ID}
	}
	if s.watches[m.Target] != nil {
		delete(s.watches, m.Target)
		return &session.OK{ID: m.ID}
	}
	return session.NewError(m.ID, session.CodeNotFound, fmt.Sprintf("no subscription or watch %d in session %s", m.Target, s.id))
}

// clientSession is one session a client started on this connection or
// stream.
type clientSession struct {
	id     string
	hs     *hostedService
	since  time.Time
	secret []byte // reclaim secret; nil on a connection without resume
	calls  atomic.Uint64
	// requests and lastRequest count the requests received for the
	// session and remember the last one's id (reported by a reclaim that
	// comes too late).
	requests    atomic.Uint64
	lastRequest atomic.Uint64
	// Messages of the session: requests naming it, and results and
	// notifications for it (counted with diagnostics on).
	msgsIn, msgsOut atomic.Uint64
	routes          *sessionRoutes // its direct links, nil when it has none (direct.go)
	link            linkCounters   // its messages on the server link (direct.go)

	mu         sync.Mutex
	cs         *connSessions           // the layer that carries it; a reclaim moves it
	ctx        context.Context         // ends with the session (or its move); calls derive from it
	cancel     context.CancelCauseFunc // of ctx
	closed     bool
	closedNote string // a SessionClosed to send
	dirty      bool   // on the writer's ready list
	subs       map[uint64]eventFilter
	watches    map[uint64]*watch
	queue      []queuedEvent
	lost       uint64 // events dropped since the last queued one
}

type eventFilter struct {
	all   bool
	names map[string]struct{}
}

// queuedEvent is an event waiting for the writer, or (lost > 0) the place
// where lost events were dropped.
type queuedEvent struct {
	name string
	args []byte
	lost uint64
}

// watch is one Watch of a session: the paths that changed since the writer
// last sent them (their values are read when sent).
type watch struct {
	id      uint64
	path    string
	muted   bool // until the Snapshot is queued
	pending []string
}

func (s *clientSession) info() SessionInfo {
	s.mu.Lock()
	subs, watches, cs := len(s.subs), len(s.watches), s.cs
	s.mu.Unlock()
	name, adapter := cs.tr.peer()
	si := SessionInfo{ID: s.id, Service: s.hs.cfg.Name, ClientID: cs.clientID.String(), ClientName: name,
		Adapter: adapter, Since: s.since, Calls: s.calls.Load(), Subscriptions: subs, Watches: watches,
		ServerLink: s.link.snapshot()}
	if cs.stream != nil {
		si.Stream = cs.stream.id.String()
		si.Detached = adapter == ""
	}
	return si
}

// owner returns the session layer that carries the session now.
func (s *clientSession) owner() *connSessions {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cs
}

// context returns the session's context (calls derive from it).
func (s *clientSession) context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

// uses reports whether id names a subscription or a watch; the caller
// holds s.mu.
func (s *clientSession) uses(id uint64) bool {
	_, sub := s.subs[id]
	_, w := s.watches[id]
	return sub || w
}

// wants reports whether a subscription takes the event; the caller holds
// s.mu.
func (s *clientSession) wants(name string) bool {
	for _, f := range s.subs {
		if f.all {
			return true
		}
		if _, ok := f.names[name]; ok {
			return true
		}
	}
	return false
}

// event queues an event for the client if it subscribed to it.
func (s *clientSession) event(e serviceplugin.Event) {
	if !s.routes.viaServer(servicefile.Resource{Kind: servicefile.EventResource, Name: e.Name}) {
		return // the runner sends it on a direct link (direct.go)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.wants(e.Name) {
		return
	}
	if s.lost > 0 && len(s.queue) < maxEventQueue {
		s.queue = append(s.queue, queuedEvent{lost: s.lost})
		s.lost = 0
	}
	if len(s.queue) < maxEventQueue {
		s.queue = append(s.queue, queuedEvent{name: e.Name, args: e.Args})
	} else {
		s.lost++
	}
	s.cs.markReady(s)
}

// below reports whether path p is anc or lies under it.
func below(p, anc string) bool {
	return anc == "" || p == anc || len(p) > len(anc) && p[len(anc)] == '.' && p[:len(anc)] == anc
}

// dataChanged records, for every watch concerned, which path to send.
func (s *clientSession) dataChanged(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	notify := false
	for _, w := range s.watches {
		switch {
		case below(path, w.path):
			if !s.routes.viaServer(servicefile.Resource{Kind: servicefile.DataResource, Name: path}) {
				continue // the runner sends it on a direct link (direct.go)
			}
			w.add(path)
		case below(w.path, path):
			if !s.routes.viaServer(servicefile.Resource{Kind: servicefile.DataResource, Name: w.path}) {
				continue
			}
			w.add(w.path) // an ancestor changed: the watched node's value may have
		default:
			continue
		}
		notify = notify || !w.muted
	}
	if notify {
		s.cs.markReady(s)
	}
}

// add records that the node at p changed, coalescing: a path under one
// already pending is covered by it, one above pending paths replaces them.
func (w *watch) add(p string) {
	for _, q := range w.pending {
		if below(p, q) {
			return
		}
	}
	kept := w.pending[:0]
	for _, q := range w.pending {
		if !below(q, p) {
			kept = append(kept, q)
		}
	}
	clear(w.pending[len(kept):])
	w.pending = append(kept, p)
	if len(w.pending) > maxPendingPaths {
		clear(w.pending)
		w.pending = append(w.pending[:0], w.path)
	}
}

// drain appends the session's pending notifications, encoded, to buf: the
// queued events (with EventsLost at the gaps), then each watch's changes
// with their current values, then a SessionClosed. It runs on the writer.
func (s *clientSession) drain(buf [][]byte) [][]byte {
	type change struct {
		watch uint64
		base  string
		paths []string
	}
	s.mu.Lock()
	s.dirty = false
	cs := s.cs
	queue, lost, note := s.queue, s.lost, s.closedNote
	s.queue, s.lost, s.closedNote = nil, 0, ""
	var changes []change
	for _, w := range s.watches {
		if !w.muted && len(w.pending) > 0 {
			changes = append(changes, change{watch: w.id, base: w.path, paths: w.pending})
			w.pending = nil
		}
	}
	s.mu.Unlock()

	emit := func(m session.Message) {
		b, err := session.Encode(m)
		switch {
		case err != nil:
			cs.log.Error("internal: a session notification does not encode", "kind", m.Kind().String(), "error", err)
		case len(b) > cs.limit:
			cs.warnf("a session notification is larger than the connection carries; dropped", "kind", m.Kind().String(), "session", s.id, "bytes", len(b), "limit", cs.limit)
		default:
			buf = append(buf, b)
			if cs.s.diag.on {
				s.msgsOut.Add(1)
			}
			s.count(toClient, countKind(m), len(b))
		}
	}
	for _, q := range queue {
		if q.lost > 0 {
			emit(&session.EventsLost{Session: s.id, Count: q.lost})
		} else {
			emit(&session.Event{Session: s.id, Name: q.name, Args: q.args})
		}
	}
	if lost > 0 {
		emit(&session.EventsLost{Session: s.id, Count: lost})
	}
	if len(changes) > 0 {
		type value struct {
			watch uint64
			path  string
			enc   []byte
		}
		var values []value
		s.hs.mu.Lock()
		for _, ch := range changes {
			for _, p := range ch.paths {
				// A path that no longer resolves (a list got shorter) is
				// sent as its nearest ancestor within the watch.
				for {
					t, v, err := s.hs.data.Lookup(p)
					if err == nil {
						if enc, err := services.AppendValue(nil, t, v); err == nil {
							values = append(values, value{ch.watch, p, enc})
						}
						break
					}
					if p == ch.base {
						break // the watched node itself is gone for now
					}
					if i := strings.LastIndexByte(p, '.'); i >= 0 && len(p[:i]) >= len(ch.base) {
						p = p[:i]
					} else {
						p = ch.base
					}
				}
			}
		}
		s.hs.mu.Unlock()
		for _, v := range values {
			emit(&session.DataChange{Session: s.id, Watch: v.watch, Path: v.path, Value: v.enc})
		}
	}
	if note != "" {
		emit(&session.SessionClosed{Session: s.id, Reason: session.CutText(note, session.MaxText)})
	}
	return buf
}

func methodList(desc *servicefile.Service) string {
	if desc == nil || len(desc.Methods) == 0 {
		return "none"
	}
	names := make([]string, len(desc.Methods))
	for i, m := range desc.Methods {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

func eventList(desc *servicefile.Service) string {
	if desc == nil || len(desc.Events) == 0 {
		return "none"
	}
	names := make([]string, len(desc.Events))
	for i, e := range desc.Events {
		names[i] = e.Name
	}
	return strings.Join(names, ", ")
}
