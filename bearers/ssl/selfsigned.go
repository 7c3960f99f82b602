package ssl

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// selfSignedValidity is how long a generated certificate is valid.
	selfSignedValidity = 365 * 24 * time.Hour
	// renewBefore: a generated certificate this close to expiry is replaced.
	renewBefore = 7 * 24 * time.Hour
	// maxPEMFile bounds what is read from a certificate or key file.
	maxPEMFile = 1 << 20
)

// defaultHosts are the names every generated certificate is valid for.
var defaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// SelfSignedPaths returns where the ssl bearer keeps its generated
// certificate and key under a state directory: <stateDir>/ssl/cert.pem and
// <stateDir>/ssl/key.pem.
func SelfSignedPaths(stateDir string) (certPath, keyPath string) {
	dir := filepath.Join(stateDir, "ssl")
	return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
}

// Fingerprint returns the SHA-256 fingerprint of a DER certificate as
// colon-separated upper-case hex pairs.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var sb strings.Builder
	for i, b := range sum {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02X", b)
	}
	return sb.String()
}

// readLimited reads a file of at most maxPEMFile bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a PEM certificate or key", path, maxPEMFile)
	}
	return b, nil
}

// loadKeyPair loads a PEM certificate (chain) and key, with Leaf parsed.
func loadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := readLimited(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readLimited(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s with %s: %w", certPath, keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("%s: %w", certPath, err)
		}
	}
	return cert, nil
}

// loadPool reads a PEM file of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// certHost normalizes a listen host for a certificate: IPv6 zones are
// dropped, unspecified addresses stand for this machine's host name, and
// anything that is neither an IP nor a plausible DNS name is skipped ("").
func certHost(h string) string {
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsUnspecified() {
			name, err := os.Hostname()
			if err != nil {
				return ""
			}
			return certHost(name)
		}
		return ip.String()
	}
	if h == "" || len(h) > 253 {
		return ""
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return ""
		}
	}
	return strings.ToLower(h)
}

// usable tells why a generated certificate must be replaced, or "" if it can
// be reused for all hosts at time now.
func usable(leaf *x509.Certificate, hosts []string, now time.Time) string {
	switch {
	case now.Before(leaf.NotBefore):
		return "it is not valid yet"
	case now.Add(renewBefore).After(leaf.NotAfter):
		return fmt.Sprintf("it expires %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return fmt.Sprintf("it does not cover %s", h)
		}
	}
	return ""
}

// selfSigned is the outcome of ensureSelfSigned.
type selfSigned struct {
	cert     tls.Certificate
	certPath string
	modTime  time.Time // of certPath when loaded
	size     int64
	// replaced says why an existing certificate was replaced ("" if the
	// certificate was reused or newly created).
	replaced string
	created  bool
}

// changedOnDisk reports whether the certificate file is gone or differs from
// the one loaded.
func (s *selfSigned) changedOnDisk() bool {
	fi, err := os.Stat(s.certPath)
	return err != nil || !fi.ModTime().Equal(s.modTime) || fi.Size() != s.size
}

const selfSignedNoticePrefix = "ssl: no certificate configured"

// notice is the operator notice for a generated certificate in use.
func (s *selfSigned) notice() string {
	how := "using"
	switch {
	case s.replaced != "":
		how = "generated a new self-signed certificate because the previous one was unusable (" + s.replaced + "); using"
	case s.created:
		how = "generated and using"
	}
	return fmt.Sprintf(selfSignedNoticePrefix+"; %s self-signed certificate %s (SHA-256 fingerprint %s); clients with the same state directory trust it automatically, others pass --ca %s",
		how, s.certPath, Fingerprint(s.cert.Certificate[0]), s.certPath)
}

