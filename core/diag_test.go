package core

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/diagnostics"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/wire"
)

func TestRates(t *testing.T) {
	var r rates
	start := time.Unix(1000, 0)
	if r.get(0) != 0 {
		t.Fatal("a rate before any sample")
	}
	// The first sample is measured from the start.
	r.update(start.Add(2*time.Second), start, 100, 10)
	if r.get(0) != 50 || r.get(1) != 5 {
		t.Fatalf("first rates %v", r.per)
	}
	r.update(start.Add(3*time.Second), start, 400, 10)
	if r.get(0) != 300 || r.get(1) != 0 {
		t.Fatalf("rates %v", r.per)
	}
	// A counter that went back (never, but) gives 0, not a huge rate; a
	// sample at the same instant changes nothing.
	r.update(start.Add(4*time.Second), start, 10, 20)
	r.update(start.Add(4*time.Second), start, 999, 999)
	if r.get(0) != 0 || r.get(1) != 10 || r.get(7) != 0 {
		t.Fatalf("rates %v", r.per)
	}
}

func TestParseVmRSS(t *testing.T) {
	for in, want := range map[string]int64{
		"Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 3\n": 2048 * 1024,
		"VmRSS: 7\n":               7 * 1024, // /proc gives kB
		"VmRSS:\n":                 0,
		"VmRSS:\t-5 kB\n":          0,
		"VmRSS:\tlots kB\n":        0,
		"Name:\tkernel\n":          0,
		"":                         0,
		strings.Repeat("x", 1<<20): 0, // a line too long for the scanner
	} {
		if got := parseVmRSS(strings.NewReader(in)); got != want {
			t.Errorf("parseVmRSS(%.40q) = %d, want %d", in, got, want)
		}
	}
	var c rssCache
	now := time.Now()
	self := c.get(os.Getpid(), now)
	if self <= 0 {
		t.Skipf("no VmRSS for this process (no /proc?): %d", self)
	}
	if again := c.get(os.Getpid(), now.Add(rssMaxAge/2)); again != self {
		t.Errorf("within rssMaxAge the value was read again: %d then %d", self, again)
	}
	if c.get(0, now) != 0 || c.get(-1, now) != 0 || c.get(math.MaxInt32, now) != 0 {
		t.Error("a non-process has resident memory")
	}
}

// diagRig is a server with diagnostics on, an adapter, a service and
// registered connections over socket pairs, without plugins.
type diagRig struct {
	t   testing.TB
	srv *Server
	ad  *adapter
	hs  *hostedService
}

func newDiagRig(t testing.TB) *diagRig {
	t.Helper()
	xml, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := servicefile.Parse("echo.xml", xml)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := services.NewDataTree(desc.Data)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hs := &hostedService{cfg: config.Service{Name: "example.echo"}, desc: desc, data: tree}
	cfg := &config.Server{Diagnostics: config.Diagnostics{Enabled: true, Dashboard: config.DashboardLoopback}}
	srv := &Server{log: log, ctx: ctx, cfg: cfg, id: "server-1", started: time.Now().Add(-time.Minute), epoch: time.Now(),
		opts: Options{PingInterval: time.Hour}, services: map[string]*hostedService{"example.echo": hs},
		conns: map[*clientConn]struct{}{}, clients: map[uuid.UUID]*clientConn{}}
	srv.diag.init(true)
	ad := &adapter{cfg: config.Adapter{Name: "tcp", Type: "connect.bearer.tcp"},
		sup: pluginhost.NewSupervisor(pluginhost.Options{Name: "tcp", WantType: "connect.bearer.tcp"}, bearers.Endpoint{}, nil)}
	srv.adapters = []*adapter{ad}
	return &diagRig{t: t, srv: srv, ad: ad, hs: hs}
}

// client registers a connection; peer is the client's end.
func (r *diagRig) client(name string) (*clientConn, wire.Conn) {
	a, b := diagSocketPair(r.t)
	st := &connStats{}
	bc := &countingConn{Conn: testConn{a}, a: r.ad, st: st}
	c := &clientConn{s: r.srv, adapter: r.ad, bc: bc, wc: countingWire{Conn: wire.NewStreamConn(bc, 0), st: st}, stats: st,
		log: r.srv.log, clientID: uuid.New(), name: name, auth: "token", since: time.Now().Add(-10 * time.Second), registered: true}
	r.srv.mu.Lock()
	r.srv.conns[c] = struct{}{}
	r.srv.clients[c.clientID] = c
	r.srv.mu.Unlock()
	return c, wire.NewStreamConn(b, 0)
}

