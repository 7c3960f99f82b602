package config

import "github.com/bearerkit/connect/services/servicefile"

// remoteServices reads <remoteServices [default="deny|allow"]> with
// <allow>/<deny> rules that say which clients may provide which services
// as runners. The rules take the policy's client selectors (client,
// identity, token) and a service name or *; first match wins.
func (p *parser) remoteServices(n *node) *Policy {
	p.attrs(n, "default")
	p.noText(n)
	pol := &Policy{Default: "deny", Line: n.line}
	if v, ok := n.attrs["default"]; ok {
		if v != "deny" && v != "allow" {
			p.add(p.line(n, "default"), "%s attribute %q: %q is not deny or allow", n.path, "default", v)
		} else {
			pol.Default = v
		}
	}
	p.children(n, []string{"allow", "deny"}, []string{"allow", "deny"}, func(tag string, r *node) {
		p.leaf(r, "service", "client", "identity", "token")
		if !p.require(r, "service") {
			return
		}
		rule := Rule{Allow: tag == "allow", Service: r.attrs["service"], Client: r.attrs["client"],
			Identity: r.attrs["identity"], Token: r.attrs["token"], Line: r.line}
		if rule.Service != "*" {
			if err := servicefile.ValidateServiceName(rule.Service); err != nil {
				p.add(p.line(r, "service"), "%s attribute %q: %v (or * for every service)", r.path, "service", err)
			}
		}
		pol.Rules = append(pol.Rules, rule)
	})
	return pol
}
