package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

var testClientID = [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// sampleMessages returns one or more messages of every type, with every field
// set in at least one of them.
func sampleMessages() []struct {
	name string
	m    Message
} {
	return []struct {
		name string
		m    Message
	}{
		{"hello-full", &Hello{MinVersion: 1, MaxVersion: 3, ClientID: testClientID, Token: "s3cret-token", ClientName: "laptop ü", Features: 1<<63 | 5, MaxPayload: 4 << 20}},
		{"hello-minimal", &Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID}},
		{"welcome-full", &Welcome{Version: 1, ServerID: "server-a", ClientID: testClientID, PingIntervalMillis: 15000, MaxPayload: DefaultMaxPayload, Features: 4, PingWindowMillis: 30000}},
		{"welcome-minimal", &Welcome{Version: 1, ClientID: testClientID}},
		{"reject-auth", &Reject{Code: RejectAuth, Message: "bad token"}},
		{"reject-busy", &Reject{Code: RejectBusy, Message: "try later", Retryable: true, RetryAfterMillis: 2500}},
		{"reject-unknown-code", &Reject{Code: 999}},
		{"ping", &Ping{ID: 42, SentUnixNano: 1_750_000_000_123_456_789}},
		{"ping-zero", &Ping{}},
		{"ping-negative-time", &Ping{ID: 1<<64 - 1, SentUnixNano: -5}},
		{"pong", &Pong{ID: 42, SentUnixNano: 1_750_000_000_123_456_789}},
		{"close-going-away", &Close{Code: CloseGoingAway, Reason: "draining to server-b"}},
		{"close-normal", &Close{}},
		{"data-empty", &Data{Channel: 7}},
		{"data-64", &Data{Channel: 1, Flags: 0x8001, Payload: bytes.Repeat([]byte{0xab}, 64)}},
		{"data-channel-max", &Data{Channel: 1<<32 - 1, Flags: 0xffff, Payload: []byte("x")}},
	}
}

// memConn is an in-memory net.Conn: reads come from r in chunks of at most
// chunk bytes (all at once if chunk is 0); writes go to w.
type memConn struct {
	r      io.Reader
	chunk  int
	w      bytes.Buffer
	closed bool
}

func (c *memConn) Read(b []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.chunk > 0 && len(b) > c.chunk {
		b = b[:c.chunk]
	}
	return c.r.Read(b)
}

func (c *memConn) Write(b []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.w.Write(b)
}

func (c *memConn) Close() error                       { c.closed = true; return nil }
func (c *memConn) LocalAddr() net.Addr                { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr               { return memAddr{} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		client.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// udpPeer is the server side of a UDP "connection": the listening socket
// talking to one peer, as a datagram bearer presents it.
type udpPeer struct {
	*net.UDPConn
	peer *net.UDPAddr
}

func (u udpPeer) Read(b []byte) (int, error) {
	for {
		n, addr, err := u.ReadFromUDP(b)
		if err != nil || addr.AddrPort() == u.peer.AddrPort() {
			return n, err
		}
	}
}

func (u udpPeer) Write(b []byte) (int, error) { return u.WriteToUDP(b, u.peer) }
func (u udpPeer) RemoteAddr() net.Addr        { return u.peer }

// udpPair returns a connected client UDP socket and the server's view of it.
func udpPair(t testing.TB) (client *net.UDPConn, server net.Conn) {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	client, err = net.DialUDP("udp", nil, ln.LocalAddr().(*net.UDPAddr))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	// Roomy socket buffers so that the concurrent-writer test does not
	// overrun them (best effort: the kernel may cap them).
	_ = ln.SetReadBuffer(1 << 20)
	_ = client.SetReadBuffer(1 << 20)
	t.Cleanup(func() { client.Close(); ln.Close() })
	return client, udpPeer{ln, client.LocalAddr().(*net.UDPAddr)}
}

// mustDecodeError asserts that err is a *DecodeError wrapping want and
// returns it.
func mustDecodeError(t *testing.T, err, want error) *DecodeError {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %q (%T) is not a *DecodeError", err, err)
	}
	if !errors.Is(err, want) {
		t.Fatalf("error %q does not wrap %q", err, want)
	}
	return de
}
