package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

// listenConfig has two stock adapters (ssl with an attribute), and two
// plugin adapters of different schemes.
const listenConfig = `<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <connectionAdapter name="secure" type="connect.bearer.ssl" address="ssl://127.0.0.1:9501">
    <attribute name="cert" value="/etc/connect/cert.pem"/>
  </connectionAdapter>
  <connectionAdapter name="ws" type="example.bearer.ws" plugin="/opt/ws" address="ws://127.0.0.1:9600/connect">
    <attribute name="origin" value="*"/>
  </connectionAdapter>
  <connectionAdapter name="quic" type="example.bearer.quic" plugin="/opt/quic" address="quic://127.0.0.1:9700"/>
</connectserver>`

func TestApplyListen(t *testing.T) {
	load := func(t *testing.T) *Server {
		t.Helper()
		s, err := Parse("/etc/connect/c.xml", []byte(listenConfig))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ws := Adapter{Name: "ws", Type: "example.bearer.ws", Plugin: "/opt/ws", Address: ep("ws://127.0.0.1:9600/connect"),
		Attributes: bearers.Attributes{"origin": "*"}, Line: 6}
	quic := Adapter{Name: "quic", Type: "example.bearer.quic", Plugin: "/opt/quic", Address: ep("quic://127.0.0.1:9700"),
		Attributes: bearers.Attributes{}, Line: 9}

	t.Run("no urls changes nothing", func(t *testing.T) {
		s := load(t)
		before := load(t)
		if err := s.ApplyListen(nil); err != nil || !reflect.DeepEqual(s, before) {
			t.Errorf("ApplyListen(nil) = %v, changed %v", err, !reflect.DeepEqual(s, before))
		}
	})

	t.Run("stock urls replace every stock adapter and keep plugins", func(t *testing.T) {
		s := load(t)
		err := s.ApplyListen([]string{"tcp://0.0.0.0:7000", "tcp://[::1]:7000", "udp://127.0.0.1:7001", "ssl://127.0.0.1:7002"})
		if err != nil {
			t.Fatal(err)
		}
		want := []Adapter{
			{Name: "tcp", Type: "connect.bearer.tcp", Address: ep("tcp://0.0.0.0:7000"), Attributes: bearers.Attributes{}},
			{Name: "tcp-2", Type: "connect.bearer.tcp", Address: ep("tcp://[::1]:7000"), Attributes: bearers.Attributes{}},
			{Name: "udp", Type: "connect.bearer.udp", Address: ep("udp://127.0.0.1:7001"), Attributes: bearers.Attributes{}},
			// The ssl adapter keeps the configured name and attributes.
			{Name: "secure", Type: "connect.bearer.ssl", Address: ep("ssl://127.0.0.1:7002"), Attributes: bearers.Attributes{"cert": "/etc/connect/cert.pem"}},
			ws, quic,
		}
		if !reflect.DeepEqual(s.Adapters, want) {
			t.Errorf("Adapters =\n%+v\nwant\n%+v", s.Adapters, want)
		}
		// Attributes are copied, not shared.
		s.Adapters[3].Attributes["cert"] = "changed"
		if s.Adapters[3].Attributes["cert"] == load(t).Adapters[1].Attributes["cert"] {
			t.Error("attributes shared with the configuration")
		}
	})

	t.Run("a stock url drops stock adapters it does not name", func(t *testing.T) {
		s := load(t)
		if err := s.ApplyListen([]string{"udp://127.0.0.1:9"}); err != nil {
			t.Fatal(err)
		}
		want := []Adapter{{Name: "udp", Type: "connect.bearer.udp", Address: ep("udp://127.0.0.1:9"), Attributes: bearers.Attributes{}}, ws, quic}
		if !reflect.DeepEqual(s.Adapters, want) {
			t.Errorf("Adapters =\n%+v\nwant\n%+v", s.Adapters, want)
		}
	})

	t.Run("a plugin scheme replaces the adapters of that scheme", func(t *testing.T) {
		s := load(t)
		if err := s.ApplyListen([]string{"ws://0.0.0.0:8000/a", "ws://0.0.0.0:8001/b"}); err != nil {
			t.Fatal(err)
		}
		want := []Adapter{
			{Name: "ws", Type: "example.bearer.ws", Plugin: "/opt/ws", Address: ep("ws://0.0.0.0:8000/a"), Attributes: bearers.Attributes{"origin": "*"}},
			{Name: "ws-2", Type: "example.bearer.ws", Plugin: "/opt/ws", Address: ep("ws://0.0.0.0:8001/b"), Attributes: bearers.Attributes{"origin": "*"}},
			quic,
		}
		if !reflect.DeepEqual(s.Adapters, want) {
			t.Errorf("Adapters =\n%+v\nwant\n%+v", s.Adapters, want)
		}
	})

	t.Run("errors leave the server unchanged", func(t *testing.T) {
		s := load(t)
		err := s.ApplyListen([]string{"tcp://127.0.0.1:1", "http://127.0.0.1:80", "tcp://127.0.0.1", "tcp://127.0.0.1:2/x",
			"tcp://127.0.0.1:1", "quic://127.0.0.1:9700"})
		if err == nil {
			t.Fatal("no error")
		}
		want := []string{
			`--listen http://127.0.0.1:80: no bearer serves http://; built in are tcp, udp and ssl, and the configuration has no plugin adapter for http (plugin schemes configured: quic, ws)`,
			`--listen: bad endpoint "tcp://127.0.0.1": address 127.0.0.1: missing port in address (a port is required)`,
			`--listen tcp://127.0.0.1:2/x: tcp endpoints take no path`,
			`--listen tcp://127.0.0.1:1: address already used by adapter "tcp"`,
		}
		if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
			t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
		}
		if !reflect.DeepEqual(s, load(t)) {
			t.Error("server changed despite the error")
		}
	})

	t.Run("default configuration", func(t *testing.T) {
		s := Default()
		if err := s.ApplyListen([]string{"tcp://127.0.0.1:0"}); err != nil {
			t.Fatal(err)
		}
		want := []Adapter{{Name: "tcp", Type: "connect.bearer.tcp", Address: ep("tcp://127.0.0.1:0"), Attributes: bearers.Attributes{}}}
		if !reflect.DeepEqual(s.Adapters, want) {
			t.Errorf("Adapters = %+v, want %+v", s.Adapters, want)
		}
		if err := Default().ApplyListen([]string{"ws://127.0.0.1:1"}); err == nil ||
			err.Error() != `--listen ws://127.0.0.1:1: no bearer serves ws://; built in are tcp, udp and ssl, and the configuration has no plugin adapter for ws` {
			t.Errorf("err = %v", err)
		}
	})
}
