package core

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// remoteXMLFile is the echo example renamed remote.echo, with a routing
// declaration: add goes over the direct reliable link, the rest through
// the server.
func remoteXMLFile(t *testing.T) []byte {
	t.Helper()
	xml, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	xml = bytes.Replace(xml, []byte(`name="example.echo"`), []byte(`name="remote.echo"`), 1)
	return bytes.Replace(xml, []byte("</service>"), []byte(`  <routing>
    <route method="*" linkType="server"/>
    <route method="add" link="reliable"/>
  </routing>
</service>`), 1)
}

// connRig adds a registered connection to r's server: another client, or
// a runner (with its own client id unless id is given).
func (r *sessionRig) connRig(name string, id uuid.UUID) *sessionRig {
	t := r.t
	t.Helper()
	if id == uuid.Nil {
		id = uuid.New()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, b := net.Pipe()
	ad := &adapter{cfg: config.Adapter{Name: "tcp", Type: "connect.bearer.tcp"}, sup: pluginhost.NewSupervisor(pluginhost.Options{Name: "tcp"}, bearers.Endpoint{}, nil)}
	c := &clientConn{s: r.srv, adapter: ad, bc: pipeConn{a}, wc: wire.NewStreamConn(a, 0), log: log, clientID: id, name: name}
	n := &sessionRig{t: t, srv: r.srv, hs: r.hs, c: c, cs: c.sessionLayer(), peer: wire.NewStreamConn(b, 0)}
	t.Cleanup(n.end)
	return n
}

// end closes the connection as its reader would when it ends.
func (r *sessionRig) end() {
	r.peer.Close()
	within(r.t, "closeSessions", r.c.closeSessions)
}

// pipeConn makes a net.Conn a bearers.Conn for the tests.
type pipeConn struct{ net.Conn }

func (pipeConn) Peer() bearers.Peer { return bearers.Peer{} }

// answer reads the next message and fails unless it is a T.
func next[T session.Message](r *sessionRig) T {
	r.t.Helper()
	m := r.next()
	v, ok := m.(T)
	if !ok {
		r.t.Fatalf("got %#v, want a %T", m, v)
	}
	return v
}

func remoteServer(t *testing.T, extra string) *sessionRig {
	t.Helper()
	r := newSessionRig(t)
	cfg, err := config.Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  `+extra+`
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	r.srv.cfg = cfg
	r.hs.cfg.Line = 7
	return r
}

// provide offers remote.echo from a runner connection and answers the
// session reopens the server asks for; it returns the answer.
func provide(runner *sessionRig, id uint64, xml []byte) session.Message {
	runner.send(&session.ProvideService{ID: id, Service: "remote.echo", XML: xml,
		Endpoints: []session.RunnerEndpoint{{Address: "tcp://127.0.0.1:9700", Bearer: "connect.bearer.tcp", Capabilities: uint64(bearers.Reliable | bearers.Ordered)}}})
	for {
		switch m := runner.next().(type) {
		case *session.RemoteOpen:
			runner.send(&session.OK{ID: m.ID})
		default:
			return m
		}
	}
}

func TestRemoteServiceLifecycle(t *testing.T) {
	r := remoteServer(t, "")
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	xml := remoteXMLFile(t)
	if m, ok := provide(runner, 1, xml).(*session.OK); !ok || m.ID != 1 {
		t.Fatalf("ProvideService: %#v", m)
	}
	who := "remoteservicerunner (client " + runner.c.clientID.String() + ")"

	// Listed, with its runner.
	cl := r.connRig("connectclient", uuid.Nil)
	cl.send(&session.ListServices{ID: 2})
	list := next[*session.ServiceList](cl)
	var entry *session.ServiceEntry
	for i := range list.Services {
		if list.Services[i].Name == "remote.echo" {
			entry = &list.Services[i]
		}
	}
	if entry == nil || !entry.Available || entry.Runner != who || entry.Version != "1.0" {
		t.Fatalf("ServiceList: %#v", list)
	}
	if info := r.srv.lookupService("remote.echo").remoteInfo(); info == nil || !info.Connected || info.Runner != who || info.Bearer != "connect.bearer.tcp" ||
		len(info.Endpoints) != 1 || info.Endpoints[0] != "tcp://127.0.0.1:9700" {
		t.Fatalf("remote info: %+v", info)
	}

	// A session: opened on the runner, with the resolved routing document.
	cl.send(&session.StartSession{ID: 3, Service: "remote.echo", Direct: true, Bearers: []string{"connect.bearer.tcp"}})
	open := next[*session.RemoteOpen](runner)
	if open.Service != "remote.echo" || open.Client != cl.c.clientID.String() || open.Token == "" {
		t.Fatalf("RemoteOpen: %#v", open)
	}
	runner.send(&session.OK{ID: open.ID})
	started := next[*session.SessionStarted](cl)
	doc, err := routing.Parse("doc", started.Routing)
	if err != nil {
		t.Fatal(err)
	}
	if l := doc.Link("reliable"); started.Session != open.Session || l == nil || l.Token != open.Token || l.Address.String() != "tcp://127.0.0.1:9700" {
		t.Fatalf("routing document:\n%s", started.Routing)
	}
	sid := started.Session

	// A call, relayed with its deadline; the answer comes back.
	cl.send(&session.Call{ID: 4, Session: sid, Method: "add", Timeout: guard, Args: []byte{0x50, 0x04}})
	call := next[*session.RemoteCall](runner)
	if call.Session != sid || call.Method != "add" || call.Timeout <= 0 || call.Timeout > guard || !bytes.Equal(call.Args, []byte{0x50, 0x04}) {
		t.Fatalf("RemoteCall: %#v", call)
	}
	runner.send(&session.Result{ID: call.ID, Value: []byte{0x54}})
	if m := next[*session.Result](cl); m.ID != 4 || !bytes.Equal(m.Value, []byte{0x54}) {
		t.Fatalf("Result: %#v", m)
	}
	// An error the service answered keeps its code and text.
	cl.send(&session.Call{ID: 5, Session: sid, Method: "fail", Args: []byte{0}})
	call = next[*session.RemoteCall](runner)
	runner.send(session.NewError(call.ID, session.CodeApplication, `service remote.echo: call fail in session "x" (#3): asked to fail`))
	if e := next[*session.Error](cl); e.ID != 5 || e.Code != session.CodeApplication || e.Message != `service remote.echo: call fail in session "x" (#3): asked to fail` {
		t.Fatalf("Error: %#v", e)
	}
	// An answer that does not decode fails the call.
	cl.send(&session.Call{ID: 6, Session: sid, Method: "add", Args: []byte{0x50, 0x04}})
	call = next[*session.RemoteCall](runner)
	runner.cs.handle(append([]byte{byte(session.KindResult)}, append(wire.AppendUint64Field(nil, 1, call.ID), 2, 9)...))
	if e := next[*session.Error](cl); e.ID != 6 || e.Code != session.CodeServiceFault || !strings.Contains(e.Message, "the runner's answer does not decode") {
		t.Fatalf("Error: %#v", e)
	}

	// A runner that does not answer in time: the caller gets the deadline,
	// the runner a cancel.
	cl.send(&session.Call{ID: 14, Session: sid, Method: "sleep", Timeout: 50 * time.Millisecond, Args: []byte{0x02}})
	call = next[*session.RemoteCall](runner)
	if m := next[*session.RemoteCancel](runner); m.Target != call.ID {
		t.Fatalf("RemoteCancel: %#v, want target %d", m, call.ID)
	}
	if e := next[*session.Error](cl); e.ID != 14 || e.Code != session.CodeDeadlineExceeded {
		t.Fatalf("call past its deadline: %#v", e)
	}
	runner.send(&session.Result{ID: call.ID}) // too late: ignored

	// Events and runtime data from the runner reach the session.
	cl.send(&session.Subscribe{ID: 7, Session: sid, All: true})
	next[*session.OK](cl)
	cl.send(&session.Watch{ID: 8, Session: sid, Path: "meter.level"})
	next[*session.Snapshot](cl)
	level, _ := services.AppendValue(nil, &servicefile.Type{Kind: servicefile.Float}, 0.25)
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "levelChanged", Args: level})
	if m := next[*session.Event](cl); m.Name != "levelChanged" || !bytes.Equal(m.Args, level) {
		t.Fatalf("Event: %#v", m)
	}
	runner.send(&session.ServiceData{Service: "remote.echo", Path: "meter.level", Value: level})
	if m := next[*session.DataChange](cl); m.Watch != 8 || m.Path != "meter.level" || !bytes.Equal(m.Value, level) {
		t.Fatalf("DataChange: %#v", m)
	}
	// Notifications that do not fit are dropped, and break nothing.
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "nope"})
	runner.send(&session.ServiceEvent{Service: "remote.echo", Name: "levelChanged", Args: []byte{1}})
	runner.send(&session.ServiceData{Service: "remote.echo", Path: "meter.nope", Value: level})
	runner.send(&session.ServiceData{Service: "other.service", Path: "x"})

	// The runner goes away: the session stays, its calls fail clearly.
	runner.end()
	want := "service remote.echo is unavailable: its runner " + who + " is disconnected; calls work again once it reconnects"
	cl.send(&session.Call{ID: 9, Session: sid, Method: "add", Args: []byte{0x50, 0x04}})
	if e := next[*session.Error](cl); e.Code != session.CodeUnavailable || e.Message != want {
		t.Fatalf("call while the runner is away: %#v\nwant %q", e, want)
	}
	cl.send(&session.StartSession{ID: 10, Service: "remote.echo", Direct: true, Bearers: []string{"connect.bearer.tcp"}})
	if e := next[*session.Error](cl); e.Code != session.CodeUnavailable || e.Message != want {
		t.Fatalf("start while the runner is away: %#v", e)
	}
	cl.send(&session.Describe{ID: 11, Service: "remote.echo"})
	if d := next[*session.Description](cl); !bytes.Equal(d.XML, xml) {
		t.Fatalf("describe while the runner is away: %#v", d)
	}

	// It comes back (a new connection, the same client id): the session is
	// reopened on it, with its token, and works again.
	again := r.connRig("remoteservicerunner", runner.c.clientID)
	again.send(&session.ProvideService{ID: 1, Service: "remote.echo", XML: xml})
	reopen := next[*session.RemoteOpen](again)
	if reopen.Session != sid || reopen.Token != open.Token || reopen.Client != cl.c.clientID.String() {
		t.Fatalf("reopen: %#v, want session %s and token %s", reopen, sid, open.Token)
	}
	again.send(&session.OK{ID: reopen.ID})
	next[*session.OK](again)
	cl.send(&session.Call{ID: 12, Session: sid, Method: "add", Args: []byte{0x50, 0x04}})
	call = next[*session.RemoteCall](again)
	again.send(&session.Result{ID: call.ID, Value: []byte{0x54}})
	if m := next[*session.Result](cl); m.ID != 12 {
		t.Fatalf("call after the runner came back: %#v", m)
	}

	// Another runner cannot take the name; the session's close reaches
	// the runner.
	other := r.connRig("other", uuid.Nil)
	other.send(&session.ProvideService{ID: 1, Service: "remote.echo", XML: xml})
	if e := next[*session.Error](other); e.Code != session.CodeRefused ||
		!strings.HasPrefix(e.Message, "service remote.echo is already provided by another runner, "+who+", connected from ") {
		t.Fatalf("clash with another runner: %#v", e)
	}
	cl.send(&session.CloseSession{ID: 13, Session: sid})
	next[*session.OK](cl)
	if m := next[*session.RemoteClose](again); m.Session != sid || m.Reason != "closed by the client" {
		t.Fatalf("RemoteClose: %#v", m)
	}
}

