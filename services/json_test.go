package services

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

// TestUnmarshalJSON lists accepted inputs that are not the canonical
// output: white space, ints as strings, escapes.
func TestUnmarshalJSON(t *testing.T) {
	tests := []struct {
		typ  string
		in   string
		want any
	}{
		{"int", " 42 ", int64(42)},
		{"int", "-0", int64(0)},
		{"int", `"9007199254740993"`, int64(1<<53 + 1)},
		{"int", "9007199254740993", int64(1<<53 + 1)},
		{"int", `"-9223372036854775808"`, int64(math.MinInt64)},
		{"int", `"+7"`, int64(7)},
		{"float", "1", 1.0},
		{"float", "-0.0", math.Copysign(0, -1)},
		{"float", "1E3", 1000.0},
		{"float", "2.5e-3", 0.0025},
		{"float", "1e-400", 0.0}, // underflow rounds to zero
		{"float", "0.30000000000000004", 0.30000000000000004},
		{"bool", "\ttrue\r\n", true},
		{"string", `"\u00e9\/\b\f\n\r\t\"\\"`, "é/\b\f\n\r\t\"\\"},
		{"string", `"\ud83d\ude00 x"`, "😀 x"},
		{"string", `"\uD83D\uDE00"`, "😀"},
		{"string", `"\u0000"`, "\x00"},
		{"string", `"\ufffd"`, "\ufffd"},
		{"string", `"日本"`, "日本"},
		{"binary", `""`, []byte{}},
		{"binary", `"AAEC/w=="`, []byte{0, 1, 2, 0xff}},
		{"int[]", " [ 1 , 2 ] ", list(int64(1), int64(2))},
		{"int[]", "[\n]", list()},
		{"int[]", `[1,"2"]`, list(int64(1), int64(2))},
		{"Point", `{ "y" : 2 , "x" : 1 }`, point(1, 2)},
		{"Point", `{"\u0078":1,"y":2}`, point(1, 2)},
		{"Empty", "{ }", map[string]any{}},
		{"Point[]", `[{"x":1,"y":2},{"y":0,"x":0}]`, list(point(1, 2), point(0, 0))},
	}
	for _, tc := range tests {
		got, err := UnmarshalJSON(typ(t, tc.typ), []byte(tc.in))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("UnmarshalJSON(%s, %s) = %#v, %v; want %#v", tc.typ, tc.in, got, err, tc.want)
		}
		if !json.Valid([]byte(tc.in)) {
			t.Errorf("%s is not valid JSON, yet accepted", tc.in)
		}
	}
}

