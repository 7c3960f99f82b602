// Package dgram owns batched datagram I/O over one UDP socket and the
// demultiplexing of that socket into per-peer datagram connections.
//
// It is used by the udp bearer (bearers/udp) and by the plugin host for UDP
// sockets that a bearer plugin hands over as a file descriptor: whoever holds
// a *net.UDPConn wraps it with NewListener (an unconnected, bound socket
// serving many peers) or NewConn (a connected socket talking to one peer).
//
// # Data path
//
// Receiving: one reader goroutine per socket calls ReadBatch (recvmmsg on
// Linux) for up to Options.Batch datagrams per system call into buffers it
// reuses, copies each datagram into a pooled buffer of a matching size class
// and appends it to the receive queue of the Conn for its source address. A
// datagram from an address with no Conn creates one, which Accept returns.
//
// Sending: Write copies the datagram into a pooled buffer and appends it to
// the socket's send queue; one sender goroutine per socket takes everything
// queued, up to Options.Batch datagrams at a time, and hands it to WriteBatch
// (sendmmsg on Linux). While the sender is inside a system call, further
// writes accumulate, so a burst coalesces into few system calls. Conn.WriteBatch
// queues many datagrams under one lock for callers that have them at hand.
//
// # Segmentation offload
//
// recvmmsg and sendmmsg save system calls, but on Linux most of the cost of a
// datagram is the network stack's work per packet, which they do not save.
// So where the kernel has it (and unless Options.NoOffload), the sender also
// uses UDP generic segmentation offload: a run of queued datagrams for the
// same peer with the same size (the last may be shorter), up to 64 of them,
// goes to the kernel as one message with a UDP_SEGMENT control message and
// crosses the stack as one packet. The reader sets UDP_GRO, so trains that
// arrive coalesced (from such senders, or merged by the network device) come
// up as one message with their segment size, and the reader splits them.
// Message boundaries are exactly those the sender wrote. If the kernel
// refuses an offloaded message (a device without checksum offload, a segment
// larger than the path allows), its datagrams are sent one by one and offload
// is narrowed or turned off for that socket. Stats.OffloadOut and
// Stats.OffloadIn show how much traffic used it. Once a Listener or Conn has
// started reading a socket, UDP_GRO is on: the socket must then be read only
// through this package, since a plain read could return a whole train.
//
// # Bounds and loss
//
// Everything is bounded: a Conn's receive queue holds at most
// Options.RecvQueue datagrams; all receive queues of a socket together hold at
// most Options.MaxQueuedBytes; a listener serves at most Options.MaxPeers
// peers and holds at most Options.AcceptBacklog peers not yet accepted. UDP is
// unreliable, so when a receive bound of a listener's peer is hit the datagram
// is dropped and counted (see Stats): one slow peer never holds up the others.
// A Conn from NewConn is its socket's only reader, so instead it stops reading
// the socket until there is room, and the kernel's socket buffer absorbs (and
// past its size drops) the excess, as for any UDP socket. The send queue holds at most
// Options.SendQueue datagrams and Options.MaxQueuedBytes bytes; when it is
// full, Write blocks (backpressure) until there is room, the write deadline
// passes or the Conn is closed. A datagram the kernel refuses to send (for
// example an unreachable destination) is dropped and counted as a send error;
// on a connected socket the error is also reported by the next Read, as a
// connected *net.UDPConn does.
//
// A peer that neither sends nor receives for Options.IdleTimeout is forgotten:
// its Conn is closed with an error wrapping ErrIdleTimeout and net.ErrClosed,
// and a later datagram from the same address is a new peer.
//
// # Lifecycle and concurrency
//
// NewListener and NewConn take ownership of the socket: closing the Listener
// (or the Conn from NewConn) closes it. No goroutine runs and nothing is read
// from the socket until the first Accept (Listener) or the first Read or Write
// (Conn), so a caller that only wants the socket — to hand its descriptor to
// another process — can take it without racing a reader. Each socket has at
// most three goroutines (reader, sender, and for listeners an idle reaper);
// Close stops them all and waits for them. Close first lets the sender flush
// datagrams already queued (for at most a second), so a Write followed by Close
// does not silently discard the datagram.
//
// All methods of Listener and Conn are safe for concurrent use. Close is
// idempotent; after Close, methods return errors wrapping net.ErrClosed.
// Closing a peer Conn of a listener removes it from the demultiplexer and
// leaves the socket and the other peers alone.
package dgram
