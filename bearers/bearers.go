// Package bearers is the bearer contract: the interfaces a transport implements
// to carry Connect traffic, its capabilities, endpoints and the scheme registry.
//
// A bearer is identified by a type id such as "connect.bearer.tcp" and serves one
// URL scheme ("tcp", "udp", "ssl", or a scheme a third-party bearer registers).
// Reliable bearers produce stream connections (a net.Conn whose Read and Write
// carry an ordered byte stream). Datagram bearers produce datagram connections:
// also a net.Conn, but every Write sends one datagram and every Read returns one
// datagram (truncated if the buffer is too small), exactly like a connected UDP
// socket.
//
// This package imports nothing but the standard library, and nothing of Connect
// imports in the other direction: the core, the client, the plugin host and the
// stock bearers all depend on it.
package bearers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Capabilities describe what a bearer guarantees. They are bit flags.
type Capabilities uint32

const (
	// Reliable: bytes written are delivered or the connection fails.
	Reliable Capabilities = 1 << iota
	// Ordered: bytes or datagrams arrive in the order they were written.
	Ordered
	// Secure: the bearer authenticates the server and encrypts traffic.
	Secure
	// Datagram: connections preserve message boundaries (one Write, one Read)
	// and may lose, duplicate or reorder messages unless Reliable is also set.
	Datagram
)

var capNames = []struct {
	c    Capabilities
	name string
}{{Reliable, "reliable"}, {Ordered, "ordered"}, {Secure, "secure"}, {Datagram, "datagram"}}

// Has reports whether every flag of want is set in c.
func (c Capabilities) Has(want Capabilities) bool { return c&want == want }

// String lists the flags, for example "reliable|ordered|secure".
func (c Capabilities) String() string {
	var parts []string
	for _, n := range capNames {
		if c&n.c != 0 {
			parts = append(parts, n.name)
			c &^= n.c
		}
	}
	if c != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint32(c)))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Validate rejects flag combinations no bearer can honestly claim.
func (c Capabilities) Validate() error {
	if c&^(Reliable|Ordered|Secure|Datagram) != 0 {
		return fmt.Errorf("bearers: unknown capability bits in %s", c)
	}
	if !c.Has(Datagram) && !c.Has(Reliable|Ordered) {
		return fmt.Errorf("bearers: a stream bearer must be reliable and ordered, got %s", c)
	}
	return nil
}

// Info describes a bearer.
type Info struct {
	// Type is the bearer's type id, for example "connect.bearer.tcp".
	Type string
	// Scheme is the endpoint scheme it serves, for example "tcp".
	Scheme string
	// Capabilities are the guarantees its connections give.
	Capabilities Capabilities
}

// Validate checks that an Info is complete and consistent.
func (i Info) Validate() error {
	if err := ValidateType(i.Type); err != nil {
		return err
	}
	if err := ValidateScheme(i.Scheme); err != nil {
		return err
	}
	return i.Capabilities.Validate()
}

// Attributes are a bearer's settings from configuration (a connection
// adapter's <attribute name=".." value=".."/> elements). Bearers must reject
// attributes they do not know, naming them.
type Attributes map[string]string

// Clone returns a copy that can be changed without affecting a.
func (a Attributes) Clone() Attributes {
	out := make(Attributes, len(a))
	for k, v := range a {
		out[k] = v
	}
	return out
}

// Peer describes the far end of an accepted or dialed connection as the bearer
// established it.
type Peer struct {
	// Identity is the authenticated identity of the peer, if the bearer
	// verified one (for ssl: the verified client certificate's subject, as
	// "CN=name"); empty otherwise.
	Identity string
}

// Bearer is a transport. Implementations must be safe for concurrent use.
type Bearer interface {
	// Info describes the bearer. It is constant.
	Info() Info
	// Listen starts accepting connections on the endpoint. The endpoint's
	// scheme is the bearer's. Cancelling ctx abandons a Listen in progress; it
	// does not close a listener already returned.
	Listen(ctx context.Context, ep Endpoint) (Listener, error)
	// Dial opens a connection to the endpoint. Cancelling ctx abandons the
	// dial; it does not close a connection already returned.
	Dial(ctx context.Context, ep Endpoint) (Conn, error)
}

