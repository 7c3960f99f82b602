package wsbearer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearertest"
	"github.com/bearerkit/connect/examples/wsbearer"
)

const patience = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	t.Cleanup(cancel)
	return ctx
}

func newBearer(t *testing.T, attrs map[string]string) bearers.Bearer {
	t.Helper()
	b, err := wsbearer.New(bearers.Config{Attributes: attrs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func listen(t *testing.T, b bearers.Bearer, ep string) bearers.Listener {
	t.Helper()
	ln, err := b.Listen(ctxT(t), bearers.MustParseEndpoint(ep))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestConformance(t *testing.T) {
	bearertest.TestBearer(t, newBearer(t, nil), bearers.MustParseEndpoint("ws://127.0.0.1:0"))
}

func TestRegistration(t *testing.T) {
	var r bearers.Registry
	if err := r.Register(wsbearer.Registration); err != nil {
		t.Fatal(err)
	}
	if got, want := wsbearer.Registration.Info.Capabilities, bearers.Reliable|bearers.Ordered; got != want {
		t.Errorf("capabilities %s, want %s", got, want)
	}
}

func TestPaths(t *testing.T) {
	b := newBearer(t, nil)
	ln := listen(t, b, "ws://127.0.0.1:0")
	if got := ln.Endpoint().Path; got != "/connect" {
		t.Errorf("default path %q, want /connect", got)
	}
	base := "http://" + ln.Endpoint().HostPort()
	for path, want := range map[string]int{"/connect": http.StatusBadRequest, "/other": http.StatusNotFound} {
		resp, err := http.Get(base + path) // plain HTTP, no upgrade
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: status %d, want %d", path, resp.StatusCode, want)
		}
	}
	wrong := ln.Endpoint()
	wrong.Path = "/other"
	if c, err := b.Dial(ctxT(t), wrong); err == nil {
		c.Close()
		t.Error("Dial to a path nobody serves succeeded")
	}

	custom := listen(t, b, "ws://127.0.0.1:0/custom/ws")
	if got := custom.Endpoint().String(); !strings.HasSuffix(got, "/custom/ws") {
		t.Errorf("endpoint %s lost its path", got)
	}
	client, server := pipe(t, b, custom)
	roundTrip(t, client, server, []byte("hello"))
}

func pipe(t *testing.T, b bearers.Bearer, ln bearers.Listener) (client, server bearers.Conn) {
	t.Helper()
	ctx := ctxT(t)
	type res struct {
		c   bearers.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept(ctx)
		ch <- res{c, err}
	}()
	client, err := b.Dial(ctx, ln.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return client, r.c
}

func roundTrip(t *testing.T, from, to net.Conn, msg []byte) {
	t.Helper()
	if _, err := from.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %q, want %q", got, msg)
	}
}

// TestFramesFormAStream talks to the bearer with a plain WebSocket client:
// the frames it sends (binary and text, of several sizes) arrive as one
// byte stream, and the bearer's writes arrive as binary frames.
func TestFramesFormAStream(t *testing.T) {
	ln := listen(t, newBearer(t, nil), "ws://127.0.0.1:0")
	ctx := ctxT(t)
	accepted := make(chan bearers.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	ws, err := websocket.Dial("ws://"+ln.Endpoint().HostPort()+"/connect", "", "http://example.test")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}
	defer server.Close()

	var want bytes.Buffer
	for i, size := range []int{1, 200, 70000, 3} {
		frame := bytes.Repeat([]byte{byte('a' + i)}, size)
		want.Write(frame)
		ws.PayloadType = websocket.BinaryFrame
		if i == 3 {
			ws.PayloadType = websocket.TextFrame
		}
		if _, err := ws.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, want.Len())
	small := make([]byte, 1000) // smaller than a frame: partial reads
	for n := 0; n < len(got); {
		k, err := server.Read(small)
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", n, err)
		}
		n += copy(got[n:], small[:k])
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("stream differs from the frames sent")
	}

	if _, err := server.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	var msg []byte
	if err := websocket.Message.Receive(ws, &msg); err != nil {
		t.Fatal(err)
	}
	if string(msg) != "reply" {
		t.Errorf("client received %q", msg)
	}

	// A close frame from the peer ends the stream with io.EOF.
	ws.Close()
	server.SetReadDeadline(time.Now().Add(patience))
	if _, err := server.Read(small); !errors.Is(err, io.EOF) {
		t.Errorf("Read after the peer closed: %v, want io.EOF", err)
	}
}

func TestOriginAttribute(t *testing.T) {
	origins := make(chan string, 1)
	srv := &http.Server{Handler: websocket.Server{
		Handshake: func(cfg *websocket.Config, r *http.Request) error {
			origins <- r.Header.Get("Origin")
			return nil
		},
		Handler: func(ws *websocket.Conn) {},
	}}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(raw)
	defer srv.Close()
	ep := bearers.MustParseEndpoint("ws://" + raw.Addr().String() + "/connect")

	for attrs, want := range map[string]string{"": "http://localhost", "https://app.example": "https://app.example"} {
		a := map[string]string{}
		if attrs != "" {
			a["origin"] = attrs
		}
		c, err := newBearer(t, a).Dial(ctxT(t), ep)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if got := <-origins; got != want {
			t.Errorf("origin sent %q, want %q", got, want)
		}
	}
}

func TestSlowClientDoesNotBlockAccept(t *testing.T) {
	b := newBearer(t, nil)
	ln := listen(t, b, "ws://127.0.0.1:0")
	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte("GET /connect HTTP/1.1\r\nHost: x\r\n")) // and never finishes
	client, server := pipe(t, b, ln)
	if client.LocalAddr().String() != server.RemoteAddr().String() {
		t.Errorf("accepted %s, want %s", server.RemoteAddr(), client.LocalAddr())
	}
	roundTrip(t, client, server, []byte("through"))
	// Closing the listener leaves accepted connections open.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, server, client, []byte("still open"))
}

func TestBadAttributes(t *testing.T) {
	for _, tc := range []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"path": "/x"}, `no attribute "path" (known: origin)`},
		{map[string]string{"origin": "localhost"}, "absolute http(s) URL"},
		{map[string]string{"origin": "ftp://x"}, "absolute http(s) URL"},
	} {
		_, err := wsbearer.New(bearers.Config{Attributes: tc.attrs})
		if !errors.Is(err, bearers.ErrBadAttribute) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%v) = %v, want ErrBadAttribute saying %q", tc.attrs, err, tc.want)
		}
	}
}