// testConn makes a net.Conn a bearers.Conn.
type testConn struct{ net.Conn }

func (testConn) Peer() bearers.Peer { return bearers.Peer{} }

func TestSnapshotFiguresAndRates(t *testing.T) {
	r := newDiagRig(t)
	quiet, _ := r.client("quiet")
	busy, peer := r.client("busy")
	busy.startPings()
	defer func() { busy.close(); busy.stopPings() }()

	// The client answers the server's first keepalive ping.
	m, err := peer.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	ping, ok := m.(*wire.Ping)
	if !ok || ping.ID != 1 {
		t.Fatalf("first message to the client: %#v, want Ping 1", m)
	}
	busy.onPong(&wire.Pong{ID: ping.ID, SentUnixNano: ping.SentUnixNano})
	busy.onPong(&wire.Pong{ID: 99, SentUnixNano: ping.SentUnixNano})                   // not sent: ignored
	busy.onPong(&wire.Pong{ID: 1, SentUnixNano: ping.SentUnixNano + int64(time.Hour)}) // from the future: ignored

	// Traffic on the busy connection: a message each way.
	if err := busy.wc.WriteMessage(&wire.Data{Channel: 9, Payload: make([]byte, 1000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	if err := peer.WriteMessage(&wire.Data{Channel: 9, Payload: make([]byte, 500)}); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.wc.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	// The pinger counts its Ping once its write returned, which may be
	// after the client read it.
	for deadline := time.Now().Add(diagGuard); busy.stats.msgsOut.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("messages out: %d, want 2", busy.stats.msgsOut.Load())
		}
	}
	r.hs.calls.Add(3)
	r.hs.errors.Add(1)
	for _, d := range []time.Duration{100, 200, 300} {
		r.hs.lat.Record(d * time.Microsecond)
	}
	r.ad.accepted.Add(2)
	r.ad.acceptErrors.Add(1)

	now := time.Now()
	r.srv.diag.mu.Lock()
	snap := r.srv.snapshotLocked(now, true, 10)
	r.srv.diag.mu.Unlock()

	if snap.Server.ID != "server-1" || snap.Server.Clients != 2 || snap.Server.PID != int64(os.Getpid()) || snap.Server.PingIntervalMillis != time.Hour.Milliseconds() {
		t.Fatalf("server %+v", snap.Server)
	}
	if len(snap.Clients) != 2 || snap.Clients[0].Name != "busy" || snap.Clients[1].Name != "quiet" {
		t.Fatalf("clients not sorted by traffic: %+v", snap.Clients)
	}
	c := snap.Clients[0]
	if c.MessagesOut != 2 || c.MessagesIn != 1 || c.BytesOut < 1000 || c.BytesIn < 500 || c.BytesInPerSec <= 0 || c.BytesOutPerSec <= 0 {
		t.Errorf("busy client counters %+v", c)
	}
	if c.RTTSamples != 1 || c.RTTMinMicros <= 0 || c.RTTMinMicros != c.RTTMaxMicros || c.RTTAvgMicros != c.RTTLastMicros {
		t.Errorf("round trips %+v", c)
	}
	if c.State != "connected" || c.Bearer != "tcp" || c.BearerType != "connect.bearer.tcp" || c.ID != busy.clientID.String() {
		t.Errorf("identity %+v", c)
	}
	if len(snap.Services) != 1 {
		t.Fatalf("services %+v", snap.Services)
	}
	sv := snap.Services[0]
	if sv.Calls != 3 || sv.Errors != 1 || sv.LatencyCalls != 3 || sv.LatencyP50Micros < 150 || sv.LatencyP50Micros > 250 || sv.LatencyP99Micros < 250 || sv.LatencyP99Micros > 340 || sv.CallsPerSec <= 0 {
		t.Errorf("service %+v", sv)
	}
	if len(snap.Bearers) != 1 || snap.Bearers[0].Clients != 2 || snap.Bearers[0].AcceptErrors != 1 || snap.Bearers[0].Connections != 2 || snap.Bearers[0].BytesIn < 500 {
		t.Errorf("bearers %+v", snap.Bearers)
	}
	if len(snap.Plugins) != 2 || snap.Plugins[0].Kind != "bearer" || snap.Plugins[1].Kind != "service" {
		t.Errorf("plugins %+v", snap.Plugins)
	}
	if snap.Totals.MessagesOut != 2 || snap.Totals.MessagesIn != 1 || snap.Totals.Calls != 3 || snap.Totals.CallErrors != 1 {
		t.Errorf("totals %+v", snap.Totals)
	}

	// The next interval: no calls, so no percentiles; rates fall to 0.
	r.srv.diag.mu.Lock()
	snap = r.srv.snapshotLocked(now.Add(time.Second), true, 1)
	r.srv.diag.mu.Unlock()
	if sv := snap.Services[0]; sv.LatencyCalls != 0 || sv.LatencyP50Micros != 0 || sv.CallsPerSec != 0 {
		t.Errorf("an idle interval has latency figures: %+v", sv)
	}
	if len(snap.Clients) != 1 || snap.Server.Clients != 2 || snap.Server.ListLimit != 1 {
		t.Errorf("the list limit is not applied: %d clients listed, %d counted", len(snap.Clients), snap.Server.Clients)
	}
	if snap.Clients[0].BytesInPerSec != 0 {
		t.Errorf("an idle client has a rate: %+v", snap.Clients[0])
	}

	// A closed connection's messages stay in the totals, once.
	r.srv.mu.Lock()
	delete(r.srv.conns, busy)
	delete(r.srv.clients, busy.clientID)
	r.srv.retire(busy.stats)
	r.srv.mu.Unlock()
	snap = r.srv.Diagnostics()
	if snap.Totals.MessagesOut != 2 || snap.Totals.MessagesIn != 1 || snap.Server.Clients != 1 || snap.Clients[0].ID != quiet.clientID.String() {
		t.Errorf("after the busy client left: totals %+v, clients %+v", snap.Totals, snap.Clients)
	}

	// The snapshot is the Diagnostics service's runtime data.
	doc, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	svc := diagnostics.New("")
	if _, err := services.UnmarshalJSON(svc.Description().Data.Type, doc); err != nil {
		t.Fatalf("the snapshot is not the Diagnostics runtime data: %v\n%s", err, doc)
	}
}

func TestPingerStops(t *testing.T) {
	r := newDiagRig(t)
	r.srv.opts.PingInterval = time.Millisecond
	c, peer := r.client("pinged")
	c.startPings()
	for i := uint64(1); i <= 3; i++ {
		m, err := peer.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := m.(*wire.Ping); !ok || p.ID != i {
			t.Fatalf("message %d: %#v", i, m)
		}
	}
	c.close()
	done := make(chan struct{})
	go func() { c.stopPings(); close(done) }()
	select {
	case <-done:
	case <-time.After(diagGuard):
		t.Fatal("stopPings did not return")
	}
	c.stopPings() // idempotent
	sent := c.stats.pingSeq.Load()
	time.Sleep(20 * time.Millisecond)
	if c.stats.pingSeq.Load() != sent {
		t.Fatal("pings went on after stopPings")
	}
	// Diagnostics off: no stats, no pinger, and stopping is a no-op.
	off := &clientConn{s: r.srv}
	off.startPings()
	off.stopPings()
	off.onPong(&wire.Pong{ID: 1})
}

func TestDashboardHTTP(t *testing.T) {
	r := newDiagRig(t)
	r.srv.cfg.HTTPAddr = "127.0.0.1:0"
	if err := r.srv.startHTTP(); err != nil {
		t.Fatal(err)
	}
	defer func() { r.srv.httpSrv.Close(); r.srv.wg.Wait() }()
	base := "http://" + r.srv.HTTPAddr()
	get := func(path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "<title>Connect diagnostics</title>") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %d %v\n%.200s", resp.StatusCode, resp.Header, body)
	}
	for _, p := range []string{"/dashboard/app.js", "/dashboard/style.css"} {
		if resp, body := get(p, nil); resp.StatusCode != 200 || len(body) < 100 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}
	resp, body = get("/diagnostics", nil)
	snap, err := diagnostics.Decode([]byte(body))
	if resp.StatusCode != 200 || err != nil || snap.Server.ID != "server-1" {
		t.Fatalf("GET /diagnostics: %d %v %.200s", resp.StatusCode, err, body)
	}
	// Unknown paths keep their JSON 404.
	if resp, body := get("/nope", nil); resp.StatusCode != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /nope: %d %s", resp.StatusCode, body)
	}
	// A page that rebinds its DNS name to 127.0.0.1 sends its own Host.
	if resp, body := get("/diagnostics", map[string]string{"Host": "evil.example:80"}); resp.StatusCode != 403 || !strings.Contains(body, "loopback") {
		t.Errorf("foreign Host: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/", map[string]string{"Host": "localhost"}); resp.StatusCode != 200 {
		t.Errorf("Host localhost: %d", resp.StatusCode)
	}

	// The event stream: the first snapshot at once, then one per sample.
	req, _ := http.NewRequest("GET", base+"/diagnostics/events", nil)
	ctx, cancel := context.WithTimeout(context.Background(), diagGuard)
	defer cancel()
	resp, err = http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	readEvent := func() *diagnostics.Snapshot {
		t.Helper()
		var data string
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			line = strings.TrimRight(line, "\n")
			if line == "" && data != "" {
				s, err := diagnostics.Decode([]byte(data))
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				data = v
			}
		}
	}
	first := readEvent()
	r.srv.sample(time.Now().Add(time.Second))
	second := readEvent()
	if second.Server.TimeUnixMillis <= first.Server.TimeUnixMillis {
		t.Errorf("the second event is not newer: %d then %d", first.Server.TimeUnixMillis, second.Server.TimeUnixMillis)
	}
}

