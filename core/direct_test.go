package core

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

// directXMLFile is remote.echo with a routing of direct links: add over
// the reliable link, meter.level over the unreliable one or else the
// server, levelChanged over the reliable link.
func directXMLFile(t *testing.T) []byte {
	t.Helper()
	xml := remoteXMLFile(t)
	return bytes.Replace(xml, []byte(`    <route method="add" link="reliable"/>`), []byte(`    <route method="add" link="reliable"/>
    <route event="levelChanged" link="reliable"/>
    <route data="meter.level">
      <alternative link="unreliable"/>
      <alternative link="server"/>
    </route>`), 1)
}

// provideDirect provides directXMLFile with tcp and udp endpoints.
func provideDirect(t *testing.T, runner *sessionRig) {
	t.Helper()
	runner.send(&session.ProvideService{ID: 1, Service: "remote.echo", XML: directXMLFile(t), Endpoints: []session.RunnerEndpoint{
		{Address: "tcp://127.0.0.1:9700", Bearer: "connect.bearer.tcp", Capabilities: 3},
		{Address: "udp://127.0.0.1:9700", Bearer: "connect.bearer.udp", Capabilities: 8}}})
	if m, ok := runner.next().(*session.OK); !ok || m.ID != 1 {
		t.Fatalf("ProvideService: %#v", m)
	}
}

// startDirect starts a session as a client with tcp and udp adapters and
// returns its document, as the client and as the runner got it.
func startDirect(t *testing.T, cl, runner *sessionRig, id uint64) (*routing.Document, *session.RemoteOpen) {
	t.Helper()
	cl.send(&session.StartSession{ID: id, Service: "remote.echo", Direct: true, Bearers: []string{"connect.bearer.udp", "connect.bearer.tcp"}})
	open := next[*session.RemoteOpen](runner)
	runner.send(&session.OK{ID: open.ID})
	started := next[*session.SessionStarted](cl)
	if !bytes.Equal(started.Routing, open.Routing) {
		t.Fatalf("the runner got another routing document:\n%s\nthan the client:\n%s", open.Routing, started.Routing)
	}
	d, err := routing.Parse("doc", started.Routing)
	if err != nil {
		t.Fatal(err)
	}
	return d, open
}

// TestStartSessionDeclaresAdapters: what the client declares decides the
// routing; a client that opens no direct links is refused a service that
// routes a method only directly, with the routing error.
func TestStartSessionDeclaresAdapters(t *testing.T) {
	r := remoteServer(t, "")
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	provideDirect(t, runner)
	cl := r.connRig("connectclient", uuid.Nil)

	d, open := startDirect(t, cl, runner, 2)
	if l := d.Link("unreliable"); l == nil || l.Address.String() != "udp://127.0.0.1:9700" || open.Token == "" || l.Token != open.Token {
		t.Fatalf("document:\n%+v", d)
	}
	if rt := d.Lookup(servicefile.Resource{Kind: servicefile.DataResource, Name: "meter.level"}); rt.Link != "unreliable" || rt.Alternative != 1 || len(rt.Fallbacks) != 1 {
		t.Fatalf("meter.level: %+v", rt)
	}

	// tcp only: meter.level takes its second alternative.
	cl.send(&session.StartSession{ID: 3, Service: "remote.echo", Direct: true, Bearers: []string{"connect.bearer.tcp"}})
	open = next[*session.RemoteOpen](runner)
	runner.send(&session.OK{ID: open.ID})
	d, err := routing.Parse("doc", next[*session.SessionStarted](cl).Routing)
	if err != nil {
		t.Fatal(err)
	}
	if rt := d.Lookup(servicefile.Resource{Kind: servicefile.DataResource, Name: "meter.level"}); rt.Link != "server" || rt.Alternative != 2 || d.Link("unreliable") != nil {
		t.Fatalf("meter.level for a client without udp: %+v", rt)
	}

	// No direct links at all: add has no alternative.
	cl.send(&session.StartSession{ID: 4, Service: "remote.echo"})
	e := next[*session.Error](cl)
	want := `service "remote.echo": method add (remote.echo (service file from the runner):48), event levelChanged (remote.echo (service file from the runner):49): link "reliable" is a direct link; the client cannot open direct links to the runner — let it reach the runner, or end the route with <alternative link="server"/> so that such clients go through the server`
	if e.ID != 4 || e.Code != session.CodeRefused || e.Message != want {
		t.Fatalf("got %#v\nwant %q", e, want)
	}
}

