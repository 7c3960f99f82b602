package xmlpos

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/beevik/etree"
)

// Options say what a document must look like to be read at all.
type Options struct {
	// Root is the tag of the one root element, for example "service".
	Root string
	// What names the kind of document in messages, with its article:
	// "a service file" gives "second root element <x>; a service file has
	// one <service> element".
	What string
	// MaxSize is the largest document accepted, in bytes; 0 means no limit.
	MaxSize int
	// MaxDepth bounds element nesting; it must be at least 1.
	MaxDepth int
	// MaxProblems bounds the problems kept; 0 means no limit. Beyond it
	// Problems ends with one problem saying how many more were found, so
	// that a file of garbage cannot produce megabytes of messages.
	MaxProblems int
	// AttrHints add advice to the "unknown attribute" message of the
	// attributes they name, for attributes that belong elsewhere (for
	// example "persistent", which only runtime data takes).
	AttrHints map[string]string
}

// Doc is a document being validated: its elements with their lines, and the
// problems found so far. A Doc is not safe for concurrent use.
type Doc struct {
	file     string
	opt      Options
	pos      *positions
	index    map[*etree.Element]int // element -> index into pos.tags
	attrPos  map[*etree.Element]map[string][]int
	root     *Node
	problems Problems
	dropped  int // problems beyond opt.MaxProblems
	// mismatch records that the etree elements did not match the start
	// tags of the position pass (which should never happen); lines are
	// then all reported as 1 rather than wrong.
	mismatch bool
}

// Read parses data as an XML document named file. It always returns a Doc;
// when the document cannot be used at all (too large, not well-formed XML,
// not UTF-8, nested deeper than opt.MaxDepth, no root element or the wrong
// one) Root returns nil and Problems says why. A UTF-8 byte order mark is
// allowed.
func Read(file string, data []byte, opt Options) *Doc {
	d := &Doc{file: file, opt: opt, attrPos: map[*etree.Element]map[string][]int{}}
	if opt.MaxSize > 0 && len(data) > opt.MaxSize {
		d.Add(1, "file is larger than %d bytes; this is not %s", opt.MaxSize, opt.What)
		return d
	}
	if d.opt.MaxDepth < 1 {
		d.opt.MaxDepth = 1
	}
	// The byte order mark is on line 1, so dropping it moves no line.
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	d.pos = newPositions(data)
	res := d.pos.scan(file, d.opt)
	if res.fatal != nil {
		d.problems = append(d.problems, *res.fatal)
		return d
	}
	d.problems = append(d.problems, res.problems...)
	if !res.root {
		d.Add(1, "no <%s> element: the file has no elements", opt.Root)
		return d
	}

	doc := etree.NewDocument()
	doc.ReadSettings = etree.ReadSettings{PreserveDuplicateAttrs: true, CharsetReader: CharsetReader}
	if err := doc.ReadFromBytes(data); err != nil {
		// The tokenizer pass accepted the document, so this should not
		// happen; report it rather than trust a partial tree.
		d.Add(1, "XML: %v", err)
		return d
	}
	d.index = map[*etree.Element]int{}
	n := 0
	var walk func(e *etree.Element)
	walk = func(e *etree.Element) {
		d.index[e] = n
		if n >= len(d.pos.tags) || d.pos.tags[n].local != e.Tag {
			d.mismatch = true
		}
		n++
		for _, c := range e.ChildElements() {
			walk(c)
		}
	}
	for _, e := range doc.ChildElements() {
		walk(e)
	}
	if n != len(d.pos.tags) {
		d.mismatch = true
	}
	if d.mismatch {
		// Both parsers read the same start elements, so this should not
		// happen; lines would be wrong, so drop them (every problem is then
		// reported at line 1) rather than report misleading ones.
		d.pos.tags = nil
	}

	root := doc.Root()
	if root == nil {
		d.Add(1, "no <%s> element", opt.Root)
		return d
	}
	rn := d.Node(root, opt.Root)
	rn.isRoot = true
	if rn.Tag != opt.Root {
		d.Add(rn.Line, "root element is <%s>, want <%s>", rn.Tag, opt.Root)
		return d
	}
	d.root = rn
	return d
}

