// Package persist keeps services' persistent runtime data under the state
// directory: one file per service, <dir>/<service>.data, holding the
// encoded value of every persistent node by data path. Writes are atomic
// (a temporary file renamed into place), so a crash leaves the previous
// version or the new one, never a torn file.
//
// File format, version 1: the magic "CNPD", a version byte (1), then
// records until the end: uvarint path length, path bytes, uvarint value
// length, value bytes (the value in the services codec encoding of the
// node's type). A file that does not parse is reported with its name and
// offset and never half applied.
package persist

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	magic   = "CNPD"
	version = 1
	// MaxFileSize bounds a persistent-data file.
	MaxFileSize = 16 << 20
)

// Entry is the encoded value of one persistent node.
type Entry struct {
	Path  string
	Value []byte
}

// Store reads and writes the files of one state directory. Its methods
// are safe for concurrent use for different services; the caller
// serializes Save calls for one service.
type Store struct {
	dir string
}

// Open returns a store for dir (created, 0700, on first Save).
func Open(dir string) *Store { return &Store{dir: dir} }

func (s *Store) file(service string) string {
	// Service names are dot-separated identifiers (servicefile checks
	// them), safe as file names; refuse anything else rather than escape.
	return filepath.Join(s.dir, service+".data")
}

func checkName(service string) error {
	if service == "" || strings.ContainsAny(service, `/\`) || strings.HasPrefix(service, ".") {
		return fmt.Errorf("persist: %q is not a service name", service)
	}
	return nil
}

// Load returns the entries saved for service, sorted by path; none (and
// no error) if nothing was saved yet.
func (s *Store) Load(service string) ([]Entry, error) {
	if err := checkName(service); err != nil {
		return nil, err
	}
	name := s.file(service)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	if st.Size() > MaxFileSize {
		return nil, fmt.Errorf("persist: %s: %d bytes, more than %d", name, st.Size(), MaxFileSize)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && len(b) > 0 {
		return nil, fmt.Errorf("persist: %w", err)
	}
	entries, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("persist: %s: %w", name, err)
	}
	return entries, nil
}

// Save replaces what is saved for service with entries.
func (s *Store) Save(service string, entries []Entry) error {
	if err := checkName(service); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	data := Encode(entries)
	if len(data) > MaxFileSize {
		return fmt.Errorf("persist: %s: %d bytes of persistent data, more than %d", service, len(data), MaxFileSize)
	}
	tmp, err := os.CreateTemp(s.dir, "."+service+".tmp-*")
	if err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("persist: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("persist: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.file(service)); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	return nil
}

// Encode returns the file format of entries (sorted by path).
func Encode(entries []Entry) []byte {
	sorted := append([]Entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	b := append([]byte(magic), version)
	for _, e := range sorted {
		b = binary.AppendUvarint(b, uint64(len(e.Path)))
		b = append(b, e.Path...)
		b = binary.AppendUvarint(b, uint64(len(e.Value)))
		b = append(b, e.Value...)
	}
	return b
}

// Decode parses the file format. Errors name the byte offset.
func Decode(b []byte) ([]Entry, error) {
	if len(b) < len(magic)+1 || !bytes.Equal(b[:len(magic)], []byte(magic)) {
		return nil, errors.New("not a Connect persistent-data file (bad magic)")
	}
	if b[len(magic)] != version {
		return nil, fmt.Errorf("version %d, this build reads %d", b[len(magic)], version)
	}
	off := len(magic) + 1
	var out []Entry
	seen := map[string]bool{}
	field := func(what string) ([]byte, error) {
		n, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return nil, fmt.Errorf("offset %d: bad %s length", off, what)
		}
		if n > uint64(len(b)-off-k) {
			return nil, fmt.Errorf("offset %d: %s length %d, %d bytes left", off, what, n, len(b)-off-k)
		}
		v := b[off+k : off+k+int(n)]
		off += k + int(n)
		return v, nil
	}
	for off < len(b) {
		start := off
		p, err := field("path")
		if err != nil {
			return nil, err
		}
		v, err := field("value")
		if err != nil {
			return nil, err
		}
		if seen[string(p)] {
			return nil, fmt.Errorf("offset %d: path %q twice", start, p)
		}
		seen[string(p)] = true
		out = append(out, Entry{Path: string(p), Value: bytes.Clone(v)})
	}
	return out, nil
}
