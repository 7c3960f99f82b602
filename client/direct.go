package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Direct links, client side (docs/ROUTING.md, "How a client uses the
// document"; docs/PROTOCOL.md, "Direct links").
//
// StartSession declares the client's link bearers (Config.LinkBearers) to
// the server, which resolves the session's routing document with them.
// Before StartSession returns, the session opens every direct link of its
// document, in parallel: it dials the link's address with the bearer of
// the link's type, frames the connection like a server connection and
// sends LinkOpen with the link's token; the runner answers OK. A link
// that cannot be opened is down: each route over it takes its first
// fallback whose link is up (a note says so, Notes, and the log), the
// server is told (LinksDown) so that it sends what now falls back to it,
// and a route with no usable link fails the session start with an error
// naming the route, the link and why.
//
// From then on a call goes on the link its method's route takes (Call),
// and the runner sends the events and runtime data routed over a link on
// that link: they reach Subscribe's and Watch's channels like those from
// the server (subscriptions and watches are made with the server, which
// leaves out what comes directly). Each direct link has a reader and a
// keepalive goroutine, owned by the session. A reliable link of a session
// with a secret rides a resume stream and survives breaks
// (direct_resume.go). Any other link that breaks, or a stream lost for
// good, is down, as above, until it is reopened; calls waiting on it fail
// with an error matching ErrLinkLost. Closing or ending the session closes
// its links.
//
// Every link counts the session's messages and bytes, in both directions
// (LinkStats): that is how a test proves which link a message used.

// ErrLinkLost: a direct link to the service's runner was lost before the
// runner answered (a link without a resume stream broke, or a link's
// stream was lost for good); the error says whether the method may have
// run. The session goes on: later calls take the route's fallback, if it
// has one.
var ErrLinkLost = errors.New("a direct link to the service's runner was lost")

const (
	// maxDirectCache bounds the runtime-data paths a session remembers
	// from its direct links (to give a new watch their latest values).
	maxDirectCache = 1024
	// defaultLinkPing is the keepalive interval of direct links when the
	// server announced none.
	defaultLinkPing = wire.DefaultPingIntervalMillis * time.Millisecond
	// datagramLinkPing is the keepalive interval of datagram links: a
	// datagram tells a vanished runner only when one is sent.
	datagramLinkPing = 2 * time.Second
	// reopenMin and reopenMax bound the wait between attempts to reopen a
	// lost direct link.
	reopenMin = 250 * time.Millisecond
	reopenMax = 5 * time.Second
)

// checkLinkBearers checks Config.LinkBearers: valid bearers, one per type.
func checkLinkBearers(bs []bearers.Bearer) error {
	seen := map[string]bool{}
	for i, b := range bs {
		if b == nil {
			return fmt.Errorf("client: LinkBearers[%d] is nil", i)
		}
		info := b.Info()
		if err := info.Validate(); err != nil {
			return fmt.Errorf("client: LinkBearers[%d]: %w", i, err)
		}
		if seen[info.Type] {
			return fmt.Errorf("client: LinkBearers has two bearers of type %s; give one per type", info.Type)
		}
		seen[info.Type] = true
	}
	return nil
}

// linkTypes lists the bearer types of bs, sorted.
func linkTypes(bs []bearers.Bearer) []string {
	if len(bs) == 0 {
		return nil
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Info().Type
	}
	sort.Strings(out)
	return out
}

// linkBearer returns the link bearer of type t, or nil.
func (c *Client) linkBearer(t string) bearers.Bearer {
	for _, b := range c.cfg.LinkBearers {
		if b.Info().Type == t {
			return b
		}
	}
	return nil
}

// linkCounter counts the messages of one session on one link.
type linkCounter struct {
	msgsSent, msgsReceived, bytesSent, bytesReceived atomic.Uint64
	calls, events, data                              atomic.Uint64
}

// sent counts a message of n bytes sent (nil: not counted).
func (c *linkCounter) sent(m session.Message, n int) {
	if c == nil {
		return
	}
	c.msgsSent.Add(1)
	c.bytesSent.Add(uint64(n + wire.HeaderSize))
	if m.Kind() == session.KindCall {
		c.calls.Add(1)
	}
}

// received counts a message of n bytes received (nil: not counted).
func (c *linkCounter) received(m session.Message, n int) {
	if c == nil {
		return
	}
	c.msgsReceived.Add(1)
	c.bytesReceived.Add(uint64(n + wire.HeaderSize))
	switch m.Kind() {
	case session.KindEvent, session.KindEventsLost:
		c.events.Add(1)
	case session.KindDataChange, session.KindSnapshot:
		c.data.Add(1)
	}
}

// LinkStats describes one link of a session and counts the session's
// messages on it.
type LinkStats struct {
	// Link is the link's name in the routing document: "server",
	// "reliable", "unreliable" or a link the service declares.
	Link string `json:"link"`
	// Kind is routing.ServerLink or routing.DirectLink.
	Kind routing.LinkKind `json:"kind"`
	// Bearer and Address are a direct link's bearer type and address.
	Bearer  string `json:"bearer,omitempty"`
	Address string `json:"address,omitempty"`
	// Open is true while the link carries the session's messages; Down
	// says why a direct link does not (it could not be opened, or broke).
	Open bool   `json:"open"`
	Down string `json:"down,omitempty"`
	// Messages and bytes of the session on the link; bytes count frames
	// (12-byte header and message).
	MessagesSent     uint64 `json:"messagesSent"`
	MessagesReceived uint64 `json:"messagesReceived"`
	BytesSent        uint64 `json:"bytesSent"`
	BytesReceived    uint64 `json:"bytesReceived"`
	// Calls counts the calls sent on the link; Events the events (and
	// gap markers) received on it; DataChanges the runtime-data values
	// (snapshots and changes) received on it.
	Calls       uint64 `json:"calls"`
	Events      uint64 `json:"events"`
	DataChanges uint64 `json:"dataChanges"`
	// Rejected counts the datagrams of a tagged datagram link dropped
	// because their session tag did not verify or they were replays
	// (docs/PROTOCOL.md §15.1).
	Rejected uint64 `json:"rejected,omitempty"`
	// Resumable is true when the link rides a resume stream (a reliable
	// link of a session with a secret, docs/ROUTING.md "When a direct link
	// breaks or moves"); Attaches then counts the connections the stream
	// attached (1 + resumptions), and Connected says whether one carries
	// it now (false while it resumes).
	Resumable bool `json:"resumable,omitempty"`
	Attaches  int  `json:"attaches,omitempty"`
	Connected bool `json:"connected,omitempty"`
}

func (st *LinkStats) fill(c *linkCounter) {
	st.MessagesSent, st.MessagesReceived = c.msgsSent.Load(), c.msgsReceived.Load()
	st.BytesSent, st.BytesReceived = c.bytesSent.Load(), c.bytesReceived.Load()
	st.Calls, st.Events, st.DataChanges = c.calls.Load(), c.events.Load(), c.data.Load()
}

// directState is a session's direct links; guarded by Session.mu.
type directState struct {
	links map[string]*directLink  // open, by name
	ctrs  map[string]*linkCounter // counters by link name, across reopenings
	down  map[string]string       // why a link is down, by name
	notes []string
	cache map[string][]byte // the latest value of each path received directly
	// linkKey tags the datagram links (nil: untagged); tags is their
	// state by link name, across reopenings (unreliable.go).
	linkKey []byte
	tags    map[string]*linkTags
}

// takeAll forgets the open links and returns them, to close.
func (d *directState) takeAll() []*directLink {
	out := make([]*directLink, 0, len(d.links))
	for _, dl := range d.links {
		out = append(out, dl)
	}
	d.links = nil
	return out
}

// directLink is one open direct link of a session.
type directLink struct {
	s      *Session
	name   string
	link   routing.Link
	l      *link     // the connection
	sl     *sessLink // its requests and the dispatch of what arrives
	ctr    *linkCounter
	openID uint64 // the LinkOpen's id, which the runner's DataChanges carry
	// key is the link's resume key when it asks for (and, after open, got)
	// a resume stream; st is that stream (direct_resume.go).
	key []byte
	st  *resume.Stream
	cur linkConnRef // the stream's connection now
}

func (dl *directLink) close() {
	if dl.st != nil { // direct_resume.go
		dl.st.Close()
	}
	dl.l.close()
}

// LinkStats returns the session's links, in the order of its routing
// document (the server link first), with their state and counters.
func (s *Session) LinkStats() []LinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LinkStats, 0, len(s.doc.Links))
	for _, l := range s.doc.Links {
		st := LinkStats{Link: l.Name, Kind: l.Kind}
		if l.Kind == routing.ServerLink {
			st.Open = s.err == nil
			st.fill(&s.serverCtr)
			out = append(out, st)
			continue
		}
		st.Bearer, st.Address = l.Bearer, l.Address.String()
		st.Open = s.direct.links[l.Name] != nil
		st.Down = s.direct.down[l.Name]
		if c := s.direct.ctrs[l.Name]; c != nil {
			st.fill(c)
		}
		st.Rejected = s.tagRejected(l.Name)
		if dl := s.direct.links[l.Name]; dl != nil {
			dl.fillStream(&st) // direct_resume.go
		}
		out = append(out, st)
	}
	return out
}

