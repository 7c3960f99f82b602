package demo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/demo"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// newHost serves a fresh Demo service in process; the host is closed when
// the test ends.
func newHost(t *testing.T) (*serviceplugin.TestHost, *serviceplugin.Service) {
	t.Helper()
	svc := demo.New()
	svc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return serviceplugin.NewTestHost(t, svc), svc
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// code returns the code of the service's error in err, or -1.
func code(err error) serviceplugin.Code {
	var se *serviceplugin.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return -1
}

// nextEvent reads events until one named name arrives.
func nextEvent(t *testing.T, ctx context.Context, h *serviceplugin.TestHost, name string) serviceplugin.TestEvent {
	t.Helper()
	for {
		select {
		case ev := <-h.Events():
			if ev.Name == name {
				return ev
			}
		case <-ctx.Done():
			t.Fatalf("no %s event: %v", name, ctx.Err())
		}
	}
}

func TestServiceFile(t *testing.T) {
	d, err := servicefile.Parse("demo.xml", demo.XML)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "Demo" || d.Version != "1.0" {
		t.Fatalf("service %s %s, want Demo 1.0", d.Name, d.Version)
	}
	var persistent []string
	d.Data.Walk(func(n *servicefile.DataNode) {
		if n.Persistent && n.Kind != servicefile.ObjectNode {
			persistent = append(persistent, n.Path)
		}
	})
	if !reflect.DeepEqual(persistent, []string{"settings.label"}) {
		t.Fatalf("persistent values %v, want [settings.label]", persistent)
	}
	if v := d.Data.Lookup("station.rate").Default; v != demo.DefaultRate {
		t.Fatalf("station.rate defaults to %v, DefaultRate is %v", v, demo.DefaultRate)
	}
	// reset puts the sensors back to the defaults the file declares.
	h, _ := newHost(t)
	ctx := testContext(t)
	if _, err := h.Call(ctx, "reset", nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"temperature", "humidity", "pressure"} {
		n := d.Data.Lookup("sensors." + name)
		if v := h.Data(n.Path); v != n.Default {
			t.Errorf("%s is %v after reset, the file's default is %v", n.Path, v, n.Default)
		}
	}
}

func TestMethods(t *testing.T) {
	h, _ := newHost(t)
	ctx := testContext(t)
	seventeen := make([]any, 17)
	for i := range seventeen {
		seventeen[i] = map[string]any{"sensor": "temperature", "limit": float64(i)}
	}
	tests := []struct {
		method string
		args   map[string]any
		want   any                // the result, when code is 0
		code   serviceplugin.Code // the error's code, 0 for success
		msg    string             // a part of the error's message
	}{
		{method: "echo", args: map[string]any{"text": "héllo"}, want: "héllo"},
		{method: "echo", args: map[string]any{"text": ""}, want: ""},
		{method: "add", args: map[string]any{"a": 40, "b": 2}, want: int64(42)},
		{method: "add", args: map[string]any{"a": -7, "b": -9}, want: int64(-16)},
		{method: "add", args: map[string]any{"a": int64(1) << 62, "b": int64(1) << 62},
			code: serviceplugin.CodeInvalidArgument, msg: "4611686018427387904 + 4611686018427387904 overflows a 64-bit int"},
		{method: "add", args: map[string]any{"a": -1 << 63, "b": -1}, code: serviceplugin.CodeInvalidArgument, msg: "overflows"},
		{method: "summarize", args: map[string]any{"values": []float64{1, 5, 3, -1}},
			want: map[string]any{"count": int64(4), "min": -1.0, "max": 5.0, "mean": 2.0}},
		{method: "summarize", args: map[string]any{"values": []float64{}},
			want: map[string]any{"count": int64(0), "min": 0.0, "max": 0.0, "mean": 0.0}},
		{method: "summarize", args: map[string]any{"values": []float64{1.7e308, 1.7e308}},
			want: map[string]any{"count": int64(2), "min": 1.7e308, "max": 1.7e308, "mean": 1.7e308}},
		{method: "setThresholds", args: map[string]any{"thresholds": []any{
			map[string]any{"sensor": "temperature", "limit": 25.0},
			map[string]any{"sensor": "pressure", "limit": 1000.0},
		}}, want: int64(2)},
		{method: "setThresholds", args: map[string]any{"thresholds": []any{}}, want: int64(0)},
		{method: "setThresholds", args: map[string]any{"thresholds": []any{
			map[string]any{"sensor": "humidity", "limit": 50.0},
			map[string]any{"sensor": "wind", "limit": 3.0},
		}}, code: serviceplugin.CodeInvalidArgument, msg: `thresholds[1].sensor: no sensor "wind" (sensors: temperature, humidity, pressure)`},
		{method: "setThresholds", args: map[string]any{"thresholds": seventeen},
			code: serviceplugin.CodeInvalidArgument, msg: "17 thresholds, at most 16"},
		{method: "setRate", args: map[string]any{"hz": 50.0}},
		{method: "setRate", args: map[string]any{"hz": 0.0}, code: serviceplugin.CodeInvalidArgument, msg: "rate 0 Hz is out of range"},
		{method: "setRate", args: map[string]any{"hz": -3.0}, code: serviceplugin.CodeInvalidArgument, msg: "out of range"},
		{method: "setRate", args: map[string]any{"hz": 1000.5}, code: serviceplugin.CodeInvalidArgument, msg: "at most 1000"},
		{method: "setLabel", args: map[string]any{"label": "lab 7"}},
		{method: "setLabel", args: map[string]any{"label": strings.Repeat("é", 64)}},
		{method: "setLabel", args: map[string]any{"label": strings.Repeat("é", 65)}, code: serviceplugin.CodeInvalidArgument, msg: "65 characters, at most 64"},
		{method: "setLabel", args: map[string]any{"label": ""}, code: serviceplugin.CodeInvalidArgument, msg: "empty"},
		{method: "setLabel", args: map[string]any{"label": " \t "}, code: serviceplugin.CodeInvalidArgument, msg: "empty"},
		{method: "reset", args: nil},
		{method: "sleep", args: map[string]any{"millis": 0}, want: int64(0)},
		{method: "sleep", args: map[string]any{"millis": 5}, want: int64(5)},
		{method: "sleep", args: map[string]any{"millis": -1}, code: serviceplugin.CodeInvalidArgument, msg: "millis -1 is out of range"},
		{method: "sleep", args: map[string]any{"millis": 3_600_001}, code: serviceplugin.CodeInvalidArgument, msg: "out of range"},
	}
	calls := h.Data("stats.calls").(int64)
	for _, tc := range tests {
		name := fmt.Sprintf("%s%v", tc.method, tc.args)
		got, err := h.Call(ctx, tc.method, tc.args)
		calls++ // every call that reaches the service counts, failed or not
		if tc.code == 0 {
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s = %#v, %v; want %#v", name, got, err, tc.want)
			}
		} else if code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v (code %v), want code %v and %q", name, err, code(err), tc.code, tc.msg)
		}
		if v := h.Data("stats.calls"); v != calls {
			t.Errorf("after %s: stats.calls %v, want %d", name, v, calls)
		}
	}
}

