package routing

import (
	"strconv"

	"github.com/beevik/etree"

	"github.com/bearerkit/connect/services/servicefile"
)

// Generate writes d as a routing document (UTF-8 XML, indented by two
// spaces, attributes in the order docs/ROUTING.md gives them). It checks d
// by parsing what it wrote: if d is not a valid document it returns
// Problems without lines, in the file "routing document", naming the
// element at fault ("route[2] attribute "link": unknown link ..."). For a
// valid d, Parse(file, Generate(d)) returns a Document equal to d.
func Generate(d *Document) ([]byte, error) {
	if d == nil {
		return nil, Problems{{File: generatedFile, Msg: "no document (nil *Document)"}}
	}
	out, err := write(d)
	if err != nil {
		return nil, Problems{{File: generatedFile, Msg: err.Error()}}
	}
	if _, err := Parse(generatedFile, out); err != nil {
		ps, _ := err.(Problems)
		for i := range ps {
			ps[i].Line = 0
		}
		return nil, ps
	}
	return out, nil
}

// generatedFile names a Document checked by Generate in its problems.
const generatedFile = "routing document"

// write writes d as XML without checking it.
func write(d *Document) ([]byte, error) {
	doc := etree.NewDocument()
	root := doc.CreateElement(rootTag)
	root.CreateAttr("session", d.Session)
	root.CreateAttr("service", d.Service)
	for _, l := range d.Links {
		e := root.CreateElement("link")
		e.CreateAttr("name", l.Name)
		e.CreateAttr("kind", string(l.Kind))
		if l.Bearer != "" {
			e.CreateAttr("bearer", l.Bearer)
		}
		if !l.Address.IsZero() {
			e.CreateAttr("address", l.Address.String())
		}
		if l.Secure {
			e.CreateAttr("secure", "true")
		}
		if l.Token != "" {
			e.CreateAttr("token", l.Token)
		}
	}
	for _, r := range d.Routes {
		e := root.CreateElement("route")
		e.CreateAttr(resourceAttr(r.Resource.Kind), r.Resource.Name)
		e.CreateAttr("link", r.Link)
		e.CreateAttr("linkType", string(r.LinkType))
		if r.Alternative != 0 {
			e.CreateAttr("alternative", strconv.Itoa(r.Alternative))
		}
		for _, f := range r.Fallbacks {
			fe := e.CreateElement("fallback")
			fe.CreateAttr("link", f.Link)
			fe.CreateAttr("linkType", string(f.LinkType))
		}
	}
	doc.Indent(2)
	doc.WriteSettings.CanonicalAttrVal = true
	return doc.WriteToBytes()
}

// resourceAttr is the attribute that names a resource of kind k.
func resourceAttr(k servicefile.ResourceKind) string {
	switch k {
	case servicefile.MethodResource:
		return "method"
	case servicefile.EventResource:
		return "event"
	case servicefile.DataResource:
		return "data"
	}
	// Parse reports it, naming the route.
	return "resource"
}