// Notes says what the session does otherwise than its routing document
// routes it, one line each: the routes that took a fallback because a
// direct link could not be opened or broke ("route method play: link
// reliable unreachable (...); using server").
func (s *Session) Notes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.direct.notes...)
}

// counterOn returns the session's counter for messages on sl.
func (s *Session) counterOn(sl *sessLink) *linkCounter {
	if sl.direct != nil {
		return sl.direct.ctr
	}
	return &s.serverCtr
}

// effectiveLocked returns the link rt takes now: its own, or the first
// fallback whose link is up; false when none is. The caller holds s.mu.
func (s *Session) effectiveLocked(rt routing.Route) (string, bool) {
	up := func(name string) bool { return name == routing.ServerLinkName || s.direct.links[name] != nil }
	if up(rt.Link) {
		return rt.Link, true
	}
	for _, f := range rt.Fallbacks {
		if up(f.Link) {
			return f.Link, true
		}
	}
	return "", false
}

// callLink returns the link a call of method goes on, with its counter.
func (s *Session) callLink(op, method string) (*sessLink, *linkCounter, error) {
	rt := s.table.Lookup(servicefile.Resource{Kind: servicefile.MethodResource, Name: method})
	if rt.Link == routing.ServerLinkName {
		return s.sl, &s.serverCtr, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.effectiveLocked(rt)
	switch {
	case !ok:
		why := s.direct.down[rt.Link]
		if why == "" {
			why = "not open"
		}
		return nil, nil, &Error{Op: op, Code: session.CodeUnavailable,
			Message: fmt.Sprintf("method %s goes over direct link %s, which is down (%s), and its route has no fallback that works", method, rt.Link, why)}
	case name == routing.ServerLinkName:
		return s.sl, &s.serverCtr, nil
	}
	dl := s.direct.links[name]
	return dl.sl, dl.ctr, nil
}

// openLinks opens the direct links of the session's document (see the
// comment at the top of this file). An error fails the session start.
func (s *Session) openLinks(ctx context.Context) error {
	var want []routing.Link
	for _, l := range s.doc.Links {
		if l.Kind == routing.DirectLink {
			want = append(want, l)
		}
	}
	if len(want) == 0 {
		return nil
	}
	type result struct {
		dl  *directLink
		err error
	}
	results := make([]result, len(want))
	s.mu.Lock()
	s.direct.ctrs = map[string]*linkCounter{}
	for _, l := range want {
		s.direct.ctrs[l.Name] = &linkCounter{}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for i, l := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dl, err := s.dial(ctx, l)
			results[i] = result{dl, err}
		}()
	}
	wg.Wait()

	s.mu.Lock()
	if s.err != nil { // ended meanwhile
		err := s.err
		s.mu.Unlock()
		for _, r := range results {
			if r.dl != nil {
				r.dl.close()
			}
		}
		return err
	}
	s.direct.links, s.direct.down = map[string]*directLink{}, map[string]string{}
	for i, r := range results {
		name := want[i].Name
		if r.err != nil {
			s.direct.down[name] = "unreachable (" + r.err.Error() + ")"
			continue
		}
		s.direct.links[name] = r.dl
	}
	var problems []string
	for _, rt := range s.doc.Routes {
		name, ok := s.effectiveLocked(rt)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("route %s: link %s %s, and the route has no fallback that works", rt.Resource, rt.Link, s.direct.down[rt.Link]))
		case name != rt.Link:
			s.direct.notes = append(s.direct.notes, fmt.Sprintf("route %s: link %s %s; using %s", rt.Resource, rt.Link, s.direct.down[rt.Link], name))
		}
	}
	notes := append([]string(nil), s.direct.notes...)
	down := len(s.direct.down) > 0
	s.mu.Unlock()

	for _, r := range results {
		if r.dl != nil {
			s.startLink(r.dl)
		}
	}
	op := "start session with " + s.service
	if len(problems) > 0 {
		return &Error{Op: op, Code: session.CodeUnavailable, Message: strings.Join(problems, "; ")}
	}
	for _, n := range notes {
		s.c.log.Info("direct link: "+n, "service", s.service, "session", s.ID)
	}
	if down {
		s.reportDown(ctx)
	}
	return nil
}

