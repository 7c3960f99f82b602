package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/faultproxy"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// Sessions over resume streams, end to end: connectserver with the ledger
// service plugin, clients in this process and in helper processes, a
// fault-injecting proxy between them. The server pings every 250 ms and
// declares a path dead after 1 s of silence, so that dead paths cost little
// test time.

const (
	testPingFrequency = 250 * time.Millisecond
	testPingWindow    = 4 * testPingFrequency
)

// resumeServer starts connectserver with the ledger service, a tcp adapter
// and fast pings (and more flags); it returns the server and the adapter's
// host:port.
func resumeServer(t *testing.T, linger string, flags ...string) (*server, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: fmt.Sprintf(`<plugins startTimeout="10s" restartBackoffMin="50ms" restartBackoffMax="1s"/>
  <resume linger=%q pingFrequency="%d" pingWindowFactor="%d"/>
  <service name=%q plugin=%q/>`, linger, testPingFrequency.Milliseconds(), testPingWindow/testPingFrequency, ledgerService, bin.ledger),
		adapters: []string{adapterXML("tcp", "connect.bearer.tcp", "tcp://"+addr, "")},
		args:     flags,
	}, true)
	return s, addr
}

// testClient dials the server at addr (possibly through a proxy) from this
// process, with a client id of its own.
func testClient(t *testing.T, s *server, addr string) *client.Client {
	t.Helper()
	logs := &syncBuffer{}
	cfg, err := resumeClientConfig(addr, filepath.Join(s.stateDir, "token"), t.TempDir(), "",
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("test client log:\n%s", lastLines(logs.String(), 80))
		}
	})
	return c
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sessionsDoc is GET /sessions.
type sessionsDoc struct {
	Sessions []struct {
		ID       string `json:"id"`
		Service  string `json:"service"`
		ClientID string `json:"clientId"`
		Stream   string `json:"stream"`
		Detached bool   `json:"detached"`
	} `json:"sessions"`
	Streams []struct {
		ID        string `json:"id"`
		ClientID  string `json:"clientId"`
		Connected bool   `json:"connected"`
		Attaches  int    `json:"attaches"`
		Sessions  int    `json:"sessions"`
	} `json:"streams"`
}

func (s *server) sessions() sessionsDoc {
	s.t.Helper()
	var d sessionsDoc
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.http + "/sessions")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		s.t.Fatal(err)
	}
	return d
}

// clientView lists the session ids and the streams of one client id.
func (d sessionsDoc) clientView(clientID string) (sessions []string, streams int) {
	for _, se := range d.Sessions {
		if se.ClientID == clientID {
			sessions = append(sessions, se.ID)
		}
	}
	for _, st := range d.Streams {
		if st.ClientID == clientID {
			streams++
		}
	}
	sort.Strings(sessions)
	return sessions, streams
}