func TestDashboardAccess(t *testing.T) {
	for _, tc := range []struct {
		mode, remote string
		code         int
	}{
		{config.DashboardLoopback, "127.0.0.1:5555", 200},
		{config.DashboardLoopback, "[::1]:5555", 200},
		{config.DashboardLoopback, "192.0.2.7:5555", 403},
		{config.DashboardAny, "192.0.2.7:5555", 200},
	} {
		r := newDiagRig(t)
		r.srv.cfg.Diagnostics.Dashboard = tc.mode
		mux := http.NewServeMux()
		r.srv.registerDashboard(mux)
		req := httptest.NewRequest("GET", "/diagnostics", nil)
		req.RemoteAddr, req.Host = tc.remote, "127.0.0.1:8080"
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		if w.Code != tc.code {
			t.Errorf("dashboard=%s from %s: %d, want %d", tc.mode, tc.remote, w.Code, tc.code)
		}
	}
	// dashboard="off": nothing registered.
	r := newDiagRig(t)
	r.srv.cfg.Diagnostics.Dashboard = config.DashboardOff
	mux := http.NewServeMux()
	r.srv.registerDashboard(mux)
	if _, pattern := mux.Handler(httptest.NewRequest("GET", "/", nil)); pattern != "" {
		t.Errorf("dashboard off registered %q", pattern)
	}
}

