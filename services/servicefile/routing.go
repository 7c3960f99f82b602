package servicefile

import (
	"fmt"
	"strings"

	"github.com/bearerkit/connect/internal/xmlpos"
)

// builtinLinks are the links every service has, in the order messages list
// them.
var builtinLinks = []string{LinkServer, LinkReliable, LinkUnreliable}

var linkTypes = []string{string(Direct), string(Server), string(DirectAndServer)}

// routing validates <routing>: its links first, since routes name them.
func (p *parser) routing(c *xmlpos.Node) {
	r := p.s.Routing
	r.Line = c.Line
	c.Attrs("description")
	c.NoText()
	r.Description, _ = c.Attr("description")
	var links, routes []*xmlpos.Node
	c.Children(routingChildren, routingChildren, func(tag string, _ int, n *xmlpos.Node) {
		if tag == "link" {
			links = append(links, n)
		} else {
			routes = append(routes, n)
		}
	})
	for i, n := range links {
		if i == maxLinks {
			n.Add(n.Line, "%s: more than %d links in a service", n.Path, maxLinks)
			break
		}
		p.link(n)
	}
	seen := map[Resource]int{}
	for i, n := range routes {
		if i == maxRoutes {
			n.Add(n.Line, "%s: more than %d routes in a service", n.Path, maxRoutes)
			break
		}
		p.route(n, seen)
	}
}

// link validates a <link>.
func (p *parser) link(c *xmlpos.Node) {
	named(c, "routing/link ")
	c.Leaf(linkAttrs...)
	c.Require("name", "bearer", "endpoint")
	l := &Link{Line: c.Line}
	l.Description, _ = c.Attr("description")
	if v, has := c.Attr("bearer"); has {
		if err := validateBearer(v); err != nil {
			c.Add(c.AttrLine("bearer"), "%s attribute %q: %v", c.Path, "bearer", err)
		}
		l.Bearer = v
	}
	if v, has := c.Attr("endpoint"); has {
		ep, err := parseEndpoint(v)
		if err != nil {
			c.Add(c.AttrLine("endpoint"), "%s attribute %q: %v", c.Path, "endpoint", err)
		}
		l.Endpoint = ep
	}
	name, nameOK := ident(c)
	switch {
	case !nameOK:
		return
	case contains(builtinLinks, name):
		c.Add(c.AttrLine("name"), "%s: %q is a built-in link (%s); choose another name", c.Path, name, strings.Join(builtinLinks, ", "))
		return
	case p.s.Routing.Link(name) != nil:
		c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, p.s.Routing.Link(name).Line)
		return
	}
	l.Name = name
	// A link with a bad bearer or endpoint is still declared, so that the
	// routes naming it are not reported as naming an unknown link.
	p.s.Routing.Links = append(p.s.Routing.Links, l)
}

