package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Session tags on datagram direct links (docs/PROTOCOL.md §15.1,
// session/tag.go).
//
// When a session has a secret (it lives on a resume stream), every
// datagram of its datagram links (unreliable, udp) is a tagged envelope:
// link id, counter, wire frame, truncated HMAC-SHA256 under a key derived
// from the secret. The client's end of such a link is a tagConn around its
// connected socket; Session.Roam moves it onto a new socket (a new source
// address) without anything else noticing. The runner's datagram listeners
// are wrapped by a tagListener, which reads every peer (source address)
// itself and hands each datagram to the link its id names, if its tag
// verifies and its counter is fresh; the link (a roamConn, what the
// provider's directConn reads and writes) sends to the source address of
// the newest datagram taken. A datagram that fails is dropped and counted,
// and changes nothing. A session without a secret gets untagged links, as
// before: they end with their socket.

// linkTags is one datagram link's tag state at one end, kept across the
// link's reopenings so that counters never repeat and replays of an
// earlier incarnation stay refused.
type linkTags struct {
	keys     session.LinkTagKeys
	send     *[32]byte // our direction's key
	recv     *[32]byte // the peer's
	mu       sync.Mutex
	next     uint64 // the next counter we send
	window   session.ReplayWindow
	rejected atomic.Uint64 // datagrams dropped: bad tag, replay, malformed
	moves    atomic.Uint64 // runner side: times the link followed a new address
}

func newLinkTags(linkKey []byte, link string, runner bool) *linkTags {
	t := &linkTags{keys: session.DeriveLinkTagKeys(linkKey, link), next: uint64(time.Now().UnixNano())}
	t.send, t.recv = &t.keys.ClientToRunner, &t.keys.RunnerToClient
	if runner {
		t.send, t.recv = t.recv, t.send
	}
	return t
}

// seal appends frame's envelope to dst with the next counter.
func (t *linkTags) seal(dst, frame []byte) []byte {
	t.mu.Lock()
	c := t.next
	t.next++
	t.mu.Unlock()
	return session.AppendTagged(dst, t.send, t.keys.ID, c, frame)
}

// open checks a datagram from the peer: its frame, and whether its
// counter is the newest so far; ok false (counted) when it must be
// dropped.
func (t *linkTags) open(d []byte) (frame []byte, newest, ok bool) {
	id, c, frame, err := session.ParseTagged(d)
	if err != nil || id != t.keys.ID || !session.VerifyTag(t.recv, d) {
		t.rejected.Add(1)
		return nil, false, false
	}
	t.mu.Lock()
	ok, newest = t.window.Take(c)
	t.mu.Unlock()
	if !ok {
		t.rejected.Add(1)
		return nil, false, false
	}
	return frame, newest, true
}

// ---- client side ----

// tagConn is the client end of a tagged datagram link: it seals what the
// wire layer writes and opens what it reads, dropping datagrams that fail.
// rebind moves it onto another socket.
type tagConn struct {
	t *linkTags

	mu     sync.Mutex
	bc     bearers.Conn
	rd, wd time.Time
	closed bool

	rmu  sync.Mutex // one reader at a time
	rbuf []byte
	wmu  sync.Mutex
	wbuf []byte
}

func newTagConn(t *linkTags, bc bearers.Conn) *tagConn {
	return &tagConn{t: t, bc: bc, rbuf: make([]byte, 65536)}
}

func (c *tagConn) current() bearers.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bc
}

// Read returns the frame of the next datagram whose tag verifies.
func (c *tagConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		bc := c.current()
		n, err := bc.Read(c.rbuf)
		if err != nil {
			c.mu.Lock()
			moved := c.bc != bc && !c.closed
			c.mu.Unlock()
			if moved { // rebind closed the old socket under us
				continue
			}
			return 0, err
		}
		frame, _, ok := c.t.open(c.rbuf[:n])
		if !ok {
			continue
		}
		return copy(p, frame), nil
	}
}