// dial opens one direct link: dial, frame, LinkOpen, and the link's
// resume stream when it has one (direct_resume.go).
func (s *Session) dial(ctx context.Context, l routing.Link) (*directLink, error) {
	dl, err := s.dialConn(ctx, l)
	if err != nil {
		return nil, err
	}
	if err := s.startLinkStream(ctx, dl); err != nil {
		dl.close()
		return nil, err
	}
	return dl, nil
}

// dialConn opens one direct link's connection: dial, frame, LinkOpen.
func (s *Session) dialConn(ctx context.Context, l routing.Link) (*directLink, error) {
	b := s.c.linkBearer(l.Bearer)
	if b == nil {
		return nil, fmt.Errorf("the client has no %s adapter", l.Bearer)
	}
	info := b.Info()
	if l.Secure && !info.Capabilities.Has(bearers.Secure) {
		return nil, fmt.Errorf("the link must be secure, and the client's %s adapter is not", l.Bearer)
	}
	ctx, cancel := context.WithTimeout(ctx, s.c.cfg.LinkOpenTimeout)
	defer cancel()
	bc, err := b.Dial(ctx, l.Address)
	if err != nil {
		return nil, err
	}
	lk := &link{bc: bc, datagram: info.Capabilities.Has(bearers.Datagram), pending: map[uint64]chan struct{}{}, done: make(chan struct{})}
	if lk.datagram {
		var limit int
		lk.bc, limit = s.tagged(l.Name, bc) // unreliable.go
		lk.wc = wire.NewDatagramConn(lk.bc, limit)
	} else {
		lk.wc = wire.NewStreamConn(bc, wire.DefaultMaxPayload)
	}
	s.mu.Lock()
	ctr := s.direct.ctrs[l.Name]
	s.mu.Unlock()
	if ctr == nil {
		ctr = &linkCounter{}
	}
	dl := &directLink{s: s, name: l.Name, link: l, l: lk, ctr: ctr}
	if !lk.datagram {
		dl.key = s.linkResumeKey(l.Name) // direct_resume.go
	}
	dl.sl = newLinkSessions(lk, s.c.log)
	dl.sl.direct = dl
	dl.sl.sessions[s.ID] = s
	if err := dl.open(ctx); err != nil {
		lk.close()
		return nil, err
	}
	return dl, nil
}