// ensureSelfSigned loads the generated certificate under stateDir, or
// creates (or replaces) it so that it is valid now and for every host. Two
// processes racing to create it converge on one pair: each reloads what is
// on disk after writing, and retries if the files do not match.
func ensureSelfSigned(stateDir string, hosts []string, now time.Time) (*selfSigned, error) {
	certPath, keyPath := SelfSignedPaths(stateDir)
	want := append([]string(nil), defaultHosts...)
	for _, h := range hosts {
		if h = certHost(h); h != "" {
			want = append(want, h)
		}
	}
	res := &selfSigned{certPath: certPath}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		res.created, res.replaced = false, ""
		fi, statErr := os.Stat(certPath)
		cert, err := loadKeyPair(certPath, keyPath)
		names := want
		switch {
		case err == nil:
			why := usable(cert.Leaf, want, now)
			if why == "" {
				res.cert = cert
				if fi != nil {
					res.modTime, res.size = fi.ModTime(), fi.Size()
				}
				return res, nil
			}
			res.replaced = why
			names = append(names, cert.Leaf.DNSNames...)
			for _, ip := range cert.Leaf.IPAddresses {
				names = append(names, ip.String())
			}
		case errors.Is(statErr, fs.ErrNotExist):
			res.created = true
		default:
			res.replaced = err.Error()
		}
		certPEM, keyPEM, err := generateSelfSigned(names, now)
		if err != nil {
			return nil, err
		}
		installed, err := installSelfSigned(stateDir, certPEM, keyPEM, !res.created)
		if err != nil {
			return nil, err
		}
		if !installed { // another process created it first: use theirs
			lastErr = errors.New("lost the race to create it")
			continue
		}
		// Reload: another process may have written between our renames.
		fi, _ = os.Stat(certPath)
		cert, err = loadKeyPair(certPath, keyPath)
		if err == nil && fi != nil && bytes.Equal(cert.Certificate[0], derOf(certPEM)) {
			res.cert = cert
			res.modTime, res.size = fi.ModTime(), fi.Size()
			return res, nil
		}
		lastErr = err
		if err == nil {
			lastErr = errors.New("replaced by another process meanwhile")
		}
	}
	return nil, fmt.Errorf("%s: files keep changing under us (another process writing them?): %v", certPath, lastErr)
}

func derOf(certPEM []byte) []byte {
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return nil
	}
	return blk.Bytes
}

// generateSelfSigned creates an ECDSA P-256 key and a self-signed certificate
// that is its own CA, valid for the given names (deduplicated).
func generateSelfSigned(names []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial number: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// A distinct subject per certificate, so that verifiers never mistake
		// one generated certificate for the issuer of another.
		Subject:               pkix.Name{CommonName: fmt.Sprintf("Connect self-signed %s %08x", host, serial.Uint64()&0xffffffff), Organization: []string{"Connect"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// installSelfSigned puts a new key (0600) and certificate (0644) in place.
//
// To create (replace false: the caller found no certificate), it fills a
// temporary directory (0700) and renames it to <stateDir>/ssl, so that of
// several processes doing this at once exactly one wins and all see a
// complete pair; installed is false for the losers, who then load the
// winner's. Only when <stateDir>/ssl exists without a certificate in it (a
// leftover) does creating fall back to replacing.
//
// To replace, it writes the key, then the certificate, each through a
// temporary file and a rename.
func installSelfSigned(stateDir string, certPEM, keyPEM []byte, replace bool) (installed bool, err error) {
	certPath, keyPath := SelfSignedPaths(stateDir)
	dir := filepath.Dir(certPath)
	if !replace {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return false, fmt.Errorf("create state directory: %w", err)
		}
		tmp, err := os.MkdirTemp(stateDir, ".ssl-*")
		if err != nil {
			return false, fmt.Errorf("create certificate directory: %w", err)
		}
		defer os.RemoveAll(tmp) // nothing left to remove once renamed
		if err := os.Chmod(tmp, 0o700); err != nil {
			return false, fmt.Errorf("create certificate directory: %w", err)
		}
		if err := writeAtomic(filepath.Join(tmp, filepath.Base(keyPath)), keyPEM, 0o600); err != nil {
			return false, err
		}
		if err := writeAtomic(filepath.Join(tmp, filepath.Base(certPath)), certPEM, 0o644); err != nil {
			return false, err
		}
		rerr := os.Rename(tmp, dir)
		if rerr == nil {
			return true, nil
		}
		if _, err := os.Stat(certPath); err == nil {
			return false, nil // another process created it meanwhile
		}
		if _, err := os.Stat(dir); err != nil {
			return false, fmt.Errorf("create certificate directory %s: %w", dir, rerr)
		}
		// dir exists without a certificate: replace what is there.
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create certificate directory: %w", err)
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return false, err
	}
	return true, writeAtomic(certPath, certPEM, 0o644)
}

func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