// Write sends p (one wire frame) as one tagged datagram.
func (c *tagConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = c.t.seal(c.wbuf[:0], p)
	bc := c.current()
	_, err := bc.Write(c.wbuf)
	if err != nil {
		if nbc := c.current(); nbc != bc { // rebind closed bc under us
			_, err = nbc.Write(c.wbuf)
		}
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// rebind moves the link onto nbc (a new socket to the same runner), and
// closes the old one. False when the link is closed (nbc is closed too).
func (c *tagConn) rebind(nbc bearers.Conn) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		nbc.Close()
		return false
	}
	old := c.bc
	c.bc = nbc
	nbc.SetReadDeadline(c.rd)
	nbc.SetWriteDeadline(c.wd)
	c.mu.Unlock()
	old.Close()
	return true
}

func (c *tagConn) Close() error {
	c.mu.Lock()
	c.closed = true
	bc := c.bc
	c.mu.Unlock()
	return bc.Close()
}

func (c *tagConn) LocalAddr() net.Addr  { return c.current().LocalAddr() }
func (c *tagConn) RemoteAddr() net.Addr { return c.current().RemoteAddr() }
func (c *tagConn) Peer() bearers.Peer   { return c.current().Peer() }
func (c *tagConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}
func (c *tagConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rd = t
	return c.bc.SetReadDeadline(t)
}
func (c *tagConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wd = t
	return c.bc.SetWriteDeadline(t)
}

// setLinkKey derives the key of the session's datagram link tags from
// its secret (none without one).
func (s *Session) setLinkKey(secret []byte) {
	s.mu.Lock()
	s.direct.linkKey = session.DeriveLinkKey(secret, s.ID)
	s.mu.Unlock()
}

// tagsFor returns the tag state of a datagram link of the session (kept
// across its reopenings), or nil when the session has no link key.
func (s *Session) tagsFor(link string) *linkTags {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.direct.linkKey == nil {
		return nil
	}
	if s.direct.tags == nil {
		s.direct.tags = map[string]*linkTags{}
	}
	t := s.direct.tags[link]
	if t == nil {
		t = newLinkTags(s.direct.linkKey, link, false)
		s.direct.tags[link] = t
	}
	return t
}

// tagged wraps a freshly dialed datagram link's connection when the
// session tags its datagram links; it returns the connection and the
// largest frame payload it carries.
func (s *Session) tagged(link string, bc bearers.Conn) (bearers.Conn, int) {
	t := s.tagsFor(link)
	if t == nil {
		return bc, wire.MaxDatagramPayload
	}
	return newTagConn(t, bc), wire.MaxDatagramPayload - session.TagOverhead
}

// Roam moves the session's tagged datagram direct links (unreliable, over
// udp) onto new sockets, for a client whose network changed (another
// interface, a NAT that forgot it, a resume from suspend): each link dials
// its runner again and sends a Ping from the new socket at once; the
// runner follows the link to the new address on that datagram, whose
// session tag it checks. Nothing else changes: no new LinkOpen, no new
// session. Stream links on resume streams drop their connection, so that
// their stream redials and resumes at once from the new network
// (direct_resume.go). Links without tags (a session without a secret) and
// other stream links are left alone (they come back by reopening). It
// returns the number of datagram links moved, and the first dial error.
func (s *Session) Roam(ctx context.Context) (int, error) {
	s.mu.Lock()
	var dls, streams []*directLink
	for _, dl := range s.direct.links {
		if _, ok := dl.l.bc.(*tagConn); ok {
			dls = append(dls, dl)
		} else if dl.st != nil {
			streams = append(streams, dl)
		}
	}
	s.mu.Unlock()
	for _, dl := range streams {
		dl.cur.drop()
	}
	moved := 0
	var first error
	for _, dl := range dls {
		b := s.c.linkBearer(dl.link.Bearer)
		if b == nil {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, s.c.cfg.LinkOpenTimeout)
		nbc, err := b.Dial(dctx, dl.link.Address)
		cancel()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("roam: link %s: %w", dl.name, err)
			}
			continue
		}
		if dl.l.bc.(*tagConn).rebind(nbc) {
			moved++
			dl.l.wc.WriteMessage(&wire.Ping{ID: 0, SentUnixNano: time.Now().UnixNano()})
		}
	}
	return moved, first
}

