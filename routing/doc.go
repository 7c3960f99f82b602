// Package routing is Connect's routing documents: what a client gets when it
// starts a session, saying which links to open and which resource (a method,
// an event, runtime data) travels on which link.
//
// A service declares its routing in its service file (<routing> and
// <endpoints>, read by services/servicefile). Resolve turns that
// declaration into the concrete Document of one session, given where the
// service runs (inside the server, or under a remoteservicerunner), what the
// runner offers and what the client can use; when a resource has no way to
// travel it returns a *ResolveError that names the service, the link, the
// bearer and what to configure. Generate writes a Document as XML, Parse
// reads one back (Parse(Generate(d)) equals d) and reports every problem of
// a bad document at once as "file:line: message", and Table answers, per
// message, which route a resource takes.
//
// The format, the resolution rules and every message are described in
// docs/ROUTING.md. Inputs are bounded (document size, links, routes,
// alternatives), so a hostile document costs little and gets a clear error;
// Parse never panics.
//
// The package imports nothing of Connect but the bearer contract, the
// service-file model and the shared XML reader, so that the server, the
// client and the runner can all use it.
package routing
