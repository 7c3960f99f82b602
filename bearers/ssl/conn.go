package ssl

import (
	"crypto/tls"
	"net"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/streamconn"
)

// Conn is a TLS connection produced by the ssl bearer, as returned by Dial and
// Accept. Its handshake is complete. It is a net.Conn; all methods are safe
// for concurrent use, and concurrent Writes are serialized so that each one's
// bytes stay contiguous.
//
// Write behaves like a kernel socket's send buffer: it returns once its bytes
// are queued (at most 64 KiB are queued per connection), and a goroutine owned
// by the Conn encrypts and sends them. That is what lets a write deadline
// expire without corrupting the TLS stream: a Write that times out returns how
// many bytes it queued, and those bytes, and only those, are sent. A write
// error is sticky: after it every Write returns it. Reads decrypt directly
// from the TLS connection, whose read deadline is the Conn's (crypto/tls
// resumes a record after a read timeout); after Close they return errors
// wrapping net.ErrClosed, and io.EOF when the peer closes cleanly. The
// machinery is package streamconn's.
//
// Close returns at once; bytes already queued are still sent (for at most
// five seconds if the peer does not read), then the TLS close_notify alert
// and the TCP close follow, and the writer goroutine ends. CloseWrite sends
// the queued bytes and then close_notify, leaving the read side open.
//
// Conn deliberately does not implement bearers.SocketConn: TLS state lives in
// this process, so the kernel socket underneath cannot be handed to another
// process; a plugin relays the connection's bytes instead.
type Conn struct {
	stream // a *streamconn.Conn over tc
	tc     *tls.Conn
	peer   bearers.Peer
}

// stream is what a Conn exposes of its *streamconn.Conn.
type stream interface {
	net.Conn
	CloseWrite() error
}

func newConn(tc *tls.Conn, peer bearers.Peer) *Conn {
	sc := streamconn.New(tc, streamconn.Options{
		Net:         "ssl",
		DirectReads: true, // crypto/tls survives read timeouts
		CloseWrite:  tc.CloseWrite,
	})
	return &Conn{stream: sc, tc: tc, peer: peer}
}

// Peer reports what the handshake established about the far end: on an
// accepted connection, the verified client certificate's subject as
// "CN=<common name>" (empty when the client presented no verified
// certificate); on a dialed connection, the verified server certificate's
// subject in the same form (empty with insecureSkipVerify). When a verified
// certificate has no common name, Identity is its whole subject in RFC 2253
// form.
func (c *Conn) Peer() bearers.Peer { return c.peer }

// ConnectionState returns the TLS connection's negotiated parameters.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// CloseWrite sends the bytes already queued and then the TLS close_notify
// alert, after which the peer reads io.EOF. The read side stays open. It
// returns at once; later Writes fail.
func (c *Conn) CloseWrite() error { return c.stream.CloseWrite() }
