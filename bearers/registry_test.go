package bearers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

// nopBearer is a Bearer that only describes itself.
type nopBearer struct{ info bearers.Info }

func (b nopBearer) Info() bearers.Info { return b.info }
func (b nopBearer) Listen(context.Context, bearers.Endpoint) (bearers.Listener, error) {
	return nil, bearers.ErrUnsupported
}
func (b nopBearer) Dial(context.Context, bearers.Endpoint) (bearers.Conn, error) {
	return nil, bearers.ErrUnsupported
}

func reg(typ, scheme string, caps bearers.Capabilities) bearers.Registration {
	info := bearers.Info{Type: typ, Scheme: scheme, Capabilities: caps}
	return bearers.Registration{Info: info, New: func(bearers.Config) (bearers.Bearer, error) { return nopBearer{info}, nil }}
}

var (
	regTCP = reg("connect.bearer.tcp", "tcp", bearers.Reliable|bearers.Ordered)
	regUDP = reg("connect.bearer.udp", "udp", bearers.Datagram)
)

func TestRegistryZeroValue(t *testing.T) {
	var r bearers.Registry
	if _, ok := r.ByType("connect.bearer.tcp"); ok {
		t.Error("empty registry: ByType found something")
	}
	_, err := r.ByScheme("tcp")
	if !errors.Is(err, bearers.ErrUnknownScheme) || !strings.Contains(err.Error(), `"tcp"`) || !strings.Contains(err.Error(), "known: []") {
		t.Errorf("empty registry: ByScheme(tcp) = %v, want ErrUnknownScheme naming tcp and no known schemes", err)
	}
	if ts := r.Types(); len(ts) != 0 || ts == nil {
		t.Errorf("empty registry: Types() = %#v, want an empty non-nil list", ts)
	}
}

func TestRegistryRegisterAndLookup(t *testing.T) {
	var r bearers.Registry
	for _, g := range []bearers.Registration{regUDP, regTCP} {
		if err := r.Register(g); err != nil {
			t.Fatalf("Register(%s): %v", g.Info.Type, err)
		}
	}
	got, ok := r.ByType("connect.bearer.tcp")
	if !ok || got.Info != regTCP.Info {
		t.Fatalf("ByType(connect.bearer.tcp) = %+v, %v", got.Info, ok)
	}
	b, err := got.New(bearers.Config{})
	if err != nil || b.Info() != regTCP.Info {
		t.Fatalf("factory from the registry: %v, %v", b, err)
	}
	got, err = r.ByScheme("udp")
	if err != nil || got.Info != regUDP.Info {
		t.Fatalf("ByScheme(udp) = %+v, %v", got.Info, err)
	}
	if _, ok := r.ByType("connect.bearer.ssl"); ok {
		t.Error("ByType(connect.bearer.ssl) found an unregistered bearer")
	}
	// Lookups are exact: no case folding, no scheme-as-type confusion.
	if _, ok := r.ByType("tcp"); ok {
		t.Error("ByType(tcp) found a bearer by its scheme")
	}
	if _, err := r.ByScheme("connect.bearer.tcp"); !errors.Is(err, bearers.ErrUnknownScheme) {
		t.Errorf("ByScheme(connect.bearer.tcp) = %v, want ErrUnknownScheme", err)
	}
	if _, err := r.ByScheme("TCP"); !errors.Is(err, bearers.ErrUnknownScheme) {
		t.Errorf("ByScheme(TCP) = %v, want ErrUnknownScheme", err)
	}
	if ts := r.Types(); !slices.Equal(ts, []string{"connect.bearer.tcp", "connect.bearer.udp"}) {
		t.Errorf("Types() = %v, want sorted [connect.bearer.tcp connect.bearer.udp]", ts)
	}
}

func TestRegistryUnknownSchemeListsKnown(t *testing.T) {
	var r bearers.Registry
	r.MustRegister(regUDP)
	r.MustRegister(regTCP)
	r.MustRegister(reg("com.example.ws", "ws", bearers.Reliable|bearers.Ordered))
	_, err := r.ByScheme("quic")
	if !errors.Is(err, bearers.ErrUnknownScheme) {
		t.Fatalf("ByScheme(quic) = %v, want ErrUnknownScheme", err)
	}
	for _, w := range []string{`"quic"`, "known: [tcp udp ws]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("ByScheme(quic) error %q does not say %q", err, w)
		}
	}
}