// tagRejected is the count of datagrams of the session's link dropped
// for their tag (0 for untagged links); the caller holds s.mu.
func (s *Session) tagRejected(link string) uint64 {
	if t := s.direct.tags[link]; t != nil {
		return t.rejected.Load()
	}
	return 0
}

// ---- runner side ----

// tagRegistry is a provider's tagged datagram links, by link id.
type tagRegistry struct {
	mu       sync.Mutex
	links    map[uint64]*runnerTagLink
	rejected atomic.Uint64 // every datagram dropped: unknown link, bad tag, replay, malformed
}

// runnerTagLink is one datagram link of a session at the runner: its tag
// state and the roamConn of its current incarnation.
type runnerTagLink struct {
	session, link string
	t             *linkTags
	conn          *roamConn // guarded by t.mu
}

// addSession registers the datagram links of a session with a link key;
// it says whether the session tags its datagram links. A session already
// registered keeps its state (its windows), when its key is the same.
func (r *tagRegistry) addSession(id string, doc *routing.Document, key []byte, isDatagram func(bearer string) bool) bool {
	if len(key) != session.LinkKeySize {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.links == nil {
		r.links = map[uint64]*runnerTagLink{}
	}
	for _, l := range doc.Links {
		if l.Kind != routing.DirectLink || !isDatagram(l.Bearer) {
			continue
		}
		t := newLinkTags(key, l.Name, true)
		if old := r.links[t.keys.ID]; old != nil && old.session == id && old.t.keys == t.keys {
			continue
		}
		r.links[t.keys.ID] = &runnerTagLink{session: id, link: l.Name, t: t}
	}
	return true
}

// dropSession forgets a session's links.
func (r *tagRegistry) dropSession(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, l := range r.links {
		if l.session == id {
			delete(r.links, k)
		}
	}
}

// isDatagramBearer reports whether one of the provider's listeners of
// bearer type t is a datagram one.
func (p *Provider) isDatagramBearer(t string) bool {
	for _, l := range p.cfg.Listeners {
		if l.Bearer.Type == t && l.Bearer.Capabilities.Has(bearers.Datagram) {
			return true
		}
	}
	return false
}

// tagListener wraps a datagram listener of a provider: it reads every
// peer itself, hands tagged datagrams to their links (a new link's first
// datagram makes its roamConn, which Accept returns), and gives a peer
// whose first datagram is untagged to Accept as it is (untagged links).
type tagListener struct {
	bearers.Listener
	p   *Provider
	reg *tagRegistry

	ctx      context.Context
	cancel   context.CancelFunc
	accepted chan bearers.Conn
	once     sync.Once
	mu       sync.Mutex
	closed   bool
	wg       sync.WaitGroup
}

// pathIdle closes a peer of a tag listener silent for this long (a link
// silent for linkIdleTimeout is closed anyway).
const pathIdle = linkIdleTimeout + 5*time.Second

func newTagListener(p *Provider, l bearers.Listener) *tagListener {
	tl := &tagListener{Listener: l, p: p, reg: &p.direct.tags, accepted: make(chan bearers.Conn, 64)}
	tl.ctx, tl.cancel = context.WithCancel(context.Background())
	return tl
}

// goroutine runs fn as one of the listener's, unless it is closed.
func (tl *tagListener) goroutine(fn func()) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.closed {
		return false
	}
	tl.wg.Add(1)
	go func() {
		defer tl.wg.Done()
		fn()
	}()
	return true
}

