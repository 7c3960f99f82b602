// Package statedir finds the state directory and keeps the small files in it
// that servers and clients share on one machine: the server's generated
// client token and a client's persistent client id.
package statedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// EnvVar names the environment variable that sets the state directory.
const EnvVar = "CONNECT_STATE_DIR"

// Resolve picks the state directory: the flag value if set, else
// $CONNECT_STATE_DIR, else $XDG_STATE_HOME/connect, else
// ~/.local/state/connect.
func Resolve(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	if d := os.Getenv(EnvVar); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "connect"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no state directory: set --state-dir or $%s (%v)", EnvVar, err)
	}
	return filepath.Join(home, ".local", "state", "connect"), nil
}

// TokenFile is where a server keeps its generated client token.
func TokenFile(dir string) string { return filepath.Join(dir, "token") }

// EnsureToken returns the token in dir's token file, creating the file with
// a new random token (0600) if it does not exist.
func EnsureToken(dir string) (token string, created bool, err error) {
	if t, err := ReadToken(TokenFile(dir)); err == nil {
		return t, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, err
	}
	t := hex.EncodeToString(b[:])
	if err := writeNew(TokenFile(dir), t+"\n"); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process won the race
			t, err := ReadToken(TokenFile(dir))
			return t, false, err
		}
		return "", false, err
	}
	return t, true, nil
}

// ReadToken reads a token file: its content, trimmed. An empty file is an error.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}

// ClientID returns the persistent client id kept in dir, creating it on
// first use.
func ClientID(dir string) (uuid.UUID, error) {
	path := filepath.Join(dir, "client-id")
	if b, err := os.ReadFile(path); err == nil {
		id, err := uuid.ParseBytes([]byte(strings.TrimSpace(string(b))))
		if err != nil || id == uuid.Nil {
			return uuid.Nil, fmt.Errorf("client id file %s is corrupt (%q); delete it to get a new id", path, strings.TrimSpace(string(b)))
		}
		return id, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return uuid.Nil, err
	}
	id := uuid.New()
	if err := writeNew(path, id.String()+"\n"); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return ClientID(dir)
		}
		return uuid.Nil, err
	}
	return id, nil
}

// writeNew creates path (and its directory, 0700) exclusively, mode 0600.
func writeNew(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link fails if path exists: exclusive creation with complete content.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fs.ErrExist
		}
		return err
	}
	return nil
}
