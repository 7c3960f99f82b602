package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

func adapterXML(name, typ, addr, plugin string) string {
	if plugin != "" {
		return fmt.Sprintf("  <connectionAdapter name=%q type=%q plugin=%q address=%q/>", name, typ, plugin, addr)
	}
	return fmt.Sprintf("  <connectionAdapter name=%q type=%q address=%q/>", name, typ, addr)
}

// fourBearers starts a server with tcp, udp, ssl and the example WebSocket
// bearer on fresh loopback ports.
func fourBearers(t *testing.T, extra string) (*server, map[string]string) {
	t.Helper()
	eps := map[string]string{
		"tcp": fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")),
		"udp": fmt.Sprintf("udp://127.0.0.1:%d", freePort(t, "udp")),
		"ssl": fmt.Sprintf("ssl://127.0.0.1:%d", freePort(t, "tcp")),
		"ws":  fmt.Sprintf("ws://127.0.0.1:%d/connect", freePort(t, "tcp")),
	}
	s := startServer(t, serverConfig{extra: extra, adapters: []string{
		adapterXML("tcp", "connect.bearer.tcp", eps["tcp"], ""),
		adapterXML("udp", "connect.bearer.udp", eps["udp"], ""),
		adapterXML("ssl", "connect.bearer.ssl", eps["ssl"], ""),
		adapterXML("ws", "example.bearer.ws", eps["ws"], bin.wsBearer),
	}}, true)
	return s, eps
}

func pingArgs(ep string) []string {
	args := []string{"--server", ep, "--count", "2", "--interval", "10ms", "--json"}
	if strings.HasPrefix(ep, "ws://") {
		args = append(args, "--bearer-plugin", bin.wsBearer)
	}
	return append(args, "ping")
}

