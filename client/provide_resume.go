package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// Reliable direct links on resume streams, runner side (docs/ROUTING.md,
// "When a direct link breaks or moves"; docs/PROTOCOL.md §15.3; the client
// side is direct_resume.go).
//
// A session whose RemoteOpen carried a link key opens its links over
// stream bearers with LinkOpen.Resume; a LinkOpen without it is refused
// for such a session (whoever saw the token could otherwise take the link
// over). The runner checks the LinkOpen as for any link, answers OK with
// Resume, and hands the connection to its resume.Table (one per provider,
// made on first use):
//
//   - an Open makes a new stream; its first message must be the client's
//     bind proof (session.VerifyLinkBindProof) within linkHandshakeTimeout,
//     or the stream is closed and the link never bound; the runner answers
//     with its own proof and binds the stream to the session's link (a
//     link already bound there is closed). The directConn that accepted
//     the connection then serves the link for the stream's life: its calls
//     run under its context, its answers, events and runtime data go
//     through the stream, whatever connection carries it.
//   - a Resume attaches the connection to the existing stream (the
//     stream's secret proves the client); the directConn that accepted it
//     is done, and leaves the connection to the stream.
//
// The stream ends when the client closes it (the session closed), when
// its linger window passes without a connection, or when the session ends
// at the runner (RemoteClose, the provider stopping); the link is then
// closed as any link.

// linkResume is a provider's table of direct link streams.
type linkResume struct {
	mu     sync.Mutex
	tbl    *resume.Table
	closed bool
}

// close ends every stream (telling the clients) and refuses new ones.
func (r *linkResume) close() {
	r.mu.Lock()
	tbl := r.tbl
	r.closed = true
	r.mu.Unlock()
	if tbl != nil {
		tbl.Close()
	}
}

// linkTable returns the provider's table, making it on first use.
func (p *Provider) linkTable() (*resume.Table, error) {
	r := &p.direct.resume
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("the runner is stopping")
	}
	if r.tbl != nil {
		return r.tbl, nil
	}
	cfg, err := p.linkResumeConfig()
	if err != nil {
		return nil, err
	}
	tbl, err := resume.NewTable(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: direct link resume configuration: %w", err)
	}
	r.tbl = tbl
	return tbl, nil
}

// linkResumeConfig is the configuration of the provider's link streams.
func (p *Provider) linkResumeConfig() (*resume.Config, error) {
	var cfg resume.Config
	if p.cfg.LinkResume != nil {
		cfg = *p.cfg.LinkResume
	} else {
		cfg = *resume.DefaultConfig()
		cfg.Linger = DefaultLinkLinger
		if w := p.serverWelcome(); w != nil {
			cfg.KeepaliveInterval = w.PingInterval()
			cfg.DeadTimeout = max(w.PingWindow(), 2*cfg.KeepaliveInterval)
		}
		cfg.HandshakeTimeout = linkHandshakeTimeout
		cfg.MaxSessions = maxDirectConns
		cfg.TombstoneTTL, cfg.MaxTombstones = 10*time.Minute, maxDirectConns
	}
	cfg.MaxMessage = min(cfg.MaxMessage, wire.DefaultMaxPayload)
	if cfg.Logger == nil {
		cfg.Logger = p.log
	}
	if err := resume.VerifyConfig(&cfg); err != nil {
		return nil, fmt.Errorf("client: direct link resume configuration: %w", err)
	}
	return &cfg, nil
}

// serverWelcome is the Welcome of the connection of the client the
// provider serves (nil before Serve or between connections).
func (p *Provider) serverWelcome() *wire.Welcome {
	var w *wire.Welcome
	providing.Range(func(k, v any) bool {
		if v == p {
			w = k.(*Client).welcome()
			return false
		}
		return true
	})
	return w
}

// resumes reports whether a LinkOpen binds a link on a resume stream: it
// asks for one, and the session has a link key to authenticate it.
func (dc *directConn) resumes(ds *directSession, lo *session.LinkOpen) bool {
	return lo.Resume && ds.linkKey != nil && !dc.datagram
}

// checkResume refuses a LinkOpen without Resume over a stream bearer for
// a session with a link key; "" when it may go on.
func (dc *directConn) checkResume(ds *directSession, lo *session.LinkOpen) string {
	if lo.Resume || ds.linkKey == nil || dc.datagram {
		return ""
	}
	return fmt.Sprintf("session %s opens its link %q on a resume stream (LinkOpen with resume, docs/PROTOCOL.md §15.3)", ds.id, lo.Link)
}

