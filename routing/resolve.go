package routing

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/xmlpos"
	"github.com/bearerkit/connect/services/servicefile"
)

// UDPBearer is the default bearer of the built-in unreliable link.
const UDPBearer = "connect.bearer.udp"

// Situation is what Resolve needs to know about one session beyond the
// service file: where the service runs, what its runner offers and what the
// client can use.
type Situation struct {
	// Session is the session's id (1 to MaxSessionLen visible ASCII
	// characters).
	Session string
	// Token is the per-session secret the client presents on every direct
	// link and the runner checks (1 to MaxTokenLen visible ASCII
	// characters). Required when Runner is not nil.
	Token string
	// Runner describes the remoteservicerunner that hosts the service; nil
	// when the service runs inside the server, in which case every
	// resource goes over the server link whatever the service file says.
	Runner *Runner
	// Client is what the client can use.
	Client Client
}

// Runner is what a service's runner offers for direct links.
type Runner struct {
	// Bearer is the type of the bearer the runner used to reach the
	// server, for example connect.bearer.tcp: the built-in reliable link
	// uses it unless a route names another. Required.
	Bearer string
	// Bearers are the bearers the runner accepts direct links over, with
	// their schemes and capabilities. A link whose bearer is not among them
	// cannot be used; a link whose bearer has bearers.Secure is marked
	// Secure in the document.
	Bearers []bearers.Info
	// Endpoints are the addresses clients dial to reach the runner's
	// built-in links, when they differ from the service file's <endpoints>
	// (the runner's --listen addresses, or the ports it bound). Nil means
	// the service file's <endpoints>. For each bearer the first endpoint
	// with its scheme is used.
	Endpoints []bearers.Endpoint
	// Links are the addresses clients dial for declared <link>s, by link
	// name, where they differ from the <link>'s endpoint. Nil means the
	// endpoints the service file gives.
	Links map[string]bearers.Endpoint
}

// Client is what the client starting the session can use.
type Client struct {
	// Bearers are the bearer types the client has adapters for, such as
	// connect.bearer.tcp. A direct link needs an adapter of its bearer's
	// type.
	Bearers []string
	// Direct reports whether the client can open direct links to the
	// service's runner at all; when false, only the server link can be
	// used.
	Direct bool
}

