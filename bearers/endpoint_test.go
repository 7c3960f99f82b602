package bearers_test

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

func TestParseEndpointValid(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     bearers.Endpoint
		hostPort string
		str      string // String(); "" means same as in
	}{
		{"tcp://127.0.0.1:9500", bearers.Endpoint{Scheme: "tcp", Host: "127.0.0.1", Port: 9500}, "127.0.0.1:9500", ""},
		{"ssl://[::1]:9501", bearers.Endpoint{Scheme: "ssl", Host: "::1", Port: 9501}, "[::1]:9501", ""},
		{"ws://host:80/path", bearers.Endpoint{Scheme: "ws", Host: "host", Port: 80, Path: "/path"}, "host:80", ""},
		{"udp://127.0.0.1:0", bearers.Endpoint{Scheme: "udp", Host: "127.0.0.1", Port: 0}, "127.0.0.1:0", ""},
		{"tcp://0.0.0.0:65535", bearers.Endpoint{Scheme: "tcp", Host: "0.0.0.0", Port: 65535}, "0.0.0.0:65535", ""},
		{"ws://example.com:8080/a/b/", bearers.Endpoint{Scheme: "ws", Host: "example.com", Port: 8080, Path: "/a/b/"}, "example.com:8080", ""},
		{"coap+tcp://h:1", bearers.Endpoint{Scheme: "coap+tcp", Host: "h", Port: 1}, "h:1", ""},
		// Schemes are case-insensitive (RFC 3986); the parsed form is lower case.
		{"TCP://127.0.0.1:9500", bearers.Endpoint{Scheme: "tcp", Host: "127.0.0.1", Port: 9500}, "127.0.0.1:9500", "tcp://127.0.0.1:9500"},
		// Leading zeros in the port are accepted and normalised.
		{"tcp://h:0009500", bearers.Endpoint{Scheme: "tcp", Host: "h", Port: 9500}, "h:9500", "tcp://h:9500"},
		// An IPv6 zone: HostPort is what net.Dial wants, String re-escapes the %.
		{"tcp://[fe80::1%25eth0]:9500", bearers.Endpoint{Scheme: "tcp", Host: "fe80::1%eth0", Port: 9500}, "[fe80::1%eth0]:9500", ""},
		// Zones may hold spaces (Windows) and non-ASCII bytes, raw or escaped as url.Parse allows.
		{"tcp://[fe80::1%25Local%20Area%201]:1", bearers.Endpoint{Scheme: "tcp", Host: "fe80::1%Local Area 1", Port: 1}, "[fe80::1%Local Area 1]:1", ""},
		{"tcp://[fe80::1%25\xe9]:1", bearers.Endpoint{Scheme: "tcp", Host: "fe80::1%\xe9", Port: 1}, "[fe80::1%\xe9]:1", ""},
		// Escapes in the path are decoded, and String encodes them again.
		{"ws://h:80/a%20b%3F%23%25", bearers.Endpoint{Scheme: "ws", Host: "h", Port: 80, Path: "/a b?#%"}, "h:80", ""},
	} {
		ep, err := bearers.ParseEndpoint(tc.in)
		if err != nil {
			t.Errorf("ParseEndpoint(%q): %v", tc.in, err)
			continue
		}
		if ep != tc.want {
			t.Errorf("ParseEndpoint(%q) = %#v, want %#v", tc.in, ep, tc.want)
		}
		if got := ep.HostPort(); got != tc.hostPort {
			t.Errorf("ParseEndpoint(%q).HostPort() = %q, want %q", tc.in, got, tc.hostPort)
		}
		wantStr := tc.str
		if wantStr == "" {
			wantStr = tc.in
		}
		if got := ep.String(); got != wantStr {
			t.Errorf("ParseEndpoint(%q).String() = %q, want %q", tc.in, got, wantStr)
		}
		back, err := bearers.ParseEndpoint(ep.String())
		if err != nil || back != ep {
			t.Errorf("ParseEndpoint(%q) = %#v, %v; want the endpoint it came from, %#v", ep.String(), back, err, ep)
		}
		if ep.IsZero() {
			t.Errorf("ParseEndpoint(%q).IsZero() = true", tc.in)
		}
		if m := bearers.MustParseEndpoint(tc.in); m != ep {
			t.Errorf("MustParseEndpoint(%q) = %#v, ParseEndpoint gave %#v", tc.in, m, ep)
		}
	}
}

