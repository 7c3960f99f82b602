package core

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/session"
)

// Remote services (docs/REMOTE.md): a runner (remoteservicerunner) is a
// registered client that offers services with ProvideService. The server
// keeps one hostedService per remote service name, created by its first
// ProvideService and kept for the server's life, so that clients' sessions
// and the service's runtime data outlive the runner's connection:
//
//   - while a runner provides it, the service's backend is a remoteBackend
//     that relays session opens, calls and closes to the runner over the
//     runner's connection (its connSessions: the same writer and answer
//     queue as its own requests' answers); the runner's events and
//     runtime data come back as runner notifications and go through the
//     same fan-out as a local plugin's;
//   - when the runner's connection ends, the service becomes unavailable
//     (backend nil, failed says why): its calls fail at once, naming the
//     service and saying that its runner is disconnected; its sessions
//     stay open;
//   - when a runner provides it again, the sessions still open are
//     reopened on it (with their ids, clients and tokens) before the
//     service becomes available again; a session the runner refuses ends
//     for its client with SessionClosed.
//
// Locks: remoteRegistry.mu, then remoteState.mu, then hostedService.mu;
// runnerLink.mu is never held while taking another.

// maxRemoteServices bounds the remote services one server keeps, and
// maxRunnerServices those one runner connection provides.
const (
	maxRemoteServices = 4096
	maxRunnerServices = 256
)

// remoteOpenConcurrency bounds the sessions reopened at once on a runner
// that came back.
const remoteOpenConcurrency = 64

// serviceBackend serves a hosted service's sessions and calls: its plugin
// inside the server (*pluginhost.ServicePlugin) or its runner
// (*remoteBackend). CloseSession never waits.
type serviceBackend interface {
	Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error)
	OpenSession(ctx context.Context, in serviceplugin.SessionInfo) error
	CloseSession(sessionID, reason string)
	ServiceXML() []byte
	Description() *servicefile.Service
	Status() pluginhost.ServiceStatus
}

var _ serviceBackend = (*pluginhost.ServicePlugin)(nil)

// remoteRegistry holds the remote services by name.
type remoteRegistry struct {
	mu sync.Mutex
	m  map[string]*hostedService
}

// lookupService finds a service inside the server or a remote one.
func (s *Server) lookupService(name string) *hostedService {
	if hs, ok := s.services[name]; ok {
		return hs
	}
	s.remote.mu.Lock()
	defer s.remote.mu.Unlock()
	return s.remote.m[name]
}

// allServices lists the services inside the server, then the remote ones.
func (s *Server) allServices() []*hostedService {
	s.remote.mu.Lock()
	out := make([]*hostedService, 0, len(s.services)+len(s.remote.m))
	for _, hs := range s.remote.m {
		out = append(out, hs)
	}
	s.remote.mu.Unlock()
	for _, hs := range s.services {
		out = append(out, hs)
	}
	return out
}

// remoteXML returns the service file of a remote service, nil for any
// other name.
func (s *Server) remoteXML(name string) []byte {
	s.remote.mu.Lock()
	hs := s.remote.m[name]
	s.remote.mu.Unlock()
	if hs == nil {
		return nil
	}
	hs.remote.mu.Lock()
	defer hs.remote.mu.Unlock()
	return bytes.Clone(hs.remote.xml)
}

// RemoteInfo describes the runner of a remote service, for
// /servicedescriptions and /healthz.
type RemoteInfo struct {
	// Connected is true while the runner provides the service.
	Connected bool `json:"connected"`
	// Runner is the runner's client name and id, as in messages.
	Runner     string `json:"runner"`
	ClientID   string `json:"clientId"`
	ClientName string `json:"clientName,omitempty"`
	// Adapter and Bearer are the connection adapter the runner came
	// through and its bearer type; Address is the runner's address.
	Adapter string `json:"adapter"`
	Bearer  string `json:"bearer"`
	Address string `json:"address"`
	// Since is when the runner provided the service, or when it
	// disconnected.
	Since time.Time `json:"since"`
	// Endpoints are where the runner accepts direct links.
	Endpoints []string `json:"endpoints,omitempty"`
	// Relay: the runner does not listen; its direct links go through the
	// server's secondary endpoint (relay.go).
	Relay bool `json:"relay,omitempty"`
}

