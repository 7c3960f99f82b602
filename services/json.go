package services

import (
	"encoding/base64"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/bearerkit/connect/services/servicefile"
)

// Typed JSON (docs/SERVICES.md, "Values"): int as a JSON number (a string
// of decimal digits is accepted on input), float as a number, bool as
// true/false, string as a string, binary as a base64 string (standard
// alphabet with padding), list as an array, struct as an object with every
// field and no other key. null is no value of any type.

// MarshalJSON returns the typed JSON of v, a value of type t. It accepts
// every Go value Normalize accepts; errors are *Error with Op "encode JSON".
// The output is canonical: object keys in field order, no white space,
// floats in the shortest form that reads back exactly (as encoding/json
// writes them), strings escaped as encoding/json escapes them (including
// <, > and &).
//
// Ints are written as numbers, all 64 bits of them. A JSON reader that
// holds numbers as IEEE doubles (JavaScript's JSON.parse, for one) rounds
// integers beyond ±2^53 (9007199254740992); such clients should read them
// with a big-integer aware parser, and may send them back as strings.
func MarshalJSON(t *servicefile.Type, v any) ([]byte, error) {
	w := walker{build: true}
	c, _, _, err := w.norm(t, v, 1)
	if err != nil {
		return nil, finish(err, "encode JSON")
	}
	return appendJSON(make([]byte, 0, 128), t, c), nil
}

// UnmarshalJSON parses the typed JSON of a value of type t and returns it in
// the canonical representation. It accepts, around a value, JSON white
// space only. On input an int may also be a JSON string of decimal digits
// with an optional sign ("9007199254740993"), for clients that cannot write
// big integers as numbers; an int number must be written as an integer (no
// fraction, no exponent). Objects must hold every field of their struct,
// once, and no other key. A string must be valid UTF-8 and may not escape a
// lone surrogate. Errors are *Error with Op "decode JSON", the path of the
// value at fault and the byte offset in data.
func UnmarshalJSON(t *servicefile.Type, data []byte) (any, error) {
	v, err := parseJSON(t, data)
	if err != nil {
		return nil, finish(err, "decode JSON")
	}
	return v, nil
}

// parseJSON parses a whole document.
func parseJSON(t *servicefile.Type, data []byte) (any, error) {
	p := jsonParser{data: data}
	v, _, err := p.value(t, 1)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.off < len(p.data) {
		return nil, errAt(p.off, ErrTrailingData, "%s after the value", p.describeChar())
	}
	return v, nil
}

// appendJSON writes a canonical value (checked by walker.norm) as JSON.
func appendJSON(dst []byte, t *servicefile.Type, v any) []byte {
	switch t.Kind {
	case servicefile.Int:
		n, _ := v.(int64)
		return strconv.AppendInt(dst, n, 10)
	case servicefile.Float:
		f, _ := v.(float64)
		return appendFloat(dst, f)
	case servicefile.Bool:
		b, _ := v.(bool)
		return strconv.AppendBool(dst, b)
	case servicefile.String:
		s, _ := v.(string)
		return appendJSONString(dst, s)
	case servicefile.Binary:
		b, _ := v.([]byte)
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		return append(dst, '"')
	case servicefile.List:
		l, _ := v.([]any)
		dst = append(dst, '[')
		for i, x := range l {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, t.Elem, x)
		}
		return append(dst, ']')
	case servicefile.Struct:
		m, _ := v.(map[string]any)
		dst = append(dst, '{')
		for i, f := range t.Fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, f.Name)
			dst = append(dst, ':')
			dst = appendJSON(dst, f.Type, m[f.Name])
		}
		return append(dst, '}')
	}
	return dst
}

// appendFloat writes f as encoding/json does (ES6 number formatting): the
// shortest decimal that reads back as f, with an exponent below 1e-6 and
// from 1e21 on.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s (valid UTF-8) as a JSON string, escaped as
// encoding/json escapes it.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += n
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonParser parses typed JSON, directed by the type: a value of the wrong
// kind is reported at its first byte, without reading it further, so
// nesting is bounded by the type's.
type jsonParser struct {
	data    []byte
	off     int
	empties int // struct values that carry no data
}

