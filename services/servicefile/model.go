package servicefile

import (
	"strings"

	"github.com/bearerkit/connect/bearers"
)

// Service is a validated service file. Everything in it carries the line it
// was declared on, so that later checks (routing resolution, policies) can
// report "file:line: message" too.
type Service struct {
	// Name identifies the service: dot-separated words of letters, digits,
	// '_' and '-', each starting with a letter ("mediaplayer",
	// "com.example.player"). Clients address methods as NAME.METHOD.
	Name string
	// Version is MAJOR.MINOR or MAJOR.MINOR.PATCH.
	Version string
	// Description is free text for people ("" when not given).
	Description string
	// Types are the custom types (<struct>), in file order. Every use of a
	// custom type elsewhere in the service points to the *Type held here.
	Types []*Type
	// Methods are the methods, in file order.
	Methods []*Method
	// Events are the events, in file order.
	Events []*Event
	// Data is the root of the runtime-data tree: an object node with Name
	// and Path "" whose children are the top-level nodes. Never nil; its
	// Line is 0 when the file has no <data>.
	Data *DataNode
	// Routing is the service's routing declaration. Never nil; its Line is
	// 0 when the file has no <routing>, which means every resource is
	// routed over the server link.
	Routing *Routing
	// Endpoints are the peer-to-peer endpoints on which the service's
	// runner accepts direct links, in file order.
	Endpoints []*Endpoint
	// File is the file's name as given to Load or Parse.
	File string
	// Line is the line of the <service> element.
	Line int
}

