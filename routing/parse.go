package routing

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/xmlpos"
	"github.com/bearerkit/connect/services/servicefile"
)

// Problem is one thing wrong with a routing document: File, Line and Msg;
// String gives "file:line: message". It is the type service files and the
// server configuration report too.
type Problem = xmlpos.Problem

// Problems is every problem found in a routing document, sorted by line.
// Parse returns it as its error.
type Problems = xmlpos.Problems

// Element and attribute names, in the order documents and messages give
// them.
const rootTag = "routing"

var (
	rootAttrs     = []string{"session", "service"}
	rootChildren  = []string{"link", "route"}
	linkAttrs     = []string{"name", "kind", "bearer", "address", "secure", "token"}
	directAttrs   = []string{"bearer", "address", "secure", "token"}
	routeAttrs    = []string{"method", "event", "data", "link", "linkType", "alternative"}
	fallbackAttrs = []string{"link", "linkType"}
	linkKinds     = []string{string(ServerLink), string(DirectLink)}
	linkTypes     = []string{string(servicefile.Direct), string(servicefile.Server), string(servicefile.DirectAndServer)}
	resourceAttrs = []string{"method", "event", "data"}
)

// Rules in words, for messages and docs/ROUTING.md.
const (
	sessionRule     = "1 to 64 visible ASCII characters"
	tokenRule       = "1 to 256 visible ASCII characters"
	serviceNameRule = "dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters"
	linkNameRule    = "letters, digits, _ . : and -, at most 200 characters"
	nameRule        = "a letter or _ followed by letters, digits and _, at most 64 characters"
	pathRule        = "names separated by dots, like player.volume"
)

const (
	maxDepth       = 8    // element nesting; deeper is garbage
	maxProblems    = 1000 // problems listed; the rest are counted
	maxNameLen     = 64   // method, event and data-node names
	maxAddressLen  = 256  // addresses
	maxListedNames = 10   // names listed in a message before "..."
)

// Parse reads a routing document held in memory; file names it in
// problems. It returns the Document, or a nil Document and Problems listing
// everything wrong with it, sorted by line. It never panics and allocates
// in proportion to len(data), which may be at most MaxSize.
func Parse(file string, data []byte) (*Document, error) {
	return parse(file, data, nil)
}

// ParseOffered is Parse, and also checks the document against the bearers
// the service's runner offers: every direct link's bearer must be one of
// offered, and its address must have that bearer's scheme. Use it where the
// offer is known, for example when a runner's document is relayed.
func ParseOffered(file string, data []byte, offered []bearers.Info) (*Document, error) {
	if offered == nil {
		offered = []bearers.Info{}
	}
	return parse(file, data, offered)
}

func parse(file string, data []byte, offered []bearers.Info) (*Document, error) {
	p := &parser{
		doc: xmlpos.Read(file, data, xmlpos.Options{
			Root:        rootTag,
			What:        "a routing document",
			MaxSize:     MaxSize,
			MaxDepth:    maxDepth,
			MaxProblems: maxProblems,
		}),
		offered: offered,
		d:       &Document{},
	}
	if root := p.doc.Root(); root != nil {
		p.routing(root)
	}
	if err := p.doc.Err(); err != nil {
		return nil, err
	}
	return p.d, nil
}

// parser validates one routing document and builds its Document.
type parser struct {
	doc     *xmlpos.Doc
	offered []bearers.Info // nil: no offer to check against
	d       *Document
	links   map[string]linkDecl // declared links by name
	names   []string            // declared links' names, in document order
}

// linkDecl is what routes need to know of a declared link.
type linkDecl struct {
	kind LinkKind // "" when the kind was missing or bad
	line int
}

