// Package soak runs real applications for the tunnel's soak tests: a
// throwaway redis-server and sshd on loopback, and workloads through a
// tunnel whose result can be checked exactly. Tests skip when the Debian
// packages (redis-server, openssh-server, openssh-client) are missing,
// unless the environment variable CONNECT_REQUIRE_SOAK is set (CI sets it,
// so that CI never skips silently).
package soak

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Need skips t when a command is missing, or fails it under
// CONNECT_REQUIRE_SOAK.
func Need(t testing.TB, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			if os.Getenv("CONNECT_REQUIRE_SOAK") != "" {
				t.Fatalf("%s is not installed and CONNECT_REQUIRE_SOAK is set (apt-get install redis-server openssh-server openssh-client)", c)
			}
			t.Skipf("%s is not installed (apt-get install redis-server openssh-server openssh-client)", c)
		}
	}
}

// FreePort returns a free loopback TCP port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start starts cmd and stops it by PID when the test ends.
func start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
}

// waitDial waits until addr accepts connections.
func waitDial(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Redis is a throwaway redis-server on loopback, without persistence.
type Redis struct {
	Addr string
}

// StartRedis starts redis-server on a free loopback port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	Need(t, "redis-server", "redis-cli")
	port := FreePort(t)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--protected-mode", "no")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	start(t, cmd)
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	waitDial(t, r.Addr)
	return r
}

// Command runs one command on a direct connection (not through the
// tunnel) and returns its reply as redis-cli prints it.
func (r *Redis) Command(t testing.TB, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(r.Addr)
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// ConnectionsReceived returns redis's total_connections_received.
func (r *Redis) ConnectionsReceived(t testing.TB) int {
	t.Helper()
	for _, line := range strings.Split(r.Command(t, "INFO", "stats"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("INFO stats: %q", line)
			}
			return n
		}
	}
	t.Fatal("INFO stats has no total_connections_received")
	return 0
}

// RedisWorkload writes keys k0..k(n-1) (value v<i>) and appends 0..n-1 to
// list "seq", all from one redis-cli process (one connection) talking to
// addr (the tunnel's local end), pacing the commands over about pace. It
// returns once redis-cli has exited successfully.
func RedisWorkload(t testing.TB, addr string, n int, pace time.Duration) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("redis-cli", "-h", host, "-p", port)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(in)
	step := pace / time.Duration(max(n, 1))
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "SET k%d v%d\nRPUSH seq %d\n", i, i, i)
		if i%50 == 49 {
			w.Flush()
			time.Sleep(50 * step)
		}
	}
	w.Flush()
	in.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2*pace + 60*time.Second):
		cmd.Process.Kill()
		err = <-done
		t.Fatalf("redis-cli did not finish: %v\n%s", err, tail(out.String()))
	}
	if err != nil {
		t.Fatalf("redis-cli through the tunnel: %v\n%s", err, tail(out.String()))
	}
	// Every SET answers OK and every RPUSH the list's new length (redis-cli
	// prints bare replies when its output is not a terminal): check that
	// each answer arrived, once, in order.
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2*n {
		t.Fatalf("redis-cli printed %d answers, want %d:\n%s", len(lines), 2*n, tail(out.String()))
	}
	for i := 0; i < n; i++ {
		if lines[2*i] != "OK" || lines[2*i+1] != strconv.Itoa(i+1) {
			t.Fatalf("answers %d and %d are %q, %q; want OK, %d", 2*i, 2*i+1, lines[2*i], lines[2*i+1], i+1)
		}
	}
}

// CheckRedis checks, on a direct connection, that the workload's keys and
// list are all there, once each, in order.
func (r *Redis) CheckRedis(t testing.TB, n int) {
	t.Helper()
	if got := r.Command(t, "DBSIZE"); got != strconv.Itoa(n+1) {
		t.Fatalf("DBSIZE = %s, want %d (the keys and the list)", got, n+1)
	}
	if got := r.Command(t, "LLEN", "seq"); got != strconv.Itoa(n) {
		t.Fatalf("LLEN seq = %s, want %d", got, n)
	}
	list := strings.Fields(r.Command(t, "LRANGE", "seq", "0", "-1"))
	for i, v := range list {
		if v != strconv.Itoa(i) {
			t.Fatalf("seq[%d] = %s: lost, duplicated or reordered", i, v)
		}
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if got := r.Command(t, "GET", "k"+strconv.Itoa(i)); got != "v"+strconv.Itoa(i) {
			t.Fatalf("GET k%d = %q", i, got)
		}
	}
}

// SSHD is a throwaway sshd on loopback that accepts one key for the
// current user.
type SSHD struct {
	Addr    string
	User    string
	KeyFile string // the client's private key
	Known   string // a known_hosts file with the server's key
}

// StartSSHD starts sshd on a free loopback port with a fresh host key and a
// fresh client key for the current user.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	Need(t, "sshd", "ssh", "ssh-keygen")
	dir := t.TempDir()
	keygen := func(file string) {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", file).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	hostKey, clientKey := filepath.Join(dir, "host"), filepath.Join(dir, "client")
	keygen(hostKey)
	keygen(clientKey)
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	port := FreePort(t)
	conf := filepath.Join(dir, "sshd_config")
	// StrictModes off: the temporary directory's permissions are the
	// test's, not a home directory's.
	cfg := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPasswordAuthentication no\n"+
		"KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n"+
		"UsePAM no\nPidFile %s\nAllowUsers %s\n", port, hostKey, auth, filepath.Join(dir, "sshd.pid"), user)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil && !os.IsExist(err) {
		t.Logf("cannot create /run/sshd (sshd's privilege separation directory): %v", err)
	}
	sshd, _ := exec.LookPath("sshd") // sshd must be started by absolute path
	cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start(t, cmd)
	s := &SSHD{Addr: fmt.Sprintf("127.0.0.1:%d", port), User: user, KeyFile: clientKey}
	waitDial(t, s.Addr)
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.Known = filepath.Join(dir, "known_hosts")
	fields := strings.Fields(string(hostPub))
	os.WriteFile(s.Known, []byte("*  "+fields[0]+" "+fields[1]+"\n"), 0o600)
	return s
}

// Transfer sends size pseudo-random bytes through one ssh session to addr
// (the tunnel's local end) into `sha256sum` on the far side, spread over
// about pace, and checks the digest sshd's side computed against the bytes
// sent.
func (s *SSHD) Transfer(t testing.TB, addr string, size int, seed uint64, pace time.Duration) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("ssh", "-p", port, "-i", s.KeyFile, "-o", "UserKnownHostsFile="+s.Known,
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=0",
		"-o", "ConnectTimeout=30", s.User+"@"+host, "sha256sum")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	rnd := rand.New(rand.NewPCG(seed, seed+1))
	buf := make([]byte, 32<<10)
	step := pace / time.Duration(max(size/len(buf), 1))
	for sent := 0; sent < size; sent += len(buf) {
		time.Sleep(step)
		for i := range buf {
			buf[i] = byte(rnd.Uint32())
		}
		h.Write(buf)
		if _, err := in.Write(buf); err != nil {
			break // Wait reports why
		}
	}
	in.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(120 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("ssh did not finish in 120 s\n%s", tail(errOut.String()))
	}
	if err != nil {
		t.Fatalf("ssh through the tunnel: %v\n%s", err, tail(errOut.String()))
	}
	want := hex.EncodeToString(h.Sum(nil))
	if got := strings.Fields(out.String()); len(got) == 0 || got[0] != want {
		t.Fatalf("the far side's sha256sum is %q, want %s", out.String(), want)
	}
}

// tail returns the end of a long output.
func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}