// remoteState is what the server keeps of a remote service across its
// runner's connections.
type remoteState struct {
	mu        sync.Mutex
	runner    *runnerLink // the connection providing it; nil while none does
	gen       uint64      // counts changes of runner, so a late provide cannot publish
	info      RemoteInfo
	xml       []byte
	endpoints []session.RunnerEndpoint
	relay     bool              // the runner does not listen: its links go through the secondary endpoint (relay.go)
	tokens    map[string]string // direct-link token by session id, for sessions open or opening
	parked    serviceBackend    // the backend while the runner's stream has no connection (park)
	docs      map[string][]byte // routing document by session id, as tokens (direct.go)
	keys      map[string][]byte // link key by session id, as tokens (unreliable.go)
}

func (hs *hostedService) remoteInfo() *RemoteInfo {
	rs := hs.remote
	if rs == nil {
		return nil
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	in := rs.info
	in.Endpoints = slices.Clone(in.Endpoints)
	return &in
}

func (rs *remoteState) token(id string) string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.tokens[id]
}

// doc returns a session's routing document, for RemoteOpen.
func (rs *remoteState) doc(id string) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.docs[id]
}

func (rs *remoteState) dropToken(id string) {
	rs.mu.Lock()
	delete(rs.tokens, id)
	delete(rs.docs, id)
	delete(rs.keys, id)
	rs.mu.Unlock()
}

// runnerLink is the runner side of a connection that provides services:
// the server's requests waiting for the runner's answers and the services
// provided over it.
type runnerLink struct {
	cs     *connSessions
	who    string // "NAME (client ID)", for messages
	nextID atomic.Uint64

	mu       sync.Mutex
	ended    error // why the connection ended; nil while it is up
	pending  map[uint64]chan session.Message
	services map[string]*hostedService
}

// runnerLink returns the connection's runner side, created on first use.
func (cs *connSessions) runnerLink() *runnerLink {
	if rl := cs.runner.Load(); rl != nil {
		return rl
	}
	name, _ := cs.tr.peer()
	if name == "" {
		name = "unnamed runner"
	}
	rl := &runnerLink{cs: cs, who: fmt.Sprintf("%s (client %s)", name, cs.clientID),
		pending: map[uint64]chan session.Message{}, services: map[string]*hostedService{}}
	if !cs.runner.CompareAndSwap(nil, rl) {
		return cs.runner.Load()
	}
	return rl
}

// errLinkEnded says that the runner's connection ended; the request was
// never sent when sent is false.
type errLinkEnded struct {
	cause error
	sent  bool
}

func (e *errLinkEnded) Error() string {
	if e.sent {
		return fmt.Sprintf("no answer: the connection to its runner ended (%v); whether it ran is unknown", e.cause)
	}
	return fmt.Sprintf("its runner is disconnected (%v)", e.cause)
}

// push queues an encoded message for the connection's writer. With wait it
// waits while the queue is full, as answers do; without, it queues anyway
// (small control messages that must never block their caller). It returns
// false once output has stopped.
func (cs *connSessions) push(b []byte, wait bool) bool {
	cs.omu.Lock()
	defer cs.omu.Unlock()
	for wait && cs.queued > 0 && cs.queued+len(b) > maxQueuedBytes && !cs.outClosed {
		cs.ocond.Wait()
	}
	if cs.outClosed {
		return false
	}
	cs.answers = append(cs.answers, b)
	cs.queued += len(b)
	cs.signal()
	return true
}

// encode encodes a message for the runner, refusing one larger than the
// runner's connection carries.
func (rl *runnerLink) encode(m session.Message) ([]byte, error) {
	b, err := session.Encode(m)
	if err != nil {
		return nil, err
	}
	if len(b) > rl.cs.limit {
		return nil, fmt.Errorf("the request takes %d bytes, more than the runner's connection carries in one message (%d)", len(b), rl.cs.limit)
	}
	return b, nil
}

