package client_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// echoHandler serves example.echo's add, fail and sleep, and records the
// sessions it sees open and close.
type echoHandler struct {
	mu     sync.Mutex
	opened []string
	closed chan string
}

func (h *echoHandler) OpenSession(ctx context.Context, sessionID, clientID string) error {
	if sessionID == "refuse-me" {
		return errors.New("no room")
	}
	h.mu.Lock()
	h.opened = append(h.opened, sessionID+"/"+clientID)
	h.mu.Unlock()
	return nil
}

func (h *echoHandler) CloseSession(sessionID, reason string) { h.closed <- sessionID + ": " + reason }

func (h *echoHandler) Call(ctx context.Context, sessionID, method string, args []byte) ([]byte, error) {
	m := echoDesc.Method(method)
	a, err := services.DecodeArgs(m.Args, args)
	if err != nil {
		return nil, &client.Error{Code: session.CodeInvalidArgument, Message: err.Error()}
	}
	switch method {
	case "add":
		return services.AppendValue(nil, m.Returns, a["a"].(int64)+a["b"].(int64))
	case "sleep":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("asked to fail")
}

// providerServer is a fake server that accepts every ProvideService,
// except on the connections refuse names.
func providerServer(t *testing.T, refuse map[int]bool) *sessionServer {
	return newSessionServer(t, func(n int, wc wire.Conn, m session.Message) bool {
		if p, ok := m.(*session.ProvideService); ok {
			if refuse[n] {
				send(wc, session.NewError(p.ID, session.CodeRefused, "service example.echo is already provided by another runner"))
			} else {
				send(wc, &session.OK{ID: p.ID})
			}
			return true
		}
		_, isResponse := m.(session.Response)
		_, isNote := m.(session.RunnerNotification)
		return isResponse || isNote // recorded; nothing to answer
	})
}

func newEchoProvider(t *testing.T, h *echoHandler, provided chan string) *client.Provider {
	t.Helper()
	p, err := client.NewProvider(client.ProviderConfig{
		Services: []client.ProvidedService{{XML: echoXML, Handler: h, Endpoints: []client.ProviderEndpoint{{
			Address: bearers.MustParseEndpoint("tcp://127.0.0.1:9700"),
			Bearer:  bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}}}}},
		OnProvided: func(service string, err error) {
			msg := service + ": ok"
			if err != nil {
				msg = service + ": " + err.Error()
			}
			provided <- msg
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatal("nothing arrived")
		var zero T
		return zero
	}
}

func TestProvider(t *testing.T) {
	ss := providerServer(t, nil)
	c := sessionClient(t, ss)
	h := &echoHandler{closed: make(chan string, 16)}
	provided := make(chan string, 16)
	p := newEchoProvider(t, h, provided)
	level, _ := services.AppendValue(nil, echoDesc.Data.Type.Field("meter").Type.Field("level").Type, 0.75)
	if err := p.SetData("example.echo", "meter.level", level); err != nil { // before Serve: kept
		t.Fatal(err)
	}
	if err := p.Serve(c); err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(c); err == nil {
		t.Fatal("a second Serve succeeded")
	}

	// The offer, then the whole runtime-data tree.
	offer := ss.nextRequest(t, session.KindProvideService).(*session.ProvideService)
	if offer.Service != "example.echo" || string(offer.XML) != string(echoXML) || len(offer.Endpoints) != 1 ||
		offer.Endpoints[0] != (session.RunnerEndpoint{Address: "tcp://127.0.0.1:9700", Bearer: "connect.bearer.tcp", Capabilities: uint64(bearers.Reliable | bearers.Ordered)}) {
		t.Fatalf("ProvideService: %#v", offer)
	}
	if got := recv(t, provided); got != "example.echo: ok" {
		t.Fatalf("OnProvided: %s", got)
	}
	data := ss.nextRequest(t, session.KindServiceData).(*session.ServiceData)
	if v, err := services.DecodeValue(echoDesc.Data.Type, data.Value); data.Path != "" || err != nil ||
		v.(map[string]any)["meter"].(map[string]any)["level"] != 0.75 {
		t.Fatalf("first ServiceData: %#v (%v, %v)", data, v, err)
	}

	// The server's requests.
	wc := ss.conn(1)
	send(wc, &session.RemoteOpen{ID: 100, Service: "example.echo", Session: "s1", Client: "c1", Token: "tok"})
	if m := ss.nextRequest(t, session.KindOK).(*session.OK); m.ID != 100 {
		t.Fatalf("open answered %#v", m)
	}
	send(wc, &session.RemoteOpen{ID: 101, Service: "example.echo", Session: "refuse-me"})
	if e := ss.nextRequest(t, session.KindError).(*session.Error); e.ID != 101 || e.Code != session.CodeRefused || e.Message != "no room" {
		t.Fatalf("refused open answered %#v", e)
	}
	args, _ := services.AppendArgs(nil, echoDesc.Method("add").Args, map[string]any{"a": 40, "b": 2})
	send(wc, &session.RemoteCall{ID: 102, Service: "example.echo", Session: "s1", Method: "add", Timeout: guard, Args: args})
	if r := ss.nextRequest(t, session.KindResult).(*session.Result); r.ID != 102 {
		t.Fatalf("call answered %#v", r)
	} else if v, _ := services.DecodeValue(echoDesc.Method("add").Returns, r.Value); v != int64(42) {
		t.Fatalf("add = %v", v)
	}
	failArgs, _ := services.AppendArgs(nil, echoDesc.Method("fail").Args, map[string]any{"mode": "error"})
	for _, c := range []struct {
		m    session.Message
		code session.Code
		want string
	}{
		{&session.RemoteCall{ID: 103, Service: "example.echo", Method: "fail", Args: failArgs}, session.CodeApplication, "asked to fail"},
		{&session.RemoteCall{ID: 104, Service: "no.such", Method: "x"}, session.CodeUnknownService, `this runner does not provide service "no.such"`},
		{&session.RemoteCall{ID: 105, Service: "example.echo", Method: "add", Args: []byte{0xff}}, session.CodeInvalidArgument, ""},
	} {
		send(wc, c.m)
		e := ss.nextRequest(t, session.KindError).(*session.Error)
		if e.ID != c.m.(session.RunnerRequest).RunnerRequestID() || e.Code != c.code || !strings.Contains(e.Message, c.want) {
			t.Errorf("%#v answered %#v", c.m, e)
		}
	}
	// A request that does not decode but whose id can be read is answered.
	b := append([]byte{byte(session.KindRemoteCall)}, wire.AppendUint64Field(nil, 1, 106)...)
	wc.WriteMessage(&wire.Data{Channel: session.Channel, Payload: b})
	if e := ss.nextRequest(t, session.KindError).(*session.Error); e.ID != 106 || e.Code != session.CodeBadRequest {
		t.Fatalf("bad request answered %#v", e)
	}
	// Cancel: the handler's context ends, the call is answered.
	sleepArgs, _ := services.AppendArgs(nil, echoDesc.Method("sleep").Args, map[string]any{"ms": 60000})
	send(wc, &session.RemoteCall{ID: 107, Service: "example.echo", Session: "s1", Method: "sleep", Args: sleepArgs})
	send(wc, &session.RemoteCancel{Target: 107})
	if e := ss.nextRequest(t, session.KindError).(*session.Error); e.ID != 107 || e.Code != session.CodeCanceled {
		t.Fatalf("cancelled call answered %#v", e)
	}

	// Events and runtime data go to the server.
	evArgs, _ := services.AppendArgs(nil, echoDesc.Event("levelChanged").Args, map[string]any{"level": 0.25})
	if err := p.Emit("example.echo", "s1", "levelChanged", evArgs); err != nil {
		t.Fatal(err)
	}
	if ev := ss.nextRequest(t, session.KindServiceEvent).(*session.ServiceEvent); ev.Service != "example.echo" || ev.Session != "s1" || ev.Name != "levelChanged" {
		t.Fatalf("ServiceEvent: %#v", ev)
	}
	low, _ := services.AppendValue(nil, echoDesc.Data.Type.Field("meter").Type.Field("level").Type, 0.25)
	if err := p.SetData("example.echo", "meter.level", low); err != nil {
		t.Fatal(err)
	}
	if d := ss.nextRequest(t, session.KindServiceData).(*session.ServiceData); d.Path != "meter.level" || string(d.Value) != string(low) {
		t.Fatalf("ServiceData: %#v", d)
	}
	if err := p.SetData("example.echo", "meter.nope", low); err == nil || !strings.Contains(err.Error(), "client: service example.echo runtime data \"meter.nope\"") {
		t.Fatalf("SetData of a bad path = %v", err)
	}
	if err := p.Emit("no.such", "", "x", nil); err == nil {
		t.Fatal("Emit for another service succeeded")
	}
	send(wc, &session.RemoteClose{Service: "example.echo", Session: "s1", Reason: "closed by the client"})
	if got := recv(t, h.closed); got != "s1: closed by the client" {
		t.Fatalf("CloseSession: %s", got)
	}

	// The connection breaks: sessions opened over it close; on the next
	// connection the service is offered again, with its whole tree.
	send(wc, &session.RemoteOpen{ID: 108, Service: "example.echo", Session: "s2", Client: "c1"})
	ss.nextRequest(t, session.KindOK)
	wc.Close()
	if got := recv(t, h.closed); got != "s2: the runner's connection to the server ended" {
		t.Fatalf("CloseSession at the break: %s", got)
	}
	ss.nextRequest(t, session.KindProvideService)
	if got := recv(t, provided); got != "example.echo: ok" {
		t.Fatalf("OnProvided after reconnecting: %s", got)
	}
	if d := ss.nextRequest(t, session.KindServiceData).(*session.ServiceData); d.Path != "" {
		t.Fatalf("ServiceData after reconnecting: %#v", d)
	}
	h.mu.Lock()
	opened := strings.Join(h.opened, ",")
	h.mu.Unlock()
	if opened != "s1/c1,s2/c1" {
		t.Fatalf("opened %s", opened)
	}
	// Closed while the connection lives on: requests are answered so.
	p.Close()
	p.Close()
	send(ss.conn(2), &session.RemoteCall{ID: 200, Service: "example.echo", Method: "add", Args: args})
	if e := ss.nextRequest(t, session.KindError).(*session.Error); e.ID != 200 || e.Code != session.CodeUnavailable {
		t.Fatalf("a call after Close answered %#v", e)
	}
}

func TestProviderRefused(t *testing.T) {
	ss := providerServer(t, map[int]bool{1: true})
	c := sessionClient(t, ss)
	provided := make(chan string, 16)
	p := newEchoProvider(t, &echoHandler{closed: make(chan string, 16)}, provided)
	if err := p.Serve(c); err != nil {
		t.Fatal(err)
	}
	want := "example.echo: provide service example.echo: service example.echo is already provided by another runner"
	if got := recv(t, provided); got != want {
		t.Fatalf("OnProvided:\n got %s\nwant %s", got, want)
	}
	// Not live: its events are not sent.
	p.Emit("example.echo", "", "levelChanged", nil)
	c.Close() // waits for the provider too
}

func TestNewProviderErrors(t *testing.T) {
	h := &echoHandler{}
	tcp := bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}
	for _, c := range []struct {
		cfg  client.ProviderConfig
		want string
	}{
		{client.ProviderConfig{}, "client: a provider needs at least one service"},
		{client.ProviderConfig{Services: []client.ProvidedService{{XML: []byte("<nope/>"), Handler: h}}}, "client: provided service 1: provided service 1:1: "},
		{client.ProviderConfig{Services: []client.ProvidedService{{XML: echoXML}}}, "client: service example.echo has no handler"},
		{client.ProviderConfig{Services: []client.ProvidedService{{XML: echoXML, Handler: h}, {XML: echoXML, Handler: h}}}, "client: service example.echo is provided twice"},
		{client.ProviderConfig{Services: []client.ProvidedService{{XML: echoXML, Handler: h, Endpoints: []client.ProviderEndpoint{
			{Address: bearers.MustParseEndpoint("udp://127.0.0.1:1"), Bearer: tcp}}}}}, "client: service example.echo: endpoint udp://127.0.0.1:1: bearer connect.bearer.tcp serves tcp://"},
	} {
		if _, err := client.NewProvider(c.cfg); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
}
