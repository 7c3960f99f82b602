package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A blocking method and a dying plugin affect nothing but their own calls:
// calls on the same service and on another service go on, and the other
// service's plugin never restarts.
func TestServicesAreIsolated(t *testing.T) {
	s := startServer(t, serverConfig{
		extra: fmt.Sprintf(`<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <service name="example.echo" plugin=%q/>
  <service name="Demo" builtin="demo"/>`, bin.echoService),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "")},
	}, true)
	pids := map[string]int{}
	for _, sv := range serviceStatuses(t, s) {
		if sv.Status != nil {
			pids[sv.Name] = sv.Status.PID
		}
	}
	// The bound is generous (the machine is shared); what matters is that
	// these calls do not wait for the blocked one, which takes 60 s.
	const bound = 10 * time.Second
	timed := func(path, want string) {
		t.Helper()
		start := time.Now()
		code, body := s.httpDo("GET", path, "", "")
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if d := time.Since(start); d > bound {
			t.Fatalf("%s took %v while another call blocked", path, d)
		}
	}

	blocked := make(chan string, 1)
	go func() {
		code, body := s.httpDo("GET", "/serviceinvoke/example.echo/method/sleep?ms=60000&timeout=90s", "", "")
		blocked <- fmt.Sprintf("%d %s", code, body)
	}()
	for i := 0; i < 20; i++ {
		timed("/serviceinvoke/Demo/method/add?a=1&b=2", `"result":3`)
		timed("/serviceinvoke/example.echo/method/add?a=2&b=2", `"result":4`)
	}
	select {
	case got := <-blocked:
		t.Fatalf("the blocking call ended early: %s", got)
	default:
	}

	// Kill the echo plugin under the blocked call: it fails, Demo does not notice.
	syscall.Kill(pids["example.echo"], syscall.SIGKILL)
	select {
	case got := <-blocked:
		if !strings.HasPrefix(got, "503 ") {
			t.Fatalf("blocked call after kill: %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the blocked call did not fail when its plugin died")
	}
	timed("/serviceinvoke/Demo/method/add?a=5&b=5", `"result":10`)
	for _, sv := range serviceStatuses(t, s) {
		if sv.Name == "Demo" && (sv.Status == nil || sv.Status.PID != pids["Demo"] || sv.Status.Restarts != 0) {
			t.Fatalf("Demo was affected by the echo plugin's death: %+v", sv.Status)
		}
	}
}
