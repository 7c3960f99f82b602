package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Sessions through connectclient: services, describe, call, events and
// watch against the example echo service plugin under connectserver.

// echoSessionServer starts connectserver with the echo service and a tcp
// adapter; it returns the server and the adapter's URL.
func echoSessionServer(t *testing.T) (*server, string) {
	t.Helper()
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: fmt.Sprintf(`<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <service name="example.echo" plugin=%q/>`, bin.echoService),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
	}, true)
	return s, ep
}

// as runs connectclient as a client of its own (its own state directory,
// so its own client id: two processes with one client id replace each
// other's connection), authenticating with the server's token.
func (s *server) as(dir string, args ...string) []string {
	return append([]string{"--state-dir", dir, "--token-file", filepath.Join(s.stateDir, "token")}, args...)
}

// bgClient is a connectclient process running in the background, its
// stdout read line by line.
type bgClient struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

func startClient(t *testing.T, args ...string) *bgClient {
	t.Helper()
	b := &bgClient{t: t, cmd: exec.Command(bin.client, args...), lines: make(chan string, 1024),
		stderr: &syncBuffer{}, done: make(chan struct{})}
	b.cmd.Stderr = b.stderr
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
			return
		default:
		}
		b.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-b.done:
		case <-time.After(15 * time.Second):
			b.cmd.Process.Kill()
			<-b.done
			t.Errorf("connectclient %v did not stop on SIGINT", args)
		}
	})
	return b
}

// line returns the next line of stdout.
func (b *bgClient) line() string {
	b.t.Helper()
	select {
	case l, ok := <-b.lines:
		if !ok {
			<-b.done
			b.t.Fatalf("connectclient ended (%v) before printing the line expected\nstderr:\n%s", b.err, b.stderr)
		}
		return l
	case <-time.After(30 * time.Second):
		b.t.Fatalf("connectclient printed nothing for 30s\nstderr:\n%s", b.stderr)
	}
	return ""
}

// waitStderr waits until stderr contains want.
func (b *bgClient) waitStderr(want string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.stderr.String(), want) {
		select {
		case <-b.done:
			if strings.Contains(b.stderr.String(), want) {
				return
			}
			b.t.Fatalf("connectclient ended (%v) without saying %q\nstderr:\n%s", b.err, want, b.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("connectclient never said %q\nstderr:\n%s", want, b.stderr)
		}
	}
}

