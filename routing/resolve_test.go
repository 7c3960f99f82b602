package routing

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
	"github.com/bearerkit/connect/services/servicefile"
)

const (
	tcpType = "connect.bearer.tcp"
	udpType = "connect.bearer.udp"
	sslType = "connect.bearer.ssl"
	token   = "tok-3f9a"
)

// mpService returns a service with methods play, pause and secret, events
// tick and changed, runtime data player.{volume,queue} and spectrum, the
// routing and endpoints given. The <routing> element is on line 11, so its
// first child is on line 12.
func mpService(t *testing.T, routing, endpoints string) *servicefile.Service {
	t.Helper()
	src := `<service name="mp" version="1.0">
  <method name="play"/><method name="pause"/><method name="secret"/>
  <event name="tick"/><event name="changed"/>
  <data>
    <object name="player">
      <value name="volume" type="int"/>
      <list name="queue" type="string"/>
    </object>
    <value name="spectrum" type="float"/>
  </data>
  <routing>
` + routing + `
  </routing>
  <endpoints>
` + endpoints + `
  </endpoints>
</service>
`
	s, err := servicefile.Parse("mp.xml", []byte(src))
	if err != nil {
		t.Fatalf("service file: %v", err)
	}
	return s
}

const stdEndpoints = `<endpoint address="tcp://127.0.0.1:9700"/><endpoint address="udp://127.0.0.1:9700"/>`

// secureLink declares link secure on a line of its own.
const secureLink = `<link name="secure" bearer="connect.bearer.ssl" endpoint="ssl://127.0.0.1:9701"/>` + "\n"

// remote is a session with a remote service whose runner reached the server
// over tcp and offers tcp, udp and ssl, and a client that has adapters for
// all three and can reach the runner.
func remote() Situation {
	return Situation{
		Session: "s1",
		Token:   token,
		Runner:  &Runner{Bearer: tcpType, Bearers: stockOffer},
		Client:  Client{Bearers: []string{tcpType, udpType, sslType}, Direct: true},
	}
}

var (
	serverLink   = Link{Name: "server", Kind: ServerLink}
	reliableLink = Link{Name: "reliable", Kind: DirectLink, Bearer: tcpType, Address: bearers.MustParseEndpoint("tcp://127.0.0.1:9700"), Token: token}
	udpLink      = Link{Name: "unreliable", Kind: DirectLink, Bearer: udpType, Address: bearers.MustParseEndpoint("udp://127.0.0.1:9700"), Token: token}
	sslLink      = Link{Name: "secure", Kind: DirectLink, Bearer: sslType, Address: bearers.MustParseEndpoint("ssl://127.0.0.1:9701"), Secure: true, Token: token}
)

