package services

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/services/servicefile"
)

// Sentinel errors. The package never returns them bare: every error is an
// *Error that says what was being done and where, and wraps one of these.
// Test with errors.Is.
var (
	// ErrType: a value of the wrong kind for its type: a Go string where
	// an int is wanted, a JSON array where a struct is, a Go float for an
	// int.
	ErrType = errors.New("wrong type")
	// ErrRange: a number that does not fit its type: an integer outside
	// int64, a float that overflows float64, NaN or ±Inf (floats are
	// finite), an integer that a float cannot hold exactly.
	ErrRange = errors.New("out of range")
	// ErrInvalid: bytes or text that cannot be a value in their position:
	// a string that is not UTF-8, bad base64 or hex, a non-minimal or
	// overlong varint, a bool byte other than 0 or 1, malformed JSON, a
	// duplicate key in a JSON object.
	ErrInvalid = errors.New("invalid")
	// ErrMissingField: a struct value (or the arguments of a method or
	// event) without one of its fields.
	ErrMissingField = errors.New("missing field")
	// ErrUnknownField: a struct value (or arguments) with a key that is
	// not one of its fields.
	ErrUnknownField = errors.New("unknown field")
	// ErrTruncated: the input ends inside a value, or declares a string,
	// byte string or list longer than the input left can hold.
	ErrTruncated = errors.New("truncated")
	// ErrTrailingData: bytes (or, for JSON and text, anything but white
	// space) after the value.
	ErrTrailingData = errors.New("trailing data")
	// ErrTooDeep: a value nested more than MaxDepth levels.
	ErrTooDeep = errors.New("nested too deep")
	// ErrTooLarge: a value with more than MaxEmptyValues struct values
	// that carry no data.
	ErrTooLarge = errors.New("too large")
	// ErrBadType: the *servicefile.Type itself is unusable: nil, an
	// unknown Kind, a list without an element type, a nil field. Types
	// from servicefile.Parse never are.
	ErrBadType = errors.New("invalid type")
)

