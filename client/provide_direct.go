package client

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Direct links, runner side (docs/REMOTE.md, "Direct links";
// docs/PROTOCOL.md, "Direct links").
//
// A Provider accepts direct links on the listeners of
// ProviderConfig.Listeners, from Serve until Close. The server hands it,
// with every session it opens (RemoteOpen), the session's token and
// routing document. A client's first message on a direct link is a
// LinkOpen naming the session, the link and the token: the provider
// accepts it when it has that session open with that token and the
// session's document has that direct link, served by the listener's
// bearer; the link is then bound to the session (a later link of the same
// name replaces it). Anything else is refused with an Error and the
// connection closed.
//
// On a bound link the provider serves the session's calls whose method
// the document routes over that link (others are refused: the document is
// the contract, and it is how the server's access policy holds), and
// sends the session's events and runtime data whose route falls on the
// link: the route's link, or its first fallback whose link is bound, when
// the route's own is not. Events wait in a bounded queue per link
// (maxLinkEvents, then EventsLost); runtime data is coalesced per link
// like the server's watches (the latest value of each changed path, read
// when sent). Over a datagram link, the values sent last are sent once
// more after a quiet moment (linkRefresh), so that a lost datagram does
// not leave a client with an old value for long.
//
// What the provider sends the server is unchanged, except for resources
// that its service file routes only directly (no alternative through the
// server, no direct_and_server): their events and runtime-data changes
// stay off the server connection (the whole runtime-data tree still goes
// to the server on every new connection).
//
// Each link has a reader and a writer goroutine, and each call one of its
// own, all owned by the provider. When the session closes (RemoteClose,
// the server connection ends, the provider closes), its links are closed.

// ProviderListener is a listener on which a Provider accepts direct links,
// with the bearer that serves it. The Provider owns it from NewProvider
// on, and closes it when it closes.
type ProviderListener struct {
	Listener bearers.Listener
	Bearer   bearers.Info
}

// Limits of direct links, runner side.
const (
	// linkHandshakeTimeout bounds the wait for a new link's LinkOpen.
	linkHandshakeTimeout = 10 * time.Second
	// linkIdleTimeout closes a link the client has sent nothing on for
	// this long (clients ping every 15 s by default).
	linkIdleTimeout = 60 * time.Second
	// linkWriteTimeout closes a stream link whose client does not read.
	linkWriteTimeout = 30 * time.Second
	// maxDirectConns bounds the direct links one provider serves at once
	// (handshaking or bound); one more is closed at once.
	maxDirectConns = 4096
	// maxLinkEvents bounds the events waiting for one link.
	maxLinkEvents = 256
	// maxLinkAnswers bounds the answers waiting for one link; the calls
	// running on it are bounded by maxProviderRunning.
	maxLinkAnswers = maxProviderRunning + 64
	// linkRefresh is the quiet after which a datagram link gets the values
	// it was sent last once more.
	linkRefresh = 200 * time.Millisecond
)

// directRunner is a provider's direct-link state; mu is never held while
// taking another lock but a directConn's omu.
type directRunner struct {
	mu      sync.Mutex
	sess    map[string]*directSession // sessions the server opened, by id
	conns   map[*directConn]struct{}  // every link, handshaking or bound
	stopped bool
	tags    tagRegistry       // tagged datagram links (unreliable.go)
	udp     *relayUDPListener // with Relay: the udp paths it dialed (provide_relay_udp.go)
	tagWarn rateLimit
	resume  linkResume // resume streams of reliable links (provide_resume.go)
}

// directSession is a session whose direct links the provider may accept.
type directSession struct {
	svc   *provided
	id    string
	token string
	doc   *routing.Document
	table *routing.Table
	links map[string]*directConn // bound, by link name; guarded by directRunner.mu
	// tagged: its datagram links carry session tags (unreliable.go).
	tagged bool
	// linkKey is the session's link key (RemoteOpen.LinkKey), nil without
	// one; with one, its links over stream bearers ride resume streams
	// (provide_resume.go).
	linkKey []byte
}

// effective returns the bound link that rt's messages take now, or nil
// when they go through the server (or nowhere). The caller holds
// directRunner.mu.
func (ds *directSession) effective(rt routing.Route) *directConn {
	if rt.Link == routing.ServerLinkName {
		return nil
	}
	if c := ds.links[rt.Link]; c != nil {
		return c
	}
	for _, f := range rt.Fallbacks {
		if f.Link == routing.ServerLinkName {
			return nil
		}
		if c := ds.links[f.Link]; c != nil {
			return c
		}
	}
	return nil
}

// serverNeeds says which resources of a service the server needs to be
// sent: all but those its service file routes only directly.
type serverNeeds struct {
	table *routing.Table
	data  []routing.Route // data routes that need the server, for descendants
}

// newServerNeeds reads a service file's routing declaration; nil when the
// server needs everything.
func newServerNeeds(desc *servicefile.Service) *serverNeeds {
	d := &routing.Document{}
	direct := false
	for _, rt := range desc.Routing.Routes {
		r := routing.Route{Resource: rt.Resource, Link: "x", LinkType: servicefile.Direct}
		for _, a := range rt.Alternatives {
			if a.LinkType != servicefile.Direct {
				r.LinkType = servicefile.Server
			}
		}
		direct = direct || r.LinkType == servicefile.Direct
		d.Routes = append(d.Routes, r)
	}
	if !direct {
		return nil
	}
	n := &serverNeeds{table: routing.NewTable(d)}
	for _, r := range d.Routes {
		if r.Resource.Kind == servicefile.DataResource && r.Resource.Name != servicefile.All && r.LinkType != servicefile.Direct {
			n.data = append(n.data, r)
		}
	}
	return n
}

// dataPath reports whether the server needs a change at path: its route
// may go through the server, or one below it may.
func (n *serverNeeds) dataPath(path string) bool {
	if n == nil {
		return true
	}
	if n.table.Lookup(servicefile.Resource{Kind: servicefile.DataResource, Name: path}).LinkType != servicefile.Direct {
		return true
	}
	for _, r := range n.data {
		if below(r.Resource.Name, path) {
			return true
		}
	}
	return false
}

// event reports whether the server needs an event.
func (n *serverNeeds) event(name string) bool {
	return n == nil || n.table.Lookup(servicefile.Resource{Kind: servicefile.EventResource, Name: name}).LinkType != servicefile.Direct
}

// checkListeners checks ProviderConfig.Listeners.
func checkListeners(ls []ProviderListener) error {
	for i, l := range ls {
		if l.Listener == nil {
			return fmt.Errorf("client: Listeners[%d] has no listener", i)
		}
		if err := l.Bearer.Validate(); err != nil {
			return fmt.Errorf("client: Listeners[%d]: %w", i, err)
		}
	}
	return nil
}

// startLinks accepts direct links on every listener until the provider
// stops; Serve calls it.
func (p *Provider) startLinks() {
	for i, l := range p.cfg.Listeners {
		if l.Bearer.Capabilities.Has(bearers.Datagram) { // session tags (unreliable.go)
			p.cfg.Listeners[i].Listener = newTagListener(p, l.Listener)
		}
	}
	context.AfterFunc(p.ctx, p.stopLinks)
	for _, l := range p.cfg.Listeners {
		if !p.goroutine(func() { p.acceptLinks(l) }) {
			return
		}
	}
}

// stopLinks closes the listeners and every link.
func (p *Provider) stopLinks() {
	d := &p.direct
	d.mu.Lock()
	d.stopped = true
	conns := make([]*directConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, l := range p.cfg.Listeners {
		l.Listener.Close()
	}
	d.resume.close() // provide_resume.go: the streams say goodbye
	for _, c := range conns {
		c.close()
	}
}

// closeListeners closes listeners the provider owns but never served.
func (p *Provider) closeListeners() {
	for _, l := range p.cfg.Listeners {
		l.Listener.Close()
	}
}

func (p *Provider) acceptLinks(l ProviderListener) {
	for {
		bc, err := l.Listener.Accept(p.ctx)
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accepting a direct link failed", "endpoint", l.Listener.Endpoint().String(), "error", err)
			select {
			case <-time.After(100 * time.Millisecond):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		dc := p.newDirectConn(bc, l.Bearer)
		if dc == nil {
			bc.Close()
			continue
		}
		if !p.goroutine(dc.serve) {
			dc.close()
			return
		}
	}
}

// addDirectSession records a session the server opened, so that its
// client may open its direct links. A session without a token or a
// routing document with direct links has none.
func (p *Provider) addDirectSession(svc *provided, m *session.RemoteOpen) {
	if m.Token == "" || len(m.Routing) == 0 {
		return
	}
	doc, err := routing.Parse("routing document of session "+m.Session, m.Routing)
	if err == nil && (doc.Session != m.Session || doc.Service != svc.name) {
		err = fmt.Errorf("it is the document of session %q of service %q", doc.Session, doc.Service)
	}
	if err != nil {
		p.log.Warn("the server sent a session's routing document the runner cannot use; its direct links will be refused", "service", svc.name, "session", m.Session, "error", err)
		return
	}
	hasDirect := false
	for _, l := range doc.Links {
		hasDirect = hasDirect || l.Kind == routing.DirectLink
	}
	if !hasDirect {
		return
	}
	ds := &directSession{svc: svc, id: m.Session, token: m.Token, doc: doc, table: routing.NewTable(doc), links: map[string]*directConn{}}
	d := &p.direct
	ds.tagged = d.tags.addSession(m.Session, doc, m.LinkKey, p.isDatagramBearer)
	if len(m.LinkKey) == session.LinkKeySize {
		ds.linkKey = m.LinkKey
	}
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	if d.sess == nil {
		d.sess = map[string]*directSession{}
	}
	old := d.sess[m.Session]
	d.sess[m.Session] = ds
	var stale []*directConn
	if old != nil {
		for _, c := range old.links {
			stale = append(stale, c)
		}
	}
	d.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// dropDirectSession forgets a session and closes its links.
func (p *Provider) dropDirectSession(id string) {
	d := &p.direct
	d.tags.dropSession(id)
	d.mu.Lock()
	ds := d.sess[id]
	delete(d.sess, id)
	var conns []*directConn
	if ds != nil {
		for _, c := range ds.links {
			conns = append(conns, c)
		}
	}
	d.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// directData hands a runtime-data change to the links it is routed over.
func (p *Provider) directData(svc *provided, path string) {
	d := &p.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ds := range d.sess {
		if ds.svc != svc || len(ds.links) == 0 {
			continue
		}
		if c := ds.effective(ds.table.Lookup(servicefile.Resource{Kind: servicefile.DataResource, Name: path})); c != nil {
			c.addPath(path)
		}
		for _, rt := range ds.doc.Routes { // routes below the change get their part of it
			n := rt.Resource.Name
			if rt.Resource.Kind != servicefile.DataResource || n == servicefile.All || n == path || !below(n, path) {
				continue
			}
			if c := ds.effective(rt); c != nil {
				c.addPath(n)
			}
		}
	}
}

// directEvent hands an event to the links it is routed over: those of
// one session, or of every session of the service.
func (p *Provider) directEvent(svc *provided, sessionID, name string, args []byte) {
	res := servicefile.Resource{Kind: servicefile.EventResource, Name: name}
	d := &p.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ds := range d.sess {
		if ds.svc != svc || len(ds.links) == 0 || sessionID != "" && ds.id != sessionID {
			continue
		}
		if c := ds.effective(ds.table.Lookup(res)); c != nil {
			c.addEvent(name, args)
		}
	}
}

// directConn is one direct link, runner side.
type directConn struct {
	p        *Provider
	bc       bearers.Conn
	wc       wire.Conn
	info     bearers.Info
	datagram bool
	limit    int
	ctx      context.Context // ends when the link closes
	cancel   context.CancelFunc
	once     sync.Once
	warn     rateLimit

	// Set when LinkOpen binds the link.
	ds     *directSession
	name   string
	openID uint64

	running atomic.Int32
	cmu     sync.Mutex
	calls   map[uint64]context.CancelCauseFunc

	omu     sync.Mutex
	answers []session.Message
	events  []session.Event
	lost    uint64
	paths   []string
	wake    chan struct{}

	msgsIn, msgsOut, bytesIn, bytesOut atomic.Uint64

	// st is the resume stream the link rides, once bound; handedOff marks
	// a connection given to a stream that another directConn serves
	// (provide_resume.go).
	st        atomic.Pointer[resume.Stream]
	handedOff atomic.Bool
}

// newDirectConn registers an accepted connection; nil when the provider
// stopped or serves as many links as it may.
func (p *Provider) newDirectConn(bc bearers.Conn, info bearers.Info) *directConn {
	dc := &directConn{p: p, bc: bc, info: info, datagram: info.Capabilities.Has(bearers.Datagram),
		calls: map[uint64]context.CancelCauseFunc{}, wake: make(chan struct{}, 1)}
	if dc.datagram {
		dc.limit = wire.MaxDatagramPayload
		if _, ok := bc.(*roamConn); ok {
			dc.limit -= session.TagOverhead // unreliable.go
		}
		dc.wc = wire.NewDatagramConn(bc, dc.limit)
	} else {
		dc.limit = wire.DefaultMaxPayload
		dc.wc = wire.NewStreamConn(bc, dc.limit)
	}
	dc.ctx, dc.cancel = context.WithCancel(p.ctx)
	d := &p.direct
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || len(d.conns) >= maxDirectConns {
		if !d.stopped {
			p.log.Warn("a direct link was refused: the runner serves as many as it may", "limit", maxDirectConns, "from", bc.RemoteAddr().String())
		}
		dc.cancel()
		return nil
	}
	if d.conns == nil {
		d.conns = map[*directConn]struct{}{}
	}
	d.conns[dc] = struct{}{}
	return dc
}

// close ends the link: its calls are cancelled, its goroutines end.
// Idempotent.
func (dc *directConn) close() {
	dc.once.Do(func() {
		dc.cancel()
		dc.closeIO() // provide_resume.go
		d := &dc.p.direct
		d.mu.Lock()
		delete(d.conns, dc)
		if dc.ds != nil && dc.ds.links[dc.name] == dc {
			delete(dc.ds.links, dc.name)
		}
		d.mu.Unlock()
	})
}

// serve runs one link: the handshake, then its requests until it ends.
func (dc *directConn) serve() {
	defer dc.close()
	from := dc.bc.RemoteAddr().String()
	if err := dc.handshake(); err != nil {
		if dc.ctx.Err() == nil {
			dc.p.log.Info("a direct link was not opened", "from", from, "bearer", dc.info.Type, "error", err)
		}
		return
	}
	if dc.handedOff.Load() {
		return // a connection that resumed a stream (provide_resume.go)
	}
	dc.p.log.Info("direct link open", "service", dc.ds.svc.name, "session", dc.ds.id, "link", dc.name, "from", from)
	err := dc.readLink() // provide_resume.go
	if dc.ctx.Err() != nil {
		err = errors.New("the session or the runner closed it")
	}
	dc.p.log.Info("direct link closed", append([]any{"service", dc.ds.svc.name, "session", dc.ds.id, "link", dc.name, "because", err,
		"messages_in", dc.msgsIn.Load(), "messages_out", dc.msgsOut.Load(), "bytes_in", dc.bytesIn.Load(), "bytes_out", dc.bytesOut.Load()}, dc.tagStats()...)...)
}

// handshake waits for the client's LinkOpen and binds the link, or
// refuses it.
func (dc *directConn) handshake() error {
	dc.bc.SetReadDeadline(time.Now().Add(linkHandshakeTimeout))
	for {
		m, err := dc.wc.ReadMessage()
		if err != nil {
			var de *wire.DecodeError
			if dc.datagram && errors.As(err, &de) {
				continue // a stray datagram
			}
			return err
		}
		switch m := m.(type) {
		case *wire.Ping:
			// A client that believes a link open here (this runner
			// restarted, or forgot an idle datagram peer): tell it.
			dc.bc.SetWriteDeadline(time.Now().Add(time.Second))
			dc.wc.WriteMessage(&wire.Close{Code: wire.CloseProtocolError, Reason: "no direct link is open on this connection; open one with LinkOpen"})
			return errors.New("a Ping before LinkOpen (a link the runner does not know)")
		case *wire.Data:
			if m.Channel != session.Channel {
				return fmt.Errorf("a Data frame on channel %d before LinkOpen", m.Channel)
			}
			dc.count(&dc.msgsIn, &dc.bytesIn, len(m.Payload))
			r, err := session.Decode(m.Payload)
			if err != nil {
				var de *session.DecodeError
				if errors.As(err, &de) && de.ID != 0 && de.Kind.IsRequest() {
					dc.writeNow(session.NewError(de.ID, session.CodeBadRequest, err.Error()))
				}
				return fmt.Errorf("the first message does not decode: %w", err)
			}
			lo, ok := r.(*session.LinkOpen)
			if !ok {
				if q, isReq := r.(session.Request); isReq && q.RequestID() != 0 {
					dc.writeNow(session.NewError(q.RequestID(), session.CodeBadRequest, fmt.Sprintf("the first message on a direct link is LinkOpen, not %v", r.Kind())))
				}
				return fmt.Errorf("the first message is %v, not LinkOpen", r.Kind())
			}
			return dc.bind(lo)
		default:
			return fmt.Errorf("the client sent %v before LinkOpen", m.Type())
		}
	}
}

// bind checks a LinkOpen and binds the link to its session.
func (dc *directConn) bind(lo *session.LinkOpen) error {
	d := &dc.p.direct
	d.mu.Lock()
	refuse := func(msg string) error {
		d.mu.Unlock()
		dc.writeNow(session.NewError(lo.ID, session.CodeDenied, msg))
		return errors.New(msg)
	}
	ds := d.sess[lo.Session]
	if ds == nil || subtle.ConstantTimeCompare([]byte(ds.token), []byte(lo.Token)) != 1 {
		return refuse(fmt.Sprintf("no open session %q with that token on this runner", lo.Session))
	}
	l := ds.doc.Link(lo.Link)
	if l == nil || l.Kind != routing.DirectLink {
		return refuse(fmt.Sprintf("session %s has no direct link %q", ds.id, lo.Link))
	}
	if l.Bearer != dc.info.Type {
		return refuse(fmt.Sprintf("link %q of session %s is opened with %s; this endpoint serves %s", lo.Link, ds.id, l.Bearer, dc.info.Type))
	}
	if why := dc.checkTagged(ds, lo); why != "" { // unreliable.go
		return refuse(why)
	}
	if why := dc.checkResume(ds, lo); why != "" { // provide_resume.go
		return refuse(why)
	}
	if d.stopped {
		return refuse("the runner is stopping")
	}
	if dc.resumes(ds, lo) {
		d.mu.Unlock()
		return dc.bindResume(ds, lo) // provide_resume.go
	}
	old := ds.links[lo.Link]
	ds.links[lo.Link] = dc
	dc.ds, dc.name, dc.openID = ds, lo.Link, lo.ID
	// The current values of the data routed here, to start with.
	var initial []string
	for _, rt := range ds.doc.Routes {
		if rt.Resource.Kind == servicefile.DataResource && ds.effective(rt) == dc {
			p := rt.Resource.Name
			if p == servicefile.All {
				p = ""
			}
			initial = append(initial, p)
		}
	}
	d.mu.Unlock()
	if old != nil {
		old.close()
	}
	if !dc.p.goroutine(dc.writer) {
		return errors.New("the runner is stopping")
	}
	dc.answer(&session.OK{ID: lo.ID})
	for _, p := range initial {
		dc.addPath(p)
	}
	return nil
}

// read serves the bound link's messages until it ends.
func (dc *directConn) read() error {
	for {
		dc.bc.SetReadDeadline(time.Now().Add(linkIdleTimeout))
		m, err := dc.wc.ReadMessage()
		if err != nil {
			var de *wire.DecodeError
			if dc.datagram && errors.As(err, &de) {
				if n, ok := dc.warn.allow(); ok {
					dc.p.log.Warn("a bad datagram on a direct link; dropped", "link", dc.name, "error", err, "suppressed", n)
				}
				continue
			}
			if isTimeout(err) {
				return fmt.Errorf("nothing from the client for %s", linkIdleTimeout)
			}
			return err
		}
		switch m := m.(type) {
		case *wire.Ping:
			dc.wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
		case *wire.Pong:
		case *wire.Close:
			return fmt.Errorf("the client closed it: %s", m.Reason)
		case *wire.Data:
			if m.Channel == session.Channel {
				dc.count(&dc.msgsIn, &dc.bytesIn, len(m.Payload))
				dc.handle(m.Payload)
			}
		default:
			return fmt.Errorf("the client sent %v on a direct link", m.Type())
		}
	}
}

// handle serves one session message of the client; it never waits.
func (dc *directConn) handle(payload []byte) {
	m, err := session.Decode(payload)
	if err != nil {
		var de *session.DecodeError
		if errors.As(err, &de) && de.ID != 0 && de.Kind.IsRequest() {
			code := session.CodeBadRequest
			if errors.Is(err, session.ErrUnknownKind) {
				code = session.CodeUnsupported
			}
			dc.answer(session.NewError(de.ID, code, err.Error()))
		}
		if n, ok := dc.warn.allow(); ok {
			dc.p.log.Warn("a bad message on a direct link; ignored", "link", dc.name, "error", err, "suppressed", n)
		}
		return
	}
	switch m := m.(type) {
	case *session.Call:
		dc.call(m)
	case *session.Cancel:
		dc.cmu.Lock()
		cancel := dc.calls[m.Target]
		dc.cmu.Unlock()
		if cancel != nil {
			cancel(errors.New("the caller stopped waiting"))
		}
	case *session.LinkOpen:
		if m.ID == dc.openID && m.Session == dc.ds.id && m.Link == dc.name {
			dc.answer(&session.OK{ID: m.ID}) // a datagram client that missed the answer
		} else {
			dc.answer(session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("this link is open already, as link %s of session %s", dc.name, dc.ds.id)))
		}
	case session.Request:
		dc.answer(session.NewError(m.RequestID(), session.CodeUnsupported,
			fmt.Sprintf("a direct link carries calls; send %v to the server (events and runtime data routed over this link arrive on it unasked)", m.Kind())))
	default:
		if n, ok := dc.warn.allow(); ok {
			dc.p.log.Warn("a direct link's client sent a message only a runner or a server sends; ignored", "link", dc.name, "kind", m.Kind().String(), "suppressed", n)
		}
	}
}

// call runs one call of the session, if its method is routed here.
func (dc *directConn) call(m *session.Call) {
	ds := dc.ds
	if m.Session != ds.id {
		dc.answer(session.NewError(m.ID, session.CodeUnknownSession, fmt.Sprintf("this direct link belongs to session %s, not %q", ds.id, m.Session)))
		return
	}
	if ds.svc.desc.Method(m.Method) == nil {
		dc.answer(session.NewError(m.ID, session.CodeUnknownMethod, fmt.Sprintf("service %s has no method %q (methods: %s)", ds.svc.name, m.Method, methodNames(ds.svc.desc))))
		return
	}
	rt := ds.table.Lookup(servicefile.Resource{Kind: servicefile.MethodResource, Name: m.Method})
	here := rt.Link == dc.name
	for _, f := range rt.Fallbacks {
		here = here || f.Link == dc.name
	}
	if !here {
		where := "over link " + rt.Link
		if rt.Link == routing.ServerLinkName {
			where = "through the server"
		}
		dc.answer(session.NewError(m.ID, session.CodeDenied, fmt.Sprintf("method %s of session %s goes %s, not over direct link %s (its routing document says so)", m.Method, ds.id, where, dc.name)))
		return
	}
	if dc.running.Add(1) > maxProviderRunning {
		dc.running.Add(-1)
		dc.answer(session.NewError(m.ID, session.CodeOverloaded, fmt.Sprintf("the runner is running %d calls of this link already; try again when some have finished", maxProviderRunning)))
		return
	}
	dc.cmu.Lock()
	if _, dup := dc.calls[m.ID]; dup {
		dc.cmu.Unlock()
		dc.running.Add(-1)
		dc.answer(session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("request id %d is already used by a running call", m.ID)))
		return
	}
	ctx, cancel := context.WithCancelCause(dc.ctx)
	dc.calls[m.ID] = cancel
	dc.cmu.Unlock()
	done := func() {
		dc.cmu.Lock()
		delete(dc.calls, m.ID)
		dc.cmu.Unlock()
		cancel(nil)
		dc.running.Add(-1)
	}
	if !dc.p.goroutine(func() {
		defer done()
		cctx := context.Context(ctx)
		if m.Timeout > 0 {
			var stop context.CancelFunc
			cctx, stop = context.WithTimeout(ctx, m.Timeout)
			defer stop()
		}
		res, err := ds.svc.h.Call(cctx, ds.id, m.Method, m.Args)
		if err != nil {
			dc.answer(errorAnswer(m.ID, err, session.CodeApplication))
			return
		}
		dc.answer(&session.Result{ID: m.ID, Value: res})
	}) {
		done()
	}
}

// answer queues a response for the writer.
func (dc *directConn) answer(m session.Message) {
	dc.omu.Lock()
	if len(dc.answers) < maxLinkAnswers {
		dc.answers = append(dc.answers, m)
	}
	dc.omu.Unlock()
	signal(dc.wake)
}

// addEvent queues an event; the caller may hold directRunner.mu.
func (dc *directConn) addEvent(name string, args []byte) {
	dc.omu.Lock()
	if len(dc.events) < maxLinkEvents {
		dc.events = append(dc.events, session.Event{Name: name, Args: args})
	} else {
		dc.lost++
	}
	dc.omu.Unlock()
	signal(dc.wake)
}

// addPath records a changed path (coalesced); the caller may hold
// directRunner.mu.
func (dc *directConn) addPath(path string) {
	dc.omu.Lock()
	dc.paths = coalesce(dc.paths, path, maxProviderPaths)
	dc.omu.Unlock()
	signal(dc.wake)
}

// writer sends the link's answers, events and data until it ends.
func (dc *directConn) writer() {
	var (
		last    []string // datagram links: the paths sent last, sent again after a quiet
		timer   = time.NewTimer(time.Hour)
		refresh <-chan time.Time
	)
	timer.Stop()
	defer timer.Stop()
	ds := dc.ds
	for {
		var again []string
		select {
		case <-dc.ctx.Done():
			return
		case <-dc.wake:
		case <-refresh:
			again, last, refresh = last, nil, nil
		}
		dc.omu.Lock()
		answers, events, lost, paths := dc.answers, dc.events, dc.lost, dc.paths
		dc.answers, dc.events, dc.lost, dc.paths = nil, nil, 0, nil
		dc.omu.Unlock()
		for _, m := range answers {
			if !dc.write(m) {
				return
			}
		}
		for i := range events {
			events[i].Session = ds.id
			if !dc.write(&events[i]) {
				return
			}
		}
		if lost > 0 && !dc.write(&session.EventsLost{Session: ds.id, Count: lost}) {
			return
		}
		send := paths
		if len(again) > 0 && len(paths) == 0 {
			send = again
		}
		for _, c := range ds.svc.encodePaths(send, dc.limit-session.MaxSessionID-16, dc.p.log) {
			if !dc.write(&session.DataChange{Session: ds.id, Watch: dc.openID, Path: c.Path, Value: c.Value}) {
				return
			}
		}
		if dc.datagram && len(paths) > 0 {
			last = paths
			timer.Reset(linkRefresh)
			refresh = timer.C
		}
	}
}

// write sends one message; false when the link failed (it is closed).
func (dc *directConn) write(m session.Message) bool {
	b, err := session.Encode(m)
	if err == nil && len(b) > dc.limit {
		err = fmt.Errorf("%d bytes, more than the link carries in one message (%d)", len(b), dc.limit)
	}
	if err != nil {
		if r, ok := m.(session.Response); ok {
			return dc.write(session.NewError(r.ResponseTo(), session.CodeTooLarge, err.Error()))
		}
		if n, ok := dc.warn.allow(); ok {
			dc.p.log.Warn("a message for a direct link was not sent", "link", dc.name, "kind", m.Kind().String(), "error", err, "suppressed", n)
		}
		return true
	}
	if st := dc.st.Load(); st != nil {
		return dc.sendStream(st, m, b) // provide_resume.go
	}
	if !dc.datagram {
		dc.bc.SetWriteDeadline(time.Now().Add(linkWriteTimeout))
	}
	if err := dc.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b}); err != nil {
		if dc.ctx.Err() == nil {
			dc.p.log.Info("writing on a direct link failed; it is closed", "link", dc.name, "error", err)
		}
		dc.close()
		return false
	}
	dc.count(&dc.msgsOut, &dc.bytesOut, len(b))
	return true
}

// writeNow writes one message before the writer runs (a refusal).
func (dc *directConn) writeNow(m session.Message) {
	b, err := session.Encode(m)
	if err != nil {
		return
	}
	dc.bc.SetWriteDeadline(time.Now().Add(time.Second))
	if dc.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b}) == nil {
		dc.count(&dc.msgsOut, &dc.bytesOut, len(b))
	}
}

func (dc *directConn) count(msgs, bytes *atomic.Uint64, n int) {
	msgs.Add(1)
	bytes.Add(uint64(n + wire.HeaderSize))
}

// coalesce adds path to a list of changed paths: a path under one already
// listed is covered by it, one above listed paths replaces them; beyond
// limit paths, the list becomes the whole tree ("").
func coalesce(pending []string, path string, limit int) []string {
	for _, q := range pending {
		if below(path, q) {
			return pending
		}
	}
	kept := pending[:0]
	for _, q := range pending {
		if !below(q, path) {
			kept = append(kept, q)
		}
	}
	clear(pending[len(kept):])
	pending = append(kept, path)
	if len(pending) > limit {
		clear(pending)
		pending = append(pending[:0], "")
	}
	return pending
}

// rateLimit lets one log line through per second.
type rateLimit struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// allow reports whether to log now, and how many lines it held back since.
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
