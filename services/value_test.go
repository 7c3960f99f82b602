package services

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/services/servicefile"
)

// roundTrips are canonical values of every kind with their binary encoding
// (hex, spaces ignored) and typed JSON.
var roundTrips = []struct {
	typ  string
	v    any
	bin  string
	json string
}{
	{"int", int64(0), "00", `0`},
	{"int", int64(-1), "01", `-1`},
	{"int", int64(1), "02", `1`},
	{"int", int64(63), "7e", `63`},
	{"int", int64(-64), "7f", `-64`},
	{"int", int64(64), "8001", `64`},
	{"int", int64(300), "d804", `300`},
	{"int", int64(math.MaxInt64), "feffffffffffffffff01", `9223372036854775807`},
	{"int", int64(math.MinInt64), "ffffffffffffffffff01", `-9223372036854775808`},
	{"int", int64(1<<53 + 1), "8280808080808020", `9007199254740993`},
	{"float", 0.0, "0000000000000000", `0`},
	{"float", math.Copysign(0, -1), "0000000000000080", `-0`},
	{"float", 1.5, "000000000000f83f", `1.5`},
	{"float", -2e10, "000000205fa012c2", `-20000000000`},
	{"float", 0.1, "9a9999999999b93f", `0.1`},
	{"float", 1e21, "50efe2d6e41a4b44", `1e+21`},
	{"float", 1e-7, "48afbc9af2d77a3e", `1e-7`},
	{"float", math.MaxFloat64, "ffffffffffffef7f", `1.7976931348623157e+308`},
	{"float", math.SmallestNonzeroFloat64, "0100000000000000", `5e-324`},
	{"bool", false, "00", `false`},
	{"bool", true, "01", `true`},
	{"string", "", "00", `""`},
	{"string", "héllo", "0668c3a96c6c6f", `"héllo"`},
	{"string", "a\"b\\c\n\t\x00<>&\u2028", "0e6122625c630a09003c3e26e280a8", `"a\"b\\c\n\t\u0000\u003c\u003e\u0026\u2028"`},
	{"binary", []byte{}, "00", `""`},
	{"binary", []byte{0, 1, 2, 0xff}, "04000102ff", `"AAEC/w=="`},
	{"int[]", list(), "00", `[]`},
	{"int[]", list(int64(1), int64(-1), int64(64)), "03 02 01 8001", `[1,-1,64]`},
	{"float[][]", list(list(1.5), list(), list(0.0, -1.0)), "03 01 000000000000f83f 00 02 0000000000000000 000000000000f0bf", `[[1.5],[],[0,-1]]`},
	{"string[]", list("a", ""), "02 0161 00", `["a",""]`},
	{"binary[]", list([]byte{1}, []byte{}), "02 0101 00", `["AQ==",""]`},
	{"bool[][][]", list(list(list(true)), list()), "02 01 01 01 00", `[[[true]],[]]`},
	{"Point", point(1.5, -1), "000000000000f83f 000000000000f0bf", `{"x":1.5,"y":-1}`},
	{"Empty", map[string]any{}, "", `{}`},
	{"Empty[]", list(map[string]any{}, map[string]any{}), "02", `[{},{}]`},
	{"Point[]", list(point(0, 0), point(1, 2)), "02 0000000000000000 0000000000000000 000000000000f03f 0000000000000040", `[{"x":0,"y":0},{"x":1,"y":2}]`},
	{"Track", track("Blue", 212.5, list("jazz", "live"), []byte{9}, 3, true),
		"04426c7565 0000000000906a40 02 046a617a7a 046c697665 0109 06 01",
		`{"title":"Blue","duration":212.5,"tags":["jazz","live"],"cover":"CQ==","plays":3,"liked":true}`},
	{"Nested", map[string]any{
		"points":  list(point(1, 1)),
		"matrix":  list(list(2.0)),
		"tracks":  list(track("", 0, list(), []byte{}, 0, false), track("x", 1, list("t"), []byte{1, 2}, -2, true)),
		"empties": list(map[string]any{}),
		"hole":    map[string]any{},
		"deep":    list(list(list(int64(1), int64(2))), list(list())),
	},
		"01 000000000000f03f 000000000000f03f" + // points
			"01 01 0000000000000040" + // matrix
			"02 00 0000000000000000 00 00 00 00" + // tracks[0]
			"0178 000000000000f03f 01 0174 020102 03 01" + // tracks[1]
			"01" + // empties; hole takes nothing
			"02 01 02 02 04 01 00", // deep
		`{"points":[{"x":1,"y":1}],"matrix":[[2]],"tracks":[{"title":"","duration":0,"tags":[],"cover":"","plays":0,"liked":false},` +
			`{"title":"x","duration":1,"tags":["t"],"cover":"AQI=","plays":-2,"liked":true}],"empties":[{}],"hole":{},"deep":[[[1,2]],[[]]]}`},
	{"data", map[string]any{"player": map[string]any{"volume": int64(50), "current": track("", 0, list(), []byte{}, 0, false), "queue": list()}, "online": true},
		"64 00 0000000000000000 00 00 00 00 00 01",
		`{"player":{"volume":50,"current":{"title":"","duration":0,"tags":[],"cover":"","plays":0,"liked":false},"queue":[]},"online":true}`},
	{"args", map[string]any{"id": int64(7), "name": "n", "position": list(point(0, 1)), "flags": false, "payload": []byte("p")},
		"0e 016e 01 0000000000000000 000000000000f03f 00 0170",
		`{"id":7,"name":"n","position":[{"x":0,"y":1}],"flags":false,"payload":"cA=="}`},
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTrips {
		ty := typ(t, tc.typ)
		want := mustHex(t, tc.bin)
		name := tc.typ + " " + tc.json
		if err := Check(ty, tc.v); err != nil {
			t.Errorf("%s: Check: %v", name, err)
			continue
		}
		n, err := Normalize(ty, tc.v)
		if err != nil || !reflect.DeepEqual(n, tc.v) {
			t.Errorf("%s: Normalize = %#v, %v", name, n, err)
		}
		prefix := []byte("prefix")
		enc, err := AppendValue(append([]byte(nil), prefix...), ty, tc.v)
		if err != nil {
			t.Errorf("%s: AppendValue: %v", name, err)
			continue
		}
		if !bytes.HasPrefix(enc, prefix) || !bytes.Equal(enc[len(prefix):], want) {
			t.Errorf("%s: AppendValue = % x, want prefix and % x", name, enc, want)
		}
		dec, err := DecodeValue(ty, want)
		if err != nil || !reflect.DeepEqual(dec, tc.v) {
			t.Errorf("%s: DecodeValue = %#v, %v", name, dec, err)
		}
		js, err := MarshalJSON(ty, tc.v)
		if err != nil || string(js) != tc.json {
			t.Errorf("%s: MarshalJSON = %s, %v; want %s", name, js, err, tc.json)
		}
		if !json.Valid(js) {
			t.Errorf("%s: MarshalJSON wrote invalid JSON %s", name, js)
		}
		back, err := UnmarshalJSON(ty, []byte(tc.json))
		if err != nil || !reflect.DeepEqual(back, tc.v) {
			t.Errorf("%s: UnmarshalJSON = %#v, %v", name, back, err)
		}
		text := FormatText(ty, tc.v)
		fromText, err := ParseText(ty, text)
		if err != nil || !reflect.DeepEqual(fromText, tc.v) {
			t.Errorf("%s: ParseText(FormatText = %q) = %#v, %v", name, text, fromText, err)
		}
	}
}

