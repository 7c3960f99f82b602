package routing

import (
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/services/servicefile"
)

// Bounds on a routing document. Parse rejects a document beyond them, and
// Resolve never produces one.
const (
	// MaxSize is the largest document Parse accepts, in bytes.
	MaxSize = 1 << 20
	// MaxLinks is the most links a document lists, the server link
	// included.
	MaxLinks = 64
	// MaxRoutes is the most routes a document lists (as many as a service
	// file may declare).
	MaxRoutes = 1024
	// MaxAlternatives is the most alternatives a route may have had in its
	// declaration: the picked one's number plus its fallbacks never exceed
	// it.
	MaxAlternatives = 8
	// MaxSessionLen is the longest session id.
	MaxSessionLen = 64
	// MaxTokenLen is the longest link token.
	MaxTokenLen = 256
	// MaxLinkNameLen is the longest link name.
	MaxLinkNameLen = 200
)

// ServerLinkName is the name of the server link, which every document has.
const ServerLinkName = servicefile.LinkServer

// Document is the routing document of one session: the links the client
// opens and which link each resource travels on. The zero value is not a
// valid document; Resolve and Parse return valid ones.
type Document struct {
	// Session is the session's id: 1 to MaxSessionLen visible ASCII
	// characters.
	Session string
	// Service is the service's name.
	Service string
	// Links are the links of the session, in document order. Exactly one
	// is the server link (named "server", Kind ServerLink); the others are
	// direct links to the service's runner. Names are unique.
	Links []Link
	// Routes map resources to links, in document order; nil when every
	// resource goes over the server link. A resource is routed at most
	// once; see Lookup for which route a resource takes.
	Routes []Route
}

// LinkKind says whether a link goes through the server or directly to the
// service's runner.
type LinkKind string

// The link kinds.
const (
	// ServerLink is the client's connection to the server; messages on it
	// are relayed by the server.
	ServerLink LinkKind = "server"
	// DirectLink is a connection the client opens to the service's runner.
	DirectLink LinkKind = "direct"
)

// Link is one link of a session.
type Link struct {
	// Name identifies the link in routes: "server" for the server link;
	// for a direct link the service file's name for it ("reliable",
	// "unreliable" or a declared <link>'s name), followed by ":" and the
	// bearer type when a route asked a built-in link for a bearer other
	// than its default ("reliable:connect.bearer.tcp" when the runner
	// reached the server over ssl). At most MaxLinkNameLen letters, digits,
	// '_', '.', ':' and '-'.
	Name string
	// Kind is ServerLink or DirectLink.
	Kind LinkKind
	// Bearer is the bearer type a direct link is opened with, for example
	// connect.bearer.ssl; "" for the server link. The client needs an
	// adapter of that type.
	Bearer string
	// Address is where the client dials a direct link (its scheme is the
	// bearer's); the zero Endpoint for the server link. Its host is named
	// (not 0.0.0.0 or ::) and its port is not 0.
	Address bearers.Endpoint
	// Secure says that the link's bearer authenticates the runner and
	// encrypts (bearers.Secure): the client must refuse to open the link
	// over anything less. Always false for the server link.
	Secure bool
	// Token is the per-session secret the client presents when it opens a
	// direct link and the runner checks: 1 to MaxTokenLen visible ASCII
	// characters, opaque; "" for the server link. Never log it.
	Token string
}

// Route maps one resource to the link it travels on.
type Route struct {
	// Resource is a method or an event by name, a node of runtime data by
	// its dot path (covering everything below it), or all resources of a
	// kind (Name servicefile.All).
	Resource servicefile.Resource
	// Link names the link in Document.Links.
	Link string
	// LinkType is servicefile.Server for the server link, Direct or
	// DirectAndServer (runtime data only) for a direct one.
	LinkType servicefile.LinkType
	// Alternative is the number (from 1) of the alternative Resolve picked
	// among those the service declared for the resource, or 0 when the
	// declaration gave only one way.
	Alternative int
	// Fallbacks are the later alternatives this session can use, most
	// preferred first: if the route's direct link cannot be opened, the
	// client uses the first fallback whose link it can open. Nil when there
	// are none. The last one may be the server link, which always works.
	Fallbacks []Fallback
}

