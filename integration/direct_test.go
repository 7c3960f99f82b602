package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/statedir"
)

// directEcho writes the echo example's service file with a routing
// declaration of direct links: routing is the inside of <routing>, with
// SSL replaced by the declared ssl link's endpoint.
func directEcho(t *testing.T, sslEndpoint, routing string) string {
	t.Helper()
	xml, err := os.ReadFile("../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	routing = strings.ReplaceAll(routing, "SSL", sslEndpoint)
	xml = []byte(strings.Replace(string(xml), "</service>", "  <routing>\n"+routing+"  </routing>\n</service>", 1))
	path := filepath.Join(t.TempDir(), "echo.xml")
	if err := os.WriteFile(path, xml, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// directRig is a server and a runner of the echo example with direct
// links on free loopback ports.
type directRig struct {
	s                         *server
	ep                        string // the server's tcp endpoint
	linkTCP, linkUDP, linkSSL string
	runnerCert                string // the runner's generated certificate (ssl links)
}

func startDirectRig(t *testing.T, routing string) *directRig {
	t.Helper()
	r := &directRig{
		ep:      fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")),
		linkTCP: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")),
		linkUDP: fmt.Sprintf("udp://127.0.0.1:%d", freePort(t, "udp")),
		linkSSL: fmt.Sprintf("ssl://127.0.0.1:%d", freePort(t, "tcp")),
	}
	r.s = startServer(t, serverConfig{adapters: []string{adapterXML("tcp", "connect.bearer.tcp", r.ep, "")}}, true)
	file := directEcho(t, r.linkSSL, routing)
	runnerDir := t.TempDir()
	startRunner(t, r.s, runnerDir, "--server", r.ep, "--service", file, "--plugin", bin.echoService,
		"--listen", r.linkTCP, "--listen", r.linkUDP)
	r.s.waitRemote("example.echo", true)
	r.runnerCert = filepath.Join(runnerDir, "runner", "ssl", "cert.pem")
	if _, err := os.Stat(r.runnerCert); err != nil {
		t.Fatalf("the runner's ssl certificate: %v", err)
	}
	return r
}

// cli runs connectclient against the rig's server with a state directory
// of its own.
func (r *directRig) cli(t *testing.T, args ...string) result {
	t.Helper()
	return runClient(t, append([]string{"--server", r.ep, "--state-dir", t.TempDir(), "--token-file", filepath.Join(r.s.stateDir, "token")}, args...)...)
}

// goClient connects an in-process client with tcp, udp and (trusting
// sslCA, when given) ssl link bearers.
func (r *directRig) goClient(t *testing.T, sslCA string) *client.Client {
	t.Helper()
	reg := stock.Registry()
	mk := func(typ string, attrs bearers.Attributes) bearers.Bearer {
		rg, _ := reg.ByType(typ)
		b, err := rg.New(bearers.Config{Attributes: attrs})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	links := []bearers.Bearer{mk("connect.bearer.tcp", nil), mk("connect.bearer.udp", nil)}
	if sslCA != "" {
		links = append(links, mk("connect.bearer.ssl", bearers.Attributes{"ca": sslCA}))
	}
	ep, err := bearers.ParseEndpoint(r.ep)
	if err != nil {
		t.Fatal(err)
	}
	token, err := statedir.ReadToken(filepath.Join(r.s.stateDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Server: ep, Bearer: mk("connect.bearer.tcp", nil), ClientID: uuid.New(),
		Token: token, Name: "direct-test", LinkBearers: links})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// metric returns the value of one /metrics line (by its name and labels).
func (s *server) metric(line string) string {
	s.t.Helper()
	code, body := s.httpDo("GET", "/metrics", "", "")
	if code != 200 {
		s.t.Fatalf("/metrics: %d", code)
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, line+" "); ok {
			return v
		}
	}
	s.t.Fatalf("/metrics has no %s:\n%s", line, body)
	return ""
}

// linkStats returns a session's stats by link name.
func linkStats(s *client.Session) map[string]client.LinkStats {
	out := map[string]client.LinkStats{}
	for _, st := range s.LinkStats() {
		out[st.Link] = st
	}
	return out
}

// TestDirectLinks runs connectserver, remoteservicerunner (the echo
// example) and a client (this test, in process, and connectclient) on
// loopback: a method over the direct reliable (tcp) link, another over a
// declared ssl link, high-rate runtime data over the direct unreliable
// (udp) link, runtime data routed direct_and_server seen both by the
// client and on GET /serviceruntimedata, an event over the server route,
// and the counters of every link (the client's and the server's /metrics)
// proving which link each message took. Then connectclient: without an
// ssl adapter the ssl method takes its server alternative; with an ssl
// adapter that cannot verify the runner, the link is unreachable and the
// route falls back to the server, saying so.
func TestDirectLinks(t *testing.T) {
	r := startDirectRig(t, `    <link name="secure" bearer="connect.bearer.ssl" endpoint="SSL"/>
    <route method="*" linkType="server"/>
    <route method="add" link="reliable"/>
    <route method="setLevel" link="reliable"/>
    <route method="echo">
      <alternative link="secure"/>
      <alternative link="server"/>
    </route>
    <route event="*" link="server"/>
    <route data="meter.level" link="unreliable"/>
    <route data="meter.calls" link="unreliable" linkType="direct_and_server"/>
`)
	c := r.goClient(t, r.runnerCert)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var names []string
	for _, st := range s.LinkStats() {
		if !st.Open {
			t.Fatalf("link %s is not open: %s", st.Link, st.Down)
		}
		names = append(names, st.Link)
	}
	if strings.Join(names, " ") != "server reliable secure unreliable" || len(s.Notes()) != 0 {
		t.Fatalf("links %v, notes %v", names, s.Notes())
	}
	events, err := s.Subscribe(ctx, "levelChanged")
	if err != nil {
		t.Fatal(err)
	}
	watch, err := s.Watch(ctx, "meter")
	if err != nil {
		t.Fatal(err)
	}
	mirror := map[string]any{}
	take := func(dc client.DataChange) {
		switch v := dc.Value.(type) {
		case map[string]any:
			for k, x := range v {
				mirror["meter."+k] = x
			}
		default:
			mirror[dc.Path] = v
		}
	}
	take(<-watch)

	// High-rate runtime data: every setLevel (a call on the reliable
	// link) sets meter.level, which the runner sends on the udp link.
	const calls, callers = 400, 4
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < calls; i += callers {
				if _, err := s.Call(ctx, "setLevel", map[string]any{"level": float64(i) / 1000}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := s.Call(ctx, "setLevel", map[string]any{"level": 0.999}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Call(ctx, "add", map[string]any{"a": 40, "b": 2}); err != nil || v != int64(42) {
		t.Fatalf("add: %v %v", v, err)
	}
	for i := range 5 { // on the ssl link; each counts in meter.calls
		if v, err := s.Call(ctx, "echo", map[string]any{"text": fmt.Sprint("hello ", i)}); err != nil || v != fmt.Sprint("hello ", i) {
			t.Fatalf("echo: %v %v", v, err)
		}
	}
	deadline := time.After(30 * time.Second)
	changes := 0
	for mirror["meter.level"] != 0.999 || mirror["meter.calls"] != int64(5) {
		select {
		case dc := <-watch:
			take(dc)
			changes++
		case <-deadline:
			t.Fatalf("the watch never saw meter.level 0.999 and meter.calls 5: %v", mirror)
		}
	}
	received := uint64(0)
	for received < calls+1 {
		select {
		case ev := <-events:
			received += max(ev.Lost, 1)
		case <-deadline:
			t.Fatalf("%d levelChanged events of %d", received, calls+1)
		}
	}

	// direct_and_server data reached the server too; direct data did not.
	if code, body := r.s.httpDo("GET", "/serviceruntimedata/example.echo", "", ""); code != 200 || body != `{"meter":{"level":0.5,"calls":5}}`+"\n" {
		t.Fatalf("/serviceruntimedata: %d %s", code, body)
	}

	// Which link each message took.
	st := linkStats(s)
	server, reliable, secure, unreliable := st["server"], st["reliable"], st["secure"], st["unreliable"]
	if reliable.Calls != calls+2 || reliable.Events != 0 || reliable.DataChanges != 0 {
		t.Errorf("reliable link: %+v", reliable)
	}
	if secure.Calls != 5 || secure.Events != 0 || secure.DataChanges != 0 {
		t.Errorf("secure link: %+v", secure)
	}
	if unreliable.Calls != 0 || unreliable.Events != 0 || unreliable.DataChanges < 2 {
		t.Errorf("unreliable link: %+v", unreliable)
	}
	if server.Calls != 0 || server.Events < 1 || server.DataChanges != 1 { // the watch's snapshot only
		t.Errorf("server link: %+v", server)
	}
	t.Logf("links: server %+v\nreliable %+v\nsecure %+v\nunreliable %+v (watch changes %d)", server, reliable, secure, unreliable, changes)
	// The server relayed no call and no runtime data of the session.
	for line, want := range map[string]string{
		`connect_service_calls_total{service="example.echo"}`:                                                    "0",
		`connect_session_link_messages_total{service="example.echo",link="server",direction="in",kind="call"}`:   "0",
		`connect_session_link_messages_total{service="example.echo",link="server",direction="out",kind="data"}`:  "1",
		`connect_session_link_messages_total{service="example.echo",link="server",direction="out",kind="event"}`: fmt.Sprint(server.Events),
	} {
		if got := r.s.metric(line); got != want {
			t.Errorf("%s = %s, want %s", line, got, want)
		}
	}
	code, body := r.s.httpDo("GET", "/sessions", "", "")
	var sessions struct {
		Sessions []struct {
			ID         string `json:"id"`
			ServerLink struct {
				Calls, Events, DataChanges uint64
			} `json:"serverLink"`
		}
	}
	if code != 200 || json.Unmarshal([]byte(body), &sessions) != nil || len(sessions.Sessions) != 1 || sessions.Sessions[0].ID != s.ID ||
		sessions.Sessions[0].ServerLink.Calls != 0 || sessions.Sessions[0].ServerLink.Events != server.Events || sessions.Sessions[0].ServerLink.DataChanges != 1 {
		t.Errorf("/sessions: %d %s", code, body)
	}
	s.Close()

	// connectclient without an ssl adapter: echo takes its second
	// alternative, the server.
	res := r.cli(t, "describe", "example.echo", "--routing")
	res.mustSucceed(t, "describe --routing")
	if !strings.Contains(res.stdout, `<route method="echo" link="server" linkType="server" alternative="2"/>`) || strings.Contains(res.stdout, `name="secure"`) {
		t.Errorf("describe --routing without an ssl adapter:\n%s", res.stdout)
	}
	res = r.cli(t, "--link-stats", "call", "example.echo.echo", "text=hi")
	res.mustSucceed(t, "call echo without an ssl adapter")
	if res.stdout != "hi\n" || !regexp.MustCompile(`(?m)^connectclient: link server: open; sent 1 messages \(\d+ bytes, 1 calls\)`).MatchString(res.stderr) {
		t.Errorf("call echo without an ssl adapter:\n%s%s", res.stdout, res.stderr)
	}

	// connectclient with an ssl adapter that does not trust the runner:
	// the secure link is unreachable, echo falls back to the server.
	wrong := filepath.Join(t.TempDir(), "other.pem")
	writeSelfSigned(t, wrong)
	res = r.cli(t, "--link-ca", wrong, "--link-stats", "call", "example.echo.echo", "text=hi")
	res.mustSucceed(t, "call echo with an untrusting ssl adapter")
	note := "connectclient: note: route method echo: link secure unreachable (ssl: dial " + r.linkSSL + ": tls: failed to verify certificate: x509: certificate signed by unknown authority"
	if res.stdout != "hi\n" || !strings.HasPrefix(res.stderr, note) || !strings.Contains(res.stderr, "); using server\n") ||
		!strings.Contains(res.stderr, "connectclient: link secure "+r.linkSSL+": down: unreachable (") ||
		!regexp.MustCompile(`(?m)^connectclient: link server: open; sent 2 messages \(\d+ bytes, 1 calls\)`).MatchString(res.stderr) { // LinksDown, Call
		t.Errorf("call echo with an untrusting ssl adapter:\n%s%s", res.stdout, res.stderr)
	}
	if got := r.s.metric(`connect_service_calls_total{service="example.echo"}`); got != "2" {
		t.Errorf("calls through the server: %s, want 2", got)
	}
}

// TestDirectLinkSSLRequired: a method routed only over an ssl direct link.
// A client with an ssl adapter calls it over the link; one without gets
// the routing error that names the service, the route, the link, the
// bearer and what to configure.
func TestDirectLinkSSLRequired(t *testing.T) {
	r := startDirectRig(t, `    <link name="secure" bearer="connect.bearer.ssl" endpoint="SSL"/>
    <route method="*" linkType="server"/>
    <route method="stats" link="secure"/>
`)
	res := r.cli(t, "call", "example.echo.stats", "values=1", "values=2")
	want := `connectclient: call example.echo.stats: start session with example.echo: service "example.echo": method stats (example.echo (service file from the runner):49): link "secure" needs bearer connect.bearer.ssl; the client has no connect.bearer.ssl adapter — add one to the client configuration (connectclient has one with --link-ca FILE, FILE holding the runner's certificate, or --link-insecure)` + "\n"
	if res.code != 1 || res.stderr != want {
		t.Errorf("without an ssl adapter: exit %d\n got %q\nwant %q", res.code, res.stderr, want)
	}
	res = r.cli(t, "--link-ca", r.runnerCert, "--link-stats", "call", "example.echo.stats", "values=1", "values=2")
	res.mustSucceed(t, "with an ssl adapter")
	if !strings.Contains(res.stdout, "count") || !regexp.MustCompile(`(?m)^connectclient: link secure `+regexp.QuoteMeta(r.linkSSL)+`: open; sent 2 messages \(\d+ bytes, 1 calls\)`).MatchString(res.stderr) ||
		!regexp.MustCompile(`(?m)^connectclient: link server: open; sent 0 messages`).MatchString(res.stderr) {
		t.Errorf("with an ssl adapter:\n%s%s", res.stdout, res.stderr)
	}
}

// writeSelfSigned writes a self-signed certificate that no runner uses.
func writeSelfSigned(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "someone else"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
