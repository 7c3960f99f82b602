// Package udp is the stock datagram bearer, connect.bearer.udp, serving
// endpoints udp://host:port. Its connections are datagram connections: one
// Write is one UDP datagram, one Read returns one datagram; they are neither
// reliable nor ordered (capability Datagram only).
//
// Listen binds a UDP socket and serves it with dgram.NewListener: batched
// reads and writes (recvmmsg/sendmmsg), one accepted Conn per remote address.
// The listener exposes the bound socket with
//
//	PacketConn() *net.UDPConn
//
// which the plugin SDK uses to hand the socket's descriptor to the host; the
// host wraps it with dgram.NewListener itself. Dial opens a connected UDP
// socket served by dgram.NewConn; the Conn exposes it with
//
//	NetConn() net.Conn
//
// returning the *net.UDPConn, so that it too can be handed over as a kernel
// socket. Nothing is read from either socket until the first Accept, Read or
// Write, so handing it over does not race a reader in the plugin.
//
// Accepted connections share the listener's socket, so closing the listener
// closes them too (a stream bearer's accepted connections outlive their
// listener; a udp listener's cannot).
//
// Attributes:
//
//	readBuffer   socket receive buffer in bytes (suffixes KiB, MiB allowed), default 4MiB, best effort
//	writeBuffer  socket send buffer in bytes, default 4MiB, best effort
//	batch        datagrams per system call, 1..1024, default 64
//	maxPeers     peers one listener serves at once, default 4096
//	idleTimeout  forget a listener's peer after this long without traffic (Go duration), default 2m; "0" never
//	offload      use UDP segmentation offload (UDP_SEGMENT/UDP_GRO) where the kernel has it (bool), default true
//
// A Bearer is safe for concurrent use.
package udp

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/dgram"
)

// Type and Scheme of the udp bearer.
const (
	Type   = "connect.bearer.udp"
	Scheme = "udp"
)

// Info describes the udp bearer.
var Info = bearers.Info{Type: Type, Scheme: Scheme, Capabilities: bearers.Datagram}

// Registration registers the udp bearer in a bearers.Registry.
var Registration = bearers.Registration{Info: Info, New: New}

const defaultBuffer = 4 << 20

// Bearer is the udp bearer.
type Bearer struct {
	readBuffer  int
	writeBuffer int
	opts        dgram.Options
}

var _ bearers.Bearer = (*Bearer)(nil)

// New creates a udp bearer from its attributes; unknown attributes and bad
// values give an error wrapping bearers.ErrBadAttribute that names them.
func New(cfg bearers.Config) (bearers.Bearer, error) {
	b := &Bearer{readBuffer: defaultBuffer, writeBuffer: defaultBuffer}
	opts, rest, err := dgram.ParseAttributes(cfg.Attributes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Type, err)
	}
	b.opts = opts
	var unknown []string
	for name, value := range rest {
		var err error
		switch name {
		case "readBuffer":
			b.readBuffer, err = parseSize(value)
		case "writeBuffer":
			b.writeBuffer, err = parseSize(value)
		default:
			unknown = append(unknown, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s attribute %s=%q: %v", bearers.ErrBadAttribute, Type, name, value, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("%w: %s does not know attribute(s) %s (known: batch, idleTimeout, maxPeers, offload, readBuffer, writeBuffer)",
			bearers.ErrBadAttribute, Type, strings.Join(unknown, ", "))
	}
	return b, nil
}

// parseSize parses a byte count: an integer with an optional KiB or MiB suffix.
func parseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	switch {
	case strings.HasSuffix(s, "MiB"):
		mult, s = 1<<20, strings.TrimSuffix(s, "MiB")
	case strings.HasSuffix(s, "KiB"):
		mult, s = 1<<10, strings.TrimSuffix(s, "KiB")
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v < 1 || v > (1<<30)/mult {
		return 0, fmt.Errorf("want a byte count from 1 to 1GiB, like 4194304 or 4MiB")
	}
	return v * mult, nil
}

// Info describes the bearer.
func (b *Bearer) Info() bearers.Info { return Info }

func (b *Bearer) setBuffers(c *net.UDPConn) {
	// Best effort: the kernel caps the sizes at net.core.[rw]mem_max.
	_ = c.SetReadBuffer(b.readBuffer)
	_ = c.SetWriteBuffer(b.writeBuffer)
}

// Listen binds ep and serves it. The returned listener is a *dgram.Listener,
// whose PacketConn method returns the bound socket.
func (b *Bearer) Listen(ctx context.Context, ep bearers.Endpoint) (bearers.Listener, error) {
	uc, err := b.BindPacket(ctx, ep)
	if err != nil {
		return nil, err
	}
	return dgram.NewListener(uc, ep, b.opts), nil
}

// BindPacket implements bearers.PacketBinder: it binds ep with the
// configured socket buffer sizes and returns the socket unread, so that a
// plugin can hand it to the host, which serves it with the same dgram
// engine (configured from the same attributes, see dgram.ParseAttributes).
func (b *Bearer) BindPacket(ctx context.Context, ep bearers.Endpoint) (*net.UDPConn, error) {
	if err := Info.CheckEndpoint("listen", ep); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", Type, ep, err)
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("%s: listen %s: got %T, not a UDP socket", Type, ep, pc)
	}
	b.setBuffers(uc)
	return uc, nil
}

// Conn is a dialed udp connection: a dgram.Conn over a connected socket.
type Conn struct {
	*dgram.Conn
	uc *net.UDPConn
}

// NetConn returns the connected *net.UDPConn, for handing its descriptor to
// another process.
func (c *Conn) NetConn() net.Conn { return c.uc }

// Dial opens a connected UDP socket to ep. Nothing is sent until the first
// Write, so Dial succeeds even if nothing listens there; the first Read after
// a Write then fails with the kernel's "connection refused".
func (b *Bearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	if err := Info.CheckEndpoint("dial", ep); err != nil {
		return nil, err
	}
	if ep.Port == 0 {
		return nil, fmt.Errorf("%s: dial %s: %w: port 0", Type, ep, bearers.ErrBadEndpoint)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", Type, ep, err)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", Type, ep, err)
	}
	uc, ok := nc.(*net.UDPConn)
	if !ok {
		_ = nc.Close()
		return nil, fmt.Errorf("%s: dial %s: got %T, not a UDP socket", Type, ep, nc)
	}
	b.setBuffers(uc)
	return &Conn{Conn: dgram.NewConn(uc, b.opts), uc: uc}, nil
}