// TestUnmarshalJSONErrors lists every error with its exact message.
func TestUnmarshalJSONErrors(t *testing.T) {
	tests := []struct {
		typ  string
		in   string
		kind error
		msg  string
	}{
		{"int", "", ErrTruncated, "value at offset 0: JSON ends where a value (int) should begin"},
		{"int", "   ", ErrTruncated, "value at offset 3: JSON ends where a value (int) should begin"},
		{"int", "1.5", ErrType, "value at offset 0: want int, got number 1.5 (an int has no fraction or exponent)"},
		{"int", "1e2", ErrType, "value at offset 0: want int, got number 1e2 (an int has no fraction or exponent)"},
		{"int", "9223372036854775808", ErrRange, "value at offset 0: 9223372036854775808 is out of range for int (-9223372036854775808 to 9223372036854775807)"},
		{"int", `"9223372036854775808"`, ErrRange, `value at offset 0: "9223372036854775808" is out of range for int (-9223372036854775808 to 9223372036854775807)`},
		{"int", `"12abc"`, ErrInvalid, `value at offset 0: "12abc" is not an int (a decimal integer, like -42)`},
		{"int", `" 1"`, ErrInvalid, `value at offset 0: " 1" is not an int (a decimal integer, like -42)`},
		{"int", "true", ErrType, "value at offset 0: want int, got bool"},
		{"int", "null", ErrType, "value at offset 0: want int, got null"},
		{"int", "[1]", ErrType, "value at offset 0: want int, got array"},
		{"int", "{}", ErrType, "value at offset 0: want int, got object"},
		{"int", "01", ErrTrailingData, "value at offset 1: character '1' after the value"},
		{"int", "1 2", ErrTrailingData, "value at offset 2: character '2' after the value"},
		{"int", "-", ErrTruncated, "value at offset 1: JSON ends in a number (want a digit)"},
		{"int", "-x", ErrInvalid, "value at offset 1: invalid JSON: character 'x' in a number (want a digit)"},
		{"int", "+1", ErrInvalid, "value at offset 0: invalid JSON: character '+' where a value should begin"},
		{"int", "tru", ErrInvalid, "value at offset 0: invalid JSON: character 't' where a value should begin"},
		{"int", "\xff", ErrInvalid, "value at offset 0: invalid JSON: byte 0xff where a value should begin"},
		{"float", "1.", ErrTruncated, "value at offset 2: JSON ends after the decimal point of a number (want a digit)"},
		{"float", "1.e5", ErrInvalid, "value at offset 2: invalid JSON: character 'e' after the decimal point of a number (want a digit)"},
		{"float", "1e", ErrTruncated, "value at offset 2: JSON ends in the exponent of a number (want a digit)"},
		{"float", ".5", ErrInvalid, "value at offset 0: invalid JSON: character '.' where a value should begin"},
		{"float", "1e400", ErrRange, "value at offset 0: 1e400 is out of range for float (a 64-bit IEEE 754 number)"},
		{"float", "NaN", ErrInvalid, "value at offset 0: invalid JSON: character 'N' where a value should begin"},
		{"float", `"1.5"`, ErrType, "value at offset 0: want float, got string"},
		{"bool", "1", ErrType, "value at offset 0: want bool, got number"},
		{"bool", `"true"`, ErrType, "value at offset 0: want bool, got string"},
		{"bool", "truex", ErrInvalid, "value at offset 0: invalid JSON: character 't' where a value should begin"},
		{"bool", "True", ErrInvalid, "value at offset 0: invalid JSON: character 'T' where a value should begin"},
		{"string", `"abc`, ErrTruncated, "value at offset 4: JSON ends inside a string (want a closing \")"},
		{"string", `"a\`, ErrTruncated, "value at offset 3: JSON ends inside a string (want an escape)"},
		{"string", `"a\x"`, ErrInvalid, `value at offset 2: invalid JSON: unknown escape in a string: \ then character 'x'`},
		{"string", "\"a\\\r\"", ErrInvalid, `value at offset 2: invalid JSON: unknown escape in a string: \ then byte 0x0d`},
		{"string", `"\u12"`, ErrInvalid, `value at offset 1: invalid JSON: \u not followed by 4 hex digits`},
		{"string", `"\ud83d"`, ErrInvalid, `value at offset 1: invalid JSON: \u escape of a lone surrogate`},
		{"string", `"\ud83d\u0041"`, ErrInvalid, `value at offset 1: invalid JSON: \u escape of a lone surrogate`},
		{"string", `"x\ude00"`, ErrInvalid, `value at offset 2: invalid JSON: \u escape of a lone surrogate`},
		{"string", "\"a\nb\"", ErrInvalid, "value at offset 2: invalid JSON: control byte 0x0a in a string (escape it)"},
		{"string", "\"ok\xff\"", ErrInvalid, "value at offset 3: string is not valid UTF-8 (byte 0xff)"},
		{"string", "\"\xff\\n\"", ErrInvalid, "value at offset 1: string is not valid UTF-8 (byte 0xff)"},
		{"string", "\"\\n\xc3(\"", ErrInvalid, "value at offset 3: string is not valid UTF-8 (byte 0xc3)"},
		{"string", "5", ErrType, "value at offset 0: want string, got number"},
		{"binary", `"AAEC/w="`, ErrInvalid, `value at offset 0: "AAEC/w=" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)`},
		{"binary", `"AAEC_w=="`, ErrInvalid, `value at offset 0: "AAEC_w==" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)`},
		{"binary", `"AAEC/w"`, ErrInvalid, `value at offset 0: "AAEC/w" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)`},
		{"binary", "null", ErrType, `value at offset 0: want binary, got null (write "" for no bytes)`},
		{"binary", "[1,2]", ErrType, "value at offset 0: want binary, got array"},
		{"int[]", "null", ErrType, "value at offset 0: want int[], got null (write [] for an empty list)"},
		{"int[]", "[1,]", ErrInvalid, "[1] at offset 3: invalid JSON: character ']' where a value should begin"},
		{"int[]", "[1 2]", ErrInvalid, "value at offset 3: invalid JSON: character '2' after an array element (want , or ])"},
		{"int[]", "[1", ErrTruncated, "value at offset 2: JSON ends after an array element (want , or ])"},
		{"int[]", "[", ErrTruncated, "[0] at offset 1: JSON ends where a value (int) should begin"},
		{"int[]", `[1,"x"]`, ErrInvalid, `[1] at offset 3: "x" is not an int (a decimal integer, like -42)`},
		{"int[]", `{}`, ErrType, "value at offset 0: want int[], got object"},
		{"float[][]", "[[1],[2,[3]]]", ErrType, "[1][1] at offset 8: want float, got array"},
		{"float[][]", "[[1],2]", ErrType, "[1] at offset 5: want float[], got number"},
		{"Point", `{"x":1}`, ErrMissingField, "y at offset 0: missing field"},
		{"Point", ` {}`, ErrMissingField, "x at offset 1: missing field"},
		{"Point", `{"x":1,"y":2,"z":3}`, ErrUnknownField, `value at offset 13: unknown field "z" (known: x, y)`},
		{"Point", `{"X":1,"y":2}`, ErrUnknownField, `value at offset 1: unknown field "X" (known: x, y)`},
		{"Point", `{"x":1,"x":2}`, ErrInvalid, `value at offset 7: field "x" given twice`},
		{"Point", `{"x":1,"y":null}`, ErrType, "y at offset 11: want float, got null"},
		{"Point", `{"x":1,}`, ErrInvalid, "value at offset 7: invalid JSON: character '}' where a field name (a string) should begin"},
		{"Point", `{x:1}`, ErrInvalid, "value at offset 1: invalid JSON: character 'x' where a field name (a string) should begin"},
		{"Point", `{"x" 1}`, ErrInvalid, "value at offset 5: invalid JSON: character '1' after a field name (want :)"},
		{"Point", `{"x":1 "y":2}`, ErrInvalid, `value at offset 7: invalid JSON: character '"' after a field's value (want , or })`},
		{"Point", `{"x":1`, ErrTruncated, "value at offset 6: JSON ends after a field's value (want , or })"},
		{"Point", `{"x":`, ErrTruncated, "x at offset 5: JSON ends where a value (float) should begin"},
		{"Point", `[1,2]`, ErrType, "value at offset 0: want Point, got array"},
		{"Empty", `{"a":1}`, ErrUnknownField, `value at offset 1: unknown field "a" (there are none)`},
		{"Track", `{"title":"t","duration":1,"tags":["a",2],"cover":"","plays":1,"liked":true}`, ErrType, "tags[1] at offset 38: want string, got number"},
		{"Point[]", `[{"x":1,"y":2},{"x":1,"y":"2"}]`, ErrType, "[1].y at offset 26: want float, got string"},
		{"args", `{"id":1,"name":"n","position":[{"x":0,"y":0},{"x":"1","y":0}],"flags":true,"payload":""}`, ErrType, "position[1].x at offset 50: want float, got string"},
	}
	for _, tc := range tests {
		got, err := UnmarshalJSON(typ(t, tc.typ), []byte(tc.in))
		if err == nil {
			t.Errorf("UnmarshalJSON(%s, %s) = %#v, want error %s", tc.typ, tc.in, got, tc.msg)
			continue
		}
		checkError(t, err, "decode JSON", tc.kind, len(tc.in))
		if want := "services: decode JSON " + tc.msg; err.Error() != want {
			t.Errorf("UnmarshalJSON(%s, %s):\n got %s\nwant %s", tc.typ, tc.in, err, want)
		}
	}
}

