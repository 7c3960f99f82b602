package servicefile

import (
	"fmt"
	"strings"

	"github.com/bearerkit/connect/internal/xmlpos"
)

// Bounds on what one service file may declare. The file size bounds
// everything already; these keep each list to a size a person could mean,
// and keep hostile files cheap.
const (
	maxDepth          = 32   // element nesting
	maxNameLen        = 64   // identifiers
	maxServiceNameLen = 128  // the service name
	maxStructs        = 1024 // <struct>s in a file
	maxFields         = 256  // <field>s in a struct
	maxMethods        = 1024 // <method>s in a file
	maxEvents         = 1024 // <event>s in a file
	maxArgs           = 64   // <arg>s in a method or event
	maxDataNodes      = 4096 // <value>, <list> and <object> in <data>
	maxListDepth      = 8    // lists of lists in one type
	maxTypeDepth      = 32   // struct in struct (and list) levels
	maxLinks          = 64   // <link>s in <routing>
	maxRoutes         = 1024 // <route>s in <routing>
	maxAlternatives   = 8    // <alternative>s in a route
	maxEndpoints      = 64   // <endpoint>s in <endpoints>
	maxListedNames    = 10   // names listed in a message before "..."
	maxProblems       = 1000 // problems listed; the rest are counted
	maxEndpointLen    = 256  // an endpoint's characters
	maxBearerLen      = 128  // a bearer type id's characters
)

// Element and attribute names of the schema, in the order the documentation
// and "known:" lists give them.
const rootTag = "service"

var (
	rootAttrs       = []string{"name", "version", "description"}
	rootChildren    = []string{"struct", "method", "event", "data", "routing", "endpoints"}
	rootRepeated    = []string{"struct", "method", "event"}
	structAttrs     = []string{"name", "description"}
	fieldAttrs      = []string{"name", "type", "repeated", "description"}
	methodAttrs     = []string{"name", "returns", "description"}
	eventAttrs      = []string{"name", "description"}
	dataTags        = []string{"value", "list", "object"}
	valueAttrs      = []string{"name", "type", "default", "persistent", "description"}
	listAttrs       = []string{"name", "type", "persistent", "description"}
	objectAttrs     = []string{"name", "persistent", "description"}
	routingChildren = []string{"link", "route"}
	linkAttrs       = []string{"name", "bearer", "endpoint", "description"}
	routeAttrs      = []string{"method", "event", "data", "link", "linkType", "bearer", "description"}
	altAttrs        = []string{"link", "linkType", "bearer"}
	endpointAttrs   = []string{"address", "description"}

	// attrHints explain attributes that belong somewhere else.
	attrHints = map[string]string{
		"persistent": "persistent is set on <value>, <list> and <object> in <data>",
		"default":    "defaults are set on <value>s in <data>",
	}

	// builtins are the built-in type names, in the order messages list
	// them.
	builtins     = []string{"int", "float", "bool", "string", "binary"}
	builtinKinds = map[string]Kind{"int": Int, "float": Float, "bool": Bool, "string": String, "binary": Binary}
)

// Rules in words, for messages and docs/SERVICES.md.
const (
	nameRule        = "a letter or _ followed by letters, digits and _, at most 64 characters"
	serviceNameRule = "dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters, like mediaplayer or com.example.player"
	versionRule     = "MAJOR.MINOR or MAJOR.MINOR.PATCH, decimal numbers without leading zeros, like 1.0 or 2.3.1"
	typeRule        = "a type name such as int or Track, followed by [] for each level of list"
	pathRule        = "names separated by dots, like player.volume, or * for all runtime data"
)

// parser validates one service file and builds its Service.
type parser struct {
	doc *xmlpos.Doc
	s   *Service

	structs   map[string]*Type // declared custom types by name
	methods   map[string]*Method
	events    map[string]*Event
	dataNodes int // data nodes seen, against maxDataNodes
}

func newParser(file string, data []byte) *parser {
	return &parser{
		doc: xmlpos.Read(file, data, xmlpos.Options{
			Root:        rootTag,
			What:        "a service file",
			MaxSize:     MaxFileSize,
			MaxDepth:    maxDepth,
			MaxProblems: maxProblems,
			AttrHints:   attrHints,
		}),
		s: &Service{
			File:    file,
			Data:    &DataNode{Kind: ObjectNode, Type: &Type{Kind: Struct}},
			Routing: &Routing{},
		},
		structs: map[string]*Type{},
		methods: map[string]*Method{},
		events:  map[string]*Event{},
	}
}