// TestJSONMatchesEncodingJSON checks the typed JSON of scalars against what
// encoding/json writes for the same Go value.
func TestJSONMatchesEncodingJSON(t *testing.T) {
	floats := []float64{0, 1, -1, 0.1, 1.5, 1e20, 1e21, 123456789012345678, 1e-6, 1e-7, 9.999999e-7, math.MaxFloat64,
		math.SmallestNonzeroFloat64, -1e-300, 3.14159, 2.5e-8}
	for _, f := range floats {
		got, err := MarshalJSON(typ(t, "float"), f)
		want, _ := json.Marshal(f)
		if err != nil || string(got) != string(want) {
			t.Errorf("float %v: %s, %v; encoding/json writes %s", f, got, err, want)
		}
	}
	strs := []string{"", "plain", "quote\"back\\", "\x00\x01\x1f\x7f", "<script>&", "\u2028\u2029", "日本語", "\b\f\n\r\t", "\ufffd"}
	for _, s := range strs {
		got, err := MarshalJSON(typ(t, "string"), s)
		want, _ := json.Marshal(s)
		if err != nil || string(got) != string(want) {
			t.Errorf("string %q: %s, %v; encoding/json writes %s", s, got, err, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	type myInt int16
	type myString string
	type myFloat float32
	type myBool bool
	type myBytes []byte
	tests := []struct {
		typ  string
		in   any
		want any
	}{
		{"int", 5, int64(5)},
		{"int", int8(-5), int64(-5)},
		{"int", int16(300), int64(300)},
		{"int", int32(-70000), int64(-70000)},
		{"int", uint8(255), int64(255)},
		{"int", uint16(65535), int64(65535)},
		{"int", uint32(1 << 31), int64(1 << 31)},
		{"int", uint(7), int64(7)},
		{"int", uint64(math.MaxInt64), int64(math.MaxInt64)},
		{"int", uintptr(9), int64(9)},
		{"int", myInt(-3), int64(-3)},
		{"int", json.Number("-9223372036854775808"), int64(math.MinInt64)},
		{"float", float32(1.5), 1.5},
		{"float", myFloat(0.25), 0.25},
		{"float", 3, 3.0},
		{"float", int64(1 << 53), float64(1 << 53)},
		{"float", uint64(1 << 63), float64(1 << 63)},
		{"float", json.Number("2.5e3"), 2500.0},
		{"bool", myBool(true), true},
		{"string", myString("x"), "x"},
		{"binary", myBytes{1, 2}, []byte{1, 2}},
		{"binary", [3]byte{1, 2, 3}, []byte{1, 2, 3}},
		{"binary", []byte(nil), []byte{}},
		{"int[]", []int64{1, 2}, list(int64(1), int64(2))},
		{"int[]", []int{1, 2}, list(int64(1), int64(2))},
		{"int[]", []uint8{7}, list(int64(7))},
		{"int[]", [2]int32{-1, 1}, list(int64(-1), int64(1))},
		{"int[]", []int(nil), list()},
		{"int[]", []any(nil), list()},
		{"int[]", list(1, int64(2)), list(int64(1), int64(2))},
		{"string[]", []string{"a", "b"}, list("a", "b")},
		{"float[][]", [][]float32{{1}, {}}, list(list(1.0), list())},
		{"float[][]", list([]float64{2}, list(3)), list(list(2.0), list(3.0))},
		{"Point", map[string]float64{"x": 1, "y": 2}, point(1, 2)},
		{"Point", map[myString]any{"x": 1, "y": float32(2)}, point(1, 2)},
		{"Point", map[string]any{"x": 1.0, "y": 2}, point(1, 2)},
		{"Empty", map[string]any(nil), map[string]any{}},
		{"Empty", map[string]int{}, map[string]any{}},
		{"Point[]", []map[string]float64{{"x": 1, "y": 2}}, list(point(1, 2))},
		{"Track", map[string]any{"title": myString("t"), "duration": 1, "tags": []string{"a"}, "cover": []byte(nil), "plays": 2, "liked": true},
			track("t", 1, list("a"), []byte{}, 2, true)},
	}
	for _, tc := range tests {
		ty := typ(t, tc.typ)
		got, err := Normalize(ty, tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Normalize(%s, %#v) = %#v, %v; want %#v", tc.typ, tc.in, got, err, tc.want)
			continue
		}
		if err := Check(ty, tc.in); err != nil {
			t.Errorf("Check(%s, %#v) = %v", tc.typ, tc.in, err)
		}
		// The encoders take the same values and write what the
		// canonical value gives.
		enc, err := AppendValue(nil, ty, tc.in)
		want, _ := AppendValue(nil, ty, tc.want)
		if err != nil || !bytes.Equal(enc, want) {
			t.Errorf("AppendValue(%s, %#v) = % x, %v; want % x", tc.typ, tc.in, enc, err, want)
		}
		js, err := MarshalJSON(ty, tc.in)
		wantJS, _ := MarshalJSON(ty, tc.want)
		if err != nil || !bytes.Equal(js, wantJS) {
			t.Errorf("MarshalJSON(%s, %#v) = %s, %v; want %s", tc.typ, tc.in, js, err, wantJS)
		}
		if got, want := FormatText(ty, tc.in), FormatText(ty, tc.want); got != want {
			t.Errorf("FormatText(%s, %#v) = %q, want %q", tc.typ, tc.in, got, want)
		}
	}
}

// TestNormalizeDoesNotModify checks that Normalize copies what it changes
// and returns a canonical value itself.
func TestNormalizeDoesNotModify(t *testing.T) {
	in := map[string]any{"x": 1, "y": 2.0}
	out, err := Normalize(typ(t, "Point"), in)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := in["x"].(int); !ok {
		t.Errorf("Normalize modified its input: %#v", in)
	}
	if !reflect.DeepEqual(out, point(1, 2)) {
		t.Errorf("Normalize = %#v", out)
	}
	l := list(int64(1), 2, int64(3))
	out, _ = Normalize(typ(t, "int[]"), l)
	if _, ok := l[1].(int); !ok || !reflect.DeepEqual(out, list(int64(1), int64(2), int64(3))) {
		t.Errorf("Normalize(%#v) = %#v", l, out)
	}
	canon := track("t", 1, list("a"), []byte{1}, 2, true)
	out, _ = Normalize(typ(t, "Track"), canon)
	if reflect.ValueOf(out).Pointer() != reflect.ValueOf(canon).Pointer() {
		t.Error("Normalize copied a canonical value")
	}
}

// TestValueErrors lists every error a Go value can get, with its exact
// message, from Check; Normalize, AppendValue, MarshalJSON and FormatText
// must agree.
func TestValueErrors(t *testing.T) {
	huge := make([]any, MaxEmptyValues+1)
	for i := range huge {
		huge[i] = map[string]any{}
	}
	tests := []struct {
		typ  string
		v    any
		kind error
		msg  string
	}{
		{"int", nil, ErrType, "value: want int, got nil"},
		{"int", "5", ErrType, `value: want int, got string "5"`},
		{"int", 1.0, ErrType, "value: want int, got float64 1"},
		{"int", true, ErrType, "value: want int, got bool true"},
		{"int", uint64(math.MaxInt64 + 1), ErrRange, "value: 9223372036854775808 is out of range for int (-9223372036854775808 to 9223372036854775807)"},
		{"int", uint(math.MaxUint64), ErrRange, "value: 18446744073709551615 is out of range for int (-9223372036854775808 to 9223372036854775807)"},
		{"int", json.Number("1.5"), ErrType, `value: want int, got json.Number "1.5"`},
		{"int", json.Number("9223372036854775808"), ErrRange, "value: 9223372036854775808 is out of range for int (-9223372036854775808 to 9223372036854775807)"},
		{"float", "1.5", ErrType, `value: want float, got string "1.5"`},
		{"float", math.NaN(), ErrRange, "value: NaN is not a float value (floats are finite)"},
		{"float", math.Inf(1), ErrRange, "value: +Inf is not a float value (floats are finite)"},
		{"float", float32(math.Inf(-1)), ErrRange, "value: -Inf is not a float value (floats are finite)"},
		{"float", int64(1<<53 + 1), ErrRange, "value: the integer 9007199254740993 has no exact float value; convert it yourself if rounding is meant"},
		{"float", int64(math.MaxInt64), ErrRange, "value: the integer 9223372036854775807 has no exact float value; convert it yourself if rounding is meant"},
		{"float", uint64(math.MaxUint64), ErrRange, "value: the integer 18446744073709551615 has no exact float value; convert it yourself if rounding is meant"},
		{"float", json.Number("x"), ErrType, `value: want float, got json.Number "x"`},
		{"float", json.Number("1e400"), ErrRange, "value: 1e400 is out of range for float (a 64-bit IEEE 754 number)"},
		{"bool", 1, ErrType, "value: want bool, got int 1"},
		{"string", []byte("x"), ErrType, "value: want string, got []uint8"},
		{"string", "ok\xffno", ErrInvalid, "value: not valid UTF-8 (byte 0xff at index 2)"},
		{"binary", "AAEC", ErrType, `value: want binary, got string "AAEC"`},
		{"binary", []int{1}, ErrType, "value: want binary, got []int"},
		{"int[]", 5, ErrType, "value: want int[], got int 5"},
		{"int[]", "abc", ErrType, `value: want int[], got string "abc"`},
		{"int[]", list(int64(1), "2"), ErrType, `[1]: want int, got string "2"`},
		{"int[]", nil, ErrType, "value: want int[], got nil"},
		{"float[][]", list(list(1.0), list(2.0, "x")), ErrType, `[1][1]: want float, got string "x"`},
		{"float[][]", list(1.0), ErrType, "[0]: want float[], got float64 1"},
		{"Point", []any{1.0, 2.0}, ErrType, "value: want Point, got []interface {}"},
		{"Point", struct{ X, Y float64 }{1, 2}, ErrType, "value: want Point, got struct { X float64; Y float64 }"},
		{"Point", map[int]any{1: 1}, ErrType, "value: want Point, got map[int]interface {}"},
		{"Point", map[string]any{"x": 1.0}, ErrMissingField, "y: missing field"},
		{"Point", map[string]any{}, ErrMissingField, "x: missing field"},
		{"Point", map[string]any(nil), ErrMissingField, "x: missing field"},
		{"Point", map[string]any{"x": 1.0, "y": 2.0, "z": 3.0, "a b": 1}, ErrUnknownField, `value: unknown field "a b" (known: x, y)`},
		{"Empty", map[string]any{"x": 1}, ErrUnknownField, `value: unknown field "x" (there are none)`},
		{"Point", map[string]any{"x": 1.0, "y": nil}, ErrType, "y: want float, got nil"},
		{"Point[]", list(point(1, 2), map[string]any{"x": "a", "y": 1.0}), ErrType, `[1].x: want float, got string "a"`},
		{"Track", track("t", 1, list("a", 7), nil, 0, false), ErrType, "tags[1]: want string, got int 7"},
		{"Nested", map[string]any{"points": list(), "matrix": list(), "tracks": list(track("t", 1, list(), nil, 0, false), track("t", 1, list("ok\xc0"), nil, 0, false)),
			"empties": list(), "hole": map[string]any{}, "deep": list()}, ErrInvalid, "tracks[1].tags[0]: not valid UTF-8 (byte 0xc0 at index 2)"},
		{"Nested", map[string]any{"points": list(), "matrix": list(), "tracks": list(), "empties": list(), "hole": map[string]any{}, "deep": list(list(list(1, "x")))},
			ErrType, `deep[0][0][1]: want int, got string "x"`},
		{"Empty[]", huge, ErrTooLarge, "[4096]: more than 4096 struct values that carry no data (no fields, or only such fields) in one value"},
		{"args", map[string]any{"id": 1, "name": "n", "position": list(point(0, 0), map[string]any{"x": 1.0, "y": "x"}), "flags": true, "payload": []byte{}},
			ErrType, `position[1].y: want float, got string "x"`},
	}
	for _, tc := range tests {
		ty := typ(t, tc.typ)
		err := Check(ty, tc.v)
		if err == nil {
			t.Errorf("Check(%s, %#v) = nil, want %s", tc.typ, tc.v, tc.msg)
			continue
		}
		checkError(t, err, "check", tc.kind, -1)
		if want := "services: check " + tc.msg; err.Error() != want {
			t.Errorf("Check(%s, %#v):\n got %s\nwant %s", tc.typ, tc.v, err, want)
		}
		if n, err2 := Normalize(ty, tc.v); n != nil || err2 == nil || err2.Error() != err.Error() {
			t.Errorf("Normalize(%s, %#v) = %v, %v; want %v", tc.typ, tc.v, n, err2, err)
		}
		dst := []byte("keep")
		out, err2 := AppendValue(dst, ty, tc.v)
		if err2 == nil || string(out) != "keep" {
			t.Errorf("AppendValue(%s, %#v) = %q, %v", tc.typ, tc.v, out, err2)
		} else {
			checkError(t, err2, "encode", tc.kind, -1)
			if want := "services: encode " + tc.msg; err2.Error() != want {
				t.Errorf("AppendValue(%s, %#v):\n got %s\nwant %s", tc.typ, tc.v, err2, want)
			}
		}
		if js, err2 := MarshalJSON(ty, tc.v); js != nil || err2 == nil || err2.Error() != "services: encode JSON "+tc.msg {
			t.Errorf("MarshalJSON(%s, %#v) = %s, %v", tc.typ, tc.v, js, err2)
		}
		if got, want := FormatText(ty, tc.v), "%!("+err.Error()+")"; got != want {
			t.Errorf("FormatText(%s, %#v) = %q, want %q", tc.typ, tc.v, got, want)
		}
	}
}

func TestBadTypes(t *testing.T) {
	cyclic := &servicefile.Type{Kind: servicefile.List}
	cyclic.Elem = cyclic
	deepValue := any(list())
	for range MaxDepth + 5 {
		deepValue = list(deepValue)
	}
	selfStruct := &servicefile.Type{Kind: servicefile.Struct}
	selfStruct.Fields = []*servicefile.Field{{Name: "me", Type: selfStruct}}
	tests := []struct {
		name string
		t    *servicefile.Type
		v    any
		kind error
		msg  string
	}{
		{"nil", nil, int64(1), ErrBadType, "value: invalid type: nil"},
		{"kind 0", &servicefile.Type{}, int64(1), ErrBadType, "value: invalid type: kind 0"},
		{"kind 99", &servicefile.Type{Kind: 99}, int64(1), ErrBadType, "value: invalid type: kind 99"},
		{"list without elem", &servicefile.Type{Kind: servicefile.List}, list(), ErrBadType, "value: invalid type: list without an element type"},
		{"nil field", &servicefile.Type{Kind: servicefile.Struct, Fields: []*servicefile.Field{nil}}, map[string]any{}, ErrBadType, "value: invalid type: field 0 is nil or has no type"},
		{"untyped field", &servicefile.Type{Kind: servicefile.Struct, Fields: []*servicefile.Field{{Name: "a"}}}, map[string]any{"a": 1}, ErrBadType, "value: invalid type: field 0 is nil or has no type"},
		{"nested nil", &servicefile.Type{Kind: servicefile.List, Elem: &servicefile.Type{}}, list(1), ErrBadType, "[0]: invalid type: kind 0"},
		{"cyclic list", cyclic, deepValue, ErrTooDeep, strings.Repeat("[0]", MaxDepth) + ": nested more than 100 levels deep"},
	}
	for _, tc := range tests {
		err := Check(tc.t, tc.v)
		if err == nil {
			t.Errorf("%s: Check = nil", tc.name)
			continue
		}
		checkError(t, err, "check", tc.kind, -1)
		if want := "services: check " + tc.msg; err.Error() != want {
			t.Errorf("%s: Check:\n got %s\nwant %s", tc.name, err, want)
		}
		if _, err := AppendValue(nil, tc.t, tc.v); err == nil || err.Error() != "services: encode "+tc.msg {
			t.Errorf("%s: AppendValue: %v", tc.name, err)
		}
		if _, err := MarshalJSON(tc.t, tc.v); err == nil {
			t.Errorf("%s: MarshalJSON: no error", tc.name)
		}
		in := []byte{1, 0}
		if tc.t == cyclic {
			in = bytes.Repeat([]byte{1}, 200)
		}
		if _, err := DecodeValue(tc.t, in); err == nil {
			t.Errorf("%s: DecodeValue: no error", tc.name)
		} else {
			checkError(t, err, "decode", nil, len(in))
		}
		if _, err := UnmarshalJSON(tc.t, []byte(`[[[[1]]]]`)); err == nil {
			t.Errorf("%s: UnmarshalJSON: no error", tc.name)
		} else {
			checkError(t, err, "decode JSON", nil, 9)
		}
		if _, err := ParseText(tc.t, `[1]`); err == nil {
			t.Errorf("%s: ParseText: no error", tc.name)
		}
		_ = DefaultValue(tc.t) // must not hang or panic
	}
	// A struct that contains itself decodes no bytes at all; the depth
	// limit stops it.
	if _, err := DecodeValue(selfStruct, nil); err == nil || !strings.HasSuffix(err.Error(), "nested more than 100 levels deep") {
		t.Errorf("self-containing struct: %v", err)
	}
	if _, err := DecodeValue(cyclic, bytes.Repeat([]byte{1}, 1000)); err == nil || !strings.HasSuffix(err.Error(), "at offset 100: nested more than 100 levels deep") {
		t.Errorf("cyclic list: %v", err)
	}
}

func TestDefaultValue(t *testing.T) {
	tests := []struct {
		typ  string
		want any
	}{
		{"int", int64(0)},
		{"float", 0.0},
		{"bool", false},
		{"string", ""},
		{"binary", []byte{}},
		{"Point[]", list()},
		{"Empty", map[string]any{}},
		{"Track", track("", 0, list(), []byte{}, 0, false)},
		{"Nested", map[string]any{"points": list(), "matrix": list(), "tracks": list(), "empties": list(), "hole": map[string]any{}, "deep": list()}},
		{"data", map[string]any{"player": map[string]any{"volume": int64(0), "current": track("", 0, list(), []byte{}, 0, false), "queue": list()}, "online": false}},
	}
	for _, tc := range tests {
		ty := typ(t, tc.typ)
		got := DefaultValue(ty)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DefaultValue(%s) = %#v, want %#v", tc.typ, got, tc.want)
		}
		if err := Check(ty, got); err != nil {
			t.Errorf("DefaultValue(%s) fails Check: %v", tc.typ, err)
		}
	}
	// Each call returns a new value.
	a := DefaultValue(typ(t, "Track")).(map[string]any)
	a["title"] = "changed"
	if b := DefaultValue(typ(t, "Track")).(map[string]any); b["title"] != "" {
		t.Error("DefaultValue shares maps between calls")
	}
	twice := &servicefile.Type{Kind: servicefile.Struct}
	twice.Fields = []*servicefile.Field{{Name: "a", Type: twice}, {Name: "b", Type: twice}}
	if DefaultValue(twice) != nil {
		t.Error("DefaultValue of a type with 2^100 values is not nil")
	}
	if _, err := DecodeValue(twice, nil); err == nil || !strings.HasSuffix(err.Error(), "nested more than 100 levels deep") {
		t.Errorf("DecodeValue: %v", err)
	}
	if DefaultValue(nil) != nil || DefaultValue(&servicefile.Type{}) != nil {
		t.Error("DefaultValue of an unusable type is not nil")
	}
}

// TestCheckDoesNotAllocate: checking and encoding a canonical value cost no
// allocation (but growing the buffer).
func TestCheckDoesNotAllocate(t *testing.T) {
	ty := typ(t, "Track")
	v := track("Blue", 212.5, list("jazz", "live"), []byte{9}, 3, true)
	if n := testing.AllocsPerRun(100, func() { _ = Check(ty, v) }); n != 0 {
		t.Errorf("Check allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = Normalize(ty, v) }); n != 0 {
		t.Errorf("Normalize of a canonical value allocates %v times", n)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { _, _ = AppendValue(buf[:0], ty, v) }); n != 0 {
		t.Errorf("AppendValue allocates %v times", n)
	}
}
