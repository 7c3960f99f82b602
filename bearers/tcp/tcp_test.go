package tcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearertest"
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
	bearertest.TestBearer(t, newBearer(t, nil), bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
}

func TestRegistration(t *testing.T) {
	var r bearers.Registry
	if err := r.Register(Registration); err != nil {
		t.Fatal(err)
	}
	reg, err := r.ByScheme("tcp")
	if err != nil || reg.Info.Type != "connect.bearer.tcp" || reg.Info.Capabilities != bearers.Reliable|bearers.Ordered {
		t.Fatalf("ByScheme(tcp) = %+v, %v", reg.Info, err)
	}
}

func TestAttributes(t *testing.T) {
	for _, attrs := range []bearers.Attributes{
		{"nodelay": "false"}, {"nodelay": "true", "keepalive": "0"}, {"keepalive": "1m30s"},
	} {
		newBearer(t, attrs)
	}
	for _, tc := range []struct {
		attrs bearers.Attributes
		want  []string // in the message
	}{
		{bearers.Attributes{"nodelay": "maybe"}, []string{"nodelay", "maybe"}},
		{bearers.Attributes{"keepalive": "15"}, []string{"keepalive", `"15"`}},
		{bearers.Attributes{"keepalive": "-1s"}, []string{"keepalive"}},
		{bearers.Attributes{"zeta": "1", "alpha": "2", "nodelay": "true"}, []string{"alpha, zeta"}},
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

func TestKernelSocket(t *testing.T) {
	b := newBearer(t, bearers.Attributes{"nodelay": "false"})
	client, server := bearertest.Pipe(t, b, bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
	for name, c := range map[string]bearers.Conn{"dialed": client, "accepted": server} {
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			t.Fatalf("%s conn %T has no NetConn", name, c)
		}
		tc, ok := nc.NetConn().(*net.TCPConn)
		if !ok {
			t.Fatalf("%s conn: NetConn() = %T, want *net.TCPConn", name, nc.NetConn())
		}
		if tc.LocalAddr().String() != c.LocalAddr().String() {
			t.Errorf("%s conn: NetConn is not the conn's socket", name)
		}
		if _, ok := c.(io.ReaderFrom); !ok {
			t.Errorf("%s conn is not an io.ReaderFrom", name)
		}
		if _, ok := c.(io.WriterTo); !ok {
			t.Errorf("%s conn is not an io.WriterTo", name)
		}
	}
}

// TestCopyBetweenConns relays through io.Copy between two bearer conns
// (ReadFrom/WriteTo unwrap to the kernel sockets) and through a
// LimitedReader, checking the bytes.
func TestCopyBetweenConns(t *testing.T) {
	b := newBearer(t, nil)
	ep := bearers.MustParseEndpoint("tcp://127.0.0.1:0")
	aClient, aServer := bearertest.Pipe(t, b, ep)
	bClient, bServer := bearertest.Pipe(t, b, ep)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	go func() {
		_, _ = aClient.Write(want)
		_ = aClient.(*Conn).CloseWrite()
	}()
	copied := make(chan error, 1)
	go func() {
		// aServer -> bClient, limited to all but the last 16 bytes, then the rest.
		lr := &io.LimitedReader{R: aServer, N: int64(len(want) - 16)}
		n, err := io.Copy(bClient, lr)
		if err == nil && (n != int64(len(want)-16) || lr.N != 0) {
			err = fmt.Errorf("limited copy moved %d bytes, left N=%d", n, lr.N)
		}
		if err == nil {
			_, err = io.Copy(bClient, aServer)
		}
		_ = bClient.(*Conn).CloseWrite()
		copied <- err
	}()
	_ = bServer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(bServer)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-copied; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("relayed %d bytes, want %d identical bytes", len(got), len(want))
	}
}

func TestEndpointChecks(t *testing.T) {
	b := newBearer(t, nil)
	ctx := context.Background()
	for _, ep := range []bearers.Endpoint{
		{Scheme: "tcp", Host: "", Port: 1},
		{Scheme: "tcp", Host: "127.0.0.1", Port: 70000},
		{Scheme: "tcp", Host: "127.0.0.1", Port: 1, Path: "/x"},
		{Scheme: "udp", Host: "127.0.0.1", Port: 1},
	} {
		if _, err := b.Listen(ctx, ep); !errors.Is(err, bearers.ErrBadEndpoint) {
			t.Errorf("Listen(%+v) = %v, want ErrBadEndpoint", ep, err)
		}
		if _, err := b.Dial(ctx, ep); !errors.Is(err, bearers.ErrBadEndpoint) {
			t.Errorf("Dial(%+v) = %v, want ErrBadEndpoint", ep, err)
		}
	}
	if _, err := b.Dial(ctx, bearers.MustParseEndpoint("tcp://127.0.0.1:0")); !errors.Is(err, bearers.ErrBadEndpoint) {
		t.Errorf("Dial to port 0 = %v, want ErrBadEndpoint", err)
	}
}

// TestConcurrentAccepts has several Accepts wait at once, cancels some, and
// checks the others still get the connections.
func TestConcurrentAccepts(t *testing.T) {
	b := newBearer(t, nil)
	ln, err := b.Listen(context.Background(), bearers.MustParseEndpoint("tcp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	live, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	var wg sync.WaitGroup
	results := make(chan error, 6)
	for i := 0; i < 6; i++ {
		ctx := live
		if i%2 == 0 {
			ctx = cancelled
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ln.Accept(ctx)
			if err == nil {
				c.Close()
			}
			results <- err
		}()
	}
	cancel()
	// The cancelled three return without any connection arriving.
	for i := 0; i < 3; i++ {
		if err := <-results; !errors.Is(err, context.Canceled) {
			t.Fatalf("Accept = %v, want context.Canceled", err)
		}
	}
	for i := 0; i < 3; i++ {
		c, err := b.Dial(live, ln.Endpoint())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("Accept with a live context: %v", err)
		}
	}
}
