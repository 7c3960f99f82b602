package resume

import (
	"log/slog"
	"time"

	"github.com/bearerkit/connect/wire"
)

// Config tunes a Stream (both sides) and a Table (server side). Get one from
// DefaultConfig and change what you need; VerifyConfig says, naming the
// field, what is wrong with one. A Config must not be changed once passed to
// Open or NewTable (they keep a copy).
//
// The two sides of a session may use different values; they exchange
// ReplayBuffer and MaxMessage in the handshake. Time settings should match,
// since DeadTimeout on one side relies on KeepaliveInterval on the other.
type Config struct {
	// ReplayBuffer is the most bytes of sent but unacknowledged messages a
	// stream keeps for replay; a message costs its length plus
	// MessageOverhead. When it is full, Send blocks until acknowledgements
	// free room: it never drops. Default 4 MiB; at least 64 KiB.
	ReplayBuffer int

	// ReceiveBuffer is the most bytes of received messages (same cost) a
	// stream queues for Recv. When it is full the stream stops reading the
	// connection, which pushes back on the sender. Default 4 MiB; at least
	// 64 KiB.
	ReceiveBuffer int

	// MaxMessage is the largest message this side sends or accepts, in
	// bytes. Send refuses longer ones (ErrMessageTooLarge), and so it does
	// for messages longer than the peer's MaxMessage. The connections
	// must be created with a wire payload limit of at least MaxMessage
	// (wire.NewStreamConn(c, cfg.MaxMessage)). Default 1 MiB
	// (wire.DefaultMaxPayload); at most wire.MaxFrameHardLimit, and a
	// message must fit in ReplayBuffer and in ReceiveBuffer.
	MaxMessage int

	// AckInterval bounds how long a received message stays
	// unacknowledged: the receiver acknowledges at least this often while
	// anything is unacknowledged, and at once when half the peer's replay
	// buffer is. Default 1 s.
	AckInterval time.Duration

	// KeepaliveInterval: a side that has written nothing on its connection
	// for this long writes a wire Ping (which the peer answers with a
	// Pong). Zero disables keepalives. Default 5 s.
	KeepaliveInterval time.Duration

	// DeadTimeout: a side that has received nothing on its connection for
	// this long, while it was reading, declares the connection dead and
	// drops it (the client then resumes on a new one). Time spent not
	// reading because ReceiveBuffer is full does not count. Zero disables
	// the check. Default 15 s; if set, at least twice KeepaliveInterval.
	DeadTimeout time.Duration

	// HandshakeTimeout bounds one open or resume handshake, including the
	// client's dial, and the goodbye message Close writes. Default 10 s.
	HandshakeTimeout time.Duration

	// Linger is how long a session survives without a connection. The
	// server expires a session whose client has not resumed it within
	// Linger of the last connection's loss; the client gives up
	// reconnecting after Linger. Either way the stream ends with an
	// *ExpiredError. Default 10 minutes.
	Linger time.Duration

	// RetryFast is the number of reconnection attempts a client makes at
	// once after losing its connection, before it backs off. Default 3.
	RetryFast int

	// RetryMin is the first backoff delay after the fast attempts; each
	// later delay doubles, up to RetryMax, and is jittered down by up to
	// half. Default 100 ms.
	RetryMin time.Duration

	// RetryMax caps the backoff delay. Default 10 s; at least RetryMin.
	RetryMax time.Duration

	// MaxSessions is the most sessions a Table holds; Open beyond it is
	// refused with ErrBusy (retryable). Default 100 000.
	MaxSessions int

	// TombstoneTTL is how long a Table remembers an expired or closed
	// session, so that a late resume learns "expired" (with what was
	// delivered) rather than "unknown". Zero keeps no tombstones. Default
	// 24 hours.
	TombstoneTTL time.Duration

	// MaxTombstones bounds the number of tombstones; the oldest go first.
	// Default 100 000.
	MaxTombstones int

	// Logger receives the layer's logs (reconnections, refused resumes,
	// expiries). Nil discards them.
	Logger *slog.Logger
}

// MessageOverhead is what a message costs in the replay and receive buffers
// on top of its length: it bounds the bookkeeping of many small messages.
const MessageOverhead = 64

const minBuffer = 64 << 10

