package config

import (
	"reflect"
	"testing"
)

func TestRemoteServices(t *testing.T) {
	s, err := Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <remoteServices>
    <allow service="sensor.hub" token="runners"/>
    <deny service="*" client="6f1c2a9e-0000-4000-8000-000000000000"/>
    <allow service="*" identity="CN=runner"/>
  </remoteServices>
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Policy{Default: "deny", Line: 3, Rules: []Rule{
		{Allow: true, Service: "sensor.hub", Token: "runners", Line: 4},
		{Service: "*", Client: "6f1c2a9e-0000-4000-8000-000000000000", Line: 5},
		{Allow: true, Service: "*", Identity: "CN=runner", Line: 6},
	}}
	if !reflect.DeepEqual(s.RemoteServices, want) {
		t.Fatalf("RemoteServices = %+v, want %+v", s.RemoteServices, want)
	}
	if s, err := Parse("c.xml", []byte(`<connectserver><connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/></connectserver>`)); err != nil || s.RemoteServices != nil {
		t.Fatalf("without <remoteServices>: %+v, %v", s, err)
	}

	_, err = Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <remoteServices default="maybe">
    <allow service="9x"/>
    <allow methods="a" service="x"/>
    <deny/>
    <permit service="x"/>
  </remoteServices>
  <remoteServices/>
</connectserver>`))
	got := problemLines(t, err)
	wantLines := []string{
		`c.xml:3: remoteServices attribute "default": "maybe" is not deny or allow`,
		`c.xml:4: remoteServices/allow[1] attribute "service": service name "9x": want dot-separated words of letters, digits, '_' and '-', each starting with a letter, at most 128 characters (or * for every service)`,
		`c.xml:5: remoteServices/allow[2] attribute "methods" unknown (known: service, client, identity, token)`,
		`c.xml:6: remoteServices/deny[1] attribute "service" is required`,
		`c.xml:7: remoteServices element <permit> unknown (known: allow, deny)`,
		`c.xml:9: remoteServices given twice (first at line 3); only one is allowed`,
	}
	if !reflect.DeepEqual(got, wantLines) {
		t.Fatalf("problems:\n%s\nwant:\n%s", join(got), join(wantLines))
	}
}

func join(ls []string) string {
	out := ""
	for _, l := range ls {
		out += l + "\n"
	}
	return out
}