// request sends the runner request build makes with a fresh id and waits
// for its answer. It returns the id (0 when nothing was sent).
func (rl *runnerLink) request(ctx context.Context, build func(id uint64) session.Message) (session.Message, uint64, error) {
	id := rl.nextID.Add(1)
	b, err := rl.encode(build(id))
	if err != nil {
		return nil, 0, err
	}
	ch := make(chan session.Message, 1)
	rl.mu.Lock()
	if rl.ended != nil {
		cause := rl.ended
		rl.mu.Unlock()
		return nil, 0, &errLinkEnded{cause: cause}
	}
	rl.pending[id] = ch
	rl.mu.Unlock()
	unregister := func() {
		rl.mu.Lock()
		delete(rl.pending, id)
		rl.mu.Unlock()
	}
	if !rl.cs.push(b, true) {
		unregister()
		return nil, 0, &errLinkEnded{cause: errors.New("the connection is closing")}
	}
	select {
	case r := <-ch:
		if r == nil {
			return nil, id, &errLinkEnded{cause: rl.cause(), sent: true}
		}
		return r, id, nil
	case <-ctx.Done():
		unregister()
		return nil, id, ctx.Err()
	}
}

// notify sends a runner request that has no answer; it never waits.
func (rl *runnerLink) notify(m session.Message) {
	b, err := rl.encode(m)
	if err != nil {
		rl.cs.log.Error("internal: a runner request does not encode", "kind", m.Kind().String(), "error", err)
		return
	}
	if rl.cause() == nil {
		rl.cs.push(b, false)
	}
}

func (rl *runnerLink) cause() error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.ended
}

// deliver hands the runner's answer to the request waiting for it.
func (rl *runnerLink) deliver(id uint64, m session.Message) {
	rl.mu.Lock()
	ch := rl.pending[id]
	delete(rl.pending, id)
	rl.mu.Unlock()
	if ch != nil {
		ch <- m // capacity 1, one delivery
	}
}

// add records that the link provides a service; an error once it ended or
// provides as many as it may.
func (rl *runnerLink) add(name string, hs *hostedService) *session.Error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	switch {
	case rl.ended != nil:
		return &session.Error{Code: session.CodeCanceled, Message: "the connection is closing"}
	case len(rl.services) >= maxRunnerServices:
		return &session.Error{Code: session.CodeOverloaded, Message: fmt.Sprintf("this connection provides %d services already, the most one runner may", maxRunnerServices)}
	}
	rl.services[name] = hs
	return nil
}

// remove forgets a service the link no longer provides (a newer
// connection of the same runner took it over).
func (rl *runnerLink) remove(name string) {
	rl.mu.Lock()
	delete(rl.services, name)
	rl.mu.Unlock()
}

func (rl *runnerLink) service(name string) *hostedService {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.services[name]
}

// end fails the requests waiting for the runner and makes its services
// unavailable. Idempotent.
func (rl *runnerLink) end(cause error) {
	rl.mu.Lock()
	if rl.ended != nil {
		rl.mu.Unlock()
		return
	}
	rl.ended = cause
	pending, provided := rl.pending, rl.services
	rl.pending, rl.services = nil, nil
	rl.mu.Unlock()
	for _, ch := range pending {
		ch <- nil
	}
	for _, hs := range provided {
		hs.detach(rl)
	}
}

// endRunner runs when the connection ends.
func (cs *connSessions) endRunner() {
	if rl := cs.runner.Load(); rl != nil {
		rl.end(errors.New("the runner's connection ended"))
	}
}

// linkDown runs when the runner's resume stream loses its connection: its
// services become unavailable for new sessions and calls (they fail at
// once, saying so), while what is in flight stays in the stream and is
// answered if the runner comes back before the stream expires.
func (rl *runnerLink) linkDown() {
	for _, hs := range rl.provided() {
		hs.park(rl, true)
	}
}

// linkUp runs when the runner's stream has a connection again.
func (rl *runnerLink) linkUp() {
	for _, hs := range rl.provided() {
		hs.park(rl, false)
	}
}

func (rl *runnerLink) provided() []*hostedService {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	out := make([]*hostedService, 0, len(rl.services))
	for _, hs := range rl.services {
		out = append(out, hs)
	}
	return out
}

