package core

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/bearerkit/connect/tunnel"
)

// The policy decides who opens which tunnel: rules naming the tunnel or *,
// with client selectors; rules with methods or when are skipped.
func TestAuthorizeTunnel(t *testing.T) {
	s, _ := policyServer(t, `<policy default="deny">
    <allow service="S" methods="a" token="ops"/>
    <deny service="redis" identity="CN=mallory"/>
    <allow service="redis" token="ops"/>
    <allow service="*" client="c-all"/>
  </policy>`)
	for _, tc := range []struct {
		pr   principal
		name string
		deny string // "" allowed, else a part of the error
	}{
		{principal{clientID: "c1", token: "ops"}, "redis", ""},
		{principal{clientID: "c1", token: "ops", identity: "CN=mallory"}, "redis", "(p.xml:5)"},
		{principal{clientID: "c1", token: "ops"}, "web", "no rule of the policy at p.xml:3 allows it"},
		{principal{clientID: "c-all"}, "web", ""},
		{principal{clientID: "c2"}, "redis", "client c2 may not open tunnel redis"},
	} {
		err := s.authorizeTunnel(tc.pr, tc.name)
		switch {
		case tc.deny == "" && err != nil:
			t.Errorf("%v opening %s: %v, want allowed", tc.pr, tc.name, err)
		case tc.deny != "" && (err == nil || !strings.Contains(err.Error(), tc.deny)):
			t.Errorf("%v opening %s: %v, want an error with %q", tc.pr, tc.name, err, tc.deny)
		}
	}
	noPolicy := *s.cfg
	noPolicy.Policy = nil
	if err := (&Server{cfg: &noPolicy}).authorizeTunnel(principal{clientID: "x"}, "any"); err != nil {
		t.Errorf("without a policy: %v", err)
	}
}

// The PROXY header carries the client's address, or says LOCAL when the
// bearer's addresses are not IP addresses.
func TestTunnelProxyHeader(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9500}
	h, err := tunnel.ParseProxyV2(bytes.NewReader(proxyHeader(src, dst)))
	if err != nil || h.Local || h.Source.String() != "192.0.2.7:40000" || h.Destination.String() != "127.0.0.1:9500" {
		t.Fatalf("header %+v, %v", h, err)
	}
	h, err = tunnel.ParseProxyV2(bytes.NewReader(proxyHeader(&net.UnixAddr{Name: "/x", Net: "unix"}, nil)))
	if err != nil || !h.Local {
		t.Fatalf("header for a non-IP bearer: %+v, %v; want LOCAL", h, err)
	}
}
