package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/statedir"
)

// listeningSockets returns the TCP sockets in LISTEN state and the
// unconnected UDP sockets (a UDP socket that is bound and not connected
// waits for anyone's datagrams; a connected one only for its peer's) that
// process pid holds, as "proto local-address" strings: the socket inodes
// of /proc/PID/fd matched against /proc/PID/net/{tcp,tcp6,udp,udp6}.
func listeningSockets(t *testing.T, pid int) []string {
	t.Helper()
	l, _ := processSockets(t, pid)
	return l
}

// processSockets returns what listeningSockets does, and the connected UDP
// sockets of pid as "proto local-address remote-address" strings.
func processSockets(t *testing.T, pid int) (listening, connectedUDP []string) {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("%s: %v", fdDir, err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		path := fmt.Sprintf("/proc/%d/net/%s", pid, proto)
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			if strings.HasPrefix(proto, "tcp") && fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			// A udp socket has no LISTEN state: an unconnected (bound-only)
			// one takes datagrams from anyone, so it counts as listening. A
			// connected one (connect(2): its remote address is set, port
			// not 0000) takes datagrams only from that peer: the runner's
			// dialed path to the server's secondary endpoint, not listening.
			if strings.HasPrefix(proto, "udp") && !strings.HasSuffix(fields[2], ":0000") {
				connectedUDP = append(connectedUDP, proto+" "+fields[1]+" "+fields[2])
				continue
			}
			listening = append(listening, proto+" "+fields[1])
		}
		f.Close()
	}
	return listening, connectedUDP
}

// assertNeverListens checks the runner process and every process it
// started (its service plugins) for listening sockets.
func assertNeverListens(t *testing.T, r *runner, when string) {
	t.Helper()
	pid := r.cmd.Process.Pid
	if l := listeningSockets(t, pid); len(l) > 0 {
		t.Errorf("%s: remoteservicerunner (pid %d) listens: %v", when, pid, l)
	}
	for kid, cmd := range children(t, pid) {
		if l := listeningSockets(t, kid); len(l) > 0 {
			t.Errorf("%s: the runner's child %d (%s) listens: %v", when, kid, cmd, l)
		}
	}
}

