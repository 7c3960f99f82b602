package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bearerkit/connect/internal/faultproxy"
	"github.com/bearerkit/connect/internal/soak"
	"github.com/bearerkit/connect/tunnel"
)

// The tunnel end to end (docs/TUNNEL.md): connectserver with <tunnel>
// elements, `connectclient tunnel --listen --service` processes, the fault
// proxy between them, and backends in this process (or redis-server).

// backend is a TCP server in the test process: handle runs per connection.
type backend struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

func startBackend(t *testing.T, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// tunnelCLI is a running `connectclient tunnel` process.
type tunnelCLI struct {
	cmd    *exec.Cmd
	local  string // where it listens
	stderr *syncBuffer
	done   chan struct{}
}

// startTunnelCLI runs connectclient tunnel --service service against
// serverAddr (host:port), with a state directory of its own (a client id of
// its own) and the server's token. At cleanup it is interrupted and must
// exit with status 0.
func startTunnelCLI(t *testing.T, s *server, serverAddr, service string) *tunnelCLI {
	t.Helper()
	tc := &tunnelCLI{stderr: &syncBuffer{}, done: make(chan struct{})}
	tc.cmd = exec.Command(bin.client, "--server", "tcp://"+serverAddr, "--state-dir", t.TempDir(),
		"--token-file", s.stateDir+"/token", "--log-level", "info", "tunnel", "--listen", "127.0.0.1:0", "--service", service)
	out, err := tc.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tc.cmd.Stderr = tc.stderr
	if err := tc.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { tc.cmd.Wait(); close(tc.done) }()
	t.Cleanup(func() {
		select {
		case <-tc.done:
		default:
			tc.cmd.Process.Signal(os.Interrupt)
			select {
			case <-tc.done:
				if code := tc.cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("connectclient tunnel %s exited with %d after an interrupt:\n%s", service, code, tc.stderr)
				}
			case <-time.After(15 * time.Second):
				tc.cmd.Process.Kill()
				<-tc.done
				t.Errorf("connectclient tunnel %s did not stop on an interrupt:\n%s", service, tc.stderr)
			}
		}
		if t.Failed() {
			t.Logf("connectclient tunnel %s stderr:\n%s", service, lastLines(tc.stderr.String(), 60))
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		var rest string
		if _, err := fmt.Sscanf(line, "listening on %s %s", &tc.local, &rest); err != nil {
			t.Fatalf("connectclient tunnel printed %q, want \"listening on ADDR ...\"\n%s", line, tc.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("connectclient tunnel did not say where it listens:\n%s", tc.stderr)
	}
	return tc
}

// waitStderr waits until the process's stderr contains want.
func (tc *tunnelCLI) waitStderr(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(tc.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("connectclient never said %q:\n%s", want, tc.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tunnelServer starts connectserver with a tcp adapter, fast pings and the
// given <tunnel> elements; it returns the server and the adapter's address.
func tunnelServer(t *testing.T, tunnels string) (*server, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: fmt.Sprintf(`<resume linger="1m" pingFrequency="%d" pingWindowFactor="%d"/>
%s`, testPingFrequency.Milliseconds(), testPingWindow/testPingFrequency, tunnels),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", "tcp://"+addr, "")},
	}, true)
	t.Cleanup(func() {
		select {
		case <-s.done: // stop logs only a server it stopped
			if t.Failed() {
				t.Logf("connectserver (exited: %v) log:\n%s", s.cmd.ProcessState, lastLines(s.logs.String(), 150))
			}
		default:
		}
	})
	return s, addr
}

// metricInt is s.metric as an integer.
func (s *server) metricInt(t *testing.T, line string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s.metric(line), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return n
}

// TestTunnelEndToEnd: through connectserver and connectclient tunnel with
// the fault proxy between them —
//   - 8 MiB up and 8 MiB down at once, while the link is reset 16 times and
//     black-holed once for longer than the dead-path window: the backend
//     answers, after the client's half-close reached it, with the SHA-256 of
//     what it received, and saw one connection throughout;
//   - a PROXY v2 header read by a Go backend;
//   - an unknown tunnel and an unreachable target refused, with the reasons
//     on connectclient's stderr and the local connections reset;
//   - /metrics counts; the server stops on SIGTERM with a tunnel open, and
//     every connectclient on an interrupt.
func TestTunnelEndToEnd(t *testing.T) {
	// connectserver check reports bad <tunnel> elements at their lines.
	bad := t.TempDir() + "/bad.xml"
	os.WriteFile(bad, []byte("<connectserver>\n  <connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:9500\"/>\n  <tunnel name=\"r\" target=\"127.0.0.1\"/>\n  <tunnel name=\"r\" target=\"h:1\" via=\"x\"/>\n</connectserver>\n"), 0o600)
	if r := execServer(t, "check", "--config", bad); r.code != 1 ||
		!strings.Contains(r.stderr, `bad.xml:3: tunnel[1] attribute "target": "127.0.0.1" is not host:port`) ||
		!strings.Contains(r.stderr, `bad.xml:4: tunnel[2]: tunnel "r" is already declared at line 3`) ||
		!strings.Contains(r.stderr, `bad.xml:4: tunnel[2] attribute "via" unknown (known: name, target, proxyProtocol)`) {
		t.Fatalf("connectserver check of bad tunnels: exit %d\n%s", r.code, r.stderr)
	}

	const size = 8 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	up, down := make([]byte, size), make([]byte, size)
	for i := range up {
		up[i], down[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	bulk := startBackend(t, func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // down while receiving up
			defer wg.Done()
			for b := down; len(b) > 0; b = b[min(len(b), 64<<10):] {
				if _, err := c.Write(b[:min(len(b), 64<<10)]); err != nil {
					return
				}
			}
		}()
		h := sha256.New()
		_, err := io.Copy(h, c) // until the client's half-close
		wg.Wait()
		if err == nil {
			c.Write(h.Sum(nil))
		}
	})
	proxied := startBackend(t, func(c net.Conn) {
		h, err := tunnel.ParseProxyV2(c)
		if err != nil {
			fmt.Fprintf(c, "error %v", err)
			return
		}
		fmt.Fprintf(c, "local=%v source=%v destination=%v", h.Local, h.Source, h.Destination)
	})
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	s, addr := tunnelServer(t, fmt.Sprintf(`<tunnel name="bulk" target=%q/>
<tunnel name="proxied" target=%q proxyProtocol="v2"/>
<tunnel name="dead" target=%q/>`, bulk.addr(), proxied.addr(), dead))
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })

	// Bulk, both ways at once, with resets and a black hole.
	bulkCLI := startTunnelCLI(t, s, p.Addr(), "bulk")
	c, err := net.Dial("tcp", bulkCLI.local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	got := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("reading the tunnel: %v after %d bytes", err, len(b))
		}
		got <- b
	}()
	const chunk = 64 << 10
	resets := 0
	for i := 0; i*chunk < size; i++ {
		if _, err := c.Write(up[i*chunk : (i+1)*chunk]); err != nil {
			t.Fatalf("writing the tunnel at %d: %v", i*chunk, err)
		}
		switch {
		case i == size/chunk/2:
			p.Blackhole()
			time.Sleep(testPingWindow + testPingWindow/2)
			p.Restore()
		case i%8 == 7:
			p.Reset()
			resets++
		}
	}
	c.(*net.TCPConn).CloseWrite()
	b := <-got
	upSum, downSum := sha256.Sum256(up), sha256.Sum256(down)
	switch {
	case len(b) != size+sha256.Size:
		t.Fatalf("received %d bytes, want %d and a digest", len(b), size)
	case sha256.Sum256(b[:size]) != downSum:
		t.Fatal("the backend's bytes arrived changed")
	case !bytes.Equal(b[size:], upSum[:]):
		t.Fatal("the backend received other bytes than were sent")
	}
	if n := bulk.accepted.Load(); n != 1 {
		t.Fatalf("the backend saw %d connections, want 1", n)
	}
	t.Logf("16 MiB through the tunnel across %d resets and a black hole of %v", resets, testPingWindow+testPingWindow/2)

	// PROXY protocol v2: the backend sees the address the server saw (the
	// fault proxy's, on loopback) and the adapter's address.
	proxiedCLI := startTunnelCLI(t, s, p.Addr(), "proxied")
	pc, err := net.Dial("tcp", proxiedCLI.local)
	if err != nil {
		t.Fatal(err)
	}
	pc.SetDeadline(time.Now().Add(30 * time.Second))
	ans, err := io.ReadAll(pc)
	pc.Close()
	if err != nil || !strings.HasPrefix(string(ans), "local=false source=127.0.0.1:") || !strings.HasSuffix(string(ans), "destination="+addr) {
		t.Fatalf("PROXY header seen by the backend: %q, %v; want source 127.0.0.1 and destination %s", ans, err, addr)
	}

	// Refusals: the local connection is reset, connectclient says why.
	for _, tc := range []struct{ service, want string }{
		{"nope", `refused: no tunnel "nope" is configured on this server`},
		{"dead", `refused: tunnel dead: cannot connect to its target ` + dead},
	} {
		cli := startTunnelCLI(t, s, p.Addr(), tc.service)
		rc, err := net.Dial("tcp", cli.local)
		if err != nil {
			t.Fatal(err)
		}
		rc.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := rc.Read(make([]byte, 1))
		rc.Close()
		if n != 0 || err == nil || os.IsTimeout(err) {
			t.Fatalf("tunnel %s: the local connection read %d bytes, %v; want a reset", tc.service, n, err)
		}
		cli.waitStderr(t, tc.want)
	}

	if n := s.metricInt(t, "connect_tunnels_opened_total"); n != 2 {
		t.Errorf("connect_tunnels_opened_total = %d, want 2", n)
	}
	if n := s.metricInt(t, "connect_tunnels_refused_total"); n != 2 {
		t.Errorf("connect_tunnels_refused_total = %d, want 2", n)
	}
	if n := s.metricInt(t, `connect_tunnel_bytes_total{direction="up"}`); n != size {
		t.Errorf("connect_tunnel_bytes_total up = %d, want %d", n, size)
	}
	// Tunnel connections are additional connections of their client: the
	// server counts one client per connectclient process.
	deadline := time.Now().Add(20 * time.Second)
	for {
		h, err := s.health()
		if err == nil && h.Clients == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz clients: %+v, %v; want 4 (one per connectclient)", h, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Shutdown with a tunnel open: the server stops (s.stop fails the test
	// after 15 s), the local connection ends.
	oc, err := net.Dial("tcp", bulkCLI.local)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	deadline = time.Now().Add(20 * time.Second)
	for s.metricInt(t, `connect_tunnels{state="attached"}`) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the idle tunnel never showed in /metrics")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop() // SIGTERM
	oc.SetDeadline(time.Now().Add(30 * time.Second))
	// The backend sends its 8 MiB and waits for the end of the input, which
	// never comes: the local connection ends with the server's shutdown.
	if n, err := io.Copy(io.Discard, oc); os.IsTimeout(err) || n >= size {
		t.Fatalf("a tunnel open at the server's shutdown: read %d bytes, %v; want its end", n, err)
	}
}

// TestTunnelSoakRedis: redis-cli writes a known sequence through
// connectclient tunnel and connectserver while the fault proxy resets the
// link every 40 ms; every answer arrives once and in order, redis holds
// exactly the sequence, and the server used one backend connection. 10
// cuts in `go test`, CONNECT_SOAK_CUTS in `make soak`.
func TestTunnelSoakRedis(t *testing.T) {
	rd := soak.StartRedis(t)
	s, addr := tunnelServer(t, fmt.Sprintf(`<tunnel name="redis" target=%q/>`, rd.Addr))
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cli := startTunnelCLI(t, s, p.Addr(), "redis")
	cuts := 10
	if v := os.Getenv("CONNECT_SOAK_CUTS"); v != "" {
		if cuts, err = strconv.Atoi(v); err != nil || cuts < 1 {
			t.Fatalf("CONNECT_SOAK_CUTS=%q: want a positive number", v)
		}
	}
	before := rd.ConnectionsReceived(t)
	n := 100 * cuts
	ctx, cancel := context.WithCancel(context.Background())
	made := make(chan int, 1)
	go func() {
		m := 0
		for m < cuts {
			select {
			case <-ctx.Done():
				made <- m
				return
			case <-time.After(40 * time.Millisecond):
			}
			if p.Reset() > 0 { // counts resets that hit a connection
				m++
			}
		}
		made <- m
	}()
	soak.RedisWorkload(t, cli.local, n, time.Duration(cuts)*50*time.Millisecond)
	cancel()
	m := <-made
	// Since the first INFO: the tunnel's backend connection and this INFO's.
	if got := rd.ConnectionsReceived(t) - before; got != 2 {
		t.Fatalf("redis received %d connections during the workload, want 1 (the tunnel's) and this query's", got)
	}
	rd.CheckRedis(t, n)
	if m == 0 {
		t.Fatal("the link was never cut")
	}
	t.Logf("%d redis commands through connectserver and connectclient tunnel, %d link resets", 2*n, m)
}

// An ssh session through connectserver and connectclient tunnel carries
// megabytes into sha256sum on the far side while the link is reset again
// and again: the digest matches, and the session never broke (an ssh
// session cannot survive a new TCP connection to sshd, so it proves one
// backend connection throughout). `make soak`: SOAKCUTS resets.
func TestTunnelSoakSSH(t *testing.T) {
	sd := soak.StartSSHD(t)
	s, addr := tunnelServer(t, fmt.Sprintf(`<tunnel name="ssh" target=%q/>`, sd.Addr))
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cli := startTunnelCLI(t, s, p.Addr(), "ssh")
	cuts := 10
	if v := os.Getenv("CONNECT_SOAK_CUTS"); v != "" {
		if cuts, err = strconv.Atoi(v); err != nil || cuts < 1 {
			t.Fatalf("CONNECT_SOAK_CUTS=%q: want a positive number", v)
		}
	}
	done := make(chan struct{})
	made := make(chan int, 1)
	go func() {
		m := 0
		for m < cuts {
			select {
			case <-done:
				made <- m
				return
			case <-time.After(50 * time.Millisecond):
			}
			if p.Reset() > 0 {
				m++
			}
		}
		made <- m
	}()
	sd.Transfer(t, cli.local, 4<<20, 11, time.Duration(cuts)*60*time.Millisecond)
	close(done)
	m := <-made
	if m < cuts/2 {
		t.Fatalf("only %d of %d link resets happened during the transfer", m, cuts)
	}
	t.Logf("4 MiB through ssh via connectserver and connectclient tunnel, %d link resets", m)
}