func TestResolve(t *testing.T) {
	tests := []struct {
		name      string
		routing   string
		endpoints string
		sit       func(*Situation)
		links     []Link
		routes    []Route
	}{
		{
			name:    "local service: everything on the server link",
			routing: secureLink + `<route method="*" link="secure"/><route data="*" link="unreliable"/>`,
			sit:     func(s *Situation) { s.Runner, s.Token = nil, "" },
			links:   []Link{serverLink},
		},
		{
			name:  "remote service without routing",
			links: []Link{serverLink},
		},
		{
			name: "remote service, every kind of link",
			routing: secureLink + `
				<route method="*" linkType="server"/>
				<route method="play" link="reliable"/>
				<route method="secret" link="secure"/>
				<route event="tick" linkType="direct"/>
				<route data="player" link="unreliable" linkType="direct_and_server"/>
				<route data="spectrum" link="unreliable"/>`,
			endpoints: stdEndpoints,
			links:     []Link{serverLink, reliableLink, sslLink, udpLink},
			routes: []Route{
				{Resource: method("*"), Link: "server", LinkType: server},
				{Resource: method("play"), Link: "reliable", LinkType: direct},
				{Resource: method("secret"), Link: "secure", LinkType: direct},
				{Resource: event("tick"), Link: "reliable", LinkType: direct},
				{Resource: data("player"), Link: "unreliable", LinkType: directAndServer},
				{Resource: data("spectrum"), Link: "unreliable", LinkType: direct},
			},
		},
		{
			name:      "reliable follows the runner's bearer; a route's own bearer makes a link of its own",
			routing:   `<route method="play" link="reliable"/><route method="pause" link="reliable" bearer="connect.bearer.tcp"/><route event="*" link="reliable" bearer="connect.bearer.ssl"/>`,
			endpoints: stdEndpoints + `<endpoint address="ssl://127.0.0.1:9702"/>`,
			sit:       func(s *Situation) { s.Runner.Bearer = sslType },
			links: []Link{serverLink,
				{Name: "reliable", Kind: DirectLink, Bearer: sslType, Address: bearers.MustParseEndpoint("ssl://127.0.0.1:9702"), Secure: true, Token: token},
				{Name: "reliable:connect.bearer.tcp", Kind: DirectLink, Bearer: tcpType, Address: bearers.MustParseEndpoint("tcp://127.0.0.1:9700"), Token: token},
			},
			routes: []Route{
				{Resource: method("play"), Link: "reliable", LinkType: direct},
				{Resource: method("pause"), Link: "reliable:connect.bearer.tcp", LinkType: direct},
				{Resource: event("*"), Link: "reliable", LinkType: direct},
			},
		},
		{
			name:      "the first alternative is picked, the others are fallbacks",
			routing:   `<route data="spectrum"><alternative link="unreliable"/><alternative link="reliable"/><alternative link="server"/></route>`,
			endpoints: stdEndpoints,
			links:     []Link{serverLink, udpLink, reliableLink},
			routes: []Route{{Resource: data("spectrum"), Link: "unreliable", LinkType: direct, Alternative: 1,
				Fallbacks: []Fallback{{Link: "reliable", LinkType: direct}, {Link: "server", LinkType: server}}}},
		},
		{
			name:      "an alternative the client cannot use is skipped",
			routing:   `<route data="spectrum"><alternative link="unreliable"/><alternative link="reliable"/><alternative link="server"/></route>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType} },
			links:     []Link{serverLink, reliableLink},
			routes: []Route{{Resource: data("spectrum"), Link: "reliable", LinkType: direct, Alternative: 2,
				Fallbacks: []Fallback{{Link: "server", LinkType: server}}}},
		},
		{
			name:      "a client that cannot reach the runner goes through the server",
			routing:   `<route data="spectrum"><alternative link="unreliable"/><alternative link="reliable"/><alternative link="server"/></route>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Client.Direct = false },
			links:     []Link{serverLink},
			routes:    []Route{{Resource: data("spectrum"), Link: "server", LinkType: server, Alternative: 3}},
		},
		{
			name:      "a fallback the client cannot use is left out",
			routing:   secureLink + `<route method="play"><alternative link="reliable"/><alternative link="secure"/><alternative link="unreliable"/></route>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType, udpType} },
			links:     []Link{serverLink, reliableLink, udpLink},
			routes: []Route{{Resource: method("play"), Link: "reliable", LinkType: direct, Alternative: 1,
				Fallbacks: []Fallback{{Link: "unreliable", LinkType: direct}}}},
		},
		{
			name:      "two alternatives on the same link give one",
			routing:   `<route method="play"><alternative link="reliable"/><alternative link="reliable" bearer="connect.bearer.tcp"/><alternative link="server"/></route>`,
			endpoints: stdEndpoints,
			links:     []Link{serverLink, reliableLink},
			routes: []Route{{Resource: method("play"), Link: "reliable", LinkType: direct, Alternative: 1,
				Fallbacks: []Fallback{{Link: "server", LinkType: server}}}},
		},
		{
			name:      "the runner's endpoints replace the service file's",
			routing:   secureLink + `<route method="play" link="reliable"/><route method="secret" link="secure"/>`,
			endpoints: stdEndpoints,
			sit: func(s *Situation) {
				s.Runner.Endpoints = []bearers.Endpoint{bearers.MustParseEndpoint("udp://10.0.0.1:1"), bearers.MustParseEndpoint("tcp://10.0.0.1:2"), bearers.MustParseEndpoint("tcp://10.0.0.1:3")}
				s.Runner.Links = map[string]bearers.Endpoint{"secure": bearers.MustParseEndpoint("ssl://10.0.0.1:4")}
			},
			links: []Link{serverLink,
				{Name: "reliable", Kind: DirectLink, Bearer: tcpType, Address: bearers.MustParseEndpoint("tcp://10.0.0.1:2"), Token: token},
				{Name: "secure", Kind: DirectLink, Bearer: sslType, Address: bearers.MustParseEndpoint("ssl://10.0.0.1:4"), Secure: true, Token: token},
			},
			routes: []Route{
				{Resource: method("play"), Link: "reliable", LinkType: direct},
				{Resource: method("secret"), Link: "secure", LinkType: direct},
			},
		},
		{
			name:      "a third-party bearer on the unreliable link",
			routing:   `<route data="*" link="unreliable" bearer="example.bearer.dtls"/>`,
			endpoints: stdEndpoints + `<endpoint address="dtls://127.0.0.1:9703"/>`,
			sit: func(s *Situation) {
				s.Runner.Bearers = append(s.Runner.Bearers, bearers.Info{Type: "example.bearer.dtls", Scheme: "dtls", Capabilities: bearers.Datagram | bearers.Secure})
				s.Client.Bearers = append(s.Client.Bearers, "example.bearer.dtls")
			},
			links: []Link{serverLink, {Name: "unreliable:example.bearer.dtls", Kind: DirectLink, Bearer: "example.bearer.dtls",
				Address: bearers.MustParseEndpoint("dtls://127.0.0.1:9703"), Secure: true, Token: token}},
			routes: []Route{{Resource: data("*"), Link: "unreliable:example.bearer.dtls", LinkType: direct}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := mpService(t, tt.routing, tt.endpoints)
			sit := remote()
			if tt.sit != nil {
				tt.sit(&sit)
			}
			d, err := Resolve(svc, sit)
			if err != nil {
				t.Fatal(err)
			}
			want := &Document{Session: "s1", Service: "mp", Links: tt.links, Routes: tt.routes}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("Resolve =\n%#v\nwant\n%#v", d, want)
			}
			checkValid(t, d)
		})
	}
}

// checkValid checks that a resolved document is valid and round-trips.
func checkValid(t *testing.T, d *Document) {
	t.Helper()
	if msg := checkDocument(d); msg != "" {
		t.Fatal(msg)
	}
	out, err := Generate(d)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if back, err := Parse("resolved.xml", out); err != nil || !reflect.DeepEqual(back, d) {
		t.Fatalf("round trip: %v\n%s", err, out)
	}
}

// TestResolveExample resolves examples/xml/mediaplayer.xml into
// testdata/mediaplayer.xml, the document docs/ROUTING.md shows.
func TestResolveExample(t *testing.T) {
	svc, err := servicefile.Load("../examples/xml/mediaplayer.xml")
	if err != nil {
		t.Fatal(err)
	}
	sit := remote()
	sit.Session, sit.Token = "7d9c4b6e-1f2a-4c3b-9e8d-5a6b7c8d9e0f", "q8Vt3kZ0pL2xY7wN"
	d, err := Resolve(svc, sit)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Generate(d)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(exampleDoc)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != string(want) {
		t.Errorf("resolved example:\n%s\nwant (%s):\n%s", out, exampleDoc, want)
	}
}

func TestResolveErrors(t *testing.T) {
	tests := []struct {
		name      string
		routing   string
		endpoints string
		sit       func(*Situation)
		want      []string // one line per *ResolveError
		problems  [][]LinkProblem
	}{
		{
			name:      "protocol mismatch: the client has no ssl adapter",
			routing:   secureLink + `<route method="secret" link="secure"/>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType, udpType} },
			want:      []string{`service "mp": method secret (mp.xml:13): link "secure" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration`},
			problems:  [][]LinkProblem{{{Link: "secure", Bearer: sslType, Reason: "the client has no connect.bearer.ssl adapter", Fix: "add one to the client configuration"}}},
		},
		{
			name:      "protocol mismatch on the reliable link with a bearer",
			routing:   `<route method="play" link="reliable" bearer="connect.bearer.ssl"/>`,
			endpoints: stdEndpoints + `<endpoint address="ssl://127.0.0.1:9701"/>`,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType} },
			want:      []string{`service "mp": method play (mp.xml:12): link "reliable" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration`},
		},
		{
			name:      "the runner does not offer the declared link's bearer",
			routing:   secureLink + `<route method="secret" link="secure"/>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Runner.Bearers = stockOffer[:2] },
			want:      []string{`service "mp": method secret (mp.xml:13): link "secure" needs bearer connect.bearer.ssl; the runner does not offer it — start the runner with an endpoint of that bearer (remoteservicerunner --listen ssl://127.0.0.1:9701)`},
		},
		{
			name:      "the runner does not offer a third-party bearer",
			routing:   `<route method="play" link="reliable" bearer="example.bearer.ws"/>`,
			endpoints: stdEndpoints,
			want:      []string{`service "mp": method play (mp.xml:12): link "reliable" needs bearer example.bearer.ws; the runner does not offer it — start the runner with an endpoint of that bearer (remoteservicerunner --listen URL)`},
		},
		{
			name:      "no udp endpoint in the service file",
			routing:   `<route data="*" link="unreliable"/>`,
			endpoints: `<endpoint address="tcp://127.0.0.1:9700"/>`,
			want:      []string{`service "mp": all runtime data (mp.xml:12): link "unreliable" needs bearer connect.bearer.udp; the service has no udp endpoint — add <endpoint address="udp://HOST:PORT"/> to the service file's <endpoints>`},
		},
		{
			name:      "no udp endpoint at the runner",
			routing:   `<route data="*" link="unreliable"/>`,
			endpoints: stdEndpoints,
			sit: func(s *Situation) {
				s.Runner.Endpoints = []bearers.Endpoint{bearers.MustParseEndpoint("tcp://127.0.0.1:1")}
			},
			want: []string{`service "mp": all runtime data (mp.xml:12): link "unreliable" needs bearer connect.bearer.udp; the runner has no udp endpoint — start the runner with one (remoteservicerunner --listen udp://HOST:PORT)`},
		},
		{
			name:      "an endpoint on all interfaces",
			routing:   `<route method="*" link="reliable"/>`,
			endpoints: `<endpoint address="tcp://0.0.0.0:9700"/>`,
			want:      []string{`service "mp": every method (mp.xml:12): link "reliable" needs bearer connect.bearer.tcp; the address tcp://0.0.0.0:9700 names all interfaces (0.0.0.0); a client needs an address to dial — give the address clients dial in the service file's <endpoints>`},
		},
		{
			name:    "the runner reports port 0 for a declared link",
			routing: secureLink + `<route method="*" link="secure"/>`,
			sit: func(s *Situation) {
				s.Runner.Links = map[string]bearers.Endpoint{"secure": bearers.MustParseEndpoint("ssl://127.0.0.1:0")}
			},
			want: []string{`service "mp": every method (mp.xml:13): link "secure" needs bearer connect.bearer.ssl; the address ssl://127.0.0.1:0 has port 0; a client needs the port to dial — give the address clients dial in the address the runner reports for it`},
		},
		{
			name:    "a declared link whose endpoint does not fit its bearer",
			routing: `<link name="odd" bearer="connect.bearer.ssl" endpoint="tcp://127.0.0.1:9701"/><route method="*" link="odd"/>`,
			want:    []string{`service "mp": every method (mp.xml:12): link "odd" needs bearer connect.bearer.ssl; its endpoint tcp://127.0.0.1:9701 has scheme tcp, and the runner's connect.bearer.ssl serves ssl — correct the bearer or the endpoint of <link name="odd"> in the service file`},
		},
		{
			name:      "a client that cannot reach the runner, and no server alternative",
			routing:   `<route method="play" link="reliable"/>`,
			endpoints: stdEndpoints,
			sit:       func(s *Situation) { s.Client.Direct = false },
			want:      []string{`service "mp": method play (mp.xml:12): link "reliable" is a direct link; the client cannot open direct links to the runner — let it reach the runner, or end the route with <alternative link="server"/> so that such clients go through the server`},
			problems: [][]LinkProblem{{{Link: "reliable", Reason: "the client cannot open direct links to the runner",
				Fix: `let it reach the runner, or end the route with <alternative link="server"/> so that such clients go through the server`}}},
		},
		{
			name:      "no alternative can be used",
			routing:   secureLink + `<route data="spectrum"><alternative link="unreliable"/><alternative link="secure"/></route>`,
			endpoints: `<endpoint address="tcp://127.0.0.1:9700"/>`,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType, udpType} },
			want: []string{`service "mp": data spectrum (mp.xml:13): none of its 2 alternatives can be used: ` +
				`1. link "unreliable" needs bearer connect.bearer.udp; the service has no udp endpoint — add <endpoint address="udp://HOST:PORT"/> to the service file's <endpoints>; ` +
				`2. link "secure" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration`},
		},
		{
			name:      "routes that fail alike are reported together, others apart",
			routing:   secureLink + "<route method=\"play\" link=\"secure\"/>\n<route method=\"pause\" link=\"secure\"/>\n<route data=\"*\" link=\"unreliable\"/>\n<route event=\"*\" link=\"secure\"/>",
			endpoints: `<endpoint address="tcp://127.0.0.1:9700"/>`,
			sit:       func(s *Situation) { s.Client.Bearers = []string{tcpType, udpType} },
			want: []string{
				`service "mp": method play (mp.xml:13), method pause (mp.xml:14), every event (mp.xml:16): link "secure" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration`,
				`service "mp": all runtime data (mp.xml:15): link "unreliable" needs bearer connect.bearer.udp; the service has no udp endpoint — add <endpoint address="udp://HOST:PORT"/> to the service file's <endpoints>`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := mpService(t, tt.routing, tt.endpoints)
			sit := remote()
			if tt.sit != nil {
				tt.sit(&sit)
			}
			d, err := Resolve(svc, sit)
			if err == nil {
				t.Fatalf("no error; document %+v", d)
			}
			if d != nil {
				t.Error("a Document returned together with an error")
			}
			testutil.DiffLines(t, "line", strings.Split(err.Error(), "\n"), tt.want)
			var re *ResolveError
			if !errors.As(err, &re) || re.Service != "mp" || re.File != "mp.xml" || len(re.Routes) == 0 {
				t.Fatalf("error %T %+v is not a *ResolveError for mp", err, re)
			}
			if tt.problems != nil && !reflect.DeepEqual(re.Problems, tt.problems[0]) {
				t.Errorf("Problems = %+v, want %+v", re.Problems, tt.problems[0])
			}
		})
	}
}

