package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPolicies(t *testing.T) {
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: fmt.Sprintf(`<authentication>
    <token name="ops" value="ops-token"/>
    <token name="guest" value="guest-token"/>
  </authentication>
  <service name="example.echo" plugin=%q/>
  <policy>
    <allow service="example.echo" token="ops"/>
    <allow service="example.echo" token="guest" methods="add"/>
    <allow service="example.echo" methods="echo" when="meter.level &gt;= 0.5"/>
  </policy>`, bin.echoService),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")},
	}, true)
	as := func(token string, args ...string) result {
		dir := t.TempDir() // each caller its own client id
		tf := filepath.Join(dir, "token")
		os.WriteFile(tf, []byte(token), 0o600)
		return runClient(t, append([]string{"--state-dir", dir, "--token-file", tf, "--server", ep}, args...)...)
	}
	as("ops-token", "call", "example.echo.add", "a=1", "b=2").mustSucceed(t, "ops add")
	as("ops-token", "call", "example.echo.echo", "text=hi").mustSucceed(t, "ops echo")
	as("guest-token", "call", "example.echo.add", "a=1", "b=2").mustSucceed(t, "guest add")
	r := as("guest-token", "call", "example.echo.setLevel", "level=0.1")
	if r.code != 1 || !strings.Contains(r.stderr, "denied") || !strings.Contains(r.stderr, "example.echo.setLevel") {
		t.Fatalf("guest setLevel: exit %d, stderr %q", r.code, r.stderr)
	}
	s.waitLog("policy denied")

	// An HTTP caller matches only rules without client selectors: echo,
	// while meter.level >= 0.5 (its default is 0.5).
	if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/echo?text=x", "", ""); code != 200 {
		t.Fatalf("HTTP echo: %d %s", code, body)
	}
	if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/add?a=1&b=1", "", ""); code != 403 || !strings.Contains(body, "denied") {
		t.Fatalf("HTTP add: %d %s, want 403", code, body)
	}
	as("ops-token", "call", "example.echo.setLevel", "level=0.25").mustSucceed(t, "ops setLevel")
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/echo?text=x", "", "")
		if code == 403 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTP echo still allowed with meter.level 0.25: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