// Resolve turns the routing declaration of svc (its <routing> and
// <endpoints>) into the routing document of one session.
//
// For a service inside the server (s.Runner nil) the document has the
// server link only, and every resource goes over it. For a remote service
// each route of the declaration becomes a route of the document, in file
// order, on the first of its alternatives the session can use; the later
// usable ones become its fallbacks. An alternative can be used when its
// link is the server link, or when the client can open direct links, the
// runner offers the link's bearer at an address a client can dial, and the
// client has an adapter of that bearer type. Built-in links resolve as
// follows: reliable uses the route's bearer or Runner.Bearer; unreliable
// uses the route's bearer or connect.bearer.udp; both are dialled at the
// runner's first endpoint of the bearer's scheme. A declared <link> uses
// its own bearer and endpoint. The document lists the server link and every
// link a route or a fallback names, in order of first use.
//
// When a route has no usable alternative, Resolve returns a *ResolveError
// naming the service, the routes, the links, the bearers and what to
// configure; when several routes fail for different reasons, it returns
// one *ResolveError per reason, joined with errors.Join. Bad arguments (an
// invalid session id or token, a nil service) give a plain error.
func Resolve(svc *servicefile.Service, s Situation) (*Document, error) {
	if svc == nil {
		return nil, errors.New("routing: Resolve: nil service")
	}
	if !validSession(s.Session) {
		return nil, fmt.Errorf("routing: service %q: session id %q is not valid (%s)", svc.Name, s.Session, sessionRule)
	}
	if servicefile.ValidateServiceName(svc.Name) != nil {
		return nil, fmt.Errorf("routing: service name %q is not valid (%s)", svc.Name, serviceNameRule)
	}
	d := &Document{Session: s.Session, Service: svc.Name, Links: []Link{{Name: ServerLinkName, Kind: ServerLink}}}
	if s.Runner == nil {
		return d, nil
	}
	if !validToken(s.Token) {
		return nil, fmt.Errorf("routing: service %q: the session's token is not valid (%s)", svc.Name, tokenRule)
	}
	if msg := bearerProblem(s.Runner.Bearer); msg != "" {
		return nil, fmt.Errorf("routing: service %q: the bearer the runner used to reach the server: %s", svc.Name, msg)
	}
	for _, info := range s.Runner.Bearers {
		if err := info.Validate(); err != nil {
			return nil, fmt.Errorf("routing: service %q: a bearer the runner offers: %v", svc.Name, err)
		}
		if scheme, stock := stockSchemes[info.Type]; stock && info.Scheme != scheme {
			return nil, fmt.Errorf("routing: service %q: the runner offers %s with scheme %q; it serves %q", svc.Name, info.Type, info.Scheme, scheme)
		}
	}

	r := &resolver{svc: svc, s: s, links: map[linkKey]linkResult{}, doc: d}
	var failures []*ResolveError
	byKey := map[string]*ResolveError{}
	for _, rt := range svc.Routing.Routes {
		route, problems := r.route(rt)
		if problems != nil {
			ref := RouteRef{Resource: rt.Resource, Line: rt.Line}
			key := problemsKey(problems)
			if e := byKey[key]; e != nil {
				e.Routes = append(e.Routes, ref)
				continue
			}
			e := &ResolveError{Service: svc.Name, File: svc.File, Routes: []RouteRef{ref}, Problems: problems}
			byKey[key] = e
			failures = append(failures, e)
			continue
		}
		d.Routes = append(d.Routes, route)
	}
	switch len(failures) {
	case 0:
	case 1:
		return nil, failures[0]
	default:
		errs := make([]error, len(failures))
		for i, e := range failures {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	if len(d.Links) > MaxLinks {
		return nil, fmt.Errorf("service %q: this session needs %d links, and a routing document holds at most %d; declare fewer links, or fewer bearers on the built-in ones", svc.Name, len(d.Links), MaxLinks)
	}
	return d, nil
}

// ResolveError says why a service's routing cannot be resolved for a
// session: one or more routes none of whose alternatives the session can
// use, all for the same reasons.
type ResolveError struct {
	// Service is the service's name.
	Service string
	// File is the service file's name, as the service was loaded.
	File string
	// Routes are the routes that cannot be resolved, in file order.
	Routes []RouteRef
	// Problems say why, one per alternative of the routes, in order.
	Problems []LinkProblem
}

// RouteRef names a route of a service file.
type RouteRef struct {
	// Resource is what the route routes.
	Resource servicefile.Resource
	// Line is the line of the <route> in the service file.
	Line int
}

// LinkProblem says why a session cannot use one link.
type LinkProblem struct {
	// Link is the link as the service file names it: "reliable",
	// "unreliable" or a declared <link>'s name.
	Link string
	// Bearer is the bearer type the link needs, "" when the problem is not
	// about a bearer (the client cannot open direct links at all).
	Bearer string
	// Reason says what is missing, for example "the client has no
	// connect.bearer.ssl adapter".
	Reason string
	// Fix says what to configure, for example "add one to the client
	// configuration".
	Fix string
}

// String gives the problem as one phrase: `link "secure" needs bearer
// connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add
// one to the client configuration`.
func (p LinkProblem) String() string {
	head := fmt.Sprintf("link %q is a direct link", p.Link)
	if p.Bearer != "" {
		head = fmt.Sprintf("link %q needs bearer %s", p.Link, p.Bearer)
	}
	return head + "; " + p.Reason + " — " + p.Fix
}

// maxListedRoutes is how many routes a ResolveError names before "and N
// more".
const maxListedRoutes = 10

// Error gives the service, the routes (with their lines in the service
// file) and the problems, on one line.
func (e *ResolveError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %q: ", e.Service)
	for i, r := range e.Routes {
		if i == maxListedRoutes {
			fmt.Fprintf(&b, " and %d more", len(e.Routes)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.Resource.String())
		if r.Line > 0 {
			if e.File != "" {
				fmt.Fprintf(&b, " (%s:%d)", e.File, r.Line)
			} else {
				fmt.Fprintf(&b, " (line %d)", r.Line)
			}
		}
	}
	b.WriteString(": ")
	if len(e.Problems) == 1 {
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "none of its %d alternatives can be used: ", len(e.Problems))
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%d. %s", i+1, p)
	}
	return b.String()
}

func problemsKey(ps []LinkProblem) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, "\x00")
}

// resolver resolves the routes of one service for one session.
type resolver struct {
	svc   *servicefile.Service
	s     Situation
	links map[linkKey]linkResult // resolved so far
	doc   *Document
}

// linkKey is a link as an alternative names it: its name and the bearer
// the alternative asks for ("" for the default).
type linkKey struct{ name, bearer string }

// linkResult is a resolved link, or why it cannot be used.
type linkResult struct {
	link    Link
	problem *LinkProblem
}

// route resolves one route: the document's route, or the problems of all
// its alternatives when none can be used.
func (r *resolver) route(rt *servicefile.Route) (Route, []LinkProblem) {
	var usable []Fallback
	var problems []LinkProblem
	picked := 0
	for i, alt := range rt.Alternatives {
		res := r.link(alt)
		if res.problem != nil {
			problems = append(problems, *res.problem)
			continue
		}
		if len(usable) == 0 {
			picked = i + 1
		}
		dup := false
		for _, u := range usable {
			// Two alternatives may come to the same link (reliable, and
			// reliable with the runner's own bearer): keep the first.
			dup = dup || u.Link == res.link.Name
		}
		if !dup {
			usable = append(usable, Fallback{Link: res.link.Name, LinkType: alt.LinkType})
			r.use(res.link)
		}
	}
	if len(usable) == 0 {
		return Route{}, problems
	}
	out := Route{Resource: rt.Resource, Link: usable[0].Link, LinkType: usable[0].LinkType}
	if len(rt.Alternatives) > 1 {
		out.Alternative = picked
	}
	if len(usable) > 1 {
		out.Fallbacks = usable[1:]
	}
	return out, nil
}

