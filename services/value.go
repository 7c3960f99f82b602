package services

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/bearerkit/connect/services/servicefile"
)

// Limits on values. Types from a service file stay far inside them; they
// exist so that hostile input (and a hand-built type that contains itself)
// costs little and gets a clear error.
const (
	// MaxDepth is how deep a value may nest: the value itself is level 1,
	// and each list or struct puts its elements or fields one level
	// deeper. A service file's types nest at most 40 levels (8 lists
	// around a struct tree 32 deep), and its runtime-data tree, with the
	// objects around them, at most 70.
	MaxDepth = 100
	// MaxEmptyValues is how many struct values that carry no data (of a
	// struct without fields, or with only such fields) one value may
	// hold, nested ones included. Such values take no bytes in the binary
	// encoding, so the input cannot bound their number as it bounds every
	// other value's: a list of them, or a service file's struct of 256
	// such fields of 256 such fields of ..., would otherwise decode from
	// a few bytes into any number of maps.
	MaxEmptyValues = 4096
)

// Check reports whether v is a value of type t: nil, or an *Error saying
// where and why not. It accepts everything Normalize accepts (integers of
// any width for an int, a []string for a string[], ...), not only the
// canonical representation; Check(t, v) == nil exactly when Normalize(t, v)
// succeeds. It does not allocate for a canonical value.
func Check(t *servicefile.Type, v any) error {
	w := walker{}
	_, _, _, err := w.norm(t, v, 1)
	return finish(err, "check")
}

// Normalize returns v in the canonical representation of type t (see the
// package documentation), converting:
//
//   - for int: any Go integer type (uint64 above math.MaxInt64 is
//     ErrRange), json.Number holding an integer, named integer types;
//   - for float: float32, float64, json.Number, named float types, and Go
//     integers that a float64 holds exactly (2^53 + 1 is ErrRange);
//     NaN and ±Inf are ErrRange;
//   - for bool, string: named bool and string types; a string must be
//     valid UTF-8;
//   - for binary: any slice or array of bytes ([16]byte, named byte
//     slices); nil becomes []byte{};
//   - for a list: any slice or array, element by element; nil becomes
//     []any{};
//   - for a struct: any map with string keys holding exactly the
//     struct's fields; a nil map is a struct without fields.
//
// Anything else is ErrType: a float is not an int, a string not a number,
// a Go struct not a struct value (use a map). Normalize never modifies v: it
// returns v itself when v is already canonical, and otherwise a new value
// that may share canonical parts (sub-lists, maps, byte slices) with v.
func Normalize(t *servicefile.Type, v any) (any, error) {
	w := walker{build: true}
	out, _, _, err := w.norm(t, v, 1)
	if err != nil {
		return nil, finish(err, "check")
	}
	return out, nil
}

// DefaultValue returns a new zero value of type t, deep: 0, 0.0, false, "",
// []byte{}, an empty list []any{}, and for a struct a map holding the
// default of every field. It is the value a runtime-data node starts with
// when its service file gives no default. It returns nil for an unusable
// type (nil, unknown kind), and for a type whose zero value would hold
// more than a million values (structs of many fields of structs of many
// fields ...: a service file can declare one whose zero value would not
// fit in memory). It cuts a hand-built type that contains itself at
// MaxDepth, with nil there.
func DefaultValue(t *servicefile.Type) any {
	if defaultSize(t, 1, map[*servicefile.Type]int{}) > maxDefaultValues {
		return nil
	}
	return defaultValue(t, 1)
}

// maxDefaultValues bounds the values in one DefaultValue.
const maxDefaultValues = 1 << 20

// defaultSize counts the values in the zero value of t, up to a little
// more than maxDefaultValues. Each struct is counted once (memo), so a
// type with exponentially many values costs no more than its declaration.
func defaultSize(t *servicefile.Type, depth int, memo map[*servicefile.Type]int) int {
	if t == nil || depth > MaxDepth || t.Kind != servicefile.Struct {
		return 1
	}
	if n, ok := memo[t]; ok {
		return n
	}
	n := 1
	for _, f := range t.Fields {
		if f != nil {
			n += defaultSize(f.Type, depth+1, memo)
		}
		if n > maxDefaultValues {
			break
		}
	}
	memo[t] = n
	return n
}

func defaultValue(t *servicefile.Type, depth int) any {
	if t == nil || depth > MaxDepth {
		return nil
	}
	switch t.Kind {
	case servicefile.Int:
		return int64(0)
	case servicefile.Float:
		return float64(0)
	case servicefile.Bool:
		return false
	case servicefile.String:
		return ""
	case servicefile.Binary:
		return []byte{}
	case servicefile.List:
		return []any{}
	case servicefile.Struct:
		m := make(map[string]any, len(t.Fields))
		for _, f := range t.Fields {
			if f != nil {
				m[f.Name] = defaultValue(f.Type, depth+1)
			}
		}
		return m
	}
	return nil
}

