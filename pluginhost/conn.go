package pluginhost

import (
	"fmt"
	"io"
	"net"
	"os"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
	"github.com/bearerkit/connect/bearers/dgram"
)

// conn is a connection received from a plugin.
type conn struct {
	net.Conn
	peer          bearers.Peer
	local, remote net.Addr
	handoff       bearerpb.Handoff
}

func (c *conn) Peer() bearers.Peer   { return c.peer }
func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// NetConn exposes the kernel socket for connections handed over as one.
func (c *conn) NetConn() net.Conn { return c.Conn }

// ReadFrom and WriteTo keep the kernel's splice/sendfile paths of the
// underlying socket available to io.Copy.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *conn) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.Conn.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{c.Conn})
}

// addr is a net.Addr reported by a plugin.
type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

// wrapConn turns a received descriptor into a bearers.Conn as the control
// message says. It takes ownership of f.
func wrapConn(f *os.File, m *bearerpb.Connection, scheme string) (bearers.Conn, error) {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("conn %d: descriptor is not a socket: %w", m.ConnId, err)
	}
	c := &conn{Conn: nc, peer: bearers.Peer{Identity: m.PeerIdentity}, handoff: m.Handoff,
		local: addr{scheme, m.LocalAddr}, remote: addr{scheme, m.RemoteAddr}}
	wrong := func(want string) (bearers.Conn, error) {
		nc.Close()
		return nil, fmt.Errorf("conn %d: plugin said %s but sent a %T", m.ConnId, want, nc)
	}
	switch m.Handoff {
	case bearerpb.Handoff_HANDOFF_STREAM_SOCKET:
		tc, ok := nc.(*net.TCPConn)
		if !ok {
			return wrong("a TCP socket")
		}
		// A socket the peer already reset has no peer name (RemoteAddr
		// nil): keep the plugin's report then.
		if la := tc.LocalAddr(); la != nil {
			c.local = la
		}
		if ra := tc.RemoteAddr(); ra != nil {
			c.remote = ra
		}
	case bearerpb.Handoff_HANDOFF_STREAM_RELAY, bearerpb.Handoff_HANDOFF_DATAGRAM_RELAY:
		if _, ok := nc.(*net.UnixConn); !ok {
			return wrong("a unix socket")
		}
	case bearerpb.Handoff_HANDOFF_PACKET_SOCKET:
		uc, ok := nc.(*net.UDPConn)
		if !ok {
			return wrong("a UDP socket")
		}
		dc := dgram.NewConn(uc, dgram.Options{})
		return &conn{Conn: dc, peer: c.peer, handoff: m.Handoff, local: uc.LocalAddr(), remote: uc.RemoteAddr()}, nil
	default:
		nc.Close()
		return nil, fmt.Errorf("conn %d: unknown handoff kind %v", m.ConnId, m.Handoff)
	}
	return c, nil
}
