package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runner is a remoteservicerunner process.
type runner struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

// startRunner starts remoteservicerunner with the server's token and args;
// it is stopped (SIGTERM, by PID) at cleanup.
func startRunner(t *testing.T, s *server, stateDir string, args ...string) *runner {
	t.Helper()
	r := &runner{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(bin.runner, append([]string{"--state-dir", stateDir, "--token-file", filepath.Join(s.stateDir, "token"),
		"--retry-max", "200ms", "--log-level", "debug"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-r.done:
			case <-time.After(15 * time.Second):
				r.cmd.Process.Kill()
				<-r.done
				t.Errorf("remoteservicerunner did not stop on SIGTERM within 15s")
			}
		}
		if t.Failed() {
			t.Logf("remoteservicerunner log:\n%s", r.logs)
		}
	})
	return r
}

// kill ends the runner with SIGKILL: no goodbye, its plugin orphaned.
func (r *runner) kill() {
	r.t.Helper()
	kids := children(r.t, r.cmd.Process.Pid)
	r.cmd.Process.Kill()
	<-r.done
	for pid := range kids { // the echo plugin, which go-plugin would have stopped
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// exit waits for the runner to end by itself and returns its status.
func (r *runner) exit() int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		r.t.Fatalf("remoteservicerunner did not end:\n%s", r.logs)
	}
	return r.cmd.ProcessState.ExitCode()
}

type remoteStatus struct {
	Name   string `json:"name"`
	Error  string `json:"error"`
	Remote *struct {
		Connected bool     `json:"connected"`
		Runner    string   `json:"runner"`
		ClientID  string   `json:"clientId"`
		Endpoints []string `json:"endpoints"`
	} `json:"remote"`
	Status *struct {
		State string `json:"state"`
	} `json:"status"`
}

// remote returns the service's entry in /servicedescriptions.
func (s *server) remote(name string) (remoteStatus, bool) {
	s.t.Helper()
	code, body := s.httpDo("GET", "/servicedescriptions", "", "")
	var list struct{ Services []remoteStatus }
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil {
		s.t.Fatalf("/servicedescriptions: %d %s", code, body)
	}
	for _, sv := range list.Services {
		if sv.Name == name {
			return sv, true
		}
	}
	return remoteStatus{}, false
}