// park makes the service unavailable (down) or available again while rl
// provides it and its stream is without a connection.
func (hs *hostedService) park(rl *runnerLink, down bool) {
	rs := hs.remote
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.runner != rl {
		return
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	switch {
	case down && hs.plugin != nil:
		rs.parked = hs.plugin
		hs.plugin = nil
		hs.failed = fmt.Sprintf("its runner %s is disconnected; calls work again once it reconnects", rl.who)
		rs.info.Connected, rs.info.Since = false, time.Now()
		rl.cs.log.Warn("remote service unavailable: its runner's link is down", "service", hs.cfg.Name, "runner", rl.who)
	case !down && rs.parked != nil:
		hs.plugin, hs.failed = rs.parked, ""
		rs.parked = nil
		rs.info.Connected, rs.info.Since = true, time.Now()
		rs.info.Address = rl.cs.remoteAddr()
		rl.cs.log.Info("remote service available again: its runner's link is back", "service", hs.cfg.Name, "runner", rl.who)
	}
}

// detach makes the service unavailable if rl still provides it.
func (hs *hostedService) detach(rl *runnerLink) {
	rs := hs.remote
	rs.mu.Lock()
	if rs.runner != rl {
		rs.mu.Unlock()
		return
	}
	rs.runner, rs.parked = nil, nil
	rs.gen++
	rs.info.Connected, rs.info.Since = false, time.Now()
	hs.mu.Lock()
	hs.plugin = nil
	hs.failed = fmt.Sprintf("its runner %s is disconnected; calls work again once it reconnects", rl.who)
	hs.mu.Unlock()
	rs.mu.Unlock()
	rl.cs.log.Warn("remote service unavailable: its runner disconnected", "service", hs.cfg.Name, "runner", rl.who)
}

// mayProvide applies <remoteServices>: may pr provide the service?
func (s *Server) mayProvide(pr principal, service string) error {
	if s.cfg == nil || s.cfg.RemoteServices == nil {
		return nil
	}
	pol := s.cfg.RemoteServices
	for _, r := range pol.Rules {
		switch {
		case r.Service != "*" && r.Service != service,
			r.Client != "" && r.Client != pr.clientID,
			r.Identity != "" && r.Identity != pr.identity,
			r.Token != "" && r.Token != pr.token:
			continue
		}
		if r.Allow {
			return nil
		}
		s.log.Warn("remote service refused", "principal", pr.String(), "service", service, "rule_line", r.Line)
		return fmt.Errorf("denied: %s may not provide service %s (<remoteServices> rule at %s:%d)", pr, service, s.cfg.File, r.Line)
	}
	if pol.Default == "allow" {
		return nil
	}
	s.log.Warn("remote service refused", "principal", pr.String(), "service", service, "rule", "default deny")
	return fmt.Errorf("denied: %s may not provide service %s (no rule of <remoteServices> at %s:%d allows it)", pr, service, s.cfg.File, pol.Line)
}

// provide answers a runner's ProvideService: it checks the offer, claims
// the service name for the runner's connection, reopens the sessions
// still open with the service on it, and makes the service available.
func (cs *connSessions) provide(m *session.ProvideService) session.Message {
	s, name := cs.s, m.Service
	fail := func(code session.Code, format string, args ...any) session.Message {
		msg := fmt.Sprintf(format, args...)
		cs.log.Warn("a runner's service was refused", "service", name, "error", msg)
		return session.NewError(m.ID, code, msg)
	}
	if local, ok := s.services[name]; ok {
		where := "the server configuration"
		if local.cfg.Line > 0 && s.cfg != nil {
			where = fmt.Sprintf("%s:%d", s.cfg.File, local.cfg.Line)
		}
		return fail(session.CodeRefused, "service %s is a service of this server itself (%s); a runner cannot provide it: give the runner's service another name, or remove <service name=%q> from the server configuration",
			name, where, name)
	}
	if err := s.mayProvide(cs.tr.principal(), name); err != nil {
		return fail(session.CodeDenied, "%v", err)
	}
	desc, err := servicefile.Parse(name+" (service file from the runner)", m.XML)
	if err != nil {
		return fail(session.CodeBadRequest, "the service file of %s is not valid:\n%v", name, err)
	}
	if desc.Name != name {
		return fail(session.CodeBadRequest, "the service file offered as %s describes service %q", name, desc.Name)
	}
	var addrs []string
	for _, e := range m.Endpoints {
		ep, err := bearers.ParseEndpoint(e.Address)
		if err == nil {
			err = bearers.Info{Type: e.Bearer, Scheme: ep.Scheme, Capabilities: bearers.Capabilities(e.Capabilities)}.Validate()
		}
		if err != nil {
			return fail(session.CodeBadRequest, "service %s: endpoint %q (%s): %v", name, e.Address, e.Bearer, err)
		}
		addrs = append(addrs, ep.String())
	}
	tree, err := services.NewDataTree(desc.Data)
	if err != nil {
		return fail(session.CodeBadRequest, "service %s: runtime data: %v", name, err)
	}
	rl := cs.runnerLink()

	// Claim the name.
	s.remote.mu.Lock()
	hs := s.remote.m[name]
	if hs == nil {
		if len(s.remote.m) >= maxRemoteServices {
			s.remote.mu.Unlock()
			return fail(session.CodeOverloaded, "this server keeps %d remote services already", maxRemoteServices)
		}
		hs = &hostedService{cfg: config.Service{Name: name}, failed: "its runner is connecting",
			remote: &remoteState{tokens: map[string]string{}, docs: map[string][]byte{}}}
		if s.remote.m == nil {
			s.remote.m = map[string]*hostedService{}
		}
		s.remote.m[name] = hs
	}
	s.remote.mu.Unlock()
	rs := hs.remote
	rs.mu.Lock()
	old := rs.runner
	switch {
	case old == rl:
		rs.mu.Unlock()
		return fail(session.CodeBadRequest, "service %s is already provided on this connection", name)
	case old != nil && old.cs.clientID != cs.clientID:
		rs.mu.Unlock()
		return fail(session.CodeRefused, "service %s is already provided by another runner, %s, connected from %s; stop that runner, or give this service another name",
			name, old.who, old.cs.remoteAddr())
	}
	if e := rl.add(name, hs); e != nil {
		rs.mu.Unlock()
		return fail(e.Code, "%s", e.Message)
	}
	rs.runner = rl
	rs.gen++
	gen := rs.gen
	changed := rs.xml != nil && !bytes.Equal(rs.xml, m.XML)
	rs.xml, rs.endpoints, rs.relay = m.XML, m.Endpoints, m.Relay
	rs.mu.Unlock()
	if old != nil {
		old.remove(name) // the same runner's older connection, replaced
	}

	// A runner that came back with another service file: the open
	// sessions were made for the old one.
	if changed {
		hs.sess.mu.RLock()
		open := make([]*clientSession, 0, len(hs.sess.m))
		for _, sess := range hs.sess.m {
			open = append(open, sess)
		}
		hs.sess.mu.RUnlock()
		for _, sess := range open {
			sess.cs.endSession(sess, "the service's runner came back with another service file; start a new session", true)
		}
	}
	hs.mu.Lock()
	if changed || hs.desc == nil {
		hs.desc, hs.data = desc, tree
	}
	hs.mu.Unlock()

	b := &remoteBackend{hs: hs, rl: rl, desc: desc, xml: bytes.Clone(m.XML), since: time.Now()}
	reopened := cs.reopen(hs, b)

	// Publish, unless the connection ended meanwhile.
	now := time.Now()
	rs.mu.Lock()
	if rs.runner != rl || rs.gen != gen {
		rs.mu.Unlock()
		return fail(session.CodeCanceled, "the connection ended while the service was being provided")
	}
	rs.info = RemoteInfo{Connected: true, Runner: rl.who, ClientID: cs.clientID.String(), Since: now, Endpoints: addrs, Relay: m.Relay}
	rs.info.ClientName, rs.info.Adapter = cs.tr.peer()
	if c := cs.conn(); c != nil {
		rs.info.Bearer, rs.info.Address = c.adapter.cfg.Type, c.bc.RemoteAddr().String()
	}
	hs.mu.Lock()
	hs.plugin, hs.failed, rs.parked = b, "", nil
	hs.mu.Unlock()
	rs.mu.Unlock()
	// Sessions closed while they were being reopened.
	for _, id := range reopened {
		if hs.sess.get(id) == nil {
			b.CloseSession(id, "closed while the runner reconnected")
		}
	}
	cs.log.Info("remote service available", "service", name, "version", desc.Version, "runner", rl.who, "sessions_reopened", len(reopened))
	return &session.OK{ID: m.ID}
}

// reopen opens on a runner that (re)provides a service the sessions still
// open with it. A session the runner refuses ends for its client. It
// returns the ids it reopened.
func (cs *connSessions) reopen(hs *hostedService, b *remoteBackend) []string {
	hs.sess.mu.RLock()
	infos := make([]serviceplugin.SessionInfo, 0, len(hs.sess.m))
	for id, sess := range hs.sess.m {
		infos = append(infos, serviceplugin.SessionInfo{ID: id, ClientID: sess.cs.clientID.String()})
	}
	hs.sess.mu.RUnlock()
	// Forget the tokens of sessions that ended while no runner was there.
	rs := hs.remote
	rs.mu.Lock()
	for id := range rs.tokens {
		if !slices.ContainsFunc(infos, func(in serviceplugin.SessionInfo) bool { return in.ID == id }) {
			delete(rs.tokens, id)
			delete(rs.docs, id)
			delete(rs.keys, id)
		}
	}
	rs.mu.Unlock()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		reopened []string
		sem      = make(chan struct{}, remoteOpenConcurrency)
	)
	for _, in := range infos {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(cs.ctx, sessionOpenTimeout)
			defer cancel()
			token, doc, key := rs.token(in.ID), rs.doc(in.ID), rs.linkKey(in.ID)
			err := b.OpenSession(ctx, in)
			var le *errLinkEnded
			switch {
			case err == nil:
				mu.Lock()
				reopened = append(reopened, in.ID)
				mu.Unlock()
			case errors.As(err, &le) || cs.ctx.Err() != nil:
				// The runner went away again: the session waits for the next.
				rs.mu.Lock()
				if token != "" {
					rs.tokens[in.ID], rs.docs[in.ID] = token, doc
					rs.putKey(in.ID, key)
				}
				rs.mu.Unlock()
			default:
				cs.log.Warn("the runner did not reopen a session; it ends", "service", hs.cfg.Name, "session", in.ID, "error", err)
				if sess := hs.sess.get(in.ID); sess != nil {
					sess.cs.endSession(sess, "the service's runner reconnected and did not reopen the session: "+err.Error(), true)
				}
			}
		}()
	}
	wg.Wait()
	return reopened
}

