package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// Resume streams (docs/RESUME.md, "Wiring: the core and the client").
//
// A client on a stream bearer opens one resume stream after its
// registration, and every session message travels in it. The server keeps
// the streams in a resume.Table; the session layer (connSessions) of a
// client is bound to its stream, not to a connection: when the connection
// breaks, the client redials, registers and resumes the stream, and its
// sessions carry on where they were. While the stream has no connection
// its sessions stay open, for the linger window; when it expires, the
// sessions end with the reason "expired" (the services are told).
//
// Goroutines: one per stream (serve: it reads the stream's messages and
// ends its session layer when the stream ends), owned by the Server's wait
// group; the stream's own goroutines belong to the resume.Table, which
// Server.Close closes first.

// resumeMaxMessage is the largest message a stream carries (both ways):
// the connections' payload limit.
const resumeMaxMessage = wire.DefaultMaxPayload

// Reasons a stream's sessions end with (the services see them in
// SessionClose).
const (
	reasonExpired       = "expired"
	reasonClientEnded   = "the client ended its stream"
	reasonServerClosing = "the server is shutting down"
)

// streamClient is one client's resume stream on the server.
type streamClient struct {
	s        *Server
	st       *resume.Stream
	id       uuid.UUID
	clientID uuid.UUID
	cs       *connSessions
	log      *slog.Logger

	mu          sync.Mutex
	conn        *clientConn // the connection carrying the stream now; nil while detached
	name        string      // the client's name, from its latest registration
	prin        principal   // who the client is, from its latest registration
	closeReason string      // why the server closed the stream, if it did
}

// writeSession queues one session message in the stream. It blocks while
// the stream's replay buffer is full (the client does not acknowledge),
// including while the client is away: the stream's linger window, not a
// write timeout, bounds that.
func (sc *streamClient) writeSession(ctx context.Context, b []byte) error {
	return sc.st.Send(ctx, b)
}

// abort does nothing: a stream whose Send failed has ended, and serve
// tears the session layer down.
func (sc *streamClient) abort() {}

func (sc *streamClient) principal() principal {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.prin
}

func (sc *streamClient) peer() (string, string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.conn == nil {
		return sc.name, ""
	}
	return sc.name, sc.conn.adapter.cfg.Name
}

// StreamInfo describes a client's resume stream, for GET /sessions.
type StreamInfo struct {
	ID       string `json:"id"`
	ClientID string `json:"clientId"`
	// Connected is false while the stream waits for its client to come
	// back.
	Connected bool `json:"connected"`
	// Attaches counts the connections that carried it (1 + resumptions).
	Attaches int `json:"attaches"`
	Sessions int `json:"sessions"`
}

