package wsbearer

import (
	"net"

	"golang.org/x/net/websocket"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/streamconn"
)

// Conn is a WebSocket connection seen as a byte stream: every Write is sent as
// binary frames, and Read returns the payload bytes of incoming data frames
// in order, ignoring frame boundaries (a Read may return part of a frame, or
// bytes of several). It is a net.Conn; all methods are safe for concurrent
// use.
//
// The Conn is a streamconn.Conn over the WebSocket: it owns two goroutines, a
// writer that sends what Write queued, and a reader that receives frames into
// a bounded buffer (32 KiB each). Deadlines apply to Read and Write waiting on
// those buffers, never to the socket, so that a timeout cannot cut a frame in
// half: after a timeout the stream is intact and can be used again, as
// net.Conn requires. Close returns at once: queued bytes are still sent (for
// at most five seconds if the peer does not read), then a close frame, then
// the socket is closed and both goroutines end. There is no half-close.
//
// A Conn carries WebSocket framing state, so it is not a kernel socket a
// plugin could hand over (it does not implement bearers.SocketConn).
type Conn struct {
	stream                   // a *streamconn.Conn over the WebSocket
	finished <-chan struct{} // closed once the WebSocket is closed
}

// stream is what a Conn exposes of its *streamconn.Conn.
type stream interface{ net.Conn }

// newConn wraps ws; local and remote are the TCP addresses (websocket.Conn's
// own addresses are URLs).
func newConn(ws *websocket.Conn, local, remote net.Addr) *Conn {
	ws.PayloadType = websocket.BinaryFrame
	sc := streamconn.New(ws, streamconn.Options{Net: "ws", LocalAddr: local, RemoteAddr: remote})
	return &Conn{stream: sc, finished: sc.Done()}
}

// Peer is empty: the WebSocket bearer authenticates nobody.
func (c *Conn) Peer() bearers.Peer { return bearers.Peer{} }