// fromRunner handles a runner's answers and notifications; it runs on the
// connection's reader and never waits.
func (cs *connSessions) fromRunner(m session.Message) {
	rl := cs.runner.Load()
	if rl == nil {
		cs.warnf("the client sent a session message only a server or a runner sends; ignored", "kind", m.Kind().String())
		return
	}
	if r, ok := m.(session.Response); ok {
		rl.deliver(r.ResponseTo(), m)
		return
	}
	n := m.(session.RunnerNotification)
	hs := rl.service(n.ServiceName())
	if hs == nil {
		cs.warnf("a runner sent a notification for a service it does not provide on this connection; ignored", "kind", m.Kind().String(), "service", n.ServiceName())
		return
	}
	_, desc, _ := hs.current()
	if desc == nil {
		cs.warnf("a runner sent a notification before its service was set up; ignored", "kind", m.Kind().String(), "service", hs.cfg.Name)
		return
	}
	switch m := m.(type) {
	case *session.ServiceEvent:
		ev := desc.Event(m.Name)
		if ev == nil {
			cs.warnf("a runner sent an event its service file does not declare; dropped", "service", hs.cfg.Name, "event", m.Name)
			return
		}
		if _, err := services.DecodeArgs(ev.Args, m.Args); err != nil {
			cs.warnf("a runner sent an event whose arguments do not decode; dropped", "service", hs.cfg.Name, "event", m.Name, "error", err)
			return
		}
		hs.onEvent(serviceplugin.Event{Name: m.Name, SessionID: m.Session, Args: m.Args})
	case *session.ServiceData:
		hs.mu.Lock()
		err := hs.data.SetEncoded(m.Path, m.Value) // hs.data is set with hs.desc
		if err == nil {
			hs.fanOutData(m.Path)
		}
		hs.mu.Unlock()
		if err != nil {
			cs.warnf("a runner sent runtime data that does not fit its service file; dropped", "service", hs.cfg.Name, "path", m.Path, "error", err)
		}
	case *session.RemoteSessionLost:
		hs.remote.dropToken(m.Session)
		if sess := hs.sess.get(m.Session); sess != nil {
			sess.cs.endSession(sess, "the service's runner ended the session: "+m.Reason, true)
		}
	}
}