func TestResolveManyRoutes(t *testing.T) {
	// Routes failing alike are named up to ten, then counted.
	var routing strings.Builder
	routing.WriteString(secureLink)
	var methods strings.Builder
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&methods, `<method name="m%d"/>`, i)
		fmt.Fprintf(&routing, `<route method="m%d" link="secure"/>`, i)
	}
	src := `<service name="mp" version="1.0">` + methods.String() + `<routing>` + routing.String() + `</routing></service>`
	svc, err := servicefile.Parse("mp.xml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sit := remote()
	sit.Client.Bearers = nil
	_, err = Resolve(svc, sit)
	want := `service "mp": method m0 (mp.xml:2), method m1 (mp.xml:2), method m2 (mp.xml:2), method m3 (mp.xml:2), method m4 (mp.xml:2), ` +
		`method m5 (mp.xml:2), method m6 (mp.xml:2), method m7 (mp.xml:2), method m8 (mp.xml:2), method m9 (mp.xml:2) and 2 more: ` +
		`link "secure" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}

	// More links than a document holds.
	routing.Reset()
	methods.Reset()
	for i := 0; i < 64; i++ {
		fmt.Fprintf(&methods, `<method name="m%d"/>`, i)
		fmt.Fprintf(&routing, `<link name="l%d" bearer="connect.bearer.tcp" endpoint="tcp://127.0.0.1:%d"/><route method="m%d" link="l%d"/>`, i, 1000+i, i, i)
	}
	src = `<service name="mp" version="1.0">` + methods.String() + `<routing>` + routing.String() + `</routing></service>`
	if svc, err = servicefile.Parse("mp.xml", []byte(src)); err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(svc, remote())
	want = `service "mp": this session needs 65 links, and a routing document holds at most 64; declare fewer links, or fewer bearers on the built-in ones`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	// 63 declared links and the server fit.
	svc.Routing.Routes = svc.Routing.Routes[:63]
	d, err := Resolve(svc, remote())
	if err != nil {
		t.Fatal(err)
	}
	checkValid(t, d)
}

func TestResolveBadArguments(t *testing.T) {
	svc := mpService(t, `<route method="play" link="reliable"/>`, stdEndpoints)
	tests := []struct {
		name string
		svc  *servicefile.Service
		sit  func(*Situation)
		want string
	}{
		{"nil service", nil, nil, `routing: Resolve: nil service`},
		{"no session", svc, func(s *Situation) { s.Session = "" }, `routing: service "mp": session id "" is not valid (1 to 64 visible ASCII characters)`},
		{"session with a space", svc, func(s *Situation) { s.Session = "a b" }, `routing: service "mp": session id "a b" is not valid (1 to 64 visible ASCII characters)`},
		{"no token", svc, func(s *Situation) { s.Token = "" }, `routing: service "mp": the session's token is not valid (1 to 256 visible ASCII characters)`},
		{"runner without its bearer", svc, func(s *Situation) { s.Runner.Bearer = "" }, `routing: service "mp": the bearer the runner used to reach the server: empty bearer type`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sit := remote()
			if tt.sit != nil {
				tt.sit(&sit)
			}
			d, err := Resolve(tt.svc, sit)
			if err == nil || err.Error() != tt.want || d != nil {
				t.Errorf("Resolve = %v, %v; want error %s", d, err, tt.want)
			}
			var re *ResolveError
			if errors.As(err, &re) {
				t.Error("a bad argument gives a *ResolveError")
			}
		})
	}
	// A local service needs no token.
	sit := remote()
	sit.Runner, sit.Token = nil, ""
	if _, err := Resolve(svc, sit); err != nil {
		t.Errorf("local: %v", err)
	}
}