// route validates a <route> and its alternatives. seen maps the resources
// routed so far to their lines.
func (p *parser) route(c *xmlpos.Node, seen map[Resource]int) {
	c.Attrs(routeAttrs...)
	c.NoText()
	rt := &Route{Line: c.Line}
	rt.Description, _ = c.Attr("description")

	var kinds []string
	for _, k := range []string{"method", "event", "data"} {
		if c.Has(k) {
			kinds = append(kinds, k)
		}
	}
	resOK := false
	switch len(kinds) {
	case 0:
		c.Add(c.Line, "%s: name what is routed with method=\"...\", event=\"...\" or data=\"...\"", c.Path)
	case 1:
		rt.Resource, resOK = p.resource(c, kinds[0])
	default:
		c.Add(c.AttrLine(kinds[1]), "%s: %s given; a route names one resource", c.Path, strings.Join(kinds, " and "))
	}
	if resOK {
		if l := seen[rt.Resource]; l != 0 {
			c.Add(c.Line, "%s: %s is already routed at line %d", c.Path, rt.Resource, l)
			resOK = false
		} else {
			seen[rt.Resource] = c.Line
		}
	}
	kind := rt.Resource.Kind
	if !resOK {
		kind = 0
	}

	var alts []*xmlpos.Node
	c.Children([]string{"alternative"}, []string{"alternative"}, func(_ string, index int, a *xmlpos.Node) {
		if index > maxAlternatives {
			if index == maxAlternatives+1 {
				a.Add(a.Line, "%s: more than %d alternatives in a route", a.Path, maxAlternatives)
			}
			return
		}
		a.Leaf(altAttrs...)
		alts = append(alts, a)
	})
	inline := c.Has("link") || c.Has("linkType") || c.Has("bearer")
	switch {
	case inline && len(alts) > 0:
		// Reported, and both checked, so that every problem shows at once.
		c.Add(c.Line, "%s: give link, linkType and bearer on the <route> or on its <alternative>s, not both", c.Path)
		alts = append([]*xmlpos.Node{c}, alts...)
		resOK = false
	case inline:
		alts = []*xmlpos.Node{c}
	case len(alts) == 0:
		c.Add(c.Line, "%s: no link; give link=\"...\" or linkType=\"...\", or <alternative> elements", c.Path)
		return
	}
	type prev struct {
		path string
		line int
	}
	used := map[[2]string]prev{}
	var server *prev
	for _, a := range alts {
		alt, ok := p.alternative(a, kind, rt.Resource)
		if !ok {
			continue
		}
		if server != nil {
			a.Add(a.Line, "%s: never used: %s (line %d) goes through the server, which always works; put the server last", a.Path, server.path, server.line)
			continue
		}
		key := [2]string{alt.Link, alt.Bearer}
		if o, dup := used[key]; dup {
			a.Add(a.Line, "%s: same link as %s (line %d)", a.Path, o.path, o.line)
			continue
		}
		used[key] = prev{a.Path, a.Line}
		if alt.Link == LinkServer {
			server = &prev{a.Path, a.Line}
		}
		rt.Alternatives = append(rt.Alternatives, alt)
	}
	if resOK {
		p.s.Routing.Routes = append(p.s.Routing.Routes, rt)
	}
}

// resource reads the resource a route names in attribute key (method,
// event or data) and checks that the service has it.
func (p *parser) resource(c *xmlpos.Node, key string) (Resource, bool) {
	v, _ := c.Attr(key)
	line := c.AttrLine(key)
	var res Resource
	switch key {
	case "method":
		res.Kind = MethodResource
	case "event":
		res.Kind = EventResource
	default:
		res.Kind = DataResource
	}
	res.Name = v
	if v == All {
		return res, true
	}
	switch res.Kind {
	case MethodResource:
		if p.methods[v] != nil {
			return res, true
		}
		names := make([]string, len(p.s.Methods))
		for i, m := range p.s.Methods {
			names[i] = m.Name
		}
		c.Add(line, "%s attribute %q: no method %s in the service (%s)", c.Path, key, xmlpos.Quote(v), listOr(names, "methods"))
	case EventResource:
		if p.events[v] != nil {
			return res, true
		}
		names := make([]string, len(p.s.Events))
		for i, e := range p.s.Events {
			names[i] = e.Name
		}
		c.Add(line, "%s attribute %q: no event %s in the service (%s)", c.Path, key, xmlpos.Quote(v), listOr(names, "events"))
	case DataResource:
		if msg := p.dataPath(v); msg != "" {
			c.Add(line, "%s attribute %q: %s", c.Path, key, msg)
			return res, false
		}
		return res, true
	}
	return res, false
}

// dataPath checks that a route's data path names a node of runtime data,
// returning what is wrong otherwise.
func (p *parser) dataPath(path string) string {
	parts := strings.Split(path, ".")
	for _, part := range parts {
		if !validName(part) {
			return fmt.Sprintf("%s is not a data path (%s)", xmlpos.Quote(path), pathRule)
		}
	}
	cur := p.s.Data
	for _, part := range parts {
		next := cur.Child(part)
		if next != nil {
			cur = next
			continue
		}
		if cur.Kind != ObjectNode {
			return fmt.Sprintf("no runtime data %s: %s is a %s", xmlpos.Quote(path), cur.Path, cur.Kind)
		}
		names := make([]string, len(cur.Children))
		for i, ch := range cur.Children {
			names[i] = ch.Name
		}
		where, label := "at the top level", "top level"
		if cur.Path != "" {
			where, label = "in "+cur.Path, "in "+cur.Path
		}
		if len(names) == 0 {
			return fmt.Sprintf("no runtime data %s (nothing %s)", xmlpos.Quote(path), where)
		}
		return fmt.Sprintf("no runtime data %s (%s: %s)", xmlpos.Quote(path), label, nameList(names))
	}
	return ""
}