// use adds l to the document's links, once.
func (r *resolver) use(l Link) {
	if r.doc.Link(l.Name) == nil {
		r.doc.Links = append(r.doc.Links, l)
	}
}

// link resolves the link an alternative names, once per link and bearer.
func (r *resolver) link(alt servicefile.Alternative) linkResult {
	if alt.Link == servicefile.LinkServer {
		return linkResult{link: r.doc.Links[0]}
	}
	key := linkKey{alt.Link, alt.Bearer}
	if res, done := r.links[key]; done {
		return res
	}
	res := r.resolveLink(alt.Link, alt.Bearer)
	r.links[key] = res
	return res
}

func (r *resolver) resolveLink(name, bearer string) linkResult {
	fail := func(bearer, reason, fix string, args ...any) linkResult {
		return linkResult{problem: &LinkProblem{Link: name, Bearer: bearer, Reason: reason, Fix: fmt.Sprintf(fix, args...)}}
	}
	runner := r.s.Runner
	if !r.s.Client.Direct {
		return fail("", "the client cannot open direct links to the runner",
			`let it reach the runner, or end the route with <alternative link="server"/> so that such clients go through the server`)
	}

	declared := r.svc.Routing.Link(name)
	docName := name
	var addr bearers.Endpoint
	var addrFrom string // where addr came from, for the fix
	switch {
	case declared != nil:
		bearer = declared.Bearer
		addr, addrFrom = declared.Endpoint, fmt.Sprintf("the endpoint of <link name=%q> in the service file", name)
		if a, ok := runner.Links[name]; ok {
			addr, addrFrom = a, "the address the runner reports for it"
		}
	case name == servicefile.LinkReliable && (bearer == "" || bearer == runner.Bearer):
		bearer = runner.Bearer
	case name == servicefile.LinkUnreliable && (bearer == "" || bearer == UDPBearer):
		bearer = UDPBearer
	default:
		// A built-in link on a bearer other than its default is a link of
		// its own.
		docName = name + ":" + bearer
	}

	var info *bearers.Info
	for i := range runner.Bearers {
		if runner.Bearers[i].Type == bearer {
			info = &runner.Bearers[i]
			break
		}
	}
	if info == nil {
		listen := "URL"
		switch {
		case declared != nil:
			listen = declared.Endpoint.String()
		case stockSchemes[bearer] != "":
			listen = stockSchemes[bearer] + "://HOST:PORT"
		}
		return fail(bearer, "the runner does not offer it", "start the runner with an endpoint of that bearer (remoteservicerunner --listen %s)", listen)
	}

	if declared == nil {
		found := false
		if runner.Endpoints != nil {
			for _, ep := range runner.Endpoints {
				if ep.Scheme == info.Scheme {
					addr, addrFrom, found = ep, "the runner's endpoints", true
					break
				}
			}
			if !found {
				return fail(bearer, fmt.Sprintf("the runner has no %s endpoint", info.Scheme),
					"start the runner with one (remoteservicerunner --listen %s://HOST:PORT)", info.Scheme)
			}
		} else {
			for _, ep := range r.svc.Endpoints {
				if ep.Address.Scheme == info.Scheme {
					addr, addrFrom, found = ep.Address, "the service file's <endpoints>", true
					break
				}
			}
			if !found {
				return fail(bearer, fmt.Sprintf("the service has no %s endpoint", info.Scheme),
					"add <endpoint address=\"%s://HOST:PORT\"/> to the service file's <endpoints>", info.Scheme)
			}
		}
	} else if addr.Scheme != info.Scheme {
		return fail(bearer, fmt.Sprintf("its endpoint %s has scheme %s, and the runner's %s serves %s", addr, addr.Scheme, bearer, info.Scheme),
			"correct the bearer or the endpoint of <link name=%q> in the service file", name)
	}
	if msg := addressProblem(addr); msg != "" {
		return fail(bearer, "the address "+msg, "give the address clients dial in %s", addrFrom)
	}
	if !slices.Contains(r.s.Client.Bearers, bearer) {
		return fail(bearer, fmt.Sprintf("the client has no %s adapter", bearer), "add one to the client configuration")
	}
	return linkResult{link: Link{
		Name:    docName,
		Kind:    DirectLink,
		Bearer:  bearer,
		Address: addr,
		Secure:  info.Capabilities.Has(bearers.Secure),
		Token:   r.s.Token,
	}}
}

// addressProblem says why a document cannot give addr as a direct link's
// address, or "".
func addressProblem(addr bearers.Endpoint) string {
	text := addr.String()
	if len(text) > maxAddressLen {
		return fmt.Sprintf("%s is longer than %d characters", xmlpos.Quote(text), maxAddressLen)
	}
	if back, err := bearers.ParseEndpoint(text); err != nil || back != addr {
		return fmt.Sprintf("%s is not a valid endpoint", xmlpos.Quote(text))
	}
	return dialProblem(addr)
}