// service validates the root element and everything in it. Custom types
// are declared first, so that they may be used before their <struct>;
// routing comes last, since it names methods, events and data.
func (p *parser) service(root *xmlpos.Node) {
	s := p.s
	s.Line = root.Line
	root.Attrs(rootAttrs...)
	root.Require("name", "version")
	if v, ok := root.Attr("name"); ok {
		if validServiceName(v) {
			s.Name = v
		} else {
			root.Add(root.AttrLine("name"), "%s attribute %q: %s is not a service name (%s)", root.Path, "name", xmlpos.Quote(v), serviceNameRule)
		}
	}
	if v, ok := root.Attr("version"); ok {
		if validVersion(v) {
			s.Version = v
		} else {
			root.Add(root.AttrLine("version"), "%s attribute %q: %s is not a version (%s)", root.Path, "version", xmlpos.Quote(v), versionRule)
		}
	}
	s.Description, _ = root.Attr("description")
	root.NoText()

	var structs, methods, events []*xmlpos.Node
	var data, routing, endpoints *xmlpos.Node
	root.Children(rootChildren, rootRepeated, func(tag string, _ int, c *xmlpos.Node) {
		switch tag {
		case "struct":
			structs = append(structs, c)
		case "method":
			methods = append(methods, c)
		case "event":
			events = append(events, c)
		case "data":
			data = c
		case "routing":
			routing = c
		case "endpoints":
			endpoints = c
		}
	})

	p.declareStructs(structs)
	p.checkTypes()
	for i, c := range methods {
		if i == maxMethods {
			c.Add(c.Line, "%s: more than %d methods in a service", c.Path, maxMethods)
			break
		}
		p.method(c)
	}
	for i, c := range events {
		if i == maxEvents {
			c.Add(c.Line, "%s: more than %d events in a service", c.Path, maxEvents)
			break
		}
		p.event(c)
	}
	if data != nil {
		p.data(data)
	}
	if endpoints != nil {
		p.endpoints(endpoints)
	}
	if routing != nil {
		p.routing(routing)
	}
}

// named gives c a path built from prefix and its name attribute, when that
// is a valid name, so that every message about the element names it. It
// does not report anything: ident does, after Attrs.
func named(c *xmlpos.Node, prefix string) {
	if v, ok := c.RawAttr("name"); ok && validName(v) {
		c.Path = prefix + v
	}
}

// ident returns c's name attribute if it is present and valid, reporting a
// bad one (a missing one is reported by Require).
func ident(c *xmlpos.Node) (string, bool) {
	v, ok := c.Attr("name")
	if !ok {
		return "", false
	}
	if !validName(v) {
		c.Add(c.AttrLine("name"), "%s attribute %q: %s is not a name (%s)", c.Path, "name", xmlpos.Quote(v), nameRule)
		return "", false
	}
	return v, true
}

// boolAttr reads an optional true/false attribute: its value, whether it
// was given, and whether it was well formed (reported if not).
func boolAttr(c *xmlpos.Node, key string) (val, given, ok bool) {
	v, given := c.Attr(key)
	switch {
	case !given:
		return false, false, true
	case v == "true":
		return true, true, true
	case v == "false":
		return false, true, true
	}
	c.Add(c.AttrLine(key), "%s attribute %q: %s is not true or false", c.Path, key, xmlpos.Quote(v))
	return false, true, false
}

// declareStructs declares every custom type by name, then defines their
// fields, so that a field may use a type declared further down.
func (p *parser) declareStructs(nodes []*xmlpos.Node) {
	type decl struct {
		n *xmlpos.Node
		t *Type
	}
	var decls []decl
	first := map[string]int{}
	for i, c := range nodes {
		if i == maxStructs {
			c.Add(c.Line, "%s: more than %d structs in a service", c.Path, maxStructs)
			break
		}
		named(c, "struct ")
		c.Attrs(structAttrs...)
		c.Require("name")
		c.NoText()
		t := &Type{Kind: Struct, Line: c.Line}
		t.Description, _ = c.Attr("description")
		name, ok := ident(c)
		switch {
		case !ok:
		case builtinKinds[name] != 0 || name == "object" || name == "list":
			c.Add(c.AttrLine("name"), "%s: %q is a built-in name; choose another", c.Path, name)
		case first[name] != 0:
			c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, first[name])
		default:
			first[name] = c.Line
			t.Name = name
			p.structs[name] = t
			p.s.Types = append(p.s.Types, t)
		}
		decls = append(decls, decl{c, t})
	}
	for _, d := range decls {
		d.t.Fields = p.fields(d.n, "field", maxFields, "fields in a struct")
	}
}

