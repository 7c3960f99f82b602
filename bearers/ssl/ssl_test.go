package ssl_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearertest"
	"github.com/bearerkit/connect/bearers/ssl"
)

// patience bounds waits that only a bug makes long.
const patience = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	t.Cleanup(cancel)
	return ctx
}

func newBearer(t *testing.T, stateDir string, attrs map[string]string) bearers.Bearer {
	t.Helper()
	b, err := ssl.New(bearers.Config{Attributes: attrs, StateDir: stateDir})
	if err != nil {
		t.Fatalf("New(%v): %v", attrs, err)
	}
	return b
}

func listenOn(t *testing.T, b bearers.Bearer, ep string) *ssl.Listener {
	t.Helper()
	ln, err := b.Listen(ctxT(t), bearers.MustParseEndpoint(ep))
	if err != nil {
		t.Fatalf("Listen %s: %v", ep, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*ssl.Listener)
}

func listen(t *testing.T, b bearers.Bearer) *ssl.Listener {
	return listenOn(t, b, "ssl://127.0.0.1:0")
}

type acceptResult struct {
	c   bearers.Conn
	err error
}

func acceptAsync(ctx context.Context, ln bearers.Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := ln.Accept(ctx)
		ch <- acceptResult{c, err}
	}()
	return ch
}

// connect dials ln with cli and returns both ends.
func connect(t *testing.T, ln bearers.Listener, cli bearers.Bearer) (client, server bearers.Conn) {
	t.Helper()
	ctx := ctxT(t)
	ch := acceptAsync(ctx, ln)
	client, err := cli.Dial(ctx, ln.Endpoint())
	if err != nil {
		t.Fatalf("Dial %s: %v", ln.Endpoint(), err)
	}
	t.Cleanup(func() { client.Close() })
	r := <-ch
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return client, r.c
}

// exchange sends a message each way.
func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, p := range []struct {
		from, to net.Conn
		msg      string
	}{{a, b, "ping"}, {b, a, "pong"}} {
		if _, err := p.from.Write([]byte(p.msg)); err != nil {
			t.Fatalf("Write: %v", err)
		}
		buf := make([]byte, len(p.msg))
		if _, err := io.ReadFull(p.to, buf); err != nil {
			t.Fatalf("Read: %v", err)
		}
		if string(buf) != p.msg {
			t.Fatalf("read %q, want %q", buf, p.msg)
		}
	}
}

func TestRegistration(t *testing.T) {
	if err := ssl.Registration.Info.Validate(); err != nil {
		t.Fatal(err)
	}
	want := bearers.Reliable | bearers.Ordered | bearers.Secure
	if got := ssl.Registration.Info.Capabilities; got != want {
		t.Errorf("capabilities %s, want %s", got, want)
	}
	var r bearers.Registry
	if err := r.Register(ssl.Registration); err != nil {
		t.Fatal(err)
	}
	if reg, err := r.ByScheme("ssl"); err != nil || reg.Info.Type != "connect.bearer.ssl" {
		t.Errorf("ByScheme(ssl) = %v, %v", reg.Info, err)
	}
}

