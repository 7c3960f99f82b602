package services

import (
	"bytes"
	"testing"
)

// benchArgs are the call method's arguments, 64 bytes encoded: the
// argument struct of the 64-byte call of the benchmarks in bench/.
func benchArgs(b *testing.B) map[string]any {
	args := map[string]any{
		"id":       int64(123456),
		"name":     "sensor-7",
		"position": []any{map[string]any{"x": 1.25, "y": -3.5}},
		"flags":    true,
		"payload":  bytes.Repeat([]byte{0xab}, 33),
	}
	enc, err := AppendArgs(nil, callArgs(b), args)
	if err != nil || len(enc) != 64 {
		b.Fatalf("the arguments encode to %d bytes, want 64: %v", len(enc), err)
	}
	return args
}

func BenchmarkAppendArgs64(b *testing.B) {
	fields, args := callArgs(b), benchArgs(b)
	buf := make([]byte, 0, 128)
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendArgs(buf[:0], fields, args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeArgs64(b *testing.B) {
	fields := callArgs(b)
	enc, _ := AppendArgs(nil, fields, benchArgs(b))
	b.SetBytes(64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeArgs(fields, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckArgs64(b *testing.B) {
	ty, args := typ(b, "args"), benchArgs(b)
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(ty, args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalJSONArgs64(b *testing.B) {
	ty, args := typ(b, "args"), benchArgs(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalJSON(ty, args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalJSONArgs64(b *testing.B) {
	ty := typ(b, "args")
	js, _ := MarshalJSON(ty, benchArgs(b))
	b.SetBytes(int64(len(js)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnmarshalJSON(ty, js); err != nil {
			b.Fatal(err)
		}
	}
}
