package core

// Diagnostics (docs/DIAGNOSTICS.md): the measurements behind the
// Diagnostics service, the dashboard, GET /diagnostics and /metrics.
//
// What is counted on the data path is cheap and conn-local: per connection
// atomic byte and message counters (countingConn, countingWire), the
// keepalive round trips the connection's reader records from Pongs, per
// session message counters, and per service a lock-free latency histogram
// (internal/histogram). Everything else is read when a snapshot is taken:
// once a second by the sampler, which also computes the rates and the
// latency percentiles of the last interval, and on demand by /metrics.
// With <diagnostics enabled="false"/> none of the per-connection,
// per-session and latency measurements run, the server sends no keepalive
// pings of its own, and no sampler runs; /metrics keeps its counters.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bearerkit/connect/internal/histogram"
	"github.com/bearerkit/connect/internal/version"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/diagnostics"
	"github.com/bearerkit/connect/wire"
)

const (
	// diagInterval is how often the sampler takes a snapshot.
	diagInterval = time.Second
	// diagListLimit bounds the client and session lists of a snapshot
	// (the busiest first), so that a snapshot fits in one message, even
	// over a datagram bearer, whatever the number of clients.
	diagListLimit = 100
	// diagPublishTimeout bounds one publish to the Diagnostics service.
	diagPublishTimeout = 5 * time.Second
	// rssMaxAge is how long a process's resident memory is cached.
	rssMaxAge = time.Second
	// maxRTT is the longest round trip believed; a Pong claiming more
	// (a clock jump, a client echoing nonsense) is ignored.
	maxRTT = time.Minute
)

// diagState is the server's diagnostics: the switches, the sampler's
// state, the latest snapshot.
type diagState struct {
	on  bool
	key string         // the Diagnostics service's publishing key
	svc *hostedService // the built-in Diagnostics service, if configured

	// Messages of connections that have closed (the live ones are summed
	// from their connStats).
	retiredIn, retiredOut atomic.Uint64

	rss rssCache

	// mu guards every rates field (connections, adapters, services), the
	// latency windows of the services, and totals. The sampler holds it
	// while it updates them and takes a snapshot; /metrics while it takes
	// one.
	mu     sync.Mutex
	totals rates

	lmu    sync.Mutex
	latest []byte        // JSON of the last snapshot; nil before the first
	tick   chan struct{} // closed when the next snapshot is taken
	pub    chan []byte   // the publisher's mailbox: the newest snapshot only
	warn   rateLimit
}

// connStats are one connection's measurements. The counters are written
// on the data path; the rtt fields by the connection's reader only.
type connStats struct {
	bytesIn, bytesOut atomic.Uint64
	msgsIn, msgsOut   atomic.Uint64

	rttLast, rttMin, rttMax, rttSum, rttN atomic.Int64 // nanoseconds

	pingSeq atomic.Uint64 // the last keepalive ping id sent
	rates   rates         // under diagState.mu
}

// rates turns counters into per-second rates between two samples.
type rates struct {
	at   time.Time
	prev []uint64
	per  []float64
}

// update takes a sample of counters cur; the first one is measured from
// start (when the counted object began).
func (r *rates) update(now, start time.Time, cur ...uint64) {
	if len(r.prev) != len(cur) {
		r.prev, r.per = make([]uint64, len(cur)), make([]float64, len(cur))
		if r.at.IsZero() {
			r.at = start
		}
	}
	dt := now.Sub(r.at).Seconds()
	if dt <= 0 {
		return
	}
	for i, v := range cur {
		d := 0.0
		if v > r.prev[i] {
			d = float64(v - r.prev[i])
		}
		r.per[i], r.prev[i] = d/dt, v
	}
	r.at = now
}

// get returns rate i of the last update, 0 before one.
func (r *rates) get(i int) float64 {
	if i < len(r.per) {
		return r.per[i]
	}
	return 0
}

// latencyWindow is a service's call latency over the last interval.
type latencyWindow struct {
	prev     histogram.Counts
	p50, p99 time.Duration
	n        uint64
}

func (w *latencyWindow) update(h *histogram.Histogram) {
	var cur histogram.Counts
	h.Snapshot(&cur)
	d := cur.Sub(&w.prev)
	w.prev = cur
	w.n = d.Count()
	w.p50, w.p99 = d.Quantile(0.5), d.Quantile(0.99)
}

