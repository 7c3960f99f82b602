package routing

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
	"github.com/bearerkit/connect/services/servicefile"
)

const exampleDoc = "testdata/mediaplayer.xml"

var (
	method = func(n string) servicefile.Resource {
		return servicefile.Resource{Kind: servicefile.MethodResource, Name: n}
	}
	event = func(n string) servicefile.Resource {
		return servicefile.Resource{Kind: servicefile.EventResource, Name: n}
	}
	data = func(n string) servicefile.Resource {
		return servicefile.Resource{Kind: servicefile.DataResource, Name: n}
	}
)

const (
	direct          = servicefile.Direct
	server          = servicefile.Server
	directAndServer = servicefile.DirectAndServer
)

// exampleModel is the Document of testdata/mediaplayer.xml.
func exampleModel() *Document {
	const tok = "q8Vt3kZ0pL2xY7wN"
	return &Document{
		Session: "7d9c4b6e-1f2a-4c3b-9e8d-5a6b7c8d9e0f",
		Service: "example.mediaplayer",
		Links: []Link{
			{Name: "server", Kind: ServerLink},
			{Name: "reliable", Kind: DirectLink, Bearer: "connect.bearer.tcp", Address: bearers.MustParseEndpoint("tcp://127.0.0.1:9700"), Token: tok},
			{Name: "secure", Kind: DirectLink, Bearer: "connect.bearer.ssl", Address: bearers.MustParseEndpoint("ssl://127.0.0.1:9701"), Secure: true, Token: tok},
			{Name: "unreliable", Kind: DirectLink, Bearer: "connect.bearer.udp", Address: bearers.MustParseEndpoint("udp://127.0.0.1:9700"), Token: tok},
		},
		Routes: []Route{
			{Resource: method("*"), Link: "server", LinkType: server},
			{Resource: method("play"), Link: "reliable", LinkType: direct},
			{Resource: method("loadPlaylist"), Link: "secure", LinkType: direct},
			{Resource: event("*"), Link: "server", LinkType: server},
			{Resource: data("player.position"), Link: "unreliable", LinkType: directAndServer},
			{Resource: data("spectrum"), Link: "unreliable", LinkType: direct, Alternative: 1, Fallbacks: []Fallback{
				{Link: "reliable", LinkType: direct}, {Link: "server", LinkType: server}}},
		},
	}
}

