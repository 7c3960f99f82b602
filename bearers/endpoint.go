package bearers

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Endpoint is a bearer address: scheme://host:port with an optional path, for
// example tcp://127.0.0.1:9500, ssl://[::1]:9501 or ws://127.0.0.1:9600/connect.
// The zero value is not a valid endpoint.
type Endpoint struct {
	Scheme string // lower case, names the bearer
	Host   string // host name or IP literal, without brackets
	Port   int    // 0 means "any port" when listening
	Path   string // optional, for bearers that use one (starts with "/")
}

// ParseEndpoint parses "scheme://host:port[/path]". The port is required
// (0 is allowed, meaning "pick one" for Listen).
func ParseEndpoint(s string) (Endpoint, error) {
	if !strings.Contains(s, "://") {
		return Endpoint{}, fmt.Errorf("%w %q: want scheme://host:port, like tcp://127.0.0.1:9500", ErrBadEndpoint, s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w %q: %v", ErrBadEndpoint, s, err)
	}
	if u.Scheme == "" || u.Opaque != "" || u.Host == "" {
		return Endpoint{}, fmt.Errorf("%w %q: want scheme://host:port, like tcp://127.0.0.1:9500", ErrBadEndpoint, s)
	}
	if err := ValidateScheme(u.Scheme); err != nil {
		return Endpoint{}, fmt.Errorf("%w %q: %v", ErrBadEndpoint, s, err)
	}
	// url.Parse drops an empty query ("x?") and an empty fragment ("x#").
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return Endpoint{}, fmt.Errorf("%w %q: user info, query and fragment are not allowed", ErrBadEndpoint, s)
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w %q: %v (a port is required)", ErrBadEndpoint, s, err)
	}
	if host == "" {
		return Endpoint{}, fmt.Errorf("%w %q: empty host; name an address such as 127.0.0.1 (nothing listens on all interfaces unless you say 0.0.0.0)", ErrBadEndpoint, s)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return Endpoint{}, fmt.Errorf("%w %q: port %q is not a number from 0 to 65535", ErrBadEndpoint, s, portStr)
	}
	if u.Path != "" && u.Path[0] != '/' {
		return Endpoint{}, fmt.Errorf("%w %q: path must start with /", ErrBadEndpoint, s)
	}
	return Endpoint{Scheme: u.Scheme, Host: host, Port: port, Path: u.Path}, nil
}

// MustParseEndpoint is ParseEndpoint for constants in tests and defaults; it
// panics on a bad endpoint.
func MustParseEndpoint(s string) Endpoint {
	ep, err := ParseEndpoint(s)
	if err != nil {
		panic(err)
	}
	return ep
}

// HostPort returns "host:port" with IPv6 literals bracketed, as net.Dial wants.
func (e Endpoint) HostPort() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String formats the endpoint as a URL that ParseEndpoint parses back to e.
// What ParseEndpoint unescaped is escaped again: the path, and in the host
// "%" and " ", which only an IPv6 zone can hold (written [fe80::1%25eth0]).
// url.URL.String is not used for the host: it escapes non-ASCII bytes, which
// url.Parse then refuses in a zone.
func (e Endpoint) String() string {
	if e.Scheme == "" {
		return ""
	}
	host := hostEscaper.Replace(e.Host)
	return e.Scheme + "://" + net.JoinHostPort(host, strconv.Itoa(e.Port)) + (&url.URL{Path: e.Path}).EscapedPath()
}

var hostEscaper = strings.NewReplacer("%", "%25", " ", "%20")

// IsZero reports whether e is the zero Endpoint.
func (e Endpoint) IsZero() bool { return e == Endpoint{} }

// WithAddr returns e with host and port taken from a bound address (for
// example a listener's Addr after listening on port 0).
func (e Endpoint) WithAddr(a net.Addr) Endpoint {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return e
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return e
	}
	e.Host, e.Port = host, p
	return e
}

// CheckEndpoint is what a host-and-port bearer (no path) checks before
// Listen or Dial: the scheme is the bearer's and the endpoint has no path.
// op ("listen" or "dial") and the bearer type go into the error, which wraps
// ErrBadEndpoint.
func (i Info) CheckEndpoint(op string, ep Endpoint) error {
	switch {
	case ep.Scheme != i.Scheme:
		return fmt.Errorf("%s: %s %s: %w: scheme %q, this bearer serves %q", i.Type, op, ep, ErrBadEndpoint, ep.Scheme, i.Scheme)
	case ep.Host == "":
		return fmt.Errorf("%s: %s %s: %w: empty host", i.Type, op, ep, ErrBadEndpoint)
	case ep.Port < 0 || ep.Port > 65535:
		return fmt.Errorf("%s: %s %s: %w: port %d out of range", i.Type, op, ep, ErrBadEndpoint, ep.Port)
	case ep.Path != "":
		return fmt.Errorf("%s: %s %s: %w: %s endpoints have no path; use %s://host:port", i.Type, op, ep, ErrBadEndpoint, i.Scheme, i.Scheme)
	}
	return nil
}
