package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// TestRelayUDPListener: the udp paths a relaying provider dials are handed
// to Accept; a newer path of the same link closes the older one; Close
// closes the paths and is idempotent.
func TestRelayUDPListener(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dial := func() *udpPath {
		c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		return &udpPath{Conn: c, done: make(chan struct{})}
	}
	l := newRelayUDPListener()
	a, b := dial(), dial()
	if !l.offer("s\x00unreliable", a) {
		t.Fatal("offer refused")
	}
	if c, err := l.Accept(context.Background()); err != nil || c != a {
		t.Fatalf("Accept: %v, %v", c, err)
	}
	if !l.offer("s\x00unreliable", b) {
		t.Fatal("offer refused")
	}
	if _, err := a.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the older path is still open: %v", err)
	}
	l.forget("s\x00unreliable", a) // not the newest: no effect
	l.Close()
	l.Close()
	if _, err := b.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a path is open after Close: %v", err)
	}
	if _, err := l.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if l.offer("x", dial()) {
		t.Error("an offer after Close was taken")
	}
}

// TestConnectUDPAttach: a provider asked for a udp path dials the address
// and sends ConnectAttach with the request's token in one datagram, a
// connected socket (its remote address set).
func TestConnectUDPAttach(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p := &Provider{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.direct.udp = newRelayUDPListener()
	defer func() {
		p.cancel()
		p.direct.udp.Close()
		p.wg.Wait()
	}()
	tok := make([]byte, session.ConnectTokenSize)
	tok[3] = 9
	m := &session.ConnectRequest{ID: 4, Token: tok, Port: uint64(srv.LocalAddr().(*net.UDPAddr).Port), Session: "s", Link: "unreliable", Datagram: true}
	if ans := p.connectUDP(context.Background(), m, srv.LocalAddr().String()); ans.Kind() != session.KindOK {
		t.Fatalf("answer %v", ans)
	}
	buf := make([]byte, 1024)
	n, from, err := srv.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	h, err := wire.ParseHeader(buf[:n])
	if err != nil || h.Type != wire.TypeData || h.Channel != session.Channel {
		t.Fatalf("header %+v, %v", h, err)
	}
	got, err := session.Decode(buf[wire.HeaderSize:n])
	if a, ok := got.(*session.ConnectAttach); err != nil || !ok || a.ID != 4 || string(a.Token) != string(tok) {
		t.Fatalf("decoded %v, %v", got, err)
	}
	c, err := p.direct.udp.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteAddr().String() != srv.LocalAddr().String() || c.LocalAddr().String() != from.String() {
		t.Errorf("the path %v → %v, want a connected socket from %v to %v", c.LocalAddr(), c.RemoteAddr(), from, srv.LocalAddr())
	}
}
