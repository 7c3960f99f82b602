package servicefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
)

// FuzzParse feeds arbitrary documents to the parser. It must never panic; a
// document is either accepted as a consistent Service, or rejected with
// Problems that each carry the file name and a line and fit on one line.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(exampleFile); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`<service name="m" version="0.1"/>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.xml", data)
		if err != nil {
			if s != nil {
				t.Fatal("Service returned together with an error")
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T is not a non-empty Problems: %v", err, err)
			}
			for i, pr := range ps {
				if pr.File != "fuzz.xml" || pr.Line < 1 || pr.Msg == "" || strings.ContainsAny(pr.Msg, "\r\n") {
					t.Fatalf("bad problem %#v", pr)
				}
				if want := fmt.Sprintf("fuzz.xml:%d: %s", pr.Line, pr.Msg); pr.String() != want {
					t.Fatalf("String() = %q, want %q", pr.String(), want)
				}
				if i > 0 && ps[i-1].Line > pr.Line {
					t.Fatalf("problems not sorted by line: %v", ps)
				}
			}
			return
		}
		if s == nil {
			t.Fatal("nil Service without an error")
		}
		if msg := checkService(s); msg != "" {
			t.Fatalf("accepted an inconsistent Service: %s", msg)
		}
	})
}

// checkService checks the invariants of an accepted Service, returning what
// is wrong or "".
func checkService(s *Service) string {
	if !validServiceName(s.Name) || !validVersion(s.Version) || s.Line < 1 || s.File == "" {
		return fmt.Sprintf("service %q %q line %d", s.Name, s.Version, s.Line)
	}
	names := map[string]bool{}
	for _, t := range s.Types {
		if t.Kind != Struct || !validName(t.Name) || names[t.Name] || t.Line < 1 {
			return fmt.Sprintf("struct %+v", t)
		}
		names[t.Name] = true
		if msg := checkType(t, 0); msg != "" {
			return "struct " + t.Name + ": " + msg
		}
	}
	names = map[string]bool{}
	for _, m := range s.Methods {
		if !validName(m.Name) || names[m.Name] || m.Line < 1 {
			return fmt.Sprintf("method %+v", m)
		}
		names[m.Name] = true
		if msg := checkFields(m.Args); msg != "" {
			return "method " + m.Name + ": " + msg
		}
		if m.Returns != nil {
			if msg := checkType(m.Returns, 0); msg != "" {
				return "method " + m.Name + " returns: " + msg
			}
		}
	}
	names = map[string]bool{}
	for _, e := range s.Events {
		if !validName(e.Name) || names[e.Name] || e.Line < 1 {
			return fmt.Sprintf("event %+v", e)
		}
		names[e.Name] = true
		if msg := checkFields(e.Args); msg != "" {
			return "event " + e.Name + ": " + msg
		}
	}
	if s.Data == nil || s.Data.Kind != ObjectNode || s.Data.Path != "" || s.Data.Name != "" {
		return "data root"
	}
	if msg := checkData(s.Data, false); msg != "" {
		return "data " + msg
	}
	if s.Routing == nil {
		return "nil Routing"
	}
	links := map[string]*Link{}
	for _, l := range s.Routing.Links {
		if !validName(l.Name) || links[l.Name] != nil || contains(builtinLinks, l.Name) || l.Line < 1 ||
			bearers.ValidateType(l.Bearer) != nil || l.Endpoint.IsZero() {
			return fmt.Sprintf("link %+v", l)
		}
		links[l.Name] = l
	}
	routed := map[Resource]bool{}
	for _, r := range s.Routing.Routes {
		if routed[r.Resource] || r.Line < 1 || len(r.Alternatives) == 0 || len(r.Alternatives) > maxAlternatives {
			return fmt.Sprintf("route %+v", r)
		}
		routed[r.Resource] = true
		switch n := r.Resource.Name; {
		case n == All:
		case r.Resource.Kind == MethodResource && s.Method(n) == nil,
			r.Resource.Kind == EventResource && s.Event(n) == nil,
			r.Resource.Kind == DataResource && (n == "" || s.Data.Lookup(n) == nil),
			r.Resource.Kind < MethodResource || r.Resource.Kind > DataResource:
			return fmt.Sprintf("route to a missing resource %+v", r.Resource)
		}
		for i, a := range r.Alternatives {
			server := a.Link == LinkServer
			switch {
			case a.Line < 1,
				server != (a.LinkType == Server),
				server && i != len(r.Alternatives)-1,
				a.LinkType != Server && a.LinkType != Direct && a.LinkType != DirectAndServer,
				a.LinkType == DirectAndServer && r.Resource.Kind != DataResource,
				!contains(builtinLinks, a.Link) && links[a.Link] == nil,
				a.Bearer != "" && (server || links[a.Link] != nil || bearers.ValidateType(a.Bearer) != nil):
				return fmt.Sprintf("alternative %d of %+v: %+v", i, r.Resource, a)
			}
		}
	}
	seen := map[string]bool{}
	for _, e := range s.Endpoints {
		if e.Line < 1 || e.Address.IsZero() || seen[e.Address.String()] {
			return fmt.Sprintf("endpoint %+v", e)
		}
		seen[e.Address.String()] = true
	}
	return ""
}

