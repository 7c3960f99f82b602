package persist

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSaveLoad(t *testing.T) {
	s := Open(filepath.Join(t.TempDir(), "services"))
	if got, err := s.Load("Demo"); err != nil || got != nil {
		t.Fatalf("Load before Save = %v, %v", got, err)
	}
	in := []Entry{{Path: "settings.label", Value: []byte("\x05hello")}, {Path: "a.b", Value: []byte{}}}
	if err := s.Save("Demo", in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("Demo")
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{Path: "a.b", Value: []byte{}}, {Path: "settings.label", Value: []byte("\x05hello")}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load = %q, want %q", got, want)
	}
	if err := s.Save("Demo", in[:1]); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load("Demo"); len(got) != 1 {
		t.Fatalf("Save did not replace: %q", got)
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

func TestBadNamesAndFiles(t *testing.T) {
	s := Open(t.TempDir())
	for _, name := range []string{"", "../x", "a/b", ".hidden"} {
		if err := s.Save(name, nil); err == nil {
			t.Errorf("Save(%q) accepted", name)
		}
	}
	cases := map[string]string{
		"junk":                       "bad magic",
		"CNPD\x02":                   "version 2",
		"CNPD\x01\x05ab":             "path length 5, 2 bytes left",
		"CNPD\x01\x01a":              "bad value length",
		"CNPD\x01\x01a\x00\x01a\x00": `path "a" twice`,
	}
	for content, want := range cases {
		os.WriteFile(filepath.Join(s.dir, "X.data"), []byte(content), 0o600)
		_, err := s.Load("X")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "X.data") {
			t.Errorf("Load of %q: %v, want %q naming the file", content, err, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode([]Entry{{Path: "a", Value: []byte{1, 2}}, {Path: "b.c", Value: nil}}))
	f.Add([]byte("CNPD\x01"))
	f.Add([]byte("CNPD\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := Decode(b)
		if err != nil {
			return
		}
		if again, err := Decode(Encode(entries)); err != nil || len(again) != len(entries) {
			t.Fatalf("re-decode: %v (%d vs %d entries)", err, len(again), len(entries))
		}
	})
}
