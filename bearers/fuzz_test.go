package bearers_test

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

// FuzzParseEndpoint checks that ParseEndpoint never panics, that every
// endpoint it accepts formats (String) to a URL that parses back to the same
// endpoint and has a HostPort net can split, and that every rejection wraps
// ErrBadEndpoint. Seeds: testdata/fuzz/FuzzParseEndpoint.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"tcp://127.0.0.1:9500", "ssl://[::1]:9501", "ws://127.0.0.1:9600/connect", "udp://127.0.0.1:0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := bearers.ParseEndpoint(s)
		if err != nil {
			if !errors.Is(err, bearers.ErrBadEndpoint) {
				t.Fatalf("ParseEndpoint(%q) = %v, which does not wrap ErrBadEndpoint", s, err)
			}
			if !ep.IsZero() {
				t.Fatalf("ParseEndpoint(%q) returned %#v with its error", s, ep)
			}
			return
		}
		if ep.IsZero() || ep.Scheme == "" || ep.Host == "" || ep.Port < 0 || ep.Port > 65535 {
			t.Fatalf("ParseEndpoint(%q) accepted an incomplete endpoint %#v", s, ep)
		}
		if err := bearers.ValidateScheme(ep.Scheme); err != nil {
			t.Fatalf("ParseEndpoint(%q) accepted scheme %q: %v", s, ep.Scheme, err)
		}
		if ep.Path != "" && ep.Path[0] != '/' {
			t.Fatalf("ParseEndpoint(%q) accepted path %q", s, ep.Path)
		}
		str := ep.String()
		back, err := bearers.ParseEndpoint(str)
		if err != nil {
			t.Fatalf("ParseEndpoint(%q) = %#v, whose String %q does not parse: %v", s, ep, str, err)
		}
		if back != ep {
			t.Fatalf("ParseEndpoint(%q) = %#v, String %q, which parses to %#v", s, ep, str, back)
		}
		if again := back.String(); again != str {
			t.Fatalf("String is not stable: %q, then %q", str, again)
		}
		host, port, err := net.SplitHostPort(ep.HostPort())
		if err != nil || host != ep.Host || port != strconv.Itoa(ep.Port) {
			t.Fatalf("HostPort of %#v = %q, which splits to %q, %q, %v", ep, ep.HostPort(), host, port, err)
		}
	})
}
