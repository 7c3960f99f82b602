// Package demo is Connect's built-in demo service, "Demo" (version 1.0): a
// simulated sensor station that shows every part of a service at work.
//
//   - Methods with typed arguments and results: echo, add, summarize (a
//     list argument, a struct result), setThresholds (a list of structs),
//     setRate, setLabel, reset, and sleep, which gives up at the call's
//     deadline, to show deadlines travelling with a call.
//   - Events with typed arguments: tick every 20th sample, thresholdCrossed
//     when a sensor crosses a limit set with setThresholds, rateChanged.
//   - High-rate runtime data: sensors.temperature, sensors.humidity and
//     sensors.pressure (float) and sensors.recent (a list of Sample
//     structs) change at every sample, 20 a second by default (setRate
//     changes it, up to 1000); the station object says what the station
//     does; settings.label is persistent (kept across server restarts);
//     stats.calls counts the method calls.
//
// The service file is [XML] (demo.xml, embedded); docs/SERVICES.md
// describes the format. connectserver serves the service as a plugin
// subprocess through package builtin, with
// <service name="Demo" builtin="demo"/> in its configuration:
//
//	connectclient call Demo.add a=40 b=2
//	connectclient watch Demo sensors.temperature
//	connectclient --timeout 500ms call Demo.sleep millis=5000   # deadline exceeded
//
// # The producer
//
// The sensors are sampled by one goroutine, the producer, which runs while
// at least one session is open: the first session to open starts it
// (station.status becomes "running"), and the last one to close stops it
// and waits for it to return before OnSessionClose returns (station.status
// becomes "idle"). The host closes every session when it disconnects, so
// the producer never outlives its host; without sessions, nobody receives
// the events and the sensors stay at their last values. (The plugin SDK
// has no hook for "a host connected"; sessions are the lifetime it offers.)
package demo

import (
	"context"
	_ "embed"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bearerkit/connect/services/serviceplugin"
)

// XML is the Demo service's service file.
//
//go:embed demo.xml
var XML []byte

// The service's limits and defaults (demo.xml documents them too).
const (
	// DefaultRate is the sampling rate a new service starts with, in
	// samples a second.
	DefaultRate = 20.0
	// MaxRate is the highest rate setRate accepts.
	MaxRate = 1000.0

	tickEvery     = 20                                  // a tick event every tickEvery samples
	recentLen     = 10                                  // samples kept in sensors.recent
	maxThresholds = 16                                  // thresholds setThresholds accepts
	maxLabel      = 64                                  // characters in settings.label
	maxSleepMilli = int64(time.Hour / time.Millisecond) // the longest sleep
)

// The sensors, in the order of the Sample struct, with their resting
// values (the defaults in demo.xml) and how they swing.
var sensors = [...]struct {
	name      string
	rest      float64 // default and centre of the swing
	amplitude float64
	period    float64 // seconds of simulated time per swing
	phase     float64
	noise     float64 // standard deviation of the noise
}{
	{"temperature", 21.5, 3, 60, 0, 0.05},
	{"humidity", 45, 8, 90, 1, 0.2},
	{"pressure", 1013.25, 2, 300, 2, 0.05},
}

func sensorIndex(name string) int {
	for i, s := range sensors {
		if s.name == name {
			return i
		}
	}
	return -1
}