// routing validates the root element: links first, since routes name them.
func (p *parser) routing(root *xmlpos.Node) {
	root.Attrs(rootAttrs...)
	root.Require(rootAttrs...)
	if v, ok := root.Attr("session"); ok {
		if validSession(v) {
			p.d.Session = v
		} else {
			root.Add(root.AttrLine("session"), "%s attribute %q: %s is not a session id (%s)", root.Path, "session", xmlpos.Quote(v), sessionRule)
		}
	}
	if v, ok := root.Attr("service"); ok {
		if servicefile.ValidateServiceName(v) == nil {
			p.d.Service = v
		} else {
			root.Add(root.AttrLine("service"), "%s attribute %q: %s is not a service name (%s)", root.Path, "service", xmlpos.Quote(v), serviceNameRule)
		}
	}
	root.NoText()
	var links, routes []*xmlpos.Node
	root.Children(rootChildren, rootChildren, func(tag string, _ int, c *xmlpos.Node) {
		if tag == "link" {
			links = append(links, c)
		} else {
			routes = append(routes, c)
		}
	})
	p.links = map[string]linkDecl{}
	server := false
	for i, c := range links {
		if v, ok := c.RawAttr("name"); ok && v == ServerLinkName {
			server = true
		}
		if i == MaxLinks {
			c.Add(c.Line, "%s: more than %d links in a routing document", c.Path, MaxLinks)
			break
		}
		p.link(c)
	}
	if !server {
		root.Add(root.Line, "%s: no server link; every routing document has <link name=%q kind=%q/>", root.Path, ServerLinkName, ServerLink)
	}
	seen := map[servicefile.Resource]int{}
	for i, c := range routes {
		if i == MaxRoutes {
			c.Add(c.Line, "%s: more than %d routes in a routing document", c.Path, MaxRoutes)
			break
		}
		p.route(c, seen)
	}
}

// link validates a <link>.
func (p *parser) link(c *xmlpos.Node) {
	if v, ok := c.RawAttr("name"); ok && validLinkName(v) {
		c.Path = "link " + v
	}
	c.Leaf(linkAttrs...)
	c.Require("name", "kind")
	l := Link{}
	ok := true

	name, hasName := c.Attr("name")
	if hasName && !validLinkName(name) {
		c.Add(c.AttrLine("name"), "%s attribute %q: %s is not a link name (%s)", c.Path, "name", xmlpos.Quote(name), linkNameRule)
		hasName = false
	}
	ok = ok && hasName
	kind, hasKind := c.Attr("kind")
	switch {
	case !hasKind:
		ok = false
	case !slices.Contains(linkKinds, kind):
		c.Add(c.AttrLine("kind"), "%s attribute %q: %s unknown (known: %s)", c.Path, "kind", xmlpos.Quote(kind), strings.Join(linkKinds, ", "))
		hasKind, ok = false, false
	case hasName && name == ServerLinkName && kind != string(ServerLink):
		c.Add(c.AttrLine("kind"), "%s attribute %q: the link named %s is the server link; write kind=%q", c.Path, "kind", ServerLinkName, ServerLink)
		hasKind, ok = false, false
	case hasName && name != ServerLinkName && kind == string(ServerLink):
		c.Add(c.AttrLine("kind"), "%s attribute %q: the server link is named %s, and every other link is direct", c.Path, "kind", ServerLinkName)
		hasKind, ok = false, false
	default:
		l.Kind = LinkKind(kind)
	}

	if hasKind && l.Kind == ServerLink {
		for _, a := range directAttrs {
			if c.Has(a) {
				c.Add(c.AttrLine(a), "%s attribute %q: the server link has none; bearer, address, secure and token are for direct links", c.Path, a)
				ok = false
			}
		}
	}
	if hasKind && l.Kind == DirectLink && !c.Require("bearer", "address", "token") {
		ok = false
	}
	if v, has := c.Attr("bearer"); has {
		if msg := bearerProblem(v); msg != "" {
			c.Add(c.AttrLine("bearer"), "%s attribute %q: %s", c.Path, "bearer", msg)
			ok = false
		} else {
			l.Bearer = v
		}
	}
	if v, has := c.Attr("address"); has {
		ep, msg := dialAddress(v)
		if msg != "" {
			c.Add(c.AttrLine("address"), "%s attribute %q: %s", c.Path, "address", msg)
			ok = false
		} else {
			l.Address = ep
		}
	}
	if v, has := c.Attr("secure"); has {
		switch v {
		case "true":
			l.Secure = true
		case "false":
		default:
			c.Add(c.AttrLine("secure"), "%s attribute %q: %s is not true or false", c.Path, "secure", xmlpos.Quote(v))
			ok = false
		}
	}
	if v, has := c.Attr("token"); has {
		// The token is a secret: say what is wrong without quoting it.
		if validToken(v) {
			l.Token = v
		} else {
			c.Add(c.AttrLine("token"), "%s attribute %q: not a token (%s); the value is not shown", c.Path, "token", tokenRule)
			ok = false
		}
	}
	if l.Bearer != "" && !l.Address.IsZero() {
		if attr, msg := p.offerProblem(l.Bearer, l.Address); msg != "" {
			c.Add(c.AttrLine(attr), "%s attribute %q: %s", c.Path, attr, msg)
			ok = false
		}
	}

	if !hasName {
		return
	}
	if o, dup := p.links[name]; dup {
		c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, o.line)
		return
	}
	// A bad link is still declared, so that the routes naming it are not
	// reported as naming an unknown link.
	decl := linkDecl{line: c.Line}
	if hasKind {
		decl.kind = l.Kind
	}
	p.links[name] = decl
	p.names = append(p.names, name)
	if ok {
		l.Name = name
		p.d.Links = append(p.d.Links, l)
	}
}