func TestParseEndpointInvalid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // in the message, besides the input itself
	}{
		{"", "want scheme://host:port"},
		{"127.0.0.1:9500", "want scheme://host:port"}, // no scheme
		{"localhost:9500", "want scheme://host:port"}, // no scheme; url.Parse would call localhost the scheme
		{"//127.0.0.1:9500", "want scheme://host:port"},
		{"tcp:foo", "want scheme://host:port"}, // opaque
		{"tcp:foo://h:1", "want scheme://host:port"},
		{"tcp:///path", "want scheme://host:port"}, // no host at all
		{"tcp://127.0.0.1", "port is required"},
		{"tcp://[::1]", "port is required"},
		{"tcp://:9500", "empty host"},
		{"tcp://[]:9500", "invalid host"},
		{"tcp://h:70000", `port "70000" is not a number from 0 to 65535`},
		{"tcp://h:65536", `port "65536"`},
		{"tcp://h:", `port ""`},
		{"tcp://h:-1", "invalid port"},
		{"tcp://h:1x", "invalid port"},
		{"tcp://h:1:2", "too many colons"},
		{"tcp://user@h:1", "user info, query and fragment are not allowed"},
		{"tcp://user:pw@h:1", "user info, query and fragment are not allowed"},
		{"tcp://h:1?x=1", "user info, query and fragment are not allowed"},
		{"tcp://h:1?", "user info, query and fragment are not allowed"},
		{"tcp://h:1#frag", "user info, query and fragment are not allowed"},
		{"tcp://h:1#", "user info, query and fragment are not allowed"},
		{"tcp://h:1/p?q", "user info, query and fragment are not allowed"},
		{"t_p://h:1", "first path segment"}, // '_' cannot be in a scheme
		{"1tcp://h:1", "first path segment"},
		{"tcp://h h:1", "invalid character"},
		{"tcp://h:1/\x00", "invalid control character"},
		{"ws://h:1/a%zz", "invalid URL escape"},
		{"tcp://[fe80::1%eth0]:1", "invalid URL escape"}, // the zone's % must be written %25
	} {
		ep, err := bearers.ParseEndpoint(tc.in)
		if err == nil {
			t.Errorf("ParseEndpoint(%q) = %#v, want an error", tc.in, ep)
			continue
		}
		if !errors.Is(err, bearers.ErrBadEndpoint) {
			t.Errorf("ParseEndpoint(%q) error %q does not wrap ErrBadEndpoint", tc.in, err)
		}
		if !ep.IsZero() {
			t.Errorf("ParseEndpoint(%q) returned %#v with its error", tc.in, ep)
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("ParseEndpoint(%q) error %q does not say %q", tc.in, msg, tc.want)
		}
		if !strings.Contains(msg, strconv.Quote(tc.in)) {
			t.Errorf("ParseEndpoint(%q) error %q does not quote the input", tc.in, msg)
		}
	}
}

func TestMustParseEndpointPanics(t *testing.T) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, bearers.ErrBadEndpoint) {
			t.Fatalf("MustParseEndpoint(bad) panicked with %v, want an ErrBadEndpoint error", r)
		}
	}()
	bearers.MustParseEndpoint("tcp://nohost")
}