// File is the document's name as given to Read.
func (d *Doc) File() string { return d.file }

// Root is the root element, or nil when the document could not be read.
func (d *Doc) Root() *Node { return d.root }

// Add records a problem at line (line 1 if line < 1). The message is kept
// on one line.
func (d *Doc) Add(line int, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	if d.opt.MaxProblems > 0 && len(d.problems) >= d.opt.MaxProblems {
		d.dropped++
		return
	}
	d.problems = append(d.problems, Problem{File: d.file, Line: line, Msg: OneLine(fmt.Sprintf(format, args...))})
}

// Problems returns the problems found so far, sorted by line, and, when
// more than Options.MaxProblems were found, a last one saying how many more.
func (d *Doc) Problems() Problems {
	out := append(Problems(nil), d.problems...)
	out.Sort()
	if d.dropped > 0 {
		last := 1
		if len(out) > 0 {
			last = out[len(out)-1].Line
		}
		out = append(out, Problem{File: d.file, Line: last,
			Msg: fmt.Sprintf("%d more problems not listed; fix these first", d.dropped)})
	}
	return out
}

// Err returns the problems found so far, sorted by line, or nil if there
// are none.
func (d *Doc) Err() error {
	if len(d.problems) == 0 && d.dropped == 0 {
		return nil
	}
	return d.Problems()
}

// Line is the line of e's start tag (1 when it is not known).
func (d *Doc) Line(e *etree.Element) int {
	if i, ok := d.index[e]; ok && i < len(d.pos.tags) {
		return d.pos.line(d.pos.tags[i].start)
	}
	return 1
}

// AttrLine is the line of the k-th occurrence (from 0) of the attribute
// written raw (with its prefix, if any) in e's start tag, or e's line when
// it cannot be found.
func (d *Doc) AttrLine(e *etree.Element, raw string, k int) int {
	offs, ok := d.attrPos[e]
	if !ok {
		if i, in := d.index[e]; in && i < len(d.pos.tags) {
			offs = d.pos.attrOffsets(d.pos.tags[i])
		}
		d.attrPos[e] = offs
	}
	if o := offs[raw]; k < len(o) {
		return d.pos.line(o[k])
	}
	return d.Line(e)
}

// FullTag is e's tag as written, with its namespace prefix if any.
func FullTag(e *etree.Element) string {
	if e.Space != "" {
		return e.Space + ":" + e.Tag
	}
	return e.Tag
}

// Node is an element being validated: where it is, the path that names it
// in messages, and its known attributes once Attrs has read them.
type Node struct {
	// El is the etree element.
	El *etree.Element
	// Tag is the element's tag as written (with its prefix, if any).
	Tag string
	// Path names the element in messages, for example
	// "method play/arg track". Callers may change it before Attrs, for
	// example once they know the element's name.
	Path string
	// Line is the line of the element's start tag.
	Line int

	doc    *Doc
	attrs  map[string]string
	isRoot bool
}

// Node prepares an element for validation under path.
func (d *Doc) Node(e *etree.Element, path string) *Node {
	return &Node{El: e, Tag: FullTag(e), Path: path, Line: d.Line(e), doc: d}
}

// Add records a problem at line, like Doc.Add.
func (n *Node) Add(line int, format string, args ...any) { n.doc.Add(line, format, args...) }

