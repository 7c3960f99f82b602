package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/ssl"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/pluginhost"
)

// path is one way of getting a connected pair over loopback. open binds a
// fresh listener for one measurement; closing it ends that measurement's
// accepts.
type path struct {
	key   string
	label string
	open  func(ctx context.Context) (*listener, error)
}

// listener is a bound endpoint of a path: dial gives the client side, accept
// the server side.
type listener struct {
	dial   func(ctx context.Context) (net.Conn, error)
	accept func(ctx context.Context) (net.Conn, error)
	close  func()
}

// env holds what the paths share: the plugin subprocesses, the in-process
// bearers, the TLS material and the gRPC baseline.
type env struct {
	stateDir  string
	tcpPlugin *pluginhost.Plugin
	sslPlugin *pluginhost.Plugin
	grpc      *grpcBaseline
	paths     map[string]*path

	closeOnce sync.Once
}

var loopbackTCP = bearers.MustParseEndpoint("tcp://127.0.0.1:0")
var loopbackSSL = bearers.MustParseEndpoint("ssl://127.0.0.1:0")

// setup starts the tcp and ssl bearer plugins (this executable, re-executed
// as "plugin bearer NAME"), the in-process client bearers and the gRPC
// baseline. On error everything started is stopped.
func setup(ctx context.Context, cfg config, logger *slog.Logger) (_ *env, err error) {
	dir, err := os.MkdirTemp("", "bearerbench-")
	if err != nil {
		return nil, err
	}
	e := &env{stateDir: dir, paths: map[string]*path{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	start := func(name, typ string) (*pluginhost.Plugin, error) {
		p, err := pluginhost.Start(ctx, pluginhost.Options{
			Name:     name,
			Path:     cfg.executable,
			Args:     []string{"plugin", "bearer", name},
			WantType: typ,
			Config:   bearers.Config{StateDir: dir},
			Logger:   logger,
		})
		if err != nil {
			return nil, fmt.Errorf("start the %s bearer plugin: %w", name, err)
		}
		return p, nil
	}
	if e.tcpPlugin, err = start("tcp", tcp.Type); err != nil {
		return nil, err
	}
	if e.sslPlugin, err = start("ssl", ssl.Type); err != nil {
		return nil, err
	}
	// The ssl plugin prepares its self-signed certificate in the state
	// directory (at its first Listen); the in-process ssl bearers and the
	// crypto/tls reference then use the same one, and the clients trust it
	// from there.
	warm, err := e.sslPlugin.Listen(ctx, loopbackSSL)
	if err != nil {
		return nil, fmt.Errorf("ssl plugin: %w", err)
	}
	warm.Close()
	tcpClient, err := tcp.New(bearers.Config{})
	if err != nil {
		return nil, err
	}
	sslClient, err := ssl.New(bearers.Config{StateDir: dir})
	if err != nil {
		return nil, fmt.Errorf("ssl client bearer: %w", err)
	}
	sslServer, err := ssl.New(bearers.Config{StateDir: dir})
	if err != nil {
		return nil, fmt.Errorf("ssl server bearer: %w", err)
	}
	serverTLS, clientTLS, err := tlsConfigs(dir)
	if err != nil {
		return nil, err
	}

	e.add(&path{key: "raw", label: "raw Go loopback TCP", open: rawTCP})
	tcpServer, err := tcp.New(bearers.Config{})
	if err != nil {
		return nil, err
	}
	e.add(&path{key: "tcp-inproc", label: "tcp bearer in process", open: bearerPath(tcpServer, tcpClient, loopbackTCP)})
	e.add(&path{key: "tcp", label: "tcp bearer via plugin", open: bearerPath(e.tcpPlugin, tcpClient, loopbackTCP)})
	e.add(&path{key: "tls", label: "crypto/tls over loopback TCP", open: rawTLS(serverTLS, clientTLS)})
	e.add(&path{key: "ssl-inproc", label: "ssl bearer in process", open: bearerPath(sslServer, sslClient, loopbackSSL)})
	e.add(&path{key: "ssl", label: "ssl bearer via plugin", open: bearerPath(e.sslPlugin, sslClient, loopbackSSL)})

	if cfg.sections["latency"] {
		if e.grpc, err = startGRPC(ctx); err != nil {
			return nil, fmt.Errorf("gRPC baseline: %w", err)
		}
	}
	return e, nil
}

func (e *env) add(p *path) { e.paths[p.key] = p }

// close stops the plugins and the gRPC server and removes the state
// directory. Safe to call more than once, from any goroutine.
func (e *env) close() {
	e.closeOnce.Do(func() {
		if e.grpc != nil {
			e.grpc.close()
		}
		if e.tcpPlugin != nil {
			e.tcpPlugin.Close()
		}
		if e.sslPlugin != nil {
			e.sslPlugin.Close()
		}
		os.RemoveAll(e.stateDir)
	})
}

func rawTCP(ctx context.Context) (*listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	return &listener{
		dial: func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		accept: func(context.Context) (net.Conn, error) { return ln.Accept() },
		close:  func() { ln.Close() },
	}, nil
}

// rawTLS is crypto/tls straight over loopback TCP: the reference for what
// TLS itself costs, without the ssl bearer or the plugin.
func rawTLS(server, client *tls.Config) func(ctx context.Context) (*listener, error) {
	return func(ctx context.Context) (*listener, error) {
		l, err := rawTCP(ctx)
		if err != nil {
			return nil, err
		}
		dial, accept := l.dial, l.accept
		l.dial = func(ctx context.Context) (net.Conn, error) {
			c, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, client)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}
		l.accept = func(ctx context.Context) (net.Conn, error) {
			c, err := accept(ctx)
			if err != nil {
				return nil, err
			}
			tc := tls.Server(c, server)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}
		return l, nil
	}
}

// bearerPath listens with server (a plugin, or an in-process bearer) and
// dials with client, an in-process bearer as a Connect client would.
func bearerPath(server, client bearers.Bearer, ep bearers.Endpoint) func(ctx context.Context) (*listener, error) {
	return func(ctx context.Context) (*listener, error) {
		l, err := server.Listen(ctx, ep)
		if err != nil {
			return nil, err
		}
		bound := l.Endpoint()
		return &listener{
			dial: func(ctx context.Context) (net.Conn, error) {
				c, err := client.Dial(ctx, bound)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			accept: func(ctx context.Context) (net.Conn, error) {
				c, err := l.Accept(ctx)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			close: func() { l.Close() },
		}, nil
	}
}

// tlsConfigs builds crypto/tls configurations from the certificate the ssl
// plugin generated, so that the reference and the bearer use the same key.
func tlsConfigs(stateDir string) (server, client *tls.Config, err error) {
	certPath, keyPath := ssl.SelfSignedPaths(stateDir)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load the ssl plugin's certificate: %w", err)
	}
	pem, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("%s: no certificate found", certPath)
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1"}
	return server, client, nil
}

type accepted struct {
	c   net.Conn
	at  time.Time
	err error
}

// pair opens a connection over l: it accepts in a goroutine while it dials,
// and returns both ends.
func pair(ctx context.Context, l *listener, timeout time.Duration) (client, server net.Conn, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.accept(ctx)
		ch <- accepted{c: c, at: time.Now(), err: err}
	}()
	client, err = l.dial(ctx)
	if err != nil {
		go func() { // the listener's close ends the accept
			if a := <-ch; a.c != nil {
				a.c.Close()
			}
		}()
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	select {
	case a := <-ch:
		if a.err != nil {
			client.Close()
			return nil, nil, fmt.Errorf("accept: %w", a.err)
		}
		return client, a.c, nil
	case <-ctx.Done():
		client.Close()
		go func() {
			if a := <-ch; a.c != nil {
				a.c.Close()
			}
		}()
		return nil, nil, errors.New("accept: no connection arrived in time")
	}
}

// closeWrite ends the writing direction of c, so that the peer reads EOF.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