// open sends LinkOpen and waits for the runner's answer (resending it
// over a datagram bearer until answered).
func (dl *directLink) open(ctx context.Context) error {
	sl, lk := dl.sl, dl.l
	dl.openID = sl.nextID.Add(1)
	m := &session.LinkOpen{ID: dl.openID, Session: dl.s.ID, Link: dl.name, Token: dl.link.Token, Resume: dl.key != nil}
	n, err := sl.sendN(ctx, "open link", m)
	if err != nil {
		return err
	}
	dl.ctr.sent(m, n)
	if d, ok := ctx.Deadline(); ok {
		lk.bc.SetReadDeadline(d)
	}
	unblock := context.AfterFunc(ctx, func() { lk.bc.SetReadDeadline(time.Now()) })
	defer unblock()
	if lk.datagram {
		stop := make(chan struct{})
		defer close(stop)
		go func() { // resend until answered; ends with open
			t := time.NewTicker(retransmitInterval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if n, err := sl.sendN(ctx, "open link", m); err == nil {
						dl.ctr.sent(m, n)
					}
				}
			}
		}()
	}
	for {
		msg, err := lk.wc.ReadMessage()
		if err != nil {
			var de *wire.DecodeError
			if lk.datagram && errors.As(err, &de) {
				continue // one bad datagram
			}
			if isTimeout(err) {
				return fmt.Errorf("no answer to LinkOpen within %s", dl.s.c.cfg.LinkOpenTimeout)
			}
			return err
		}
		switch msg := msg.(type) {
		case *wire.Ping:
			lk.wc.WriteMessage(&wire.Pong{ID: msg.ID, SentUnixNano: msg.SentUnixNano})
		case *wire.Close:
			return fmt.Errorf("the runner closed the link: %s", msg.Reason)
		case *wire.Data:
			if msg.Channel != session.Channel {
				continue
			}
			r, err := session.Decode(msg.Payload)
			if err != nil {
				return fmt.Errorf("the runner's answer to LinkOpen does not decode: %w", err)
			}
			switch r := r.(type) {
			case *session.OK:
				if r.ID == dl.openID {
					dl.ctr.received(r, len(msg.Payload))
					lk.bc.SetReadDeadline(time.Time{})
					if !r.Resume {
						dl.key = nil // a runner without resume streams: a plain link
					}
					return nil
				}
			case *session.Error:
				if r.ID == dl.openID {
					dl.ctr.received(r, len(msg.Payload))
					return &linkRefusedError{msg: r.Message} // direct_resume.go
				}
			}
			// Anything else before the answer (a datagram overtaking
			// it) is dropped.
		}
	}
}