func (d *diagState) init(on bool) {
	d.on, d.tick, d.pub = on, make(chan struct{}), make(chan []byte, 1)
}

// newDiagKey returns a random publishing key.
func newDiagKey() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// pingClock is the clock of the server's keepalive pings: Unix nanoseconds
// that advance with the monotonic clock, so that a wall-clock jump does not
// bend a round trip.
func (s *Server) pingClock() int64 {
	return s.epoch.UnixNano() + int64(time.Since(s.epoch))
}

// startDiagnostics starts the sampler and the publisher; they stop with
// s.ctx.
func (s *Server) startDiagnostics() {
	if !s.diag.on {
		return
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(diagInterval)
		defer t.Stop()
		s.sample(time.Now())
		for {
			select {
			case <-s.ctx.Done():
				return
			case now := <-t.C:
				s.sample(now)
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-s.ctx.Done():
				return
			case doc := <-s.diag.pub:
				s.publish(doc)
			}
		}
	}()
}

// sample updates the rates, takes a snapshot, and hands it to the waiting
// event streams and to the publisher.
func (s *Server) sample(now time.Time) {
	s.diag.mu.Lock()
	snap := s.snapshotLocked(now, true, diagListLimit)
	s.diag.mu.Unlock()
	doc, err := json.Marshal(snap)
	if err != nil {
		s.log.Error("internal: the diagnostics snapshot does not encode", "error", err)
		return
	}
	s.diag.lmu.Lock()
	s.diag.latest = doc
	close(s.diag.tick)
	s.diag.tick = make(chan struct{})
	s.diag.lmu.Unlock()
	if s.diag.svc == nil {
		return
	}
	for { // keep only the newest snapshot in the mailbox
		select {
		case s.diag.pub <- doc:
			return
		default:
		}
		select {
		case <-s.diag.pub:
		default:
		}
	}
}

// latestSnapshot returns the JSON of the last snapshot (nil before the
// first) and a channel closed when the next one is taken.
func (s *Server) latestSnapshot() ([]byte, <-chan struct{}) {
	s.diag.lmu.Lock()
	defer s.diag.lmu.Unlock()
	return s.diag.latest, s.diag.tick
}

// Diagnostics returns a snapshot of every figure the server measures, the
// client and session lists cut to the busiest diagListLimit. Rates and
// latency percentiles are those of the sampler's last interval (0 when
// diagnostics are off).
func (s *Server) Diagnostics() *diagnostics.Snapshot {
	s.diag.mu.Lock()
	defer s.diag.mu.Unlock()
	return s.snapshotLocked(time.Now(), false, diagListLimit)
}

// publish hands a snapshot to the Diagnostics service.
func (s *Server) publish(doc []byte) {
	hs := s.diag.svc
	p, desc, _ := hs.current()
	if p == nil {
		return // starting, or failed: the next snapshot goes once it runs
	}
	m := desc.Method("publish")
	if m == nil {
		return
	}
	args, err := services.AppendArgs(nil, m.Args, map[string]any{"key": s.diag.key, "snapshot": string(doc)})
	if err == nil {
		ctx, cancel := context.WithTimeout(s.ctx, diagPublishTimeout)
		_, err = p.Call(ctx, "", "publish", args)
		cancel()
	}
	if err != nil && s.ctx.Err() == nil {
		if n, ok := s.diag.warn.allow(); ok {
			s.log.Debug("publishing diagnostics to the Diagnostics service failed", "error", err, "suppressed", n)
		}
	}
}