// Error reports a value that does not fit its type, saying what was being
// done, where in the value and, for bytes and JSON, at which offset. Its
// Error method reads like
//
//	services: decode args.position[3].x at offset 17: truncated: float needs 8 bytes, 3 left
//	services: check track.duration: want float, got string "abc"
//	services: decode JSON track at offset 1: unknown field "titel" (known: title, duration, tags, cover)
//
// Unwrap returns Err, which wraps one of the sentinel errors.
type Error struct {
	// Op is what was being done: "check" (Check, Normalize, and the Go
	// value given to FormatText), "encode" (AppendValue, AppendArgs),
	// "decode" (DecodeValue, DecodeArgs), "encode JSON" (MarshalJSON),
	// "decode JSON" (UnmarshalJSON) or "parse text" (ParseText).
	Op string
	// Path is where in the value: "" for the value as a whole, field
	// names joined with dots and list indexes in brackets below it
	// ("tracks[2].title", "[0][3]"). For arguments it starts with "args."
	// and the argument's name ("args.position[3].x").
	Path string
	// Offset is the byte offset in the input (the binary encoding, the
	// JSON document, the text) where the fault is: the start of the value
	// at fault, or the bad byte itself. It is -1 when there is no input:
	// for a Go value, and for a text int, float, bool or binary, which is
	// reported whole.
	Offset int
	// Err says what is wrong; it wraps a sentinel error.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("services: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	if e.Path == "" {
		b.WriteString("value")
	} else {
		b.WriteString(e.Path)
	}
	if e.Offset >= 0 {
		b.WriteString(" at offset ")
		b.WriteString(strconv.Itoa(e.Offset))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// cause is an error message that wraps a sentinel without repeating its
// text, so that messages read naturally ("want int, got string") and
// errors.Is still works.
type cause struct {
	msg  string
	kind error
}

func (c *cause) Error() string { return c.msg }
func (c *cause) Unwrap() error { return c.kind }

// errf returns an *Error (with no path, op or offset yet) wrapping kind.
func errf(kind error, format string, args ...any) *Error {
	return &Error{Offset: -1, Err: &cause{msg: fmt.Sprintf(format, args...), kind: kind}}
}

// errAt is errf with an offset.
func errAt(off int, kind error, format string, args ...any) *Error {
	e := errf(kind, format, args...)
	e.Offset = off
	return e
}

// inField prepends a field name to err's path. Errors from this package's
// walkers are always *Error; anything else is returned as is.
func inField(err error, name string) error {
	if e, ok := err.(*Error); ok {
		switch {
		case e.Path == "":
			e.Path = name
		case e.Path[0] == '[':
			e.Path = name + e.Path
		default:
			e.Path = name + "." + e.Path
		}
	}
	return err
}

// inIndex prepends a list index to err's path.
func inIndex(err error, i int) error {
	if e, ok := err.(*Error); ok {
		idx := "[" + strconv.Itoa(i) + "]"
		switch {
		case e.Path == "" || e.Path[0] == '[':
			e.Path = idx + e.Path
		default:
			e.Path = idx + "." + e.Path
		}
	}
	return err
}

// finish sets the op of an error leaving an exported function.
func finish(err error, op string) error {
	if e, ok := err.(*Error); ok {
		e.Op = op
	}
	return err
}

// argsPath is the path prefix of errors about arguments.
const argsPath = "args"

// badType reports an unusable *servicefile.Type.
func badType(t *servicefile.Type) *Error {
	switch {
	case t == nil:
		return errf(ErrBadType, "invalid type: nil")
	case t.Kind == servicefile.List && t.Elem == nil:
		return errf(ErrBadType, "invalid type: list without an element type")
	}
	return errf(ErrBadType, "invalid type: kind %d", t.Kind)
}

// badField reports a nil field, or a field without a type, of a struct.
func badField(i int) *Error {
	return errf(ErrBadType, "invalid type: field %d is nil or has no type", i)
}

// tooDeep reports a value nested deeper than MaxDepth.
func tooDeep() *Error {
	return errf(ErrTooDeep, "nested more than %d levels deep", MaxDepth)
}

// tooManyEmpty reports more than MaxEmptyValues struct values that carry
// no data.
func tooManyEmpty() *Error {
	return errf(ErrTooLarge, "more than %d struct values that carry no data (no fields, or only such fields) in one value", MaxEmptyValues)
}

// quote quotes s for a message, cut to 40 characters.
func quote(s string) string {
	const max = 40
	n := 0
	for i := range s {
		if n == max {
			s = s[:i] + "..."
			break
		}
		n++
	}
	return strconv.Quote(s)
}

// describe names a Go value for a message: its type, and for a scalar its
// value ("string \"abc\"", "float64 1.5", "[]int", "nil").
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "nil"
	case string:
		return "string " + quote(x)
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprintf("%T %v", v, v)
	}
	s := fmt.Sprintf("%T", v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

// wrongType reports a Go value of the wrong kind for t.
func wrongType(t *servicefile.Type, v any) *Error {
	return errf(ErrType, "want %s, got %s", typeName(t), describe(v))
}

// typeName names a type as the service file writes it ("int", "Track",
// "float[][]"), like (*servicefile.Type).String, but safe on a hand-built
// type that contains itself.
func typeName(t *servicefile.Type) string {
	lists := 0
	for t != nil && t.Kind == servicefile.List && lists < MaxDepth {
		t = t.Elem
		lists++
	}
	var name string
	switch {
	case t == nil:
		name = "<nil>"
	case t.Kind == servicefile.List:
		name = "..."
	case t.Kind == servicefile.Struct:
		name = t.Name
		if name == "" {
			name = "object"
		}
	default:
		name = t.Kind.String()
	}
	return name + strings.Repeat("[]", lists)
}

// nameList lists names for a message, at most 10 of them.
func nameList(fields []*servicefile.Field) string {
	var b strings.Builder
	for i, f := range fields {
		if i == 10 {
			b.WriteString(", ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if f != nil {
			b.WriteString(f.Name)
		}
	}
	return b.String()
}

// memberWord is "field" for a struct's fields, "argument" for arguments.
func memberWord(args bool) string {
	if args {
		return "argument"
	}
	return "field"
}

// missingField reports a struct value (or arguments) without field name.
// The error's path is the field's.
func missingField(name string, args bool) *Error {
	e := errf(ErrMissingField, "missing %s", memberWord(args))
	e.Path = name
	return e
}

// unknownField reports a key that is not a field. The error's path is the
// struct's: the key may be any string.
func unknownField(key string, fields []*servicefile.Field, args bool) *Error {
	if len(fields) == 0 {
		return errf(ErrUnknownField, "unknown %s %s (there are none)", memberWord(args), quote(key))
	}
	return errf(ErrUnknownField, "unknown %s %s (known: %s)", memberWord(args), quote(key), nameList(fields))
}