func TestRegistryRefusesDuplicates(t *testing.T) {
	var r bearers.Registry
	r.MustRegister(regTCP)

	// Same type, another scheme.
	err := r.Register(reg("connect.bearer.tcp", "tcp2", bearers.Reliable|bearers.Ordered))
	if err == nil || !strings.Contains(err.Error(), "connect.bearer.tcp registered twice") {
		t.Errorf("duplicate type: Register = %v, want an error naming the type", err)
	}
	if _, err := r.ByScheme("tcp2"); err == nil {
		t.Error("a refused registration left its scheme behind")
	}

	// Same scheme, another type: the error names both bearers.
	err = r.Register(reg("com.example.mytcp", "tcp", bearers.Reliable|bearers.Ordered))
	if err == nil {
		t.Fatal("duplicate scheme: Register = nil")
	}
	for _, w := range []string{`"tcp"`, "com.example.mytcp", "already served by connect.bearer.tcp"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("duplicate scheme: error %q does not say %q", err, w)
		}
	}
	if _, ok := r.ByType("com.example.mytcp"); ok {
		t.Error("a refused registration left its type behind")
	}
	if got, _ := r.ByScheme("tcp"); got.Info != regTCP.Info {
		t.Errorf("the first registration of tcp was replaced by %+v", got.Info)
	}
	if ts := r.Types(); !slices.Equal(ts, []string{"connect.bearer.tcp"}) {
		t.Errorf("Types() = %v after refused registrations", ts)
	}
}

func TestRegistryRefusesBadRegistrations(t *testing.T) {
	var r bearers.Registry
	for _, tc := range []struct {
		reg  bearers.Registration
		want string
	}{
		{bearers.Registration{Info: regTCP.Info}, "connect.bearer.tcp: nil factory"},
		{reg("tcp", "tcp", bearers.Reliable|bearers.Ordered), "at least two"},
		{reg("connect.bearer.x", "", bearers.Datagram), "empty scheme"},
		{reg("connect.bearer.x", "X", bearers.Datagram), "not allowed"},
		{reg("connect.bearer.x", "x", bearers.Reliable), "reliable and ordered"},
		{reg("connect.bearer.x", "x", 1<<20|bearers.Datagram), "unknown capability bits"},
	} {
		err := r.Register(tc.reg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register(%+v) = %v, want an error saying %q", tc.reg.Info, err, tc.want)
		}
	}
	if ts := r.Types(); len(ts) != 0 {
		t.Errorf("refused registrations were kept: %v", ts)
	}
}

func TestRegistryMustRegisterPanics(t *testing.T) {
	var r bearers.Registry
	r.MustRegister(regTCP)
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "registered twice") {
			t.Errorf("MustRegister(duplicate) panicked with %v, want the duplicate error", p)
		}
	}()
	r.MustRegister(regTCP)
}

// Concurrent registrations and lookups: the race detector checks the
// locking; the end state checks that nothing was lost and that exactly one
// of several bearers racing for a scheme wins it.
func TestRegistryConcurrent(t *testing.T) {
	var r bearers.Registry
	const n = 32
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range n {
		wg.Add(3)
		go func() { // a distinct bearer: always accepted
			defer wg.Done()
			if err := r.Register(reg(fmt.Sprintf("test.bearer.b%d", i), fmt.Sprintf("s%d", i), bearers.Datagram)); err != nil {
				t.Errorf("Register b%d: %v", i, err)
			}
		}()
		go func() { // all of these race for one scheme
			defer wg.Done()
			if err := r.Register(reg(fmt.Sprintf("test.contender.c%d", i), "contested", bearers.Datagram)); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !strings.Contains(err.Error(), "already served by") {
				t.Errorf("contender c%d: unexpected error %v", i, err)
			}
		}()
		go func() { // readers
			defer wg.Done()
			if g, err := r.ByScheme(fmt.Sprintf("s%d", i)); err == nil && g.Info.Type != fmt.Sprintf("test.bearer.b%d", i) {
				t.Errorf("ByScheme(s%d) = %s", i, g.Info.Type)
			}
			r.ByType(fmt.Sprintf("test.bearer.b%d", (i+1)%n))
			r.Types()
			r.ByScheme("nothing") // formats the known list under the lock
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d contenders won the scheme \"contested\", want exactly 1", wins)
	}
	for i := range n {
		g, err := r.ByScheme(fmt.Sprintf("s%d", i))
		if err != nil || g.Info.Type != fmt.Sprintf("test.bearer.b%d", i) {
			t.Errorf("after the race: ByScheme(s%d) = %s, %v", i, g.Info.Type, err)
		}
	}
	if got := len(r.Types()); got != n+1 {
		t.Errorf("after the race: %d types registered, want %d", got, n+1)
	}
}
