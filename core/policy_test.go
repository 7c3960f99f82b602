package core

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
)

func policyServer(t *testing.T, policy string) (*Server, *hostedService) {
	t.Helper()
	cfg, err := config.Parse("p.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
`+policy+`
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := servicefile.Parse("s.xml", []byte(`<service name="S" version="1.0">
  <method name="a"/>
  <method name="b"/>
  <data>
    <value name="level" type="float" default="0.5"/>
    <value name="mode" type="string" default="on"/>
    <value name="open" type="bool" default="true"/>
  </data>
</service>`))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := services.NewDataTree(desc.Data)
	if err != nil {
		t.Fatal(err)
	}
	hs := &hostedService{cfg: config.Service{Name: "S"}, desc: desc, data: tree}
	return &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}, hs
}

func TestPolicyRules(t *testing.T) {
	s, hs := policyServer(t, `<authentication><token name="ops" value="t1"/></authentication>
  <policy>
    <deny service="S" client="bad"/>
    <allow service="S" token="ops"/>
    <allow service="*" identity="CN=alice" methods="a"/>
    <allow service="S" methods="b" when="level &gt;= 0.5"/>
    <allow service="S" methods="b" when="mode == off"/>
  </policy>`)
	ops := principal{clientID: "c1", token: "ops"}
	alice := principal{clientID: "c2", identity: "CN=alice"}
	bad := principal{clientID: "bad", token: "ops"}
	anon := principal{}
	cases := []struct {
		who    principal
		method string
		ok     bool
	}{
		{ops, "", true}, {ops, "a", true}, {ops, "b", true},
		{bad, "", false}, {bad, "a", false}, // the deny comes first
		{alice, "", true}, {alice, "a", true}, {alice, "b", true}, // b through the level condition
		{anon, "a", false}, {anon, "b", true},
	}
	for _, c := range cases {
		err := s.authorize(c.who, hs, c.method)
		if (err == nil) != c.ok {
			t.Errorf("%v %q: %v, want allowed=%v", c.who, c.method, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "denied") {
			t.Errorf("denial does not say so: %v", err)
		}
	}
	// The condition follows the runtime data.
	hs.data.Set("level", 0.25)
	if err := s.authorize(anon, hs, "b"); err == nil || !strings.Contains(err.Error(), "p.xml:") {
		t.Fatalf("b with level 0.25: %v, want a denial naming the policy", err)
	}
	hs.data.Set("mode", "off")
	if err := s.authorize(anon, hs, "b"); err != nil {
		t.Fatalf("b with mode off: %v", err)
	}
}

func TestPolicyDefaultAndNone(t *testing.T) {
	s, hs := policyServer(t, `<policy default="allow"><deny service="S" methods="a"/></policy>`)
	if err := s.authorize(principal{}, hs, "b"); err != nil {
		t.Fatalf("default allow: %v", err)
	}
	if err := s.authorize(principal{}, hs, "a"); err == nil {
		t.Fatal("deny rule ignored")
	}
	s, hs = policyServer(t, ``)
	if err := s.authorize(principal{}, hs, "a"); err != nil {
		t.Fatalf("no policy: %v", err)
	}
}