// TestConformance runs the bearer conformance suite (which includes
// nettest.TestConn). One bearer listens and dials; sharing the state
// directory, its dials trust its own generated certificate.
func TestConformance(t *testing.T) {
	b := newBearer(t, t.TempDir(), nil)
	bearertest.TestBearer(t, b, bearers.MustParseEndpoint("ssl://127.0.0.1:0"))
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func notices(t *testing.T, b bearers.Bearer) []string {
	t.Helper()
	n, ok := b.(bearers.Noticer)
	if !ok {
		t.Fatal("bearer does not implement bearers.Noticer")
	}
	return n.Notices()
}

func TestSelfSignedGeneratedAndReused(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := ssl.SelfSignedPaths(dir)
	if want := filepath.Join(dir, "ssl", "cert.pem"); certPath != want {
		t.Fatalf("cert path %s, want %s", certPath, want)
	}
	b := newBearer(t, dir, nil)
	if _, err := os.Stat(filepath.Dir(certPath)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New created %s (%v); only Listen should", filepath.Dir(certPath), err)
	}
	if ns := notices(t, b); len(ns) != 0 {
		t.Errorf("notices before Listen: %q", ns)
	}
	listen(t, b)

	for path, want := range map[string]os.FileMode{filepath.Dir(certPath): 0o700, keyPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	cert := readCert(t, certPath)
	if !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
		t.Error("generated certificate is not its own CA")
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("generated certificate does not cover %s: %v", h, err)
		}
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 360*24*time.Hour || life > 370*24*time.Hour {
		t.Errorf("certificate valid for %v, want about a year", life)
	}
	fp := ssl.Fingerprint(cert.Raw)
	ns := notices(t, b)
	if len(ns) != 1 || !strings.Contains(ns[0], certPath) || !strings.Contains(ns[0], fp) || !strings.Contains(ns[0], "--ca "+certPath) {
		t.Fatalf("notices %q: want one naming %s, fingerprint %s and --ca", ns, certPath, fp)
	}

	before, _ := os.ReadFile(certPath)
	keyBefore, _ := os.ReadFile(keyPath)
	b2 := newBearer(t, dir, nil)
	listen(t, b2) // 127.0.0.1 is covered: nothing to regenerate
	after, _ := os.ReadFile(certPath)
	keyAfter, _ := os.ReadFile(keyPath)
	if !bytes.Equal(before, after) || !bytes.Equal(keyBefore, keyAfter) {
		t.Error("a second bearer with the same state directory replaced a valid certificate")
	}
	if ns := notices(t, b2); len(ns) != 1 || !strings.Contains(ns[0], fp) {
		t.Errorf("second bearer's notices %q: want the same fingerprint %s", ns, fp)
	}
}

func TestSelfSignedReplacesExpired(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := ssl.SelfSignedPaths(dir)
	writeExpiredSelfSigned(t, certPath, keyPath)
	b := newBearer(t, dir, nil)
	ln := listen(t, b)
	cert := readCert(t, certPath)
	if !time.Now().Before(cert.NotAfter) {
		t.Fatalf("certificate still expired (NotAfter %v)", cert.NotAfter)
	}
	if ns := notices(t, b); len(ns) != 1 || !strings.Contains(ns[0], "unusable") || !strings.Contains(ns[0], ssl.Fingerprint(cert.Raw)) {
		t.Errorf("notices %q: want one saying the old certificate was replaced", ns)
	}
	// And it serves.
	cli := newBearer(t, dir, nil)
	c, s := connect(t, ln, cli)
	exchange(t, c, s)
}

func TestListenAddsHostToSelfSigned(t *testing.T) {
	dir := t.TempDir()
	b := newBearer(t, dir, nil)
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2 here: %v", err)
	}
	probe.Close()
	first := listen(t, b)
	certPath, _ := ssl.SelfSignedPaths(dir)
	before := ssl.Fingerprint(readCert(t, certPath).Raw)

	second := listenOn(t, b, "ssl://127.0.0.2:0")
	cert := readCert(t, certPath)
	for _, h := range []string{"127.0.0.2", "127.0.0.1", "localhost"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Errorf("after listening on 127.0.0.2: %v", err)
		}
	}
	after := ssl.Fingerprint(cert.Raw)
	if after == before {
		t.Fatal("certificate not regenerated for the new host")
	}
	if ns := notices(t, b); len(ns) != 1 || !strings.Contains(ns[0], after) {
		t.Errorf("notices %q: want one, with the new fingerprint %s", ns, after)
	}
	// Both listeners serve the new certificate, which same-directory
	// clients trust.
	cli := newBearer(t, dir, nil)
	for _, ln := range []*ssl.Listener{first, second} {
		c, s := connect(t, ln, cli)
		exchange(t, c, s)
	}
}

func TestListenWithoutCertificate(t *testing.T) {
	b := newBearer(t, "", nil)
	if ns := notices(t, b); len(ns) != 0 {
		t.Errorf("notices %q, want none", ns)
	}
	_, err := b.Listen(ctxT(t), bearers.MustParseEndpoint("ssl://127.0.0.1:0"))
	if !errors.Is(err, bearers.ErrBadAttribute) || !strings.Contains(err.Error(), "cert and key") || !strings.Contains(err.Error(), "state directory") {
		t.Fatalf("Listen without cert or state dir: %v; want a bad-attribute error naming cert/key and the state directory", err)
	}
}

