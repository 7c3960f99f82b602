// Package ssl is the stock TLS bearer, type connect.bearer.ssl, scheme ssl:
// TLS (1.3 unless minVersion says 1.2) over TCP, with reliable, ordered and
// secure connections. It owns the TLS configuration for both sides, the
// self-signed certificate it generates when a server has none, and the
// concurrent server handshakes.
//
// # Attributes
//
// Server side (Listen):
//
//	cert, key          PEM certificate (chain) and private key files
//	clientCA           PEM file of CAs that client certificates are verified against
//	clientAuth         none | request | require (default require when clientCA is set, else none)
//	handshakeTimeout   Go duration, default 10s; bounds each handshake (both sides)
//
// Client side (Dial):
//
//	ca                 PEM file of CAs (or the server's certificate) to verify the server with
//	serverName         name to verify the server certificate against (default: the endpoint host)
//	clientCert, clientKey  PEM certificate and key presented to the server (mutual TLS)
//	insecureSkipVerify true to skip verifying the server: development only; the
//	                   bearer reports a notice saying so
//
// Both: minVersion 1.2 | 1.3 (default 1.3).
//
// Relative paths are relative to the working directory of the process that
// creates the bearer (for a plugin, the plugin subprocess, which inherits the
// host's). Unknown attributes are rejected.
//
// # Certificates out of the box
//
// When no cert and key are configured, the first Listen loads, or creates if
// missing or unusable, a self-signed ECDSA P-256 certificate that is its own
// CA at <StateDir>/ssl/cert.pem with its key at <StateDir>/ssl/key.pem
// (directory 0700, key 0600), valid for one year for localhost, 127.0.0.1,
// ::1 and the listen host (for 0.0.0.0 or ::, this machine's host name).
// The bearer then reports where the certificate is, its fingerprint and how
// clients trust it, as a notice (bearers.Noticer). This happens in Listen
// rather than New because New cannot tell a server from a client: a bearer
// that only dials never creates key material, and has nothing to report.
// Hosts therefore ask for Notices after Listen as well as after New.
//
// A later Listen on a host the certificate does not cover regenerates it,
// keeping its names, with a new notice. A certificate within seven days of
// expiry is regenerated, also while listening: handshakes check, at most once
// a second, that the certificate in use is still valid and still the one in
// the files, and take the files' one when another process sharing the state
// directory replaced it. Two processes creating the certificate at the same
// moment end up with the same one (the first creation moves a complete
// directory into place). Without a state directory and without cert and
// key, Listen fails, saying what to configure.
//
// When dialing, the server is verified against the ca attribute if set;
// otherwise against the system roots plus <StateDir>/ssl/cert.pem if that
// file exists, so that a client on the server's machine with the same state
// directory trusts a generated certificate with no flags. A verification
// failure says how to fix it.
//
// # Server handshakes
//
// A Listener runs each TLS handshake in its own goroutine, bounded by
// handshakeTimeout and by at most 256 handshakes (or handshaken connections
// waiting for Accept) at a time, so that a slow or hostile client never
// delays another's Accept. Accept returns only completed handshakes; failed
// ones are counted (Listener.HandshakeErrors).
//
// Connections are *Conn values. They hold TLS state in this process, so
// unlike tcp connections they cannot be handed to another process as a
// kernel socket; a bearer plugin relays their bytes.
package ssl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// Type is the bearer type id.
const Type = "connect.bearer.ssl"

// Scheme is the endpoint scheme the bearer serves.
const Scheme = "ssl"

// DefaultHandshakeTimeout bounds a TLS handshake unless handshakeTimeout says
// otherwise.
const DefaultHandshakeTimeout = 10 * time.Second

// maxHandshakes bounds a listener's concurrent handshakes, counting
// handshaken connections not yet returned by Accept.
const maxHandshakes = 256

// Info describes the ssl bearer.
var Info = bearers.Info{Type: Type, Scheme: Scheme, Capabilities: bearers.Reliable | bearers.Ordered | bearers.Secure}

