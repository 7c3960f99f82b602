package services

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/services/servicefile"
)

// TestDecodeErrors lists every way bytes can fail to be a value, with the
// exact message.
func TestDecodeErrors(t *testing.T) {
	f15 := "000000000000f83f" // 1.5
	tests := []struct {
		typ  string
		hex  string
		kind error
		msg  string
	}{
		{"int", "", ErrTruncated, "value at offset 0: int: input ends before it"},
		{"int", "80", ErrTruncated, "value at offset 0: int: varint ends after 1 bytes"},
		{"int", "8080", ErrTruncated, "value at offset 0: int: varint ends after 2 bytes"},
		{"int", "8000", ErrInvalid, "value at offset 0: int: non-minimal varint"},
		{"int", "ffffffffffffffffff02", ErrInvalid, "value at offset 0: int: varint overflows 64 bits"},
		{"int", "ffffffffffffffffff80", ErrInvalid, "value at offset 0: int: varint overflows 64 bits"},
		{"int", "0000", ErrTrailingData, "value at offset 1: 1 bytes after the value"},
		{"float", "000000000000f8", ErrTruncated, "value at offset 0: float needs 8 bytes, 7 left"},
		{"float", "000000000000f87f", ErrRange, "value at offset 0: NaN is not a float value (floats are finite)"},
		{"float", "010000000000f07f", ErrRange, "value at offset 0: NaN is not a float value (floats are finite)"},
		{"float", "000000000000f07f", ErrRange, "value at offset 0: +Inf is not a float value (floats are finite)"},
		{"float", "000000000000f0ff", ErrRange, "value at offset 0: -Inf is not a float value (floats are finite)"},
		{"bool", "", ErrTruncated, "value at offset 0: bool needs 1 byte, none left"},
		{"bool", "02", ErrInvalid, "value at offset 0: bool byte 0x02 is not 0 or 1"},
		{"bool", "ff", ErrInvalid, "value at offset 0: bool byte 0xff is not 0 or 1"},
		{"string", "", ErrTruncated, "value at offset 0: string length: input ends before it"},
		{"string", "0561", ErrTruncated, "value at offset 0: string of 5 bytes, only 1 left"},
		{"string", "ffffffffffffffffff01", ErrTruncated, "value at offset 0: string of 18446744073709551615 bytes, only 0 left"},
		{"string", "8100", ErrInvalid, "value at offset 0: string length: non-minimal varint"},
		{"string", "03 61 ff 62", ErrInvalid, "value at offset 2: string is not valid UTF-8 (byte 0xff)"},
		{"string", "02 c3 28", ErrInvalid, "value at offset 1: string is not valid UTF-8 (byte 0xc3)"},
		{"string", "03 ed a0 80", ErrInvalid, "value at offset 1: string is not valid UTF-8 (byte 0xed)"}, // a surrogate
		{"string", "0161 00", ErrTrailingData, "value at offset 2: 1 bytes after the value"},
		{"binary", "04 0102", ErrTruncated, "value at offset 0: binary of 4 bytes, only 2 left"},
		{"binary", "80", ErrTruncated, "value at offset 0: binary length: varint ends after 1 bytes"},
		{"int[]", "", ErrTruncated, "value at offset 0: list count: input ends before it"},
		{"int[]", "03 02 02", ErrTruncated, "value at offset 0: list of 3 elements, only 2 bytes left"},
		{"int[]", "02 02 80", ErrTruncated, "[1] at offset 2: int: varint ends after 1 bytes"},
		{"int[]", "ffffffff0f 02", ErrTruncated, "value at offset 0: list of 4294967295 elements, only 1 bytes left"},
		{"int[]", "ffffffffffffffffff01 02", ErrTruncated, "value at offset 0: list of 18446744073709551615 elements, only 1 bytes left"},
		{"int[]", "02 02 8000", ErrInvalid, "[1] at offset 2: int: non-minimal varint"},
		{"float[][]", "02 01" + f15 + "02" + f15, ErrTruncated, "[1][1] at offset 19: float needs 8 bytes, 0 left"},
		{"Point", f15, ErrTruncated, "y at offset 8: float needs 8 bytes, 0 left"},
		{"Point[]", "02" + f15 + f15 + f15 + "0000", ErrTruncated, "[1].y at offset 25: float needs 8 bytes, 2 left"},
		{"Track", "0161" + f15 + "02 0161 01ff", ErrInvalid, "tags[1] at offset 14: string is not valid UTF-8 (byte 0xff)"},
		{"Track", "0161" + f15 + "00 00 00 02", ErrInvalid, "liked at offset 13: bool byte 0x02 is not 0 or 1"},
		{"Nested", "00 00 00 03", ErrTruncated, "deep at offset 4: list count: input ends before it"},
		{"Nested", "00 00 00 00 01 01 02 02 8000", ErrInvalid, "deep[0][0][1] at offset 8: int: non-minimal varint"},
		{"Empty", "00", ErrTrailingData, "value at offset 0: 1 bytes after the value"},
		{"Empty[]", "ffffffffffffffffff01", ErrTooLarge, "value at offset 0: more than 4096 struct values that carry no data (no fields, or only such fields) in one value"},
		{"Empty[]", "8120", ErrTooLarge, "value at offset 0: more than 4096 struct values that carry no data (no fields, or only such fields) in one value"},
		{"Empty[][]", "02 8020 01", ErrTooLarge, "[1][0] at offset 4: more than 4096 struct values that carry no data (no fields, or only such fields) in one value"},
	}
	for _, tc := range tests {
		ty := typ(t, tc.typ)
		in := mustHex(t, tc.hex)
		v, err := DecodeValue(ty, in)
		if err == nil {
			t.Errorf("DecodeValue(%s, %s) = %#v, want error %s", tc.typ, tc.hex, v, tc.msg)
			continue
		}
		if v != nil {
			t.Errorf("DecodeValue(%s, %s) returned %#v with its error", tc.typ, tc.hex, v)
		}
		checkError(t, err, "decode", tc.kind, len(in))
		if want := "services: decode " + tc.msg; err.Error() != want {
			t.Errorf("DecodeValue(%s, %s):\n got %s\nwant %s", tc.typ, tc.hex, err, want)
		}
	}
}