// TestPolicyForcesServerRoute: a method the policy does not allow a client
// unconditionally is routed through the server, where each call is
// checked; the link no route uses any more is left out.
func TestPolicyForcesServerRoute(t *testing.T) {
	r := remoteServer(t, `<policy default="allow">
    <deny service="remote.echo" methods="add" when="meter.level &gt; 0.9"/>
  </policy>`)
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	provideDirect(t, runner)
	cl := r.connRig("connectclient", uuid.Nil)
	d, _ := startDirect(t, cl, runner, 2)
	if rt := d.Lookup(servicefile.Resource{Kind: servicefile.MethodResource, Name: "add"}); rt.Link != "server" || rt.LinkType != servicefile.Server {
		t.Fatalf("add: %+v", rt)
	}
	if rt := d.Lookup(servicefile.Resource{Kind: servicefile.EventResource, Name: "levelChanged"}); rt.Link != "reliable" || d.Link("reliable") == nil {
		t.Fatalf("levelChanged keeps its link: %+v", rt)
	}

	allow := func(pol string, method string) bool {
		r := remoteServer(t, pol)
		return r.srv.callAlwaysAllowed(principal{clientID: "c1", token: "ops"}, r.hs, method)
	}
	for _, c := range []struct {
		pol, method string
		want        bool
	}{
		{``, "add", true},
		{`<policy default="allow"/>`, "add", true},
		{`<policy default="deny"/>`, "add", false},
		{`<policy><allow service="*"/></policy>`, "add", true},
		{`<policy><allow service="example.echo" methods="echo"/><allow service="*" when="meter.level == 1"/></policy>`, "add", false},
		{`<policy><allow service="example.echo" methods="echo"/></policy>`, "echo", true},
		{`<policy><deny service="*" client="c2"/><allow service="*" token="ops"/></policy>`, "add", true},
		{`<policy default="allow"><deny service="*" token="ops" methods="add"/></policy>`, "add", false},
	} {
		if got := allow(c.pol, c.method); got != c.want {
			t.Errorf("%s, %s: %v, want %v", c.pol, c.method, got, c.want)
		}
	}
}

// TestLinksDown: what a session gets through the server follows the links
// its client reported down.
func TestLinksDown(t *testing.T) {
	r := remoteServer(t, "")
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	provideDirect(t, runner)
	cl := r.connRig("connectclient", uuid.Nil)
	_, open := startDirect(t, cl, runner, 2)
	sid := open.Session

	cl.send(&session.Subscribe{ID: 3, Session: sid, All: true})
	next[*session.OK](cl)
	cl.send(&session.Watch{ID: 4, Session: sid, Path: "meter"})
	next[*session.Snapshot](cl)
	level := func(v float64) []byte {
		b, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Float}, v)
		return b
	}
	// levelChanged and meter.level go directly: the server sends neither;
	// sleeping and meter.calls come through it.
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "levelChanged", Args: level(0.1)})
	runner.send(&session.ServiceData{Service: "remote.echo", Path: "meter.level", Value: level(0.1)})
	ms, _ := services.AppendArgs(nil, []*servicefile.Field{{Name: "ms", Type: &servicefile.Type{Kind: servicefile.Int}}}, map[string]any{"ms": 5})
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "sleeping", Args: ms})
	if m := next[*session.Event](cl); m.Name != "sleeping" {
		t.Fatalf("got %#v, want the sleeping event only", m)
	}
	calls, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Int}, int64(3))
	runner.send(&session.ServiceData{Service: "remote.echo", Path: "meter.calls", Value: calls})
	if m := next[*session.DataChange](cl); m.Path != "meter.calls" {
		t.Fatalf("got %#v, want meter.calls only", m)
	}

	// Errors name the problem.
	cl.send(&session.LinksDown{ID: 5, Session: sid, Links: []string{"sideways"}})
	if e := next[*session.Error](cl); e.Code != session.CodeBadRequest || e.Message != `session `+sid+`: the session's routing document has no direct link "sideways"` {
		t.Fatalf("%#v", e)
	}
	cl.send(&session.LinksDown{ID: 6, Session: "nope", Links: []string{"unreliable"}})
	if e := next[*session.Error](cl); e.Code != session.CodeUnknownSession {
		t.Fatalf("%#v", e)
	}

	// unreliable down: meter.level falls back to the server, which sends
	// the watched node at once, then its changes; levelChanged has no
	// fallback and still does not come.
	cl.send(&session.LinksDown{ID: 7, Session: sid, Links: []string{"unreliable"}})
	next[*session.OK](cl)
	if m := next[*session.DataChange](cl); m.Path != "meter" {
		t.Fatalf("got %#v, want the watched node again", m)
	}
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "levelChanged", Args: level(0.2)})
	runner.send(&session.ServiceData{Service: "remote.echo", Path: "meter.level", Value: level(0.2)})
	if m := next[*session.DataChange](cl); m.Path != "meter.level" || !bytes.Equal(m.Value, level(0.2)) {
		t.Fatalf("got %#v, want meter.level", m)
	}

	// Counted on the server link, by kind.
	sess := r.srv.Sessions()
	var info *SessionInfo
	for i := range sess {
		if sess[i].ID == sid {
			info = &sess[i]
		}
	}
	if info == nil || info.ServerLink.Calls != 0 || info.ServerLink.Events != 1 || info.ServerLink.DataChanges != 4 || info.ServerLink.MessagesIn != 4 {
		t.Fatalf("server link counters: %+v", info)
	}
	var b strings.Builder
	r.srv.writeLinkMetrics(&b)
	for _, want := range []string{
		`connect_session_link_messages_total{service="remote.echo",link="server",direction="out",kind="data"} 4`,
		`connect_session_link_messages_total{service="remote.echo",link="server",direction="out",kind="event"} 1`,
		`connect_session_link_messages_total{service="remote.echo",link="server",direction="in",kind="call"} 0`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
	cl.send(&session.LinkOpen{ID: 9, Session: sid, Link: "reliable", Token: open.Token})
	if e := next[*session.Error](cl); e.Code != session.CodeBadRequest || !strings.HasPrefix(e.Message, "LinkOpen opens a direct link to a service's runner") {
		t.Fatalf("LinkOpen to the server: %#v", e)
	}
}