func TestClientTrustsSameStateDir(t *testing.T) {
	dir := t.TempDir()
	c, s := connect(t, listen(t, newBearer(t, dir, nil)), newBearer(t, dir, nil))
	exchange(t, c, s)
	if got := c.Peer().Identity; !strings.HasPrefix(got, "CN=Connect self-signed") {
		t.Errorf("client sees server identity %q", got)
	}
	if got := s.Peer().Identity; got != "" {
		t.Errorf("server sees client identity %q without a client certificate", got)
	}
	st := c.(*ssl.Conn).ConnectionState()
	if st.Version != tls.VersionTLS13 {
		t.Errorf("negotiated TLS version %x, want 1.3", st.Version)
	}
	if _, ok := c.(bearers.SocketConn); ok {
		t.Error("ssl connection claims to be a plain kernel socket")
	}
}

func TestClientWithoutTrustFailsHelpfully(t *testing.T) {
	srv := newBearer(t, t.TempDir(), nil)
	cliDir := t.TempDir()
	cli := newBearer(t, cliDir, nil)
	ln := listen(t, srv)
	_, err := cli.Dial(ctxT(t), ln.Endpoint())
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("Dial to an untrusted server: %v; want a certificate verification error", err)
	}
	for _, want := range []string{"not trusted", "--ca FILE", "attribute ca", ln.Endpoint().String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(cliDir, "ssl")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a bearer that only dials wrote to its state directory (%v)", err)
	}
}

func TestClientWithCAAttribute(t *testing.T) {
	dir := t.TempDir()
	ln := listen(t, newBearer(t, dir, nil))
	certPath, _ := ssl.SelfSignedPaths(dir)
	c, s := connect(t, ln, newBearer(t, "", map[string]string{"ca": certPath}))
	exchange(t, c, s)
}

func TestServerNameMismatch(t *testing.T) {
	dir := t.TempDir()
	ln := listen(t, newBearer(t, dir, nil))
	cli := newBearer(t, dir, map[string]string{"serverName": "elsewhere.example"})
	_, err := cli.Dial(ctxT(t), ln.Endpoint())
	if err == nil || !strings.Contains(err.Error(), "serverName") {
		t.Fatalf("Dial with a wrong serverName: %v; want an error pointing at serverName", err)
	}
}

func TestInsecureSkipVerify(t *testing.T) {
	ln := listen(t, newBearer(t, t.TempDir(), nil))
	if ns := notices(t, newBearer(t, "", nil)); len(ns) != 0 {
		t.Errorf("default client has notices %q", ns)
	}
	cli := newBearer(t, t.TempDir(), map[string]string{"insecureSkipVerify": "true"})
	found := false
	for _, n := range notices(t, cli) {
		found = found || strings.Contains(n, "insecureSkipVerify") && strings.Contains(n, "NOT verified")
	}
	if !found {
		t.Errorf("notices %q: want one warning about insecureSkipVerify", notices(t, cli))
	}
	c, s := connect(t, ln, cli)
	exchange(t, c, s)
	if id := c.Peer().Identity; id != "" {
		t.Errorf("unverified server has identity %q", id)
	}
}

