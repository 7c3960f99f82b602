package services

import (
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/services/servicefile"
)

// ParseText parses a value of type t written as text, as on the command line
// (connectclient call SERVICE.METHOD name=value) and in HTTP query
// arguments:
//
//	int     a decimal integer with an optional sign: 42, -7, +7
//	float   a decimal number: 1.5, -2e10, .5, 3 (no NaN, Inf, hex or _)
//	bool    true, false, 1 or 0
//	string  the text itself, which must be UTF-8
//	binary  base64 (standard alphabet with = padding: AAEC/w==), or hex
//	        after a "hex:" prefix (hex:0001ff); "" is no bytes
//	list    typed JSON, as UnmarshalJSON: [1,2,3], [[1.5],[2]]
//	struct  typed JSON: {"title":"x","duration":1.5}
//
// The text is taken as it is: no white space is trimmed (but JSON may have
// it around and inside). Errors are *Error with Op "parse text"; a JSON
// error has the path and the byte offset in s.
func ParseText(t *servicefile.Type, s string) (any, error) {
	v, err := parseText(t, s)
	if err != nil {
		return nil, finish(err, "parse text")
	}
	return v, nil
}

func parseText(t *servicefile.Type, s string) (any, error) {
	if t == nil {
		return nil, badType(t)
	}
	switch t.Kind {
	case servicefile.Int:
		return parseInt(s)
	case servicefile.Float:
		if !floatSyntax.MatchString(s) {
			return nil, errf(ErrInvalid, "%s is not a float (a decimal number, like 1.5 or -2e10)", quote(s))
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errf(ErrRange, "%s is out of range for float (a 64-bit IEEE 754 number)", quote(s))
		}
		return f, nil
	case servicefile.Bool:
		switch s {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
		return nil, errf(ErrInvalid, "%s is not a bool (true, false, 1 or 0)", quote(s))
	case servicefile.String:
		if i := invalidUTF8(s); i >= 0 {
			return nil, errAt(i, ErrInvalid, "not valid UTF-8 (byte 0x%02x)", s[i])
		}
		return s, nil
	case servicefile.Binary:
		if h, ok := strings.CutPrefix(s, "hex:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil {
				return nil, errf(ErrInvalid, "%s is not hex (an even number of hex digits after hex:, like hex:0001ff)", quote(s))
			}
			return b, nil
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, errf(ErrInvalid, "%s is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==) nor hex: followed by hex digits", quote(s))
		}
		return b, nil
	case servicefile.List:
		if strings.TrimLeft(s, " \t\r\n") == "" || strings.TrimLeft(s, " \t\r\n")[0] != '[' {
			return nil, errAt(0, ErrType, "%s is not a list (%s: write it as a JSON array, like [1,2] or [\"a\",\"b\"])", quote(s), typeName(t))
		}
		return parseJSON(t, []byte(s))
	case servicefile.Struct:
		if strings.TrimLeft(s, " \t\r\n") == "" || strings.TrimLeft(s, " \t\r\n")[0] != '{' {
			return nil, errAt(0, ErrType, "%s is not a struct (%s: write it as a JSON object of its fields: %s)", quote(s), typeName(t), nameList(t.Fields))
		}
		return parseJSON(t, []byte(s))
	}
	return nil, badType(t)
}

// floatSyntax is a decimal number, as service-file defaults write it.
var floatSyntax = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// parseInt parses a decimal integer with an optional sign.
func parseInt(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return n, nil
	}
	if isRangeErr(err) {
		return 0, errf(ErrRange, "%s is out of range for int (-9223372036854775808 to 9223372036854775807)", quote(s))
	}
	return 0, errf(ErrInvalid, "%s is not an int (a decimal integer, like -42)", quote(s))
}

// FormatText writes v, a value of type t, for people, in the forms
// ParseText reads (ParseText(t, FormatText(t, v)) gives v back): an int
// in decimal, a float in the shortest form that reads back exactly (as in
// JSON: 1.5, 1e+21), a bool as true or false, a string as itself, binary as
// base64, lists and structs as compact typed JSON. It accepts every Go
// value Normalize accepts; for anything else it returns the error's text
// in the manner of fmt: "%!(services: check value: want int, got ...)".
func FormatText(t *servicefile.Type, v any) string {
	w := walker{build: true}
	c, _, _, err := w.norm(t, v, 1)
	if err != nil {
		return "%!(" + finish(err, "check").Error() + ")"
	}
	switch t.Kind {
	case servicefile.Int:
		n, _ := c.(int64)
		return strconv.FormatInt(n, 10)
	case servicefile.Float:
		f, _ := c.(float64)
		return string(appendFloat(nil, f))
	case servicefile.Bool:
		b, _ := c.(bool)
		return strconv.FormatBool(b)
	case servicefile.String:
		s, _ := c.(string)
		return s
	case servicefile.Binary:
		b, _ := c.([]byte)
		return base64.StdEncoding.EncodeToString(b)
	}
	return string(appendJSON(nil, t, c))
}