// pingInterval is the keepalive interval of a direct link: the server
// connection's, and at most datagramLinkPing for a datagram link.
func (s *Session) pingInterval(dl *directLink) time.Duration {
	d := defaultLinkPing
	if w := s.c.welcome(); w != nil && w.PingIntervalMillis > 0 {
		d = time.Duration(w.PingIntervalMillis) * time.Millisecond
	}
	if dl.l.datagram {
		d = min(d, datagramLinkPing)
	}
	return d
}

// startLink runs an open link's reader and keepalive, as pumps of the
// session (Close and Client.Close wait for them).
func (s *Session) startLink(dl *directLink) {
	if dl.st != nil {
		s.startStreamLink(dl) // direct_resume.go
		return
	}
	if s.addPump() != nil {
		dl.close()
		return
	}
	if s.addPump() != nil {
		s.pumpDone()
		dl.close()
		return
	}
	interval := s.pingInterval(dl)
	go func() {
		defer s.pumpDone()
		dl.keepalive(interval)
	}()
	go func() {
		defer s.pumpDone()
		err := dl.serve(interval)
		dl.sl.end(err)
		dl.close()
		s.linkEnded(dl, err)
	}()
}

// serve reads the link until it fails.
func (dl *directLink) serve(interval time.Duration) error {
	lk := dl.l
	for {
		lk.bc.SetReadDeadline(time.Now().Add(3 * interval))
		m, err := lk.wc.ReadMessage()
		if err != nil {
			var de *wire.DecodeError
			if lk.datagram && errors.As(err, &de) {
				continue
			}
			if isTimeout(err) {
				return fmt.Errorf("no traffic from the runner for %s", 3*interval)
			}
			return err
		}
		switch m := m.(type) {
		case *wire.Ping:
			lk.wc.WriteMessage(&wire.Pong{ID: m.ID, SentUnixNano: m.SentUnixNano})
		case *wire.Close:
			return fmt.Errorf("the runner closed the link: %s", m.Reason)
		case *wire.Data:
			if m.Channel == session.Channel {
				dl.sl.handle(m.Payload)
			}
		}
	}
}

