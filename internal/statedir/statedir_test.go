package statedir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestClientIDPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := ClientID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ClientID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("client id changed: %s then %s", a, b)
	}
	st, err := os.Stat(filepath.Join(dir, "client-id"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("client-id mode %v, want 0600", st.Mode().Perm())
	}
}

func TestClientIDCorrupt(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "client-id"), []byte("nonsense"), 0o600)
	if _, err := ClientID(dir); err == nil {
		t.Fatal("corrupt client id accepted")
	}
}

func TestEnsureToken(t *testing.T) {
	dir := t.TempDir()
	tok, created, err := EnsureToken(dir)
	if err != nil || !created || len(tok) != 48 {
		t.Fatalf("EnsureToken = %q, %v, %v", tok, created, err)
	}
	again, created, err := EnsureToken(dir)
	if err != nil || created || again != tok {
		t.Fatalf("second EnsureToken = %q, %v, %v; want %q, false", again, created, err, tok)
	}
	got, err := ReadToken(TokenFile(dir))
	if err != nil || got != tok {
		t.Fatalf("ReadToken = %q, %v", got, err)
	}
}

func TestResolvePrecedence(t *testing.T) {
	t.Setenv(EnvVar, "/from/env")
	if d, _ := Resolve("/from/flag"); d != "/from/flag" {
		t.Fatalf("flag ignored: %s", d)
	}
	if d, _ := Resolve(""); d != "/from/env" {
		t.Fatalf("env ignored: %s", d)
	}
}