// runnerDecodeError fails the request waiting for a runner's answer that
// does not decode.
func (cs *connSessions) runnerDecodeError(de *session.DecodeError) {
	if rl := cs.runner.Load(); rl != nil && de != nil && de.ID != 0 && de.Kind.IsResponse() {
		rl.deliver(de.ID, session.NewError(de.ID, session.CodeServiceFault, "the runner's answer does not decode: "+de.Error()))
	}
}

// sessionRouting returns the routing document of a new session, as XML and
// parsed (nil for a service inside the server): the server link alone for
// a service inside the server, the resolved routing of the service file
// for a remote one (docs/ROUTING.md), with the methods the policy checks
// call by call moved to the server link (direct.go).
func (cs *connSessions) sessionRouting(m *session.StartSession, hs *hostedService, id string) ([]byte, *routing.Document, *session.Error) {
	reqID := m.ID
	if hs.remote == nil {
		doc, err := serverRouting(id, hs.cfg.Name)
		if err != nil { // a service name the document cannot carry
			return nil, nil, session.NewError(reqID, session.CodeInternal, fmt.Sprintf("the routing document of a session with %s: %v", hs.cfg.Name, err))
		}
		return doc, nil, nil
	}
	rs := hs.remote
	_, desc, failed := hs.current()
	rs.mu.Lock()
	rl, endpoints, relay := rs.runner, rs.endpoints, rs.relay
	rs.mu.Unlock()
	if rl == nil || desc == nil {
		return nil, nil, session.NewError(reqID, session.CodeUnavailable, fmt.Sprintf("service %s is unavailable: %s", hs.cfg.Name, failed))
	}
	token, err := newToken()
	if err != nil {
		return nil, nil, session.NewError(reqID, session.CodeInternal, "cannot make a session token: "+err.Error())
	}
	runner := runnerSituation(rl.cs.bearerType(), endpoints)
	if relay { // relay.go: the runner's links are the secondary endpoint's
		runner = relayRunner(desc, cs.s.relayEndpoint(cs), cs.s.relayUDPEndpoint(cs))
	}
	d, err := routing.Resolve(desc, routing.Situation{Session: id, Token: token,
		Runner: runner, Client: clientSituation(m)})
	if err != nil {
		var re *routing.ResolveError
		if errors.As(err, &re) { // one, or several joined
			return nil, nil, session.NewError(reqID, session.CodeRefused, err.Error())
		}
		return nil, nil, session.NewError(reqID, session.CodeInternal, fmt.Sprintf("the routing document of a session with %s: %v", hs.cfg.Name, err))
	}
	if moved := cs.s.forceServerMethods(d, desc, cs.tr.principal(), hs); moved != nil {
		cs.log.Debug("methods routed through the server for the policy", "service", hs.cfg.Name, "session", id, "methods", moved)
	}
	doc, err := routing.Generate(d)
	if err != nil {
		return nil, nil, session.NewError(reqID, session.CodeInternal, fmt.Sprintf("the routing document of a session with %s: %v", hs.cfg.Name, err))
	}
	rs.mu.Lock()
	rs.tokens[id], rs.docs[id] = token, doc
	rs.mu.Unlock()
	return doc, d, nil
}

