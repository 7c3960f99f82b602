package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/faultproxy"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/resume"
)

// proxiedBearer is a link bearer that dials a fault-injecting proxy
// instead of the address it is given (the runner's, behind the proxy).
type proxiedBearer struct {
	bearers.Bearer
	to bearers.Endpoint
}

func (b proxiedBearer) Dial(ctx context.Context, _ bearers.Endpoint) (bearers.Conn, error) {
	return b.Bearer.Dial(ctx, b.to)
}

// TestDirectReliableResumes runs connectserver, remoteservicerunner with
// the ledger service (append routed over the direct reliable link, with
// the server as fallback, and its event too) and an in-process client
// whose link to the runner goes through a fault-injecting proxy that
// resets it 20 times while the client appends 1, 2, 3, …: every call
// returns the list's exact new length, the events are exactly 1, 2, 3, …,
// the service's digest of the list equals the client's, no call went
// through the server, and one resume stream carried the link throughout.
//
// In the relay variant the runner does not listen: the link goes to the
// server's secondary endpoint (behind the proxy), which relays it to a
// connection the runner dials on request; every resume goes through a new
// connection request.
func TestDirectReliableResumes(t *testing.T) {
	t.Run("listen", func(t *testing.T) { testDirectReliableResumes(t, false) })
	t.Run("relay", func(t *testing.T) { testDirectReliableResumes(t, true) })
}

func testDirectReliableResumes(t *testing.T, relay bool) {
	ep := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp"))
	linkPort := freePort(t, "tcp")
	sc := serverConfig{adapters: []string{adapterXML("tcp", "connect.bearer.tcp", ep, "")}}
	if relay {
		sc.extra = fmt.Sprintf(`<resume secondaryBindPort="%d"/>`, linkPort)
	}
	s := startServer(t, sc, true)
	xml, err := os.ReadFile("ledger/ledger.xml")
	if err != nil {
		t.Fatal(err)
	}
	xml = []byte(strings.Replace(string(xml), "</service>", `  <routing>
    <route method="*" linkType="server"/>
    <route method="append"><alternative link="reliable"/><alternative link="server"/></route>
    <route event="appended"><alternative link="reliable"/><alternative link="server"/></route>
  </routing>
</service>`, 1))
	file := filepath.Join(t.TempDir(), "ledger.xml")
	if err := os.WriteFile(file, xml, 0o644); err != nil {
		t.Fatal(err)
	}
	runnerArgs := []string{"--server", ep, "--service", file, "--plugin", bin.ledger}
	if !relay {
		runnerArgs = append(runnerArgs, "--listen", fmt.Sprintf("tcp://127.0.0.1:%d", linkPort))
	}
	startRunner(t, s, t.TempDir(), runnerArgs...)
	s.waitRemote("test.ledger", true)
	proxy, err := faultproxy.New(fmt.Sprintf("127.0.0.1:%d", linkPort))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	reg := stock.Registry()
	rg, _ := reg.ByType("connect.bearer.tcp")
	tcpB, err := rg.New(bearers.Config{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := statedir.ReadToken(filepath.Join(s.stateDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	server, _ := bearers.ParseEndpoint(ep)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Back off little: the test resets the link soon after each resume
	// (by default a link that fails within RetryMax of attaching backs
	// off up to RetryMax, 5 s).
	lr := resume.DefaultConfig()
	lr.RetryMin, lr.RetryMax = time.Millisecond, 20*time.Millisecond
	c, err := client.Dial(ctx, client.Config{Server: server, Bearer: tcpB, ClientID: uuid.New(), Token: token, Name: "direct-resume-test",
		LinkBearers: []bearers.Bearer{proxiedBearer{tcpB, bearers.MustParseEndpoint("tcp://" + proxy.Addr())}}, LinkResume: lr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.StartSession(ctx, "test.ledger")
	if err != nil {
		t.Fatal(err)
	}
	events, err := sess.Subscribe(ctx, "appended")
	if err != nil {
		t.Fatal(err)
	}
	attaches := func() int { return linkStats(sess)["reliable"].Attaches }
	if st := linkStats(sess)["reliable"]; !st.Open || !st.Resumable || st.Attaches != 1 {
		t.Fatalf("reliable: %+v", st)
	}

	var calls atomic.Int64
	stop := make(chan struct{})
	callerErr := make(chan error, 1)
	go func() {
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				callerErr <- nil
				return
			default:
			}
			v, err := sess.Call(ctx, "append", map[string]any{"value": i})
			if err != nil || v != i {
				callerErr <- fmt.Errorf("append %d: %v, %v", i, v, err)
				return
			}
			calls.Store(i)
		}
	}()
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if len(callerErr) > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (link %+v)", what, linkStats(sess)["reliable"])
			}
		}
	}
	const resets = 20
	for n := 0; n < resets; n++ {
		before := calls.Load()
		wait("calls between resets", func() bool { return calls.Load() >= before+3 })
		a := attaches()
		proxy.Reset()
		wait(fmt.Sprintf("resume %d", n+1), func() bool { return attaches() > a })
	}
	close(stop)
	if err := <-callerErr; err != nil {
		t.Fatal(err)
	}
	total := calls.Load()
	for k := int64(1); k <= total; k++ {
		select {
		case ev := <-events:
			if ev.Lost != 0 || ev.Args["value"] != k {
				t.Fatalf("event %d: %+v", k, ev)
			}
		case <-ctx.Done():
			t.Fatalf("event %d of %d did not arrive", k, total)
		}
	}
	if d, err := sess.Call(ctx, "digest", nil); err != nil || d != ledgerDigest(int(total)) {
		t.Fatalf("digest %v (%v), want %s", d, err, ledgerDigest(int(total)))
	}
	st := linkStats(sess)["reliable"]
	if !st.Open || st.Attaches < resets+1 || st.Calls != uint64(total) {
		t.Fatalf("reliable after %d resets: %+v", resets, st)
	}
	if notes := sess.Notes(); len(notes) != 0 {
		t.Fatalf("notes: %q", notes)
	}
	if n := s.metric(`connect_service_calls_total{service="test.ledger"}`); n != "1" { // digest
		t.Errorf("%s calls went through the server, want 1 (digest)", n)
	}
	sess.Close()
	if relay {
		if n, _ := strconv.Atoi(s.metric("connect_relay_links_total")); n < resets+1 {
			t.Errorf("the server relayed %d links, want at least %d (one per attach)", n, resets+1)
		}
	}
	t.Logf("%d calls and events over %d resets; the link's stream attached %d times", total, resets, st.Attaches)
}