// waitHandshakeErrors waits until ln has counted at least n failures.
func waitHandshakeErrors(t *testing.T, ln *ssl.Listener, n uint64) error {
	t.Helper()
	end := time.Now().Add(patience)
	for {
		count, last := ln.HandshakeErrors()
		if count >= n {
			return last
		}
		if time.Now().After(end) {
			t.Fatalf("handshake errors %d, want at least %d", count, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	clientCA := newTestCA(t, dir, "clients")
	serverCA := newTestCA(t, dir, "servers")
	srvCert, srvKey := serverCA.issue(t, dir, "server1", true)
	cliCert, cliKey := clientCA.issue(t, dir, "client1", false)
	strangerCA := newTestCA(t, dir, "strangers")
	strangerCert, strangerKey := strangerCA.issue(t, dir, "stranger", false)

	srv := newBearer(t, "", map[string]string{"cert": srvCert, "key": srvKey, "clientCA": clientCA.path})
	ln := listen(t, srv)

	t.Run("with certificate", func(t *testing.T) {
		cli := newBearer(t, "", map[string]string{"ca": serverCA.path, "clientCert": cliCert, "clientKey": cliKey})
		c, s := connect(t, ln, cli)
		exchange(t, c, s)
		if got := s.Peer().Identity; got != "CN=client1" {
			t.Errorf("server sees identity %q, want CN=client1", got)
		}
		if got := c.Peer().Identity; got != "CN=server1" {
			t.Errorf("client sees identity %q, want CN=server1", got)
		}
	})

	for _, tc := range []struct {
		name  string
		attrs map[string]string
	}{
		{"without certificate", map[string]string{"ca": serverCA.path}},
		{"with untrusted certificate", map[string]string{"ca": serverCA.path, "clientCert": strangerCert, "clientKey": strangerKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := ln.HandshakeErrors()
			cli := newBearer(t, "", tc.attrs)
			ctx := ctxT(t)
			accepted := acceptAsync(ctx, ln)
			// In TLS 1.3 the client finishes its handshake before the server
			// has checked its certificate; the rejection arrives as an alert.
			if c, err := cli.Dial(ctx, ln.Endpoint()); err == nil {
				_, err = c.Read(make([]byte, 1))
				c.Close()
				if err == nil || errors.Is(err, io.EOF) {
					t.Fatalf("rejected client read %v, want the server's alert", err)
				}
			}
			last := waitHandshakeErrors(t, ln, before+1)
			if last == nil || !strings.Contains(last.Error(), "handshake with") {
				t.Errorf("last handshake error %v", last)
			}
			// The rejected client never reached Accept: the next accepted
			// connection is a good one.
			good := newBearer(t, "", map[string]string{"ca": serverCA.path, "clientCert": cliCert, "clientKey": cliKey})
			c, err := good.Dial(ctx, ln.Endpoint())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := <-accepted
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.c.Close()
			if got := r.c.Peer().Identity; got != "CN=client1" {
				t.Errorf("accepted identity %q, want CN=client1", got)
			}
		})
	}

	t.Run("request", func(t *testing.T) {
		srv := newBearer(t, "", map[string]string{"cert": srvCert, "key": srvKey, "clientCA": clientCA.path, "clientAuth": "request"})
		ln := listen(t, srv)
		_, s := connect(t, ln, newBearer(t, "", map[string]string{"ca": serverCA.path}))
		if got := s.Peer().Identity; got != "" {
			t.Errorf("identity %q without a certificate", got)
		}
		_, s = connect(t, ln, newBearer(t, "", map[string]string{"ca": serverCA.path, "clientCert": cliCert, "clientKey": cliKey}))
		if got := s.Peer().Identity; got != "CN=client1" {
			t.Errorf("identity %q, want CN=client1", got)
		}
	})
}

func TestBadClientsDoNotBlockAccept(t *testing.T) {
	dir := t.TempDir()
	// With an hour to handshake, a listener that handshakes one client at a
	// time would never get past the silent client.
	srv := newBearer(t, dir, map[string]string{"handshakeTimeout": "1h"})
	ln := listen(t, srv)
	addr := ln.Addr().String()

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	junk, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	garbage := make([]byte, 4096)
	rand.Read(garbage)
	if _, err := junk.Write(append([]byte("GET / HTTP/1.1\r\n\r\n"), garbage...)); err != nil {
		t.Fatal(err)
	}
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	half.Write([]byte{0x16, 0x03, 0x01, 0x40, 0x00}) // a handshake record header, then nothing

	c, s := connect(t, ln, newBearer(t, dir, nil))
	if c.LocalAddr().String() != s.RemoteAddr().String() {
		t.Errorf("accepted %s, want the good client %s", s.RemoteAddr(), c.LocalAddr())
	}
	exchange(t, c, s)
	last := waitHandshakeErrors(t, ln, 1)
	if !strings.Contains(last.Error(), junk.LocalAddr().String()) {
		t.Errorf("last handshake error %q does not name the junk client %s", last, junk.LocalAddr())
	}

	// Close interrupts the handshakes still waiting (an hour) for data.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	silent.SetReadDeadline(time.Now().Add(patience))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("silent client after listener Close: read %v, want the connection closed", err)
	}
	// The accepted connection stays open.
	exchange(t, c, s)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHandshakeTimeout(t *testing.T) {
	ln := listen(t, newBearer(t, t.TempDir(), map[string]string{"handshakeTimeout": "50ms"}))
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(patience))
	if _, err := silent.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("silent client: read %v, want the server to give up and close", err)
	}
	last := waitHandshakeErrors(t, ln, 1)
	if !errors.Is(last, context.DeadlineExceeded) {
		t.Errorf("last handshake error %v, want a deadline", last)
	}
}

func TestCloseSemantics(t *testing.T) {
	dir := t.TempDir()
	ln := listen(t, newBearer(t, dir, nil))
	cli := newBearer(t, dir, nil)

	t.Run("close flushes queued bytes", func(t *testing.T) {
		c, s := connect(t, ln, cli)
		want := make([]byte, 1<<20)
		rand.Read(want)
		if n, err := c.Write(want); n != len(want) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("server read %d bytes (%v), want the %d written before Close", len(got), err, len(want))
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v, want net.ErrClosed", err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v, want net.ErrClosed", err)
		}
		if err := c.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("SetDeadline after Close: %v, want net.ErrClosed", err)
		}
	})

	t.Run("close write", func(t *testing.T) {
		c, s := connect(t, ln, cli)
		c.Write([]byte("request"))
		if err := c.(*ssl.Conn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "request" {
			t.Fatalf("server read %q, %v; want request then EOF", got, err)
		}
		if _, err := c.Write([]byte("more")); err == nil {
			t.Error("Write after CloseWrite succeeded")
		}
		s.Write([]byte("reply"))
		s.Close()
		got, err = io.ReadAll(c)
		if err != nil || string(got) != "reply" {
			t.Fatalf("client read %q, %v; want reply then EOF", got, err)
		}
	})

	t.Run("listener", func(t *testing.T) {
		ln := listen(t, newBearer(t, dir, nil))
		pending := acceptAsync(ctxT(t), ln)
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ln.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if r := <-pending; !errors.Is(r.err, net.ErrClosed) {
			t.Errorf("pending Accept: %v, want net.ErrClosed", r.err)
		}
		if _, err := ln.Accept(ctxT(t)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	})

	t.Run("accept honours ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := ln.Accept(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Accept with a cancelled ctx: %v", err)
		}
	})
}