// Streams lists the clients' resume streams, by client id then stream id.
func (s *Server) Streams() []StreamInfo {
	s.mu.Lock()
	list := make([]*streamClient, 0, len(s.streams))
	for _, sc := range s.streams {
		list = append(list, sc)
	}
	s.mu.Unlock()
	out := make([]StreamInfo, 0, len(list))
	for _, sc := range list {
		st := sc.st.Stats()
		sc.cs.mu.Lock()
		n := len(sc.cs.sessions)
		sc.cs.mu.Unlock()
		out = append(out, StreamInfo{ID: sc.id.String(), ClientID: sc.clientID.String(), Connected: st.Connected, Attaches: st.Attaches, Sessions: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ClientID != out[j].ClientID {
			return out[i].ClientID < out[j].ClientID
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// pingWindow is how long a side waits without receiving anything before it
// declares the path dead.
func (s *Server) pingWindow() time.Duration {
	f := s.cfg.Resume.PingWindowFactor
	if f < 2 {
		f = 2
	}
	return time.Duration(f) * s.opts.PingInterval
}

// resumeConfig is the configuration of the server's resume table.
func (s *Server) resumeConfig() *resume.Config {
	c := resume.DefaultConfig()
	c.MaxMessage = resumeMaxMessage
	if s.cfg.Resume.Linger > 0 {
		c.Linger = s.cfg.Resume.Linger
	}
	c.KeepaliveInterval = s.opts.PingInterval
	c.DeadTimeout = s.pingWindow()
	if s.cfg.RegistrationTimeout > 0 {
		c.HandshakeTimeout = s.cfg.RegistrationTimeout
	}
	c.Logger = s.log
	return c
}

// isResumeStart reports whether a Data frame opens or resumes a resume
// stream (RESUME.md §3: channel 1, flags 0x8000|1 Open or 0x8000|2 Resume).
func isResumeStart(m *wire.Data) bool {
	return m.Channel == resume.Channel && (m.Flags == 0x8001 || m.Flags == 0x8002)
}

// serveResume hands the connection to the resume table: first, the frame
// after the Welcome, opens or resumes the client's stream. It returns when
// the stream no longer uses the connection (it broke, a newer connection
// resumed the stream, the stream ended).
func (c *clientConn) serveResume(first *wire.Data) {
	s := c.s
	c.bc.SetReadDeadline(time.Time{}) // the stream detects dead connections itself
	hc := &handoffConn{Conn: c.wc, first: &wire.Frame{Type: wire.TypeData, Flags: first.Flags, Channel: first.Channel, Payload: first.Payload},
		closed: make(chan struct{})}
	st, _, err := s.table.Accept(s.ctx, hc)
	if err != nil {
		switch {
		case errors.Is(err, resume.ErrAuth):
			c.log.Warn("refused a resume that did not prove the stream's secret (forged or corrupted); the stream is not affected", "error", err)
		case s.ctx.Err() != nil:
		default:
			c.log.Info("resume handshake failed", "error", err)
		}
		return
	}
	if c.tunnel || s.isTunnelStream(st.ID()) {
		c.serveTunnel(st, hc) // tunnels.go
		return
	}
	sc := s.streamFor(st, c)
	if sc == nil {
		hc.Close()
		return
	}
	if sc.clientID != c.clientID {
		// Only the stream's client knows its secret; refuse anyway.
		c.log.Warn("a client resumed the stream of another client id; dropping the connection", "stream", st.ID().String(), "stream_client_id", sc.clientID.String())
		hc.Close()
		return
	}
	sc.attach(c)
	c.stream.Store(st)
	<-hc.closed
	sc.detach(c)
}

// streamFor returns the streamClient of st, creating it (and starting its
// serve goroutine) for a new stream — or for a resumed one whose creator
// has not registered it yet. Nil when the server is closing.
func (s *Server) streamFor(st *resume.Stream, c *clientConn) *streamClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc := s.streams[st.ID()]; sc != nil {
		return sc
	}
	if s.closed {
		go st.Close()
		return nil
	}
	sc := &streamClient{s: s, st: st, id: st.ID(), clientID: c.clientID, name: c.name, prin: c.principal(),
		log: s.log.With("client_id", c.clientID.String(), "stream", st.ID().String())}
	sc.cs = newConnSessions(s, sc, sc, c.clientID, sc.log, min(wire.DefaultMaxPayload, resumeMaxMessage))
	s.streams[sc.id] = sc
	if s.byClient[sc.clientID] == nil {
		s.byClient[sc.clientID] = map[*streamClient]struct{}{}
	}
	s.byClient[sc.clientID][sc] = struct{}{}
	s.wg.Add(1)
	go sc.serve()
	sc.log.Info("client stream opened")
	return sc
}

// attach records the connection now carrying the stream.
func (sc *streamClient) attach(c *clientConn) {
	sc.mu.Lock()
	sc.conn, sc.name, sc.prin = c, c.name, c.principal()
	sc.mu.Unlock()
	if rl := sc.runner(); rl != nil {
		rl.linkUp() // remote.go
	}
}

// runner is the stream's runner side, if its client provides services.
func (sc *streamClient) runner() *runnerLink {
	if sc.cs == nil {
		return nil
	}
	return sc.cs.runner.Load()
}

// detach forgets c if it still carries the stream.
func (sc *streamClient) detach(c *clientConn) {
	sc.mu.Lock()
	gone := sc.conn == c
	if gone {
		sc.conn = nil
	}
	sc.mu.Unlock()
	if rl := sc.runner(); gone && rl != nil {
		rl.linkDown() // remote.go
	}
}

// serve reads the stream's session messages until the stream ends, then
// ends its sessions.
func (sc *streamClient) serve() {
	defer sc.s.wg.Done()
	for {
		b, err := sc.st.Recv(context.Background()) // returns when the stream ends
		if err != nil {
			sc.end(err)
			return
		}
		sc.cs.handle(b)
	}
}

// end tears down an ended (or ending) stream: its sessions end with a
// reason saying why, the stream is closed and forgotten.
func (sc *streamClient) end(err error) {
	var exp *resume.ExpiredError
	sc.mu.Lock()
	reason := sc.closeReason
	sc.mu.Unlock()
	switch {
	case reason != "":
	case errors.As(err, &exp):
		reason = reasonExpired
	case errors.Is(err, resume.ErrPeerClosed), errors.Is(err, io.EOF):
		reason = reasonClientEnded
	case errors.Is(err, resume.ErrClosed):
		reason = reasonServerClosing
	default:
		reason = fmt.Sprintf("the client's stream failed: %v", err)
	}
	sc.cs.shutdown(reason)
	sc.st.Close()
	s := sc.s
	s.mu.Lock()
	if s.streams[sc.id] == sc {
		delete(s.streams, sc.id)
	}
	if set := s.byClient[sc.clientID]; set != nil {
		delete(set, sc)
		if len(set) == 0 {
			delete(s.byClient, sc.clientID)
		}
	}
	s.mu.Unlock()
	sc.log.Info("client stream ended", "reason", reason, "error", err)
}

// close ends the stream from the server's side, for reason.
func (sc *streamClient) close(reason string) {
	sc.mu.Lock()
	if sc.closeReason == "" {
		sc.closeReason = reason
	}
	sc.mu.Unlock()
	sc.st.Close()
}

// handoffConn is a registered connection handed to the resume table: its
// first ReadFrame returns the frame already read by the connection's loop,
// and its Close is observed (the stream closes the connection when it lets
// go of it).
type handoffConn struct {
	wire.Conn
	first  *wire.Frame // only the handshake reads it, before anything else
	once   sync.Once
	closed chan struct{}
}

func (h *handoffConn) ReadFrame() (wire.Frame, error) {
	if f := h.first; f != nil {
		h.first = nil
		return *f, nil
	}
	return h.Conn.ReadFrame()
}

func (h *handoffConn) ReadMessage() (wire.Message, error) {
	if f := h.first; f != nil {
		h.first = nil
		return wire.DecodeMessage(*f)
	}
	return h.Conn.ReadMessage()
}

func (h *handoffConn) Close() error {
	err := h.Conn.Close()
	h.once.Do(func() { close(h.closed) })
	return err
}