// Registration registers the ssl bearer.
var Registration = bearers.Registration{Info: Info, New: New}

var knownAttributes = []string{
	"ca", "cert", "clientAuth", "clientCA", "clientCert", "clientKey",
	"handshakeTimeout", "insecureSkipVerify", "key", "minVersion", "serverName",
}

// bearer is the ssl bearer. Its configuration is fixed by New; mu guards the
// self-signed certificate and the notices, which Listen may change.
type bearer struct {
	stateDir         string
	minVersion       uint16
	handshakeTimeout time.Duration

	// server side
	configured *tls.Certificate // cert and key attributes, nil if unset
	clientCAs  *x509.CertPool
	clientAuth tls.ClientAuthType

	// client side
	rootCAs    *x509.CertPool // ca attribute, nil if unset
	serverName string
	clientCert *tls.Certificate
	insecure   bool

	mu         sync.Mutex
	selfSigned *selfSigned // nil unless generated or loaded
	hosts      []string    // listen hosts the self-signed certificate must cover
	checked    time.Time   // when refreshLocked last ran
	notices    []string
}

func badAttr(name, value, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s=%q: %s", bearers.ErrBadAttribute, Type, name, value, fmt.Sprintf(format, args...))
}

// New creates an ssl bearer from its attributes (see the package
// documentation). Errors wrap bearers.ErrBadAttribute and name the attribute.
// New reads the certificate and CA files named by attributes; it writes
// nothing (a self-signed certificate is prepared by Listen).
func New(cfg bearers.Config) (bearers.Bearer, error) {
	a := cfg.Attributes
	for name := range a {
		if !slices.Contains(knownAttributes, name) {
			return nil, fmt.Errorf("%w: %s has no attribute %q (known: %s)", bearers.ErrBadAttribute, Type, name, strings.Join(knownAttributes, ", "))
		}
	}
	b := &bearer{stateDir: cfg.StateDir, minVersion: tls.VersionTLS13, handshakeTimeout: DefaultHandshakeTimeout}

	if v, ok := a["minVersion"]; ok {
		switch v {
		case "1.2":
			b.minVersion = tls.VersionTLS12
		case "1.3":
		default:
			return nil, badAttr("minVersion", v, "want 1.2 or 1.3")
		}
	}
	if v, ok := a["handshakeTimeout"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Hour {
			return nil, badAttr("handshakeTimeout", v, "want a duration from 1ms to 1h, like 10s")
		}
		b.handshakeTimeout = d
	}

	// Server side.
	certPath, keyPath := a["cert"], a["key"]
	switch {
	case certPath != "" && keyPath != "":
		c, err := loadKeyPair(certPath, keyPath)
		if err != nil {
			return nil, badAttr("cert", certPath, "with key %q: %v", keyPath, err)
		}
		b.configured = &c
	case certPath != "" || keyPath != "":
		return nil, fmt.Errorf("%w: %s: cert and key must be set together (cert=%q key=%q)", bearers.ErrBadAttribute, Type, certPath, keyPath)
	}
	if p, ok := a["clientCA"]; ok {
		pool, err := loadPool(p)
		if err != nil {
			return nil, badAttr("clientCA", p, "%v", err)
		}
		b.clientCAs = pool
		b.clientAuth = tls.RequireAndVerifyClientCert
	}
	if v, ok := a["clientAuth"]; ok {
		switch v {
		case "none":
			b.clientAuth = tls.NoClientCert
		case "request":
			b.clientAuth = tls.VerifyClientCertIfGiven
		case "require":
			b.clientAuth = tls.RequireAndVerifyClientCert
		default:
			return nil, badAttr("clientAuth", v, "want none, request or require")
		}
		if v != "none" && b.clientCAs == nil {
			return nil, badAttr("clientAuth", v, "needs clientCA, the PEM file of CAs to verify client certificates against")
		}
	}

	// Client side.
	if p, ok := a["ca"]; ok {
		pool, err := loadPool(p)
		if err != nil {
			return nil, badAttr("ca", p, "%v", err)
		}
		b.rootCAs = pool
	}
	b.serverName = a["serverName"]
	cc, ck := a["clientCert"], a["clientKey"]
	switch {
	case cc != "" && ck != "":
		c, err := loadKeyPair(cc, ck)
		if err != nil {
			return nil, badAttr("clientCert", cc, "with clientKey %q: %v", ck, err)
		}
		b.clientCert = &c
	case cc != "" || ck != "":
		return nil, fmt.Errorf("%w: %s: clientCert and clientKey must be set together (clientCert=%q clientKey=%q)", bearers.ErrBadAttribute, Type, cc, ck)
	}
	if v, ok := a["insecureSkipVerify"]; ok {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, badAttr("insecureSkipVerify", v, "want true or false")
		}
		if on && b.rootCAs != nil {
			return nil, badAttr("insecureSkipVerify", v, "contradicts ca: drop one of them")
		}
		b.insecure = on
		if on {
			b.notices = append(b.notices, "ssl: insecureSkipVerify is set: server certificates are NOT verified, so anyone on the network path can impersonate the server; use it for development only and pass --ca FILE (attribute ca) instead")
		}
	}

	return b, nil
}