// diagSocketPair is a connected pair of unix stream sockets: buffered like
// a connection (a net.Pipe write waits for the reader).
func diagSocketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	return cs[0], cs[1]
}

// addrConn is a bearers.Conn that only has addresses, for snapshots of
// many connections.
type addrConn struct{ net.Conn }

func (addrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (addrConn) Peer() bearers.Peer   { return bearers.Peer{} }

// BenchmarkSnapshot10000 is the sampler's once-a-second walk with 10,000
// registered connections (rates, sorting, the list cut to 100, JSON).
func BenchmarkSnapshot10000(b *testing.B) {
	r := newDiagRig(b)
	for i := range 10000 {
		st := &connStats{}
		st.bytesIn.Store(uint64(i * 100))
		c := &clientConn{s: r.srv, adapter: r.ad, bc: addrConn{}, stats: st, clientID: uuid.New(), name: "bench",
			since: time.Now(), registered: true}
		r.srv.conns[c] = struct{}{}
		r.srv.clients[c.clientID] = c
	}
	b.ReportAllocs()
	now := time.Now()
	for b.Loop() {
		now = now.Add(time.Second)
		r.srv.diag.mu.Lock()
		snap := r.srv.snapshotLocked(now, true, diagListLimit)
		r.srv.diag.mu.Unlock()
		if _, err := json.Marshal(snap); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTopK(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 5, 99, 100, 101, 1000} {
		for _, k := range []int{0, 1, 10, 100, 2000} {
			items := make([]int, n)
			for i := range items {
				items[i] = r.IntN(50) // duplicates too
			}
			want := slices.Clone(items)
			slices.SortFunc(want, func(a, b int) int { return cmp.Compare(b, a) })
			want = want[:min(k, n)]
			got := topK(slices.Clone(items), k, func(a, b int) int { return cmp.Compare(b, a) })
			if !slices.Equal(got, want) {
				t.Fatalf("n=%d k=%d: got %v, want %v", n, k, got, want)
			}
		}
	}
}

// diagGuard bounds every wait of these tests; nothing asserts how long
// anything takes.
const diagGuard = 10 * time.Second