func TestParseExample(t *testing.T) {
	raw, err := os.ReadFile(exampleDoc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(exampleDoc, raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := exampleModel(); !reflect.DeepEqual(d, want) {
		t.Errorf("Parse(%s) =\n%#v\nwant\n%#v", exampleDoc, d, want)
	}
	// Generate writes it back byte for byte.
	out, err := Generate(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(raw) {
		t.Errorf("Generate =\n%s\nwant\n%s", out, raw)
	}
	// docs/ROUTING.md shows the same document.
	doc, err := os.ReadFile(filepath.Join("..", "docs", "ROUTING.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), string(raw)) {
		t.Errorf("docs/ROUTING.md does not show %s as it is", exampleDoc)
	}
}

// TestLocalDocument pins the document of a service inside the server.
func TestLocalDocument(t *testing.T) {
	d := &Document{Session: "s-1", Service: "example.demo", Links: []Link{{Name: "server", Kind: ServerLink}}}
	out, err := Generate(d)
	if err != nil {
		t.Fatal(err)
	}
	const want = "<routing session=\"s-1\" service=\"example.demo\">\n  <link name=\"server\" kind=\"server\"/>\n</routing>\n"
	if string(out) != want {
		t.Errorf("Generate = %q, want %q", out, want)
	}
	got, err := Parse("local.xml", out)
	if err != nil || !reflect.DeepEqual(got, d) {
		t.Errorf("Parse = %#v, %v", got, err)
	}
	if r := got.Lookup(method("anything")); !reflect.DeepEqual(r, ServerRoute(method("anything"))) {
		t.Errorf("Lookup = %+v, want the server route", r)
	}
}

// TestRoundTrip checks Parse(Generate(d)) == d on documents that use every
// field and unusual values.
func TestRoundTrip(t *testing.T) {
	ipv6zone := bearers.Endpoint{Scheme: "tcp", Host: "fe80::1%eth 0", Port: 9700}
	docs := []*Document{
		{Session: "a", Service: "a", Links: []Link{{Name: "server", Kind: ServerLink}}},
		exampleModel(),
		{
			Session: strings.Repeat("~", MaxSessionLen),
			Service: "com.example.player-2",
			Links: []Link{
				{Name: "reliable:connect.bearer.tcp", Kind: DirectLink, Bearer: "connect.bearer.tcp", Address: ipv6zone, Token: `<&"'>`},
				{Name: "ws", Kind: DirectLink, Bearer: "example.bearer.ws", Address: bearers.MustParseEndpoint("ws://h.example:1/a%20b/c"), Secure: true, Token: strings.Repeat("x", MaxTokenLen)},
				{Name: "server", Kind: ServerLink},
			},
			Routes: []Route{
				{Resource: data("a.b.c"), Link: "ws", LinkType: directAndServer, Alternative: 8},
				{Resource: data("*"), Link: "reliable:connect.bearer.tcp", LinkType: direct, Alternative: 1, Fallbacks: []Fallback{
					{Link: "ws", LinkType: directAndServer}, {Link: "server", LinkType: server}}},
				{Resource: event("_x9"), Link: "server", LinkType: server, Alternative: 3},
			},
		},
	}
	for i, d := range docs {
		out, err := Generate(d)
		if err != nil {
			t.Fatalf("doc %d: %v", i, err)
		}
		got, err := Parse("rt.xml", out)
		if err != nil {
			t.Fatalf("doc %d: %v\n%s", i, err, out)
		}
		if !reflect.DeepEqual(got, d) {
			t.Errorf("doc %d: round trip\n got %#v\nwant %#v\n%s", i, got, d, out)
		}
	}
}

// TestGenerateRejects checks that Generate refuses invalid documents and
// says why, without lines.
func TestGenerateRejects(t *testing.T) {
	srv := Link{Name: "server", Kind: ServerLink}
	tests := []struct {
		name string
		d    *Document
		want []string
	}{
		{"nil", nil, []string{`routing document: no document (nil *Document)`}},
		{"zero", &Document{}, []string{
			`routing document: routing attribute "session": "" is not a session id (1 to 64 visible ASCII characters)`,
			`routing document: routing attribute "service": "" is not a service name (dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters)`,
			`routing document: routing: no server link; every routing document has <link name="server" kind="server"/>`,
		}},
		{"unknown link", &Document{Session: "s", Service: "x", Links: []Link{srv},
			Routes: []Route{{Resource: method("m"), Link: "reliable", LinkType: direct}}}, []string{
			`routing document: route[1] attribute "link": unknown link "reliable" (known: server)`,
		}},
		{"direct link without token", &Document{Session: "s", Service: "x", Links: []Link{srv,
			{Name: "reliable", Kind: DirectLink, Bearer: "connect.bearer.tcp", Address: bearers.MustParseEndpoint("tcp://127.0.0.1:1")}}}, []string{
			`routing document: link reliable attribute "token" is required`,
		}},
		{"bad resource kind", &Document{Session: "s", Service: "x", Links: []Link{srv},
			Routes: []Route{{Resource: servicefile.Resource{Name: "m"}, Link: "server", LinkType: server}}}, []string{
			`routing document: route[1] attribute "resource" unknown (known: method, event, data, link, linkType, alternative)`,
			`routing document: route[1]: name what is routed with method="...", event="..." or data="..."`,
		}},
		{"fallback after the server", &Document{Session: "s", Service: "x", Links: []Link{srv},
			Routes: []Route{{Resource: method("m"), Link: "server", LinkType: server, Alternative: 1, Fallbacks: []Fallback{{Link: "server", LinkType: server}}}}}, []string{
			`routing document: route[1]/fallback[1]: never used: route[1] link "server" (line 3) goes through the server, which always works; put the server last`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Generate(tt.d)
			if out != nil {
				t.Errorf("output %q returned with an error", out)
			}
			testutil.DiffLines(t, "line", problemLines(t, err), tt.want)
		})
	}
}

// TestBadDocuments checks the exact problems reported for each document in
// testdata/bad: several problems in one document, all reported, sorted by
// line.
func TestBadDocuments(t *testing.T) {
	tests := map[string][]string{
		"root.xml": {
			`testdata/bad/root.xml:1: routing attribute "version" unknown (known: session, service)`,
			`testdata/bad/root.xml:1: routing attribute "session": "s 1" is not a session id (1 to 64 visible ASCII characters)`,
			`testdata/bad/root.xml:1: routing attribute "service": "media player" is not a service name (dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters)`,
			`testdata/bad/root.xml:1: routing has text "text"; settings are given as attributes`,
			`testdata/bad/root.xml:1: routing: no server link; every routing document has <link name="server" kind="server"/>`,
			`testdata/bad/root.xml:4: routing element <unknown> unknown (known: link, route)`,
		},
		"noserver.xml": {
			`testdata/bad/noserver.xml:2: routing: no server link; every routing document has <link name="server" kind="server"/>`,
			`testdata/bad/noserver.xml:5: route[2] attribute "link": unknown link "server" (known: reliable)`,
		},
		"links.xml": {
			`testdata/bad/links.xml:2: link server attribute "bearer": the server link has none; bearer, address, secure and token are for direct links`,
			`testdata/bad/links.xml:2: link server attribute "token": the server link has none; bearer, address, secure and token are for direct links`,
			`testdata/bad/links.xml:3: link server declared twice (first at line 2)`,
			`testdata/bad/links.xml:4: link reliable attribute "token" is required`,
			`testdata/bad/links.xml:5: link fast attribute "kind": "quick" unknown (known: server, direct)`,
			`testdata/bad/links.xml:6: link udp attribute "address": tcp://127.0.0.1:9700 has scheme tcp, and connect.bearer.udp serves udp`,
			`testdata/bad/links.xml:7: link all attribute "address": tcp://0.0.0.0:9700 names all interfaces (0.0.0.0); a client needs an address to dial`,
			`testdata/bad/links.xml:8: link zero attribute "address": tcp://[::1]:0 has port 0; a client needs the port to dial`,
			`testdata/bad/links.xml:9: link odd attribute "bearer": bearer type "Connect.Bearer": character 'C' not allowed (use a-z 0-9 _ -)`,
			`testdata/bad/links.xml:9: link odd attribute "address": bad endpoint "127.0.0.1:9700": want scheme://host:port, like tcp://127.0.0.1:9500`,
			`testdata/bad/links.xml:9: link odd attribute "secure": "yes" is not true or false`,
			`testdata/bad/links.xml:10: link[9] attribute "name": "a b" is not a link name (letters, digits, _ . : and -, at most 200 characters)`,
			`testdata/bad/links.xml:10: link[9] attribute "bearer" is required`,
			`testdata/bad/links.xml:10: link[9] attribute "address" is required`,
			`testdata/bad/links.xml:10: link[9] attribute "token" is required`,
			`testdata/bad/links.xml:11: link spaced attribute "token": not a token (1 to 256 visible ASCII characters); the value is not shown`,
			`testdata/bad/links.xml:12: link relay attribute "kind": the server link is named server, and every other link is direct`,
			`testdata/bad/links.xml:13: link[12] has text "ssl"; settings are given as attributes`,
			`testdata/bad/links.xml:13: link[12] attribute "name" is required`,
			`testdata/bad/links.xml:13: link[12] attribute "bearer" is required`,
			`testdata/bad/links.xml:13: link[12] attribute "address" is required`,
			`testdata/bad/links.xml:13: link[12] attribute "token" is required`,
			`testdata/bad/links.xml:14: link nested attribute "port" unknown (known: name, kind, bearer, address, secure, token)`,
			`testdata/bad/links.xml:14: link nested element <fallback> unknown (link nested has no child elements)`,
			`testdata/bad/links.xml:15: link server attribute "kind": the link named server is the server link; write kind="server"`,
			`testdata/bad/links.xml:15: link server declared twice (first at line 2)`,
		},
		"routes.xml": {
			`testdata/bad/routes.xml:4: link broken attribute "address" is required`,
			`testdata/bad/routes.xml:4: link broken attribute "token" is required`,
			`testdata/bad/routes.xml:6: route[2]: method play is already routed at line 5`,
			`testdata/bad/routes.xml:7: route[3]: method and event given; a route names one resource`,
			`testdata/bad/routes.xml:8: route[4]: name what is routed with method="...", event="..." or data="..."`,
			`testdata/bad/routes.xml:9: route[5] attribute "event": "9lives" is not an event name (a letter or _ followed by letters, digits and _, at most 64 characters, or * for every event)`,
			`testdata/bad/routes.xml:10: route[6] attribute "data": "player..volume" is not a data path (names separated by dots, like player.volume, or * for all runtime data)`,
			`testdata/bad/routes.xml:11: route[7] attribute "linkType": direct_and_server is for runtime data only, not for event changed`,
			`testdata/bad/routes.xml:12: route[8] attribute "linkType": direct needs a direct link, and link "server" goes through the server`,
			`testdata/bad/routes.xml:13: route[9] attribute "linkType": server goes through the server, and link "reliable" is direct`,
			`testdata/bad/routes.xml:14: route[10] attribute "link": unknown link "sideways" (known: server, reliable, broken)`,
			`testdata/bad/routes.xml:15: route[11] attribute "linkType": "fast" unknown (known: direct, server, direct_and_server)`,
			`testdata/bad/routes.xml:16: route[12] attribute "link" is required`,
			`testdata/bad/routes.xml:16: route[12] attribute "linkType" is required`,
			`testdata/bad/routes.xml:18: route[14] attribute "alternative": "9" is not an alternative's number (1 to 8)`,
			`testdata/bad/routes.xml:19: route[15] attribute "description" unknown (known: method, event, data, link, linkType, alternative)`,
		},
		"fallbacks.xml": {
			`testdata/bad/fallbacks.xml:7: route[1]/fallback[1]: link "unreliable" again, as in route[1] link "unreliable" (line 6)`,
			`testdata/bad/fallbacks.xml:10: route[1]/fallback[4]: never used: route[1]/fallback[3] (line 9) goes through the server, which always works; put the server last`,
			`testdata/bad/fallbacks.xml:11: route[1]/fallback[5] attribute "link": unknown link "nowhere" (known: server, reliable, unreliable, secure)`,
			`testdata/bad/fallbacks.xml:12: route[1]/fallback[6] attribute "link" is required`,
			`testdata/bad/fallbacks.xml:12: route[1]/fallback[6] attribute "linkType" is required`,
			`testdata/bad/fallbacks.xml:13: route[1]/fallback[7]: more than 8 alternatives in a route (alternative 2 was picked, which leaves room for 6 fallbacks)`,
			`testdata/bad/fallbacks.xml:16: route[2]/fallback[1]: a route with fallbacks says which alternative was picked (alternative="N" on the <route>)`,
			`testdata/bad/fallbacks.xml:19: route[3]/fallback[1]: never used: route[3] link "server" (line 18) goes through the server, which always works; put the server last`,
			`testdata/bad/fallbacks.xml:22: route[4]/fallback[1] attribute "linkType": direct_and_server is for runtime data only, not for event tick`,
			`testdata/bad/fallbacks.xml:23: route[4] element <via> unknown (known: fallback)`,
			`testdata/bad/fallbacks.xml:27: route[5]/fallback[2]: more than 8 alternatives in a route (alternative 7 was picked, which leaves room for 1 fallback)`,
		},
		"syntax.xml": {
			`testdata/bad/syntax.xml:4: XML syntax error: element <link> closed by </routing>`,
		},
		"wrongroot.xml": {
			`testdata/bad/wrongroot.xml:2: root element is <service>, want <routing>`,
		},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := tests[filepath.Base(f)]; !ok {
			t.Errorf("%s has no expected problems in the table", f)
		}
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join("testdata", "bad", name)
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Parse(file, raw)
			if d != nil {
				t.Error("a Document returned together with problems")
			}
			testutil.DiffLines(t, "line", problemLines(t, err), want)
		})
	}
}

// doc wraps body in a <routing> element with the server link; body starts
// on line 3.
func doc(body string) string {
	return "<routing session=\"s\" service=\"mp\">\n  <link name=\"server\" kind=\"server\"/>\n" + body + "\n</routing>\n"
}

const tcpLink = `<link name="reliable" kind="direct" bearer="connect.bearer.tcp" address="tcp://127.0.0.1:9700" token="t"/>`

// TestProblems checks one message per case, in documents small enough to
// read in the table, and the limits.
func TestProblems(t *testing.T) {
	var manyLinks, manyRoutes, manyFallbacks strings.Builder
	for i := 1; i < MaxLinks; i++ {
		fmt.Fprintf(&manyLinks, "<link name=\"l%d\" kind=\"direct\" bearer=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:%d\" token=\"t\"/>\n", i, i)
	}
	for i := 0; i < MaxRoutes; i++ {
		fmt.Fprintf(&manyRoutes, "<route method=\"m%d\" link=\"server\" linkType=\"server\"/>\n", i)
	}
	for i := 0; i < 2000; i++ {
		manyFallbacks.WriteString(`<fallback link="x" linkType="direct"/>`)
	}
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"empty file", ``, []string{`d.xml:1: no <routing> element: the file has no elements`}},
		{"too large", doc(strings.Repeat(" ", MaxSize)), []string{`d.xml:1: file is larger than 1048576 bytes; this is not a routing document`}},
		{"too deep", doc(strings.Repeat("<a>", 9) + strings.Repeat("</a>", 9)), []string{`d.xml:3: elements nested more than 8 deep`}},
		{"not UTF-8", "<routing session=\"\xff\"/>", []string{`d.xml:1: XML syntax error: invalid UTF-8`}},
		{"second root", doc("") + "<routing/>", []string{`d.xml:5: second root element <routing>; a routing document has one <routing> element`}},
		{"most links", doc(manyLinks.String()), nil},
		{"too many links", doc(manyLinks.String() + tcpLink), []string{`d.xml:66: link[65]: more than 64 links in a routing document`}},
		{"most routes", doc(manyRoutes.String()), nil},
		{"too many routes", doc(manyRoutes.String() + `<route method="*" link="server" linkType="server"/>`), []string{
			`d.xml:1027: route[1025]: more than 1024 routes in a routing document`}},
		{"many fallbacks", doc(`<route method="*" link="server" linkType="server" alternative="1">` + manyFallbacks.String() + `</route>`), []string{
			`d.xml:3: route[1]/fallback[1] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[2] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[3] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[4] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[5] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[6] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[7] attribute "link": unknown link "x" (known: server)`,
			`d.xml:3: route[1]/fallback[8]: more than 8 alternatives in a route (alternative 1 was picked, which leaves room for 7 fallbacks)`,
		}},
		{"alternative not decimal", doc(`<route method="*" link="server" linkType="server" alternative="01"/>`), []string{
			`d.xml:3: route[1] attribute "alternative": "01" is not an alternative's number (1 to 8)`}},
		{"long token not shown", doc(`<link name="r" kind="direct" bearer="connect.bearer.tcp" address="tcp://h:1" token="` + strings.Repeat("s", MaxTokenLen+1) + `"/>`), []string{
			`d.xml:3: link r attribute "token": not a token (1 to 256 visible ASCII characters); the value is not shown`}},
		{"long address", doc(`<link name="r" kind="direct" bearer="connect.bearer.tcp" address="tcp://` + strings.Repeat("h", 300) + `:1" token="t"/>`), []string{
			`d.xml:3: link r attribute "address": "tcp://hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh..." is longer than 256 characters`}},
		{"ipv6 any", doc(`<link name="r" kind="direct" bearer="connect.bearer.tcp" address="tcp://[::]:1" token="t"/>`), []string{
			`d.xml:3: link r attribute "address": tcp://[::]:1 names all interfaces (::); a client needs an address to dial`}},
		{"third-party bearer, any scheme", doc(`<link name="ws" kind="direct" bearer="example.bearer.ws" address="wss://h:1/x" token="t"/>`), nil},
		{"namespaces and a BOM", "\uFEFF" + `<routing xmlns="urn:x" session="s" service="mp"><link name="server" kind="server"/></routing>`, nil},
		{"data route on a list element", doc(`<route data="player.queue.3" link="server" linkType="server"/>`), []string{
			`d.xml:3: route[1] attribute "data": "player.queue.3" is not a data path (names separated by dots, like player.volume, or * for all runtime data)`}},
		{"unknown link in an error", doc(`<link name="bad" kind="direct"/><route method="m" link="bad" linkType="direct"/>`), []string{
			`d.xml:3: link bad attribute "bearer" is required`,
			`d.xml:3: link bad attribute "address" is required`,
			`d.xml:3: link bad attribute "token" is required`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse("d.xml", []byte(tt.doc))
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if msg := checkDocument(d); msg != "" {
					t.Fatal(msg)
				}
				return
			}
			if d != nil {
				t.Error("a Document returned together with problems")
			}
			testutil.DiffLines(t, "line", problemLines(t, err), tt.want)
		})
	}
}