// snapshotLocked takes a snapshot; the caller holds s.diag.mu. With
// update, the rates and latency windows move to now first (the sampler);
// without, they stay those of the last sample. limit bounds the client and
// session lists.
func (s *Server) snapshotLocked(now time.Time, update bool, limit int) *diagnostics.Snapshot {
	snap := &diagnostics.Snapshot{}
	started := s.started
	if started.IsZero() {
		started = now
	}
	pid := os.Getpid()
	snap.Server = diagnostics.Server{
		ID: s.id, Version: version.String("connectserver"), TimeUnixMillis: now.UnixMilli(),
		StartedUnixMillis: started.UnixMilli(), UptimeSeconds: now.Sub(started).Seconds(),
		PID: int64(pid), RSSBytes: s.diag.rss.get(pid, now), Goroutines: int64(runtime.NumGoroutine()),
		ListLimit: int64(limit),
	}
	if s.diag.on {
		snap.Server.PingIntervalMillis = s.opts.PingInterval.Milliseconds()
	}

	// Clients.
	s.mu.Lock()
	conns := make([]*clientConn, 0, len(s.clients))
	for _, c := range s.clients {
		conns = append(conns, c)
	}
	connecting := len(s.conns) - len(conns)
	// Read with the list, so that a connection is counted either live or
	// retired (untrack retires under s.mu).
	msgsIn, msgsOut := s.diag.retiredIn.Load(), s.diag.retiredOut.Load()
	s.mu.Unlock()
	snap.Server.Clients, snap.Server.Connecting = int64(len(conns)), int64(max(connecting, 0))

	// Sessions, and how many each connection has. Only the listed ones
	// are described in full: the walk over all of them stays cheap.
	type rankedSession struct {
		s     *clientSession
		msgs  uint64
		since time.Time
	}
	perConn := map[*clientConn]int64{}
	perService := map[*hostedService]int64{}
	var sessions []rankedSession
	all := s.allServices() // local and remote
	for _, hs := range all {
		hs.sess.mu.RLock()
		for _, cs := range hs.sess.m {
			perConn[cs.owner().conn()]++
			perService[hs]++
			sessions = append(sessions, rankedSession{cs, cs.msgsIn.Load() + cs.msgsOut.Load(), cs.since})
		}
		hs.sess.mu.RUnlock()
	}
	snap.Server.Sessions = int64(len(sessions))
	sessions = topK(sessions, limit, func(a, b rankedSession) int {
		if a.msgs != b.msgs {
			return cmp.Compare(b.msgs, a.msgs) // the busiest first
		}
		if c := a.since.Compare(b.since); c != 0 {
			return c
		}
		return strings.Compare(a.s.id, b.s.id)
	})
	snap.Sessions = make([]diagnostics.Session, 0, len(sessions))
	for _, r := range sessions {
		snap.Sessions = append(snap.Sessions, r.s.diagnostics())
	}

	// Clients: rates of all, ranked by traffic; the listed ones in full.
	type rankedConn struct {
		c       *clientConn
		traffic float64
		total   uint64
	}
	perAdapter := map[*adapter]int64{}
	ranked := make([]rankedConn, 0, len(conns))
	for _, c := range conns {
		perAdapter[c.adapter]++
		r := rankedConn{c: c}
		if st := c.stats; st != nil {
			bi, bo, mi, mo := st.bytesIn.Load(), st.bytesOut.Load(), st.msgsIn.Load(), st.msgsOut.Load()
			msgsIn, msgsOut = msgsIn+mi, msgsOut+mo
			if update {
				st.rates.update(now, c.since, bi, bo, mi, mo)
			}
			r.traffic, r.total = st.rates.get(0)+st.rates.get(1), bi+bo
		}
		ranked = append(ranked, r)
	}
	ranked = topK(ranked, limit, func(a, b rankedConn) int {
		if a.traffic != b.traffic {
			return cmp.Compare(b.traffic, a.traffic)
		}
		if a.total != b.total {
			return cmp.Compare(b.total, a.total)
		}
		return bytes.Compare(a.c.clientID[:], b.c.clientID[:]) // the order of the ids' text
	})
	snap.Clients = make([]diagnostics.Client, 0, len(ranked))
	for _, r := range ranked {
		c := r.c
		info := c.info()
		dc := diagnostics.Client{ID: info.ID, Name: info.Name, Bearer: info.Adapter, BearerType: c.adapter.cfg.Type,
			Remote: info.Remote, Auth: info.Auth, State: "connected", ConnectedSinceUnixMillis: info.ConnectedAt.UnixMilli(),
			Sessions: perConn[c]}
		if st := c.stats; st != nil {
			dc.BytesIn, dc.BytesOut = int64(st.bytesIn.Load()), int64(st.bytesOut.Load())
			dc.MessagesIn, dc.MessagesOut = int64(st.msgsIn.Load()), int64(st.msgsOut.Load())
			dc.BytesInPerSec, dc.BytesOutPerSec = st.rates.get(0), st.rates.get(1)
			dc.MessagesInPerSec, dc.MessagesOutPerSec = st.rates.get(2), st.rates.get(3)
			if n := st.rttN.Load(); n > 0 {
				dc.RTTSamples = n
				dc.RTTLastMicros = micros(time.Duration(st.rttLast.Load()))
				dc.RTTMinMicros = micros(time.Duration(st.rttMin.Load()))
				dc.RTTMaxMicros = micros(time.Duration(st.rttMax.Load()))
				dc.RTTAvgMicros = micros(time.Duration(st.rttSum.Load() / n))
			}
		}
		if rs := c.stream.Load(); rs != nil {
			// A resume stream's figures: every attach after the first is
			// a resume after a link break.
			ss := rs.Stats()
			dc.Resumes = int64(max(ss.Attaches-1, 0))
			dc.LinkBreaks = dc.Resumes
			dc.ReplayBufferedBytes = int64(ss.Buffered)
			dc.ReplayBufferedMessages = int64(ss.Sent - ss.Acked)
		}
		snap.Clients = append(snap.Clients, dc)
	}

	// Services, and their plugins.
	var calls, callErrors uint64
	sort.Slice(all, func(i, j int) bool { return all[i].cfg.Name < all[j].cfg.Name })
	var servicePlugins []diagnostics.Plugin
	for _, hs := range all {
		name := hs.cfg.Name
		p, desc, failed := hs.current()
		ds := diagnostics.Service{Name: name, State: "starting", Sessions: perService[hs],
			Calls: int64(hs.calls.Load()), Errors: int64(hs.errors.Load()), Events: int64(hs.events.Load())}
		calls, callErrors = calls+hs.calls.Load(), callErrors+hs.errors.Load()
		pl := diagnostics.Plugin{Kind: "service", Name: name, State: "starting"}
		if failed != "" {
			ds.State, pl.State, pl.LastError = "failed", "failed", failed
		}
		if p != nil {
			st := p.Status()
			ds.Version, ds.State = desc.Version, string(st.State)
			pl = pluginOf("service", name, string(st.State), st.PID, st.Restarts, st.Since, st.LastError)
			pl.RSSBytes = s.diag.rss.get(st.PID, now)
		}
		if update {
			hs.rates.update(now, started, hs.calls.Load())
			if s.diag.on {
				hs.latency.update(&hs.lat)
			}
		}
		ds.CallsPerSec = hs.rates.get(0)
		ds.LatencyP50Micros, ds.LatencyP99Micros = micros(hs.latency.p50), micros(hs.latency.p99)
		ds.LatencyCalls = int64(hs.latency.n)
		snap.Services = append(snap.Services, ds)
		if hs.remote == nil { // a remote service's plugin runs under its runner
			servicePlugins = append(servicePlugins, pl)
		}
	}

	// Bearers, and their plugins.
	var bytesIn, bytesOut uint64
	for _, a := range s.adapters {
		st := a.sup.Status()
		bi, bo := a.bytesIn.Load(), a.bytesOut.Load()
		bytesIn, bytesOut = bytesIn+bi, bytesOut+bo
		if update {
			a.rates.update(now, started, bi, bo)
		}
		snap.Bearers = append(snap.Bearers, diagnostics.Bearer{Name: a.cfg.Name, Type: a.cfg.Type, Endpoint: st.Endpoint,
			State: string(st.State), Connections: int64(a.accepted.Load()), Clients: perAdapter[a],
			BytesIn: int64(bi), BytesOut: int64(bo), BytesInPerSec: a.rates.get(0), BytesOutPerSec: a.rates.get(1),
			AcceptErrors: int64(a.acceptErrors.Load())})
		pl := pluginOf("bearer", a.cfg.Name, string(st.State), st.PID, st.Restarts, st.Since, st.LastError)
		pl.RSSBytes = s.diag.rss.get(st.PID, now)
		snap.Plugins = append(snap.Plugins, pl)
	}
	snap.Plugins = append(snap.Plugins, servicePlugins...)

	// Totals.
	if update {
		s.diag.totals.update(now, started, bytesIn, bytesOut, msgsIn, msgsOut, calls)
	}
	t := &s.diag.totals
	snap.Totals = diagnostics.Totals{
		Connections: int64(s.metrics.connections.Load()), Registrations: int64(s.metrics.registrations.Load()),
		RegistrationFailures: int64(s.metrics.registrationFailures.Load()), PingsAnswered: int64(s.metrics.pings.Load()),
		BytesIn: int64(bytesIn), BytesOut: int64(bytesOut), BytesInPerSec: t.get(0), BytesOutPerSec: t.get(1),
		MessagesIn: int64(msgsIn), MessagesOut: int64(msgsOut), MessagesInPerSec: t.get(2), MessagesOutPerSec: t.get(3),
		Calls: int64(calls), CallsPerSec: t.get(4), CallErrors: int64(callErrors),
	}
	snap.Normalize()
	return snap
}

