package config

import (
	"reflect"
	"testing"
)

func TestTunnels(t *testing.T) {
	s, err := Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <tunnel name="redis" target="127.0.0.1:6379"/>
  <tunnel name="web.front" target="[::1]:443" proxyProtocol="v2"/>
  <tunnel name="db" target="db.internal:5432" proxyProtocol="off"/>
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Tunnel{
		{Name: "redis", Target: "127.0.0.1:6379", Line: 3},
		{Name: "web.front", Target: "[::1]:443", ProxyV2: true, Line: 4},
		{Name: "db", Target: "db.internal:5432", Line: 5},
	}
	if !reflect.DeepEqual(s.Tunnels, want) {
		t.Fatalf("Tunnels = %+v, want %+v", s.Tunnels, want)
	}

	_, err = Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <service name="demo" builtin="demo"/>
  <tunnel name="redis" target="127.0.0.1:6379"/>
  <tunnel name="redis" target="127.0.0.1:6380"/>
  <tunnel name="a" target="127.0.0.1"/>
  <tunnel name="b" target="::1:80"/>
  <tunnel name="c" target=":80"/>
  <tunnel name="d" target="host:0"/>
  <tunnel name="e" target="host:http"/>
  <tunnel name="f" target="host:1" proxyProtocol="v1"/>
  <tunnel name="9g" target="host:1"/>
  <tunnel name="h" target="host:1" address="x"/>
  <tunnel target="host:1"/>
  <tunnel name="demo" target="host:1"/>
  <tunnel name="i" target="host:1"><x/></tunnel>
</connectserver>`))
	got := problemLines(t, err)
	wantLines := []string{
		`c.xml:5: tunnel[2]: tunnel "redis" is already declared at line 4`,
		`c.xml:6: tunnel[3] attribute "target": "127.0.0.1" is not host:port (an IPv6 address goes in brackets: [::1]:6379)`,
		`c.xml:7: tunnel[4] attribute "target": "::1:80" is not host:port (an IPv6 address goes in brackets: [::1]:6379)`,
		`c.xml:8: tunnel[5] attribute "target": ":80" has no host`,
		`c.xml:9: tunnel[6] attribute "target": "host:0" has no port from 1 to 65535`,
		`c.xml:10: tunnel[7] attribute "target": "host:http" has no port from 1 to 65535`,
		`c.xml:11: tunnel[8] attribute "proxyProtocol": "v1" is not v2 or off`,
		`c.xml:12: tunnel[9] attribute "name": tunnel name "9g": want dot-separated words of letters, digits, '_' and '-', each starting with a letter, at most 128 characters`,
		`c.xml:13: tunnel[10] attribute "address" unknown (known: name, target, proxyProtocol)`,
		`c.xml:14: tunnel[11] attribute "name" is required`,
		`c.xml:15: tunnel "demo" has the name of the service declared at line 3; tunnels and services need distinct names (policy rules name both)`,
		`c.xml:16: tunnel[13] element <x> unknown (tunnel[13] has no child elements)`,
	}
	if !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("problems:\n%s\nwant:\n%s", join(got), join(wantLines))
	}
}