// offerProblem checks a direct link's bearer and address against the
// runner's offer (when there is one) and against the stock bearers, whose
// schemes are fixed. It returns the attribute at fault and what is wrong,
// or "", "".
func (p *parser) offerProblem(bearer string, addr bearers.Endpoint) (attr, msg string) {
	if p.offered != nil {
		for _, info := range p.offered {
			if info.Type == bearer {
				if addr.Scheme != info.Scheme {
					return "address", fmt.Sprintf("%s has scheme %s, and %s serves %s", addr, addr.Scheme, bearer, info.Scheme)
				}
				return "", ""
			}
		}
		types := make([]string, len(p.offered))
		for i, info := range p.offered {
			types[i] = info.Type
		}
		what := "it offers none"
		if len(types) > 0 {
			what = "it offers " + nameList(types)
		}
		return "bearer", fmt.Sprintf("%s is not offered by the runner (%s)", bearer, what)
	}
	if s, stock := stockSchemes[bearer]; stock && addr.Scheme != s {
		return "address", fmt.Sprintf("%s has scheme %s, and %s serves %s", addr, addr.Scheme, bearer, s)
	}
	return "", ""
}

// stockSchemes are the schemes of the stock bearers (bearers/tcp, udp,
// ssl), which no other bearer may serve under the same type.
var stockSchemes = map[string]string{
	"connect.bearer.tcp": "tcp",
	"connect.bearer.udp": "udp",
	"connect.bearer.ssl": "ssl",
}

