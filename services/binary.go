package services

import (
	"encoding/binary"
	"math"
	"unicode/utf8"

	"github.com/bearerkit/connect/services/servicefile"
)

// The binary encoding (docs/SERVICES.md, "Values"). It is directed by the
// type, which both sides know from the service file, so it carries no tags
// and no field names:
//
//	int     zigzag varint (encoding/binary's AppendVarint), minimal
//	float   8 bytes, IEEE 754 binary64, little-endian; finite
//	bool    1 byte, 0 or 1
//	string  uvarint byte length, then the bytes (UTF-8)
//	binary  uvarint byte length, then the bytes
//	list    uvarint element count, then the elements
//	struct  the fields in schema order, nothing else
//
// Varints are minimal (no trailing 0x80 groups, at most 10 bytes), so every
// value has exactly one encoding: a successful DecodeValue re-encodes to the
// very bytes it read.

// AppendValue appends the binary encoding of v, a value of type t, to dst.
// It accepts every Go value Normalize accepts. On error it returns dst
// with its original length (bytes past it may have been written) and an
// *Error with Op "encode".
func AppendValue(dst []byte, t *servicefile.Type, v any) ([]byte, error) {
	e := encoder{}
	out, err := e.value(dst, t, v, 1)
	if err != nil {
		return dst, finish(err, "encode")
	}
	return out, nil
}

// AppendArgs appends the binary encoding of the arguments of a method or an
// event, declared by fields (servicefile.Method.Args or Event.Args), to
// dst: the same as a struct of those fields. args must hold every argument
// and nothing else. Error paths start with "args." and the argument's name.
func AppendArgs(dst []byte, fields []*servicefile.Field, args map[string]any) ([]byte, error) {
	e := encoder{}
	out, err := e.fields(dst, fields, args, 1, true)
	if err != nil {
		return dst, finish(inField(err, argsPath), "encode")
	}
	return out, nil
}

// DecodeValue decodes the binary encoding of a value of type t, which must
// fill b exactly, and returns it in the canonical representation. It does
// not keep b: strings and byte slices are copies. Errors are *Error with Op
// "decode", the path of the value at fault and the byte offset in b.
func DecodeValue(t *servicefile.Type, b []byte) (any, error) {
	d := decoder{b: b}
	v, err := d.value(t, 1)
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, finish(err, "decode")
	}
	return v, nil
}

// DecodeArgs decodes the arguments of a method or an event, declared by
// fields, as AppendArgs encodes them: a map holding every argument. Error
// paths start with "args." and the argument's name.
func DecodeArgs(fields []*servicefile.Field, b []byte) (map[string]any, error) {
	d := decoder{b: b}
	m, err := d.fields(fields, 1)
	if err == nil {
		err = d.end()
	}
	if err != nil {
		return nil, finish(inField(err, argsPath), "decode")
	}
	return m, nil
}

// encoder writes the binary encoding of Go values.
type encoder struct {
	empties int // struct values that carry no data
}

func (e *encoder) value(dst []byte, t *servicefile.Type, v any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return dst, tooDeep()
	}
	if t == nil {
		return dst, badType(t)
	}
	switch t.Kind {
	case servicefile.Int:
		n, err := toInt(t, v)
		if err != nil {
			return dst, err
		}
		return binary.AppendVarint(dst, n), nil
	case servicefile.Float:
		f, err := toFloat(t, v)
		if err != nil {
			return dst, err
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case servicefile.Bool:
		b, err := toBool(t, v)
		if err != nil {
			return dst, err
		}
		if b {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	case servicefile.String:
		s, err := toString(t, v)
		if err != nil {
			return dst, err
		}
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		return append(dst, s...), nil
	case servicefile.Binary:
		b, err := toBytes(t, v)
		if err != nil {
			return dst, err
		}
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		return append(dst, b...), nil
	case servicefile.List:
		if t.Elem == nil {
			return dst, badType(t)
		}
		l, _, ok := asList(v)
		if !ok {
			return dst, wrongType(t, v)
		}
		dst = binary.AppendUvarint(dst, uint64(len(l)))
		for i, x := range l {
			var err error
			if dst, err = e.value(dst, t.Elem, x, depth+1); err != nil {
				return dst, inIndex(err, i)
			}
		}
		return dst, nil
	case servicefile.Struct:
		m, _, ok := asMap(v)
		if !ok {
			return dst, wrongType(t, v)
		}
		return e.fields(dst, t.Fields, m, depth, false)
	}
	return dst, badType(t)
}

// fields writes a struct's fields (or arguments) in order.
func (e *encoder) fields(dst []byte, fields []*servicefile.Field, m map[string]any, depth int, args bool) ([]byte, error) {
	start := len(dst)
	for i, f := range fields {
		if f == nil || f.Type == nil {
			return dst, badField(i)
		}
		x, ok := m[f.Name]
		if !ok {
			return dst, missingField(f.Name, args)
		}
		var err error
		if dst, err = e.value(dst, f.Type, x, depth+1); err != nil {
			return dst, inField(err, f.Name)
		}
	}
	if len(m) != len(fields) {
		return dst, unknownKey(m, fields, args)
	}
	if len(dst) == start { // a struct that carries no data
		if e.empties++; e.empties > MaxEmptyValues {
			return dst, tooManyEmpty()
		}
	}
	return dst, nil
}

// decoder reads the binary encoding.
type decoder struct {
	b       []byte
	off     int
	empties int // struct values that carry no data
}

// end reports bytes after the value.
func (d *decoder) end() error {
	if n := len(d.b) - d.off; n > 0 {
		return errAt(d.off, ErrTrailingData, "%d bytes after the value", n)
	}
	return nil
}

// uvarint reads a minimal uvarint; what names it in errors.
func (d *decoder) uvarint(what string) (uint64, error) {
	var v uint64
	b := d.b[d.off:]
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if i == len(b) {
			if i == 0 {
				return 0, errAt(d.off, ErrTruncated, "%s: input ends before it", what)
			}
			return 0, errAt(d.off, ErrTruncated, "%s: varint ends after %d bytes", what, i)
		}
		c := b[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, errAt(d.off, ErrInvalid, "%s: varint overflows 64 bits", what)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, errAt(d.off, ErrInvalid, "%s: non-minimal varint", what)
			}
			d.off += i + 1
			return v, nil
		}
	}
	// Unreachable: the tenth byte is either > 1 (overflow) or < 0x80.
	return 0, errAt(d.off, ErrInvalid, "%s: varint longer than %d bytes", what, binary.MaxVarintLen64)
}