// runnerSituation is what routing.Resolve knows of a runner: the bearer it
// reached the server with and its endpoints.
func runnerSituation(bearer string, endpoints []session.RunnerEndpoint) *routing.Runner {
	r := &routing.Runner{Bearer: bearer}
	for _, e := range endpoints {
		ep, err := bearers.ParseEndpoint(e.Address) // checked by provide
		if err != nil {
			continue
		}
		r.Endpoints = append(r.Endpoints, ep)
		if !slices.ContainsFunc(r.Bearers, func(b bearers.Info) bool { return b.Type == e.Bearer }) {
			r.Bearers = append(r.Bearers, bearers.Info{Type: e.Bearer, Scheme: ep.Scheme, Capabilities: bearers.Capabilities(e.Capabilities)})
		}
	}
	return r
}

// newToken returns a per-session direct-link token: 128 random bits.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// remoteBackend relays a remote service's sessions and calls to the runner
// that provides it, over the runner's connection.
type remoteBackend struct {
	hs    *hostedService
	rl    *runnerLink
	desc  *servicefile.Service
	xml   []byte
	since time.Time
}

func (b *remoteBackend) ServiceXML() []byte                { return bytes.Clone(b.xml) }
func (b *remoteBackend) Description() *servicefile.Service { return b.desc }