// walker checks a Go value against a type and, with build, converts it to
// the canonical representation. It counts struct values that carry no data
// against MaxEmptyValues.
type walker struct {
	build   bool
	empties int
}

// norm checks v against t, at nesting level depth. With w.build it returns
// the canonical value (v itself when changed is false). empty reports that t
// carries no data (a struct of no fields or only such fields).
func (w *walker) norm(t *servicefile.Type, v any, depth int) (out any, changed, empty bool, err error) {
	if depth > MaxDepth {
		return nil, false, false, tooDeep()
	}
	if t == nil {
		return nil, false, false, badType(t)
	}
	switch t.Kind {
	case servicefile.Int:
		if _, ok := v.(int64); ok {
			return v, false, false, nil
		}
		n, err := toInt(t, v)
		if err != nil || !w.build {
			return nil, true, false, err
		}
		return n, true, false, nil
	case servicefile.Float:
		if f, ok := v.(float64); ok && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return v, false, false, nil
		}
		f, err := toFloat(t, v)
		if err != nil || !w.build {
			return nil, true, false, err
		}
		return f, true, false, nil
	case servicefile.Bool:
		if _, ok := v.(bool); ok {
			return v, false, false, nil
		}
		b, err := toBool(t, v)
		if err != nil || !w.build {
			return nil, true, false, err
		}
		return b, true, false, nil
	case servicefile.String:
		if s, ok := v.(string); ok && utf8.ValidString(s) {
			return v, false, false, nil
		}
		s, err := toString(t, v)
		if err != nil || !w.build {
			return nil, true, false, err
		}
		return s, true, false, nil
	case servicefile.Binary:
		if b, ok := v.([]byte); ok && b != nil {
			return v, false, false, nil
		}
		b, err := toBytes(t, v)
		if err != nil || !w.build {
			return nil, true, false, err
		}
		if b == nil {
			b = []byte{}
		}
		return b, true, false, nil
	case servicefile.List:
		if t.Elem == nil {
			return nil, false, false, badType(t)
		}
		l, converted, ok := asList(v)
		if !ok {
			return nil, false, false, wrongType(t, v)
		}
		var res []any
		if converted || l == nil {
			changed = true
			if w.build {
				res = make([]any, len(l))
			}
		}
		for i, x := range l {
			nx, ch, _, err := w.norm(t.Elem, x, depth+1)
			if err != nil {
				return nil, false, false, inIndex(err, i)
			}
			if ch {
				changed = true
				if w.build && res == nil {
					res = make([]any, len(l))
					copy(res, l[:i])
				}
			}
			if res != nil {
				res[i] = nx
			}
		}
		if !changed {
			return v, false, false, nil
		}
		return res, true, false, nil
	case servicefile.Struct:
		return w.fields(t, v, depth)
	}
	return nil, false, false, badType(t)
}

// fields checks a struct value.
func (w *walker) fields(t *servicefile.Type, v any, depth int) (out any, changed, empty bool, err error) {
	m, converted, ok := asMap(v)
	if !ok {
		return nil, false, false, wrongType(t, v)
	}
	var res map[string]any
	if converted || m == nil {
		changed = true
		if w.build {
			res = make(map[string]any, len(t.Fields))
		}
	}
	empty = true
	for i, f := range t.Fields {
		if f == nil || f.Type == nil {
			return nil, false, false, badField(i)
		}
		x, ok := m[f.Name]
		if !ok {
			return nil, false, false, missingField(f.Name, false)
		}
		nx, ch, emp, err := w.norm(f.Type, x, depth+1)
		if err != nil {
			return nil, false, false, inField(err, f.Name)
		}
		empty = empty && emp
		if ch {
			changed = true
			if w.build && res == nil {
				res = make(map[string]any, len(t.Fields))
				for _, g := range t.Fields[:i] {
					res[g.Name] = m[g.Name]
				}
			}
		}
		if res != nil {
			res[f.Name] = nx
		}
	}
	if len(m) != len(t.Fields) {
		return nil, false, false, unknownKey(m, t.Fields, false)
	}
	if empty {
		if w.empties++; w.empties > MaxEmptyValues {
			return nil, false, false, tooManyEmpty()
		}
	}
	if !changed {
		return v, false, empty, nil
	}
	return res, true, empty, nil
}