// fields validates the <field>s of a struct or the <arg>s of a method or
// event.
func (p *parser) fields(n *xmlpos.Node, tag string, max int, what string) []*Field {
	var out []*Field
	first := map[string]int{}
	count := 0
	n.Children([]string{tag}, []string{tag}, func(_ string, _ int, c *xmlpos.Node) {
		count++
		if count > max {
			if count == max+1 {
				c.Add(c.Line, "%s: more than %d %s", c.Path, max, what)
			}
			return
		}
		named(c, n.Path+"/"+tag+" ")
		c.Leaf(fieldAttrs...)
		c.Require("name", "type")
		f := &Field{Line: c.Line}
		f.Description, _ = c.Attr("description")
		repeated, _, _ := boolAttr(c, "repeated")
		f.Type = p.typeAttr(c, "type", repeated)
		name, ok := ident(c)
		if !ok {
			return
		}
		if l := first[name]; l != 0 {
			c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, l)
			return
		}
		first[name] = c.Line
		f.Name = name
		out = append(out, f)
	})
	return out
}

// method validates a <method>.
func (p *parser) method(c *xmlpos.Node) {
	named(c, "method ")
	c.Attrs(methodAttrs...)
	c.Require("name")
	m := &Method{Line: c.Line}
	m.Description, _ = c.Attr("description")
	if c.Has("returns") {
		m.Returns = p.typeAttr(c, "returns", false)
	}
	c.NoText()
	m.Args = p.fields(c, "arg", maxArgs, "arguments in a method")
	name, ok := ident(c)
	if !ok {
		return
	}
	if o := p.methods[name]; o != nil {
		c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, o.Line)
		return
	}
	m.Name = name
	p.methods[name] = m
	p.s.Methods = append(p.s.Methods, m)
}

// event validates an <event>.
func (p *parser) event(c *xmlpos.Node) {
	named(c, "event ")
	c.Attrs(eventAttrs...)
	c.Require("name")
	e := &Event{Line: c.Line}
	e.Description, _ = c.Attr("description")
	c.NoText()
	e.Args = p.fields(c, "arg", maxArgs, "arguments in an event")
	name, ok := ident(c)
	if !ok {
		return
	}
	if o := p.events[name]; o != nil {
		c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, o.Line)
		return
	}
	e.Name = name
	p.events[name] = e
	p.s.Events = append(p.s.Events, e)
}

// data validates <data> and the runtime-data tree in it.
func (p *parser) data(c *xmlpos.Node) {
	c.Path = "data"
	c.Attrs("description")
	c.NoText()
	root := p.s.Data
	root.Line = c.Line
	root.Type.Line = c.Line
	root.Description, _ = c.Attr("description")
	p.dataChildren(c, root, "", "")
}

