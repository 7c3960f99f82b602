package core

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// relayRig is a server with its secondary endpoint, a runner connection
// that provides remote.echo without listening (relay), and a client
// connection with a session whose add goes over the reliable link.
type relayRig struct {
	srv            *Server
	runner, client *sessionRig
	doc            *routing.Document
	open           *session.RemoteOpen
}

func newRelayRig(t *testing.T, relay bool) *relayRig {
	t.Helper()
	r := remoteServer(t, "")
	r.srv.ctx, r.srv.cancel = context.WithCancel(r.srv.ctx)
	if err := r.srv.startRelay(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.srv.cancel()
		within(t, "the relay's goroutines", r.srv.wg.Wait)
	})
	rr := &relayRig{srv: r.srv, runner: r.connRig("runner", [16]byte{}), client: r.connRig("client", [16]byte{})}
	m := &session.ProvideService{ID: 1, Service: "remote.echo", XML: remoteXMLFile(t), Relay: relay}
	if !relay {
		m.Endpoints = []session.RunnerEndpoint{{Address: "tcp://127.0.0.1:9700", Bearer: "connect.bearer.tcp", Capabilities: 3}}
	}
	rr.runner.send(m)
	if ok, isOK := rr.runner.next().(*session.OK); !isOK || ok.ID != 1 {
		t.Fatalf("ProvideService: %#v", ok)
	}
	rr.doc, rr.open = startDirect(t, rr.client, rr.runner, 5)
	return rr
}

// reliable is the session's reliable link.
func (rr *relayRig) reliable(t *testing.T) routing.Link {
	t.Helper()
	for _, l := range rr.doc.Links {
		if l.Name == "reliable" {
			return l
		}
	}
	t.Fatalf("no reliable link in %+v", rr.doc)
	return routing.Link{}
}

// dialSecondary connects to the secondary endpoint and sends m first.
func dialSecondary(t *testing.T, srv *Server, m session.Message) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.relay.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if m != nil {
		b, err := session.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b})); err != nil {
			t.Fatal(err)
		}
	}
	c.SetDeadline(time.Now().Add(guard))
	return c
}

// readMessage reads one session message from a raw connection.
func readMessage(t *testing.T, c net.Conn) (session.Message, error) {
	t.Helper()
	wc := wire.NewStreamConn(c, 0)
	f, err := wc.ReadFrame()
	if err != nil {
		return nil, err
	}
	return session.Decode(f.Payload)
}

// TestRelayLink: a client's link opened at the secondary endpoint makes
// the server ask the runner for a connection over its control connection;
// the runner's connection gets the client's LinkOpen byte for byte, and
// bytes flow both ways until one side closes.
func TestRelayLink(t *testing.T) {
	rr := newRelayRig(t, true)
	l := rr.reliable(t)
	if want := fmt.Sprintf("tcp://127.0.0.1:%d", rr.srv.relay.port); l.Address.String() != want || l.Bearer != "connect.bearer.tcp" {
		t.Fatalf("the reliable link is %s over %s, want the secondary endpoint %s over tcp", l.Address, l.Bearer, want)
	}
	lo := &session.LinkOpen{ID: 9, Session: rr.open.Session, Link: "reliable", Token: l.Token}
	cc := dialSecondary(t, rr.srv, lo)

	req := next[*session.ConnectRequest](rr.runner)
	if req.Port != uint64(rr.srv.relay.port) || len(req.Token) != session.ConnectTokenSize || req.Session != rr.open.Session || req.Link != "reliable" {
		t.Fatalf("ConnectRequest %v", req)
	}
	rc := dialSecondary(t, rr.srv, &session.ConnectAttach{ID: req.ID, Token: req.Token})
	rr.runner.send(&session.OK{ID: req.ID})

	got, err := readMessage(t, rc)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := got.(*session.LinkOpen); !ok || *g != *lo {
		t.Fatalf("the runner got %#v, want the client's LinkOpen", got)
	}
	// The runner's answer reaches the client; then the runner closes.
	b, _ := session.Encode(&session.OK{ID: 9})
	rc.Write(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b}))
	if m, err := readMessage(t, cc); err != nil {
		t.Fatal(err)
	} else if ok, isOK := m.(*session.OK); !isOK || ok.ID != 9 {
		t.Fatalf("the client got %#v", m)
	}
	rc.Close()
	if _, err := io.ReadAll(cc); err != nil {
		t.Fatalf("the client's end after the runner closed: %v", err)
	}
	if rr.srv.relay.links.Load() != 1 {
		t.Errorf("links relayed: %d", rr.srv.relay.links.Load())
	}
	// The token was for one connection.
	again := dialSecondary(t, rr.srv, &session.ConnectAttach{ID: 3, Token: req.Token})
	if m, err := readMessage(t, again); err != nil {
		t.Fatal(err)
	} else if e, ok := m.(*session.Error); !ok || e.Code != session.CodeDenied || !strings.Contains(e.Message, "no connection request with that token") {
		t.Fatalf("a used token: %#v", m)
	}
}