// Conn is a connection produced by a bearer: a stream connection for reliable
// stream bearers, a datagram connection for datagram bearers.
type Conn interface {
	net.Conn
	// Peer tells what the bearer established about the far end.
	Peer() Peer
}

// Listener accepts connections for one endpoint.
type Listener interface {
	// Accept waits for the next connection. After Close it returns an error
	// that wraps net.ErrClosed.
	Accept(ctx context.Context) (Conn, error)
	// Addr is the bound address (the real port when the endpoint said :0).
	Addr() net.Addr
	// Endpoint is the bound address as an endpoint of the bearer's scheme.
	Endpoint() Endpoint
	// Close stops listening. It is idempotent. Connections already accepted
	// stay open.
	Close() error
}

// Config is what a bearer is created from.
type Config struct {
	// Attributes are the connection adapter's attributes.
	Attributes Attributes
	// StateDir is the host's state directory, where a bearer may keep files
	// (for example a generated certificate). Empty if the host has none.
	StateDir string
}

// Factory creates a bearer from configuration. It rejects unknown attributes
// and bad values with an error wrapping ErrBadAttribute that names them.
type Factory func(cfg Config) (Bearer, error)

// Noticer is implemented by bearers that have something to tell the operator
// once configured, for example where a generated certificate was written and
// how clients trust it. The host logs each notice.
type Noticer interface {
	Notices() []string
}

// Sentinel errors. Bearers wrap them with %w so that callers can test with
// errors.Is.
var (
	// ErrUnknownScheme: no bearer is registered for an endpoint's scheme.
	ErrUnknownScheme = errors.New("bearers: unknown scheme")
	// ErrBadEndpoint: an endpoint string could not be parsed.
	ErrBadEndpoint = errors.New("bearers: bad endpoint")
	// ErrBadAttribute: an attribute is unknown or has a bad value.
	ErrBadAttribute = errors.New("bearers: bad attribute")
	// ErrUnsupported: the bearer cannot do what was asked (for example
	// listen, for a dial-only bearer).
	ErrUnsupported = errors.New("bearers: operation not supported")
)

// ValidateType checks a bearer type id: dot-separated lower-case words, at least two.
func ValidateType(t string) error {
	if t == "" {
		return errors.New("bearers: empty bearer type")
	}
	parts := strings.Split(t, ".")
	if len(parts) < 2 {
		return fmt.Errorf("bearers: bearer type %q must have at least two dot-separated parts, like connect.bearer.tcp", t)
	}
	for _, p := range parts {
		if p == "" {
			return fmt.Errorf("bearers: bearer type %q has an empty part", t)
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
				return fmt.Errorf("bearers: bearer type %q: character %q not allowed (use a-z 0-9 _ -)", t, r)
			}
		}
	}
	return nil
}

// ValidateScheme checks a URL scheme as RFC 3986 defines it, lower case only.
func ValidateScheme(s string) error {
	if s == "" {
		return errors.New("bearers: empty scheme")
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')
		if !ok {
			return fmt.Errorf("bearers: scheme %q: character %q not allowed", s, r)
		}
	}
	return nil
}

// PacketBinder is implemented by datagram bearers whose listeners are plain
// kernel UDP sockets. BindPacket binds the endpoint and returns the socket
// without reading from it, so that a plugin can hand the socket itself to the
// host, which then does the (batched) datagram I/O with no extra process hop.
// The caller owns the returned socket.
type PacketBinder interface {
	BindPacket(ctx context.Context, ep Endpoint) (*net.UDPConn, error)
}

// SocketConn is implemented by connections that are a kernel socket
// underneath (a *net.TCPConn or *net.UDPConn), with nothing buffered above
// it. A plugin hands such a socket to the host as a file descriptor instead
// of relaying its bytes. A bearer must not claim this for a connection with
// state above the socket (TLS, WebSocket framing, buffered reads).
type SocketConn interface {
	NetConn() net.Conn
}
