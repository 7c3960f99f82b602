package routing

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
	"github.com/bearerkit/connect/services/servicefile"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzParse from testdata")

var stockOffer = []bearers.Info{
	{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered},
	{Type: "connect.bearer.udp", Scheme: "udp", Capabilities: bearers.Datagram},
	{Type: "connect.bearer.ssl", Scheme: "ssl", Capabilities: bearers.Reliable | bearers.Ordered | bearers.Secure},
}

// FuzzParse feeds arbitrary documents to the parser. It must never panic.
// A document is either rejected with Problems that each carry the file
// name and a line, fit on one line and come sorted, or accepted as a
// Document that keeps every rule of the format, that Generate writes back
// so that Parse gives the same Document (and the same bytes again), and in
// which Table and Document.Lookup agree.
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse("fuzz.xml", data)
		offered, offErr := ParseOffered("fuzz.xml", data, stockOffer)
		if err != nil {
			if d != nil {
				t.Fatal("Document returned together with an error")
			}
			if msg := checkProblems(err); msg != "" {
				t.Fatal(msg)
			}
			if offErr == nil {
				t.Fatal("ParseOffered accepted what Parse rejects")
			}
			return
		}
		if offErr == nil && !reflect.DeepEqual(offered, d) {
			t.Fatal("ParseOffered and Parse disagree")
		}
		if offErr != nil {
			if msg := checkProblems(offErr); msg != "" {
				t.Fatal(msg)
			}
		}
		if msg := checkDocument(d); msg != "" {
			t.Fatalf("accepted an invalid Document: %s", msg)
		}
		out, err := Generate(d)
		if err != nil {
			t.Fatalf("Generate refuses what Parse accepted: %v", err)
		}
		again, err := Parse("fuzz.xml", out)
		if err != nil {
			t.Fatalf("Parse(Generate(d)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, d) {
			t.Fatalf("Parse(Generate(d)) != d:\n got %#v\nwant %#v", again, d)
		}
		if out2, err := Generate(again); err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("Generate is not stable: %v\n%s\n%s", err, out, out2)
		}
		checkLookup(t, d)
	})
}

// checkProblems checks the shape of a Parse error, returning what is wrong
// or "".
func checkProblems(err error) string {
	var ps Problems
	if !errors.As(err, &ps) || len(ps) == 0 {
		return fmt.Sprintf("error %T is not a non-empty Problems: %v", err, err)
	}
	for i, p := range ps {
		if p.File != "fuzz.xml" || p.Line < 1 || p.Msg == "" || strings.ContainsAny(p.Msg, "\r\n") {
			return fmt.Sprintf("bad problem %#v", p)
		}
		if i > 0 && ps[i-1].Line > p.Line {
			return fmt.Sprintf("problems not sorted by line: %v", ps)
		}
	}
	return ""
}

// checkLookup checks that Table and Document.Lookup agree on every routed
// resource and on resources below and beside them.
func checkLookup(t *testing.T, d *Document) {
	table := NewTable(d)
	var probes []servicefile.Resource
	for _, r := range d.Routes {
		probes = append(probes, r.Resource,
			servicefile.Resource{Kind: r.Resource.Kind, Name: r.Resource.Name + ".x"},
			servicefile.Resource{Kind: r.Resource.Kind, Name: r.Resource.Name + "x"},
			servicefile.Resource{Kind: r.Resource.Kind, Name: "zz"})
		if i := strings.LastIndexByte(r.Resource.Name, '.'); i > 0 {
			probes = append(probes, servicefile.Resource{Kind: r.Resource.Kind, Name: r.Resource.Name[:i]})
		}
	}
	for _, p := range probes {
		a, b := d.Lookup(p), table.Lookup(p)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("Lookup(%v): Document %+v, Table %+v", p, a, b)
		}
		if d.Link(a.Link) == nil {
			t.Fatalf("Lookup(%v) = %+v: no such link", p, a)
		}
	}
}

