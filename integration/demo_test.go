package integration

import (
	"fmt"
	"strings"
	"testing"
)

// The built-in Demo service runs inside connectserver's own executable,
// re-executed as a plugin subprocess, exactly like a third-party service.
func TestBuiltinDemoService(t *testing.T) {
	s := startServer(t, serverConfig{
		extra:    `<service name="Demo" builtin="demo"/>`,
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "")},
	}, true)
	var pid int
	for _, sv := range serviceStatuses(t, s) {
		if sv.Name == "Demo" && sv.Status != nil {
			pid = sv.Status.PID
		}
	}
	cmd, ok := children(t, s.cmd.Process.Pid)[pid]
	if !ok || !strings.Contains(cmd, "plugin service demo") {
		t.Fatalf("Demo (pid %d) is not a plugin child of the server: %q", pid, cmd)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/Demo/method/add?a=40&b=2", "", ""); code != 200 || !strings.Contains(body, `"result":42`) {
		t.Fatalf("Demo.add: %d %s", code, body)
	}
	if code, body := s.httpDo("POST", "/serviceinvoke/Demo/method/summarize", "application/json", `{"values":[1,2,3,6]}`); code != 200 || !strings.Contains(body, `"count":4`) {
		t.Fatalf("Demo.summarize: %d %s", code, body)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/Demo/method/setRate?hz=5000", "", ""); code != 400 {
		t.Fatalf("Demo.setRate out of range: %d %s, want 400", code, body)
	}
	if code, body := s.httpDo("GET", "/serviceruntimedata/Demo?path=settings.label", "", ""); code != 200 || !strings.Contains(body, "Connect demo station") {
		t.Fatalf("Demo runtime data: %d %s", code, body)
	}
	// The embedded default configuration names the same built-in.
	if r := execServer(t, "check", "--config", "../config/default.xml"); r.code != 0 {
		t.Fatalf("check of the embedded default: %d\n%s", r.code, r.stderr)
	}
}

// The built-in Configuration service publishes <configuration> groups as
// typed runtime data.
func TestConfigurationService(t *testing.T) {
	s := startServer(t, serverConfig{
		extra: `<service name="Configuration" builtin="configuration"/>
  <configuration>
    <group name="database">
      <value name="host" type="string" value="db.local"/>
      <value name="port" type="int" value="5432"/>
      <value name="tls" type="bool" value="true"/>
    </group>
  </configuration>`,
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "")},
	}, true)
	code, body := s.httpDo("GET", "/serviceruntimedata/Configuration", "", "")
	if code != 200 || strings.TrimSpace(body) != `{"database":{"host":"db.local","port":5432,"tls":true}}` {
		t.Fatalf("Configuration runtime data: %d %s", code, body)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/Configuration/method/groups", "", ""); code != 200 || !strings.Contains(body, `"result":["database"]`) {
		t.Fatalf("Configuration.groups: %d %s", code, body)
	}
}