// TestResolveCombinations resolves the example service for every mix of
// runner bearer, runner offer, client adapters and direct reachability:
// each gives a valid document whose routes and fallbacks use only links
// the session can open, or a *ResolveError.
func TestResolveCombinations(t *testing.T) {
	svc, err := servicefile.Load("../examples/xml/mediaplayer.xml")
	if err != nil {
		t.Fatal(err)
	}
	types := []string{tcpType, udpType, sslType}
	subset := func(mask int) []string {
		var out []string
		for i, ty := range types {
			if mask&(1<<i) != 0 {
				out = append(out, ty)
			}
		}
		return out
	}
	docs, failures := 0, 0
	for _, runnerBearer := range types {
		for offerMask := 0; offerMask < 8; offerMask++ {
			var offer []bearers.Info
			for _, info := range stockOffer {
				if slices.Contains(subset(offerMask), info.Type) {
					offer = append(offer, info)
				}
			}
			for clientMask := 0; clientMask < 8; clientMask++ {
				for _, reach := range []bool{false, true} {
					sit := Situation{Session: "s", Token: "t",
						Runner: &Runner{Bearer: runnerBearer, Bearers: offer, Endpoints: []bearers.Endpoint{
							bearers.MustParseEndpoint("tcp://127.0.0.1:1"), bearers.MustParseEndpoint("udp://127.0.0.1:2"), bearers.MustParseEndpoint("ssl://127.0.0.1:3")}},
						Client: Client{Bearers: subset(clientMask), Direct: reach}}
					d, err := Resolve(svc, sit)
					if err != nil {
						var re *ResolveError
						if !errors.As(err, &re) {
							t.Fatalf("%+v: error %T %v", sit, err, err)
						}
						failures++
						continue
					}
					docs++
					checkValid(t, d)
					if len(d.Routes) != len(svc.Routing.Routes) {
						t.Fatalf("%d routes for %d declared", len(d.Routes), len(svc.Routing.Routes))
					}
					usable := func(name string) bool {
						l := d.Link(name)
						return l.Kind == ServerLink || reach && slices.Contains(sit.Client.Bearers, l.Bearer) && slices.Contains(subset(offerMask), l.Bearer)
					}
					for _, r := range d.Routes {
						if !usable(r.Link) {
							t.Fatalf("%+v: route %+v on a link the session cannot open", sit, r)
						}
						for _, f := range r.Fallbacks {
							if !usable(f.Link) {
								t.Fatalf("%+v: route %+v falls back on a link the session cannot open", sit, r)
							}
						}
					}
					if !reach && len(d.Links) != 1 {
						t.Fatalf("a client that cannot reach the runner got direct links: %+v", d.Links)
					}
				}
			}
		}
	}
	if docs == 0 || failures == 0 {
		t.Errorf("%d documents, %d failures: the combinations do not cover both", docs, failures)
	}
}