// Type returns the custom type called name, or nil.
func (s *Service) Type(name string) *Type {
	for _, t := range s.Types {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Method returns the method called name, or nil.
func (s *Service) Method(name string) *Method {
	for _, m := range s.Methods {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Event returns the event called name, or nil.
func (s *Service) Event(name string) *Event {
	for _, e := range s.Events {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// Kind is what kind of value a Type describes.
type Kind uint8

// The kinds. The zero Kind is invalid; Parse never returns it.
const (
	Int    Kind = iota + 1 // a 64-bit signed integer (Go int64)
	Float                  // a 64-bit IEEE 754 number, finite (Go float64)
	Bool                   // true or false
	String                 // UTF-8 text
	Binary                 // bytes (Go []byte; base64 in XML and JSON)
	List                   // an ordered list of values of type Elem
	Struct                 // named fields: a <struct> custom type, or the type of an <object>
)

var kindNames = [...]string{Int: "int", Float: "float", Bool: "bool", String: "string", Binary: "binary", List: "list", Struct: "struct"}

// String returns the kind's name as the schema spells it ("int", ...,
// "list", "struct"), or "invalid".
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "invalid"
}

// Scalar reports whether k is int, float, bool, string or binary: the kinds
// that have a default and a single value.
func (k Kind) Scalar() bool { return k >= Int && k <= Binary }

// Type is the type of a value: an argument, a field, a return value, a node
// of runtime data. Types form a finite tree: a custom type never contains
// itself, not even through a list, so a codec may recurse over a Type
// without a cycle check.
type Type struct {
	// Kind says what the value is.
	Kind Kind
	// Name is the custom type's name for a <struct>, "" for every other
	// type (including the anonymous type of an <object>).
	Name string
	// Elem is the element type of a List, nil otherwise.
	Elem *Type
	// Fields are a Struct's fields in declaration order, nil otherwise.
	// For an <object>'s type they are its child nodes' names and types.
	Fields []*Field
	// Description is a <struct>'s description.
	Description string
	// Line is where the type was declared (a <struct> or <object>) or
	// written (the attribute naming a built-in or list type).
	Line int
}

// String returns the type as the schema writes it: "int", "Track",
// "float[][]" for a list of lists, "object" for an <object>'s type.
func (t *Type) String() string {
	if t == nil {
		return "<nil>"
	}
	switch t.Kind {
	case List:
		return t.Elem.String() + "[]"
	case Struct:
		if t.Name == "" {
			return "object"
		}
		return t.Name
	}
	return t.Kind.String()
}

// Field returns the Struct's field called name, or nil.
func (t *Type) Field(name string) *Field {
	for _, f := range t.Fields {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Field is a named, typed member: a field of a <struct>, an argument of a
// method or an event, or (in an <object>'s Type) a child node.
type Field struct {
	// Name is unique among its siblings.
	Name string
	// Type is the member's type.
	Type *Type
	// Description is free text for people.
	Description string
	// Line is the line of the element that declares it.
	Line int
}

// Method is a request/response operation a client calls.
type Method struct {
	// Name is unique among the service's methods.
	Name string
	// Description is free text for people.
	Description string
	// Args are the named arguments, in order.
	Args []*Field
	// Returns is the type of the result, nil when the method returns
	// nothing.
	Returns *Type
	// Line is the line of the <method> element.
	Line int
}

// Event is a notification the service sends to its sessions.
type Event struct {
	// Name is unique among the service's events.
	Name string
	// Description is free text for people.
	Description string
	// Args are the event's named arguments, in order.
	Args []*Field
	// Line is the line of the <event> element.
	Line int
}

// NodeKind says what a node of runtime data is.
type NodeKind uint8

// The node kinds.
const (
	ValueNode  NodeKind = iota + 1 // a <value>: one value of any non-list type
	ListNode                       // a <list>: a list of values, addressed by index
	ObjectNode                     // an <object>: named child nodes
)

// String returns "value", "list" or "object", or "invalid".
func (k NodeKind) String() string {
	switch k {
	case ValueNode:
		return "value"
	case ListNode:
		return "list"
	case ObjectNode:
		return "object"
	}
	return "invalid"
}

// DataNode is a node of the runtime-data tree.
type DataNode struct {
	// Kind is value, list or object.
	Kind NodeKind
	// Name is unique among its siblings; "" for the root.
	Name string
	// Path is the dot path from the root ("player.volume"); "" for the
	// root. Elements of a list are addressed below it by index
	// ("player.queue.0"), which Path never includes.
	Path string
	// Type is the node's type: a value's declared type; a List for a list;
	// for an object, an anonymous Struct whose fields are the children's
	// names and types (so the whole tree's snapshot is a value of
	// Data.Type).
	Type *Type
	// Children are an object's child nodes in file order; nil for values
	// and lists.
	Children []*DataNode
	// Default is the initial value of a value node of a scalar type, as
	// the Go value of its kind: int64, float64, bool, string or []byte. It
	// is that kind's zero value when the file gives no default, and nil for
	// other nodes: a list starts empty, a struct value with zero fields.
	Default any
	// Persistent is true when the node keeps its value across server
	// restarts: set on the node itself or on an enclosing object.
	Persistent bool
	// Description is free text for people.
	Description string
	// Line is the line of the node's element (of <data> for the root).
	Line int
}

// Child returns the object's child called name, or nil.
func (n *DataNode) Child(name string) *DataNode {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Lookup returns the node at a dot path below n ("player.volume"), n itself
// for "", or nil when there is no such node. It does not descend into list
// elements.
func (n *DataNode) Lookup(path string) *DataNode {
	if path == "" {
		return n
	}
	cur := n
	for _, name := range strings.Split(path, ".") {
		if cur = cur.Child(name); cur == nil {
			return nil
		}
	}
	return cur
}

// Walk calls fn for n and every node below it, parents before children, in
// file order.
func (n *DataNode) Walk(fn func(*DataNode)) {
	fn(n)
	for _, c := range n.Children {
		c.Walk(fn)
	}
}

// LinkType says how a routed resource travels.
type LinkType string

// The link types.
const (
	// Direct: on a direct link between the client and the service's
	// runner.
	Direct LinkType = "direct"
	// Server: through the client's connection to the server.
	Server LinkType = "server"
	// DirectAndServer: runtime data only; sent to the client on a direct
	// link and to the server as well, so that the HTTP API and policies
	// see it.
	DirectAndServer LinkType = "direct_and_server"
)

// The built-in links. Any other link is declared by a <link> element.
const (
	// LinkServer is the client's connection to the server.
	LinkServer = "server"
	// LinkReliable is a direct link over the same bearer type the runner
	// used to reach the server.
	LinkReliable = "reliable"
	// LinkUnreliable is a direct datagram link (udp).
	LinkUnreliable = "unreliable"
)

// Routing is a service's routing declaration: where its resources travel.
// It is validated for shape only; the routing package resolves it into the
// document a session gets.
type Routing struct {
	// Description is free text for people.
	Description string
	// Links are the named links the service declares, in file order.
	Links []*Link
	// Routes are the routes in file order. A resource no route names goes
	// over the server link.
	Routes []*Route
	// Line is the line of <routing>, 0 when the file has none.
	Line int
}

// Link returns the declared link called name, or nil (also for the built-in
// links, which are not declared).
func (r *Routing) Link(name string) *Link {
	for _, l := range r.Links {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// Route returns the route naming exactly res, or nil. It does not apply the
// precedence rules (see docs/SERVICES.md); that is resolution's work.
func (r *Routing) Route(res Resource) *Route {
	for _, rt := range r.Routes {
		if rt.Resource == res {
			return rt
		}
	}
	return nil
}

// Link is a named direct link: a bearer and the endpoint where the
// service's runner accepts it.
type Link struct {
	// Name is unique and not one of the built-in links.
	Name string
	// Bearer is the bearer type id, for example connect.bearer.ssl.
	Bearer string
	// Endpoint is where clients open the link.
	Endpoint bearers.Endpoint
	// Description is free text for people.
	Description string
	// Line is the line of the <link> element.
	Line int
}

// ResourceKind is the kind of resource a route names.
type ResourceKind uint8

// The resource kinds.
const (
	MethodResource ResourceKind = iota + 1
	EventResource
	DataResource
)

// String returns "method", "event" or "data", or "invalid".
func (k ResourceKind) String() string {
	switch k {
	case MethodResource:
		return "method"
	case EventResource:
		return "event"
	case DataResource:
		return "data"
	}
	return "invalid"
}

// All is the Resource name that stands for every resource of its kind.
const All = "*"

// Resource is what a route routes: a method or an event by name, a node of
// runtime data by its dot path (with everything below it), or, with Name
// All, every resource of the kind.
type Resource struct {
	Kind ResourceKind
	Name string
}

// String names the resource in messages: "method play", "every event",
// "data player.volume", "all runtime data".
func (r Resource) String() string {
	if r.Name == All {
		switch r.Kind {
		case MethodResource:
			return "every method"
		case EventResource:
			return "every event"
		case DataResource:
			return "all runtime data"
		}
	}
	return r.Kind.String() + " " + r.Name
}

// Route maps a resource to its links, in order of preference.
type Route struct {
	// Resource is what is routed.
	Resource Resource
	// Alternatives are the links the resource may take, most preferred
	// first; at least one. The resolver picks the first a session can
	// use. Only the last one may go through the server.
	Alternatives []Alternative
	// Description is free text for people.
	Description string
	// Line is the line of the <route> element.
	Line int
}

// Alternative is one way a routed resource may travel.
type Alternative struct {
	// Link is LinkServer, LinkReliable, LinkUnreliable or the name of a
	// declared Link.
	Link string
	// LinkType is Server for LinkServer, Direct or DirectAndServer for
	// every other link.
	LinkType LinkType
	// Bearer is the bearer type id the direct link must use, "" for any
	// (for the server link and declared links, always "": a declared link
	// names its own bearer).
	Bearer string
	// Line is the line of the <alternative> element, or of the <route>
	// when the route gives its only alternative as attributes.
	Line int
}

// Endpoint is a peer-to-peer endpoint: an address on which the service's
// runner accepts direct links from clients.
type Endpoint struct {
	// Address is the endpoint; its scheme names the bearer.
	Address bearers.Endpoint
	// Description is free text for people.
	Description string
	// Line is the line of the <endpoint> element.
	Line int
}