func TestRemoteServiceRefused(t *testing.T) {
	r := remoteServer(t, `<authentication><token name="runners" value="t1"/></authentication>
  <remoteServices><allow service="remote.echo" token="runners"/></remoteServices>`)
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	xml := remoteXMLFile(t)
	cases := []struct {
		m    *session.ProvideService
		code session.Code
		want string
	}{
		{&session.ProvideService{ID: 1, Service: "example.echo", XML: bytes.Replace(xml, []byte("remote.echo"), []byte("example.echo"), 1)}, session.CodeRefused,
			`service example.echo is a service of this server itself (c.xml:7); a runner cannot provide it: give the runner's service another name, or remove <service name="example.echo"> from the server configuration`},
		{&session.ProvideService{ID: 2, Service: "remote.echo", XML: xml}, session.CodeDenied,
			"denied: client " + runner.c.clientID.String() + " may not provide service remote.echo (no rule of <remoteServices> at c.xml:4 allows it)"},
	}
	for _, c := range cases {
		runner.send(c.m)
		if e := next[*session.Error](runner); e.ID != c.m.ID || e.Code != c.code || e.Message != c.want {
			t.Errorf("%s: got %#v\nwant %v %q", c.m.Service, e, c.code, c.want)
		}
	}
	// With the token named in the rule, the same offer is accepted; bad
	// files and endpoints are refused with what is wrong.
	runner.c.tokenName = "runners"
	for _, c := range []struct {
		m    *session.ProvideService
		want string
	}{
		{&session.ProvideService{ID: 3, Service: "remote.echo", XML: []byte(`<service name="remote.echo" version="x"/>`)},
			"the service file of remote.echo is not valid:\nremote.echo (service file from the runner):1: service attribute \"version\""},
		{&session.ProvideService{ID: 4, Service: "remote.echo", XML: bytes.Replace(xml, []byte("remote.echo"), []byte("remote.other"), 1)},
			`the service file offered as remote.echo describes service "remote.other"`},
		{&session.ProvideService{ID: 5, Service: "remote.echo", XML: xml, Endpoints: []session.RunnerEndpoint{{Address: "tcp://h", Bearer: "connect.bearer.tcp"}}},
			`service remote.echo: endpoint "tcp://h" (connect.bearer.tcp): bearers: bad endpoint "tcp://h"`},
	} {
		runner.send(c.m)
		if e := next[*session.Error](runner); e.Code != session.CodeBadRequest || !strings.HasPrefix(e.Message, c.want) {
			t.Errorf("%d: got %#v\nwant a bad request starting %q", c.m.ID, e, c.want)
		}
	}
	if m, ok := provide(runner, 6, xml).(*session.OK); !ok {
		t.Fatalf("allowed offer: %#v", m)
	}
	runner.send(&session.ProvideService{ID: 7, Service: "remote.echo", XML: xml})
	if e := next[*session.Error](runner); e.Code != session.CodeBadRequest || e.Message != "service remote.echo is already provided on this connection" {
		t.Fatalf("second offer: %#v", e)
	}
}

// A runner that comes back with another service file ends the sessions
// made for the old one.
func TestRemoteServiceFileChanged(t *testing.T) {
	r := remoteServer(t, "")
	runner := r.connRig("remoteservicerunner", uuid.Nil)
	xml := remoteXMLFile(t)
	provide(runner, 1, xml)
	cl := r.connRig("connectclient", uuid.Nil)
	cl.send(&session.StartSession{ID: 1, Service: "remote.echo", Direct: true, Bearers: []string{"connect.bearer.tcp"}})
	open := next[*session.RemoteOpen](runner)
	runner.send(&session.OK{ID: open.ID})
	sid := next[*session.SessionStarted](cl).Session
	runner.end()

	again := r.connRig("remoteservicerunner", runner.c.clientID)
	if m := provide(again, 1, bytes.Replace(xml, []byte(`version="1.0" description`), []byte(`version="1.1" description`), 1)); m.Kind() != session.KindOK {
		t.Fatalf("provide: %#v", m)
	}
	if m := next[*session.SessionClosed](cl); m.Session != sid || m.Reason != "the service's runner came back with another service file; start a new session" {
		t.Fatalf("SessionClosed: %#v", m)
	}
}