// waitRemote waits until the remote service's runner is connected (or not).
func (s *server) waitRemote(name string, connected bool) remoteStatus {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sv, ok := s.remote(name)
		if ok && sv.Remote != nil && sv.Remote.Connected == connected {
			return sv
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("service %s never had connected=%v: %+v\n%s", name, connected, sv, s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// routedEcho writes the echo example's service file with a routing
// declaration: add over the direct reliable link, the level over udp when
// the client can, everything else through the server.
func routedEcho(t *testing.T) string {
	t.Helper()
	xml, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	xml = bytes.Replace(xml, []byte("</service>"), []byte(`  <routing>
    <route method="*" linkType="server"/>
    <route method="add" link="reliable"/>
    <route event="*" link="server"/>
    <route data="meter.level">
      <alternative link="unreliable"/>
      <alternative link="server"/>
    </route>
  </routing>
</service>`), 1)
	path := filepath.Join(t.TempDir(), "echo.xml")
	if err := os.WriteFile(path, xml, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRemoteServiceRunner runs connectserver, remoteservicerunner (with the
// echo example plugin) and connectclient: calls, events and runtime data
// through the server route, the service on the HTTP API, the runner killed
// (calls fail saying so) and restarted (the same clients work again,
// without restarting the server or them), and a second runner refused.
func TestRemoteServiceRunner(t *testing.T) {
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")}}, true)
	file := routedEcho(t)
	runnerDir := t.TempDir()
	linkTCP := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	linkUDP := fmt.Sprintf("udp://127.0.0.1:%d", freePort(t, "udp"))
	runnerArgs := []string{"--server", ep, "--service", file, "--plugin", bin.echoService,
		"--listen", linkTCP, "--listen", linkUDP}
	r := startRunner(t, s, runnerDir, runnerArgs...)
	sv := s.waitRemote("example.echo", true)
	id, err := os.ReadFile(filepath.Join(runnerDir, "runner", "client-id"))
	if err != nil {
		t.Fatal(err)
	}
	who := fmt.Sprintf("remoteservicerunner (client %s)", strings.TrimSpace(string(id)))
	if sv.Remote.Runner != who || sv.Status == nil || sv.Status.State != "running" ||
		strings.Join(sv.Remote.Endpoints, " ") != linkTCP+" "+linkUDP {
		t.Fatalf("/servicedescriptions: %+v %+v", sv, sv.Remote)
	}
	clientDir := t.TempDir()
	cl := func(args ...string) result {
		t.Helper()
		return runClient(t, s.as(clientDir, append([]string{"--server", ep}, args...)...)...)
	}

	// Listed as remote, described, called.
	res := cl("services")
	res.mustSucceed(t, "services")
	if !regexpLine(res.stdout, "example.echo", "1.0", "available, remote", "runner "+who) {
		t.Errorf("services:\n%s", res.stdout)
	}
	res = cl("describe", "example.echo", "--routing")
	res.mustSucceed(t, "describe --routing")
	for _, want := range []string{
		`<link name="reliable" kind="direct" bearer="connect.bearer.tcp" address="` + linkTCP + `" token="`,
		`<link name="unreliable" kind="direct" bearer="connect.bearer.udp" address="` + linkUDP + `" token="`,
		`<route method="add" link="reliable" linkType="direct"/>`,
		`<route data="meter.level" link="unreliable" linkType="direct" alternative="1">`,
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("describe --routing lacks %s:\n%s", want, res.stdout)
		}
	}
	res = cl("call", "example.echo.add", "a=40", "b=2")
	res.mustSucceed(t, "call add")
	if res.stdout != "42\n" {
		t.Fatalf("add: %q", res.stdout)
	}
	res = cl("call", "example.echo.fail", "mode=error")
	if res.code != 1 || !strings.HasPrefix(res.stderr, `connectclient: call example.echo.fail: service example.echo: call fail in session "`) ||
		!strings.HasSuffix(res.stderr, "): asked to fail\n") {
		t.Errorf("fail: exit %d: %s", res.code, res.stderr)
	}

	// An event and runtime data through the server route, and on the API.
	events := startClient(t, s.as(t.TempDir(), "--server", ep, "events", "example.echo", "levelChanged")...)
	events.waitStderr("subscribed to example.echo")
	watch := startClient(t, s.as(t.TempDir(), "--server", ep, "watch", "example.echo", "meter.level")...)
	if l := watch.line(); l != "meter.level = 0.5" {
		t.Fatalf("watch snapshot: %q", l)
	}
	cl("call", "example.echo.setLevel", "level=0.75").mustSucceed(t, "setLevel")
	if l := events.line(); !strings.HasSuffix(l, " levelChanged level=0.75") {
		t.Fatalf("event: %q", l)
	}
	for i := 0; ; i++ { // the last value may come again first (an unreliable link's resend, or its fallback to the server)
		l := watch.line()
		if strings.HasSuffix(l, " meter.level = 0.75") {
			break
		}
		if i == 3 || !strings.HasSuffix(l, " meter.level = 0.5") {
			t.Fatalf("watch change: %q", l)
		}
	}
	if code, body := s.httpDo("GET", "/serviceruntimedata/example.echo", "", ""); code != 200 || body != `{"meter":{"level":0.75,"calls":0}}`+"\n" {
		t.Fatalf("/serviceruntimedata: %d %s", code, body)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/add?a=1&b=2", "", ""); code != 200 || !strings.Contains(body, `"result":3`) {
		t.Fatalf("/serviceinvoke: %d %s", code, body)
	}

	// The runner dies: the service is unavailable, calls say why.
	r.kill()
	s.waitRemote("example.echo", false)
	want := "service example.echo is unavailable: its runner " + who + " is disconnected; calls work again once it reconnects"
	res = cl("call", "example.echo.add", "a=1", "b=2")
	if res.code != 1 || res.stderr != "connectclient: call example.echo.add: start session with example.echo: "+want+"\n" {
		t.Fatalf("call while the runner is away: exit %d\n got %q\nwant %q", res.code, res.stderr, want)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/add?a=1&b=2", "", ""); code != 503 || !strings.Contains(body, want) {
		t.Fatalf("/serviceinvoke while the runner is away: %d %s", code, body)
	}
	res = cl("services")
	if !regexpLine(res.stdout, "example.echo", "1.0", "unavailable, remote", "its runner "+who+" is disconnected") {
		t.Errorf("services while the runner is away:\n%s", res.stdout)
	}

	// It comes back: new calls work, and so do the sessions the events and
	// watch clients kept open (reopened on the new runner).
	startRunner(t, s, runnerDir, runnerArgs...)
	s.waitRemote("example.echo", true)
	res = cl("call", "example.echo.add", "a=2", "b=3")
	res.mustSucceed(t, "call add after the runner came back")
	if res.stdout != "5\n" {
		t.Fatalf("add: %q", res.stdout)
	}
	cl("call", "example.echo.setLevel", "level=0.25").mustSucceed(t, "setLevel after the runner came back")
	if l := events.line(); !strings.HasSuffix(l, " levelChanged level=0.25") {
		t.Fatalf("event after the runner came back: %q", l)
	}
	// The restarted plugin's defaults (0.5) may come first, and the value
	// the server had (0.75) again when the watch's direct link broke and
	// meter.level fell back to the server route.
	for i := 0; ; i++ {
		l := watch.line()
		if strings.HasSuffix(l, " meter.level = 0.25") {
			break
		}
		if i == 10 || !strings.HasSuffix(l, " meter.level = 0.5") && !strings.HasSuffix(l, " meter.level = 0.75") {
			t.Fatalf("watch after the runner came back: %q", l)
		}
	}
	for _, c := range []*bgClient{events, watch} {
		if strings.Contains(c.stderr.String(), "ended") {
			t.Errorf("a client's session ended:\n%s", c.stderr)
		}
	}

	// Another runner cannot take the name.
	other := startRunner(t, s, t.TempDir(), "--server", ep, "--service", file, "--plugin", bin.echoService,
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "--listen", fmt.Sprintf("udp://127.0.0.1:%d", freePort(t, "udp")))
	if code := other.exit(); code != 1 || !strings.Contains(other.logs.String(),
		"remoteservicerunner: the server refused service example.echo: provide service example.echo: service example.echo is already provided by another runner, "+who+", connected from 127.0.0.1:") {
		t.Fatalf("a second runner: exit %d\n%s", code, other.logs)
	}
}
