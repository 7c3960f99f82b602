package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// slack is added to -time for the deadlines that guard every connection
// against a path that stalls: nothing waits forever.
const slack = 20 * time.Second

// env holds the run's child processes and the load generator's sink.
type env struct {
	stderr   io.Writer
	exe      string
	childEnv []string // added to the environment of this program's children
	sink     *sink

	mu     sync.Mutex
	procs  map[*proc]bool
	closed bool
	once   sync.Once
}

func newEnv(stderr io.Writer, childEnv []string) (*env, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find my own executable to start the tunnel processes: %w", err)
	}
	s, err := newSink()
	if err != nil {
		return nil, err
	}
	return &env{stderr: stderr, exe: exe, childEnv: childEnv, sink: s, procs: map[*proc]bool{}}, nil
}

// close stops every process still running, by PID, and the sink. It is
// idempotent and safe to call from a signal's AfterFunc.
func (e *env) close() {
	e.once.Do(func() {
		e.mu.Lock()
		e.closed = true
		ps := make([]*proc, 0, len(e.procs))
		for p := range e.procs {
			ps = append(ps, p)
		}
		e.mu.Unlock()
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Add(1)
			go func() { defer wg.Done(); p.stop(3 * time.Second) }()
		}
		wg.Wait()
		e.sink.close()
	})
}

// proc is a child process; done is closed when it has exited. lines carries
// the lines it writes on stdout after the first (Go children only).
type proc struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	lines chan string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the process (by PID), then SIGKILL after grace, and
// waits for it to exit.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// start starts cmd and tracks it until it exits. With hello set, cmd is
// one of this program's own modes: its standard input is a pipe whose end
// tells it to exit, and start waits (at most 30 s) for the first line it
// writes on stdout and returns it. A child is also killed if this process
// dies (Pdeathsig).
func (e *env) start(name string, cmd *exec.Cmd, hello bool) (*proc, string, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = e.stderr
	var out io.Reader
	if hello {
		if len(e.childEnv) > 0 {
			cmd.Env = append(os.Environ(), e.childEnv...)
		}
		if _, err := cmd.StdinPipe(); err != nil {
			return nil, "", err
		}
		var err error
		if out, err = cmd.StdoutPipe(); err != nil {
			return nil, "", err
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, "", errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		e.mu.Unlock()
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), lines: make(chan string, 1024)}
	e.procs[p] = true
	e.mu.Unlock()
	go func() {
		cmd.Wait()
		e.mu.Lock()
		delete(e.procs, p)
		e.mu.Unlock()
		close(p.done)
	}()
	if !hello {
		return p, "", nil
	}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan()
		first <- strings.TrimSpace(sc.Text())
		if !ok {
			return
		}
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads them: drop
			}
		}
	}()
	select {
	case line := <-first:
		if line != "" {
			return p, line, nil
		}
	case <-time.After(30 * time.Second):
	}
	p.stop(3 * time.Second)
	return nil, "", fmt.Errorf("%s did not start", name)
}

// line waits, at most d, for the next line from p.
func (p *proc) line(d time.Duration) (string, error) {
	select {
	case l := <-p.lines:
		return l, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited", p.name)
	case <-time.After(d):
		return "", fmt.Errorf("no report from %s within %s", p.name, d)
	}
}

// cpuTicks returns the user + system CPU time of pid, in clock ticks
// (10 ms on Linux), from /proc/PID/stat; 0 if it cannot be read.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func sumTicks(pids []int) int64 {
	var t int64
	for _, p := range pids {
		t += cpuTicks(p)
	}
	return t
}

// ownCPU is this process's user + system CPU time so far.
func ownCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until something listens on 127.0.0.1:port (a LISTEN
// line in /proc/net/tcp), without connecting to it: socat without fork
// accepts one connection only.
func waitListening(p *proc, port int, d time.Duration) error {
	want := fmt.Sprintf("0100007F:%04X", port)
	deadline := time.Now().Add(d)
	for {
		if b, err := os.ReadFile("/proc/net/tcp"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				f := strings.Fields(l)
				if len(f) > 3 && f[1] == want && f[3] == "0A" {
					return nil
				}
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before listening on port %d", p.name, port)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on port %d within %s", p.name, port, d)
		}
	}
}

// sink is the load generator's own listener: the relays' (and the raw
// path's) target. Transfers run one at a time, so the next connection it
// accepts belongs to the transfer being set up.
type sink struct {
	ln   net.Listener
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln, ch: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case s.ch <- c:
			case <-s.done:
				c.Close()
				return
			}
		}
	}()
	return s, nil
}

func (s *sink) addr() string { return s.ln.Addr().String() }

// next waits, at most d, for the next accepted connection.
func (s *sink) next(d time.Duration) (*net.TCPConn, error) {
	select {
	case c := <-s.ch:
		return c.(*net.TCPConn), nil
	case <-s.done:
		return nil, errors.New("sink closed")
	case <-time.After(d):
		return nil, fmt.Errorf("the sink accepted no connection within %s", d)
	}
}

func (s *sink) close() {
	s.once.Do(func() {
		close(s.done)
		s.ln.Close()
	})
}

// abort closes c with a reset (SO_LINGER 0).
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