func TestBadAttributes(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		attrs map[string]string
		want  []string
	}{
		{map[string]string{"certificate": "x"}, []string{`"certificate"`, "known: ca, cert, clientAuth"}},
		{map[string]string{"minVersion": "1.1"}, []string{"minVersion", "1.2 or 1.3"}},
		{map[string]string{"handshakeTimeout": "soon"}, []string{"handshakeTimeout"}},
		{map[string]string{"handshakeTimeout": "-1s"}, []string{"handshakeTimeout"}},
		{map[string]string{"cert": notPEM}, []string{"cert and key must be set together"}},
		{map[string]string{"cert": missing, "key": missing}, []string{"cert=", missing}},
		{map[string]string{"clientAuth": "maybe"}, []string{"none, request or require"}},
		{map[string]string{"clientAuth": "require"}, []string{"needs clientCA"}},
		{map[string]string{"clientCA": notPEM}, []string{"clientCA", "no PEM certificate"}},
		{map[string]string{"ca": missing}, []string{"ca=", missing}},
		{map[string]string{"clientKey": notPEM}, []string{"clientCert and clientKey"}},
		{map[string]string{"insecureSkipVerify": "perhaps"}, []string{"true or false"}},
	} {
		_, err := ssl.New(bearers.Config{Attributes: tc.attrs, StateDir: dir})
		if !errors.Is(err, bearers.ErrBadAttribute) {
			t.Errorf("New(%v): %v, want ErrBadAttribute", tc.attrs, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%v): %q does not say %q", tc.attrs, err, w)
			}
		}
	}
	certPath, _ := ssl.SelfSignedPaths(dir)
	if _, err := ssl.New(bearers.Config{Attributes: map[string]string{"ca": certPath, "insecureSkipVerify": "true"}}); !errors.Is(err, bearers.ErrBadAttribute) {
		t.Errorf("ca with insecureSkipVerify: %v, want ErrBadAttribute", err)
	}
}