// Arguments that do not fit the method are refused by the SDK, before the
// method runs: by the host's encoder, and by the plugin's decoder for
// bytes a host got wrong.
func TestBadArguments(t *testing.T) {
	h, _ := newHost(t)
	ctx := testContext(t)
	if _, err := h.Call(ctx, "add", map[string]any{"a": "forty", "b": 2}); !errors.Is(err, services.ErrType) {
		t.Errorf("add(a=\"forty\"): %v, want services.ErrType", err)
	}
	if _, err := h.Call(ctx, "add", map[string]any{"a": 1}); !errors.Is(err, services.ErrMissingField) {
		t.Errorf("add without b: %v, want services.ErrMissingField", err)
	}
	calls := h.Data("stats.calls")

	good, err := services.AppendArgs(nil, h.Conn().Service().Method("add").Args, map[string]any{"a": 1, "b": 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []byte
		msg  string
	}{
		{"truncated", good[:len(good)-1], "method add: "},
		{"trailing data", append(good, 0), "method add: "},
		{"none", nil, "method add: "},
	} {
		_, err := h.Conn().Call(ctx, "", "add", tc.args)
		if code(err) != serviceplugin.CodeInvalidArgument || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("add with %s arguments: %v, want an invalid-argument error", tc.name, err)
		}
	}
	if _, err := h.Conn().Call(ctx, "", "launch", nil); code(err) != serviceplugin.CodeUnknownMethod {
		t.Errorf("unknown method: %v", err)
	}
	if v := h.Data("stats.calls"); v != calls {
		t.Errorf("stats.calls %v after refused calls, want %v: they never reached the service", v, calls)
	}
}

// demoGoroutines returns the stacks of the goroutines running code of
// package demo (the tests are package demo_test, which does not match).
func demoGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("github.com/bearerkit/connect/services/demo.")) {
			found = append(found, string(g))
		}
	}
	return found
}

// waitNoDemoGoroutines fails the test unless the goroutines running demo
// code are gone within a generous bound.
func waitNoDemoGoroutines(t *testing.T, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := demoGoroutines()
		if len(g) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines still run demo code:\n%s", why, len(g), strings.Join(g, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSleepHonoursDeadline(t *testing.T) {
	h, _ := newHost(t)
	ctx := testContext(t)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := h.Call(short, "sleep", map[string]any{"millis": 600_000})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep past the deadline: %v, want a deadline error", err)
	}
	// The deadline travelled with the call: the method returned too.
	waitNoDemoGoroutines(t, "after the deadline of sleep")
	if got, err := h.Call(ctx, "echo", map[string]any{"text": "still here"}); err != nil || got != "still here" {
		t.Fatalf("echo after the deadline: %v, %v", got, err)
	}
}