// TestUnmarshalJSONAgreesWithEncodingJSON: whatever UnmarshalJSON accepts
// is valid JSON, and a valid JSON string decodes as encoding/json decodes
// it (but for invalid UTF-8 and lone surrogates, which it rejects).
func TestUnmarshalJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, s := range []string{`"plain"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"tab\there"`, `"\/"`, `"é"`, `"\u0041\u0042"`, `"a\\u0041"`} {
		got, err := UnmarshalJSON(typ(t, "string"), []byte(s))
		var want string
		if jerr := json.Unmarshal([]byte(s), &want); jerr != nil || err != nil || got != want {
			t.Errorf("%s: %q, %v; encoding/json: %q, %v", s, got, err, want, jerr)
		}
	}
}

func TestMarshalJSONBigInts(t *testing.T) {
	// All 64 bits are written; see the 2^53 caveat in MarshalJSON's doc.
	js, err := MarshalJSON(typ(t, "int[]"), []int64{1<<53 + 1, math.MaxInt64, math.MinInt64})
	if err != nil || string(js) != "[9007199254740993,9223372036854775807,-9223372036854775808]" {
		t.Fatalf("MarshalJSON = %s, %v", js, err)
	}
	var viaFloat []float64
	if err := json.Unmarshal(js, &viaFloat); err != nil || viaFloat[0] != 1<<53 {
		t.Errorf("a float64 reader reads %v (the caveat)", viaFloat)
	}
	back, err := UnmarshalJSON(typ(t, "int[]"), js)
	if err != nil || !reflect.DeepEqual(back, list(int64(1<<53+1), int64(math.MaxInt64), int64(math.MinInt64))) {
		t.Errorf("UnmarshalJSON = %v, %v", back, err)
	}
}

func TestUnmarshalJSONDeep(t *testing.T) {
	// Nesting is bounded by the type: a deeper document fails at the
	// first bracket the type does not allow, without reading on.
	in := strings.Repeat("[", 1<<20)
	_, err := UnmarshalJSON(typ(t, "int[][]"), []byte(in))
	if err == nil || err.Error() != "services: decode JSON [0][0] at offset 2: want int, got array" {
		t.Errorf("UnmarshalJSON = %v", err)
	}
}