func (tl *tagListener) Accept(ctx context.Context) (bearers.Conn, error) {
	tl.once.Do(func() { tl.goroutine(tl.run) })
	select {
	case c := <-tl.accepted:
		return c, nil
	case <-tl.ctx.Done():
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes the listener (and with it every peer) and waits for its
// goroutines. Idempotent.
func (tl *tagListener) Close() error {
	tl.mu.Lock()
	already := tl.closed
	tl.closed = true
	tl.mu.Unlock()
	tl.cancel()
	err := tl.Listener.Close()
	if !already {
		tl.wg.Wait()
		for {
			select {
			case c := <-tl.accepted:
				c.Close()
				continue
			default:
			}
			break
		}
	}
	return err
}

func (tl *tagListener) run() {
	for {
		pc, err := tl.Listener.Accept(tl.ctx)
		if err != nil {
			if tl.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-tl.ctx.Done():
				return
			}
			continue
		}
		if !tl.goroutine(func() { tl.peer(pc) }) {
			pc.Close()
			return
		}
	}
}

// offer hands a connection to Accept; closed when nobody takes it.
func (tl *tagListener) offer(c bearers.Conn) {
	select {
	case tl.accepted <- c:
	default:
		tl.p.log.Warn("a direct link was refused: too many waiting to be accepted", "from", c.RemoteAddr().String())
		c.Close()
	}
}

// peerBufs are the read buffers of tag listeners' peers.
var peerBufs = sync.Pool{New: func() any { return new([65536]byte) }}

// peer reads one source address until it fails or falls silent. A peer
// that sends a datagram the listener drops before any it took is closed
// at once, so that forged traffic from many addresses holds nothing.
func (tl *tagListener) peer(pc bearers.Conn) {
	bp := peerBufs.Get().(*[65536]byte)
	defer peerBufs.Put(bp)
	buf := bp[:]
	first, took := true, false
	for {
		pc.SetReadDeadline(time.Now().Add(pathIdle))
		n, err := pc.Read(buf)
		if err != nil {
			pc.Close()
			return
		}
		d := buf[:n]
		if !session.IsTagged(d) {
			if first { // an untagged link: the provider reads it from here on
				tl.offer(&firstDatagram{Conn: pc, first: append([]byte(nil), d...)})
				return
			}
			tl.reject(nil, pc, "an untagged datagram on a tagged path")
			continue
		}
		first = false
		if tl.deliver(pc, d) {
			took = true
		} else if !took {
			pc.Close()
			return
		}
	}
}

// deliver takes one tagged datagram from peer pc; false when it was
// dropped.
func (tl *tagListener) deliver(pc bearers.Conn, d []byte) bool {
	id, _, _, err := session.ParseTagged(d)
	if err != nil {
		tl.reject(nil, pc, err.Error())
		return false
	}
	tl.reg.mu.Lock()
	rl := tl.reg.links[id]
	tl.reg.mu.Unlock()
	if rl == nil {
		tl.reject(nil, pc, "no link of an open session has that link id")
		return false
	}
	frame, newest, ok := rl.t.open(d)
	if !ok {
		tl.reject(rl, pc, "its session tag does not verify, or it was seen before")
		return false
	}
	rl.t.mu.Lock()
	c := rl.conn
	fresh := c == nil || c.isClosed()
	if fresh {
		c = newRoamConn(rl, pc)
		rl.conn = c
	} else if newest && c.moveTo(pc) {
		rl.t.moves.Add(1)
		tl.p.log.Info("a direct link moved to a new address", "session", rl.session, "link", rl.link, "to", pc.RemoteAddr().String())
	}
	rl.t.mu.Unlock()
	c.push(frame)
	if fresh {
		tl.offer(c)
	}
	return true
}

func (tl *tagListener) reject(_ *runnerTagLink, pc bearers.Conn, why string) {
	tl.reg.rejected.Add(1) // and by rl.t, if rl is known
	if n, ok := tl.p.direct.tagWarn.allow(); ok {
		tl.p.log.Warn("a datagram on a direct-link endpoint was dropped", "from", pc.RemoteAddr().String(), "because", why,
			"suppressed", n, "rejected_total", tl.reg.rejected.Load())
	}
}

// firstDatagram is a peer whose first datagram was read already.
type firstDatagram struct {
	bearers.Conn
	mu    sync.Mutex
	first []byte
}

func (f *firstDatagram) Read(p []byte) (int, error) {
	f.mu.Lock()
	d := f.first
	f.first = nil
	f.mu.Unlock()
	if d != nil {
		return copy(p, d), nil
	}
	return f.Conn.Read(p)
}

// roamConn is one incarnation of a tagged datagram link at the runner, as
// the provider's directConn sees it: it reads the frames the tagListener
// took for the link, and writes sealed datagrams to the link's current
// address.
type roamConn struct {
	rl   *runnerTagLink
	in   chan []byte
	done chan struct{}
	once sync.Once
	rdl  deadline

	mu   sync.Mutex
	path bearers.Conn
}

// roamQueue bounds the datagrams waiting for the provider's reader.
const roamQueue = 256

func newRoamConn(rl *runnerTagLink, pc bearers.Conn) *roamConn {
	return &roamConn{rl: rl, path: pc, in: make(chan []byte, roamQueue), done: make(chan struct{}), rdl: newDeadline()}
}

func (c *roamConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// moveTo makes pc the link's address; false if it was already.
func (c *roamConn) moveTo(pc bearers.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path == pc {
		return false
	}
	c.path = pc
	return true
}

func (c *roamConn) current() bearers.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.path
}

// push queues a frame for Read; dropped when the queue is full.
func (c *roamConn) push(frame []byte) {
	select {
	case c.in <- append([]byte(nil), frame...):
	default:
	}
}

func (c *roamConn) Read(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	select {
	case b := <-c.in:
		return copy(p, b), nil
	case <-c.done:
		return 0, net.ErrClosed
	case <-c.rdl.wait():
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *roamConn) Write(p []byte) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	if _, err := c.current().Write(c.rl.t.seal(nil, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends this incarnation; the peers stay (other links may use them).
func (c *roamConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.rl.t.mu.Lock()
		if c.rl.conn == c {
			c.rl.conn = nil
		}
		c.rl.t.mu.Unlock()
	})
	return nil
}

func (c *roamConn) LocalAddr() net.Addr  { return c.current().LocalAddr() }
func (c *roamConn) RemoteAddr() net.Addr { return c.current().RemoteAddr() }
func (c *roamConn) Peer() bearers.Peer   { return c.current().Peer() }
func (c *roamConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}
func (c *roamConn) SetReadDeadline(t time.Time) error { c.rdl.set(t); return nil }
func (c *roamConn) SetWriteDeadline(t time.Time) error {
	return c.current().SetWriteDeadline(t)
}

// tagStats are a link's tag counters at the runner, for its log line.
func (dc *directConn) tagStats() []any {
	if c, ok := dc.bc.(*roamConn); ok {
		return []any{"tag_rejected", c.rl.t.rejected.Load(), "moves", c.rl.t.moves.Load()}
	}
	return nil
}

// checkTagged refuses a LinkOpen that does not fit the tags of its
// datagram: an untagged datagram link of a session that tags them, or a
// tagged one whose tag is another link's.
func (dc *directConn) checkTagged(ds *directSession, lo *session.LinkOpen) string {
	if !dc.datagram {
		return ""
	}
	c, tagged := dc.bc.(*roamConn)
	switch {
	case ds.tagged && !tagged:
		return fmt.Sprintf("the datagram links of session %s carry session tags (docs/PROTOCOL.md §15.1); this LinkOpen has none", ds.id)
	case tagged && (c.rl.session != lo.Session || c.rl.link != lo.Link):
		return fmt.Sprintf("the session tag of this LinkOpen is not that of link %q of session %s", lo.Link, lo.Session)
	}
	return ""
}

// deadline is a read deadline for a conn made of channels (as net.Pipe's).
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := false
	select {
	case <-d.cancel:
		closed = true
	default:
	}
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}
