package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin holds the binaries built once for the whole package.
var bin struct {
	dir                                   string
	server, client, wsBearer, echoService string
	runner                                string
	ledger                                string // the resume tests' service (resume_test.go)
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(resumeHelper(mode)) // this binary re-executed as a client process (resume_helper_test.go)
	}
	dir, err := os.MkdirTemp("", "connect-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.dir = dir
	bin.server = filepath.Join(dir, "connectserver")
	bin.client = filepath.Join(dir, "connectclient")
	bin.wsBearer = filepath.Join(dir, "connect-bearer-ws")
	bin.echoService = filepath.Join(dir, "echoservice")
	bin.runner = filepath.Join(dir, "remoteservicerunner")
	bin.ledger = filepath.Join(dir, "ledger")
	for out, pkg := range map[string]string{
		bin.ledger:      "github.com/bearerkit/connect/integration/ledger",
		bin.server:      "github.com/bearerkit/connect/cmd/connectserver",
		bin.client:      "github.com/bearerkit/connect/cmd/connectclient",
		bin.wsBearer:    "github.com/bearerkit/connect/examples/wsbearer/cmd/connect-bearer-ws",
		bin.echoService: "github.com/bearerkit/connect/examples/echoservice",
		bin.runner:      "github.com/bearerkit/connect/cmd/remoteservicerunner",
	} {
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago for network
// ("tcp" or "udp").
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a running connectserver process.
type server struct {
	t        *testing.T
	cmd      *exec.Cmd
	logs     *syncBuffer
	http     string
	stateDir string
	done     chan struct{}
}

// serverConfig builds a configuration with the given adapters (name ->
// XML element) and an HTTP address.
type serverConfig struct {
	extra    string // more elements inside <connectserver>
	adapters []string
	stateDir string   // default: a new one under the test's temporary directory
	args     []string // more command-line flags
}

// startServer writes the configuration, starts connectserver with it and
// waits until /healthz answers. The process is stopped (by PID) at cleanup.
func startServer(t *testing.T, cfg serverConfig, wantHealthy bool) *server {
	t.Helper()
	dir := t.TempDir()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	xml := fmt.Sprintf("<connectserver>\n  <http address=%q/>\n  <log level=\"debug\"/>\n%s\n%s\n</connectserver>\n",
		httpAddr, cfg.extra, strings.Join(cfg.adapters, "\n"))
	path := filepath.Join(dir, "connectserver.xml")
	if err := os.WriteFile(path, []byte(xml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, logs: &syncBuffer{}, http: httpAddr, stateDir: filepath.Join(dir, "state"), done: make(chan struct{})}
	if cfg.stateDir != "" {
		s.stateDir = cfg.stateDir
	}
	s.cmd = exec.Command(bin.server, append([]string{"--config", path, "--state-dir", s.stateDir}, cfg.args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := s.health()
		if err == nil && (!wantHealthy || h.Status == "ok") {
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("connectserver exited early:\n%s", s.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("connectserver not healthy in time (last: %+v, %v):\n%s", h, err, s.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("connectserver did not stop on SIGTERM within 15s")
	}
	if s.t.Failed() {
		s.t.Logf("connectserver log:\n%s", s.logs)
	}
}

type adapterStatus struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	State    string `json:"state"`
	PID      int    `json:"pid"`
	Endpoint string `json:"endpoint"`
	Restarts int    `json:"restarts"`
}

type health struct {
	Status   string          `json:"status"`
	Clients  int             `json:"clients"`
	Adapters []adapterStatus `json:"adapters"`
}

func (s *server) health() (health, error) {
	var h health
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.http + "/healthz")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&h)
	return h, err
}

func (s *server) adapter(name string) adapterStatus {
	s.t.Helper()
	h, err := s.health()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, a := range h.Adapters {
		if a.Name == name {
			return a
		}
	}
	s.t.Fatalf("no adapter %q in %+v", name, h)
	return adapterStatus{}
}

// waitLog waits until the server log contains every string.
func (s *server) waitLog(want ...string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		logs := s.logs.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(logs, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server log never said %q:\n%s", missing, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// result of running connectclient.
type result struct {
	code           int
	stdout, stderr string
}

// client runs connectclient with the server's state directory (so it finds
// the generated token and certificate) plus args, bounded in time.
func (s *server) client(args ...string) result {
	s.t.Helper()
	return runClient(s.t, append([]string{"--state-dir", s.stateDir}, args...)...)
}

func runClient(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.client, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("connectclient %v: %v", args, err)
	}
	return r
}

func (r result) mustSucceed(t *testing.T, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
}

// children lists the command lines of pid's child processes, from /proc.
func children(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out[child] = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}