// alternative validates one alternative of a route: an <alternative>, or
// the <route> itself when it gives link, linkType or bearer. kind is the
// routed resource's kind, 0 when that is unknown.
func (p *parser) alternative(c *xmlpos.Node, kind ResourceKind, res Resource) (Alternative, bool) {
	alt := Alternative{Line: c.Line}
	link, hasLink := c.Attr("link")
	lt, hasType := c.Attr("linkType")
	bearer, hasBearer := c.Attr("bearer")
	if !hasLink && !hasType {
		c.Add(c.Line, "%s: give link=\"...\" or linkType=\"...\"", c.Path)
		return alt, false
	}
	ok := true
	if hasType {
		if contains(linkTypes, lt) {
			alt.LinkType = LinkType(lt)
		} else {
			c.Add(c.AttrLine("linkType"), "%s attribute %q: %s unknown (known: %s)", c.Path, "linkType", xmlpos.Quote(lt), strings.Join(linkTypes, ", "))
			ok = false
		}
	}
	var declared *Link
	if hasLink {
		declared = p.s.Routing.Link(link)
		if declared == nil && !contains(builtinLinks, link) {
			known := append([]string(nil), builtinLinks...)
			for _, l := range p.s.Routing.Links {
				known = append(known, l.Name)
			}
			c.Add(c.AttrLine("link"), "%s attribute %q: unknown link %s (known: %s)", c.Path, "link", xmlpos.Quote(link), nameList(known))
			ok = false
		}
		alt.Link = link
	}
	if !ok {
		return alt, false
	}
	// Fill in what was left out.
	switch {
	case !hasLink && alt.LinkType == Server:
		alt.Link = LinkServer
	case !hasLink:
		alt.Link = LinkReliable
	case !hasType && alt.Link == LinkServer:
		alt.LinkType = Server
	case !hasType:
		alt.LinkType = Direct
	}
	typeLine := c.AttrLine("linkType")
	switch {
	case alt.Link == LinkServer && alt.LinkType != Server:
		c.Add(typeLine, "%s attribute %q: %s needs a direct link, and link \"server\" goes through the server", c.Path, "linkType", alt.LinkType)
		return alt, false
	case alt.Link != LinkServer && alt.LinkType == Server:
		c.Add(typeLine, "%s attribute %q: server goes through the server, and link %q is direct; leave link out or write link=\"server\"", c.Path, "linkType", alt.Link)
		return alt, false
	case alt.LinkType == DirectAndServer && kind != 0 && kind != DataResource:
		c.Add(typeLine, "%s attribute %q: direct_and_server is for runtime data only, not for %s", c.Path, "linkType", res)
		return alt, false
	}
	if hasBearer {
		line := c.AttrLine("bearer")
		switch {
		case alt.Link == LinkServer:
			c.Add(line, "%s attribute %q: the server link has no bearer of its own; bearer is for direct links", c.Path, "bearer")
			return alt, false
		case declared != nil:
			c.Add(line, "%s attribute %q: link %s names its bearer at line %d; leave bearer out here", c.Path, "bearer", declared.Name, declared.Line)
			return alt, false
		}
		if err := validateBearer(bearer); err != nil {
			c.Add(line, "%s attribute %q: %v", c.Path, "bearer", err)
			return alt, false
		}
		alt.Bearer = bearer
	}
	return alt, true
}

// listOr lists names for a message, or says there are none.
func listOr(names []string, what string) string {
	if len(names) == 0 {
		return "it has no " + what
	}
	return what + ": " + nameList(names)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