// Attrs records n's known attributes and reports unknown and repeated ones,
// listing the known ones. Namespace declarations (xmlns, xmlns:x) are
// allowed anywhere and ignored.
func (n *Node) Attrs(known ...string) {
	n.attrs = map[string]string{}
	seen := map[string]int{}
	for _, a := range n.El.Attr {
		if a.Space == "xmlns" || a.Space == "" && a.Key == "xmlns" {
			continue
		}
		key := a.Key
		if a.Space != "" {
			key = a.Space + ":" + a.Key
		}
		k := seen[key]
		seen[key]++
		line := n.doc.AttrLine(n.El, key, k)
		switch {
		case k > 0:
			n.Add(line, "%s attribute %q given twice (first at line %d)", n.Path, key, n.doc.AttrLine(n.El, key, 0))
		case !contains(known, key):
			hint := ""
			if h := n.doc.opt.AttrHints[key]; h != "" {
				hint = "; " + h
			}
			if len(known) == 0 {
				n.Add(line, "%s attribute %q unknown (%s has no attributes)%s", n.Path, key, n.Path, hint)
			} else {
				n.Add(line, "%s attribute %q unknown (known: %s)%s", n.Path, key, strings.Join(known, ", "), hint)
			}
		default:
			n.attrs[key] = a.Value
		}
	}
}

// Attr returns the value of a known attribute read by Attrs.
func (n *Node) Attr(key string) (string, bool) {
	v, ok := n.attrs[key]
	return v, ok
}

// Has reports whether a known attribute was given.
func (n *Node) Has(key string) bool {
	_, ok := n.attrs[key]
	return ok
}

// RawAttr returns the first value of an attribute as written, before Attrs
// has checked anything (to name an element in its path).
func (n *Node) RawAttr(key string) (string, bool) {
	for _, a := range n.El.Attr {
		if a.Space == "" && a.Key == key {
			return a.Value, true
		}
	}
	return "", false
}

// AttrLine is the line of attribute key (n's line if it is absent).
func (n *Node) AttrLine(key string) int { return n.doc.AttrLine(n.El, key, 0) }

// Require reports the attributes of n that are missing and returns whether
// all are present.
func (n *Node) Require(keys ...string) bool {
	ok := true
	for _, k := range keys {
		if !n.Has(k) {
			n.Add(n.Line, "%s attribute %q is required", n.Path, k)
			ok = false
		}
	}
	return ok
}

// NoText reports non-blank text inside n: settings are attributes.
func (n *Node) NoText() {
	for _, t := range n.El.Child {
		if cd, ok := t.(*etree.CharData); ok && strings.TrimFunc(cd.Data, IsSpace) != "" {
			n.Add(n.Line, "%s has text %s; settings are given as attributes", n.Path, Quote(cd.Data))
			return
		}
	}
}

// Leaf validates an element that takes the known attributes and nothing
// else: no text, no child elements.
func (n *Node) Leaf(known ...string) {
	n.Attrs(known...)
	n.NoText()
	for _, c := range n.El.ChildElements() {
		n.Add(n.doc.Line(c), "%s element <%s> unknown (%s has no child elements)", n.Path, FullTag(c), n.Path)
	}
}

// Children iterates over n's child elements in document order, reporting
// unknown ones (listing the known ones) and a second occurrence of an
// element not named in repeated, and calls visit for each known one with
// its tag, its 1-based index among the siblings with that tag, and a Node
// whose Path is the tag ("token"), with the index for repeated tags
// ("token[2]"), prefixed by n's Path and "/" unless n is the root.
func (n *Node) Children(known, repeated []string, visit func(tag string, index int, c *Node)) {
	count := map[string]int{}
	first := map[string]int{}
	for _, c := range n.El.ChildElements() {
		tag := FullTag(c)
		count[tag]++
		path := tag
		if contains(repeated, tag) {
			path = fmt.Sprintf("%s[%d]", tag, count[tag])
		}
		if !n.isRoot {
			path = n.Path + "/" + path
		}
		cn := n.doc.Node(c, path)
		switch {
		case !contains(known, tag):
			n.Add(cn.Line, "%s element <%s> unknown (known: %s)", n.Path, tag, strings.Join(known, ", "))
		case !contains(repeated, tag) && count[tag] > 1:
			n.Add(cn.Line, "%s given twice (first at line %d); only one is allowed", path, first[tag])
		default:
			first[tag] = cn.Line
			visit(tag, count[tag], cn)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