func TestBadEndpoints(t *testing.T) {
	b := newBearer(t, t.TempDir(), nil)
	ctx := ctxT(t)
	if _, err := b.Listen(ctx, bearers.MustParseEndpoint("tcp://127.0.0.1:0")); !errors.Is(err, bearers.ErrBadEndpoint) {
		t.Errorf("Listen tcp://: %v", err)
	}
	if _, err := b.Dial(ctx, bearers.MustParseEndpoint("ssl://127.0.0.1:1/x")); !errors.Is(err, bearers.ErrBadEndpoint) {
		t.Errorf("Dial with a path: %v", err)
	}
}

func TestConcurrentCreationAgrees(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	fps := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			b, err := ssl.New(bearers.Config{StateDir: dir})
			if err == nil {
				var ln bearers.Listener
				if ln, err = b.Listen(context.Background(), bearers.MustParseEndpoint("ssl://127.0.0.1:0")); err == nil {
					ln.Close()
					fps <- b.(bearers.Noticer).Notices()[0]
					return
				}
			}
			t.Error(err)
			fps <- ""
		})
	}
	wg.Wait()
	close(fps)
	certPath, _ := ssl.SelfSignedPaths(dir)
	fp := ssl.Fingerprint(readCert(t, certPath).Raw)
	for notice := range fps {
		if !strings.Contains(notice, fp) {
			t.Errorf("a bearer uses another certificate than the file's (%s): %q", fp, notice)
		}
	}
}

func TestListenerFollowsReplacedCertificate(t *testing.T) {
	defer ssl.SetRefreshInterval(0)()
	dir := t.TempDir()
	ln := listen(t, newBearer(t, dir, nil))
	cli := newBearer(t, dir, nil)
	c, _ := connect(t, ln, cli)
	certPath, keyPath := ssl.SelfSignedPaths(dir)
	old := ssl.Fingerprint(c.(*ssl.Conn).ConnectionState().PeerCertificates[0].Raw)

	// Another process sharing the state directory replaces the files.
	other := t.TempDir()
	listen(t, newBearer(t, other, nil))
	otherCert, otherKey := ssl.SelfSignedPaths(other)
	if err := os.Rename(otherKey, keyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(otherCert, certPath); err != nil {
		t.Fatal(err)
	}
	want := ssl.Fingerprint(readCert(t, certPath).Raw)
	if want == old {
		t.Fatal("test setup: replacement has the same fingerprint")
	}
	c, s := connect(t, ln, cli)
	if got := ssl.Fingerprint(c.(*ssl.Conn).ConnectionState().PeerCertificates[0].Raw); got != want {
		t.Errorf("listener serves %s, want the replaced file's %s", got, want)
	}
	exchange(t, c, s)
}

func TestUnusableStateDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b := newBearer(t, filepath.Join(file, "state"), nil) // cannot be created
	if _, err := b.Listen(ctxT(t), bearers.MustParseEndpoint("ssl://127.0.0.1:0")); err == nil || !strings.Contains(err.Error(), "self-signed certificate in state directory") {
		t.Errorf("Listen: %v; want the state directory error", err)
	}
	// The bearer still dials.
	good := t.TempDir()
	ln := listen(t, newBearer(t, good, nil))
	certPath, _ := ssl.SelfSignedPaths(good)
	dialer := newBearer(t, filepath.Join(file, "state"), map[string]string{"ca": certPath})
	c, s := connect(t, ln, dialer)
	exchange(t, c, s)
}

func TestSelfSignedLeftovers(t *testing.T) {
	for name, setup := range map[string]func(dir string) error{
		"empty directory": func(dir string) error { return os.Mkdir(dir, 0o700) },
		"key only": func(dir string) error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "key.pem"), []byte("junk"), 0o600)
		},
		"garbage certificate": func(dir string) error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("junk"), 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			state := t.TempDir()
			certPath, _ := ssl.SelfSignedPaths(state)
			if err := setup(filepath.Dir(certPath)); err != nil {
				t.Fatal(err)
			}
			b := newBearer(t, state, nil)
			c, s := connect(t, listen(t, b), newBearer(t, state, nil))
			exchange(t, c, s)
			if fp := ssl.Fingerprint(readCert(t, certPath).Raw); !strings.Contains(notices(t, b)[0], fp) {
				t.Errorf("notice %q does not name the certificate on disk (%s)", notices(t, b)[0], fp)
			}
		})
	}
}