// unknownKey reports the first key of m, in sorted order, that is not one
// of fields. The caller has found every field in m, and more keys.
func unknownKey(m map[string]any, fields []*servicefile.Field, args bool) error {
	var unknown []string
	for k := range m {
		if !hasField(fields, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	if len(unknown) == 0 { // duplicate field names in a hand-built type
		return errf(ErrBadType, "invalid type: a field name appears twice")
	}
	return unknownField(unknown[0], fields, args)
}

func hasField(fields []*servicefile.Field, name string) bool {
	for _, f := range fields {
		if f != nil && f.Name == name {
			return true
		}
	}
	return false
}

// asList returns v's elements: v itself for a []any, a new []any
// (converted true) for any other slice or array. ok is false for anything
// else.
func asList(v any) (l []any, converted, ok bool) {
	if l, ok := v.([]any); ok {
		return l, false, true
	}
	rv := reflect.ValueOf(v)
	if k := rv.Kind(); k != reflect.Slice && k != reflect.Array {
		return nil, false, false
	}
	n := rv.Len()
	l = make([]any, n)
	for i := range n {
		e := rv.Index(i)
		if !e.CanInterface() {
			return nil, false, false
		}
		l[i] = e.Interface()
	}
	return l, true, true
}

// asMap returns v's entries: v itself for a map[string]any, a new map
// (converted true) for any other map with string keys. ok is false for
// anything else.
func asMap(v any) (m map[string]any, converted, ok bool) {
	if m, ok := v.(map[string]any); ok {
		return m, false, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil, false, false
	}
	if rv.IsNil() {
		return nil, true, true
	}
	m = make(map[string]any, rv.Len())
	for it := rv.MapRange(); it.Next(); {
		e := it.Value()
		if !e.CanInterface() {
			return nil, false, false
		}
		m[it.Key().String()] = e.Interface()
	}
	return m, true, true
}

// toInt converts v to an int.
func toInt(t *servicefile.Type, v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			if isRangeErr(err) {
				return 0, intRange(string(x))
			}
			return 0, errf(ErrType, "want int, got json.Number %s", quote(string(x)))
		}
		return n, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := rv.Uint()
		if u > math.MaxInt64 {
			return 0, intRange(strconv.FormatUint(u, 10))
		}
		return int64(u), nil
	}
	return 0, wrongType(t, v)
}

// intRange reports an integer (written as s) outside int64.
func intRange(s string) error {
	return errf(ErrRange, "%s is out of range for int (-9223372036854775808 to 9223372036854775807)", cut(s))
}

// cut shortens s for a message without quoting it.
func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// toFloat converts v to a float.
func toFloat(t *servicefile.Type, v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case json.Number:
		var err error
		f, err = strconv.ParseFloat(string(x), 64)
		if err != nil && !isRangeErr(err) {
			return 0, errf(ErrType, "want float, got json.Number %s", quote(string(x)))
		}
		if err != nil {
			return 0, errf(ErrRange, "%s is out of range for float (a 64-bit IEEE 754 number)", cut(string(x)))
		}
	default:
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.Float32, reflect.Float64:
			f = rv.Float()
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			n := rv.Int()
			f = float64(n)
			if f >= 1<<63 || int64(f) != n {
				return 0, inexact(strconv.FormatInt(n, 10))
			}
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			u := rv.Uint()
			f = float64(u)
			if f >= 1<<64 || uint64(f) != u {
				return 0, inexact(strconv.FormatUint(u, 10))
			}
		default:
			return 0, wrongType(t, v)
		}
	}
	if err := finite(f); err != nil {
		return 0, err
	}
	return f, nil
}

func inexact(n string) error {
	return errf(ErrRange, "the integer %s has no exact float value; convert it yourself if rounding is meant", n)
}

// finite reports NaN and ±Inf, which are not float values.
func finite(f float64) error {
	switch {
	case math.IsNaN(f):
		return errf(ErrRange, "NaN is not a float value (floats are finite)")
	case math.IsInf(f, 1):
		return errf(ErrRange, "+Inf is not a float value (floats are finite)")
	case math.IsInf(f, -1):
		return errf(ErrRange, "-Inf is not a float value (floats are finite)")
	}
	return nil
}

// toBool converts v to a bool.
func toBool(t *servicefile.Type, v any) (bool, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Bool {
		return rv.Bool(), nil
	}
	return false, wrongType(t, v)
}

// toString converts v to a string, which must be UTF-8.
func toString(t *servicefile.Type, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		rv := reflect.ValueOf(v)
		if rv.Kind() != reflect.String {
			return "", wrongType(t, v)
		}
		s = rv.String()
	}
	if i := invalidUTF8(s); i >= 0 {
		return "", errf(ErrInvalid, "not valid UTF-8 (byte 0x%02x at index %d)", s[i], i)
	}
	return s, nil
}

// invalidUTF8 returns the index of the first byte of s that is not valid
// UTF-8, or -1.
func invalidUTF8(s string) int {
	if utf8.ValidString(s) {
		return -1
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// toBytes converts v to a byte string: a []byte as is, any other slice or
// array of bytes copied.
func toBytes(t *servicefile.Type, v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return rv.Bytes(), nil
		}
	case reflect.Array:
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, rv.Len())
			for i := range b {
				b[i] = byte(rv.Index(i).Uint())
			}
			return b, nil
		}
	}
	return nil, wrongType(t, v)
}
