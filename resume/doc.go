// Package resume is Connect's broker resume layer: it makes a session outlive
// the connections that carry it. One session is one Stream per side: a
// reliable, ordered, message-oriented stream in each direction, carried over
// a sequence of connections (wire.Conn over any reliable bearer), one at a
// time. Nothing in it is bearer-specific.
//
// # Guarantees
//
// Every message accepted by Send is delivered to the peer's Recv exactly
// once, in order, with its boundaries — across any number of connection
// losses — or the stream ends with an error that says which messages were not
// delivered (*ExpiredError, *PeerClosedError, *LostError; Stream.Undelivered
// returns them). Buffers are bounded: a full replay buffer blocks Send, a full
// receive queue stops reading the connection; nothing is ever dropped.
//
// # How
//
// Messages are numbered per direction from 1; the numbers are implicit on
// the wire (a connection carries them in order, from the number agreed in the
// handshake). The receiver acknowledges cumulatively, at least every
// Config.AckInterval and at once when half the peer's replay buffer is
// unacknowledged; acknowledgements and Pongs go ahead of queued messages. The
// sender keeps every unacknowledged message in its replay buffer
// (Config.ReplayBuffer, 4 MiB by default). When a client reconnects, each
// side tells the other the last message it received, the sender replays from
// the next one, and the receiver discards anything it has already seen.
//
// A session has a random id (a UUID) and a 32-byte secret that never crosses
// the wire: both sides derive it from an X25519 exchange when the session is
// opened. A resume proves knowledge of the secret both ways with HMAC-SHA256
// over fresh nonces; a forged resume (right id, wrong secret) is refused with
// ErrAuth and does not disturb the real session. The server's Table expires a
// session whose client has not come back within Config.Linger (10 minutes)
// and answers a later resume with an explicit "expired" refusal carrying the
// last message it received.
//
// The design and the protocol are described in docs/RESUME.md.
//
// # Use
//
// Server:
//
//	tbl, _ := resume.NewTable(nil)
//	defer tbl.Close()
//	for {
//		c, _ := ln.Accept()
//		go func() {
//			conn := wire.NewStreamConn(c, wire.DefaultMaxPayload) // after registration, in Connect
//			s, isNew, err := tbl.Accept(ctx, conn)
//			if err == nil && isNew {
//				serve(s) // a resumed session is already being served
//			}
//		}()
//	}
//
// Client:
//
//	s, err := resume.Open(ctx, func(ctx context.Context) (wire.Conn, error) {
//		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
//		if err != nil {
//			return nil, err
//		}
//		return wire.NewStreamConn(c, wire.DefaultMaxPayload), nil
//	}, nil)
//	...
//	s.Send(ctx, []byte("hello"))
//	msg, err := s.Recv(ctx)
//	...
//	s.CloseSend(); s.Flush(ctx); s.Close() // a clean end
//
// Byte streams (a tunnelled TCP connection) save a copy per side:
// Stream.SendFrom reads from an io.Reader straight into the replay buffer,
// and Stream.CopyTo has the goroutine reading the connection write each
// message to an io.Writer straight from its read buffer.
//
// # Goroutines
//
// An attached connection has two goroutines (reader and writer); a client
// stream has one more that reconnects. They belong to the Stream and are
// stopped by Close (or Table.Close), which returns once they have exited.
// Timers (acknowledgement, keepalive, dead connection, linger) run no
// goroutine of their own while idle.
package resume