// Info describes the ssl bearer.
func (b *bearer) Info() bearers.Info { return Registration.Info }

// Notices reports, for the operator, insecureSkipVerify (from New on) and the
// self-signed certificate in use (once Listen has prepared it, and again
// whenever it changes), so a host asks after New and after each Listen.
func (b *bearer) Notices() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.notices)
}

// refreshInterval is how often, at most, a handshake checks that the
// self-signed certificate in use is still the one on disk and not near
// expiry.
var refreshInterval = time.Second

// ensureCovers prepares the self-signed certificate, covering host too.
func (b *bearer) ensureCovers(host string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := certHost(host); h != "" && !slices.Contains(b.hosts, h) {
		b.hosts = append(b.hosts, h)
	}
	return b.refreshLocked(time.Now())
}

// refreshLocked keeps the self-signed certificate in use valid and in step
// with the files: it takes the files' certificate when another process
// replaced them, and renews a certificate near expiry or missing a host.
func (b *bearer) refreshLocked(now time.Time) error {
	b.checked = now
	if cur := b.selfSigned; cur != nil && !cur.changedOnDisk() && usable(cur.cert.Leaf, b.hosts, now) == "" {
		return nil
	}
	ss, err := ensureSelfSigned(b.stateDir, b.hosts, now)
	if err != nil {
		return fmt.Errorf("self-signed certificate in state directory %s: %w", b.stateDir, err)
	}
	if b.selfSigned == nil || !slices.Equal(ss.cert.Certificate[0], b.selfSigned.cert.Certificate[0]) {
		b.setSelfSignedNotice(ss.notice())
	}
	b.selfSigned = ss
	return nil
}

// setSelfSignedNotice replaces the notice about the self-signed certificate.
func (b *bearer) setSelfSignedNotice(n string) {
	b.notices = slices.DeleteFunc(b.notices, func(n string) bool { return strings.HasPrefix(n, selfSignedNoticePrefix) })
	b.notices = append(b.notices, n)
}

func (b *bearer) serverCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if b.configured != nil {
		return b.configured, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := time.Now(); now.Sub(b.checked) >= refreshInterval {
		_ = b.refreshLocked(now) // on failure keep serving the current one
	}
	if b.selfSigned == nil {
		return nil, errors.New("ssl: no server certificate")
	}
	return &b.selfSigned.cert, nil
}