// DefaultConfig returns the default configuration: 4 MiB replay and receive
// buffers, 1 MiB messages, acks at least every second, keepalives every 5 s,
// dead connections detected after 15 s, a 10-minute linger window.
func DefaultConfig() *Config {
	return &Config{
		ReplayBuffer:      4 << 20,
		ReceiveBuffer:     4 << 20,
		MaxMessage:        wire.DefaultMaxPayload,
		AckInterval:       time.Second,
		KeepaliveInterval: 5 * time.Second,
		DeadTimeout:       15 * time.Second,
		HandshakeTimeout:  10 * time.Second,
		Linger:            10 * time.Minute,
		RetryFast:         3,
		RetryMin:          100 * time.Millisecond,
		RetryMax:          10 * time.Second,
		MaxSessions:       100_000,
		TombstoneTTL:      24 * time.Hour,
		MaxTombstones:     100_000,
	}
}

// VerifyConfig checks c and returns a *ConfigError naming the first field
// that is out of range, or nil.
func VerifyConfig(c *Config) error {
	if c == nil {
		return &ConfigError{Field: "Config", Value: nil, Rule: "must not be nil"}
	}
	const maxBuffer = 1 << 30
	switch {
	case c.ReplayBuffer < minBuffer || c.ReplayBuffer > maxBuffer:
		return &ConfigError{"ReplayBuffer", c.ReplayBuffer, "must be between 64 KiB (65536) and 1 GiB"}
	case c.ReceiveBuffer < minBuffer || c.ReceiveBuffer > maxBuffer:
		return &ConfigError{"ReceiveBuffer", c.ReceiveBuffer, "must be between 64 KiB (65536) and 1 GiB"}
	case c.MaxMessage < 1 || c.MaxMessage > wire.MaxFrameHardLimit:
		return &ConfigError{"MaxMessage", c.MaxMessage, "must be between 1 and wire.MaxFrameHardLimit (16 MiB)"}
	case c.MaxMessage+MessageOverhead > c.ReplayBuffer:
		return &ConfigError{"MaxMessage", c.MaxMessage, "a message (plus MessageOverhead) must fit in ReplayBuffer"}
	case c.MaxMessage+MessageOverhead > c.ReceiveBuffer:
		return &ConfigError{"MaxMessage", c.MaxMessage, "a message (plus MessageOverhead) must fit in ReceiveBuffer"}
	case c.AckInterval <= 0:
		return &ConfigError{"AckInterval", c.AckInterval, "must be positive"}
	case c.KeepaliveInterval < 0:
		return &ConfigError{"KeepaliveInterval", c.KeepaliveInterval, "must not be negative (zero disables keepalives)"}
	case c.DeadTimeout < 0:
		return &ConfigError{"DeadTimeout", c.DeadTimeout, "must not be negative (zero disables the check)"}
	case c.DeadTimeout > 0 && c.KeepaliveInterval == 0:
		return &ConfigError{"DeadTimeout", c.DeadTimeout, "needs keepalives: set KeepaliveInterval, or DeadTimeout to zero"}
	case c.DeadTimeout > 0 && c.DeadTimeout < 2*c.KeepaliveInterval:
		return &ConfigError{"DeadTimeout", c.DeadTimeout, "must be at least twice KeepaliveInterval (" + c.KeepaliveInterval.String() + ")"}
	case c.HandshakeTimeout <= 0:
		return &ConfigError{"HandshakeTimeout", c.HandshakeTimeout, "must be positive"}
	case c.Linger <= 0:
		return &ConfigError{"Linger", c.Linger, "must be positive"}
	case c.RetryFast < 0:
		return &ConfigError{"RetryFast", c.RetryFast, "must not be negative"}
	case c.RetryMin <= 0:
		return &ConfigError{"RetryMin", c.RetryMin, "must be positive"}
	case c.RetryMax < c.RetryMin:
		return &ConfigError{"RetryMax", c.RetryMax, "must be at least RetryMin (" + c.RetryMin.String() + ")"}
	case c.MaxSessions < 1:
		return &ConfigError{"MaxSessions", c.MaxSessions, "must be at least 1"}
	case c.TombstoneTTL < 0:
		return &ConfigError{"TombstoneTTL", c.TombstoneTTL, "must not be negative (zero keeps no tombstones)"}
	case c.MaxTombstones < 0:
		return &ConfigError{"MaxTombstones", c.MaxTombstones, "must not be negative"}
	}
	return nil
}

// config returns a verified copy of c, or of DefaultConfig if c is nil.
func config(c *Config) (Config, error) {
	if c == nil {
		return *DefaultConfig(), nil
	}
	if err := VerifyConfig(c); err != nil {
		return Config{}, err
	}
	return *c, nil
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