func TestPingOverEveryBearerWithPluginSubprocesses(t *testing.T) {
	s, eps := fourBearers(t, "")

	// Every bearer runs as a child process of the server, and /healthz
	// reports the same pids.
	kids := children(t, s.cmd.Process.Pid)
	for _, name := range []string{"tcp", "udp", "ssl", "ws"} {
		a := s.adapter(name)
		cmdline, ok := kids[a.PID]
		if !ok {
			t.Fatalf("adapter %s: pid %d is not a child of connectserver (children: %v)", name, a.PID, kids)
		}
		want := "plugin bearer " + name
		if name == "ws" {
			want = bin.wsBearer
		}
		if !strings.Contains(cmdline, want) {
			t.Fatalf("adapter %s: child %d runs %q, want %q", name, a.PID, cmdline, want)
		}
	}

	for name, ep := range eps {
		t.Run(name, func(t *testing.T) {
			r := s.client(pingArgs(ep)...)
			r.mustSucceed(t, "ping over "+name)
			var out struct {
				Server    string    `json:"server"`
				ServerID  string    `json:"serverId"`
				ClientID  string    `json:"clientId"`
				State     string    `json:"state"`
				RTTMicros []float64 `json:"rttMicros"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("ping --json output %q: %v", r.stdout, err)
			}
			if out.Server != ep || out.State != "Connected" || len(out.RTTMicros) != 2 || out.ServerID == "" {
				t.Fatalf("ping result %+v", out)
			}
			for _, rtt := range out.RTTMicros {
				if rtt <= 0 {
					t.Fatalf("non-positive round trip %v", rtt)
				}
			}
		})
	}
	// The client id is persistent: every registration above used the same.
	id, err := os.ReadFile(filepath.Join(s.stateDir, "client-id"))
	if err != nil {
		t.Fatal(err)
	}
	s.waitLog("client registered", "client_id="+strings.TrimSpace(string(id)), "adapter=ws", "adapter=udp", "adapter=ssl")

	// Bytes are counted per adapter.
	_, metrics := s.httpDo("GET", "/metrics", "", "")
	for _, name := range []string{"tcp", "udp", "ssl", "ws"} {
		for _, dir := range []string{"in", "out"} {
			prefix := fmt.Sprintf(`connect_adapter_bytes_total{adapter=%q,`, name)
			found := false
			for _, line := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(line, prefix) && strings.Contains(line, `direction="`+dir+`"`) {
					found = !strings.HasSuffix(line, " 0")
				}
			}
			if !found {
				t.Errorf("no %s bytes counted for adapter %s:\n%s", dir, name, metrics)
			}
		}
	}
}

func TestKillingABearerPluginRestartsIt(t *testing.T) {
	s, eps := fourBearers(t, `<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>`)
	for _, name := range []string{"tcp", "udp", "ws"} {
		t.Run(name, func(t *testing.T) {
			before := s.adapter(name)
			if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				a := s.adapter(name)
				if a.Restarts > before.Restarts && a.State == "running" && a.PID != before.PID {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("adapter %s not restarted: %+v", name, a)
				}
				time.Sleep(50 * time.Millisecond)
			}
			s.waitLog(fmt.Sprintf("bearer plugin process exited (pid %d", before.PID), "restarting bearer plugin")
			s.client(pingArgs(eps[name])...).mustSucceed(t, "ping after restart")
		})
	}
	// The other adapter never stopped serving.
	if a := s.adapter("ssl"); a.Restarts != 0 {
		t.Fatalf("ssl adapter restarted too: %+v", a)
	}
}

func TestWrongTokenIsRefusedAndOthersStillServed(t *testing.T) {
	port := freePort(t, "tcp")
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	s := startServer(t, serverConfig{
		extra:    `<authentication><token value="right-token"/></authentication>`,
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
	}, true)
	r := s.client("--server", ep, "--token", "wrong-token", "ping")
	if r.code != 1 || !strings.Contains(r.stderr, "authentication failed") {
		t.Fatalf("wrong token: exit %d, stderr %q", r.code, r.stderr)
	}
	r = s.client("--server", ep, "ping") // no token at all
	if r.code != 1 || !strings.Contains(r.stderr, "authentication failed") {
		t.Fatalf("no token: exit %d, stderr %q", r.code, r.stderr)
	}
	s.client("--server", ep, "--token", "right-token", "ping").mustSucceed(t, "right token")
	s.waitLog("registration failed", "authentication failed")
}

// readReject reads frames from c until a Reject arrives.
func readReject(t *testing.T, c net.Conn, datagram bool) *wire.Reject {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var wc wire.Conn
	if datagram {
		wc = wire.NewDatagramConn(c, wire.MaxDatagramPayload)
	} else {
		wc = wire.NewStreamConn(c, wire.DefaultMaxPayload)
	}
	for {
		m, err := wc.ReadMessage()
		if err != nil {
			t.Fatalf("no Reject from the server: %v", err)
		}
		if r, ok := m.(*wire.Reject); ok {
			return r
		}
	}
}

func TestRegistrationTimeoutOnTheServer(t *testing.T) {
	ep := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra:    `<registration timeout="300ms"/>`,
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", "tcp://"+ep, "")},
	}, true)
	c, err := net.Dial("tcp", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rej := readReject(t, c, false) // we send nothing at all
	if rej.Code != wire.RejectRegistrationTimeout || !strings.Contains(rej.Message, "300ms") {
		t.Fatalf("reject %+v", rej)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection not closed after the reject: %v", err)
	}
	s.waitLog("registration timed out")
	s.client("--server", "tcp://"+ep, "ping").mustSucceed(t, "ping after a timed-out registration")
}

func TestRegistrationTimeoutOnTheClient(t *testing.T) {
	// A "server" that accepts and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	r := runClient(t, "--state-dir", t.TempDir(), "--server", "tcp://"+l.Addr().String(), "--timeout", "2s", "--registration-timeout", "600ms", "--log-level", "info", "--token", "x", "ping")
	if r.code != 1 || !strings.Contains(r.stderr, "registration timed out") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// The state machine went back to Connecting after the failed registration.
	if !strings.Contains(r.stderr, "state=Connecting because=\"registration timed out") {
		t.Fatalf("no return to Connecting in the log:\n%s", r.stderr)
	}
}

func TestGarbageClientsGetAClearErrorAndBreakNothing(t *testing.T) {
	s, eps := fourBearers(t, "")
	tcpAddr := strings.TrimPrefix(eps["tcp"], "tcp://")
	t.Run("http request on tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		rej := readReject(t, c, false)
		if rej.Code != wire.RejectProtocol || !strings.Contains(rej.Message, "not a Connect protocol v1 client") {
			t.Fatalf("reject %+v", rej)
		}
	})
	t.Run("huge length on tcp", func(t *testing.T) {
		c, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A valid version and type with a 4 GiB length: must not allocate.
		c.Write([]byte{1, byte(wire.TypeHello), 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
		rej := readReject(t, c, false)
		if rej.Code != wire.RejectProtocol || !strings.Contains(rej.Message, "too large") {
			t.Fatalf("reject %+v", rej)
		}
	})
	t.Run("random bytes on udp", func(t *testing.T) {
		c, err := net.Dial("udp", strings.TrimPrefix(eps["udp"], "udp://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("\x16\x03\x01 definitely not connect"))
		rej := readReject(t, c, true)
		if rej.Code != wire.RejectProtocol {
			t.Fatalf("reject %+v", rej)
		}
	})
	t.Run("junk instead of a TLS handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(eps["ssl"], "ssl://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello? anyone?\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c) // the bearer drops it; it must not hang the listener
	})
	for name, ep := range eps {
		s.client(pingArgs(ep)...).mustSucceed(t, "ping over "+name+" after garbage")
	}
	s.waitLog("client does not speak the Connect protocol")
}

func TestBrokenPluginsDoNotStopTheServer(t *testing.T) {
	dir := t.TempDir()
	hang := filepath.Join(dir, "hang-plugin")
	os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755)
	garbage := filepath.Join(dir, "garbage-plugin")
	os.WriteFile(garbage, []byte("#!/bin/sh\necho 'this is not a handshake'\nexec sleep 60\n"), 0o755)
	missing := filepath.Join(dir, "no-such-plugin")
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: `<plugins startTimeout="1s" restartBackoffMin="100ms" restartBackoffMax="2s"/>`,
		adapters: []string{
			adapterXML("tcp", "connect.bearer.tcp", ep, ""),
			adapterXML("hang", "example.bearer.hang", fmt.Sprintf("hang://127.0.0.1:%d", freePort(t, "tcp")), hang),
			adapterXML("garbage", "example.bearer.garbage", fmt.Sprintf("garbage://127.0.0.1:%d", freePort(t, "tcp")), garbage),
			adapterXML("missing", "example.bearer.missing", fmt.Sprintf("missing://127.0.0.1:%d", freePort(t, "tcp")), missing),
		},
	}, false)
	s.waitLog("adapter=hang", "timeout", "adapter=garbage", "adapter=missing", "no-such-plugin")
	h, err := s.health()
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != "degraded" {
		t.Fatalf("health %+v, want degraded", h)
	}
	s.client("--server", ep, "ping").mustSucceed(t, "ping while other plugins are broken")
	// No plugin process is left behind by the failed starts.
	time.Sleep(200 * time.Millisecond)
	for pid, cmd := range children(t, s.cmd.Process.Pid) {
		if strings.Contains(cmd, "hang-plugin") && s.adapter("hang").State == "restarting" {
			t.Fatalf("hung plugin %d (%s) not killed after its start timed out", pid, cmd)
		}
	}
}

func TestConfigErrorsAreReportedWithLines(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.xml")
	os.WriteFile(bad, []byte(`<connectserver>
  <http address="127.0.0.1:notaport"/>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500" adress="x"/>
  <connectionAdapter type="connect.bearer.ssl" address="ssl://127.0.0.1:9501">
    <attribute name="clientAuth" value="sometimes"/>
  </connectionAdapter>
</connectserver>
`), 0o600)
	for _, args := range [][]string{{"check", "--config", bad}, {"--config", bad, "--state-dir", dir}} {
		cmd := execServer(t, args...)
		if cmd.code != 1 {
			t.Fatalf("connectserver %v: exit %d, want 1\n%s", args, cmd.code, cmd.stderr)
		}
		for _, want := range []string{"bad.xml:2: ", "bad.xml:3: ", "adress"} {
			if !strings.Contains(cmd.stderr, want) {
				t.Fatalf("connectserver %v: stderr lacks %q:\n%s", args, want, cmd.stderr)
			}
		}
	}
	// check also runs the stock bearers' attribute checks.
	badAttr := filepath.Join(dir, "badattr.xml")
	os.WriteFile(badAttr, []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <connectionAdapter type="connect.bearer.ssl" address="ssl://127.0.0.1:9501">
    <attribute name="clientAuth" value="sometimes"/>
  </connectionAdapter>
</connectserver>
`), 0o600)
	if r := execServer(t, "check", "--config", badAttr); r.code != 1 || !strings.Contains(r.stderr, "badattr.xml:3: ") || !strings.Contains(r.stderr, "sometimes") {
		t.Fatalf("attribute problem not reported at its line: exit %d\n%s", r.code, r.stderr)
	}
	malformed := filepath.Join(dir, "malformed.xml")
	os.WriteFile(malformed, []byte("<connectserver>\n  <http address=\"x\">\n</connectserver>\n"), 0o600)
	if r := execServer(t, "check", "--config", malformed); r.code != 1 || !strings.Contains(r.stderr, "malformed.xml:3: ") {
		t.Fatalf("malformed XML: exit %d\n%s", r.code, r.stderr)
	}
	// The shipped example, with its plugin path pointed at the binary built here.
	orig, err := os.ReadFile("../examples/xml/connectserver.xml")
	if err != nil {
		t.Fatal(err)
	}
	example := filepath.Join(dir, "example.xml")
	exampleXML := strings.ReplaceAll(string(orig), `plugin="../../bin/connect-bearer-ws"`, `plugin="`+bin.wsBearer+`"`)
	exampleXML = strings.ReplaceAll(exampleXML, `plugin="../../bin/echoservice"`, `plugin="`+bin.echoService+`"`)
	echoXML, _ := filepath.Abs("../examples/echoservice/echo.xml")
	exampleXML = strings.ReplaceAll(exampleXML, `file="../echoservice/echo.xml"`, `file="`+echoXML+`"`)
	os.WriteFile(example, []byte(exampleXML), 0o600)
	if r := execServer(t, "check", "--config", example); r.code != 0 {
		t.Fatalf("the shipped example fails its check: %s", r.stderr)
	}
	// Service files named by the configuration are checked too.
	svcCfg := filepath.Join(dir, "services.xml")
	os.WriteFile(filepath.Join(dir, "broken-service.xml"), []byte("<service name=\"Broken\" version=\"1.0\">\n  <method name=\"m\" returns=\"nosuchtype\"/>\n</service>\n"), 0o600)
	os.WriteFile(svcCfg, []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <service name="Broken" plugin="/bin/true" file="broken-service.xml"/>
</connectserver>
`), 0o600)
	if r := execServer(t, "check", "--config", svcCfg); r.code != 1 || !strings.Contains(r.stderr, "broken-service.xml:2: ") {
		t.Fatalf("service file problem not reported: exit %d\n%s", r.code, r.stderr)
	}
	if r := execServer(t, "--bogus-flag"); r.code != 2 {
		t.Fatalf("bad flag: exit %d, want 2", r.code)
	}
}

func execServer(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin.server, args...).CombinedOutput()
	r := result{stderr: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPluginsDoNotOutliveAKilledServer(t *testing.T) {
	s, _ := fourBearers(t, "")
	kids := children(t, s.cmd.Process.Pid)
	if len(kids) < 4 {
		t.Fatalf("want 4 plugin children, got %v", kids)
	}
	s.cmd.Process.Kill() // SIGKILL: no chance to stop its plugins
	<-s.done
	deadline := time.Now().Add(20 * time.Second)
	for pid, cmd := range kids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin %d (%s) still running after its server was killed", pid, cmd)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// alive reports whether pid is a running process (a zombie, dead but not yet
// reaped by whoever inherited it, counts as gone).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
