package dgram

import "time"

// Defaults for the zero Options.
const (
	DefaultBatch          = 64
	DefaultMaxPeers       = 4096
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultRecvQueue      = 1024
	DefaultSendQueue      = 1024
	DefaultAcceptBacklog  = 128
	DefaultMaxQueuedBytes = 16 << 20

	// MaxBatch is the largest batch a socket reads or writes per system call.
	MaxBatch = 1024
	// MaxDatagramSize is the largest datagram Write accepts: the largest UDP
	// payload over IPv4.
	MaxDatagramSize = 65507
)

// Options tune a Listener or Conn. The zero value gives the defaults; values
// out of range are clamped to the nearest allowed one (NewListener and NewConn
// have no error to return; the udp bearer validates its attributes itself).
type Options struct {
	// Batch is how many datagrams one system call reads or writes, 1..MaxBatch.
	// Default DefaultBatch.
	Batch int
	// MaxPeers caps the number of peers a listener serves at once; datagrams
	// from further addresses are dropped. Default DefaultMaxPeers.
	MaxPeers int
	// IdleTimeout forgets a listener's peer after this long without a datagram
	// in either direction. Default DefaultIdleTimeout; negative disables.
	// It does not apply to a Conn from NewConn.
	IdleTimeout time.Duration
	// RecvQueue caps the datagrams queued for one Conn that its reader has not
	// taken yet. Default DefaultRecvQueue. A listener's peer drops datagrams
	// beyond it; a Conn from NewConn stops reading the socket until there is
	// room (the kernel's socket buffer then fills and drops, as for any UDP
	// socket).
	RecvQueue int
	// SendQueue caps the datagrams queued for the sender goroutine of one
	// socket. Default DefaultSendQueue.
	SendQueue int
	// AcceptBacklog caps the new peers waiting for Accept. Default
	// DefaultAcceptBacklog.
	AcceptBacklog int
	// MaxQueuedBytes caps the bytes of datagrams queued on one socket, once for
	// all receive queues together and once for the send queue. Default
	// DefaultMaxQueuedBytes.
	MaxQueuedBytes int
	// NoOffload turns off UDP segmentation offload (UDP_SEGMENT when sending,
	// UDP_GRO when receiving), which is otherwise used where the kernel has
	// it. Message boundaries are the same either way.
	NoOffload bool
}

func clampInt(v, def, lo, hi int) int {
	if v == 0 {
		return def
	}
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// normalized returns o with defaults filled in and values clamped.
func (o Options) normalized() Options {
	o.Batch = clampInt(o.Batch, DefaultBatch, 1, MaxBatch)
	o.MaxPeers = clampInt(o.MaxPeers, DefaultMaxPeers, 1, 1<<20)
	o.RecvQueue = clampInt(o.RecvQueue, DefaultRecvQueue, 1, 1<<16)
	o.SendQueue = clampInt(o.SendQueue, DefaultSendQueue, 1, 1<<16)
	o.AcceptBacklog = clampInt(o.AcceptBacklog, DefaultAcceptBacklog, 1, 1<<16)
	o.MaxQueuedBytes = clampInt(o.MaxQueuedBytes, DefaultMaxQueuedBytes, 1<<16, 1<<30)
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	return o
}