// checkType checks that t is a finite, fully resolved type tree.
func checkType(t *Type, depth int) string {
	if t == nil {
		return "nil type"
	}
	if depth > maxTypeDepth+maxListDepth+1 {
		return "type nested too deep (a cycle?)"
	}
	switch t.Kind {
	case Int, Float, Bool, String, Binary:
		if t.Elem != nil || t.Fields != nil || t.Name != "" {
			return "scalar with parts: " + t.String()
		}
	case List:
		if t.Fields != nil || t.Name != "" {
			return "list with parts"
		}
		return checkType(t.Elem, depth+1)
	case Struct:
		if t.Elem != nil {
			return "struct with an element type"
		}
		names := map[string]bool{}
		for _, f := range t.Fields {
			if f == nil || !validName(f.Name) || names[f.Name] || f.Line < 1 {
				return fmt.Sprintf("field %+v", f)
			}
			names[f.Name] = true
			if msg := checkType(f.Type, depth+1); msg != "" {
				return msg
			}
		}
	default:
		return fmt.Sprintf("kind %d", t.Kind)
	}
	return ""
}

func checkFields(fs []*Field) string {
	names := map[string]bool{}
	for _, f := range fs {
		if !validName(f.Name) || names[f.Name] || f.Line < 1 {
			return fmt.Sprintf("arg %+v", f)
		}
		names[f.Name] = true
		if msg := checkType(f.Type, 0); msg != "" {
			return "arg " + f.Name + ": " + msg
		}
	}
	return ""
}

// checkData checks a data node and its children. persistent says whether
// an enclosing object is persistent.
func checkData(n *DataNode, persistent bool) string {
	if n.Type == nil || persistent && !n.Persistent || n.Path != "" && n.Line < 1 {
		return fmt.Sprintf("%q: %+v", n.Path, n)
	}
	switch n.Kind {
	case ValueNode:
		if n.Type.Kind == List || n.Children != nil {
			return n.Path + ": value of a list type, or with children"
		}
		if got, want := fmt.Sprintf("%T", n.Default), fmt.Sprintf("%T", zeroValue(n.Type.Kind)); got != want {
			return fmt.Sprintf("%s: default %s for a %s", n.Path, got, n.Type)
		}
	case ListNode:
		if n.Type.Kind != List || n.Children != nil || n.Default != nil {
			return n.Path + ": list"
		}
	case ObjectNode:
		if n.Type.Kind != Struct || n.Type.Name != "" || len(n.Type.Fields) != len(n.Children) || n.Default != nil {
			return n.Path + ": object"
		}
		for i, c := range n.Children {
			f := n.Type.Fields[i]
			if c.Name != f.Name || c.Type != f.Type || c.Path != join(n.Path, c.Name) || !validName(c.Name) {
				return fmt.Sprintf("%s: child %d %q does not match its field %q", n.Path, i, c.Path, f.Name)
			}
			if msg := checkData(c, n.Persistent); msg != "" {
				return msg
			}
		}
		return ""
	default:
		return fmt.Sprintf("%s: kind %d", n.Path, n.Kind)
	}
	return checkType(n.Type, 0)
}

// TestFuzzSeeds keeps the seed corpus honest: seeds named valid_* parse into
// a consistent Service, seeds named broken_* are rejected.
func TestFuzzSeeds(t *testing.T) {
	for _, seed := range testutil.ReadCorpus(t, filepath.Join("testdata", "fuzz", "FuzzParse")) {
		data := seed.Data
		s, err := Parse("seed.xml", data)
		switch name := seed.Name; {
		case strings.HasPrefix(name, "valid_") && err != nil:
			t.Errorf("%s: %v", name, err)
		case strings.HasPrefix(name, "valid_"):
			if msg := checkService(s); msg != "" {
				t.Errorf("%s: %s", name, msg)
			}
		case strings.HasPrefix(name, "broken_") && err == nil:
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestExampleIsConsistent runs the fuzz invariants on the example.
func TestExampleIsConsistent(t *testing.T) {
	s, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if msg := checkService(s); msg != "" {
		t.Fatal(msg)
	}
}
