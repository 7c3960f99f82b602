package udp

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearertest"
	"github.com/bearerkit/connect/bearers/dgram"
)

func newBearer(t *testing.T, attrs bearers.Attributes) bearers.Bearer {
	t.Helper()
	b, err := New(bearers.Config{Attributes: attrs})
	if err != nil {
		t.Fatalf("New(%v): %v", attrs, err)
	}
	return b
}

func TestConformance(t *testing.T) {
	bearertest.TestBearer(t, newBearer(t, nil), bearers.MustParseEndpoint("udp://127.0.0.1:0"))
}

func TestRegistration(t *testing.T) {
	var r bearers.Registry
	if err := r.Register(Registration); err != nil {
		t.Fatal(err)
	}
	reg, err := r.ByScheme("udp")
	if err != nil || reg.Info.Type != "connect.bearer.udp" || reg.Info.Capabilities != bearers.Datagram {
		t.Fatalf("ByScheme(udp) = %+v, %v", reg.Info, err)
	}
}

func TestAttributes(t *testing.T) {
	for _, attrs := range []bearers.Attributes{
		{"readBuffer": "1048576", "writeBuffer": "2MiB", "batch": "1"},
		{"batch": "1024", "maxPeers": "10", "idleTimeout": "0", "offload": "false"},
		{"readBuffer": "512KiB", "idleTimeout": "30s", "offload": "true"},
	} {
		newBearer(t, attrs)
	}
	for _, tc := range []struct {
		attrs bearers.Attributes
		want  []string
	}{
		{bearers.Attributes{"batch": "0"}, []string{"batch", "1 to 1024"}},
		{bearers.Attributes{"batch": "1025"}, []string{"batch"}},
		{bearers.Attributes{"readBuffer": "lots"}, []string{"readBuffer", "lots"}},
		{bearers.Attributes{"writeBuffer": "-1"}, []string{"writeBuffer"}},
		{bearers.Attributes{"readBuffer": "2048MiB"}, []string{"readBuffer"}},
		{bearers.Attributes{"idleTimeout": "-1s"}, []string{"idleTimeout"}},
		{bearers.Attributes{"offload": "sometimes"}, []string{"offload"}},
		{bearers.Attributes{"nodelay": "true", "batch": "8"}, []string{"nodelay"}},
	} {
		_, err := New(bearers.Config{Attributes: tc.attrs})
		if !errors.Is(err, bearers.ErrBadAttribute) {
			t.Errorf("New(%v) = %v, want ErrBadAttribute", tc.attrs, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%v) = %q, want it to name %s", tc.attrs, err, w)
			}
		}
	}
}

func TestSockets(t *testing.T) {
	b := newBearer(t, bearers.Attributes{"batch": "8", "readBuffer": "1MiB"})
	ln, err := b.Listen(context.Background(), bearers.MustParseEndpoint("udp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pcer, ok := ln.(interface{ PacketConn() *net.UDPConn })
	if !ok {
		t.Fatalf("listener %T has no PacketConn", ln)
	}
	if pc := pcer.PacketConn(); pc == nil || pc.LocalAddr().String() != ln.Addr().String() {
		t.Fatalf("PacketConn() = %v, want the socket bound to %v", pc, ln.Addr())
	}
	c, err := b.Dial(context.Background(), ln.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc, ok := c.(interface{ NetConn() net.Conn })
	if !ok {
		t.Fatalf("dialed conn %T has no NetConn", c)
	}
	uc, ok := nc.NetConn().(*net.UDPConn)
	if !ok || uc.LocalAddr().String() != c.LocalAddr().String() || uc.RemoteAddr().String() != ln.Addr().String() {
		t.Fatalf("NetConn() = %T %v, want the connected *net.UDPConn", nc.NetConn(), nc.NetConn())
	}
	// Accepted conns share the listener's socket: they must not claim one.
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(interface{ NetConn() net.Conn }); ok {
		t.Fatalf("accepted conn %T claims a kernel socket of its own", s)
	}
}

// TestHandover takes a listener's socket without accepting, as the plugin SDK
// does, wraps it with dgram in the "host" and serves a client through it.
func TestHandover(t *testing.T) {
	b := newBearer(t, nil)
	ln, err := b.Listen(context.Background(), bearers.MustParseEndpoint("udp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(interface{ PacketConn() *net.UDPConn }).PacketConn().File() // a dup, as SCM_RIGHTS gives
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	host := dgram.NewListener(fc.(*net.UDPConn), bearers.Endpoint{Scheme: "udp"}, dgram.Options{})
	defer host.Close()
	if host.Endpoint() != ln.Endpoint() {
		t.Fatalf("host endpoint %s, plugin endpoint %s", host.Endpoint(), ln.Endpoint())
	}
	c, err := b.Dial(context.Background(), ln.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 20; i++ {
		if _, err := c.Write([]byte("datagram " + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := host.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for i := 0; i < 20; i++ {
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		// The plugin's listener never read: the host sees every datagram.
		if want := "datagram " + strconv.Itoa(i); string(buf[:n]) != want {
			t.Fatalf("host read %q, want %q", buf[:n], want)
		}
	}
}