// TestEmptyElements: elements that carry no data are limited to
// MaxEmptyValues per value, on encode and decode alike.
func TestEmptyElements(t *testing.T) {
	empty := func(n int) []any {
		l := make([]any, n)
		for i := range l {
			l[i] = map[string]any{}
		}
		return l
	}
	ty := typ(t, "Empty[]")
	enc, err := AppendValue(nil, ty, empty(MaxEmptyValues))
	if err != nil {
		t.Fatal(err)
	}
	if want := binary.AppendUvarint(nil, MaxEmptyValues); !bytes.Equal(enc, want) {
		t.Fatalf("encoding % x, want % x", enc, want)
	}
	if v, err := DecodeValue(ty, enc); err != nil || len(v.([]any)) != MaxEmptyValues {
		t.Fatalf("DecodeValue: %v", err)
	}
	// Across lists: 2048 + 2049 is one too many.
	tt := typ(t, "Empty[][]")
	v := list(empty(2048), empty(2049))
	if _, err := AppendValue(nil, tt, v); err == nil || err.Error() != "services: encode [1][2048]: more than 4096 struct values that carry no data (no fields, or only such fields) in one value" {
		t.Errorf("AppendValue: %v", err)
	}
	if err := Check(tt, v); err == nil || err.Error() != "services: check [1][2048]: more than 4096 struct values that carry no data (no fields, or only such fields) in one value" {
		t.Errorf("Check: %v", err)
	}
	if _, err := MarshalJSON(tt, v); err == nil {
		t.Error("MarshalJSON: no error")
	}
	js := "[" + strings.Repeat("{},", 2047) + "{}],[" + strings.Repeat("{},", 2048) + "{}]"
	if _, err := UnmarshalJSON(tt, []byte("["+js+"]")); err == nil || !strings.HasPrefix(err.Error(), "services: decode JSON [1][2048] at offset") {
		t.Errorf("UnmarshalJSON: %v", err)
	}
	in := append(binary.AppendUvarint([]byte{2}, 2048), binary.AppendUvarint(nil, 2049)...)
	if _, err := DecodeValue(tt, in); err == nil || err.Error() != "services: decode [1] at offset 3: more than 4096 struct values that carry no data (no fields, or only such fields) in one value" {
		t.Errorf("DecodeValue: %v", err)
	}
	// A struct with a list is not empty, however empty the list.
	lt := &servicefile.Type{Kind: servicefile.List, Elem: &servicefile.Type{Kind: servicefile.Struct,
		Fields: []*servicefile.Field{{Name: "l", Type: ty}}}}
	many := make([]any, MaxEmptyValues+10)
	for i := range many {
		many[i] = map[string]any{"l": list()}
	}
	enc, err = AppendValue(nil, lt, many)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeValue(lt, enc); err != nil {
		t.Fatal(err)
	}
}

