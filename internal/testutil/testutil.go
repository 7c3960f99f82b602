// Package testutil holds helpers shared by the tests of several packages:
// reading a `go test -fuzz` seed corpus and comparing lists of lines (the
// `file:line: message` problems of the XML parsers).
package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Seed is one file of a seed corpus.
type Seed struct {
	Name string // the file's base name
	Data []byte
}

// ReadCorpus reads every file of the seed corpus dir (as written by `go
// test -fuzz`, one []byte value per file); the test fails if there is none
// or a file is not a corpus file of one []byte.
func ReadCorpus(t testing.TB, dir string) []Seed {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no seed corpus in %s: %v", dir, err)
	}
	seeds := make([]Seed, 0, len(files))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(strings.TrimSpace(string(raw)), "\n", 2)
		if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			t.Fatalf("%s: not a fuzz corpus file of one []byte", file)
		}
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		seeds = append(seeds, Seed{Name: filepath.Base(file), Data: []byte(data)})
	}
	return seeds
}

// DiffLines fails the test if got and want differ, listing every line
// that differs; what names the lines in messages ("problem", "line").
func DiffLines(t testing.TB, what string, got, want []string) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	t.Errorf("got %d %ss, want %d", len(got), what, len(want))
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s %d:\n got: %s\nwant: %s", what, i, g, w)
		}
	}
}
