package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/tunnel"
)

// tunnelCommand is "connectclient tunnel --listen ADDR --service NAME": it
// accepts local TCP connections and carries each through its own tunnel
// stream (client.ServeTunnel) until interrupted. It prints
// "listening on ADDR (tunnel NAME)" once it accepts, one line per refused
// or failed connection on stderr, and returns nil after SIGINT or SIGTERM.
func tunnelCommand(o *options, stdout, stderr io.Writer) error {
	if o.service == "" {
		return cli.Usagef("tunnel needs --service NAME (the name of a <tunnel> in the server's configuration)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, ep, _, closeAll, err := dial(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	fmt.Fprintf(stdout, "listening on %s (tunnel %s through %s)\n", ln.Addr(), o.service, ep)
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after the loop: ctx is done, so every pump ends
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			fmt.Fprintf(stderr, "connectclient: tunnel %s: accept: %v\n", o.service, err)
			time.Sleep(50 * time.Millisecond) // out of descriptors: no busy loop
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			origin := conn.RemoteAddr().String()
			st, err := c.ServeTunnel(ctx, conn, o.service)
			var ref *tunnel.RefusedError
			switch {
			case errors.As(err, &ref):
				fmt.Fprintf(stderr, "connectclient: tunnel %s: connection from %s refused: %s\n", o.service, origin, ref.Reason)
			case err != nil && ctx.Err() == nil:
				fmt.Fprintf(stderr, "connectclient: tunnel %s: connection from %s ended after %d bytes up, %d down: %v\n", o.service, origin, st.Up, st.Down, err)
			}
		}()
	}
}