// checkType checks that v is the canonical Go value of type typ.
func checkType(typ *servicefile.Type, v any, path string) error {
	ok := false
	switch typ.Kind {
	case servicefile.Int:
		_, ok = v.(int64)
	case servicefile.Float:
		_, ok = v.(float64)
	case servicefile.Bool:
		_, ok = v.(bool)
	case servicefile.String:
		_, ok = v.(string)
	case servicefile.Binary:
		_, ok = v.([]byte)
	case servicefile.List:
		l, isList := v.([]any)
		if !isList {
			break
		}
		for i, e := range l {
			if err := checkType(typ.Elem, e, fmt.Sprintf("%s.%d", path, i)); err != nil {
				return err
			}
		}
		ok = true
	case servicefile.Struct:
		m, isMap := v.(map[string]any)
		if !isMap || len(m) != len(typ.Fields) {
			break
		}
		for _, f := range typ.Fields {
			if err := checkType(f.Type, m[f.Name], strings.TrimPrefix(path+"."+f.Name, ".")); err != nil {
				return err
			}
		}
		ok = true
	}
	if !ok {
		return fmt.Errorf("%s: %T %v is not a %s", path, v, v, typ)
	}
	return nil
}

func TestRuntimeData(t *testing.T) {
	h, svc := newHost(t)
	ctx := testContext(t)
	if v := h.Data("station.status"); v != "idle" {
		t.Fatalf("station.status %v before any session, want idle", v)
	}
	if _, err := h.Call(ctx, "setRate", map[string]any{"hz": demo.MaxRate}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ctx, h, "rateChanged"); ev.Args["hz"] != demo.MaxRate {
		t.Fatalf("rateChanged %v", ev.Args)
	}
	if err := h.OpenSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx, "station.status", "running"); err != nil {
		t.Fatal(err)
	}

	// Updates made before an event reach the host before it: after tick n,
	// the host has sample n or a later one.
	var n int64
	for i := 0; i < 3; i++ { // ticks keep coming, numbered by sample
		ev := nextEvent(t, ctx, h, "tick")
		m, ok := ev.Args["n"].(int64)
		if !ok || m <= n || m%20 != 0 {
			t.Fatalf("tick %v after tick %d: want a larger multiple of 20", ev.Args, n)
		}
		n = m
	}
	tree := h.Data("")
	if err := checkType(svc.Description().Data.Type, tree, ""); err != nil {
		t.Fatalf("the runtime data does not have its declared types: %v", err)
	}
	if s := h.Data("station.samples").(int64); s < n {
		t.Fatalf("station.samples %d after tick %d", s, n)
	}
	if v := h.Data("sensors.temperature").(float64); v < 17 || v > 26 {
		t.Fatalf("sensors.temperature %v, want 21.5 ± 3 and a little noise", v)
	}
	if v := h.Data("sensors.pressure").(float64); v < 1010 || v > 1016 {
		t.Fatalf("sensors.pressure %v", v)
	}
	recent := h.Data("sensors.recent").([]any)
	if len(recent) != 10 {
		t.Fatalf("sensors.recent has %d samples after %d, want the last 10", len(recent), n)
	}
	for i := 1; i < len(recent); i++ {
		prev, cur := recent[i-1].(map[string]any)["seq"].(int64), recent[i].(map[string]any)["seq"].(int64)
		if cur != prev+1 {
			t.Fatalf("sensors.recent seq %d after %d: %v", cur, prev, recent)
		}
	}
	if last := recent[len(recent)-1].(map[string]any)["seq"].(int64); last < n {
		t.Fatalf("the newest of sensors.recent is sample %d after tick %d", last, n)
	}
	if v := h.Data("station.rate"); v != demo.MaxRate {
		t.Fatalf("station.rate %v", v)
	}

	// reset starts the count again; its updates reach the host before its
	// result.
	if _, err := h.Call(ctx, "reset", nil); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, ctx, h, "tick")
	for ev.Args["n"].(int64) > n { // a tick sent before reset's result
		ev = nextEvent(t, ctx, h, "tick")
	}
	if ev.Args["n"] != int64(20) {
		t.Fatalf("first tick after reset: %v, want n=20", ev.Args)
	}
	closeSession(t, ctx, h, "s1")
}

// closeSession closes the last open session and waits until the service
// has seen it close.
func closeSession(t *testing.T, ctx context.Context, h *serviceplugin.TestHost, id string) {
	t.Helper()
	if err := h.CloseSession(id, "closed by client"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx, "station.status", "idle"); err != nil {
		t.Fatal(err)
	}
}