// Listen binds a TCP socket on the endpoint and returns a *Listener that
// accepts TLS connections. Without cert/key it serves the self-signed
// certificate, adding the endpoint's host to it if needed; without a state
// directory either, it fails.
func (b *bearer) Listen(ctx context.Context, ep bearers.Endpoint) (bearers.Listener, error) {
	if err := Info.CheckEndpoint("listen", ep); err != nil {
		return nil, err
	}
	if b.configured == nil && b.stateDir == "" {
		return nil, fmt.Errorf("%w: ssl: listen %s: no certificate: set the cert and key attributes, or give the host a state directory (--state-dir) so that a self-signed certificate can be generated there", bearers.ErrBadAttribute, ep)
	}
	var lc net.ListenConfig
	raw, err := lc.Listen(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, fmt.Errorf("ssl: listen %s: %w", ep, err)
	}
	if b.configured == nil {
		if err := b.ensureCovers(ep.Host); err != nil {
			raw.Close()
			return nil, fmt.Errorf("ssl: listen %s: %w", ep, err)
		}
	}
	cfg := &tls.Config{
		MinVersion:     b.minVersion,
		GetCertificate: b.serverCertificate,
		ClientAuth:     b.clientAuth,
		ClientCAs:      b.clientCAs,
	}
	return newListener(raw, ep.WithAddr(raw.Addr()), cfg, b.handshakeTimeout), nil
}

// clientConfig builds the TLS configuration for dialing ep.
func (b *bearer) clientConfig(ep bearers.Endpoint) *tls.Config {
	cfg := &tls.Config{MinVersion: b.minVersion, ServerName: b.serverName}
	if cfg.ServerName == "" {
		cfg.ServerName = ep.Host
	}
	if b.clientCert != nil {
		cfg.Certificates = []tls.Certificate{*b.clientCert}
	}
	switch {
	case b.insecure:
		cfg.InsecureSkipVerify = true
	case b.rootCAs != nil:
		cfg.RootCAs = b.rootCAs
	default:
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if b.stateDir != "" {
			certPath, _ := SelfSignedPaths(b.stateDir)
			if pem, err := readLimited(certPath); err == nil {
				pool.AppendCertsFromPEM(pem)
			}
		}
		cfg.RootCAs = pool
	}
	return cfg
}

// Dial connects to ep and completes the TLS handshake, verifying the server
// as the package documentation says. The handshake is bounded by ctx and by
// handshakeTimeout.
func (b *bearer) Dial(ctx context.Context, ep bearers.Endpoint) (bearers.Conn, error) {
	if err := Info.CheckEndpoint("dial", ep); err != nil {
		return nil, err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: b.handshakeTimeout}, Config: b.clientConfig(ep)}
	nc, err := d.DialContext(ctx, "tcp", ep.HostPort())
	if err != nil {
		return nil, b.dialError(ep, err)
	}
	tc := nc.(*tls.Conn)
	return newConn(tc, peerOf(tc.ConnectionState())), nil
}

// dialError explains a failed dial; for an untrusted server it says how to
// trust it.
func (b *bearer) dialError(ep bearers.Endpoint, err error) error {
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("ssl: dial %s: %w", ep, err)
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return fmt.Errorf("ssl: dial %s: %w; the server's certificate is not valid for %q: dial a name it covers, or set the serverName attribute to one", ep, err, hostErr.Host)
	}
	where := "the system roots"
	if b.rootCAs != nil {
		where = "the ca attribute's certificates"
	} else if b.stateDir != "" {
		certPath, _ := SelfSignedPaths(b.stateDir)
		if _, serr := readLimited(certPath); serr == nil || !errors.Is(serr, fs.ErrNotExist) {
			where += " and " + certPath
		}
	}
	return fmt.Errorf("ssl: dial %s: %w; the server's certificate is not trusted by %s: pass --ca FILE (attribute ca) naming the server's certificate or the CA that signed it (a Connect server that generated its own keeps it at <its state directory>/ssl/cert.pem)", ep, err, where)
}

// peerOf returns the verified peer identity of a completed handshake.
func peerOf(st tls.ConnectionState) bearers.Peer {
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return bearers.Peer{}
	}
	leaf := st.PeerCertificates[0]
	if leaf.Subject.CommonName != "" {
		return bearers.Peer{Identity: "CN=" + leaf.Subject.CommonName}
	}
	return bearers.Peer{Identity: leaf.Subject.String()}
}
