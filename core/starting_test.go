package core

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/bearerkit/connect/pluginhost"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/session"
)

// fakeBackend is a started service that only describes itself.
type fakeBackend struct{ xml []byte }

func (f *fakeBackend) Call(context.Context, string, string, []byte) ([]byte, error) {
	return nil, nil
}
func (f *fakeBackend) OpenSession(context.Context, serviceplugin.SessionInfo) error { return nil }
func (f *fakeBackend) CloseSession(string, string)                                  {}
func (f *fakeBackend) ServiceXML() []byte                                           { return f.xml }
func (f *fakeBackend) Description() *servicefile.Service                            { return nil }
func (f *fakeBackend) Status() pluginhost.ServiceStatus                             { return pluginhost.ServiceStatus{} }

// A client that asks for a service while its plugin's first start is under
// way (it connected as the server came up) gets its answer once the plugin
// is up, not "unavailable: it is starting".
func TestDescribeWaitsForFirstStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSessionRig(t)
		r.hs.up = make(chan struct{})
		answers := make(chan session.Message, 1)
		go func() { answers <- r.next() }()
		r.send(&session.Describe{ID: 7, Service: "example.echo"})
		synctest.Wait() // everything blocked: the request waits for the start
		select {
		case m := <-answers:
			t.Fatalf("answered before the plugin was up: %#v", m)
		default:
		}
		r.hs.mu.Lock()
		r.hs.plugin = &fakeBackend{xml: []byte("<service/>")}
		r.hs.mu.Unlock()
		close(r.hs.up)
		m := <-answers
		d, ok := m.(*session.Description)
		if !ok {
			t.Fatalf("got %#v, want a Description", m)
		}
		if d.ID != 7 || string(d.XML) != "<service/>" {
			t.Fatalf("description %d %q", d.ID, d.XML)
		}
	})
}

// A first start that fails answers the waiting request with the reason.
func TestDescribeFirstStartFails(t *testing.T) {
	r := newSessionRig(t)
	r.hs.up = make(chan struct{})
	r.send(&session.Describe{ID: 8, Service: "example.echo"})
	r.hs.mu.Lock()
	r.hs.failed = "plugin binary not found"
	r.hs.mu.Unlock()
	close(r.hs.up)
	m := r.next()
	e, ok := m.(*session.Error)
	if !ok {
		t.Fatalf("got %#v, want an Error", m)
	}
	if e.Code != session.CodeUnavailable || !strings.Contains(e.Message, "service example.echo is unavailable: plugin binary not found") {
		t.Fatalf("error %v: %q", e.Code, e.Message)
	}
}
