package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// The service in process, as its author tests it.
func TestService(t *testing.T) {
	service.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h := serviceplugin.NewTestHost(t, service)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	calls := h.Data("meter.calls").(int64) // the service is a package variable: -count=N reuses it

	if got, err := h.Call(ctx, "echo", map[string]any{"text": "hello"}); err != nil || got != "hello" {
		t.Fatalf("echo: %v, %v", got, err)
	}
	if got, err := h.Call(ctx, "add", map[string]any{"a": 40, "b": 2}); err != nil || got != int64(42) {
		t.Fatalf("add: %v, %v", got, err)
	}
	got, err := h.Call(ctx, "stats", map[string]any{"values": []float64{1, 5, 3}})
	if want := map[string]any{"count": int64(3), "mean": 3.0, "max": 5.0}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("stats: %v, %v", got, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := h.Call(short, "sleep", map[string]any{"ms": 60_000}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep past the deadline: %v", err)
	}
	if ev := <-h.Events(); ev.Name != "sleeping" {
		t.Fatalf("event %+v", ev)
	}
	if _, err := h.Call(ctx, "fail", map[string]any{"mode": "error"}); err == nil || !strings.HasSuffix(err.Error(), ": asked to fail") {
		t.Fatalf("fail: %v", err)
	}
	var se *serviceplugin.Error
	if _, err := h.Call(ctx, "fail", map[string]any{"mode": "panic"}); !errors.As(err, &se) || se.Code != serviceplugin.CodePanic {
		t.Fatalf("panic: %v", err)
	}
	if _, err := h.Call(ctx, "setLevel", map[string]any{"level": 0.9}); err != nil {
		t.Fatal(err)
	}
	if ev := <-h.Events(); ev.Name != "levelChanged" || ev.Args["level"] != 0.9 {
		t.Fatalf("event %+v", ev)
	}
	if v := h.Data("meter.level"); v != 0.9 {
		t.Fatalf("level %v", v)
	}
	if v := h.Data("meter.calls"); v != calls+1 {
		t.Fatalf("calls %v", v)
	}
}

// The service as a plugin executable, started the way connectserver starts
// one, killed with SIGKILL mid-call and restarted with its persistent
// counter restored.
func TestPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin executable")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the plugin: %v", err)
	}
	exe := filepath.Join(t.TempDir(), "echoservice")
	if out, err := exec.Command(goTool, "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A host's persistent store, in miniature: the last value of
	// meter.calls it saw, restored at every start.
	var mu sync.Mutex
	var persisted []byte
	events := make(chan serviceplugin.Event, 16)
	s, err := pluginhost.StartService(context.Background(), pluginhost.ServiceOptions{
		Service: "example.echo",
		Path:    exe,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Restore: func() []serviceplugin.DataUpdate {
			mu.Lock()
			defer mu.Unlock()
			if persisted == nil {
				return nil
			}
			return []serviceplugin.DataUpdate{{Path: "meter.calls", Value: persisted}}
		},
		OnData: func(u serviceplugin.DataUpdate) {
			if u.Path == "meter.calls" {
				mu.Lock()
				persisted = u.Value
				mu.Unlock()
			}
		},
		OnEvent: func(e serviceplugin.Event) { events <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	desc := s.Description()
	call := func(ctx context.Context, method string, args map[string]any) (any, error) {
		m := desc.Method(method)
		enc, err := services.AppendArgs(nil, m.Args, args)
		if err != nil {
			return nil, err
		}
		res, err := s.Call(ctx, "", method, enc)
		if err != nil || m.Returns == nil {
			return nil, err
		}
		return services.DecodeValue(m.Returns, res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if got, err := call(ctx, "echo", map[string]any{"text": "hi"}); err != nil || got != "hi" {
			t.Fatalf("echo: %v, %v", got, err)
		}
	}
	if _, err := call(ctx, "setLevel", map[string]any{"level": 0.25}); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Name != "levelChanged" {
		t.Fatalf("event %+v", ev)
	}

	pid := s.Status().PID
	slept := make(chan error, 1)
	go func() { _, err := call(ctx, "sleep", map[string]any{"ms": 60_000}); slept <- err }()
	if ev := <-events; ev.Name != "sleeping" { // the plugin runs the call
		t.Fatalf("event %+v", ev)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if err := <-slept; !errors.Is(err, pluginhost.ErrPluginExited) || !strings.Contains(err.Error(), "service example.echo: call sleep") {
		t.Fatalf("the call the plugin died under: %v", err)
	}
	// The restarted plugin has the counter back.
	if got, err := call(ctx, "echo", map[string]any{"text": "again"}); err != nil || got != "again" {
		t.Fatalf("echo after the restart: %v, %v", got, err)
	}
	mu.Lock()
	calls, err := services.DecodeValue(desc.Data.Lookup("meter.calls").Type, persisted)
	mu.Unlock()
	if err != nil || calls != int64(4) {
		t.Fatalf("meter.calls after the restart: %v, %v (want 4: three before, one after)", calls, err)
	}
	if s.Status().PID == pid {
		t.Fatal("same pid after the restart")
	}
}