// length reads the length of a string or binary and checks it against the
// bytes left.
func (d *decoder) length(what string) (int, error) {
	start := d.off
	n, err := d.uvarint(what + " length")
	if err != nil {
		return 0, err
	}
	if left := len(d.b) - d.off; n > uint64(left) {
		return 0, errAt(start, ErrTruncated, "%s of %d bytes, only %d left", what, n, left)
	}
	return int(n), nil
}

func (d *decoder) value(t *servicefile.Type, depth int) (any, error) {
	if depth > MaxDepth {
		return nil, errAt(d.off, ErrTooDeep, "nested more than %d levels deep", MaxDepth)
	}
	if t == nil {
		e := badType(t)
		e.Offset = d.off
		return nil, e
	}
	switch t.Kind {
	case servicefile.Int:
		u, err := d.uvarint("int")
		if err != nil {
			return nil, err
		}
		return int64(u>>1) ^ -int64(u&1), nil
	case servicefile.Float:
		if left := len(d.b) - d.off; left < 8 {
			return nil, errAt(d.off, ErrTruncated, "float needs 8 bytes, %d left", left)
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off:]))
		if err := finite(f); err != nil {
			err.(*Error).Offset = d.off
			return nil, err
		}
		d.off += 8
		return f, nil
	case servicefile.Bool:
		if d.off == len(d.b) {
			return nil, errAt(d.off, ErrTruncated, "bool needs 1 byte, none left")
		}
		c := d.b[d.off]
		if c > 1 {
			return nil, errAt(d.off, ErrInvalid, "bool byte 0x%02x is not 0 or 1", c)
		}
		d.off++
		return c == 1, nil
	case servicefile.String:
		n, err := d.length("string")
		if err != nil {
			return nil, err
		}
		b := d.b[d.off : d.off+n]
		if !utf8.Valid(b) {
			i := invalidUTF8(string(b))
			return nil, errAt(d.off+i, ErrInvalid, "string is not valid UTF-8 (byte 0x%02x)", b[i])
		}
		d.off += n
		return string(b), nil
	case servicefile.Binary:
		n, err := d.length("binary")
		if err != nil {
			return nil, err
		}
		b := make([]byte, n)
		copy(b, d.b[d.off:])
		d.off += n
		return b, nil
	case servicefile.List:
		if t.Elem == nil {
			e := badType(t)
			e.Offset = d.off
			return nil, e
		}
		return d.list(t, depth)
	case servicefile.Struct:
		m, err := d.fields(t.Fields, depth)
		if err != nil {
			return nil, err
		}
		return m, nil
	}
	e := badType(t)
	e.Offset = d.off
	return nil, e
}

// list reads a list. Its count is checked before anything is allocated for
// it: against the bytes left, since every element of a type that carries
// data takes at least one byte; or, for a type that carries none (seen from
// the first element, which took no bytes), against what is left of
// MaxEmptyValues, since every element counts as many empty struct values
// as the first did.
func (d *decoder) list(t *servicefile.Type, depth int) (any, error) {
	start := d.off
	count, err := d.uvarint("list count")
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return []any{}, nil
	}
	left := len(d.b) - d.off
	before, emptiesBefore := d.off, d.empties
	first, err := d.value(t.Elem, depth+1)
	if err != nil {
		return nil, inIndex(err, 0)
	}
	if d.off == before {
		// Elements of a type that carries no data: a struct, so each
		// counts at least one.
		per := uint64(max(d.empties-emptiesBefore, 1))
		if count-1 > uint64(MaxEmptyValues-d.empties)/per {
			e := tooManyEmpty()
			e.Offset = start
			return nil, e
		}
	} else if count > uint64(left) {
		return nil, errAt(start, ErrTruncated, "list of %d elements, only %d bytes left", count, left)
	}
	n := int(count)
	l := make([]any, n)
	l[0] = first
	for i := 1; i < n; i++ {
		if l[i], err = d.value(t.Elem, depth+1); err != nil {
			return nil, inIndex(err, i)
		}
	}
	return l, nil
}

// fields reads a struct's fields (or arguments) in order.
func (d *decoder) fields(fields []*servicefile.Field, depth int) (map[string]any, error) {
	start := d.off
	m := make(map[string]any, len(fields))
	for i, f := range fields {
		if f == nil || f.Type == nil {
			e := badField(i)
			e.Offset = d.off
			return nil, e
		}
		x, err := d.value(f.Type, depth+1)
		if err != nil {
			return nil, inField(err, f.Name)
		}
		m[f.Name] = x
	}
	if d.off == start { // a struct that carries no data
		if d.empties++; d.empties > MaxEmptyValues {
			e := tooManyEmpty()
			e.Offset = start
			return nil, e
		}
	}
	return m, nil
}