// keepalive pings the runner until the link ends.
func (dl *directLink) keepalive(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-dl.sl.done:
			return
		case <-t.C:
			dl.l.wc.WriteMessage(&wire.Ping{ID: 0, SentUnixNano: time.Now().UnixNano()})
		}
	}
}

// linkEnded runs when a link's reader stopped: unless the session closed
// it, the link is down from now on, and the server is told.
func (s *Session) linkEnded(dl *directLink, err error) {
	s.mu.Lock()
	if s.err != nil || s.direct.links[dl.name] != dl {
		s.mu.Unlock()
		return
	}
	var before []string
	for _, rt := range s.doc.Routes {
		name, _ := s.effectiveLocked(rt)
		before = append(before, name)
	}
	delete(s.direct.links, dl.name)
	s.direct.down[dl.name] = fmt.Sprintf("lost (%v)", err)
	clear(s.direct.cache) // what falls back comes from elsewhere now
	var notes []string
	for i, rt := range s.doc.Routes {
		if before[i] != dl.name {
			continue
		}
		if name, ok := s.effectiveLocked(rt); ok {
			notes = append(notes, fmt.Sprintf("route %s: link %s %s; using %s", rt.Resource, dl.name, s.direct.down[dl.name], name))
		} else {
			notes = append(notes, fmt.Sprintf("route %s: link %s %s, and the route has no fallback that works: its messages are not delivered", rt.Resource, dl.name, s.direct.down[dl.name]))
		}
	}
	s.direct.notes = append(s.direct.notes, notes...)
	s.mu.Unlock()
	for _, n := range notes {
		s.c.log.Warn("direct link: "+n, "service", s.service, "session", s.ID)
	}
	if s.addPump() == nil {
		go func() {
			defer s.pumpDone()
			ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			s.reportDown(ctx)
			cancel()
			s.reopen(dl.link)
		}()
	}
}

// reopen opens a lost direct link again, with backoff, until it succeeds
// or the session ends (a runner that restarted accepts it once the server
// has reopened the session on it).
func (s *Session) reopen(l routing.Link) {
	wait := reopenMin
	for {
		select {
		case <-s.done:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, reopenMax)
		dctx, dcancel := context.WithCancel(context.Background())
		stop := context.AfterFunc(s.c.ctx, dcancel)
		go func() { // the session's end abandons the attempt; ends with it
			select {
			case <-s.done:
				dcancel()
			case <-dctx.Done():
			}
		}()
		dl, err := s.dial(dctx, l)
		stop()
		dcancel()
		if err != nil {
			s.c.log.Debug("reopening a direct link failed; trying again", "session", s.ID, "link", l.Name, "error", err)
			continue
		}
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			dl.close()
			return
		}
		s.direct.links[l.Name] = dl
		delete(s.direct.down, l.Name)
		clear(s.direct.cache)
		note := fmt.Sprintf("link %s reopened", l.Name)
		s.direct.notes = append(s.direct.notes, note)
		s.mu.Unlock()
		s.c.log.Info("direct link: "+note, "service", s.service, "session", s.ID)
		s.startLink(dl)
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		s.reportDown(ctx)
		cancel()
		return
	}
}

