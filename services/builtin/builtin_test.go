package builtin_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/builtin"
	"github.com/bearerkit/connect/services/configuration"
	"github.com/bearerkit/connect/services/serviceplugin"
)

func TestNames(t *testing.T) {
	names := builtin.Names()
	if !reflect.DeepEqual(names, []string{"configuration", "demo", "diagnostics"}) {
		t.Fatalf("Names() = %v, want [configuration demo diagnostics]", names)
	}
	names[0] = "changed"
	if builtin.Names()[0] != "configuration" {
		t.Fatal("Names returned the registry itself, not a copy")
	}
}

func TestNew(t *testing.T) {
	for _, name := range builtin.Names() {
		svc, err := builtin.New(name)
		if err != nil {
			t.Fatalf("New(%q): %v", name, err)
		}
		if err := svc.Check(); err != nil {
			t.Fatalf("New(%q): %v", name, err)
		}
	}
	a, err := builtin.New("demo")
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Description(); d.Name != "Demo" || d.Version != "1.0" {
		t.Fatalf("demo describes %s %s", d.Name, d.Version)
	}
	b, _ := builtin.New("demo")
	if err := a.Set("settings.label", "changed"); err != nil {
		t.Fatal(err)
	}
	if v, _ := b.Get("settings.label"); v != "Connect demo station" {
		t.Fatalf("a second instance has label %v: instances share state", v)
	}

	for _, name := range []string{"nope", "", "Demo"} {
		svc, err := builtin.New(name)
		want := `no built-in service "` + name + `" (built-in services: configuration, demo, diagnostics)`
		if svc != nil || err == nil || err.Error() != want {
			t.Errorf("New(%q) = %v, %v; want the error %q", name, svc, err, want)
		}
	}
	if err := builtin.ServePlugin("nope"); err == nil || !strings.Contains(err.Error(), "built-in services: configuration, demo") {
		t.Errorf("ServePlugin(nope) = %v", err)
	}
}

// The configuration built-in reads its groups from configuration.EnvGroups.
func TestNewConfiguration(t *testing.T) {
	t.Setenv(configuration.EnvGroups, `[{"name":"database","values":[{"name":"host","type":"string","value":"db.local"},{"name":"port","type":"int","value":"5432"}]}]`)
	svc, err := builtin.New("configuration")
	if err != nil {
		t.Fatal(err)
	}
	if d := svc.Description(); d.Name != "Configuration" || d.Version != "1.0" {
		t.Fatalf("configuration describes %s %s", d.Name, d.Version)
	}
	if v, err := svc.Get("database"); err != nil || !reflect.DeepEqual(v, map[string]any{"host": "db.local", "port": int64(5432)}) {
		t.Fatalf("database = %v, %v", v, err)
	}

	t.Setenv(configuration.EnvGroups, `[{"name":"database","values":[{"name":"port","type":"int","value":"many"}]}]`)
	svc, err = builtin.New("configuration")
	want := `built-in service configuration: configuration: group "database", value "port": "many" is not an int (a decimal integer, like -42)`
	if svc != nil || err == nil || err.Error() != want {
		t.Fatalf("New(configuration) with a bad value = %v, %v; want the error %q", svc, err, want)
	}
	if err := builtin.ServePlugin("configuration"); err == nil || err.Error() != want {
		t.Fatalf("ServePlugin(configuration) with a bad value = %v; want the error %q", err, want)
	}
}

// TestHelperServePlugin is the plugin process of TestServePlugin: the test
// binary, started by pluginhost with go-plugin's magic cookie set, serves
// the demo service the way "connectserver plugin service demo" does.
func TestHelperServePlugin(t *testing.T) {
	if os.Getenv(serviceplugin.Handshake.MagicCookieKey) != serviceplugin.Handshake.MagicCookieValue {
		t.Skip("the plugin process of TestServePlugin")
	}
	if err := builtin.ServePlugin("demo"); err != nil {
		t.Fatal(err)
	}
}

// ServePlugin serves a real plugin subprocess: the host starts it, restores
// its persistent label, calls it, and gets its events and runtime data.
func TestServePlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a plugin subprocess")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	template, _ := builtin.New("demo")
	desc := template.Description()
	label, err := services.AppendValue(nil, desc.Data.Lookup("settings.label").Type, "restored label")
	if err != nil {
		t.Fatal(err)
	}
	snapshots := make(chan []byte, 16)
	events := make(chan serviceplugin.Event, 1024)
	p, err := pluginhost.StartService(ctx, pluginhost.ServiceOptions{
		Service: "Demo",
		Path:    exe,
		Args:    []string{"-test.run=^TestHelperServePlugin$"},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Restore: func() []serviceplugin.DataUpdate {
			return []serviceplugin.DataUpdate{{Path: "settings.label", Value: label}}
		},
		OnData: func(u serviceplugin.DataUpdate) {
			if u.Path == "" {
				snapshots <- u.Value
			}
		},
		OnEvent: func(e serviceplugin.Event) {
			select {
			case events <- e:
			default: // the test reads what it needs; never block the stream
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	tree, err := services.DecodeValue(desc.Data.Type, <-snapshots)
	if err != nil {
		t.Fatal(err)
	}
	if got := tree.(map[string]any)["settings"].(map[string]any)["label"]; got != "restored label" {
		t.Fatalf("settings.label %v in the plugin's first snapshot, want the restored value", got)
	}

	m := desc.Method("add")
	args, err := services.AppendArgs(nil, m.Args, map[string]any{"a": 40, "b": 2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Call(ctx, "", "add", args)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := services.DecodeValue(m.Returns, res); err != nil || v != int64(42) {
		t.Fatalf("add(40, 2) = %v, %v", v, err)
	}

	m = desc.Method("setRate")
	if args, err = services.AppendArgs(nil, m.Args, map[string]any{"hz": 1000.0}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Call(ctx, "", "setRate", args); err != nil {
		t.Fatal(err)
	}
	if err := p.OpenSession(ctx, serviceplugin.SessionInfo{ID: "s1", ClientID: "c1"}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case e := <-events:
			if e.Name == "tick" {
				return
			}
		case <-ctx.Done():
			t.Fatal("no tick event from the plugin")
		}
	}
}
