package services

import (
	"math"
	"reflect"
	"testing"
)

func TestParseText(t *testing.T) {
	tests := []struct {
		typ  string
		in   string
		want any
	}{
		{"int", "42", int64(42)},
		{"int", "-7", int64(-7)},
		{"int", "+7", int64(7)},
		{"int", "007", int64(7)},
		{"int", "-9223372036854775808", int64(math.MinInt64)},
		{"float", "1.5", 1.5},
		{"float", "-2e10", -2e10},
		{"float", ".5", 0.5},
		{"float", "3", 3.0},
		{"float", "3.", 3.0},
		{"float", "+1E-3", 0.001},
		{"float", "1e+21", 1e21},
		{"bool", "true", true},
		{"bool", "1", true},
		{"bool", "false", false},
		{"bool", "0", false},
		{"string", "", ""},
		{"string", " spaced text ", " spaced text "},
		{"string", `"quoted"`, `"quoted"`},
		{"binary", "", []byte{}},
		{"binary", "AAEC/w==", []byte{0, 1, 2, 0xff}},
		{"binary", "hex:", []byte{}},
		{"binary", "hex:0001fF", []byte{0, 1, 0xff}},
		{"int[]", "[1, 2,3]", list(int64(1), int64(2), int64(3))},
		{"float[][]", " [[1.5],[]] ", list(list(1.5), list())},
		{"Point", `{"x":1,"y":2}`, point(1, 2)},
		{"Point[]", `[]`, list()},
	}
	for _, tc := range tests {
		got, err := ParseText(typ(t, tc.typ), tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseText(%s, %q) = %#v, %v; want %#v", tc.typ, tc.in, got, err, tc.want)
		}
	}
}

func TestParseTextErrors(t *testing.T) {
	tests := []struct {
		typ  string
		in   string
		kind error
		msg  string
	}{
		{"int", "", ErrInvalid, `value: "" is not an int (a decimal integer, like -42)`},
		{"int", "1.0", ErrInvalid, `value: "1.0" is not an int (a decimal integer, like -42)`},
		{"int", " 1", ErrInvalid, `value: " 1" is not an int (a decimal integer, like -42)`},
		{"int", "0x10", ErrInvalid, `value: "0x10" is not an int (a decimal integer, like -42)`},
		{"int", "1_000", ErrInvalid, `value: "1_000" is not an int (a decimal integer, like -42)`},
		{"int", "9223372036854775808", ErrRange, `value: "9223372036854775808" is out of range for int (-9223372036854775808 to 9223372036854775807)`},
		{"float", "", ErrInvalid, `value: "" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float", "NaN", ErrInvalid, `value: "NaN" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float", "inf", ErrInvalid, `value: "inf" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float", "0x1p3", ErrInvalid, `value: "0x1p3" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float", "1_0", ErrInvalid, `value: "1_0" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float", "1e999", ErrRange, `value: "1e999" is out of range for float (a 64-bit IEEE 754 number)`},
		{"bool", "yes", ErrInvalid, `value: "yes" is not a bool (true, false, 1 or 0)`},
		{"bool", "TRUE", ErrInvalid, `value: "TRUE" is not a bool (true, false, 1 or 0)`},
		{"bool", "", ErrInvalid, `value: "" is not a bool (true, false, 1 or 0)`},
		{"string", "ab\xffc", ErrInvalid, "value at offset 2: not valid UTF-8 (byte 0xff)"},
		{"binary", "AAEC/w", ErrInvalid, `value: "AAEC/w" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==) nor hex: followed by hex digits`},
		{"binary", "hex:abc", ErrInvalid, `value: "hex:abc" is not hex (an even number of hex digits after hex:, like hex:0001ff)`},
		{"binary", "hex:zz", ErrInvalid, `value: "hex:zz" is not hex (an even number of hex digits after hex:, like hex:0001ff)`},
		{"int[]", "1,2", ErrType, `value at offset 0: "1,2" is not a list (int[]: write it as a JSON array, like [1,2] or ["a","b"])`},
		{"string[]", "", ErrType, `value at offset 0: "" is not a list (string[]: write it as a JSON array, like [1,2] or ["a","b"])`},
		{"int[]", "[1]x", ErrTrailingData, "value at offset 3: character 'x' after the value"},
		{"Point", "1,2", ErrType, `value at offset 0: "1,2" is not a struct (Point: write it as a JSON object of its fields: x, y)`},
		{"int[]", "[1,x]", ErrInvalid, "[1] at offset 3: invalid JSON: character 'x' where a value should begin"},
		{"Point", `{"x":1}`, ErrMissingField, "y at offset 0: missing field"},
		{"Point", `{x=1}`, ErrInvalid, "value at offset 1: invalid JSON: character 'x' where a field name (a string) should begin"},
	}
	for _, tc := range tests {
		got, err := ParseText(typ(t, tc.typ), tc.in)
		if err == nil {
			t.Errorf("ParseText(%s, %q) = %#v, want error %s", tc.typ, tc.in, got, tc.msg)
			continue
		}
		e := checkError(t, err, "parse text", tc.kind, -1)
		if e.Offset > len(tc.in) {
			t.Errorf("offset %d beyond the text", e.Offset)
		}
		if want := "services: parse text " + tc.msg; err.Error() != want {
			t.Errorf("ParseText(%s, %q):\n got %s\nwant %s", tc.typ, tc.in, err, want)
		}
	}
}

func TestFormatText(t *testing.T) {
	tests := []struct {
		typ  string
		v    any
		want string
	}{
		{"int", int64(-42), "-42"},
		{"int", 7, "7"},
		{"float", 1.5, "1.5"},
		{"float", 1e21, "1e+21"},
		{"float", 100.0, "100"},
		{"float", float32(0.1), "0.10000000149011612"},
		{"bool", true, "true"},
		{"string", "two words", "two words"},
		{"binary", []byte{0, 1, 2, 0xff}, "AAEC/w=="},
		{"binary", []byte(nil), ""},
		{"int[]", []int{1, 2}, "[1,2]"},
		{"Point", point(1, 2), `{"x":1,"y":2}`},
		{"int", "x", `%!(services: check value: want int, got string "x")`},
	}
	for _, tc := range tests {
		if got := FormatText(typ(t, tc.typ), tc.v); got != tc.want {
			t.Errorf("FormatText(%s, %#v) = %q, want %q", tc.typ, tc.v, got, tc.want)
		}
	}
}
