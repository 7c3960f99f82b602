package config

import (
	"net"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/services/servicefile"
)

// Tunnel is a <tunnel> element: a named TCP target that clients reach
// through resumable tunnel streams (docs/TUNNEL.md).
type Tunnel struct {
	// Name is what clients ask for (connectclient tunnel --service NAME);
	// it follows the rules of service names and differs from every
	// <service>'s, so that a <policy> rule's service="NAME" is unambiguous.
	Name string
	// Target is the backend's TCP address, "host:port".
	Target string
	// ProxyV2 says the server writes a PROXY protocol v2 header first on
	// each backend connection.
	ProxyV2 bool
	// Line is the element's line in the configuration file.
	Line int
}

// tunnel reads <tunnel name=".." target="host:port" [proxyProtocol="v2|off"]/>.
// seen maps tunnel names to their lines.
func (p *parser) tunnel(n *node, seen map[string]int) (Tunnel, bool) {
	p.leaf(n, "name", "target", "proxyProtocol")
	t := Tunnel{Line: n.line}
	if !p.require(n, "name", "target") {
		return t, false
	}
	ok := true
	t.Name = n.attrs["name"]
	if err := servicefile.ValidateServiceName(t.Name); err != nil {
		p.add(p.line(n, "name"), "%s attribute %q: %v", n.path, "name", strings.Replace(err.Error(), "service name", "tunnel name", 1))
		ok = false
	} else if l, dup := seen[t.Name]; dup {
		p.add(p.line(n, "name"), "%s: tunnel %q is already declared at line %d", n.path, t.Name, l)
		ok = false
	} else {
		seen[t.Name] = n.line
	}
	t.Target = n.attrs["target"]
	if err := checkTarget(t.Target); err != "" {
		p.add(p.line(n, "target"), "%s attribute %q: %q %s", n.path, "target", t.Target, err)
		ok = false
	}
	switch v, has := n.attrs["proxyProtocol"]; {
	case !has || v == "off":
	case v == "v2":
		t.ProxyV2 = true
	default:
		p.add(p.line(n, "proxyProtocol"), "%s attribute %q: %q is not v2 or off", n.path, "proxyProtocol", v)
		ok = false
	}
	return t, ok
}

// checkTarget says what is wrong with a tunnel target, or "".
func checkTarget(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "is not host:port (an IPv6 address goes in brackets: [::1]:6379)"
	}
	if host == "" {
		return "has no host"
	}
	if strings.ContainsAny(host, " /\\@?#") {
		return "has a host that is neither a name nor an IP address"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "has no port from 1 to 65535"
	}
	return ""
}

// checkTunnelNames reports tunnels named like a service: a policy rule
// could not tell them apart.
func (p *parser) checkTunnelNames(s *Server) {
	for _, t := range s.Tunnels {
		for _, sv := range s.Services {
			if sv.Name == t.Name {
				p.add(t.Line, "tunnel %q has the name of the service declared at line %d; tunnels and services need distinct names (policy rules name both)", t.Name, sv.Line)
			}
		}
	}
}