// route validates a <route> and its fallbacks. seen maps the resources
// routed so far to their lines.
func (p *parser) route(c *xmlpos.Node, seen map[servicefile.Resource]int) {
	c.Attrs(routeAttrs...)
	c.NoText()
	c.Require("link", "linkType")
	rt := Route{}
	ok := true

	var kinds []string
	for _, k := range resourceAttrs {
		if c.Has(k) {
			kinds = append(kinds, k)
		}
	}
	resOK := false
	switch len(kinds) {
	case 0:
		c.Add(c.Line, "%s: name what is routed with method=\"...\", event=\"...\" or data=\"...\"", c.Path)
	case 1:
		rt.Resource, resOK = resource(c, kinds[0])
	default:
		c.Add(c.AttrLine(kinds[1]), "%s: %s given; a route names one resource", c.Path, strings.Join(kinds, " and "))
	}
	if resOK {
		if l := seen[rt.Resource]; l != 0 {
			c.Add(c.Line, "%s: %s is already routed at line %d", c.Path, rt.Resource, l)
			ok = false
		} else {
			seen[rt.Resource] = c.Line
		}
	} else {
		ok = false
	}
	kind := servicefile.ResourceKind(0)
	if resOK {
		kind = rt.Resource.Kind
	}

	link, lt, wayOK := p.way(c, kind, rt.Resource)
	ok = ok && wayOK
	rt.Link, rt.LinkType = link, lt

	if v, has := c.Attr("alternative"); has {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAlternatives || strconv.Itoa(n) != v {
			c.Add(c.AttrLine("alternative"), "%s attribute %q: %s is not an alternative's number (1 to %d)", c.Path, "alternative", xmlpos.Quote(v), MaxAlternatives)
			ok = false
		} else {
			rt.Alternative = n
		}
	}

	// Fallbacks: links must differ from the route's and from each other,
	// and nothing may follow the server link, which always works.
	type prev struct {
		path string
		line int
	}
	used := map[string]prev{}
	var server *prev
	if wayOK {
		self := prev{fmt.Sprintf("%s link %q", c.Path, rt.Link), c.Line}
		used[rt.Link] = self
		if rt.Link == ServerLinkName {
			server = &self
		}
	}
	limit := MaxAlternatives - max(rt.Alternative, 1)
	c.Children([]string{"fallback"}, []string{"fallback"}, func(_ string, index int, f *xmlpos.Node) {
		f.Leaf(fallbackAttrs...)
		switch {
		case !c.Has("alternative") && index == 1:
			f.Add(f.Line, "%s: a route with fallbacks says which alternative was picked (alternative=\"N\" on the <route>)", f.Path)
			ok = false
		case index == limit+1:
			room := fmt.Sprintf("%d fallbacks", limit)
			if limit == 1 {
				room = "1 fallback"
			}
			f.Add(f.Line, "%s: more than %d alternatives in a route (alternative %d was picked, which leaves room for %s)", f.Path, MaxAlternatives, max(rt.Alternative, 1), room)
			ok = false
		}
		if index > limit {
			return
		}
		f.Require(fallbackAttrs...)
		link, lt, fOK := p.way(f, kind, rt.Resource)
		if !fOK {
			ok = false
			return
		}
		if server != nil {
			f.Add(f.Line, "%s: never used: %s (line %d) goes through the server, which always works; put the server last", f.Path, server.path, server.line)
			ok = false
			return
		}
		if o, dup := used[link]; dup {
			f.Add(f.Line, "%s: link %q again, as in %s (line %d)", f.Path, link, o.path, o.line)
			ok = false
			return
		}
		used[link] = prev{f.Path, f.Line}
		if link == ServerLinkName {
			server = &prev{f.Path, f.Line}
		}
		rt.Fallbacks = append(rt.Fallbacks, Fallback{Link: link, LinkType: lt})
	})
	if ok {
		p.d.Routes = append(p.d.Routes, rt)
	}
}

// way validates the link and linkType attributes of a <route> or a
// <fallback>. kind is the routed resource's kind, 0 when that is unknown.
func (p *parser) way(c *xmlpos.Node, kind servicefile.ResourceKind, res servicefile.Resource) (string, servicefile.LinkType, bool) {
	link, hasLink := c.Attr("link")
	lt, hasType := c.Attr("linkType")
	ok := hasLink && hasType
	var decl linkDecl
	if hasLink {
		d, known := p.links[link]
		if !known {
			c.Add(c.AttrLine("link"), "%s attribute %q: unknown link %s (known: %s)", c.Path, "link", xmlpos.Quote(link), nameList(p.names))
			ok = false
		}
		decl = d
	}
	if hasType && !slices.Contains(linkTypes, lt) {
		c.Add(c.AttrLine("linkType"), "%s attribute %q: %s unknown (known: %s)", c.Path, "linkType", xmlpos.Quote(lt), strings.Join(linkTypes, ", "))
		return link, "", false
	}
	if !ok {
		return link, servicefile.LinkType(lt), false
	}
	typeLine := c.AttrLine("linkType")
	switch t := servicefile.LinkType(lt); {
	case decl.kind == "":
		// The link itself is bad, which is reported already.
		return link, t, false
	case decl.kind == ServerLink && t != servicefile.Server:
		c.Add(typeLine, "%s attribute %q: %s needs a direct link, and link %q goes through the server", c.Path, "linkType", t, link)
		return link, t, false
	case decl.kind == DirectLink && t == servicefile.Server:
		c.Add(typeLine, "%s attribute %q: server goes through the server, and link %q is direct", c.Path, "linkType", link)
		return link, t, false
	case t == servicefile.DirectAndServer && kind != 0 && kind != servicefile.DataResource:
		c.Add(typeLine, "%s attribute %q: direct_and_server is for runtime data only, not for %s", c.Path, "linkType", res)
		return link, t, false
	}
	return link, servicefile.LinkType(lt), true
}