// TestParseOffered checks documents against a runner's offer.
func TestParseOffered(t *testing.T) {
	offer := []bearers.Info{{Type: "connect.bearer.tcp", Scheme: "tcp"}, {Type: "example.bearer.ws", Scheme: "ws"}}
	good := doc(tcpLink + `<link name="ws" kind="direct" bearer="example.bearer.ws" address="ws://h:1/c" token="t"/>`)
	if _, err := ParseOffered("d.xml", []byte(good), offer); err != nil {
		t.Errorf("offered bearers: %v", err)
	}
	bad := doc(tcpLink + "\n" +
		`<link name="secure" kind="direct" bearer="connect.bearer.ssl" address="ssl://h:1" token="t"/>` + "\n" +
		`<link name="ws" kind="direct" bearer="example.bearer.ws" address="wss://h:1/c" token="t"/>`)
	_, err := ParseOffered("d.xml", []byte(bad), offer)
	testutil.DiffLines(t, "line", problemLines(t, err), []string{
		`d.xml:4: link secure attribute "bearer": connect.bearer.ssl is not offered by the runner (it offers connect.bearer.tcp, example.bearer.ws)`,
		`d.xml:5: link ws attribute "address": wss://h:1/c has scheme wss, and example.bearer.ws serves ws`,
	})
	// Parse alone accepts both: it does not know the offer, and ws is not
	// a stock bearer.
	if _, err := Parse("d.xml", []byte(bad)); err != nil {
		t.Errorf("Parse: %v", err)
	}
	_, err = ParseOffered("d.xml", []byte(doc(tcpLink)), nil)
	testutil.DiffLines(t, "line", problemLines(t, err), []string{
		`d.xml:3: link reliable attribute "bearer": connect.bearer.tcp is not offered by the runner (it offers none)`,
	})
	// A document with the server link only needs nothing of the runner.
	if _, err := ParseOffered("d.xml", []byte(doc("")), nil); err != nil {
		t.Errorf("server only: %v", err)
	}
}

