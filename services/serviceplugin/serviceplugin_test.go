package serviceplugin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

const playerXML = `<service name="test.player" version="2.1">
  <struct name="Track">
    <field name="title" type="string"/>
    <field name="seconds" type="float"/>
  </struct>
  <method name="play" returns="bool">
    <arg name="track" type="Track"/>
    <arg name="position" type="float"/>
  </method>
  <method name="enqueue" returns="int"><arg name="tracks" type="Track" repeated="true"/></method>
  <method name="hold" description="Blocks until its context ends."/>
  <method name="wrongResult" returns="int"/>
  <method name="noResult"/>
  <method name="boom"/>
  <method name="session" returns="string"/>
  <method name="big" returns="binary"><arg name="n" type="int"/></method>
  <event name="trackChanged"><arg name="track" type="Track"/></event>
  <event name="note"><arg name="text" type="string"/></event>
  <data>
    <object name="player">
      <value name="volume" type="float" default="0.5"/>
      <value name="current" type="Track"/>
      <list name="queue" type="Track"/>
    </object>
    <value name="ticks" type="int"/>
  </data>
</service>`

// player is a small service; holding lets a test see that hold runs.
type player struct {
	svc     *serviceplugin.Service
	holding chan string // hold's session id when it starts
	mu      sync.Mutex
	opened  []string
	closed  []string
	gate    chan struct{} // OnSessionOpen waits on it for "slow" sessions
	entered chan struct{} // OnSessionOpen signals it is waiting
}