// ledgerOpen asks the ledger service (through the HTTP API, outside any
// session) which sessions it has open.
func (s *server) ledgerOpen() []string {
	s.t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.http + "/serviceinvoke/" + ledgerService + "/method/open")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Result string `json:"result"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != http.StatusOK {
		s.t.Fatalf("open: %d %s (%v)", resp.StatusCode, body, err)
	}
	if r.Result == "" {
		return nil
	}
	return strings.Split(r.Result, ",")
}

// eventually polls cond until it holds, or fails the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- link breaks ----

// TestResumeLinkBreaks streams method calls and events through a
// fault-injecting proxy while the link is broken 50 times (CONNECT_RESUME_BREAKS;
// make soak: 500) (TCP resets, and
// socket aborts with ss -K where that works) and then black-holed three
// times for longer than the dead-path window. Every call must succeed once:
// the service's own list per session (length after each append, digest at
// the end) and the events received show zero loss, zero duplication, zero
// reordering, and the session survives on one stream.
func TestResumeLinkBreaks(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	abortErr := faultproxy.CanAbort()
	if abortErr != nil {
		t.Logf("ss -K cannot abort sockets here, only resets are used: %v", abortErr)
	}
	c := testClient(t, s, p.Addr())
	breaks := 50 // make soak: CONNECT_RESUME_BREAKS=500
	if v := os.Getenv("CONNECT_RESUME_BREAKS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			t.Fatalf("CONNECT_RESUME_BREAKS=%q: want a count from 1 to 100000", v)
		}
		breaks = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second+time.Duration(breaks)*time.Second)
	defer cancel()

	const nSessions = 4
	type worker struct {
		sess   *client.Session
		events <-chan client.Event
		done   atomic.Int64 // appends acknowledged
		seen   atomic.Int64 // events received in order
		err    error
	}
	ws := make([]*worker, nSessions)
	for i := range ws {
		sess, err := c.StartSession(ctx, ledgerService)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := sess.Subscribe(ctx, "appended")
		if err != nil {
			t.Fatal(err)
		}
		ws[i] = &worker{sess: sess, events: ev}
	}
	var progress atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(2)
		go func() { // calls, one after the other: the list is 1, 2, 3, ...
			defer wg.Done()
			for i := int64(1); !stop.Load(); i++ {
				got, err := w.sess.Call(ctx, "append", map[string]any{"value": i})
				if err != nil || got != i {
					w.err = fmt.Errorf("append %d: got %v, %v", i, got, err)
					cancel()
					return
				}
				w.done.Store(i)
				progress.Add(1)
			}
		}()
		go func() { // events: exactly 1, 2, 3, ...
			defer wg.Done()
			for {
				select {
				case ev, ok := <-w.events:
					if !ok {
						return
					}
					next := w.seen.Load() + 1
					if ev.Lost > 0 || ev.Args["value"] != next {
						w.err = fmt.Errorf("event %d: got %+v", next, ev)
						cancel()
						return
					}
					w.seen.Store(next)
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	// waitProgress waits until the calls advanced by n since the last
	// break (so that each break hits a connection that carries calls).
	last := int64(0)
	waitProgress := func(n int64, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for progress.Load() < last+n {
			if ctx.Err() != nil || time.Now().After(deadline) {
				cancel()
				wg.Wait()
				for i, w := range ws {
					if w.err != nil {
						t.Errorf("session %d: %v", i, w.err)
					}
				}
				t.Fatalf("no progress %s (%d calls so far)", what, progress.Load())
			}
			time.Sleep(time.Millisecond)
		}
		last = progress.Load()
	}
	start := time.Now()
	resets, aborts := 0, 0
	for b := 0; b < breaks; b++ {
		waitProgress(8, fmt.Sprintf("before break %d", b+1))
		if abortErr == nil && b%3 == 2 {
			if out, err := p.Abort(); err != nil {
				t.Fatal(err)
			} else if !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", p.Port())) {
				t.Fatalf("break %d: ss -K killed nothing: %q", b+1, out)
			}
			aborts++
		} else {
			if n := p.Reset(); n != 1 {
				t.Fatalf("break %d: reset %d connections, want 1", b+1, n)
			}
			resets++
		}
		last = progress.Load()
	}
	breaksTook := time.Since(start)
	blackStart := time.Now()
	for range 3 {
		waitProgress(8, "before a black hole")
		p.Blackhole()
		time.Sleep(testPingWindow + testPingWindow/2)
		p.Restore()
		last = progress.Load()
	}
	waitProgress(8, "after the black holes")
	blackTook := time.Since(blackStart)
	stop.Store(true)

	// Every worker stops after its current call; then the events catch up.
	waitCalls := make(chan struct{})
	go func() {
		for _, w := range ws {
			for w.done.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		close(waitCalls)
	}()
	<-waitCalls
	eventually(t, 30*time.Second, "events caught up", func() bool {
		for _, w := range ws {
			if w.err != nil || w.seen.Load() < w.done.Load() {
				return w.err != nil
			}
		}
		return true
	})
	time.Sleep(50 * time.Millisecond) // let the last calls' workers see stop
	for _, w := range ws {
		n := w.done.Load()
		d, err := w.sess.Call(ctx, "digest", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := ledgerDigest(int(n)); d != want {
			t.Errorf("session %s: the service's list is %v, the client appended 1..%d (%s)", w.sess.ID, d, n, want)
		}
	}
	cancel()
	wg.Wait()
	for i, w := range ws {
		if w.err != nil {
			t.Errorf("session %d: %v", i, w.err)
		}
		if w.seen.Load() != w.done.Load() {
			t.Errorf("session %d: %d events for %d appends", i, w.seen.Load(), w.done.Load())
		}
	}
	doc := s.sessions()
	if len(doc.Streams) != 1 || doc.Streams[0].Sessions != nSessions || !doc.Streams[0].Connected {
		t.Fatalf("server streams: %+v", doc.Streams)
	}
	if got, want := doc.Streams[0].Attaches, 1+resets+aborts+3; got < want {
		t.Errorf("the stream was attached %d times, want at least %d (1 + every break)", got, want)
	}
	t.Logf("%d calls in %d sessions; %d resets and %d ss -K aborts in %v; 3 black holes of %v in %v; the stream attached %d times",
		progress.Load(), nSessions, resets, aborts, breaksTook.Round(time.Millisecond), testPingWindow*3/2,
		blackTook.Round(time.Millisecond), doc.Streams[0].Attaches)
}

// ---- a suspended client ----

// TestResumeClientSuspended stops a client process (SIGSTOP) in the middle
// of a stream of calls for longer than the dead-path window: the server
// declares the path dead and keeps the session; resumed (SIGCONT), the
// client resumes the stream and finishes, checking every answer, every
// event and the service's digest.
func TestResumeClientSuspended(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	h := startHelper(t, s, addr, "stream", t.TempDir(), "", helperCount+"=400")
	h.waitLine("appended 50")
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	s.waitLog("resume: connection lost", "connection dead")
	time.Sleep(testPingWindow)
	if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("client stopped for %v", time.Since(stopped).Round(time.Millisecond))
	for {
		l := h.line()
		if strings.HasPrefix(l, "done ") {
			if l != "done "+ledgerDigest(400) {
				t.Fatalf("final: %s", l)
			}
			break
		}
		if strings.HasPrefix(l, "FAIL") {
			t.Fatalf("helper: %s\n%s", l, h.stderr)
		}
	}
	if code := h.exit(); code != 0 {
		t.Fatalf("helper exit %d", code)
	}
}

// ---- a forged resume ----

// TestResumeForgedResume: another authenticated client tries to resume a
// client's stream with the right stream id and a made-up proof of its
// secret. The server refuses it ("auth") and logs it; the real client's
// stream keeps its connection and its calls go on.
func TestResumeForgedResume(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	c := testClient(t, s, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := c.StartSession(ctx, ledgerService)
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if got, err := sess.Call(ctx, "append", map[string]any{"value": i}); err != nil || got != int64(i) {
				t.Fatalf("append %d: %v, %v", i, got, err)
			}
		}
	}
	appendN(1, 10)
	before := s.sessions()
	if len(before.Streams) != 1 {
		t.Fatalf("streams: %+v", before.Streams)
	}
	streamID := uuid.MustParse(before.Streams[0].ID)

	code := forgeResume(t, s, addr, streamID)
	if code != 2 {
		t.Fatalf("forged resume answered refuse code %d, want 2 (auth)", code)
	}
	s.waitLog("wrong proof of the session secret", streamID.String(), "refused a resume that did not prove")
	appendN(11, 20)
	after := s.sessions()
	if len(after.Streams) != 1 || after.Streams[0].Attaches != before.Streams[0].Attaches || !after.Streams[0].Connected {
		t.Fatalf("the real stream was disturbed: before %+v, after %+v", before.Streams, after.Streams)
	}
	if d, err := sess.Call(ctx, "digest", nil); err != nil || d != ledgerDigest(20) {
		t.Fatalf("digest %v, %v", d, err)
	}
}

// forgeResume registers as a client of its own and resumes stream id with a
// random proof; it returns the Refuse code the server answers.
func forgeResume(t *testing.T, s *server, addr string, id uuid.UUID) uint16 {
	t.Helper()
	token, err := statedir.ReadToken(filepath.Join(s.stateDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	wc := wire.NewStreamConn(nc, 0)
	if err := wc.WriteMessage(&wire.Hello{MinVersion: 1, MaxVersion: 1, ClientID: uuid.New(), Token: token, ClientName: "forger"}); err != nil {
		t.Fatal(err)
	}
	if m, err := wc.ReadMessage(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.Welcome); !ok {
		t.Fatalf("registration: %v", m.Type())
	}
	control := func(kind uint16, payload []byte) wire.Frame {
		return wire.Frame{Type: wire.TypeData, Channel: resume.Channel, Flags: 0x8000 | kind, Payload: payload}
	}
	random := func() []byte { b := make([]byte, 32); rand.Read(b); return b }
	// The next handshake frame; the server's keepalive pings (diagnostics)
	// may come first and are skipped, as a real client's handshake does.
	readHandshake := func() (wire.Frame, error) {
		for {
			f, err := wc.ReadFrame()
			if err != nil || f.Type != wire.TypePing && f.Type != wire.TypePong {
				return f, err
			}
		}
	}
	resumeMsg := wire.AppendBytesField(wire.AppendBytesField(nil, 1, id[:]), 2, random())
	if err := wc.WriteFrame(control(2, resumeMsg)); err != nil {
		t.Fatal(err)
	}
	f, err := readHandshake()
	if err != nil || f.Flags != 0x8003 {
		t.Fatalf("want a Challenge, got flags %#x, %v", f.Flags, err)
	}
	proof := wire.AppendBytesField(nil, 1, random())
	proof = wire.AppendUint64Field(proof, 3, 4<<20)
	proof = wire.AppendUint64Field(proof, 4, 1<<20)
	if err := wc.WriteFrame(control(4, proof)); err != nil {
		t.Fatal(err)
	}
	f, err = readHandshake()
	if err != nil || f.Flags != 0x8006 {
		t.Fatalf("want a Refuse, got flags %#x, %v", f.Flags, err)
	}
	r := wire.NewFieldReader(f.Payload)
	for r.Next() {
		if fl := r.Field(); fl.Tag == 1 {
			code, err := fl.Uint16()
			if err != nil {
				t.Fatal(err)
			}
			return code
		}
	}
	t.Fatalf("Refuse without a code: % x", f.Payload)
	return 0
}

// ---- client reboot ----

// helper is a client process: this test binary in a helper mode.
type helper struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
}

func startHelper(t *testing.T, s *server, addr, mode, stateDir, stateFile string, env ...string) *helper {
	t.Helper()
	h := &helper{t: t, cmd: exec.Command(os.Args[0]), lines: make(chan string, 4096), stderr: &syncBuffer{}, done: make(chan struct{})}
	h.cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperServer+"="+addr,
		helperTokenFile+"="+filepath.Join(s.stateDir, "token"), helperStateDir+"="+stateDir, helperStateFile+"="+stateFile)
	h.cmd.Env = append(h.cmd.Env, env...)
	h.cmd.Stderr = h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		readLines(out, h.lines)
		h.cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		h.cmd.Process.Signal(syscall.SIGCONT)
		h.cmd.Process.Kill()
		<-h.done
		if t.Failed() {
			t.Logf("helper %s stderr:\n%s", mode, lastLines(h.stderr.String(), 60))
		}
	})
	return h
}

func (h *helper) line() string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			<-h.done
			h.t.Fatalf("the helper ended (%v) before printing the line expected\nstderr:\n%s", h.cmd.ProcessState, lastLines(h.stderr.String(), 60))
		}
		return l
	case <-time.After(60 * time.Second):
		h.t.Fatalf("the helper printed nothing for 60s\nstderr:\n%s", lastLines(h.stderr.String(), 60))
	}
	return ""
}

// waitLine reads lines until one equals want (a FAIL line fails the test).
func (h *helper) waitLine(want string) {
	h.t.Helper()
	for {
		l := h.line()
		if l == want {
			return
		}
		if strings.HasPrefix(l, "FAIL") {
			h.t.Fatalf("helper: %s", l)
		}
	}
}

// until reads lines up to "ready" and returns them.
func (h *helper) until(last string) []string {
	h.t.Helper()
	var out []string
	for {
		l := h.line()
		if strings.HasPrefix(l, "FAIL") {
			h.t.Fatalf("helper: %s", l)
		}
		if l == last {
			return out
		}
		out = append(out, l)
	}
}

func (h *helper) exit() int {
	h.t.Helper()
	for range h.lines {
	}
	<-h.done
	return h.cmd.ProcessState.ExitCode()
}

func (h *helper) kill() {
	h.t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		h.t.Fatal(err)
	}
	for range h.lines {
	}
	<-h.done
}

// readStateFile and writeStateFile edit a client's state file.
type testStateFile struct {
	Version  int               `json:"version"`
	ClientID string            `json:"clientId"`
	Sessions []json.RawMessage `json:"sessions"`
}

func readState(t *testing.T, path string) testStateFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sf testStateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return sf
}

func sessionIDOf(t *testing.T, raw json.RawMessage) string {
	var s struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// openThree runs a helper that opens three sessions with a state file and
// kills it (SIGKILL) once they are open; it returns their ids, in order.
func openThree(t *testing.T, s *server, addr, stateDir, stateFile string) []string {
	t.Helper()
	h := startHelper(t, s, addr, "open3", stateDir, stateFile)
	var ids []string
	for _, l := range h.until("ready") {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "session" {
			t.Fatalf("helper said %q", l)
		}
		ids = append(ids, f[1])
	}
	if len(ids) != 3 {
		t.Fatalf("sessions %v", ids)
	}
	h.kill()
	return ids
}

// TestResumeClientReboot: a client with a state file opens three sessions
// and is killed (SIGKILL). Its state file is edited to hold only two of
// them, and the client is started again with it: the server restores those
// two onto the new stream, ends the third (the service is told) and drops
// the old stream — no orphan left, in the server's view and in the
// service's.
func TestResumeClientReboot(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	stateDir := t.TempDir()
	stateFile := filepath.Join(t.TempDir(), "sessions.json")
	clientID, err := statedir.ClientID(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	ids := openThree(t, s, addr, stateDir, stateFile)

	// The process is gone; its sessions wait for it on the server.
	doc := s.sessions()
	if got, streams := doc.clientView(clientID.String()); len(got) != 3 || streams != 1 {
		t.Fatalf("after the kill the server holds sessions %v in %d streams, want the 3 in 1", got, streams)
	}
	sf := readState(t, stateFile)
	if len(sf.Sessions) != 3 {
		t.Fatalf("the state file holds %d sessions", len(sf.Sessions))
	}
	var dropped string
	kept := sf.Sessions[:0]
	for _, raw := range sf.Sessions {
		if id := sessionIDOf(t, raw); id == ids[2] {
			dropped = id
		} else {
			kept = append(kept, raw)
		}
	}
	sf.Sessions = kept
	b, _ := json.Marshal(sf)
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	h := startHelper(t, s, addr, "reclaim", stateDir, stateFile)
	lines := h.until("ready")
	want := []string{ids[0], ids[1]}
	sort.Strings(want)
	restored := map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "restored":
			restored[f[1]] = f[2]
		case len(f) == 2 && f[0] == "sessions":
			if f[1] != strings.Join(want, ",") {
				t.Errorf("the restarted client's sessions: %s, want %v", f[1], want)
			}
		default:
			t.Errorf("helper said %q", l)
		}
	}
	// Session i had i+2 entries before the kill.
	for i, id := range ids[:2] {
		if restored[id] != ledgerDigest(i+2) {
			t.Errorf("session %s restored with list %q, want %s", id, restored[id], ledgerDigest(i+2))
		}
	}
	eventually(t, 10*time.Second, "the server holds exactly the two reclaimed sessions in one stream", func() bool {
		got, streams := s.sessions().clientView(clientID.String())
		return streams == 1 && strings.Join(got, ",") == strings.Join(want, ",")
	})
	eventually(t, 10*time.Second, "the service sees exactly the two reclaimed sessions", func() bool {
		return strings.Join(s.ledgerOpen(), ",") == strings.Join(want, ",")
	})
	s.waitLog("ledger session closed", dropped, "the client restarted without it")
	st := readState(t, stateFile)
	if len(st.Sessions) != 2 {
		t.Errorf("the rewritten state file holds %d sessions, want 2", len(st.Sessions))
	}

	// A graceful end closes the sessions: none left anywhere.
	h.cmd.Process.Signal(syscall.SIGINT)
	if code := h.exit(); code != 0 {
		t.Fatalf("helper exit %d", code)
	}
	eventually(t, 10*time.Second, "no session left after the client closed", func() bool {
		got, streams := s.sessions().clientView(clientID.String())
		return len(got) == 0 && streams == 0 && len(s.ledgerOpen()) == 0
	})
	if st := readState(t, stateFile); len(st.Sessions) != 0 {
		t.Errorf("the state file still holds %d sessions after Close", len(st.Sessions))
	}
}

// TestResumeRebootAfterExpiry: a client killed with three sessions comes
// back after the server's linger window: its sessions expired (the service
// was told "expired"), and the restarted client gets, for each, an explicit
// "expired" error with what the server had received — never silence.
func TestResumeRebootAfterExpiry(t *testing.T) {
	s, addr := resumeServer(t, "1m", "--linger", "1500ms") // the flag wins over the file
	stateDir := t.TempDir()
	stateFile := filepath.Join(t.TempDir(), "sessions.json")
	clientID, err := statedir.ClientID(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	ids := openThree(t, s, addr, stateDir, stateFile)
	for _, id := range ids {
		s.waitLog("ledger session closed", id, "reason=expired")
	}
	if got, streams := s.sessions().clientView(clientID.String()); len(got) != 0 || streams != 0 {
		t.Fatalf("after the linger window the server still holds sessions %v in %d streams", got, streams)
	}

	h := startHelper(t, s, addr, "reclaim", stateDir, stateFile)
	lines := h.until("ready")
	lost := map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "lost":
			lost[f[1]] = l
			t.Logf("restarted client: %s", l)
		case len(f) == 1 && f[0] == "sessions":
		default:
			t.Errorf("helper said %q", l)
		}
	}
	for i, id := range ids {
		l := lost[id]
		want := fmt.Sprintf("lost %s expired expired=true requests=%d ", id, i+2)
		if !strings.HasPrefix(l, want) || !strings.Contains(l, "last=") || strings.Contains(l, "last=0:") {
			t.Errorf("session %d: helper said %q, want %q...", i, l, want)
		}
	}
	if st := readState(t, stateFile); len(st.Sessions) != 0 {
		t.Errorf("the state file still holds %d sessions", len(st.Sessions))
	}
	h.cmd.Process.Signal(syscall.SIGINT)
	h.exit()
}

// readLines feeds r's lines to ch and closes it at the end.
func readLines(r io.Reader, ch chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		ch <- sc.Text()
	}
	close(ch)
}

// TestResumeCLISessionFile: connectclient events with --session-file,
// killed (SIGKILL) and started again with the same file, takes its session
// back instead of starting another; the server holds that one session.
func TestResumeCLISessionFile(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "sessions.json")
	clientID, err := statedir.ClientID(dir)
	if err != nil {
		t.Fatal(err)
	}
	args := s.as(dir, "--server", "tcp://"+addr, "--session-file", file, "events", ledgerService, "appended")
	first := startClient(t, args...)
	first.waitStderr("subscribed to " + ledgerService)
	_, rest, _ := strings.Cut(first.stderr.String(), "(session ")
	id, _, _ := strings.Cut(rest, ")")
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("no session id in %q", first.stderr.String())
	}
	first.cmd.Process.Kill()
	<-first.done

	second := startClient(t, args...)
	second.waitStderr("took back session " + id)
	second.waitStderr("subscribed to " + ledgerService + ": appended (session " + id + ")")
	eventually(t, 10*time.Second, "the server holds the one session, in the new stream", func() bool {
		got, streams := s.sessions().clientView(clientID.String())
		return streams == 1 && len(got) == 1 && got[0] == id
	})
}

// TestResumeSaturatedLink: a bulk transfer through a link slowed to 2 MiB/s
// toward the client keeps the link saturated for three times the dead-path
// window: no side takes it for dead (the stream is never re-attached), and
// every byte arrives intact.
func TestResumeSaturatedLink(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	p, err := faultproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := testClient(t, s, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := c.StartSession(ctx, ledgerService)
	if err != nil {
		t.Fatal(err)
	}
	const size = 512 << 10
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i % 251)
	}
	p.SetRate(2 << 20)
	// Pipelined calls keep the server's replay buffer (and the link) full.
	var wg sync.WaitGroup
	var got atomic.Int64
	var bad atomic.Value
	start := time.Now()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 3*testPingWindow {
				v, err := sess.Call(ctx, "fill", map[string]any{"size": size})
				if err != nil {
					bad.Store(err)
					return
				}
				if b, _ := v.([]byte); string(b) != string(want) {
					bad.Store(fmt.Errorf("fill returned %d bytes, not the pattern", len(b)))
					return
				}
				got.Add(size)
			}
		}()
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	doc := s.sessions()
	if len(doc.Streams) != 1 || doc.Streams[0].Attaches != 1 {
		t.Fatalf("a saturated link was taken for a dead one: streams %+v", doc.Streams)
	}
	if strings.Contains(s.logs.String(), "connection dead") {
		t.Fatal("the server declared the saturated link dead")
	}
	t.Logf("%d MiB in %v through a 2 MiB/s link, window %v: one attachment", got.Load()>>20, took.Round(time.Millisecond), testPingWindow)
}

// TestResumeClientDetach: a client that stops with Detach (a planned
// restart) leaves its sessions on the server and in its state file; the
// same client id started again reclaims them with their lists intact.
func TestResumeClientDetach(t *testing.T) {
	s, addr := resumeServer(t, "1m")
	stateDir := t.TempDir()
	stateFile := filepath.Join(t.TempDir(), "sessions.json")
	logs := &syncBuffer{}
	cfg, err := resumeClientConfig(addr, filepath.Join(s.stateDir, "token"), stateDir, stateFile,
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c1, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 2 {
		sess, err := c1.StartSession(ctx, ledgerService)
		if err != nil {
			t.Fatal(err)
		}
		for v := int64(1); v <= int64(i+2); v++ {
			if got, err := sess.Call(ctx, "append", map[string]any{"value": v}); err != nil || got != v {
				t.Fatalf("append %d: %v, %v", v, got, err)
			}
		}
		ids = append(ids, sess.ID)
	}
	if err := c1.Detach(); err != nil {
		t.Fatal(err)
	}
	c1.Close() // nothing more
	sort.Strings(ids)
	got, streams := s.sessions().clientView(cfg.ClientID.String())
	if strings.Join(got, ",") != strings.Join(ids, ",") || streams != 1 {
		t.Fatalf("after Detach the server holds %v in %d streams, want %v in 1", got, streams, ids)
	}
	if st := readState(t, stateFile); len(st.Sessions) != 2 {
		t.Fatalf("after Detach the state file holds %d sessions, want 2", len(st.Sessions))
	}
	if open := s.ledgerOpen(); strings.Join(open, ",") != strings.Join(ids, ",") {
		t.Fatalf("after Detach the service has sessions %v, want %v", open, ids)
	}

	c2, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rec := c2.Reclaimed()
	if len(rec) != 2 {
		t.Fatalf("reclaimed %d sessions, want 2", len(rec))
	}
	for _, r := range rec {
		if r.Err != nil || r.Session == nil {
			t.Fatalf("session %s not restored: %v", r.ID, r.Err)
		}
		d, err := r.Session.Call(ctx, "digest", nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 2
		if d != ledgerDigest(2) {
			n = 3
		}
		if d != ledgerDigest(n) {
			t.Fatalf("session %s restored with list %v", r.ID, d)
		}
		if got, err := r.Session.Call(ctx, "append", map[string]any{"value": int64(n + 1)}); err != nil || got != int64(n+1) {
			t.Fatalf("append after the reclaim: %v, %v", got, err)
		}
	}
	if t.Failed() {
		t.Logf("client log:\n%s", lastLines(logs.String(), 80))
	}
}
