package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
)

// FuzzParse feeds arbitrary documents to the parser. It must never panic; a
// document is either accepted with a consistent Server, or rejected with
// Problems that each carry a line and fit on one line. Token files are not
// read from the real file system: any path reads as a fixed token, except
// paths containing "missing", which fail.
func FuzzParse(f *testing.F) {
	f.Add(DefaultXML())
	f.Add([]byte(minimal))
	f.Add([]byte(listenConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := fuzzParser(data)
		s, err := p.run()
		// That the etree elements and the start tags of the position pass
		// match one to one is checked by internal/xmlpos's FuzzRead.
		if err != nil {
			if s != nil {
				t.Fatal("Server returned together with an error")
			}
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %T is not a non-empty Problems: %v", err, err)
			}
			for _, pr := range ps {
				if pr.File != "fuzz.xml" || pr.Line < 1 || pr.Msg == "" || strings.ContainsAny(pr.Msg, "\r\n") {
					t.Fatalf("bad problem %#v", pr)
				}
				if want := fmt.Sprintf("fuzz.xml:%d: %s", pr.Line, pr.Msg); pr.String() != want {
					t.Fatalf("String() = %q, want %q", pr.String(), want)
				}
			}
			return
		}
		if s == nil || len(s.Adapters) == 0 {
			t.Fatalf("accepted without adapters: %+v", s)
		}
		names := map[string]bool{}
		for _, a := range s.Adapters {
			if a.Name == "" || names[a.Name] || a.Line < 1 || a.Attributes == nil {
				t.Fatalf("bad adapter %+v", a)
			}
			names[a.Name] = true
			if err := bearers.ValidateType(a.Type); err != nil {
				t.Fatalf("accepted bad type: %v", err)
			}
			if back, err := bearers.ParseEndpoint(a.Address.String()); err != nil || back != a.Address {
				t.Fatalf("address %+v does not round-trip: %v", a.Address, err)
			}
			if scheme, stock := StockTypes[a.Type]; stock && a.Address.Scheme != scheme || !stock && a.Plugin == "" {
				t.Fatalf("accepted inconsistent adapter %+v", a)
			}
		}
		if s.RegistrationTimeout <= 0 || s.Plugins.StartTimeout <= 0 || s.Plugins.RestartBackoffMin <= 0 ||
			s.Plugins.RestartBackoffMin > s.Plugins.RestartBackoffMax {
			t.Fatalf("accepted bad durations: %+v", s)
		}
		if !contains(logLevels, s.Log.Level) || !contains(logFormats, s.Log.Format) {
			t.Fatalf("accepted bad log settings: %+v", s.Log)
		}
		for _, tok := range s.Auth.Tokens {
			if tok == "" || badTokenChars(tok) {
				t.Fatalf("accepted bad token %q", tok)
			}
		}
		// ApplyListen must not panic on whatever was accepted.
		_ = s.ApplyListen([]string{"tcp://127.0.0.1:1", "ws://[::1]:2/x"})
	})
}

// fuzzParser parses data as "fuzz.xml" without touching the file system.
func fuzzParser(data []byte) *parser {
	p := newParser("fuzz.xml", data)
	p.readToken = func(path string) (string, error) {
		if strings.Contains(path, "missing") {
			return "", errors.New("no such file or directory")
		}
		return "file-token", nil
	}
	return p
}

// TestFuzzSeeds keeps the seed corpus honest: seeds named valid_* parse,
// seeds named broken_* are rejected.
func TestFuzzSeeds(t *testing.T) {
	for _, seed := range testutil.ReadCorpus(t, filepath.Join("testdata", "fuzz", "FuzzParse")) {
		data := seed.Data
		_, err := fuzzParser(data).run()
		switch name := seed.Name; {
		case strings.HasPrefix(name, "valid_") && err != nil:
			t.Errorf("%s: %v", name, err)
		case strings.HasPrefix(name, "broken_") && err == nil:
			t.Errorf("%s: accepted", name)
		}
	}
}
