package core

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// Direct links (docs/REMOTE.md, "Direct links"): a client with a remote
// service's session opens the direct links of its routing document to the
// service's runner, and sends and receives the resources routed over them
// there, bypassing the server. The server's part:
//
//   - the client declares at StartSession whether it opens direct links
//     and which bearers it has adapters for; routing.Resolve picks each
//     route's alternative with that (clientSituation);
//   - the access policy is the server's: a session starts only when the
//     policy allows it (the runner gets the session's token only then),
//     and a method goes over a direct link only when the policy allows
//     this client every call of it without condition; any other method is
//     routed through the server, where every call is checked
//     (forceServerMethods). The runner refuses a call on a direct link for
//     a method the document routes elsewhere, so the document is the
//     contract;
//   - the server sends a session only the events and runtime data that
//     reach it through the server: those whose route, after the links the
//     client reported down (LinksDown), falls on the server link
//     (sessionRoutes.viaServer). What goes directly is the runner's to
//     send;
//   - it counts the messages and bytes of every session on the server
//     link (linkCounters), in /sessions and /metrics.

// clientSituation is what routing knows of the client that starts a
// session: what its StartSession declared.
func clientSituation(m *session.StartSession) routing.Client {
	if !m.Direct {
		return routing.Client{}
	}
	types := slices.Clone(m.Bearers)
	sort.Strings(types)
	return routing.Client{Bearers: slices.Compact(types), Direct: true}
}

// forceServerMethods routes through the server every method of a remote
// session's document that goes over a direct link although the policy
// does not allow this client every call of it unconditionally, so that
// the server checks each call. Links no route names any more are dropped.
// It reports the methods it moved.
func (s *Server) forceServerMethods(d *routing.Document, desc *servicefile.Service, pr principal, hs *hostedService) []string {
	if s.cfg == nil || s.cfg.Policy == nil || len(d.Routes) == 0 {
		return nil
	}
	table := routing.NewTable(d)
	var moved []string
	for _, m := range desc.Methods {
		res := servicefile.Resource{Kind: servicefile.MethodResource, Name: m.Name}
		if table.Lookup(res).Link == routing.ServerLinkName || s.callAlwaysAllowed(pr, hs, m.Name) {
			continue
		}
		moved = append(moved, m.Name)
	}
	if len(moved) == 0 {
		return nil
	}
	for _, name := range moved {
		res := servicefile.Resource{Kind: servicefile.MethodResource, Name: name}
		i := slices.IndexFunc(d.Routes, func(r routing.Route) bool { return r.Resource == res })
		if i >= 0 {
			d.Routes[i] = routing.ServerRoute(res)
		} else {
			d.Routes = append(d.Routes, routing.ServerRoute(res))
		}
	}
	used := map[string]bool{routing.ServerLinkName: true}
	for _, r := range d.Routes {
		used[r.Link] = true
		for _, f := range r.Fallbacks {
			used[f.Link] = true
		}
	}
	d.Links = slices.DeleteFunc(d.Links, func(l routing.Link) bool { return !used[l.Name] })
	return moved
}

// callAlwaysAllowed reports whether the policy allows pr every call of
// method, whatever the service's runtime data: the first rule that
// selects pr, the service and the method has no condition and allows
// (or no rule selects them and the default allows).
func (s *Server) callAlwaysAllowed(pr principal, hs *hostedService, method string) bool {
	if s.cfg == nil || s.cfg.Policy == nil {
		return true
	}
	pol := s.cfg.Policy
	for _, r := range pol.Rules {
		switch {
		case r.Service != "*" && r.Service != hs.cfg.Name,
			r.Client != "" && r.Client != pr.clientID,
			r.Identity != "" && r.Identity != pr.identity,
			r.Token != "" && r.Token != pr.token,
			r.Methods != nil && !slices.Contains(r.Methods, method):
			continue
		}
		return r.Allow && r.When == nil
	}
	return pol.Default == "allow"
}

// sessionRoutes is what the server knows of a remote session's routing:
// its document and the direct links the client reported down. nil for a
// session whose document has no direct link (everything goes through the
// server).
type sessionRoutes struct {
	doc   *routing.Document
	table *routing.Table

	mu   sync.Mutex
	down map[string]bool
}