func newPlayer() *player {
	p := &player{holding: make(chan string, 16), gate: make(chan struct{}), entered: make(chan struct{}, 1)}
	p.svc = &serviceplugin.Service{
		XML:    []byte(playerXML),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Methods: map[string]serviceplugin.MethodFunc{
			"play": func(ctx context.Context, c *serviceplugin.Call) (any, error) {
				track := c.Struct("track")
				if err := c.Service.Set("player.current", track); err != nil {
					return nil, err
				}
				if err := c.Service.Emit(ctx, "trackChanged", map[string]any{"track": track}); err != nil {
					return nil, err
				}
				return c.Float("position") < track["seconds"].(float64), nil
			},
			"enqueue": func(ctx context.Context, c *serviceplugin.Call) (any, error) {
				q, err := c.Service.Get("player.queue")
				if err != nil {
					return nil, err
				}
				q = append(q.([]any), c.List("tracks")...)
				if err := c.Service.Set("player.queue", q); err != nil {
					return nil, err
				}
				return len(q.([]any)), nil
			},
			"hold": func(ctx context.Context, c *serviceplugin.Call) (any, error) {
				id := ""
				if c.Session != nil {
					id = c.Session.ID
				}
				p.holding <- id
				<-ctx.Done()
				return nil, fmt.Errorf("held until: %w", context.Cause(ctx))
			},
			"wrongResult": func(context.Context, *serviceplugin.Call) (any, error) { return "not an int", nil },
			"noResult":    func(context.Context, *serviceplugin.Call) (any, error) { return 42, nil },
			"boom": func(_ context.Context, c *serviceplugin.Call) (any, error) {
				return c.Int("nosuchargument"), nil // a bug: panics
			},
			"big": func(_ context.Context, c *serviceplugin.Call) (any, error) {
				return make([]byte, c.Int("n")), nil
			},
			"session": func(_ context.Context, c *serviceplugin.Call) (any, error) {
				if c.Session == nil {
					return "", nil
				}
				return c.Session.ID + "/" + c.Session.ClientID, nil
			},
		},
		OnSessionOpen: func(ctx context.Context, s *serviceplugin.Session) error {
			switch {
			case s.ID == "refused":
				return serviceplugin.Errorf(serviceplugin.CodeApplication, "no sessions called %q here", s.ID)
			case s.ID == "panics":
				panic("open hook panics")
			case strings.HasPrefix(s.ID, "slow"):
				p.entered <- struct{}{}
				<-p.gate
			}
			p.mu.Lock()
			p.opened = append(p.opened, s.ID)
			p.mu.Unlock()
			return nil
		},
		OnSessionClose: func(_ context.Context, s *serviceplugin.Session, reason string) {
			p.mu.Lock()
			p.closed = append(p.closed, s.ID+": "+reason)
			p.mu.Unlock()
		},
	}
	return p
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func code(t *testing.T, err error, want serviceplugin.Code) *serviceplugin.Error {
	t.Helper()
	var e *serviceplugin.Error
	var ce *serviceplugin.CallError
	if !errors.As(err, &ce) || !errors.As(err, &e) || e.Code != want {
		t.Fatalf("error %v, want a CallError with code %v", err, want)
	}
	return e
}

var track = map[string]any{"title": "Intro", "seconds": 93.5}

func TestCallsEventsAndData(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	// Defaults arrive with the snapshot.
	if v := h.Data("player.volume"); v != 0.5 {
		t.Fatalf("volume %v", v)
	}
	got, err := h.Call(ctx(t), "play", map[string]any{"track": track, "position": 10})
	if err != nil || got != true {
		t.Fatalf("play: %v, %v", got, err)
	}
	// The event and the update were sent before the result.
	select {
	case ev := <-h.Events():
		if ev.Name != "trackChanged" || !reflect.DeepEqual(ev.Args["track"], track) || ev.SessionID != "" {
			t.Fatalf("event %+v", ev)
		}
	default:
		t.Fatal("no event before the call's result")
	}
	if v := h.Data("player.current"); !reflect.DeepEqual(v, track) {
		t.Fatalf("current %v", v)
	}
	if v := h.Data("player.current.title"); v != "Intro" {
		t.Fatalf("current.title %v", v)
	}
	n, err := h.Call(ctx(t), "enqueue", map[string]any{"tracks": []any{track, track}})
	if err != nil || n != int64(2) {
		t.Fatalf("enqueue: %v, %v", n, err)
	}
	if v := h.Data("player.queue.1.seconds"); v != 93.5 {
		t.Fatalf("queue.1.seconds %v", v)
	}

	// From outside any call: a background producer.
	go func() {
		for i := 1; i <= 100; i++ {
			if err := p.svc.Set("ticks", i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	if err := h.WaitData(ctx(t), "ticks", 100); err != nil {
		t.Fatal(err)
	}
	if err := p.svc.Set("player.queue.0.title", "Renamed"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx(t), "player.queue", []any{map[string]any{"title": "Renamed", "seconds": 93.5}, track}); err != nil {
		t.Fatal(err)
	}
}

func TestCallErrors(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	c := ctx(t)

	_, err := h.Call(c, "stop", nil)
	code(t, err, serviceplugin.CodeUnknownMethod)

	_, err = h.Conn().Call(c, "", "play", []byte{1, 2, 3})
	if e := code(t, err, serviceplugin.CodeInvalidArgument); !strings.Contains(e.Message, "method play") {
		t.Fatalf("message %q", e.Message)
	}

	_, err = h.Call(c, "wrongResult", nil)
	if e := code(t, err, serviceplugin.CodeBadResult); !strings.Contains(e.Message, "not a int") && !strings.Contains(e.Message, "int") {
		t.Fatalf("message %q", e.Message)
	}
	_, err = h.Call(c, "noResult", nil)
	if e := code(t, err, serviceplugin.CodeBadResult); !strings.Contains(e.Message, "returns nothing") {
		t.Fatalf("message %q", e.Message)
	}

	_, err = h.Call(c, "boom", nil)
	if e := code(t, err, serviceplugin.CodePanic); !strings.Contains(e.Message, "method boom panicked") || !strings.Contains(e.Message, "has no argument nosuchargument") {
		t.Fatalf("message %q", e.Message)
	}
	// And the service goes on.
	if _, err := h.Call(c, "play", map[string]any{"track": track, "position": 1.0}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(err.Error(), "service test.player: call boom (#") {
		t.Fatalf("error %q does not name the service and the call", err)
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := h.Call(short, "hold", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("past the deadline: %v", err)
	}
	<-p.holding
	// A cancelled call: the method sees why.
	c, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.Call(c, "hold", nil); done <- err }()
	<-p.holding
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// The plugin's answer to a call the host stopped waiting for is dropped
	// quietly, and later calls are fine.
	if _, err := h.Call(ctx(t), "session", nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCallsAndOverload(t *testing.T) {
	p := newPlayer()
	p.svc.MaxConcurrentCalls = 3
	h := serviceplugin.NewTestHost(t, p.svc)
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { _, err := h.Call(c, "hold", nil); errs <- err }()
	}
	<-p.holding
	<-p.holding
	// Two calls hold; a third runs; a fourth at once is overloaded,
	// which needs a third holder.
	if _, err := h.Call(ctx(t), "session", nil); err != nil {
		t.Fatalf("a call beside two blocked ones: %v", err)
	}
	go func() { _, err := h.Call(c, "hold", nil); errs <- err }()
	<-p.holding
	_, err := h.Call(ctx(t), "session", nil)
	if e := code(t, err, serviceplugin.CodeOverloaded); !strings.Contains(e.Message, "3 calls") {
		t.Fatalf("message %q", e.Message)
	}
	cancel()
	for i := 0; i < 3; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

func TestSessions(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	c := ctx(t)
	if err := h.OpenSession(c, "s1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.CallInSession(c, "s1", "session", nil); got != "s1/test-client" {
		t.Fatalf("session %v", got)
	}
	if got := p.svc.Session("s1"); got == nil || got.ClientID != "test-client" || len(p.svc.Sessions()) != 1 {
		t.Fatalf("Session(s1) %v, Sessions %v", got, p.svc.Sessions())
	}

	err := h.OpenSession(c, "refused")
	if e := code(t, err, serviceplugin.CodeApplication); !strings.Contains(e.Message, `no sessions called "refused"`) {
		t.Fatalf("refusal %q", e.Message)
	}
	if !strings.Contains(err.Error(), `open session "refused"`) {
		t.Fatalf("error %q", err)
	}
	code(t, h.OpenSession(c, "panics"), serviceplugin.CodePanic)
	code(t, h.OpenSession(c, "s1"), serviceplugin.CodeInvalidArgument) // already open
	_, err = h.CallInSession(c, "refused", "session", nil)
	code(t, err, serviceplugin.CodeNoSession)

	// An event for one session.
	if err := p.svc.Session("s1").Emit(c, "note", map[string]any{"text": "hi"}); err != nil {
		t.Fatal(err)
	}
	if ev := <-h.Events(); ev.SessionID != "s1" || ev.Args["text"] != "hi" {
		t.Fatalf("event %+v", ev)
	}
	if err := p.svc.EmitTo(c, "nosuch", "note", map[string]any{"text": "hi"}); err == nil || !strings.Contains(err.Error(), "not open") {
		t.Fatalf("emit to a session that is not open: %v", err)
	}

	// Closing a session cancels its calls and calls OnSessionClose.
	done := make(chan error, 1)
	go func() { _, err := h.CallInSession(c, "s1", "hold", nil); done <- err }()
	if id := <-p.holding; id != "s1" {
		t.Fatalf("hold in %q", id)
	}
	h.CloseSession("s1", "closed by client")
	err = <-done
	if e := code(t, err, serviceplugin.CodeApplication); !strings.Contains(e.Message, "session s1 ended: closed by client") {
		t.Fatalf("call in a closed session: %q", e.Message)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p.mu.Lock()
		closed := append([]string(nil), p.closed...)
		p.mu.Unlock()
		if len(closed) == 1 && closed[0] == "s1: closed by client" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnSessionClose calls: %v", closed)
		}
	}
	if p.svc.Session("s1") != nil {
		t.Fatal("s1 still open")
	}
}

// A call that arrives while its session's OnSessionOpen runs waits for it.
func TestCallWaitsForSessionOpen(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	c := ctx(t)
	opened := make(chan error, 1)
	go func() { opened <- h.OpenSession(c, "slow1") }()
	<-p.entered
	called := make(chan error, 1)
	go func() {
		got, err := h.CallInSession(c, "slow1", "session", nil)
		if err == nil && got != "slow1/test-client" {
			err = fmt.Errorf("got %v", got)
		}
		called <- err
	}()
	select {
	case err := <-called:
		t.Fatalf("the call ran before its session opened: %v", err)
	case <-time.After(50 * time.Millisecond): // not a timing assertion: only gives a wrong order its chance
	}
	close(p.gate)
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
	if err := <-called; err != nil {
		t.Fatal(err)
	}
}

func TestEmitAndSetCheckTypes(t *testing.T) {
	p := newPlayer()
	c := ctx(t)
	// Before a host connects: Set changes the snapshot, Emit says no.
	if err := p.svc.Set("player.volume", 0.75); err != nil {
		t.Fatal(err)
	}
	if err := p.svc.Emit(c, "note", map[string]any{"text": "x"}); !errors.Is(err, serviceplugin.ErrNotConnected) {
		t.Fatalf("emit without a host: %v", err)
	}
	h := serviceplugin.NewTestHost(t, p.svc)
	if v := h.Data("player.volume"); v != 0.75 {
		t.Fatalf("volume in the snapshot %v", v)
	}
	cases := []struct {
		err  error
		want string
	}{
		{p.svc.Emit(c, "nosuch", nil), `emit "nosuch": service test.player has no such event (events: trackChanged, note)`},
		{p.svc.Emit(c, "note", map[string]any{"text": 5}), "emit note: services: encode args.text: want string, got int 5"},
		{p.svc.Emit(c, "note", nil), "missing argument"},
		{p.svc.Set("player.volum", 1.0), `set player.volum: player has no "volum" (it has: volume, current, queue)`},
		{p.svc.Set("player.volume", "loud"), "want float"},
		{p.svc.Set("player.queue.0", track), "index 0 is out of range: the list player.queue has 0 elements"},
		{p.svc.Set("player.queue.x", track), `"x" is not an index`},
		{p.svc.Set("player.queue.01", track), `"01" is not an index`},
		{p.svc.Set("ticks.x", 1), `ticks is a int, which has no "x"`},
		{p.svc.Set("", 1), "want object"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v, want %q", c.err, c.want)
		}
	}
	// Get returns a copy.
	if err := p.svc.Set("player.current", track); err != nil {
		t.Fatal(err)
	}
	v, _ := p.svc.Get("player.current")
	v.(map[string]any)["title"] = "changed"
	if v2, _ := p.svc.Get("player.current.title"); v2 != "Intro" {
		t.Fatalf("Get shares the tree: %v", v2)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "player.xml")
	os.WriteFile(path, []byte(playerXML), 0o600)
	good := newPlayer().svc.Methods
	cases := []struct {
		svc  *serviceplugin.Service
		want string
	}{
		{&serviceplugin.Service{}, "both empty"},
		{&serviceplugin.Service{XML: []byte(playerXML), XMLPath: path}, "both Service.XML and Service.XMLPath are set"},
		{&serviceplugin.Service{XML: []byte(`<service name="x" version="1"/>`)}, `service.xml:1: service attribute "version"`},
		{&serviceplugin.Service{XMLPath: filepath.Join(dir, "nosuch.xml")}, "nosuch.xml: cannot read service file"},
		{&serviceplugin.Service{XML: []byte(playerXML), Methods: map[string]serviceplugin.MethodFunc{"play": good["play"]}},
			"service test.player: method enqueue (line 10) has no implementation in Service.Methods; method hold (line 11)"},
		{&serviceplugin.Service{XML: []byte(playerXML), Methods: with(good, "stop")},
			`Service.Methods has "stop", which the service file does not declare (methods: play, enqueue, hold, wrongResult, noResult, boom, session, big)`},
	}
	for _, c := range cases {
		err := c.svc.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check: %v, want %q", err, c.want)
		}
		if c.svc.Description() != nil {
			t.Error("an invalid service has a description")
		}
	}
	svc := &serviceplugin.Service{XMLPath: path, Methods: good}
	if err := svc.Check(); err != nil || svc.Description().Name != "test.player" {
		t.Fatalf("from a path: %v", err)
	}
}

func with(m map[string]serviceplugin.MethodFunc, extra string) map[string]serviceplugin.MethodFunc {
	out := map[string]serviceplugin.MethodFunc{extra: m["play"]}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestPathType(t *testing.T) {
	desc, err := servicefile.Parse("p.xml", []byte(playerXML))
	if err != nil {
		t.Fatal(err)
	}
	root := desc.Data.Type
	for path, want := range map[string]string{
		"": "object", "player": "object", "player.volume": "float", "player.queue": "Track[]",
		"player.queue.7": "Track", "player.queue.7.title": "string", "ticks": "int",
	} {
		typ, err := serviceplugin.PathType(root, path)
		if err != nil || typ.String() != want {
			t.Errorf("PathType(%q) = %v, %v; want %s", path, typ, err, want)
		}
	}
	for _, path := range []string{".", "player.", "player..volume", "nosuch", "player.queue.-1", "player.queue.+1", "player.queue.1e3", "ticks.0", "player.volume.x"} {
		if typ, err := serviceplugin.PathType(root, path); err == nil {
			t.Errorf("PathType(%q) = %v, want an error", path, typ)
		}
	}
}

func FuzzPathType(f *testing.F) {
	desc, err := servicefile.Parse("p.xml", []byte(playerXML))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "player.queue.3.title", "ticks", "player..x", "player.queue.99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		typ, err := serviceplugin.PathType(desc.Data.Type, path)
		if err == nil {
			// Every type found has a default that encodes.
			if _, err := services.AppendValue(nil, typ, services.DefaultValue(typ)); err != nil {
				t.Fatalf("PathType(%q) = %v, whose default does not encode: %v", path, typ, err)
			}
		} else if len(err.Error()) > 1000 {
			t.Fatalf("error too long: %d bytes", len(err.Error()))
		}
	})
}

// No value larger than a message carries is ever sent: it would break the
// stream, and every call with it.
func TestPayloadLimit(t *testing.T) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(t, p.svc)
	c := ctx(t)
	huge := make([]byte, serviceplugin.MaxPayload+1)
	if got, err := h.Call(c, "big", map[string]any{"n": serviceplugin.MaxPayload - 4}); err != nil || len(got.([]byte)) != serviceplugin.MaxPayload-4 {
		t.Fatalf("the largest result: %v", err)
	}
	_, err := h.Call(c, "big", map[string]any{"n": serviceplugin.MaxPayload})
	if e := code(t, err, serviceplugin.CodeBadResult); !strings.Contains(e.Message, "more than a message carries") {
		t.Fatalf("message %q", e.Message)
	}
	_, err = h.Conn().Call(c, "", "big", huge[:serviceplugin.MaxPayload+1])
	if e := code(t, err, serviceplugin.CodeInvalidArgument); !strings.Contains(e.Message, "more than a message carries") {
		t.Fatalf("message %q", e.Message)
	}
	if err := p.svc.Emit(c, "note", map[string]any{"text": string(huge)}); err == nil || !strings.Contains(err.Error(), "more than a message carries") {
		t.Fatalf("emit: %v", err)
	}
	if err := p.svc.Set("player.current.title", string(huge)); err == nil || !strings.Contains(err.Error(), "more than a message carries") {
		t.Fatalf("set: %v", err)
	}
	// The stream is fine.
	if _, err := h.Call(c, "session", nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCall is a call with a 64-byte result on the stream, in process
// (bufconn): the SDK's and HostConn's own cost per call, without a process
// hop. bench/servicecall measures the real thing.
func BenchmarkCall(b *testing.B) {
	p := newPlayer()
	h := serviceplugin.NewTestHost(b, p.svc)
	m := p.svc.Description().Method("big")
	args, err := services.AppendArgs(nil, m.Args, map[string]any{"n": 64})
	if err != nil {
		b.Fatal(err)
	}
	c := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Conn().Call(c, "", "big", args); err != nil {
			b.Fatal(err)
		}
	}
}