// TestDecodeAllocation: a count or length the input cannot hold is
// rejected before anything is allocated for it.
func TestDecodeAllocation(t *testing.T) {
	for _, tc := range []struct {
		typ string
		in  []byte
	}{
		{"binary", binary.AppendUvarint(nil, 1<<40)},
		{"string", binary.AppendUvarint(nil, 1<<40)},
		{"int[]", append(binary.AppendUvarint(nil, 1<<40), 0)},
		{"Point[]", append(binary.AppendUvarint(nil, 1<<40), make([]byte, 16)...)},
	} {
		ty := typ(t, tc.typ)
		allocs := testing.AllocsPerRun(10, func() {
			if _, err := DecodeValue(ty, tc.in); err == nil {
				t.Fatalf("%s: no error", tc.typ)
			}
		})
		if allocs > 12 {
			t.Errorf("%s: %v allocations for a rejected length", tc.typ, allocs)
		}
	}
}

func TestArgs(t *testing.T) {
	fields := callArgs(t)
	args := map[string]any{"id": 7, "name": "n", "position": []map[string]any{{"x": 0, "y": 1}}, "flags": false, "payload": []byte("p")}
	enc, err := AppendArgs([]byte{0xaa}, fields, args)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, "aa 0e 016e 01 0000000000000000 000000000000f03f 00 0170"); !bytes.Equal(enc, want) {
		t.Fatalf("AppendArgs = % x, want % x", enc, want)
	}
	got, err := DecodeArgs(fields, enc[1:])
	want := map[string]any{"id": int64(7), "name": "n", "position": list(point(0, 1)), "flags": false, "payload": []byte("p")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeArgs = %#v, %v", got, err)
	}
	// The same bytes as a struct of those fields.
	if v, err := AppendValue(nil, typ(t, "args"), want); err != nil || !bytes.Equal(v, enc[1:]) {
		t.Errorf("AppendValue of the args struct = % x, %v", v, err)
	}
	// No arguments: no bytes.
	if b, err := AppendArgs(nil, nil, map[string]any{}); err != nil || len(b) != 0 {
		t.Errorf("AppendArgs(no args) = % x, %v", b, err)
	}
	if m, err := DecodeArgs(nil, nil); err != nil || m == nil || len(m) != 0 {
		t.Errorf("DecodeArgs(no args) = %#v, %v", m, err)
	}
	if b, err := AppendArgs(nil, nil, nil); err != nil || len(b) != 0 {
		t.Errorf("AppendArgs(nil map) = % x, %v", b, err)
	}

	encodeErrors := []struct {
		args map[string]any
		kind error
		msg  string
	}{
		{map[string]any{"id": 1}, ErrMissingField, "args.name: missing argument"},
		{nil, ErrMissingField, "args.id: missing argument"},
		{map[string]any{"id": 1, "name": "n", "position": list(), "flags": true, "payload": []byte{}, "speed": 2}, ErrUnknownField,
			`args: unknown argument "speed" (known: id, name, position, flags, payload)`},
		{map[string]any{"id": 1, "name": "n", "position": list(point(0, 0), point(1, 2), map[string]any{"x": 1.0, "y": "2"}), "flags": true, "payload": []byte{}},
			ErrType, `args.position[2].y: want float, got string "2"`},
		{map[string]any{"id": "1"}, ErrType, `args.id: want int, got string "1"`},
	}
	for _, tc := range encodeErrors {
		out, err := AppendArgs([]byte("keep"), fields, tc.args)
		if err == nil || string(out) != "keep" {
			t.Errorf("AppendArgs(%v) = %q, %v", tc.args, out, err)
			continue
		}
		checkError(t, err, "encode", tc.kind, -1)
		if want := "services: encode " + tc.msg; err.Error() != want {
			t.Errorf("AppendArgs(%v):\n got %s\nwant %s", tc.args, err, want)
		}
	}

	decodeErrors := []struct {
		hex  string
		kind error
		msg  string
	}{
		{"", ErrTruncated, "args.id at offset 0: int: input ends before it"},
		{"0e 05", ErrTruncated, "args.name at offset 1: string of 5 bytes, only 0 left"},
		{"0e 016e 02 0000000000000000 000000000000f03f 00", ErrTruncated, "args.position[1].x at offset 20: float needs 8 bytes, 1 left"},
		{"0e 016e 00 02 00", ErrInvalid, "args.flags at offset 4: bool byte 0x02 is not 0 or 1"},
		{"0e 016e 00 01 00 ff", ErrTrailingData, "args at offset 6: 1 bytes after the value"},
	}
	for _, tc := range decodeErrors {
		in := mustHex(t, tc.hex)
		m, err := DecodeArgs(fields, in)
		if err == nil || m != nil {
			t.Errorf("DecodeArgs(%s) = %#v, %v", tc.hex, m, err)
			continue
		}
		checkError(t, err, "decode", tc.kind, len(in))
		if want := "services: decode " + tc.msg; err.Error() != want {
			t.Errorf("DecodeArgs(%s):\n got %s\nwant %s", tc.hex, err, want)
		}
	}
}