func newSessionRoutes(d *routing.Document) *sessionRoutes {
	if d == nil || !slices.ContainsFunc(d.Links, func(l routing.Link) bool { return l.Kind == routing.DirectLink }) {
		return nil
	}
	return &sessionRoutes{doc: d, table: routing.NewTable(d), down: map[string]bool{}}
}

// viaServer reports whether res reaches the session through the server:
// the first link of its route (the route's link, then its fallbacks) that
// the client has not reported down is the server link. A resource with no
// usable link reaches the session nowhere.
func (r *sessionRoutes) viaServer(res servicefile.Resource) bool {
	if r == nil {
		return true
	}
	rt := r.table.Lookup(res)
	if rt.Link == routing.ServerLinkName {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.down[rt.Link] {
		return false
	}
	for _, f := range rt.Fallbacks {
		if f.Link == routing.ServerLinkName {
			return true
		}
		if !r.down[f.Link] {
			return false
		}
	}
	return false
}

// setDown replaces the links reported down; it reports whether the set
// changed, or an error naming a link the document does not have as a
// direct link.
func (r *sessionRoutes) setDown(links []string) (bool, error) {
	down := make(map[string]bool, len(links))
	for _, name := range links {
		l := r.doc.Link(name)
		if l == nil || l.Kind != routing.DirectLink {
			return false, fmt.Errorf("the session's routing document has no direct link %q", name)
		}
		down[name] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := len(down) != len(r.down)
	for name := range down {
		changed = changed || !r.down[name]
	}
	r.down = down
	return changed, nil
}

// linksDown answers a client's LinksDown: from now on the server sends the
// session what falls back to it, starting with the current value of every
// watched node. The answer is queued before the session is marked ready,
// so that the client reads the OK before those values (the writer writes
// answers first).
func (cs *connSessions) linksDown(m *session.LinksDown) {
	s := cs.lookup(m.Session)
	ans, ready := cs.setLinksDown(m)
	cs.answerFor(s, countOther, ans)
	if ready != nil {
		ready.mu.Lock()
		if !ready.closed {
			cs.markReady(ready)
		}
		ready.mu.Unlock()
	}
}

// setLinksDown records the links a client reported down; it returns the
// answer and the session to mark ready (nil: none).
func (cs *connSessions) setLinksDown(m *session.LinksDown) (session.Message, *clientSession) {
	s, e := cs.session(m.ID, m.Session)
	if e != nil {
		return e, nil
	}
	if s.routes == nil {
		if len(m.Links) == 0 {
			return &session.OK{ID: m.ID}, nil
		}
		return session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("session %s has no direct links", s.id)), nil
	}
	changed, err := s.routes.setDown(m.Links)
	if err != nil {
		return session.NewError(m.ID, session.CodeBadRequest, fmt.Sprintf("session %s: %v", s.id, err)), nil
	}
	var ready *clientSession
	if changed {
		cs.log.Info("the client reported direct links down", "service", s.hs.cfg.Name, "session", s.id, "links", m.Links)
		s.mu.Lock()
		notify := false
		for _, w := range s.watches {
			w.add(w.path)
			notify = notify || !w.muted
		}
		if notify && !s.closed {
			ready = s
		}
		s.mu.Unlock()
	}
	return &session.OK{ID: m.ID}, ready
}

// Counting the messages of sessions on the server link.

// The kinds of session messages a link counts apart.
const (
	countCall  = iota // Call from the client; its Result or Error
	countEvent        // Subscribe; Event, EventsLost
	countData         // Watch; Snapshot, DataChange
	countOther        // everything else of the session
	countKinds
)

// linkCounters count the session messages and bytes (frame header
// included) of one link in both directions.
type linkCounters struct {
	msgs  [2][countKinds]atomic.Uint64 // [0] from the client, [1] to it
	bytes [2]atomic.Uint64
}

const (
	fromClient = 0
	toClient   = 1
)

func (lc *linkCounters) add(dir, kind, n int) {
	lc.msgs[dir][kind].Add(1)
	lc.bytes[dir].Add(uint64(n + 12)) // wire.HeaderSize
}

// LinkCounters are the session messages one link carried, for /sessions.
type LinkCounters struct {
	// MessagesIn and BytesIn came from the client, MessagesOut and
	// BytesOut went to it; bytes count the frames (12-byte header and
	// message).
	MessagesIn  uint64 `json:"messagesIn"`
	MessagesOut uint64 `json:"messagesOut"`
	BytesIn     uint64 `json:"bytesIn"`
	BytesOut    uint64 `json:"bytesOut"`
	// Calls counts the calls the client made on the link, Events and
	// DataChanges the events and runtime-data changes it received there.
	Calls       uint64 `json:"calls"`
	Events      uint64 `json:"events"`
	DataChanges uint64 `json:"dataChanges"`
}

func (lc *linkCounters) snapshot() LinkCounters {
	var out LinkCounters
	for k := range countKinds {
		out.MessagesIn += lc.msgs[fromClient][k].Load()
		out.MessagesOut += lc.msgs[toClient][k].Load()
	}
	out.BytesIn, out.BytesOut = lc.bytes[fromClient].Load(), lc.bytes[toClient].Load()
	out.Calls = lc.msgs[fromClient][countCall].Load()
	out.Events = lc.msgs[toClient][countEvent].Load()
	out.DataChanges = lc.msgs[toClient][countData].Load()
	return out
}

// countKind classifies a session message for the counters.
func countKind(m session.Message) int {
	switch m.Kind() {
	case session.KindCall:
		return countCall
	case session.KindSubscribe, session.KindEvent, session.KindEventsLost:
		return countEvent
	case session.KindWatch, session.KindSnapshot, session.KindDataChange:
		return countData
	}
	return countOther
}

// count records a message of s on the server link, for the session and its
// service.
func (s *clientSession) count(dir, kind, n int) {
	s.link.add(dir, kind, n)
	s.hs.link.add(dir, kind, n)
}

// countIn counts a request from the client for one of its sessions; it
// runs on the connection's reader.
func (cs *connSessions) countIn(m session.Message, n int) {
	var sid string
	switch m := m.(type) {
	case *session.Call:
		sid = m.Session
	case *session.CloseSession:
		sid = m.Session
	case *session.Subscribe:
		sid = m.Session
	case *session.Watch:
		sid = m.Session
	case *session.Stop:
		sid = m.Session
	case *session.LinksDown:
		sid = m.Session
	default:
		return
	}
	cs.mu.Lock()
	s := cs.sessions[sid]
	cs.mu.Unlock()
	if s != nil {
		s.count(fromClient, countKind(m), n)
	}
}

// answerFor queues an answer to a request of session s, counting it.
func (cs *connSessions) answerFor(s *clientSession, kind int, m session.Message) {
	if n := cs.answer(m); n > 0 && s != nil {
		s.count(toClient, kind, n)
	}
}

// metricKinds name the counted kinds in /metrics.
var metricKinds = [countKinds]string{"call", "event", "data", "other"}

// writeLinkMetrics writes the server-link counters of every service's
// sessions to /metrics.
func (s *Server) writeLinkMetrics(b *strings.Builder) {
	all := s.allServices()
	sort.Slice(all, func(i, j int) bool { return all[i].cfg.Name < all[j].cfg.Name })
	fmt.Fprintf(b, "# HELP connect_session_link_messages_total Session messages on the server link per service, from the clients (direction=\"in\") and to them (\"out\"), by kind: call (calls and their answers), event, data (watches, snapshots, changes), other. Messages on direct links between clients and a remote service's runner bypass the server and are not counted.\n# TYPE connect_session_link_messages_total counter\n")
	dirs := [2]string{"in", "out"}
	for _, hs := range all {
		for dir := range 2 {
			for k := range countKinds {
				fmt.Fprintf(b, "connect_session_link_messages_total{service=%q,link=\"server\",direction=%q,kind=%q} %d\n",
					hs.cfg.Name, dirs[dir], metricKinds[k], hs.link.msgs[dir][k].Load())
			}
		}
	}
	fmt.Fprintf(b, "# HELP connect_session_link_bytes_total Bytes of the session messages on the server link per service (frames: header and message), from the clients (direction=\"in\") and to them (\"out\").\n# TYPE connect_session_link_bytes_total counter\n")
	for _, hs := range all {
		for dir := range 2 {
			fmt.Fprintf(b, "connect_session_link_bytes_total{service=%q,link=\"server\",direction=%q} %d\n", hs.cfg.Name, dirs[dir], hs.link.bytes[dir].Load())
		}
	}
}