// dataChildren validates the child nodes of an object (or of <data>).
// where names the object in messages: its dot path, with "object[2]" for
// an object without a valid name. persistent names the nearest enclosing
// persistent object with its line ("settings (line 12)"), "" if there is
// none.
func (p *parser) dataChildren(n *xmlpos.Node, parent *DataNode, where, persistent string) {
	first := map[string]int{}
	n.Children(dataTags, dataTags, func(tag string, index int, c *xmlpos.Node) {
		here := join(where, fmt.Sprintf("%s[%d]", tag, index))
		if v, ok := c.RawAttr("name"); ok && validName(v) {
			here = join(where, v)
		}
		c.Path = "data " + here
		p.dataNodes++
		if p.dataNodes > maxDataNodes {
			if p.dataNodes == maxDataNodes+1 {
				c.Add(c.Line, "%s: more than %d nodes of runtime data in a service", c.Path, maxDataNodes)
			}
			return
		}
		d := &DataNode{Line: c.Line, Persistent: persistent != ""}
		switch tag {
		case "value":
			d.Kind = ValueNode
			c.Leaf(valueAttrs...)
			c.Require("name", "type")
			d.Type = p.typeAttr(c, "type", false)
			if d.Type != nil && d.Type.Kind == List {
				d.Type = nil
				v, _ := c.Attr("type")
				c.Add(c.AttrLine("type"), "%s attribute %q: %s is a list; declare a list with <list>", c.Path, "type", xmlpos.Quote(v))
			}
			p.dataDefault(c, d)
		case "list":
			d.Kind = ListNode
			c.Leaf(listAttrs...)
			c.Require("name", "type")
			d.Type = p.typeAttr(c, "type", true)
		case "object":
			d.Kind = ObjectNode
			c.Attrs(objectAttrs...)
			c.NoText()
			c.Require("name")
			d.Type = &Type{Kind: Struct, Line: c.Line}
		}
		d.Description, _ = c.Attr("description")
		persist, given, wellFormed := boolAttr(c, "persistent")
		switch {
		case persist:
			d.Persistent = true
		case given && wellFormed && persistent != "":
			c.Add(c.AttrLine("persistent"), "%s attribute %q: false inside the persistent object %s, where everything is persistent",
				c.Path, "persistent", persistent)
		}
		name, ok := ident(c)
		if ok {
			d.Name = name
			d.Path = join(parent.Path, name)
		}
		if d.Kind == ObjectNode {
			inner := persistent
			if inner == "" && persist {
				inner = fmt.Sprintf("%s (line %d)", here, c.Line)
			}
			p.dataChildren(c, d, here, inner)
		}
		if !ok {
			return
		}
		if l := first[name]; l != 0 {
			c.Add(c.AttrLine("name"), "%s declared twice (first at line %d)", c.Path, l)
			return
		}
		first[name] = c.Line
		parent.Children = append(parent.Children, d)
		parent.Type.Fields = append(parent.Type.Fields, &Field{Name: name, Type: d.Type, Description: d.Description, Line: d.Line})
	})
}

// dataDefault sets a value node's default from its default attribute, or
// to the zero value of its kind.
func (p *parser) dataDefault(c *xmlpos.Node, d *DataNode) {
	v, given := c.Attr("default")
	if d.Type == nil {
		return
	}
	if !d.Type.Kind.Scalar() {
		if given {
			c.Add(c.AttrLine("default"), "%s attribute %q: a value of type %s has no default; defaults are for int, float, bool, string and binary values",
				c.Path, "default", d.Type)
		}
		return
	}
	if !given {
		d.Default = zeroValue(d.Type.Kind)
		return
	}
	val, msg := parseScalar(d.Type.Kind, v)
	if msg != "" {
		c.Add(c.AttrLine("default"), "%s attribute %q: %s", c.Path, "default", msg)
		return
	}
	d.Default = val
}

// endpoints validates <endpoints>.
func (p *parser) endpoints(c *xmlpos.Node) {
	c.Attrs()
	c.NoText()
	first := map[string]int{}
	c.Children([]string{"endpoint"}, []string{"endpoint"}, func(_ string, index int, e *xmlpos.Node) {
		if index > maxEndpoints {
			if index == maxEndpoints+1 {
				e.Add(e.Line, "%s: more than %d endpoints in a service", e.Path, maxEndpoints)
			}
			return
		}
		e.Leaf(endpointAttrs...)
		if !e.Require("address") {
			return
		}
		v, _ := e.Attr("address")
		line := e.AttrLine("address")
		ep, err := parseEndpoint(v)
		if err != nil {
			e.Add(line, "%s attribute %q: %v", e.Path, "address", err)
			return
		}
		if l := first[ep.String()]; l != 0 {
			e.Add(line, "%s attribute %q: %s already declared at line %d", e.Path, "address", ep, l)
			return
		}
		first[ep.String()] = e.Line
		out := &Endpoint{Address: ep, Line: e.Line}
		out.Description, _ = e.Attr("description")
		p.s.Endpoints = append(p.s.Endpoints, out)
	})
}

// join joins a data path and a name with a dot.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// nameList lists names for a message, at most maxListedNames of them.
func nameList(names []string) string {
	if len(names) > maxListedNames {
		return strings.Join(names[:maxListedNames], ", ") + ", ..."
	}
	return strings.Join(names, ", ")
}