// TestLookup checks the precedence rules, with Document.Lookup and Table.
func TestLookup(t *testing.T) {
	d := &Document{Session: "s", Service: "mp", Links: []Link{{Name: "server", Kind: ServerLink},
		{Name: "r", Kind: DirectLink, Bearer: "connect.bearer.tcp", Address: bearers.MustParseEndpoint("tcp://h:1"), Token: "t"},
		{Name: "u", Kind: DirectLink, Bearer: "connect.bearer.udp", Address: bearers.MustParseEndpoint("udp://h:1"), Token: "t"}},
		Routes: []Route{
			{Resource: method("*"), Link: "r", LinkType: direct},
			{Resource: method("play"), Link: "server", LinkType: server},
			{Resource: event("tick"), Link: "u", LinkType: direct},
			{Resource: data("*"), Link: "r", LinkType: direct},
			{Resource: data("player"), Link: "server", LinkType: server},
			{Resource: data("player.queue"), Link: "u", LinkType: directAndServer, Alternative: 1, Fallbacks: []Fallback{{Link: "server", LinkType: server}}},
			{Resource: data("player.queue.x"), Link: "r", LinkType: direct},
		}}
	if _, err := Generate(d); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		res  servicefile.Resource
		link string
		lt   servicefile.LinkType
	}{
		{method("play"), "server", server},                     // its own route beats *
		{method("pause"), "r", direct},                         // *
		{method("*"), "r", direct},                             // the * route itself
		{method("pla"), "r", direct},                           // no prefix matching for methods
		{event("tick"), "u", direct},                           // its own route
		{event("tock"), "server", server},                      // no route, no *: the server
		{event("*"), "server", server},                         // no * route
		{data("player"), "server", server},                     // exact
		{data("player.volume"), "server", server},              // below player
		{data("player.queue"), "u", directAndServer},           // longest wins
		{data("player.queue.3"), "u", directAndServer},         // a list element
		{data("player.queue.x.y"), "r", direct},                // longer still
		{data("player.queuex"), "server", server},              // not a dot prefix: player
		{data("playerx"), "r", direct},                         // not below player: *
		{data("settings"), "r", direct},                        // *
		{data(""), "r", direct},                                // the whole tree: *
		{data("*"), "r", direct},                               // the * route
		{servicefile.Resource{Name: "play"}, "server", server}, // no kind
	}
	table := NewTable(d)
	for _, tt := range tests {
		for _, got := range []Route{d.Lookup(tt.res), table.Lookup(tt.res)} {
			if got.Link != tt.link || got.LinkType != tt.lt || got.Resource.Kind != tt.res.Kind {
				t.Errorf("Lookup(%v) = %+v, want link %s, %s", tt.res, got, tt.link, tt.lt)
			}
		}
	}
	if r := table.Lookup(data("player.queue.3")); r.Resource != data("player.queue") || len(r.Fallbacks) != 1 || r.Alternative != 1 {
		t.Errorf("the route found is not the document's: %+v", r)
	}
	if d.Link("u") != &d.Links[2] || d.Link("x") != nil {
		t.Error("Document.Link")
	}
}

// problemLines returns the "file:line: message" lines of a Problems error.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %T is not Problems: %v", err, err)
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
