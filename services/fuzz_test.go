package services

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/services/servicefile"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz")

// fuzzTypes are the types the fuzz targets decode; the first byte of a
// fuzz input picks one (modulo their number). Append only: the committed
// seeds name types by index.
var fuzzTypes = []string{"int", "float", "bool", "string", "binary", "int[]", "float[][]", "string[]", "bool[][][]",
	"binary[]", "Point", "Empty", "Empty[]", "Empty[][]", "Point[]", "Track", "Nested", "args", "data"}

func fuzzType(tb testing.TB, data []byte) (*servicefile.Type, []byte) {
	return typ(tb, fuzzTypes[int(data[0])%len(fuzzTypes)]), data[1:]
}

func typeIndex(tb testing.TB, name string) byte {
	for i, n := range fuzzTypes {
		if n == name {
			return byte(i)
		}
	}
	tb.Fatalf("type %q is not in fuzzTypes", name)
	return 0
}

// FuzzDecodeValue decodes bytes as a value of one of fuzzTypes. It must
// never panic; it fails with an *Error whose offset lies in the input, or
// gives a value that passes Check, re-encodes to the very same bytes
// (the encoding is canonical) and survives typed JSON.
func FuzzDecodeValue(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ty, in := fuzzType(t, data)
		v, err := DecodeValue(ty, in)
		if err != nil {
			if v != nil {
				t.Fatalf("value %#v returned with error %v", v, err)
			}
			checkError(t, err, "decode", nil, len(in))
			return
		}
		if err := Check(ty, v); err != nil {
			t.Fatalf("decoded %#v fails Check: %v", v, err)
		}
		enc, err := AppendValue(nil, ty, v)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", v, err)
		}
		if !bytes.Equal(enc, in) {
			t.Fatalf("re-encoding differs:\n% x\n% x", enc, in)
		}
		if ty.Kind == servicefile.Struct && ty.Name == "" {
			m, err := DecodeArgs(ty.Fields, in)
			if err != nil || !reflect.DeepEqual(m, v) {
				t.Fatalf("DecodeArgs = %#v, %v; DecodeValue gave %#v", m, err, v)
			}
		}
		js, err := MarshalJSON(ty, v)
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		back, err := UnmarshalJSON(ty, js)
		if err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("JSON round trip of %s: %#v, %v", js, back, err)
		}
	})
}

// FuzzUnmarshalJSON parses a document as a value of one of fuzzTypes. It
// must never panic; it fails with an *Error whose offset lies in the input,
// or accepts valid JSON only and gives a value that passes Check, whose
// typed JSON is a fixed point (canonical) and whose binary encoding decodes
// back to it.
func FuzzUnmarshalJSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ty, in := fuzzType(t, data)
		v, err := UnmarshalJSON(ty, in)
		if err != nil {
			if v != nil {
				t.Fatalf("value %#v returned with error %v", v, err)
			}
			checkError(t, err, "decode JSON", nil, len(in))
			return
		}
		if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q", in)
		}
		if err := Check(ty, v); err != nil {
			t.Fatalf("decoded %#v fails Check: %v", v, err)
		}
		js, err := MarshalJSON(ty, v)
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		if !json.Valid(js) {
			t.Fatalf("MarshalJSON wrote invalid JSON %q", js)
		}
		back, err := UnmarshalJSON(ty, js)
		if err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("round trip of %s: %#v, %v", js, back, err)
		}
		if js2, _ := MarshalJSON(ty, back); !bytes.Equal(js2, js) {
			t.Fatalf("typed JSON is not canonical:\n%s\n%s", js, js2)
		}
		enc, err := AppendValue(nil, ty, v)
		if err != nil {
			t.Fatalf("AppendValue: %v", err)
		}
		if dec, err := DecodeValue(ty, enc); err != nil || !reflect.DeepEqual(dec, v) {
			t.Fatalf("binary round trip: %#v, %v", dec, err)
		}
	})
}

// seedCorpus returns the committed seeds of each fuzz target: the round
// trips and the error cases of the tests, each behind its type's index.
func seedCorpus(tb testing.TB) map[string]map[string][]byte {
	bin := map[string][]byte{}
	js := map[string][]byte{}
	name := func(prefix string, i int, typ string) string {
		r := strings.NewReplacer("[]", "s")
		return fmt.Sprintf("seed-%s%02d-%s", prefix, i, r.Replace(typ))
	}
	for i, tc := range roundTrips {
		idx := typeIndex(tb, tc.typ)
		bin[name("", i, tc.typ)] = append([]byte{idx}, mustHex(tb, tc.bin)...)
		js[name("", i, tc.typ)] = append([]byte{idx}, tc.json...)
	}
	for i, tc := range decodeErrorSeeds {
		bin[name("bad", i, tc[0])] = append([]byte{typeIndex(tb, tc[0])}, mustHex(tb, tc[1])...)
	}
	for i, tc := range jsonSeeds {
		js[name("json", i, tc[0])] = append([]byte{typeIndex(tb, tc[0])}, tc[1]...)
	}
	return map[string]map[string][]byte{"FuzzDecodeValue": bin, "FuzzUnmarshalJSON": js}
}

// decodeErrorSeeds are malformed encodings: type and hex.
var decodeErrorSeeds = [][2]string{
	{"int", "8000"},
	{"int", "ffffffffffffffffff02"},
	{"float", "000000000000f87f"},
	{"bool", "02"},
	{"string", "03 61 ff 62"},
	{"string", "ffffffffffffffffff01"},
	{"int[]", "ffffffff0f 02"},
	{"Empty[]", "ffffffffffffffffff01"},
	{"Empty[][]", "02 8020 01"},
	{"Point[]", "02 000000000000f83f 000000000000f83f 000000000000f83f 0000"},
	{"Nested", "00 00 00 00 01 01 02 02 8000"},
	{"args", "0e 016e 00 01 00 ff"},
}

// jsonSeeds are other documents: type and JSON.
var jsonSeeds = [][2]string{
	{"int", `"9007199254740993"`},
	{"int", `9223372036854775808`},
	{"int", `1.5`},
	{"float", `1e400`},
	{"string", `"\ud83d\ude00\u0000\n"`},
	{"string", `"\ud83d"`},
	{"binary", `"AAEC/w="`},
	{"int[]", ` [ 1 , "2" ] `},
	{"int[]", `[1,]`},
	{"Point", `{"y":2,"x":1}`},
	{"Point", `{"x":1,"x":2}`},
	{"Point", `{"x":1,"y":2,"z":3}`},
	{"Point", `{"x":1}`},
	{"Track", `{"title":"t","duration":1,"tags":["a"],"cover":"AQI=","plays":-2,"liked":true}`},
	{"data", `{"player":{"volume":50,"current":{"title":"","duration":0,"tags":[],"cover":"","plays":0,"liked":false},"queue":[]},"online":true}`},
}

func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// TestSeedCorpus checks that testdata/fuzz holds the seeds seedCorpus
// generates, and nothing stale. Run with -update-corpus to rewrite them:
//
//	go test ./services -run TestSeedCorpus -update-corpus
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range seedCorpus(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			old, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
			for _, p := range old {
				os.Remove(p)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			want := corpusFile(data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (run go test ./services -run TestSeedCorpus -update-corpus): %v", path, err)
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "seed-*"))
		for _, p := range files {
			if _, ok := seeds[filepath.Base(p)]; !ok {
				t.Errorf("%s is not a generated seed (run with -update-corpus)", p)
			}
		}
	}
}