// topK returns the first k of items in the order of cmp (negative: a
// first), sorted; it reorders items. It costs O(n log k), not a full sort.
func topK[T any](items []T, k int, cmp func(a, b T) int) []T {
	if k <= 0 {
		return items[:0]
	}
	if len(items) <= k {
		slices.SortFunc(items, cmp)
		return items
	}
	// items[:k] is a heap whose root is the last-ranked of the best k so far.
	h := items[:k]
	worse := func(i, j int) bool { return cmp(h[i], h[j]) > 0 }
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= k {
				return
			}
			m := l
			if r := l + 1; r < k && worse(r, l) {
				m = r
			}
			if !worse(m, i) {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for _, it := range items[k:] {
		if cmp(it, h[0]) < 0 {
			h[0] = it
			down(0)
		}
	}
	slices.SortFunc(h, cmp)
	return h
}

func pluginOf(kind, name, state string, pid, restarts int, since time.Time, lastError string) diagnostics.Plugin {
	p := diagnostics.Plugin{Kind: kind, Name: name, State: state, PID: int64(pid), Restarts: int64(restarts), LastError: lastError}
	if !since.IsZero() {
		p.SinceUnixMillis = since.UnixMilli()
	}
	return p
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// diagnostics describes the session for a snapshot.
func (s *clientSession) diagnostics() diagnostics.Session {
	info := s.info()
	in, out := s.msgsIn.Load(), s.msgsOut.Load()
	return diagnostics.Session{ID: info.ID, Service: info.Service, ClientID: info.ClientID,
		SinceUnixMillis: info.Since.UnixMilli(), Calls: int64(info.Calls),
		Subscriptions: int64(info.Subscriptions), Watches: int64(info.Watches),
		MessagesIn: int64(in), MessagesOut: int64(out),
		// Every session uses the server link until routing resolves
		// services' <routing> (serverRouting).
		Links: []diagnostics.Link{{Name: "server", Type: "server", MessagesIn: int64(in), MessagesOut: int64(out)}}}
}

// ---- keepalive pings and round trips ----

// pinger sends the server's keepalive pings on one registered connection,
// every ping interval, from a timer (no goroutine while it waits). stop
// ends it and waits for a ping being written.
type pinger struct {
	c        *clientConn
	interval time.Duration
	ctx      context.Context // ends with stop: a round trip on a stream waits within it
	cancel   context.CancelFunc

	mu      sync.Mutex
	stopped bool
	t       *time.Timer
	running sync.WaitGroup
}

// startPings starts the keepalive pings: the first at once, so that a new
// client's round trip is known within a moment.
func (c *clientConn) startPings() {
	if c.stats == nil {
		return
	}
	p := &pinger{c: c, interval: c.s.opts.PingInterval}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.Lock()
	p.t = time.AfterFunc(0, p.fire)
	p.mu.Unlock()
	c.pinger = p
}

func (p *pinger) fire() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.running.Add(1)
	p.mu.Unlock()
	defer p.running.Done()
	if rs := p.c.stream.Load(); rs != nil {
		// The connection carries a resume stream, which owns its frames:
		// measure the round trip with the stream's own Ping (ahead of
		// queued messages), not with a wire Ping of ours.
		ctx, cancel := context.WithTimeout(p.ctx, p.interval)
		rtt, err := rs.Ping(ctx)
		cancel()
		if err == nil {
			p.c.recordRTT(int64(rtt))
		}
	} else {
		st := p.c.stats
		id := st.pingSeq.Add(1)
		if err := p.c.wc.WriteMessage(&wire.Ping{ID: id, SentUnixNano: p.c.s.pingClock()}); err != nil {
			return // the connection is ending; its reader sees it
		}
	}
	p.mu.Lock()
	if !p.stopped {
		p.t.Reset(p.interval)
	}
	p.mu.Unlock()
}

// stopPings stops the pings; call it once the connection is closed, so
// that a ping blocked in a write has returned too.
func (c *clientConn) stopPings() {
	p := c.pinger
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stopped = true
	p.t.Stop()
	p.mu.Unlock()
	p.cancel()
	p.running.Wait()
}

// onPong records the round trip of one of our pings. It runs on the
// connection's reader.
func (c *clientConn) onPong(m *wire.Pong) {
	st := c.stats
	if st == nil || m.ID == 0 || m.ID > st.pingSeq.Load() {
		return // not a ping of ours
	}
	c.recordRTT(c.s.pingClock() - m.SentUnixNano)
}

// recordRTT adds one round trip (nanoseconds) to the connection's figures.
func (c *clientConn) recordRTT(rtt int64) {
	st := c.stats
	if st == nil || rtt < 0 || rtt > int64(maxRTT) {
		return
	}
	st.rttLast.Store(rtt)
	n := st.rttN.Add(1)
	st.rttSum.Add(rtt)
	if n == 1 || rtt < st.rttMin.Load() {
		st.rttMin.Store(rtt)
	}
	if rtt > st.rttMax.Load() {
		st.rttMax.Store(rtt)
	}
}

// retire adds a closed connection's message counts to the totals; the
// caller holds s.mu and removes the connection from s.conns.
func (s *Server) retire(st *connStats) {
	if st == nil {
		return
	}
	s.diag.retiredIn.Add(st.msgsIn.Load())
	s.diag.retiredOut.Add(st.msgsOut.Load())
}

// countingWire counts a connection's protocol messages.
type countingWire struct {
	wire.Conn
	st *connStats
}

func (w countingWire) ReadMessage() (wire.Message, error) {
	m, err := w.Conn.ReadMessage()
	if err == nil {
		w.st.msgsIn.Add(1)
	}
	return m, err
}

func (w countingWire) WriteMessage(m wire.Message) error {
	err := w.Conn.WriteMessage(m)
	if err == nil {
		w.st.msgsOut.Add(1)
	}
	return err
}

func (w countingWire) ReadFrame() (wire.Frame, error) {
	f, err := w.Conn.ReadFrame()
	if err == nil {
		w.st.msgsIn.Add(1)
	}
	return f, err
}

func (w countingWire) WriteFrame(f wire.Frame) error {
	err := w.Conn.WriteFrame(f)
	if err == nil {
		w.st.msgsOut.Add(1)
	}
	return err
}

// ---- resident memory ----

// rssCache reads processes' resident memory from /proc, at most once per
// rssMaxAge per process.
type rssCache struct {
	mu sync.Mutex
	m  map[int]rssEntry
}

type rssEntry struct {
	at    time.Time
	bytes int64
}

// get returns pid's resident memory in bytes, 0 when unknown (pid 0, a
// process that is gone, a system without /proc).
func (r *rssCache) get(pid int, now time.Time) int64 {
	if pid <= 0 {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.m[pid]; ok && now.Sub(e.at) < rssMaxAge && now.Sub(e.at) >= 0 {
		return e.bytes
	}
	if r.m == nil {
		r.m = map[int]rssEntry{}
	}
	for p, e := range r.m { // forget processes not asked about lately
		if now.Sub(e.at) > 10*rssMaxAge {
			delete(r.m, p)
		}
	}
	b := readRSS(pid)
	r.m[pid] = rssEntry{at: now, bytes: b}
	return b
}

// readRSS reads VmRSS from /proc/PID/status.
func readRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	return parseVmRSS(f)
}

// parseVmRSS finds "VmRSS:   1234 kB" in a /proc status file.
func parseVmRSS(f io.Reader) int64 {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			return 0
		}
		n, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		mult := int64(1024)
		if len(fields) > 1 && !bytes.EqualFold(fields[1], []byte("kB")) {
			mult = 1
		}
		return n * mult
	}
	return 0
}