// checkDocument checks every rule of the format on a Document, without the
// parser's code, returning what is wrong or "".
func checkDocument(d *Document) string {
	if d == nil {
		return "nil Document"
	}
	if !visibleASCII(d.Session, MaxSessionLen) || servicefile.ValidateServiceName(d.Service) != nil {
		return fmt.Sprintf("session %q service %q", d.Session, d.Service)
	}
	if len(d.Links) == 0 || len(d.Links) > MaxLinks {
		return fmt.Sprintf("%d links", len(d.Links))
	}
	links := map[string]LinkKind{}
	servers := 0
	for _, l := range d.Links {
		if !validLinkName(l.Name) || links[l.Name] != "" {
			return fmt.Sprintf("link name %q", l.Name)
		}
		links[l.Name] = l.Kind
		switch l.Kind {
		case ServerLink:
			servers++
			if l.Name != ServerLinkName || l.Bearer != "" || !l.Address.IsZero() || l.Secure || l.Token != "" {
				return fmt.Sprintf("server link %+v", l)
			}
		case DirectLink:
			if l.Name == ServerLinkName || bearers.ValidateType(l.Bearer) != nil || l.Address.IsZero() || l.Address.Port < 1 ||
				l.Address.Port > 65535 || !visibleASCII(l.Token, MaxTokenLen) {
				return fmt.Sprintf("direct link %+v", l)
			}
			if a, err := netip.ParseAddr(l.Address.Host); err == nil && a.IsUnspecified() {
				return fmt.Sprintf("direct link to all interfaces %+v", l)
			}
			if s, ok := stockSchemes[l.Bearer]; ok && l.Address.Scheme != s {
				return fmt.Sprintf("direct link with the wrong scheme %+v", l)
			}
		default:
			return fmt.Sprintf("link kind %+v", l)
		}
	}
	if servers != 1 {
		return fmt.Sprintf("%d server links", servers)
	}
	if len(d.Routes) > MaxRoutes {
		return fmt.Sprintf("%d routes", len(d.Routes))
	}
	routed := map[servicefile.Resource]bool{}
	way := func(link string, lt servicefile.LinkType, k servicefile.ResourceKind) bool {
		switch links[link] {
		case ServerLink:
			return lt == servicefile.Server
		case DirectLink:
			return lt == servicefile.Direct || lt == servicefile.DirectAndServer && k == servicefile.DataResource
		}
		return false
	}
	for _, r := range d.Routes {
		res := r.Resource
		if routed[res] {
			return fmt.Sprintf("%v routed twice", res)
		}
		routed[res] = true
		switch {
		case res.Kind < servicefile.MethodResource || res.Kind > servicefile.DataResource,
			res.Name != servicefile.All && res.Kind != servicefile.DataResource && !servicefile.ValidName(res.Name),
			res.Name != servicefile.All && res.Kind == servicefile.DataResource && !servicefile.ValidPath(res.Name):
			return fmt.Sprintf("resource %+v", res)
		}
		if !way(r.Link, r.LinkType, res.Kind) {
			return fmt.Sprintf("route %+v", r)
		}
		if r.Alternative < 0 || r.Alternative > MaxAlternatives || len(r.Fallbacks) > 0 && r.Alternative == 0 ||
			max(r.Alternative, 1)+len(r.Fallbacks) > MaxAlternatives || r.Fallbacks != nil && len(r.Fallbacks) == 0 {
			return fmt.Sprintf("route %+v: alternative and fallbacks", r)
		}
		used := map[string]bool{r.Link: true}
		last := r.Link
		for _, f := range r.Fallbacks {
			if !way(f.Link, f.LinkType, res.Kind) || used[f.Link] || last == ServerLinkName {
				return fmt.Sprintf("route %+v: fallback %+v", r, f)
			}
			used[f.Link] = true
			last = f.Link
		}
	}
	return ""
}

// seed is one file of the seed corpus.
type seed struct {
	name string
	data []byte
}

// seeds are the corpus: the bad documents (broken_*), the example and
// documents Generate writes (valid_*).
func seeds(tb testing.TB) []seed {
	var out []seed
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.xml"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, seed{"broken_" + strings.TrimSuffix(filepath.Base(f), ".xml"), raw})
	}
	raw, err := os.ReadFile(exampleDoc)
	if err != nil {
		tb.Fatal(err)
	}
	out = append(out, seed{"valid_example", raw})
	local, err := Generate(&Document{Session: "s-1", Service: "example.demo", Links: []Link{{Name: "server", Kind: ServerLink}}})
	if err != nil {
		tb.Fatal(err)
	}
	out = append(out, seed{"valid_local", local})
	out = append(out, seed{"valid_bearers_fallbacks", []byte(`<?xml version="1.0" encoding="UTF-8"?>
<routing xmlns="urn:connect" session="s:2" service="com.example.x">
  <link name="reliable:connect.bearer.tcp" kind="direct" bearer="connect.bearer.tcp" address="tcp://[fe80::1%25eth0]:9700" token="&lt;&amp;&gt;"/>
  <link name="ws" kind="direct" bearer="example.bearer.ws" address="ws://h.example:80/a%20b" secure="false" token="t"/>
  <link name="server" kind="server"/>
  <!-- a comment -->
  <route data="a.b" link="ws" linkType="direct_and_server" alternative="2">
    <fallback link="reliable:connect.bearer.tcp" linkType="direct"/>
    <fallback link="server" linkType="server"/>
  </route>
  <route data="a" link="reliable:connect.bearer.tcp" linkType="direct"/>
  <route event="*" link="server" linkType="server" alternative="8"/>
</routing>
`)})
	return out
}

// TestFuzzSeeds keeps the seed corpus honest: the files in
// testdata/fuzz/FuzzParse are the seeds (rewrite them with
// go test ./routing -run TestFuzzSeeds -update-corpus); valid_* parse into
// a consistent Document, broken_* are rejected.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	want := seeds(t)
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range want {
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s.data)) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	onDisk := map[string][]byte{}
	for _, seed := range testutil.ReadCorpus(t, dir) {
		data := seed.Data
		name := seed.Name
		onDisk[name] = data
		d, err := Parse("seed.xml", data)
		switch {
		case strings.HasPrefix(name, "valid_") && err != nil:
			t.Errorf("%s: %v", name, err)
		case strings.HasPrefix(name, "valid_"):
			if msg := checkDocument(d); msg != "" {
				t.Errorf("%s: %s", name, msg)
			}
		case strings.HasPrefix(name, "broken_") && err == nil:
			t.Errorf("%s: accepted", name)
		}
	}
	for _, s := range want {
		if got, ok := onDisk[s.name]; !ok || !bytes.Equal(got, s.data) {
			t.Errorf("seed %s is missing or stale in %s; run go test ./routing -run TestFuzzSeeds -update-corpus", s.name, dir)
		}
	}
}