// resource reads the resource a route names in attribute key (method, event
// or data).
func resource(c *xmlpos.Node, key string) (servicefile.Resource, bool) {
	v, _ := c.Attr(key)
	line := c.AttrLine(key)
	res := servicefile.Resource{Name: v}
	switch key {
	case "method":
		res.Kind = servicefile.MethodResource
	case "event":
		res.Kind = servicefile.EventResource
	default:
		res.Kind = servicefile.DataResource
	}
	if v == servicefile.All {
		return res, true
	}
	if res.Kind == servicefile.DataResource {
		if servicefile.ValidPath(v) {
			return res, true
		}
		c.Add(line, "%s attribute %q: %s is not a data path (%s, or * for all runtime data)", c.Path, key, xmlpos.Quote(v), pathRule)
		return res, false
	}
	if servicefile.ValidName(v) {
		return res, true
	}
	article := "a"
	if key == "event" {
		article = "an"
	}
	c.Add(line, "%s attribute %q: %s is not %s %s name (%s, or * for every %s)", c.Path, key, xmlpos.Quote(v), article, key, nameRule, key)
	return res, false
}

// dialAddress parses an address a client dials: an endpoint with a named
// host and a port, returning what is wrong otherwise.
func dialAddress(s string) (bearers.Endpoint, string) {
	if len(s) > maxAddressLen {
		return bearers.Endpoint{}, fmt.Sprintf("%s is longer than %d characters", xmlpos.Quote(s), maxAddressLen)
	}
	ep, err := bearers.ParseEndpoint(s)
	if err != nil {
		return ep, strings.TrimPrefix(err.Error(), "bearers: ")
	}
	if msg := dialProblem(ep); msg != "" {
		return ep, msg
	}
	return ep, ""
}

// dialProblem says why a client cannot dial ep, or "".
func dialProblem(ep bearers.Endpoint) string {
	if ep.Port == 0 {
		return fmt.Sprintf("%s has port 0; a client needs the port to dial", ep)
	}
	if a, err := netip.ParseAddr(ep.Host); err == nil && a.IsUnspecified() {
		return fmt.Sprintf("%s names all interfaces (%s); a client needs an address to dial", ep, ep.Host)
	}
	return ""
}

// bearerProblem says what is wrong with a bearer type id, or "".
func bearerProblem(s string) string {
	if err := servicefile.ValidateBearer(s); err != nil {
		return err.Error()
	}
	return ""
}

// validSession reports whether s is a session id: 1 to MaxSessionLen
// visible ASCII characters.
func validSession(s string) bool { return visibleASCII(s, MaxSessionLen) }

// validToken reports whether s is a link token: 1 to MaxTokenLen visible
// ASCII characters.
func validToken(s string) bool { return visibleASCII(s, MaxTokenLen) }

func visibleASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validLinkName reports whether s is a link name.
func validLinkName(s string) bool {
	if s == "" || len(s) > MaxLinkNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// nameList lists names for a message, at most maxListedNames of them.
func nameList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	if len(names) > maxListedNames {
		return strings.Join(names[:maxListedNames], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}