func (b *remoteBackend) Status() pluginhost.ServiceStatus {
	return pluginhost.ServiceStatus{Service: b.hs.cfg.Name, Name: "runner " + b.rl.who, State: pluginhost.StateRunning, Since: b.since}
}

func (b *remoteBackend) Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	name := b.hs.cfg.Name
	var timeout time.Duration
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, &serviceplugin.CallError{Service: name, Method: method, Session: sessionID, Err: context.DeadlineExceeded}
		}
	}
	r, id, err := b.rl.request(ctx, func(id uint64) session.Message {
		return &session.RemoteCall{ID: id, Service: name, Session: sessionID, Method: method, Timeout: timeout, Args: args}
	})
	if err != nil {
		if id != 0 && ctx.Err() != nil {
			b.rl.notify(&session.RemoteCancel{Target: id})
		}
		return nil, &serviceplugin.CallError{Service: name, Method: method, Session: sessionID, ID: id, Err: err}
	}
	switch r := r.(type) {
	case *session.Result:
		return r.Value, nil
	case *session.Error:
		return nil, runnerError(r)
	}
	return nil, &serviceplugin.CallError{Service: name, Method: method, Session: sessionID, ID: id,
		Err: fmt.Errorf("%w: the runner answered a call with %v", serviceplugin.ErrProtocol, r.Kind())}
}

func (b *remoteBackend) OpenSession(ctx context.Context, in serviceplugin.SessionInfo) error {
	name := b.hs.cfg.Name
	token, doc, key := b.hs.remote.token(in.ID), b.hs.remote.doc(in.ID), b.hs.remote.linkKey(in.ID)
	r, id, err := b.rl.request(ctx, func(id uint64) session.Message {
		return &session.RemoteOpen{ID: id, Service: name, Session: in.ID, Client: in.ClientID, Token: token, Routing: doc, LinkKey: key}
	})
	switch r := r.(type) {
	case nil:
		err = &serviceplugin.CallError{Service: name, Session: in.ID, ID: id, Err: err}
	case *session.OK:
		return nil
	case *session.Error:
		err = runnerError(r)
	default:
		err = &serviceplugin.CallError{Service: name, Session: in.ID, ID: id,
			Err: fmt.Errorf("%w: the runner answered a session open with %v", serviceplugin.ErrProtocol, r.Kind())}
	}
	b.hs.remote.dropToken(in.ID)
	return err
}

// CloseSession tells the runner that a session ended; it never waits.
func (b *remoteBackend) CloseSession(sessionID, reason string) {
	b.hs.remote.dropToken(sessionID)
	b.rl.notify(&session.RemoteClose{Service: b.hs.cfg.Name, Session: sessionID, Reason: session.CutText(reason, session.MaxText)})
}

// runnerError turns a runner's Error answer into the error a plugin's
// answer would be, so that callers map it to the same session code and
// HTTP status: a *serviceplugin.Error for the codes a service answers
// (CodeRefused, a refused session, becomes CodeApplication, its message
// the service's reason), a plain error (CodeUnavailable) otherwise.
func runnerError(e *session.Error) error {
	code, ok := map[session.Code]serviceplugin.Code{
		session.CodeApplication:      serviceplugin.CodeApplication,
		session.CodeRefused:          serviceplugin.CodeApplication,
		session.CodeInvalidArgument:  serviceplugin.CodeInvalidArgument,
		session.CodeUnknownMethod:    serviceplugin.CodeUnknownMethod,
		session.CodeServiceFault:     serviceplugin.CodeBadResult,
		session.CodeDeadlineExceeded: serviceplugin.CodeDeadlineExceeded,
		session.CodeCanceled:         serviceplugin.CodeCanceled,
		session.CodeUnknownSession:   serviceplugin.CodeNoSession,
		session.CodeOverloaded:       serviceplugin.CodeOverloaded,
	}[e.Code]
	msg := e.Message
	if msg == "" {
		msg = "the runner answered: " + e.Code.String()
	}
	if !ok {
		return errors.New(msg)
	}
	return &serviceplugin.Error{Code: code, Message: msg}
}