// waitCount waits until stderr contains want n times.
func (b *bgClient) waitCount(want string, n int) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(b.stderr.String(), want) < n {
		if time.Now().After(deadline) {
			b.t.Fatalf("connectclient did not say %q %d times\nstderr:\n%s", want, n, b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exit waits for the process to end and returns its exit code.
func (b *bgClient) exit() int {
	b.t.Helper()
	for range b.lines {
	}
	select {
	case <-b.done:
	case <-time.After(60 * time.Second):
		b.t.Fatalf("connectclient did not end\nstderr:\n%s", b.stderr)
	}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		return ee.ExitCode()
	}
	if b.err != nil {
		b.t.Fatal(b.err)
	}
	return 0
}

func TestSessionsCLI(t *testing.T) {
	s, ep := echoSessionServer(t)
	cl := func(args ...string) result {
		t.Helper()
		return s.client(append([]string{"--server", ep}, args...)...)
	}

	// services
	r := cl("services")
	r.mustSucceed(t, "services")
	if !strings.Contains(r.stdout, "NAME") || !regexpLine(r.stdout, "example.echo", "1.0", "available", "Echoes, adds") {
		t.Errorf("services:\n%s", r.stdout)
	}
	r = cl("--json", "services")
	r.mustSucceed(t, "services --json")
	var list struct {
		Services []struct {
			Name, Version, Description string
			Available                  bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Services) != 1 ||
		list.Services[0].Name != "example.echo" || !list.Services[0].Available || list.Services[0].Version != "1.0" {
		t.Errorf("services --json: %v\n%s", err, r.stdout)
	}

	// describe
	r = cl("describe", "example.echo")
	r.mustSucceed(t, "describe")
	for _, want := range []string{"service example.echo 1.0", "add(a int, b int) int", "stats(values float[]) Stats",
		"levelChanged(level float)", "struct Stats { count int, mean float, max float }", "meter.level", "float = 0.5", "persistent"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe lacks %q:\n%s", want, r.stdout)
		}
	}
	r = cl("describe", "example.echo", "--xml")
	r.mustSucceed(t, "describe --xml")
	if _, body := s.httpDo("GET", "/servicedescriptions/example.echo", "", ""); r.stdout != body {
		t.Errorf("describe --xml differs from the HTTP API's description:\n%s", r.stdout)
	}
	r = cl("describe", "example.echo", "--routing")
	r.mustSucceed(t, "describe --routing")
	if !strings.Contains(r.stdout, `service="example.echo"`) || !strings.Contains(r.stdout, `<link name="server" kind="server"/>`) {
		t.Errorf("describe --routing:\n%s", r.stdout)
	}
	r = cl("--json", "describe", "example.echo")
	r.mustSucceed(t, "describe --json")
	var d struct {
		Name    string
		Methods []struct {
			Name    string
			Returns string
			Args    []struct{ Name, Type string }
		}
		Data []struct {
			Path    string
			Default json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Name != "example.echo" || len(d.Methods) != 6 ||
		d.Methods[1].Name != "add" || d.Methods[1].Returns != "int" || len(d.Methods[1].Args) != 2 || d.Methods[1].Args[0].Type != "int" {
		t.Errorf("describe --json: %v\n%s", err, r.stdout)
	}

	// call
	calls := []struct {
		args []string
		want string
	}{
		{[]string{"call", "example.echo.add", "a=40", "b=2"}, "42\n"},
		{[]string{"call", "example.echo.add", "a=-9223372036854775807", "b=-1"}, "-9223372036854775808\n"},
		{[]string{"call", "example.echo.echo", "text=héllo wörld"}, "héllo wörld\n"},
		{[]string{"call", "example.echo.stats", "values=1", "values=2", "values=6"}, `{"count":3,"mean":3,"max":6}` + "\n"},
		{[]string{"call", "example.echo.stats", "values=[1.5, 2.5]"}, `{"count":2,"mean":2,"max":2.5}` + "\n"},
		{[]string{"call", "example.echo.setLevel", "level=0.125"}, ""},
	}
	for _, c := range calls {
		r := cl(c.args...)
		r.mustSucceed(t, strings.Join(c.args, " "))
		if r.stdout != c.want {
			t.Errorf("%v: %q, want %q", c.args, r.stdout, c.want)
		}
	}
	r = cl("--json", "call", "example.echo.stats", "values=1", "values=2", "values=6")
	r.mustSucceed(t, "call --json")
	var res struct {
		Service, Method string
		Result          struct {
			Count     int64
			Mean, Max float64
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Service != "example.echo" || res.Method != "stats" ||
		res.Result.Count != 3 || res.Result.Mean != 3 || res.Result.Max != 6 {
		t.Errorf("call --json: %v\n%s", err, r.stdout)
	}
	r = cl("--json", "call", "example.echo.setLevel", "level=0.5")
	r.mustSucceed(t, "call --json of a method without result")
	if strings.TrimSpace(r.stdout) != `{"service":"example.echo","method":"setLevel","result":null}` {
		t.Errorf("call --json setLevel: %s", r.stdout)
	}

	// failures: exit 1 with what and where
	failures := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"call", "example.echo.add", "a=x", "b=1"}, 1, `call example.echo.add: argument a (int): "x" is not an int`},
		{[]string{"call", "example.echo.stats", "values=1", "values=two"}, 1, `argument values (float[]): element 1`},
		{[]string{"call", "example.echo.add", "a=1"}, 1, `missing argument b (int)`},
		{[]string{"call", "example.echo.add", "a=1", "b=2", "c=3"}, 1, `has no argument "c"`},
		{[]string{"call", "example.echo.add", "a=1", "a=2", "b=2"}, 1, `argument a (int) given 2 times`},
		{[]string{"call", "example.echo.nope"}, 1, `service example.echo has no method "nope" (methods: echo, add, stats, sleep, fail, setLevel`},
		{[]string{"call", "no.such.method"}, 1, `no service "no.such" on this server (services: example.echo)`},
		{[]string{"describe", "no.such"}, 1, `no service "no.such"`},
		{[]string{"call", "example.echo.fail", "mode=error"}, 1, `asked to fail`},
		{[]string{"call", "example.echo.fail", "mode=panic"}, 1, `method fail panicked`},
		{[]string{"--timeout", "300ms", "call", "example.echo.sleep", "ms=10000"}, 1, `deadline exceeded`},
		{[]string{"events", "example.echo", "nosuchevent"}, 1, `service example.echo has no event "nosuchevent" (events: sleeping, levelChanged)`},
		{[]string{"watch", "example.echo", "meter.nope"}, 1, `no runtime data "meter.nope"`},
		{[]string{"call", "example.echo.add", "a"}, 2, `argument "a": want name=value`},
		{[]string{"call", "example"}, 2, `want SERVICE.METHOD`},
		{[]string{"describe"}, 2, `usage: describe SERVICE`},
	}
	for _, f := range failures {
		r := cl(f.args...)
		if r.code != f.code || !strings.Contains(r.stderr, f.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", f.args, r.code, r.stderr, f.code, f.want)
		}
	}

	// The calls above counted in the per-service counters.
	for _, sv := range serviceStatuses(t, s) {
		if sv.Name == "example.echo" {
			_, body := s.httpDo("GET", "/metrics", "", "")
			if !strings.Contains(body, `connect_service_calls_total{service="example.echo"}`) || strings.Contains(body, `connect_service_calls_total{service="example.echo"} 0`) {
				t.Errorf("session calls are not counted:\n%s", body)
			}
		}
	}
}

// regexpLine reports whether some line holds every word, in order.
func regexpLine(text string, words ...string) bool {
	for _, l := range strings.Split(text, "\n") {
		rest, ok := l, true
		for _, w := range words {
			i := strings.Index(rest, w)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(w):]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestSessionEvents(t *testing.T) {
	s, ep := echoSessionServer(t)
	ev := startClient(t, s.as(t.TempDir(), "--server", ep, "--json", "--count", "2", "events", "example.echo", "levelChanged")...)
	ev.waitStderr("subscribed to example.echo: levelChanged")
	all := startClient(t, s.as(t.TempDir(), "--server", ep, "--count", "3", "events", "example.echo")...)
	all.waitStderr("subscribed to example.echo: all events")

	for _, args := range [][]string{{"example.echo.setLevel", "level=0.25"}, {"example.echo.sleep", "ms=1"}, {"example.echo.setLevel", "level=0.5"}} {
		s.client(append([]string{"--server", ep, "call"}, args...)...).mustSucceed(t, "call "+args[0])
	}
	for i, want := range []float64{0.25, 0.5} {
		var e struct {
			Service, Event string
			Args           struct{ Level float64 }
			Time           time.Time
		}
		l := ev.line()
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Service != "example.echo" || e.Event != "levelChanged" || e.Args.Level != want || e.Time.IsZero() {
			t.Errorf("event %d: %v %s", i, err, l)
		}
	}
	if code := ev.exit(); code != 0 {
		t.Errorf("events --count 2 exited %d\n%s", code, ev.stderr)
	}
	// The unfiltered subscriber saw all three, in order, as human lines.
	for _, want := range []string{" levelChanged level=0.25", " sleeping ms=1", " levelChanged level=0.5"} {
		if l := all.line(); !strings.HasSuffix(l, want) {
			t.Errorf("event line %q, want one ending in %q", l, want)
		}
	}
	if code := all.exit(); code != 0 {
		t.Errorf("events --count 3 exited %d\n%s", code, all.stderr)
	}
}

func TestSessionWatch(t *testing.T) {
	s, ep := echoSessionServer(t)
	dir := t.TempDir()
	w := startClient(t, s.as(dir, "--server", ep, "--json", "--count", "1", "watch", "example.echo", "meter.level")...)
	type change struct {
		Service, Path string
		Value         json.RawMessage
		Snapshot      bool
	}
	var c change
	if l := w.line(); json.Unmarshal([]byte(l), &c) != nil || c.Path != "meter.level" || string(c.Value) != "0.5" || !c.Snapshot || c.Service != "example.echo" {
		t.Fatalf("snapshot: %s", l)
	}

	// /sessions shows the watcher's session while it runs.
	clientID := readClientID(t, dir)
	var sess struct {
		Sessions []struct {
			ID, Service, ClientID, Adapter string
			Since                          time.Time
			Watches                        int
		}
	}
	code, body := s.httpDo("GET", "/sessions", "", "")
	if code != 200 || json.Unmarshal([]byte(body), &sess) != nil {
		t.Fatalf("/sessions: %d %s", code, body)
	}
	found := false
	for _, x := range sess.Sessions {
		if x.ClientID == clientID && x.Service == "example.echo" && x.Adapter == "tcp" && x.Watches == 1 && x.ID != "" && !x.Since.IsZero() {
			found = true
		}
	}
	if !found {
		t.Errorf("/sessions does not show the watching session of client %s:\n%s", clientID, body)
	}

	s.client("--server", ep, "call", "example.echo.setLevel", "level=0.75").mustSucceed(t, "setLevel")
	if l := w.line(); json.Unmarshal([]byte(l), &c) != nil || c.Path != "meter.level" || string(c.Value) != "0.75" || c.Snapshot {
		t.Errorf("change: %s", l)
	}
	if code := w.exit(); code != 0 {
		t.Errorf("watch exited %d\n%s", code, w.stderr)
	}
	// Its session ended with it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := s.httpDo("GET", "/sessions", "", "")
		if !strings.Contains(body, clientID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher's session outlived it:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The whole tree, human: the snapshot a line per value, then changes.
	all := startClient(t, s.as(t.TempDir(), "--server", ep, "--count", "1", "watch", "example.echo")...)
	for _, want := range []string{"meter.level = 0.75", "meter.calls = 0"} {
		if l := all.line(); l != want {
			t.Errorf("snapshot line %q, want %q", l, want)
		}
	}
	s.client("--server", ep, "call", "example.echo.echo", "text=hi").mustSucceed(t, "echo")
	if l := all.line(); !strings.HasSuffix(l, " meter.calls = 1") {
		t.Errorf("change line %q, want one ending in meter.calls = 1", l)
	}
	if code := all.exit(); code != 0 {
		t.Errorf("watch exited %d\n%s", code, all.stderr)
	}
}

// readClientID reads the client id a connectclient run with --state-dir
// dir created.
func readClientID(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "client-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// A call in flight when the service plugin is killed fails with a clear
// error; the plugin restarts and the next call works.
func TestSessionCallPluginKilled(t *testing.T) {
	s, ep := echoSessionServer(t)
	pid := 0
	for _, sv := range serviceStatuses(t, s) {
		if sv.Name == "example.echo" && sv.Status != nil {
			pid = sv.Status.PID
		}
	}
	if pid == 0 {
		t.Fatal("no plugin pid")
	}
	// The sleeping event says the method runs in the plugin.
	started := startClient(t, s.as(t.TempDir(), "--server", ep, "--count", "1", "events", "example.echo", "sleeping")...)
	started.waitStderr("subscribed to")
	call := startClient(t, s.as(t.TempDir(), "--server", ep, "--timeout", "60s", "call", "example.echo.sleep", "ms=60000")...)
	if l := started.line(); !strings.HasSuffix(l, "sleeping ms=60000") {
		t.Fatalf("event %q", l)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := call.exit(); code != 1 {
		t.Fatalf("the call in flight exited %d; stderr:\n%s", code, call.stderr)
	}
	msg := call.stderr.String()
	for _, want := range []string{"call example.echo.sleep", "service example.echo", "no answer: the connection to the service plugin ended", "plugin process exited", "killed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the failed call's error lacks %q:\n%s", want, msg)
		}
	}
	// A new call waits for the restarted plugin and works.
	r := s.client("--server", ep, "--timeout", "30s", "call", "example.echo.add", "a=2", "b=3")
	r.mustSucceed(t, "call after the restart")
	if r.stdout != "5\n" {
		t.Errorf("add after the restart: %q", r.stdout)
	}
}

// restart stops connectserver and starts it again with the same
// configuration and state directory (so the same ports and token).
func (s *server) restart() {
	s.t.Helper()
	s.stop()
	args := s.cmd.Args
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.done = make(chan struct{})
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := s.done
	go func() { s.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if h, err := s.health(); err == nil && h.Status == "ok" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("connectserver not healthy after the restart:\n%s", s.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watch and events outlive a server restart: their session ends with the
// connection, and they start a new one once the client has reconnected.
func TestSessionStreamsAcrossServerRestart(t *testing.T) {
	s, ep := echoSessionServer(t)
	w := startClient(t, s.as(t.TempDir(), "--server", ep, "--json", "watch", "example.echo", "meter.level")...)
	ev := startClient(t, s.as(t.TempDir(), "--server", ep, "events", "example.echo", "levelChanged")...)
	if l := w.line(); !strings.Contains(l, `"snapshot":true`) {
		t.Fatalf("snapshot: %s", l)
	}
	ev.waitStderr("subscribed to")
	s.restart()
	w.waitStderr("watching again once reconnected")
	if l := w.line(); !strings.Contains(l, `"value":0.5,"snapshot":true`) {
		t.Fatalf("snapshot after the restart: %s", l)
	}
	ev.waitStderr("subscribing again once reconnected")
	ev.waitCount("subscribed to example.echo: levelChanged", 2)
	s.client("--server", ep, "call", "example.echo.setLevel", "level=0.25").mustSucceed(t, "setLevel after the restart")
	if l := w.line(); !strings.Contains(l, `"value":0.25,"snapshot":false`) {
		t.Errorf("change after the restart: %s", l)
	}
	if l := ev.line(); !strings.HasSuffix(l, "levelChanged level=0.25") {
		t.Errorf("event after the restart: %s", l)
	}
}