// TestDeepestServiceFile builds the most deeply nested runtime data a
// service file can declare and requires every function to handle it: the
// limits of this package sit above those of servicefile.
func TestDeepestServiceFile(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<service name="deep" version="1.0">` + "\n")
	// A chain of structs 32 levels deep (S31 holds an int).
	for i := 0; i < 31; i++ {
		if i == 30 {
			fmt.Fprintf(&b, `<struct name="S%d"><field name="f" type="int"/></struct>`+"\n", i)
			continue
		}
		fmt.Fprintf(&b, `<struct name="S%d"><field name="f" type="S%d"/></struct>`+"\n", i, i+1)
	}
	fmt.Fprintf(&b, `<method name="m"><arg name="a" type="S0[][][][][][][][]"/></method>`+"\n")
	b.WriteString("<data>")
	objects := 29 // element nesting: service, data, 29 objects, list = 32
	for i := 0; i < objects; i++ {
		fmt.Fprintf(&b, `<object name="o%d">`, i)
	}
	b.WriteString(`<list name="l" type="S0[][][][][][][]"/>`)
	for i := 0; i < objects; i++ {
		b.WriteString("</object>")
	}
	b.WriteString("</data></service>")
	s, err := servicefile.Parse("deep.xml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	depth := func(t *servicefile.Type) int {
		d := 0
		for t != nil {
			d++
			switch {
			case t.Kind == servicefile.List:
				t = t.Elem
			case t.Kind == servicefile.Struct && len(t.Fields) > 0:
				t = t.Fields[0].Type
			default:
				t = nil
			}
		}
		return d
	}
	// The deepest value of a type: every list holds one element.
	var deepest func(t *servicefile.Type) any
	deepest = func(t *servicefile.Type) any {
		switch t.Kind {
		case servicefile.List:
			return list(deepest(t.Elem))
		case servicefile.Struct:
			m := map[string]any{}
			for _, f := range t.Fields {
				m[f.Name] = deepest(f.Type)
			}
			return m
		}
		return DefaultValue(t)
	}
	argsType := &servicefile.Type{Kind: servicefile.Struct, Fields: s.Method("m").Args}
	for _, ty := range []*servicefile.Type{s.Data.Type, argsType} {
		d := depth(ty)
		if d > MaxDepth || d < 40 {
			t.Fatalf("depth %d", d)
		}
		t.Logf("%s: depth %d", ty, d)
		v := deepest(ty)
		enc, err := AppendValue(nil, ty, v)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := DecodeValue(ty, enc)
		if err != nil || !reflect.DeepEqual(dec, v) {
			t.Fatalf("DecodeValue: %v", err)
		}
		js, err := MarshalJSON(ty, v)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := UnmarshalJSON(ty, js); err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("UnmarshalJSON: %v", err)
		}
		if err := Check(ty, DefaultValue(ty)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWideTypes: a service file may declare a struct of many fields of a
// struct of many fields ..., whose values are exponentially large. Values
// that carry data are bounded by the input; those that carry none by
// MaxEmptyValues; DefaultValue gives up beyond a million values.
func TestWideTypes(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<service name="wide" version="1.0">`)
	for _, kind := range []string{"E", "N"} {
		for i := 0; i < 10; i++ {
			fmt.Fprintf(&b, `<struct name="%s%d">`, kind, i)
			for j := 0; j < 16; j++ {
				switch {
				case i < 9:
					fmt.Fprintf(&b, `<field name="f%d" type="%s%d"/>`, j, kind, i+1)
				case kind == "N":
					fmt.Fprintf(&b, `<field name="f%d" type="int"/>`, j)
				}
			}
			b.WriteString(`</struct>`)
		}
	}
	b.WriteString(`<struct name="Pair"><field name="a" type="E9"/><field name="b" type="E9"/></struct>`)
	b.WriteString(`</service>`)
	s, err := servicefile.Parse("wide.xml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	e0, n0 := s.Type("E0"), s.Type("N0")
	if v := DefaultValue(e0); v != nil {
		t.Error("DefaultValue of a 16^9-value type is not nil")
	}
	if v := DefaultValue(n0); v != nil {
		t.Error("DefaultValue of a 16^10-value type is not nil")
	}
	if v := DefaultValue(s.Type("E5")); v == nil { // 16^4 + ... values: fine
		t.Error("DefaultValue(E5) is nil")
	}
	_, err = DecodeValue(e0, nil)
	checkError(t, err, "decode", ErrTooLarge, 0)
	_, err = DecodeValue(n0, bytes.Repeat([]byte{2}, 1000))
	checkError(t, err, "decode", ErrTruncated, 1000)
	_, err = UnmarshalJSON(e0, []byte(`{}`))
	checkError(t, err, "decode JSON", ErrMissingField, 2)

	// A list of a struct of two empty structs: each element counts 3.
	pairs := &servicefile.Type{Kind: servicefile.List, Elem: s.Type("Pair")}
	pair := map[string]any{"a": map[string]any{}, "b": map[string]any{}}
	ok := make([]any, MaxEmptyValues/3)
	for i := range ok {
		ok[i] = pair
	}
	enc, err := AppendValue(nil, pairs, ok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeValue(pairs, enc); err != nil {
		t.Fatal(err)
	}
	tooMany := append(ok, pair)
	_, err = AppendValue(nil, pairs, tooMany)
	checkError(t, err, "encode", ErrTooLarge, -1)
	if err := Check(pairs, tooMany); err == nil {
		t.Error("Check: no error")
	}
	in := binary.AppendUvarint(nil, uint64(len(tooMany)))
	_, err = DecodeValue(pairs, in)
	if e := checkError(t, err, "decode", ErrTooLarge, len(in)); e.Path != "" || e.Offset != 0 {
		t.Errorf("DecodeValue: %v", err)
	}
}