// reportDown tells the server which direct links of the session are down.
func (s *Session) reportDown(ctx context.Context) {
	s.mu.Lock()
	names := make([]string, 0, len(s.direct.down))
	for name := range s.direct.down {
		names = append(names, name)
	}
	open := s.err == nil
	s.mu.Unlock()
	if !open {
		return
	}
	sort.Strings(names)
	_, err := s.sl.roundTripOn(ctx, "report links down", func(id uint64) session.Message {
		return &session.LinksDown{ID: id, Session: s.ID, Links: names}
	}, nil, &s.serverCtr)
	if err != nil && s.Err() == nil {
		s.c.log.Warn("telling the server that direct links are down failed; what falls back to it may not arrive", "session", s.ID, "links", names, "error", err)
	}
}

// onDirectData takes a runtime-data value the runner sent on a direct
// link: it is remembered (for watches started later) and applied to the
// watches it concerns.
func (s *Session) onDirectData(dl *directLink, m *session.DataChange) {
	if m.Watch != dl.openID {
		s.sl.log.Warn("the runner sent a runtime-data change for another stream; dropped", "link", dl.name, "watch", m.Watch)
		return
	}
	t, err := typeAt(s.desc.Data.Type, m.Path)
	if err == nil {
		_, err = services.DecodeValue(t, m.Value)
	}
	if err != nil {
		s.sl.log.Warn("the runner sent a runtime-data change that does not fit; dropped", "link", dl.name, "path", m.Path, "error", err)
		return
	}
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	if old, ok := s.direct.cache[m.Path]; ok && bytes.Equal(old, m.Value) {
		s.mu.Unlock()
		return // sent again (a datagram link's refresh): nothing new
	}
	if s.direct.cache == nil {
		s.direct.cache = map[string][]byte{}
	}
	for p := range s.direct.cache { // a newer value above covers them
		if below(p, m.Path) {
			delete(s.direct.cache, p)
		}
	}
	if len(s.direct.cache) >= maxDirectCache {
		clear(s.direct.cache)
	}
	s.direct.cache[m.Path] = m.Value
	watches := make([]*watchState, 0, len(s.watches))
	for _, w := range s.watches {
		watches = append(watches, w)
	}
	s.mu.Unlock()
	for _, w := range watches {
		w.applyAt(s.desc, m.Path, m.Value)
	}
}

// cached returns the remembered direct values at or below path (all of
// them for ""), ancestors first.
func (s *Session) cached(under string, strict bool) [][2]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][2]string
	for p, v := range s.direct.cache {
		if below(p, under) && (!strict || p != under) {
			out = append(out, [2]string{p, string(v)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i][0]) < len(out[j][0]) })
	return out
}

// applyDirect gives a new watch the values that came directly.
func (s *Session) applyDirect(w *watchState) {
	for _, e := range s.cached("", false) {
		w.applyAt(s.desc, e[0], []byte(e[1]))
	}
}

// reapplyDirect applies, after a value from the server at path, the newer
// values that came directly below it.
func (s *Session) reapplyDirect(w *watchState, path string) {
	for _, e := range s.cached(path, true) {
		w.applyAt(s.desc, e[0], []byte(e[1]))
	}
}

// applyAt applies a value at path, which may lie below the watched node
// or above it; a watch without its snapshot yet ignores it.
func (w *watchState) applyAt(desc *servicefile.Service, path string, enc []byte) {
	switch {
	case below(path, w.path):
		w.change(path, enc) // fails only before the snapshot
	case below(w.path, path):
		t, err := typeAt(desc.Data.Type, path)
		if err != nil {
			return
		}
		v, err := services.DecodeValue(t, enc)
		if err != nil {
			return
		}
		sub, err := lookupAt(v, splitPath(relative(w.path, path)))
		if err != nil {
			return
		}
		w.mu.Lock()
		if w.have {
			w.value = sub
			w.add(w.path)
		}
		w.mu.Unlock()
		signal(w.wake)
	}
}