// TestRelayRefusals: the secondary endpoint checks the session's token
// (as the runner does), relays only to runners that do not listen, says
// when the runner could not connect, and drops what is not a session
// message.
func TestRelayRefusals(t *testing.T) {
	rr := newRelayRig(t, true)
	l := rr.reliable(t)
	expectError := func(c net.Conn, code session.Code, text string) {
		t.Helper()
		m, err := readMessage(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := m.(*session.Error); !ok || e.Code != code || !strings.Contains(e.Message, text) {
			t.Fatalf("got %#v, want %v %q", m, code, text)
		}
	}
	// A wrong token, an unknown session: the same answer, nothing asked of the runner.
	expectError(dialSecondary(t, rr.srv, &session.LinkOpen{ID: 1, Session: rr.open.Session, Link: "reliable", Token: l.Token + "x"}),
		session.CodeDenied, "no open session")
	expectError(dialSecondary(t, rr.srv, &session.LinkOpen{ID: 1, Session: "nope", Link: "reliable", Token: l.Token}),
		session.CodeDenied, "no open session")
	// An unknown attach token.
	expectError(dialSecondary(t, rr.srv, &session.ConnectAttach{ID: 2, Token: bytes.Repeat([]byte{7}, 16)}),
		session.CodeDenied, "no connection request with that token")
	// Another first message.
	expectError(dialSecondary(t, rr.srv, &session.Call{ID: 4, Session: rr.open.Session, Method: "add"}),
		session.CodeBadRequest, "LinkOpen or ConnectAttach, not Call")
	// Not our protocol at all: closed.
	c := dialSecondary(t, rr.srv, nil)
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := readMessage(t, c); err == nil {
		t.Fatal("an HTTP request got an answer")
	}
	// The runner cannot connect.
	cc := dialSecondary(t, rr.srv, &session.LinkOpen{ID: 1, Session: rr.open.Session, Link: "reliable", Token: l.Token})
	req := next[*session.ConnectRequest](rr.runner)
	rr.runner.send(session.NewError(req.ID, session.CodeUnavailable, "dial refused"))
	expectError(cc, session.CodeUnavailable, "did not connect for link \"reliable\": unavailable: dial refused")
	if n := rr.srv.relay.refused.Load(); n != 6 {
		t.Errorf("refused: %d, want 6", n)
	}
}

// TestRelayNotForListeningRunners: a runner that listens gets its links
// itself; the secondary endpoint does not relay them.
func TestRelayNotForListeningRunners(t *testing.T) {
	rr := newRelayRig(t, false)
	l := rr.reliable(t)
	if l.Address.String() != "tcp://127.0.0.1:9700" {
		t.Fatalf("the reliable link of a listening runner is %s", l.Address)
	}
	c := dialSecondary(t, rr.srv, &session.LinkOpen{ID: 1, Session: rr.open.Session, Link: "reliable", Token: l.Token})
	m, err := readMessage(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := m.(*session.Error); !ok || e.Code != session.CodeDenied || !strings.Contains(e.Message, "listens for its direct links itself") {
		t.Fatalf("got %#v", m)
	}
}

// TestBindSecondaryRetries: binding the secondary port is attempted up to
// maxRetries times, then fails saying so.
func TestBindSecondaryRetries(t *testing.T) {
	orig := listenFunc
	defer func() { listenFunc = orig }()
	attempts := 0
	failFirst := 0
	listenFunc = func(addr string) (net.Listener, error) {
		attempts++
		if attempts <= failFirst {
			return nil, errors.New("address already in use")
		}
		return orig(addr)
	}
	ctx := t.Context()
	failFirst = 2
	ln, err := bindSecondary(ctx, "127.0.0.1:0", 3, 0)
	if err != nil || attempts != 3 {
		t.Fatalf("2 failures then success with maxRetries 3: %v after %d attempts", err, attempts)
	}
	ln.Close()
	attempts, failFirst = 0, 100
	_, err = bindSecondary(ctx, "127.0.0.1:0", 4, 0)
	if err == nil || attempts != 4 || !strings.Contains(err.Error(), "gave up after 4 attempts, <resume maxRetries>") ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("always failing, maxRetries 4: %v after %d attempts", err, attempts)
	}
}

// FuzzRelayFirstFrame: the first frame on the secondary endpoint is read
// from anyone; whatever it is, readFirstFrame returns an error or a
// session message, never reads more than one bounded frame, and never
// panics. Seeds in testdata/fuzz/FuzzRelayFirstFrame.
func FuzzRelayFirstFrame(f *testing.F) {
	frame := func(m session.Message) []byte {
		b, err := session.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		return wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: b})
	}
	f.Add(frame(&session.LinkOpen{ID: 1, Session: "s", Link: "reliable", Token: "tok"}))
	f.Add(frame(&session.ConnectAttach{ID: 1, Token: bytes.Repeat([]byte{1}, 16)}))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: session.Channel, Payload: make([]byte, 5000)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		raw, m, err := readFirstFrame(r)
		if err != nil {
			return
		}
		if m == nil || len(raw) > wire.HeaderSize+relayMaxFirstFrame || !bytes.Equal(raw, data[:len(raw)]) {
			t.Fatalf("readFirstFrame: %d bytes, message %v", len(raw), m)
		}
	})
}