func TestResolveBadOffer(t *testing.T) {
	svc := mpService(t, `<route method="play" link="reliable"/>`, stdEndpoints)
	for _, tt := range []struct {
		name string
		sit  func(*Situation)
		want string
	}{
		{"a stock bearer with another scheme", func(s *Situation) {
			s.Runner.Bearers = []bearers.Info{{Type: tcpType, Scheme: "tcp2", Capabilities: bearers.Reliable | bearers.Ordered}}
		}, `routing: service "mp": the runner offers connect.bearer.tcp with scheme "tcp2"; it serves "tcp"`},
		{"an invalid bearer", func(s *Situation) {
			s.Runner.Bearers = []bearers.Info{{Type: tcpType, Scheme: "tcp"}}
		}, `routing: service "mp": a bearer the runner offers: bearers: a stream bearer must be reliable and ordered, got none`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sit := remote()
			tt.sit(&sit)
			if _, err := Resolve(svc, sit); err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}
	// An address the runner reports that no document can hold.
	sit := remote()
	sit.Runner.Endpoints = []bearers.Endpoint{{Scheme: "tcp", Host: "a\x01b", Port: 1}}
	_, err := Resolve(svc, sit)
	want := `service "mp": method play (mp.xml:12): link "reliable" needs bearer connect.bearer.tcp; the address "tcp://a\x01b:1" is not a valid endpoint — give the address clients dial in the runner's endpoints`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}