// Fallback is a later alternative of a route.
type Fallback struct {
	// Link names the link in Document.Links.
	Link string
	// LinkType is as in Route.
	LinkType servicefile.LinkType
}

// Link returns the link called name, or nil.
func (d *Document) Link(name string) *Link {
	for i := range d.Links {
		if d.Links[i].Name == name {
			return &d.Links[i]
		}
	}
	return nil
}

// ServerRoute is the route of a resource that no route covers: the server
// link.
func ServerRoute(res servicefile.Resource) Route {
	return Route{Resource: res, Link: ServerLinkName, LinkType: servicefile.Server}
}

// Lookup returns the route that res takes: the most specific route that
// covers it. A method's or an event's own route beats the route of all
// methods or events ("*"); for runtime data the route with the longest path
// that is the node's path or a dot-prefix of it wins ("player.queue" covers
// "player.queue" and "player.queue.3"), and "*" comes last. A resource that
// no route covers goes over the server link (ServerRoute). res.Name may be
// servicefile.All, which finds the "*" route of its kind.
//
// Lookup scans the routes; to route every message of a session, build a
// Table once instead.
func (d *Document) Lookup(res servicefile.Resource) Route {
	var best *Route
	bestLen := -1
	for i := range d.Routes {
		r := &d.Routes[i]
		if r.Resource.Kind != res.Kind {
			continue
		}
		n := r.Resource.Name
		switch {
		case n == res.Name:
			return *r
		case n == servicefile.All:
			if bestLen < 0 {
				best, bestLen = r, 0
			}
		case res.Kind == servicefile.DataResource && res.Name != servicefile.All &&
			len(n) > bestLen && strings.HasPrefix(res.Name, n) && len(res.Name) > len(n) && res.Name[len(n)] == '.':
			best, bestLen = r, len(n)
		}
	}
	if best != nil {
		return *best
	}
	return ServerRoute(res)
}

// Table answers which route a resource takes in one document, in time that
// does not grow with the number of routes. It is safe for concurrent use.
// The Routes it returns share their Fallbacks with the document; do not
// modify them.
type Table struct {
	byName [servicefile.DataResource + 1]map[string]*Route
	all    [servicefile.DataResource + 1]*Route
}

// NewTable indexes the routes of d. d must not change while the Table is
// used.
func NewTable(d *Document) *Table {
	t := &Table{}
	for i := range d.Routes {
		r := &d.Routes[i]
		k := r.Resource.Kind
		if k < servicefile.MethodResource || k > servicefile.DataResource {
			continue
		}
		if r.Resource.Name == servicefile.All {
			if t.all[k] == nil {
				t.all[k] = r
			}
			continue
		}
		if t.byName[k] == nil {
			t.byName[k] = map[string]*Route{}
		}
		if t.byName[k][r.Resource.Name] == nil {
			t.byName[k][r.Resource.Name] = r
		}
	}
	return t
}

// Lookup returns the route res takes, with the precedence of
// Document.Lookup.
func (t *Table) Lookup(res servicefile.Resource) Route {
	k := res.Kind
	if k < servicefile.MethodResource || k > servicefile.DataResource {
		return ServerRoute(res)
	}
	if res.Name != servicefile.All {
		m := t.byName[k]
		name := res.Name
		for m != nil {
			if r := m[name]; r != nil {
				return *r
			}
			if k != servicefile.DataResource {
				break
			}
			i := strings.LastIndexByte(name, '.')
			if i < 0 {
				break
			}
			name = name[:i]
		}
	}
	if r := t.all[k]; r != nil {
		return *r
	}
	return ServerRoute(res)
}
