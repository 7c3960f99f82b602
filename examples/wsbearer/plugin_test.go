package wsbearer_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/net/nettest"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearertest"
	"github.com/bearerkit/connect/examples/wsbearer"
	"github.com/bearerkit/connect/pluginhost"
)

// TestPlugin builds cmd/connect-bearer-ws, starts it the way connectserver
// starts a third-party bearer, and checks connections through the plugin
// boundary (nettest.TestConn over the relayed connections), and that the
// in-process bearer and the plugin talk to each other. (The in-process
// bearer runs the whole conformance suite in TestConformance; through the
// plugin, the suite's scheme and cancellation checks test the plugin host's
// error wrapping rather than this bearer.)
func TestPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin executable")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the plugin: %v", err)
	}
	exe := filepath.Join(t.TempDir(), "connect-bearer-ws")
	if out, err := exec.Command(goTool, "build", "-o", exe, "./cmd/connect-bearer-ws").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p, err := pluginhost.Start(context.Background(), pluginhost.Options{
		Name:     "ws",
		Path:     exe,
		WantType: wsbearer.Type,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Info() != wsbearer.Registration.Info {
		t.Errorf("plugin describes itself as %+v, want %+v", p.Info(), wsbearer.Registration.Info)
	}

	listenEP := bearers.MustParseEndpoint("ws://127.0.0.1:0")
	t.Run("Exchange", func(t *testing.T) {
		client, server := bearertest.Pipe(t, p, listenEP)
		roundTrip(t, client, server, []byte("ping"))
		roundTrip(t, server, client, []byte("pong"))
	})
	t.Run("NetConn", func(t *testing.T) {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			ln, err := p.Listen(context.Background(), listenEP)
			if err != nil {
				return nil, nil, nil, err
			}
			type res struct {
				c   bearers.Conn
				err error
			}
			ch := make(chan res, 1)
			go func() {
				c, err := ln.Accept(context.Background())
				ch <- res{c, err}
			}()
			client, err := p.Dial(context.Background(), ln.Endpoint())
			if err != nil {
				ln.Close()
				<-ch
				return nil, nil, nil, err
			}
			r := <-ch
			if r.err != nil {
				client.Close()
				ln.Close()
				return nil, nil, nil, r.err
			}
			return client, r.c, func() { client.Close(); r.c.Close(); ln.Close() }, nil
		})
	})

	t.Run("InProcessToPlugin", func(t *testing.T) {
		ln := listen(t, p, "ws://127.0.0.1:0")
		client, server := pipe(t, newBearer(t, nil), ln)
		roundTrip(t, client, server, []byte("to the plugin"))
		roundTrip(t, server, client, []byte("from the plugin"))
	})
}
