package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate for CN=alice into dir.
func pki(t *testing.T, dir string) (caFile, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(key)
		return write(cn+".pem", "CERTIFICATE", der), write(cn+".key", "PRIVATE KEY", kder)
	}
	caFile = write("ca.pem", "CERTIFICATE", caDER)
	srvCert, srvKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliCert, cliKey = leaf(3, "alice", x509.ExtKeyUsageClientAuth, nil)
	return
}

func TestClientCertificateAuthenticates(t *testing.T) {
	dir := t.TempDir()
	ca, srvCert, srvKey, cliCert, cliKey := pki(t, dir)
	ep := fmt.Sprintf("ssl://127.0.0.1:%d", freePort(t, "tcp"))
	s := startServer(t, serverConfig{
		extra: `<authentication><token value="only-for-others"/><certificates allow="true"/></authentication>`,
		adapters: []string{fmt.Sprintf(`<connectionAdapter name="ssl" type="connect.bearer.ssl" address=%q>
    <attribute name="cert" value=%q/>
    <attribute name="key" value=%q/>
    <attribute name="clientCA" value=%q/>
  </connectionAdapter>`, ep, srvCert, srvKey, ca)},
	}, true)

	// A certificate and no token: admitted as the certificate's identity.
	r := runClient(t, "--state-dir", t.TempDir(), "--server", ep, "--ca", ca, "--cert", cliCert, "--key", cliKey, "ping")
	r.mustSucceed(t, "ping with a client certificate")
	s.waitLog(`auth="certificate CN=alice"`)

	// No certificate: the TLS handshake refuses the client; the error says so.
	r = runClient(t, "--state-dir", t.TempDir(), "--server", ep, "--ca", ca, "--timeout", "20s", "--registration-timeout", "5s", "ping")
	if r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "certificate") {
		t.Fatalf("no client certificate: exit %d, stderr %q", r.code, r.stderr)
	}
	// Not trusting the server: the error says how to fix it.
	r = runClient(t, "--state-dir", t.TempDir(), "--server", ep, "--cert", cliCert, "--key", cliKey, "--timeout", "20s", "--registration-timeout", "5s", "ping")
	if r.code != 1 || !strings.Contains(r.stderr, "--ca") {
		t.Fatalf("untrusted server: exit %d, stderr %q", r.code, r.stderr)
	}
}