// ws skips JSON white space.
func (p *jsonParser) ws() {
	for p.off < len(p.data) {
		switch p.data[p.off] {
		case ' ', '\t', '\n', '\r':
			p.off++
		default:
			return
		}
	}
}

// describeChar names the byte at p.off for a message.
func (p *jsonParser) describeChar() string {
	if p.off >= len(p.data) {
		return "end of input"
	}
	return describeByte(p.data[p.off])
}

// describeByte names a byte of JSON for a message.
func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "character " + strconv.QuoteRune(rune(c))
	}
	return "byte 0x" + string([]byte{hexDigits[c>>4], hexDigits[c&0xf]})
}

// syntax reports malformed JSON at p.off.
func (p *jsonParser) syntax(context string) error {
	if p.off >= len(p.data) {
		return errAt(p.off, ErrTruncated, "JSON ends %s", context)
	}
	return errAt(p.off, ErrInvalid, "invalid JSON: %s %s", p.describeChar(), context)
}

// kind names the JSON value starting at p.off ("string", "number", ...),
// or reports malformed JSON.
func (p *jsonParser) kind() (string, error) {
	switch c := p.data[p.off]; {
	case c == '"':
		return "string", nil
	case c == '[':
		return "array", nil
	case c == '{':
		return "object", nil
	case c == '-' || c >= '0' && c <= '9':
		return "number", nil
	case c == 't' || c == 'f':
		if p.literal("true") || p.literal("false") {
			return "bool", nil
		}
	case c == 'n':
		if p.literal("null") {
			return "null", nil
		}
	}
	return "", p.syntax("where a value should begin")
}