func TestEndpointZero(t *testing.T) {
	var z bearers.Endpoint
	if !z.IsZero() {
		t.Error("zero Endpoint: IsZero() = false")
	}
	if s := z.String(); s != "" {
		t.Errorf("zero Endpoint: String() = %q, want empty", s)
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) }

func TestWithAddr(t *testing.T) {
	ep := bearers.MustParseEndpoint("ws://127.0.0.1:0/connect")
	for _, tc := range []struct {
		addr net.Addr
		want bearers.Endpoint
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 43210},
			bearers.Endpoint{Scheme: "ws", Host: "127.0.0.1", Port: 43210, Path: "/connect"}},
		{&net.UDPAddr{IP: net.IPv6loopback, Port: 9},
			bearers.Endpoint{Scheme: "ws", Host: "::1", Port: 9, Path: "/connect"}},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 7, Zone: "eth0"},
			bearers.Endpoint{Scheme: "ws", Host: "fe80::1%eth0", Port: 7, Path: "/connect"}},
		// Addresses that are not host:port leave the endpoint unchanged.
		{&net.UnixAddr{Name: "/tmp/sock", Net: "unix"}, ep},
		{fakeAddr("host:http"), ep},
		{fakeAddr(""), ep},
	} {
		got := ep.WithAddr(tc.addr)
		if got != tc.want {
			t.Errorf("WithAddr(%v) = %#v, want %#v", tc.addr, got, tc.want)
		}
		if back, err := bearers.ParseEndpoint(got.String()); err != nil || back != got {
			t.Errorf("WithAddr(%v).String() = %q re-parses to %#v, %v", tc.addr, got.String(), back, err)
		}
	}
	if ep.Port != 0 || ep.Host != "127.0.0.1" {
		t.Errorf("WithAddr changed its receiver: %#v", ep)
	}
}

// A real listener on port 0: WithAddr gives the endpoint a client can dial.
func TestWithAddrListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ep := bearers.MustParseEndpoint("tcp://127.0.0.1:0").WithAddr(ln.Addr())
	if ep.Port == 0 || ep.HostPort() != ln.Addr().String() {
		t.Fatalf("WithAddr(%v) = %v", ln.Addr(), ep)
	}
	c, err := net.Dial("tcp", ep.HostPort())
	if err != nil {
		t.Fatalf("dial %s: %v", ep, err)
	}
	c.Close()
}

func TestInfoCheckEndpoint(t *testing.T) {
	info := bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}
	for _, s := range []string{"tcp://127.0.0.1:9500", "tcp://[::1]:0", "tcp://localhost:65535"} {
		if err := info.CheckEndpoint("dial", bearers.MustParseEndpoint(s)); err != nil {
			t.Errorf("CheckEndpoint(%s) = %v", s, err)
		}
	}
	for _, tc := range []struct {
		ep   bearers.Endpoint
		want string
	}{
		{bearers.MustParseEndpoint("udp://127.0.0.1:1"), `scheme "udp", this bearer serves "tcp"`},
		{bearers.MustParseEndpoint("tcp://127.0.0.1:1/x"), "tcp endpoints have no path; use tcp://host:port"},
		{bearers.Endpoint{Scheme: "tcp", Port: 1}, "empty host"},
		{bearers.Endpoint{Scheme: "tcp", Host: "h", Port: 70000}, "port 70000 out of range"},
		{bearers.Endpoint{Scheme: "tcp", Host: "h", Port: -1}, "port -1 out of range"},
		{bearers.Endpoint{}, `scheme "", this bearer serves "tcp"`},
	} {
		err := info.CheckEndpoint("listen", tc.ep)
		if !errors.Is(err, bearers.ErrBadEndpoint) {
			t.Errorf("CheckEndpoint(%#v) = %v; want ErrBadEndpoint", tc.ep, err)
			continue
		}
		for _, w := range []string{"connect.bearer.tcp", "listen", tc.want} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("CheckEndpoint(%#v) = %q; does not say %q", tc.ep, err, w)
			}
		}
	}
}