// TestRunnerNeverListens runs connectserver with a fixed secondary port
// (<resume secondaryBindPort>), remoteservicerunner without --listen
// (so with no listening socket: --direct relay) and a client whose
// session routes add over the direct reliable link. The link's address is
// the server's secondary endpoint; every add travels on it (the client's
// per-link counters, and the server's: no call through the server, the
// relay's counters) while /proc shows that the runner and its plugin hold
// no listening TCP socket and no unconnected UDP socket at any point. Then the runner
// is killed with SIGKILL and started again: the client's session gets its
// relayed link back and the calls go direct again, still with nothing
// listening.
func TestRunnerNeverListens(t *testing.T) {
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	secondary := freePort(t, "tcp")
	s := startServer(t, serverConfig{
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
		extra:    fmt.Sprintf(`<resume secondaryBindPort="%d" pingFrequency="500"/>`, secondary),
	}, true)
	runnerDir := t.TempDir()
	file, err := filepath.Abs("../examples/echoservice/echo-relay.xml")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--server", ep, "--service", file, "--plugin", bin.echoService}
	r := startRunner(t, s, runnerDir, args...)
	sv := s.waitRemote("example.echo", true)
	if len(sv.Remote.Endpoints) != 0 {
		t.Errorf("a runner that does not listen announced endpoints %v", sv.Remote.Endpoints)
	}
	// The check itself sees listening sockets: the server's.
	if l := listeningSockets(t, s.cmd.Process.Pid); !strings.Contains(strings.Join(l, " "), fmt.Sprintf(":%04X", secondary)) {
		t.Fatalf("listeningSockets of the server: %v; want its secondary port %d among them", l, secondary)
	}
	assertNeverListens(t, r, "after providing")

	// A client with a tcp link bearer.
	reg := stock.Registry()
	tcpReg, _ := reg.ByType("connect.bearer.tcp")
	mk := func() bearers.Bearer {
		b, err := tcpReg.New(bearers.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sep, err := bearers.ParseEndpoint(ep)
	if err != nil {
		t.Fatal(err)
	}
	token, err := statedir.ReadToken(filepath.Join(s.stateDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Server: sep, Bearer: mk(), ClientID: uuid.New(), Token: token,
		Name: "relay-test", LinkBearers: []bearers.Bearer{mk()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	wantAddr := fmt.Sprintf("tcp://127.0.0.1:%d", secondary)
	st := linkStats(sess)["reliable"]
	if !st.Open || st.Address != wantAddr || st.Bearer != "connect.bearer.tcp" {
		t.Fatalf("the reliable link: %+v; want open at the server's secondary endpoint %s", st, wantAddr)
	}

	const calls = 200
	for i := range calls {
		v, err := sess.Call(ctx, "add", map[string]any{"a": int64(i), "b": int64(1)})
		if err != nil || v != int64(i+1) {
			t.Fatalf("add %d+1: %v, %v", i, v, err)
		}
		if i%50 == 0 {
			assertNeverListens(t, r, fmt.Sprintf("during call %d", i))
		}
	}
	st = linkStats(sess)["reliable"]
	if st.Calls != calls {
		t.Errorf("calls on the reliable link: %d, want %d (%+v)", st.Calls, calls, st)
	}
	if st := linkStats(sess)["server"]; st.Calls != 0 {
		t.Errorf("calls on the server link: %d, want 0", st.Calls)
	}
	if got := s.metric(`connect_service_calls_total{service="example.echo"}`); got != "0" {
		t.Errorf("calls through the server: %s, want 0", got)
	}
	if got := s.metric("connect_relay_links_total"); got == "0" {
		t.Errorf("connect_relay_links_total is 0: the link was not relayed")
	}
	assertNeverListens(t, r, "after the calls")

	// SIGKILL, and a new runner process with the same state directory.
	r.kill()
	s.waitRemote("example.echo", false)
	r = startRunner(t, s, runnerDir, args...)
	s.waitRemote("example.echo", true)
	before := linkStats(sess)["reliable"].Calls
	direct := false
	for i := 0; i < 400 && !direct; i++ { // bounded: the link reopens within seconds (backoff ≤ 5 s)
		v, err := sess.Call(ctx, "add", map[string]any{"a": int64(i), "b": int64(2)})
		if err == nil && v != int64(i+2) {
			t.Fatalf("add %d+2 after the restart: %v", i, v)
		}
		direct = err == nil && linkStats(sess)["reliable"].Calls > before && linkStats(sess)["reliable"].Open
		if !direct {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !direct {
		t.Fatalf("after the runner's restart the calls never went over the relayed link again: %+v\n%s", linkStats(sess), r.logs)
	}
	for i := range 20 {
		if v, err := sess.Call(ctx, "add", map[string]any{"a": int64(i), "b": int64(3)}); err != nil || v != int64(i+3) {
			t.Fatalf("add after the restart: %v, %v", v, err)
		}
	}
	if got := s.metric(`connect_service_calls_total{service="example.echo"}`); got != "0" {
		t.Errorf("calls through the server after the restart: %s, want 0", got)
	}
	assertNeverListens(t, r, "after the restart")
	if !strings.Contains(r.logs.String(), "direct link open") {
		t.Errorf("the restarted runner logged no direct link")
	}
	t.Logf("reliable link: %+v; relayed links %s", linkStats(sess)["reliable"], s.metric("connect_relay_links_total"))
}

// TestRunnerControlRestartLimit: a runner whose server dies (SIGKILL: no
// goodbye, the control connection just breaks) recreates its control
// connection --maxControlConnectionRestarts times, one restart per
// dead-path window, then gives up and exits with status 1, saying so.
// Nothing is timed: the test waits for the exit.
func TestRunnerControlRestartLimit(t *testing.T) {
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	// A 400 ms dead-path window: one restart per window, so the runner
	// gives up about 1.6 s after the server's death.
	s := startServer(t, serverConfig{adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
		extra: `<resume pingFrequency="200"/>`}, true)
	r := startRunner(t, s, t.TempDir(), "--server", ep, "--service", "../examples/echoservice/echo.xml",
		"--plugin", bin.echoService, "--maxControlConnectionRestarts", "3")
	s.waitRemote("example.echo", true)

	kids := children(t, s.cmd.Process.Pid)
	s.cmd.Process.Kill()
	<-s.done
	for pid := range kids { // the server's bearer plugins
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if code := r.exit(); code != 1 {
		t.Fatalf("the runner exited with status %d, want 1:\n%s", code, r.logs)
	}
	logs := r.logs.String()
	want := "gave up: the control connection to the server was recreated 3 times in a row, one restart per 400ms dead-path window, without the resume stream attaching again (maxControlConnectionRestarts 3)"
	if !strings.Contains(logs, want) {
		t.Fatalf("the runner's log does not say %q:\n%s", want, logs)
	}
}

// TestRunnerNeverListensUnreliable: a runner without --listen serves
// runtime data over a relayed unreliable (udp) link. The session's
// document gives the unreliable link the server's secondary endpoint over
// udp; the server asks the runner for a udp path (a ConnectRequest with
// datagram set), the runner dials a connected udp socket, and the server
// forwards the session-tagged datagrams both ways. High-rate meter.level
// changes reach the client's watch over the unreliable link (its
// counters; the server link carries none, the relay's datagram counter
// grows), through a Roam of the client, while /proc shows that the runner
// and its plugin never hold a listening socket (a connected udp socket is
// not one).
func TestRunnerNeverListensUnreliable(t *testing.T) {
	r := &directRig{ep: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))}
	secondary := freePort(t, "tcp")
	r.s = startServer(t, serverConfig{
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", r.ep, "")},
		extra:    fmt.Sprintf(`<resume secondaryBindPort="%d" pingFrequency="500"/>`, secondary),
	}, true)
	file := directEcho(t, "", `    <route method="*" linkType="server"/>
    <route method="setLevel" link="reliable"/>
    <route data="meter.level">
      <alternative link="unreliable"/>
      <alternative link="server"/>
    </route>
`)
	runnerDir := t.TempDir()
	run := startRunner(t, r.s, runnerDir, "--server", r.ep, "--service", file, "--plugin", bin.echoService)
	r.s.waitRemote("example.echo", true)
	assertNeverListens(t, run, "after providing")

	c := r.goClient(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantAddr := fmt.Sprintf("udp://127.0.0.1:%d", secondary)
	if st := linkStats(s)["unreliable"]; !st.Open || st.Address != wantAddr || st.Bearer != "connect.bearer.udp" {
		t.Fatalf("the unreliable link: %+v; want open at the server's secondary endpoint %s\n%s", st, wantAddr, run.logs)
	}
	watch, err := s.Watch(ctx, "meter.level")
	if err != nil {
		t.Fatal(err)
	}
	set := func(v float64) {
		t.Helper()
		if _, err := s.Call(ctx, "setLevel", map[string]any{"level": v}); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case dc := <-watch:
				if dc.Value == v {
					return
				}
			case <-ctx.Done():
				t.Fatalf("the watch never saw meter.level %v", v)
			}
		}
	}
	const n = 100
	for i := range n {
		set(float64(i) / 1000)
		if i%25 == 0 {
			assertNeverListens(t, run, fmt.Sprintf("at value %d", i))
		}
	}
	if moved, err := s.Roam(ctx); err != nil || moved != 1 {
		t.Fatalf("Roam: %d links moved, %v", moved, err)
	}
	for i := n; i < n+20; i++ {
		set(float64(i) / 1000)
	}
	st := linkStats(s)
	if u := st["unreliable"]; !u.Open || u.DataChanges < n || u.Rejected != 0 {
		t.Errorf("the unreliable link: %+v; want open with at least %d data changes", u, n)
	}
	if sv := st["server"]; sv.DataChanges != 1 { // the watch's snapshot only
		t.Errorf("the server link carried %d data changes, want 1: the watch's snapshot (%+v)", sv.DataChanges, sv)
	}
	if got := r.s.metric("connect_relay_datagrams_total"); got == "0" || got == "" {
		t.Errorf("connect_relay_datagrams_total is %q: nothing was relayed over udp", got)
	}
	if got := r.s.metric(`connect_relay_datagrams_dropped_total{reason="forged"}`); got != "0" {
		t.Errorf("forged datagrams: %s, want 0", got)
	}
	assertNeverListens(t, run, "after the data")
	// The check distinguishes: the runner does hold a udp socket, a
	// connected one, to the server's secondary port.
	_, conn := processSockets(t, run.cmd.Process.Pid)
	if want := fmt.Sprintf(":%04X", secondary); !strings.Contains(strings.Join(conn, " "), want) {
		t.Errorf("the runner's connected udp sockets: %v; want one to the secondary port %d", conn, secondary)
	}
	if !strings.Contains(run.logs.String(), `msg="direct link open"`) {
		t.Errorf("the runner logged no direct link:\n%s", run.logs)
	}

	// SIGKILL, and a new runner process: the server's old udp path is
	// stale (another control connection), it asks the new runner for one,
	// and runtime data flows over the relayed unreliable link again.
	run.kill()
	r.s.waitRemote("example.echo", false)
	run = startRunner(t, r.s, runnerDir, "--server", r.ep, "--service", file, "--plugin", bin.echoService)
	r.s.waitRemote("example.echo", true)
	before := linkStats(s)["unreliable"].DataChanges
	back := false
	for i := 0; i < 400 && !back; i++ { // bounded: the links come back within seconds
		v := 0.5 + float64(i)/10000
		if _, err := s.Call(ctx, "setLevel", map[string]any{"level": v}); err == nil {
			for seen := false; !seen; {
				select {
				case dc := <-watch:
					seen = dc.Value == v
				case <-time.After(time.Second): // a lost datagram: set the next value
					seen = true
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				}
			}
		}
		u := linkStats(s)["unreliable"]
		back = u.Open && u.DataChanges > before+5
		if !back {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !back {
		t.Fatalf("after the runner's restart no runtime data came over the relayed unreliable link again: %+v\n%s", linkStats(s), run.logs)
	}
	assertNeverListens(t, run, "after the restart")
	t.Logf("unreliable link: %+v; relayed datagrams %s, udp path requests %s", linkStats(s)["unreliable"],
		r.s.metric("connect_relay_datagrams_total"), r.s.metric("connect_relay_datagram_requests_total"))
}