// literal reports whether the input at p.off starts with word, not
// followed by more letters.
func (p *jsonParser) literal(word string) bool {
	end := p.off + len(word)
	if end > len(p.data) || string(p.data[p.off:end]) != word {
		return false
	}
	return end == len(p.data) || !isLetter(p.data[end])
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// wrongKind reports a JSON value of the wrong kind for t.
func (p *jsonParser) wrongKind(t *servicefile.Type) error {
	k, err := p.kind()
	if err != nil {
		return err
	}
	hint := ""
	if k == "null" {
		switch t.Kind {
		case servicefile.List:
			hint = " (write [] for an empty list)"
		case servicefile.Binary:
			hint = ` (write "" for no bytes)`
		}
	}
	return errAt(p.off, ErrType, "want %s, got %s%s", typeName(t), k, hint)
}

// value parses a value of type t at nesting level depth. empty reports that
// t carries no data.
func (p *jsonParser) value(t *servicefile.Type, depth int) (v any, empty bool, err error) {
	p.ws()
	if depth > MaxDepth {
		return nil, false, errAt(p.off, ErrTooDeep, "nested more than %d levels deep", MaxDepth)
	}
	if t == nil || t.Kind == servicefile.List && t.Elem == nil {
		e := badType(t)
		e.Offset = p.off
		return nil, false, e
	}
	if p.off >= len(p.data) {
		return nil, false, errAt(p.off, ErrTruncated, "JSON ends where a value (%s) should begin", typeName(t))
	}
	start := p.off
	c := p.data[p.off]
	switch t.Kind {
	case servicefile.Int:
		switch {
		case c == '-' || c >= '0' && c <= '9':
			lit, isInt, err := p.number()
			if err != nil {
				return nil, false, err
			}
			if !isInt {
				return nil, false, errAt(start, ErrType, "want int, got number %s (an int has no fraction or exponent)", cut(lit))
			}
			n, err := strconv.ParseInt(lit, 10, 64)
			if err != nil {
				e := intRange(lit).(*Error)
				e.Offset = start
				return nil, false, e
			}
			return n, false, nil
		case c == '"':
			s, err := p.str()
			if err != nil {
				return nil, false, err
			}
			n, err := parseInt(s)
			if err != nil {
				err.(*Error).Offset = start
				return nil, false, err
			}
			return n, false, nil
		}
	case servicefile.Float:
		if c == '-' || c >= '0' && c <= '9' {
			lit, _, err := p.number()
			if err != nil {
				return nil, false, err
			}
			f, err := strconv.ParseFloat(lit, 64)
			if err != nil {
				return nil, false, errAt(start, ErrRange, "%s is out of range for float (a 64-bit IEEE 754 number)", cut(lit))
			}
			return f, false, nil
		}
	case servicefile.Bool:
		switch {
		case p.literal("true"):
			p.off += 4
			return true, false, nil
		case p.literal("false"):
			p.off += 5
			return false, false, nil
		}
	case servicefile.String:
		if c == '"' {
			s, err := p.str()
			if err != nil {
				return nil, false, err
			}
			return s, false, nil
		}
	case servicefile.Binary:
		if c == '"' {
			s, err := p.str()
			if err != nil {
				return nil, false, err
			}
			b, err := base64.StdEncoding.Strict().DecodeString(s)
			if err != nil {
				return nil, false, errAt(start, ErrInvalid, "%s is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)", quote(s))
			}
			return b, false, nil
		}
	case servicefile.List:
		if c == '[' {
			return p.list(t, depth)
		}
	case servicefile.Struct:
		if c == '{' {
			return p.object(t, depth)
		}
	default:
		e := badType(t)
		e.Offset = p.off
		return nil, false, e
	}
	return nil, false, p.wrongKind(t)
}

// list parses an array.
func (p *jsonParser) list(t *servicefile.Type, depth int) (any, bool, error) {
	p.off++ // [
	l := []any{}
	p.ws()
	if p.off < len(p.data) && p.data[p.off] == ']' {
		p.off++
		return l, false, nil
	}
	for i := 0; ; i++ {
		x, _, err := p.value(t.Elem, depth+1)
		if err != nil {
			return nil, false, inIndex(err, i)
		}
		l = append(l, x)
		p.ws()
		if p.off < len(p.data) {
			switch p.data[p.off] {
			case ',':
				p.off++
				continue
			case ']':
				p.off++
				return l, false, nil
			}
		}
		return nil, false, p.syntax("after an array element (want , or ])")
	}
}

// object parses an object holding every field of t once.
func (p *jsonParser) object(t *servicefile.Type, depth int) (any, bool, error) {
	start := p.off
	p.off++ // {
	for i, f := range t.Fields {
		if f == nil || f.Type == nil {
			e := badField(i)
			e.Offset = start
			return nil, false, e
		}
	}
	m := make(map[string]any, len(t.Fields))
	empty := true
	p.ws()
	if p.off < len(p.data) && p.data[p.off] == '}' {
		p.off++
	} else {
		for {
			p.ws()
			if p.off >= len(p.data) || p.data[p.off] != '"' {
				return nil, false, p.syntax("where a field name (a string) should begin")
			}
			keyAt := p.off
			key, err := p.str()
			if err != nil {
				return nil, false, err
			}
			var f *servicefile.Field
			for _, g := range t.Fields {
				if g.Name == key {
					f = g
					break
				}
			}
			if f == nil {
				e := unknownField(key, t.Fields, false)
				e.Offset = keyAt
				return nil, false, e
			}
			if _, dup := m[key]; dup {
				return nil, false, errAt(keyAt, ErrInvalid, "field %s given twice", quote(key))
			}
			p.ws()
			if p.off >= len(p.data) || p.data[p.off] != ':' {
				return nil, false, p.syntax("after a field name (want :)")
			}
			p.off++
			x, emp, err := p.value(f.Type, depth+1)
			if err != nil {
				return nil, false, inField(err, f.Name)
			}
			m[key] = x
			empty = empty && emp
			p.ws()
			if p.off < len(p.data) && p.data[p.off] == ',' {
				p.off++
				continue
			}
			if p.off < len(p.data) && p.data[p.off] == '}' {
				p.off++
				break
			}
			return nil, false, p.syntax("after a field's value (want , or })")
		}
	}
	if len(m) != len(t.Fields) {
		for _, f := range t.Fields {
			if _, ok := m[f.Name]; !ok {
				e := missingField(f.Name, false)
				e.Offset = start
				return nil, false, e
			}
		}
	}
	if empty {
		if p.empties++; p.empties > MaxEmptyValues {
			e := tooManyEmpty()
			e.Offset = start
			return nil, false, e
		}
	}
	return m, empty, nil
}

// number scans a JSON number at p.off and returns its text, and whether it
// is written as an integer (no fraction, no exponent).
func (p *jsonParser) number() (lit string, isInt bool, err error) {
	start := p.off
	d := p.data
	i := p.off
	if i < len(d) && d[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
			n++
		}
		return n
	}
	bad := func(context string) (string, bool, error) {
		p.off = i
		return "", false, p.syntax(context)
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case digits() == 0:
		return bad("in a number (want a digit)")
	}
	isInt = true
	if i < len(d) && d[i] == '.' {
		i++
		isInt = false
		if digits() == 0 {
			return bad("after the decimal point of a number (want a digit)")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		isInt = false
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if digits() == 0 {
			return bad("in the exponent of a number (want a digit)")
		}
	}
	p.off = i
	return string(d[start:i]), isInt, nil
}

// str parses a JSON string at p.off (which holds '"').
func (p *jsonParser) str() (string, error) {
	d := p.data
	i := p.off + 1
	// Fast path: no escapes.
	for i < len(d) {
		c := d[i]
		if c == '"' {
			s := d[p.off+1 : i]
			if !utf8.Valid(s) {
				at := p.off + 1 + invalidUTF8(string(s))
				return "", errAt(at, ErrInvalid, "string is not valid UTF-8 (byte 0x%02x)", d[at])
			}
			p.off = i + 1
			return string(s), nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		i++
	}
	// An escape or a control byte at i: validate what comes before it,
	// then unescape the rest.
	if prefix := d[p.off+1 : i]; !utf8.Valid(prefix) {
		at := p.off + 1 + invalidUTF8(string(prefix))
		return "", errAt(at, ErrInvalid, "string is not valid UTF-8 (byte 0x%02x)", d[at])
	}
	buf := make([]byte, 0, i-p.off+16)
	buf = append(buf, d[p.off+1:i]...)
	for {
		if i >= len(d) {
			p.off = i
			return "", p.syntax("inside a string (want a closing \")")
		}
		c := d[i]
		switch {
		case c == '"':
			p.off = i + 1
			return string(buf), nil
		case c < 0x20:
			p.off = i
			return "", errAt(i, ErrInvalid, "invalid JSON: control byte 0x%02x in a string (escape it)", c)
		case c == '\\':
			if i+1 >= len(d) {
				p.off = i + 1
				return "", p.syntax("inside a string (want an escape)")
			}
			switch e := d[i+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
				i += 2
			case 'b':
				buf = append(buf, '\b')
				i += 2
			case 'f':
				buf = append(buf, '\f')
				i += 2
			case 'n':
				buf = append(buf, '\n')
				i += 2
			case 'r':
				buf = append(buf, '\r')
				i += 2
			case 't':
				buf = append(buf, '\t')
				i += 2
			case 'u':
				r, ok := hex4(d, i+2)
				if !ok {
					return "", errAt(i, ErrInvalid, "invalid JSON: \\u not followed by 4 hex digits")
				}
				n := 6
				if utf16.IsSurrogate(r) {
					r2, ok := rune(0), false
					if i+7 < len(d) && d[i+6] == '\\' && d[i+7] == 'u' {
						r2, ok = hex4(d, i+8)
					}
					r = utf16.DecodeRune(r, r2)
					if !ok || r == utf8.RuneError {
						return "", errAt(i, ErrInvalid, "invalid JSON: \\u escape of a lone surrogate")
					}
					n = 12
				}
				buf = utf8.AppendRune(buf, r)
				i += n
			default:
				return "", errAt(i, ErrInvalid, "invalid JSON: unknown escape in a string: \\ then %s", describeByte(e))
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			i++
		default:
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n == 1 {
				return "", errAt(i, ErrInvalid, "string is not valid UTF-8 (byte 0x%02x)", c)
			}
			buf = append(buf, d[i:i+n]...)
			i += n
		}
	}
}

// hex4 reads 4 hex digits at d[i:].
func hex4(d []byte, i int) (rune, bool) {
	if i+4 > len(d) {
		return 0, false
	}
	var r rune
	for _, c := range d[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