func TestThresholdCrossed(t *testing.T) {
	h, _ := newHost(t)
	ctx := testContext(t)
	if err := h.OpenSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Call(ctx, "setRate", map[string]any{"hz": demo.MaxRate}); err != nil {
		t.Fatal(err)
	}
	ths := []any{
		map[string]any{"sensor": "humidity", "limit": 1e6}, // never crossed
		map[string]any{"sensor": "temperature", "limit": -1000.0},
	}
	if got, err := h.Call(ctx, "setThresholds", map[string]any{"thresholds": ths}); err != nil || got != int64(2) {
		t.Fatalf("setThresholds: %v, %v", got, err)
	}
	if got := h.Data("station.thresholds"); !reflect.DeepEqual(got, ths) {
		t.Fatalf("station.thresholds %v, want %v", got, ths)
	}
	ev := nextEvent(t, ctx, h, "thresholdCrossed")
	if ev.Args["sensor"] != "temperature" || ev.Args["limit"] != -1000.0 || ev.Args["above"] != true || ev.Args["value"].(float64) <= -1000 {
		t.Fatalf("thresholdCrossed %v", ev.Args)
	}
	// Crossed once: the next ticks come without another crossing.
	for i := 0; i < 2; i++ {
		if ev := <-h.Events(); ev.Name != "tick" {
			t.Fatalf("event %s %v after the crossing, want only ticks", ev.Name, ev.Args)
		}
	}
	closeSession(t, ctx, h, "s1")
}

func TestPersistentLabel(t *testing.T) {
	h, svc := newHost(t)
	ctx := testContext(t)
	if v := h.Data("settings.label"); v != "Connect demo station" {
		t.Fatalf("default label %v", v)
	}
	if _, err := h.Call(ctx, "setLabel", map[string]any{"label": "lab 7"}); err != nil {
		t.Fatal(err)
	}
	if v := h.Data("settings.label"); v != "lab 7" {
		t.Fatalf("settings.label %v after setLabel", v)
	}
	if v, err := svc.Get("settings.label"); err != nil || v != "lab 7" {
		t.Fatalf("Get: %v, %v", v, err)
	}
	if _, err := h.Call(ctx, "setLabel", map[string]any{"label": ""}); code(err) != serviceplugin.CodeInvalidArgument {
		t.Fatalf("empty label: %v", err)
	}
	if v := h.Data("settings.label"); v != "lab 7" {
		t.Fatalf("settings.label %v after a refused setLabel", v)
	}
	// A fresh instance has its own state.
	if v, _ := demo.New().Get("settings.label"); v != "Connect demo station" {
		t.Fatalf("a new service's label %v", v)
	}
}

func TestProducerFollowsSessions(t *testing.T) {
	waitNoDemoGoroutines(t, "before the test") // earlier tests' hosts are closed
	h, _ := newHost(t)
	ctx := testContext(t)
	if g := demoGoroutines(); len(g) != 0 {
		t.Fatalf("goroutines run demo code before any session:\n%s", strings.Join(g, "\n\n"))
	}
	if _, err := h.Call(ctx, "setRate", map[string]any{"hz": demo.MaxRate}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s1", "s2"} {
		if err := h.OpenSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.WaitData(ctx, "station.sessions", 2); err != nil {
		t.Fatal(err)
	}
	if v := h.Data("station.status"); v != "running" {
		t.Fatalf("station.status %v with two sessions", v)
	}
	nextEvent(t, ctx, h, "tick")
	if g := demoGoroutines(); len(g) != 1 || !strings.Contains(g[0], "demo.(*station).produce") {
		t.Fatalf("want the producer alone running demo code, got %d goroutines:\n%s", len(g), strings.Join(g, "\n\n"))
	}

	if err := h.CloseSession("s1", "closed by client"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx, "station.sessions", 1); err != nil {
		t.Fatal(err)
	}
	if v := h.Data("station.status"); v != "running" {
		t.Fatalf("station.status %v with one session left", v)
	}
	if err := h.CloseSession("s2", "closed by client"); err != nil {
		t.Fatal(err)
	}
	// The last session's close stops the producer before it reports idle.
	if err := h.WaitData(ctx, "station.status", "idle"); err != nil {
		t.Fatal(err)
	}
	waitNoDemoGoroutines(t, "after the last session closed")
	samples := h.Data("station.samples").(int64)

	// A new session starts it again, from where it stopped.
	if err := h.OpenSession(ctx, "s3"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx, "station.status", "running"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ctx, h, "tick"); ev.Args["n"].(int64) <= samples {
		t.Fatalf("tick %v after a restart at sample %d", ev.Args, samples)
	}

	// The host going away ends its sessions, and the producer with them.
	h.Close()
	waitNoDemoGoroutines(t, "after the host closed")
}
