package client

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/routing"
	"github.com/bearerkit/connect/session"
	"github.com/bearerkit/connect/wire"
)

// keyedProvider is directProvider whose session "s1" has a link key.
func keyedProvider(t *testing.T) (*Provider, []byte) {
	p, doc := directProvider(t)
	key := bytes.Repeat([]byte{0x5c}, session.LinkKeySize)
	b, err := routing.Generate(doc)
	if err != nil {
		t.Fatal(err)
	}
	p.addDirectSession(p.svcs["t.svc"], &session.RemoteOpen{ID: 2, Service: "t.svc", Session: "s1", Token: "tok", Routing: b, LinkKey: key})
	return p, key
}

// openStream sends LinkOpen with Resume on lp, checks the runner's OK and
// opens a resume stream over the connection.
func (lp *linkPeer) openStream(ctx context.Context) *resume.Stream {
	lp.t.Helper()
	lp.send(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok", Resume: true})
	if m, ok := lp.next().(*session.OK); !ok || m.ID != 1 || !m.Resume {
		lp.t.Fatalf("got %#v, want OK with resume", m)
	}
	first := lp.wc
	st, err := resume.Open(ctx, func(context.Context) (wire.Conn, error) {
		if first == nil {
			return nil, errors.New("no redial in this test")
		}
		c := first
		first = nil
		return c, nil
	}, nil)
	if err != nil {
		lp.t.Fatal(err)
	}
	lp.t.Cleanup(func() { st.Close() })
	return st
}

// TestDirectLinkResumeBind: for a session with a link key, a LinkOpen
// without resume is refused; a stream whose first message is not the
// client's bind proof is closed and never bound (so a token seen on the
// wire does not take the link over); with the right proof the runner
// proves itself back, binds the link and serves calls in the stream.
func TestDirectLinkResumeBind(t *testing.T) {
	p, linkKey := keyedProvider(t)
	ctx := context.Background()
	bound := func() *directConn {
		p.direct.mu.Lock()
		defer p.direct.mu.Unlock()
		return p.direct.sess["s1"].links["reliable"]
	}

	plain := dialDirect(t, p, tcp.Info)
	plain.send(&session.LinkOpen{ID: 1, Session: "s1", Link: "reliable", Token: "tok"})
	plain.wantError(session.CodeDenied, `session s1 opens its link "reliable" on a resume stream (LinkOpen with resume, docs/PROTOCOL.md §15.3)`)
	plain.wantClosed()

	forged := dialDirect(t, p, tcp.Info)
	st := forged.openStream(ctx)
	if err := st.Send(ctx, make([]byte, session.LinkProofSize)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(ctx); !errors.Is(err, resume.ErrPeerClosed) {
		t.Fatalf("a forged bind proof: %v", err)
	}
	if bound() != nil {
		t.Fatal("a forged bind proof bound the link")
	}

	good := dialDirect(t, p, tcp.Info)
	st = good.openStream(ctx)
	key := session.DeriveLinkResumeKey(linkKey, "reliable")
	if err := st.Send(ctx, session.LinkBindProof(key, [16]byte(st.ID()), false)); err != nil {
		t.Fatal(err)
	}
	proof, err := st.Recv(ctx)
	if err != nil || !session.VerifyLinkBindProof(key, [16]byte(st.ID()), true, proof) {
		t.Fatalf("the runner's proof: %x %v", proof, err)
	}
	b, _ := session.Encode(&session.Call{ID: 9, Session: "s1", Method: "fast"})
	if err := st.Send(ctx, b); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := st.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := session.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := m.(*session.Result); ok {
			if r.ID != 9 || !strings.Contains(string(r.Value), "fast in s1") {
				t.Fatalf("result %+v", r)
			}
			break
		}
	}
	if dc := bound(); dc == nil || dc.st.Load() == nil {
		t.Fatal("the link is not bound to its stream")
	}
}

// TestRanVerdict: a call is said not to have run only when the runner
// said exactly what it received and the call was not in it.
func TestRanVerdict(t *testing.T) {
	lost := &linkStreamLost{err: resume.ErrPeerClosed, notRun: map[uint64]bool{7: true}}
	if v := ranVerdict(lost, 7); v != "the call never reached the runner: it did not run" {
		t.Fatal(v)
	}
	for _, c := range []struct {
		cause error
		id    uint64
	}{{lost, 8}, {lost, 0}, {errors.New("x"), 7}, {nil, 7}} {
		if v := ranVerdict(c.cause, c.id); v != "whether it ran is unknown" {
			t.Fatalf("%v %d: %s", c.cause, c.id, v)
		}
	}
	e := &lostError{op: "call t.svc.fast", cause: lost, link: "reliable", id: 7}
	if !errors.Is(e, ErrLinkLost) || !strings.HasSuffix(e.Error(), "; the call never reached the runner: it did not run") {
		t.Fatal(e)
	}
}
