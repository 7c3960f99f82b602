package xmlpos

import (
	"reflect"
	"strings"
	"testing"

	"github.com/beevik/etree"
)

var opts = Options{Root: "root", What: "a test file", MaxSize: 1 << 10, MaxDepth: 4,
	AttrHints: map[string]string{"persistent": "only data is persistent"}}

func lines(ps Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func check(t *testing.T, got Problems, want ...string) {
	t.Helper()
	if g := lines(got); !reflect.DeepEqual(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Errorf("problems:\n got: %q\nwant: %q", g, want)
	}
}

func TestProblem(t *testing.T) {
	if got := (Problem{File: "a.xml", Line: 3, Msg: "m"}).String(); got != "a.xml:3: m" {
		t.Errorf("String() = %q", got)
	}
	if got := (Problem{File: "a.xml", Msg: "m"}).String(); got != "a.xml: m" {
		t.Errorf("String() without a line = %q", got)
	}
	ps := Problems{{File: "b", Line: 1, Msg: "w"}, {File: "a", Line: 9, Msg: "x"}, {File: "a", Line: 2, Msg: "y"}, {File: "a", Line: 2, Msg: "z"}}
	ps.Sort()
	if got := ps.Error(); got != "a:2: y\na:2: z\na:9: x\nb:1: w" {
		t.Errorf("sorted Error() = %q", got)
	}
	if got := OneLine("a\nb\rc"); got != `a\nb\rc` {
		t.Errorf("OneLine = %q", got)
	}
	if got := Quote("  " + strings.Repeat("é", 50) + " "); got != `"`+strings.Repeat("é", 40)+`..."` {
		t.Errorf("Quote = %q", got)
	}
}

func TestRead(t *testing.T) {
	doc := "\uFEFF<?xml version=\"1.0\"?>\r\n<root a=\"1\"\r\n  b='2'>\n" +
		"  <child\n\n    c=\"3\" c=\"4\"/>\n  <child/>\n</root>\n"
	d := Read("t.xml", []byte(doc), opts)
	check(t, d.Problems())
	if d.Err() != nil || d.File() != "t.xml" {
		t.Fatalf("Err() = %v, File() = %q", d.Err(), d.File())
	}
	root := d.Root()
	if root == nil || root.Line != 2 || root.Path != "root" || root.Tag != "root" {
		t.Fatalf("root %+v", root)
	}
	if root.AttrLine("a") != 2 || root.AttrLine("b") != 3 || root.AttrLine("missing") != 2 {
		t.Errorf("root attribute lines: a %d b %d missing %d", root.AttrLine("a"), root.AttrLine("b"), root.AttrLine("missing"))
	}
	kids := root.El.ChildElements()
	if d.Line(kids[0]) != 4 || d.Line(kids[1]) != 7 || d.AttrLine(kids[0], "c", 1) != 6 || d.Line(etree.NewElement("x")) != 1 {
		t.Errorf("child lines %d %d, second c at %d", d.Line(kids[0]), d.Line(kids[1]), d.AttrLine(kids[0], "c", 1))
	}
}

func TestReadFails(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"too large", "<root>" + strings.Repeat(" ", 1<<10) + "</root>", []string{`t.xml:1: file is larger than 1024 bytes; this is not a test file`}},
		{"empty", "", []string{`t.xml:1: no <root> element: the file has no elements`}},
		{"wrong root", "\n<other/>", []string{`t.xml:2: root element is <other>, want <root>`}},
		{"prefixed root", "<x:root xmlns:x=\"urn:x\"/>", []string{`t.xml:1: root element is <x:root>, want <root>`}},
		{"syntax", "<root>\n<a>\n</root>", []string{`t.xml:3: XML syntax error: element <a> closed by </root>`}},
		{"depth", "<root>\n<a><b><c>\n<d/></c></b></a></root>", []string{`t.xml:3: elements nested more than 4 deep`}},
		{"encoding", "<?xml version=\"1.0\" encoding=\"latin1\"?><root/>", []string{
			`t.xml:1: opening charset "latin1": not supported; save the file as UTF-8 and declare encoding="UTF-8"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Read("t.xml", []byte(tt.doc), opts)
			if d.Root() != nil {
				t.Error("Root() is not nil")
			}
			check(t, d.Problems(), tt.want...)
		})
	}
	// Not fatal: the document is still read.
	d := Read("t.xml", []byte("<root/>\n<root/>\n text"), opts)
	if d.Root() == nil {
		t.Fatal("Root() is nil")
	}
	check(t, d.Problems(),
		`t.xml:2: second root element <root>; a test file has one <root> element`,
		`t.xml:3: text "text" outside the <root> element`)
}

func TestNode(t *testing.T) {
	doc := `<root xmlns="urn:r" xmlns:p="urn:p" a="1" p:q="2"
      a="3" persistent="true" zzz="">
  text
  <one x="1"/>
  <one/>
  <many/>
  <many y="">
    <leaf/>
  </many>
  <other/>
</root>`
	d := Read("t.xml", []byte(doc), opts)
	root := d.Root()
	root.Attrs("a")
	root.NoText()
	root.Require("a", "b")
	if v, ok := root.Attr("a"); !ok || v != "1" || !root.Has("a") || root.Has("zzz") {
		t.Errorf("Attr(a) = %q %v", v, ok)
	}
	if v, ok := root.RawAttr("zzz"); !ok || v != "" {
		t.Errorf("RawAttr(zzz) = %q %v", v, ok)
	}
	var visited []string
	root.Children([]string{"one", "many"}, []string{"many"}, func(tag string, index int, c *Node) {
		visited = append(visited, c.Path)
		if tag == "many" && index == 2 {
			c.Leaf()
			c.Add(0, "line 0 becomes line 1")
		}
		if tag == "one" {
			c.Leaf("x")
		}
	})
	if want := []string{"one", "many[1]", "many[2]"}; !reflect.DeepEqual(visited, want) {
		t.Errorf("visited %q, want %q", visited, want)
	}
	check(t, d.Problems(),
		`t.xml:1: root attribute "p:q" unknown (known: a)`,
		`t.xml:1: root has text "text"; settings are given as attributes`,
		`t.xml:1: root attribute "b" is required`,
		`t.xml:1: line 0 becomes line 1`,
		`t.xml:2: root attribute "a" given twice (first at line 1)`,
		`t.xml:2: root attribute "persistent" unknown (known: a); only data is persistent`,
		`t.xml:2: root attribute "zzz" unknown (known: a)`,
		`t.xml:5: one given twice (first at line 4); only one is allowed`,
		`t.xml:7: many[2] attribute "y" unknown (many[2] has no attributes)`,
		`t.xml:8: many[2] element <leaf> unknown (many[2] has no child elements)`,
		`t.xml:10: root element <other> unknown (known: one, many)`,
	)
	if err, ok := d.Err().(Problems); !ok || len(err) != 11 {
		t.Errorf("Err() = %T %v", d.Err(), d.Err())
	}
	// Paths below the root are prefixed with the parent's.
	d = Read("t.xml", []byte("<root><a><b/></a></root>"), opts)
	d.Root().Children([]string{"a"}, nil, func(_ string, _ int, a *Node) {
		a.Children([]string{"b"}, []string{"b"}, func(_ string, _ int, b *Node) {
			if b.Path != "a/b[1]" {
				t.Errorf("path %q", b.Path)
			}
		})
	})
}

func TestMaxProblems(t *testing.T) {
	o := opts
	o.MaxProblems = 2
	d := Read("t.xml", []byte("<root/>"), o)
	for i := 4; i > 0; i-- {
		d.Add(i, "problem at %d", i)
	}
	check(t, d.Problems(), `t.xml:3: problem at 3`, `t.xml:4: problem at 4`, `t.xml:4: 2 more problems not listed; fix these first`)
	if ps, ok := d.Err().(Problems); !ok || len(ps) != 3 {
		t.Errorf("Err() = %v", d.Err())
	}
}

// FuzzRead checks that Read never panics, that the etree elements and the
// start tags of the position pass match one to one, and that every problem
// has a line.
func FuzzRead(f *testing.F) {
	f.Add([]byte("<root a=\"1\"><b c='2'/>\n<!-- x --><![CDATA[<d>]]></root>"))
	f.Add([]byte("<root xmlns:x=\"u\"><x:b/></root><root/>"))
	f.Add([]byte("\uFEFF<?xml version=\"1.0\"?><!DOCTYPE root><root>&amp;&#x41;</root>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := Read("f.xml", data, opts)
		if d.mismatch {
			t.Fatalf("etree and the position pass disagree on %q", data)
		}
		if d.index != nil {
			if len(d.index) != len(d.pos.tags) {
				t.Fatalf("%d etree elements, %d start tags", len(d.index), len(d.pos.tags))
			}
			for e, i := range d.index {
				if e.Tag != d.pos.tags[i].local {
					t.Fatalf("element %d is <%s> in etree, <%s> in the position pass", i, e.Tag, d.pos.tags[i].local)
				}
				for _, a := range e.Attr {
					key := a.Key
					if a.Space != "" {
						key = a.Space + ":" + a.Key
					}
					if l := d.AttrLine(e, key, 0); l < d.Line(e) {
						t.Fatalf("attribute %s on line %d before its element on line %d", key, l, d.Line(e))
					}
				}
			}
		}
		for _, p := range d.Problems() {
			if p.File != "f.xml" || p.Line < 1 || p.Msg == "" || strings.ContainsAny(p.Msg, "\r\n") {
				t.Fatalf("bad problem %#v", p)
			}
		}
		if d.Root() == nil && len(d.Problems()) == 0 {
			t.Fatal("no root and no problem")
		}
	})
}
