package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/services/diagnostics"
)

// diagServer runs a server with the Demo and Diagnostics services on one
// tcp adapter; extra goes into the configuration.
func diagServer(t *testing.T, extra string) (*server, string) {
	t.Helper()
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: `<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <service name="Demo" builtin="demo"/>
  <service name="Diagnostics" builtin="diagnostics"/>
  ` + extra,
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
	}, true)
	return s, ep
}

// demoWatcher starts a client of its own (its own state directory, so its
// own client id) that watches the Demo service until the test ends: a
// live client with traffic. It returns the client's id.
func demoWatcher(t *testing.T, s *server, ep string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"--server", ep, "--state-dir", dir, "--token-file", filepath.Join(s.stateDir, "token"), "--name", "demo-watcher"}
	r := runClient(t, append(args, "--json", "ping", "--count", "1")...)
	r.mustSucceed(t, "ping")
	var p struct{ ClientID string }
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.ClientID == "" {
		t.Fatalf("ping --json: %v %s", err, r.stdout)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin.client, append(args, "watch", "Demo")...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	return p.ClientID
}

// snapshotUntil polls GET /diagnostics until cond holds.
func (s *server) snapshotUntil(what string, cond func(*diagnostics.Snapshot) bool) *diagnostics.Snapshot {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		code, body := s.httpDo("GET", "/diagnostics", "", "")
		last = body
		if code == 200 {
			snap, err := diagnostics.Decode([]byte(body))
			if err != nil {
				s.t.Fatalf("GET /diagnostics: %v\n%s", err, body)
			}
			if cond(snap) {
				return snap
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("diagnostics never showed %s; last:\n%s", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func findClient(snap *diagnostics.Snapshot, id string) *diagnostics.Client {
	for i := range snap.Clients {
		if snap.Clients[i].ID == id {
			return &snap.Clients[i]
		}
	}
	return nil
}

func TestDiagnosticsServiceWatchAndHTTP(t *testing.T) {
	s, ep := diagServer(t, "")
	id := demoWatcher(t, s, ep)

	// The HTTP snapshot shows the client, its traffic and round trips,
	// its session, and the plugins with their memory.
	snap := s.snapshotUntil("the watcher with traffic and a round trip", func(snap *diagnostics.Snapshot) bool {
		c := findClient(snap, id)
		return c != nil && c.BytesOut > 0 && c.MessagesOut > 0 && c.RTTSamples > 0 && c.Sessions == 1
	})
	c := findClient(snap, id)
	if c.Name != "demo-watcher" || c.Bearer != "tcp" || c.State != "connected" || c.RTTMinMicros <= 0 || c.RTTMaxMicros < c.RTTMinMicros {
		t.Errorf("client %+v", c)
	}
	var sessionFound bool
	for _, ss := range snap.Sessions {
		if ss.ClientID == id && ss.Service == "Demo" && len(ss.Links) == 1 && ss.Links[0].Name == "server" {
			sessionFound = true
		}
	}
	if !sessionFound {
		t.Errorf("no Demo session of the watcher on the server link: %+v", snap.Sessions)
	}
	if len(snap.Plugins) != 3 {
		t.Errorf("plugins %+v, want the tcp bearer, Demo and Diagnostics", snap.Plugins)
	}
	for _, p := range snap.Plugins {
		if p.PID <= 0 || p.State != "running" || p.RSSBytes <= 0 {
			t.Errorf("plugin %+v", p)
		}
	}

	// The Diagnostics service's runtime data, over HTTP as typed JSON.
	code, body := s.httpDo("GET", "/serviceruntimedata/Diagnostics", "", "")
	rd, err := diagnostics.Decode([]byte(body))
	if code != 200 || err != nil || rd.Server.ID == "" || rd.Server.TimeUnixMillis == 0 {
		t.Fatalf("runtime data: %d %v\n%.300s", code, err, body)
	}
	if code, body := s.httpDo("GET", "/serviceruntimedata/Diagnostics?path=server.pingIntervalMillis", "", ""); code != 200 || strings.TrimSpace(body) != "5000" {
		t.Errorf("runtime data at a path: %d %s", code, body)
	}

	// And watched by a client: the snapshot, then changes with the
	// watcher's counters rising.
	r := s.client("--server", ep, "--json", "--count", "3", "watch", "Diagnostics", "clients")
	r.mustSucceed(t, "watch Diagnostics")
	var outs []int64
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Path  string
			Value []diagnostics.Client
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("watch line: %v\n%s", err, sc.Text())
		}
		for _, cl := range line.Value {
			if cl.ID == id {
				outs = append(outs, cl.BytesOut)
			}
		}
	}
	if len(outs) < 2 || outs[len(outs)-1] <= outs[0] {
		t.Errorf("the watcher's bytes out did not rise across the watch: %v\n%s", outs, r.stdout)
	}

	// connectclient top --json: one snapshot.
	r = s.client("--server", ep, "--json", "top")
	r.mustSucceed(t, "top --json")
	top, err := diagnostics.Decode([]byte(r.stdout))
	if err != nil || top.Server.ID != rd.Server.ID || len(top.Services) != 2 {
		t.Errorf("top --json: %v\n%.300s", err, r.stdout)
	}

	// Nobody but the server publishes.
	r = s.client("--server", ep, "call", "Diagnostics.publish", "key=guess", "snapshot={}")
	if r.code != 1 || !strings.Contains(r.stderr, "for the server only") {
		t.Errorf("a client's publish: exit %d\n%s", r.code, r.stderr)
	}

	// /metrics has the new families beside the old ones.
	_, metrics := s.httpDo("GET", "/metrics", "", "")
	for _, want := range []string{
		`connect_connections_total `, `connect_messages_total{direction="out"} `,
		`connect_service_call_duration_seconds_count{service="Demo"} `,
		`connect_plugin_resident_memory_bytes{kind="bearer",name="tcp"} `,
		`connect_adapter_clients{adapter="tcp",type="connect.bearer.tcp"} `,
		`connect_plugin_restarts_total{kind="service",name="Diagnostics"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestDiagnosticsOff(t *testing.T) {
	s, ep := diagServer(t, `<diagnostics enabled="false" dashboard="off"/>`)
	s.waitLog("diagnostics are off")
	s.client("--server", ep, "ping", "--count", "1").mustSucceed(t, "ping")
	if code, body := s.httpDo("GET", "/", "", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("GET / with the dashboard off: %d %s", code, body)
	}
	if code, _ := s.httpDo("GET", "/diagnostics", "", ""); code != 404 {
		t.Errorf("GET /diagnostics with the dashboard off: %d", code)
	}
	_, metrics := s.httpDo("GET", "/metrics", "", "")
	if !strings.Contains(metrics, "connect_registrations_total 1") || strings.Contains(metrics, "connect_messages_total") {
		t.Errorf("/metrics with diagnostics off:\n%s", metrics)
	}
	// The Diagnostics service runs, with nothing published.
	r := s.client("--server", ep, "--timeout", "2s", "--json", "top")
	if r.code != 1 || !strings.Contains(r.stderr, "published no diagnostics") {
		t.Errorf("top --json with diagnostics off: exit %d\n%s", r.code, r.stderr)
	}
}

// TestDashboardAtRoot: the page at /, and the JSON 404 for everything else
// there. (That other addresses than loopback are refused is a unit test of
// core: the tests here send traffic to loopback only.)
func TestDashboardAtRoot(t *testing.T) {
	s, _ := diagServer(t, "")
	if code, body := s.httpDo("GET", "/", "", ""); code != 200 || !strings.Contains(body, "Connect diagnostics") {
		t.Fatalf("GET /: %d %.100s", code, body)
	}
	if code, _ := s.httpDo("POST", "/", "text/plain", "x"); code != 404 {
		t.Errorf("POST /: %d, want the JSON 404", code)
	}
	if code, body := s.httpDo("GET", "/dashboard/nope.js", "", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /dashboard/nope.js: %d %s", code, body)
	}
}
