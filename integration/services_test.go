package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// httpGet returns the status and body of a GET on the server's HTTP API.
func (s *server) httpDo(method, path, contentType, body string) (int, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, "http://"+s.http+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func echoServer(t *testing.T) *server {
	t.Helper()
	return startServer(t, serverConfig{
		extra: fmt.Sprintf(`<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <service name="example.echo" plugin=%q/>`, bin.echoService),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "")},
	}, true)
}

func TestServiceHTTPAPI(t *testing.T) {
	s := echoServer(t)

	code, body := s.httpDo("GET", "/servicedescriptions/example.echo", "", "")
	if code != 200 || !strings.Contains(body, `<service name="example.echo"`) {
		t.Fatalf("description: %d %s", code, body)
	}
	cases := []struct {
		method, path, ctype, body string
		code                      int
		want                      string
	}{
		{"GET", "/serviceinvoke/example.echo/method/add?a=40&b=2", "", "", 200, `"result":42`},
		{"GET", "/serviceinvoke/example.echo/method/echo?text=" + url.QueryEscape("héllo"), "", "", 200, `"result":"héllo"`},
		{"POST", "/serviceinvoke/example.echo/method/stats", "application/json", `{"values":[1,2,6]}`, 200, `"result":{"count":3,"mean":3,"max":6}`},
		{"POST", "/serviceinvoke/example.echo/method/add", "application/x-www-form-urlencoded", "a=1&b=2", 200, `"result":3`},
		{"GET", "/serviceinvoke/example.echo/method/add?a=1", "", "", 400, `missing argument b (int)`},
		{"GET", "/serviceinvoke/example.echo/method/add?a=x&b=1", "", "", 400, `argument a`},
		{"GET", "/serviceinvoke/example.echo/method/add?a=1&b=2&c=3", "", "", 400, `unknown argument \"c\"`},
		{"GET", "/serviceinvoke/example.echo/method/nope", "", "", 404, `has no method \"nope\"`},
		{"GET", "/serviceinvoke/no.such/method/x", "", "", 404, `no service \"no.such\"`},
		{"GET", "/serviceinvoke/example.echo/method/sleep?ms=10000&timeout=200ms", "", "", 504, `deadline`},
		{"GET", "/serviceinvoke/example.echo/method/fail?mode=error", "", "", 422, `asked to fail`},
		{"GET", "/serviceinvoke/example.echo/method/fail?mode=panic", "", "", 502, `panic`},
	}
	for _, c := range cases {
		code, body := s.httpDo(c.method, c.path, c.ctype, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %s\nwant %d containing %s", c.method, c.path, code, body, c.code, c.want)
		}
		if code >= 400 {
			var e struct{ Error string }
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("%s %s: error body is not {\"error\": ...}: %s", c.method, c.path, body)
			}
		}
	}

	// Runtime data as typed JSON, after a method changed it.
	if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/setLevel?level=0.75", "", ""); code != 200 {
		t.Fatalf("setLevel: %d %s", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := s.httpDo("GET", "/serviceruntimedata/example.echo", "", "")
		var data struct {
			Meter struct {
				Level float64 `json:"level"`
				Calls int64   `json:"calls"`
			} `json:"meter"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &data) != nil {
			t.Fatalf("runtime data: %d %s", code, body)
		}
		if data.Meter.Level == 0.75 && data.Meter.Calls == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime data never showed level 0.75 and 1 echo call: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := s.httpDo("GET", "/serviceruntimedata/example.echo?path=meter.level", "", ""); code != 200 || strings.TrimSpace(body) != "0.75" {
		t.Fatalf("runtime data at a path: %d %q", code, body)
	}
	if code, body := s.httpDo("GET", "/metrics", "", ""); !strings.Contains(body, `connect_service_calls_total{service="example.echo"}`) {
		t.Fatalf("metrics lack per-service calls: %d %s", code, body)
	}
}

func TestKilledServicePluginRestarts(t *testing.T) {
	s := echoServer(t)
	pid := 0
	for _, sv := range serviceStatuses(t, s) {
		if sv.Name == "example.echo" && sv.Status != nil {
			pid = sv.Status.PID
		}
	}
	if _, ok := children(t, s.cmd.Process.Pid)[pid]; !ok || pid == 0 {
		t.Fatalf("service plugin pid %d is not a child of the server", pid)
	}
	// A call in flight when the plugin dies fails with a clear error.
	done := make(chan string, 1)
	go func() {
		code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/sleep?ms=20000", "", "")
		done <- fmt.Sprintf("%d %s", code, body)
	}()
	time.Sleep(300 * time.Millisecond) // let the call reach the plugin; the assertion does not depend on it
	syscall.Kill(pid, syscall.SIGKILL)
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "503 ") || !strings.Contains(got, "example.echo") {
			t.Fatalf("call during the plugin's death: %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the pending call never failed")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/add?a=2&b=3", "", "")
		if code == 200 && strings.Contains(body, `"result":5`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working call after the restart: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.waitLog("plugin process exited")
}

type serviceStatus struct {
	Name   string `json:"name"`
	Status *struct {
		State    string `json:"state"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
	} `json:"status"`
}

func serviceStatuses(t *testing.T, s *server) []serviceStatus {
	t.Helper()
	code, body := s.httpDo("GET", "/servicedescriptions", "", "")
	var out struct {
		Services []serviceStatus `json:"services"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("service list: %d %s", code, body)
	}
	return out.Services
}

// Persistent runtime data survives a plugin restart and a server restart.
func TestPersistentDataSurvivesRestarts(t *testing.T) {
	state := t.TempDir()
	cfg := serverConfig{
		extra: fmt.Sprintf(`<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <service name="example.echo" plugin=%q/>`, bin.echoService),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "")},
		stateDir: state,
	}
	calls := func(s *server) string {
		_, body := s.httpDo("GET", "/serviceruntimedata/example.echo?path=meter.calls", "", "")
		return strings.TrimSpace(body)
	}
	waitCalls := func(s *server, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for calls(s) != want {
			if time.Now().After(deadline) {
				t.Fatalf("meter.calls = %s, want %s", calls(s), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	s := startServer(t, cfg, true)
	for i := 0; i < 3; i++ {
		if code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/echo?text=x", "", ""); code != 200 {
			t.Fatalf("echo: %d %s", code, body)
		}
	}
	waitCalls(s, "3")

	// The plugin dies: the restarted one gets the value back.
	pid := 0
	for _, sv := range serviceStatuses(t, s) {
		if sv.Status != nil {
			pid = sv.Status.PID
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := serviceStatuses(t, s)
		if len(st) == 1 && st[0].Status != nil && st[0].Status.PID != pid && st[0].Status.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not restarted: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitCalls(s, "3")
	if code, _ := s.httpDo("GET", "/serviceinvoke/example.echo/method/echo?text=x", "", ""); code != 200 {
		t.Fatal("echo after restart failed")
	}
	waitCalls(s, "4")

	// The server stops (saving on the way out) and a new one starts on the
	// same state directory.
	s.stop()
	s2 := startServer(t, cfg, true)
	waitCalls(s2, "4")
}