// bindResume answers a LinkOpen with Resume and runs the resume handshake
// on the connection: a new stream is bound to the link once the client
// proved the link's key; a resumed one takes the connection.
func (dc *directConn) bindResume(ds *directSession, lo *session.LinkOpen) error {
	p := dc.p
	tbl, err := p.linkTable()
	if err != nil {
		dc.writeNow(session.NewError(lo.ID, session.CodeUnavailable, err.Error()))
		return err
	}
	b, err := session.Encode(&session.OK{ID: lo.ID, Resume: true})
	if err != nil {
		return err
	}
	dc.bc.SetWriteDeadline(time.Now().Add(linkHandshakeTimeout))
	if err := dc.wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b}); err != nil {
		return fmt.Errorf("answering LinkOpen: %w", err)
	}
	dc.count(&dc.msgsOut, &dc.bytesOut, len(b))
	dc.bc.SetWriteDeadline(time.Time{})
	dc.bc.SetReadDeadline(time.Time{}) // the stream watches the connection from now on
	st, isNew, err := tbl.Accept(dc.ctx, dc.wc)
	if err != nil {
		if errors.Is(err, resume.ErrAuth) {
			p.log.Warn("a direct link's resume was refused: wrong stream secret", "session", ds.id, "link", lo.Link, "from", dc.bc.RemoteAddr().String())
		}
		return fmt.Errorf("the link's resume handshake: %w", err)
	}
	if !isNew {
		dc.handedOff.Store(true)
		p.log.Debug("direct link resumed", "service", ds.svc.name, "session", ds.id, "link", lo.Link, "stream", st.ID().String(), "from", dc.bc.RemoteAddr().String())
		return nil
	}
	key := session.DeriveLinkResumeKey(ds.linkKey, lo.Link)
	id := [16]byte(st.ID())
	ctx, cancel := context.WithTimeout(dc.ctx, linkHandshakeTimeout)
	defer cancel()
	proof, err := st.Recv(ctx)
	if err == nil && !session.VerifyLinkBindProof(key, id, false, proof) {
		err = errors.New("the client's bind proof is wrong: it does not know the session's link key")
		p.log.Warn("a direct link's resume stream was refused: "+err.Error(), "session", ds.id, "link", lo.Link, "from", dc.bc.RemoteAddr().String())
	}
	if err == nil {
		err = st.Send(ctx, session.LinkBindProof(key, id, true))
	}
	if err != nil {
		st.Close()
		return fmt.Errorf("binding the link's resume stream: %w", err)
	}
	return dc.attachStream(ds, lo, st)
}

// attachStream binds dc, serving stream st, to the session's link.
func (dc *directConn) attachStream(ds *directSession, lo *session.LinkOpen, st *resume.Stream) error {
	d := &dc.p.direct
	d.mu.Lock()
	if d.stopped || d.sess[ds.id] != ds {
		d.mu.Unlock()
		st.Close()
		return errors.New("the session ended or the runner is stopping")
	}
	old := ds.links[lo.Link]
	ds.links[lo.Link] = dc
	dc.ds, dc.name, dc.openID = ds, lo.Link, lo.ID
	dc.st.Store(st)
	var initial []string
	for _, rt := range ds.doc.Routes {
		if rt.Resource.Kind == servicefile.DataResource && ds.effective(rt) == dc {
			path := rt.Resource.Name
			if path == servicefile.All {
				path = ""
			}
			initial = append(initial, path)
		}
	}
	d.mu.Unlock()
	if dc.ctx.Err() != nil { // closed meanwhile, perhaps before it saw the stream
		st.Close()
		return errors.New("the link was closed")
	}
	if old != nil {
		old.close()
	}
	if !dc.p.goroutine(dc.writer) {
		return errors.New("the runner is stopping")
	}
	for _, path := range initial {
		dc.addPath(path)
	}
	return nil
}

// closeIO closes what carries the link: its stream (which owns its
// connection), or its connection unless a stream took it.
func (dc *directConn) closeIO() {
	if st := dc.st.Load(); st != nil {
		if !dc.p.goroutine(func() { st.Close() }) { // its goodbye may take a moment
			st.Close()
		}
		return
	}
	if !dc.handedOff.Load() {
		dc.wc.Close()
	}
}

// readLink serves the bound link's messages until it ends: from its
// stream, or from its connection (read).
func (dc *directConn) readLink() error {
	st := dc.st.Load()
	if st == nil {
		return dc.read()
	}
	for {
		b, err := st.Recv(dc.ctx)
		if err != nil {
			return err
		}
		dc.count(&dc.msgsIn, &dc.bytesIn, len(b))
		dc.handle(b)
	}
}

// sendStream sends one encoded message m in the link's stream, blocking
// while its replay buffer is full; false when the stream ended (the link
// is closed).
func (dc *directConn) sendStream(st *resume.Stream, m session.Message, b []byte) bool {
	if err := st.Send(dc.ctx, b); err != nil {
		if errors.Is(err, resume.ErrMessageTooLarge) {
			if r, ok := m.(session.Response); ok {
				return dc.write(session.NewError(r.ResponseTo(), session.CodeTooLarge, err.Error()))
			}
			if n, ok := dc.warn.allow(); ok {
				dc.p.log.Warn("a message for a direct link was not sent", "link", dc.name, "kind", m.Kind().String(), "error", err, "suppressed", n)
			}
			return true
		}
		if dc.ctx.Err() == nil {
			dc.p.log.Info("a direct link's resume stream ended; the link is closed", "link", dc.name, "error", err)
		}
		dc.close()
		return false
	}
	dc.count(&dc.msgsOut, &dc.bytesOut, len(b))
	return true
}