func sensorNames() string {
	names := make([]string, len(sensors))
	for i, s := range sensors {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// station is one Demo service's state and its producer.
type station struct {
	svc  *serviceplugin.Service
	wake chan struct{} // capacity 1: the rate changed

	// life serialises starting and stopping the producer. It is taken
	// before mu; the producer never takes it.
	life   sync.Mutex
	cancel context.CancelFunc // the running producer's, nil when none runs
	done   chan struct{}      // closed when the running producer returned

	// mu guards the simulation, and is held across the Sets that publish
	// it, so that the values reach the host in the order they were made.
	mu         sync.Mutex
	rng        *rand.Rand
	rate       float64
	calls      int64
	sessions   int
	samples    int64
	elapsed    float64 // simulated seconds since the start or the last reset
	recent     []any   // Sample values, oldest first
	thresholds []threshold
}

type threshold struct {
	sensor int
	limit  float64
	above  bool
}

// event is an event to emit once mu is released.
type event struct {
	name string
	args map[string]any
}

// New returns a new, independent Demo service, ready for
// serviceplugin.Serve or serviceplugin.NewTestHost. No goroutine runs
// until a session opens (see the package documentation).
func New() *serviceplugin.Service {
	st := &station{
		wake: make(chan struct{}, 1),
		rng:  rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		rate: DefaultRate,
	}
	methods := map[string]serviceplugin.MethodFunc{
		"echo":          st.echo,
		"add":           st.add,
		"summarize":     st.summarize,
		"setThresholds": st.setThresholds,
		"setRate":       st.setRate,
		"setLabel":      st.setLabel,
		"reset":         st.reset,
		"sleep":         st.sleep,
	}
	for name, f := range methods {
		methods[name] = st.counted(f)
	}
	st.svc = &serviceplugin.Service{
		XML:            XML,
		Methods:        methods,
		OnSessionOpen:  st.sessionOpened,
		OnSessionClose: st.sessionClosed,
	}
	return st.svc
}

// set publishes v at path; mu must be held. The paths and types are this
// file's own, so a failure is a bug, logged rather than returned.
func (st *station) set(path string, v any) {
	if err := st.svc.Set(path, v); err != nil {
		st.svc.Logger.Error("demo: publishing runtime data failed", "path", path, "error", err)
	}
}

// emit sends an event. No host (a call through the unary Invoke while no
// stream is connected) is not the caller's problem: the state changed all
// the same.
func (st *station) emit(ctx context.Context, e event) {
	err := st.svc.Emit(ctx, e.name, e.args)
	if err != nil && ctx.Err() == nil && !errors.Is(err, serviceplugin.ErrNotConnected) {
		st.svc.Logger.Error("demo: emitting an event failed", "event", e.name, "error", err)
	}
}

// counted wraps a method so that stats.calls counts its calls.
func (st *station) counted(f serviceplugin.MethodFunc) serviceplugin.MethodFunc {
	return func(ctx context.Context, call *serviceplugin.Call) (any, error) {
		st.mu.Lock()
		st.calls++
		st.set("stats.calls", st.calls)
		st.mu.Unlock()
		return f(ctx, call)
	}
}

func invalid(format string, args ...any) error {
	return serviceplugin.Errorf(serviceplugin.CodeInvalidArgument, format, args...)
}

func (st *station) echo(_ context.Context, call *serviceplugin.Call) (any, error) {
	return call.String("text"), nil
}

func (st *station) add(_ context.Context, call *serviceplugin.Call) (any, error) {
	a, b := call.Int("a"), call.Int("b")
	sum := a + b
	if (sum > a) != (b > 0) {
		return nil, invalid("%d + %d overflows a 64-bit int", a, b)
	}
	return sum, nil
}

func (st *station) summarize(_ context.Context, call *serviceplugin.Call) (any, error) {
	values := call.List("values")
	var lo, hi, mean float64
	for i, v := range values {
		f := v.(float64)
		if i == 0 || f < lo {
			lo = f
		}
		if i == 0 || f > hi {
			hi = f
		}
		mean += (f - mean) / float64(i+1) // a running mean cannot overflow
	}
	return map[string]any{"count": len(values), "min": lo, "max": hi, "mean": mean}, nil
}

func (st *station) setThresholds(_ context.Context, call *serviceplugin.Call) (any, error) {
	list := call.List("thresholds")
	if len(list) > maxThresholds {
		return nil, invalid("%d thresholds, at most %d", len(list), maxThresholds)
	}
	ths := make([]threshold, len(list))
	for i, v := range list {
		m := v.(map[string]any)
		name := m["sensor"].(string)
		s := sensorIndex(name)
		if s < 0 {
			return nil, invalid("thresholds[%d].sensor: no sensor %q (sensors: %s)", i, name, sensorNames())
		}
		ths[i] = threshold{sensor: s, limit: m["limit"].(float64)}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.thresholds = ths
	st.set("station.thresholds", list)
	return len(ths), nil
}

func (st *station) setRate(ctx context.Context, call *serviceplugin.Call) (any, error) {
	hz := call.Float("hz")
	if !(hz > 0 && hz <= MaxRate) {
		return nil, invalid("rate %g Hz is out of range: more than 0, at most %g", hz, float64(MaxRate))
	}
	st.mu.Lock()
	st.rate = hz
	st.set("station.rate", hz)
	st.mu.Unlock()
	select { // the producer, if one runs, picks the new rate up at once
	case st.wake <- struct{}{}:
	default:
	}
	st.emit(ctx, event{"rateChanged", map[string]any{"hz": hz}})
	return nil, nil
}

func (st *station) setLabel(_ context.Context, call *serviceplugin.Call) (any, error) {
	label := call.String("label")
	switch n := utf8.RuneCountInString(label); {
	case n == 0 || strings.TrimSpace(label) == "":
		return nil, invalid("the label is empty")
	case n > maxLabel:
		return nil, invalid("the label has %d characters, at most %d", n, maxLabel)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.set("settings.label", label)
	return nil, nil
}

func (st *station) reset(context.Context, *serviceplugin.Call) (any, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.samples, st.elapsed, st.recent, st.thresholds = 0, 0, nil, nil
	for _, s := range sensors {
		st.set("sensors."+s.name, s.rest)
	}
	st.set("sensors.recent", []any{})
	st.set("station.samples", int64(0))
	st.set("station.thresholds", []any{})
	return nil, nil
}

func (st *station) sleep(ctx context.Context, call *serviceplugin.Call) (any, error) {
	ms := call.Int("millis")
	if ms < 0 || ms > maxSleepMilli {
		return nil, invalid("millis %d is out of range: 0 to %d (an hour)", ms, maxSleepMilli)
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return ms, nil
	case <-ctx.Done():
		return nil, ctx.Err() // the SDK answers CodeDeadlineExceeded or CodeCanceled
	}
}

// sessionOpened counts the session and starts the producer for the first.
func (st *station) sessionOpened(context.Context, *serviceplugin.Session) error {
	st.life.Lock()
	defer st.life.Unlock()
	st.mu.Lock()
	st.sessions++
	st.set("station.sessions", int64(st.sessions))
	first := st.sessions == 1
	if first {
		st.set("station.status", "running")
	}
	st.mu.Unlock()
	if first {
		ctx, cancel := context.WithCancel(context.Background())
		st.cancel, st.done = cancel, make(chan struct{})
		go st.produce(ctx, st.done)
	}
	return nil
}

// sessionClosed counts the session out; the last one stops the producer
// and waits for it.
func (st *station) sessionClosed(_ context.Context, _ *serviceplugin.Session, _ string) {
	st.life.Lock()
	defer st.life.Unlock()
	st.mu.Lock()
	st.sessions--
	st.set("station.sessions", int64(st.sessions))
	last := st.sessions == 0
	st.mu.Unlock()
	if !last {
		return
	}
	st.cancel()
	<-st.done
	st.cancel, st.done = nil, nil
	st.mu.Lock()
	st.set("station.status", "idle")
	st.mu.Unlock()
}

// produce samples the sensors at the current rate until ctx ends.
func (st *station) produce(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(st.period())
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.wake:
			ticker.Reset(st.period())
			continue
		case <-ticker.C:
		}
		for _, e := range st.sample() {
			// Emit waits while the host is slower than the events; ctx
			// ends that wait when the producer stops.
			st.emit(ctx, e)
		}
	}
}

func (st *station) period() time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	return time.Duration(float64(time.Second) / st.rate)
}

// sample takes one sample: it advances the simulation, publishes it and
// returns the events it raises, for the caller to emit after the updates
// (which therefore reach the host before them).
func (st *station) sample() []event {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.samples++
	st.elapsed += 1 / st.rate
	var values [len(sensors)]float64
	for i, s := range sensors {
		v := s.rest + s.amplitude*math.Sin(2*math.Pi*st.elapsed/s.period+s.phase) + s.noise*st.rng.NormFloat64()
		values[i] = math.Round(v*100) / 100
		st.set("sensors."+s.name, values[i])
	}
	smp := map[string]any{"seq": st.samples}
	for i, s := range sensors {
		smp[s.name] = values[i]
	}
	if len(st.recent) == recentLen {
		st.recent = append(st.recent[:0], st.recent[1:]...)
	}
	st.recent = append(st.recent, smp)
	st.set("sensors.recent", st.recent)
	st.set("station.samples", st.samples)

	var events []event
	for i := range st.thresholds {
		th := &st.thresholds[i]
		v := values[th.sensor]
		if above := v > th.limit; above != th.above {
			th.above = above
			events = append(events, event{"thresholdCrossed", map[string]any{
				"sensor": sensors[th.sensor].name, "value": v, "limit": th.limit, "above": above}})
		}
	}
	if st.samples%tickEvery == 0 {
		events = append(events, event{"tick", map[string]any{"n": st.samples}})
	}
	return events
}
