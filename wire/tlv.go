package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// TLV encoding of message payloads (docs/PROTOCOL.md, "Payload encoding").
//
// A payload is a sequence of fields, each
//
//	tag uvarint | length uvarint | value (length bytes)
//
// Varints are unsigned LEB128 (encoding/binary's Uvarint) and must be minimal:
// no trailing 0x80 continuation bytes, at most 10 bytes, no overflow. Tags
// run from 1 to MaxTag. Integers are a minimal uvarint filling the value
// exactly; signed integers are their two's complement as uint64; a bool is
// one byte 0 or 1; strings are UTF-8; byte strings are raw. Encoders write
// fields in tag order and omit fields whose value is zero; decoders accept any
// order, skip tags they do not know and reject duplicates of tags they know.

// MaxTag is the largest field tag.
const MaxTag = math.MaxUint32

// AppendUint64Field appends a field holding v as a uvarint.
func AppendUint64Field(dst []byte, tag uint64, v uint64) []byte {
	dst = binary.AppendUvarint(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(uvarintLen(v)))
	return binary.AppendUvarint(dst, v)
}

// AppendUint32Field appends a field holding v as a uvarint.
func AppendUint32Field(dst []byte, tag uint64, v uint32) []byte {
	return AppendUint64Field(dst, tag, uint64(v))
}

// AppendInt64Field appends a field holding v's two's complement as a uvarint.
func AppendInt64Field(dst []byte, tag uint64, v int64) []byte {
	return AppendUint64Field(dst, tag, uint64(v))
}

// AppendBoolField appends a field holding one byte, 1 for true and 0 for
// false.
func AppendBoolField(dst []byte, tag uint64, v bool) []byte {
	dst = binary.AppendUvarint(dst, tag)
	dst = append(dst, 1)
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// AppendStringField appends a field holding the bytes of s.
func AppendStringField(dst []byte, tag uint64, s string) []byte {
	dst = binary.AppendUvarint(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendBytesField appends a field holding b.
func AppendBytesField(dst []byte, tag uint64, b []byte) []byte {
	dst = binary.AppendUvarint(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// readUvarint decodes a minimal uvarint at the start of b.
func readUvarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if i == len(b) {
			return 0, 0, fmt.Errorf("%w: varint ends after %d bytes", ErrTruncated, i)
		}
		c := b[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, 0, fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return 0, 0, fmt.Errorf("%w: non-minimal varint", ErrMalformed)
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: varint longer than %d bytes", ErrMalformed, binary.MaxVarintLen64)
}

// Field is one TLV field of a payload.
type Field struct {
	// Tag is the field's tag, 1 to MaxTag.
	Tag uint64
	// Value is the field's value. It aliases the payload.
	Value []byte
	// Offset is the offset of the field's tag within the payload.
	Offset int
}

// Uint64 decodes a uvarint value that fills the field exactly.
func (f Field) Uint64() (uint64, error) {
	if len(f.Value) == 0 {
		return 0, fmt.Errorf("%w: empty integer", ErrMalformed)
	}
	v, n, err := readUvarint(f.Value)
	if err != nil {
		return 0, err
	}
	if n != len(f.Value) {
		return 0, fmt.Errorf("%w: %d bytes after the integer", ErrMalformed, len(f.Value)-n)
	}
	return v, nil
}

func (f Field) uint(limit uint64) (uint64, error) {
	v, err := f.Uint64()
	if err == nil && v > limit {
		err = fmt.Errorf("%w: value %d exceeds %d", ErrMalformed, v, limit)
	}
	return v, err
}

// Uint32 decodes a uvarint value of at most math.MaxUint32.
func (f Field) Uint32() (uint32, error) {
	v, err := f.uint(math.MaxUint32)
	return uint32(v), err
}

// Uint16 decodes a uvarint value of at most math.MaxUint16.
func (f Field) Uint16() (uint16, error) {
	v, err := f.uint(math.MaxUint16)
	return uint16(v), err
}

// Uint8 decodes a uvarint value of at most math.MaxUint8.
func (f Field) Uint8() (uint8, error) {
	v, err := f.uint(math.MaxUint8)
	return uint8(v), err
}

// Int64 decodes a uvarint value as the two's complement of an int64.
func (f Field) Int64() (int64, error) {
	v, err := f.Uint64()
	return int64(v), err
}

// Bool decodes a one-byte value, 0 or 1.
func (f Field) Bool() (bool, error) {
	if len(f.Value) != 1 || f.Value[0] > 1 {
		return false, fmt.Errorf("%w: bool must be one byte 0 or 1", ErrMalformed)
	}
	return f.Value[0] == 1, nil
}

// Text decodes a UTF-8 string of at most maxLen bytes. The string is a copy.
func (f Field) Text(maxLen int) (string, error) {
	if len(f.Value) > maxLen {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrFieldTooLarge, len(f.Value), maxLen)
	}
	if !utf8.Valid(f.Value) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	return string(f.Value), nil
}

// Bytes returns a byte string of at most maxLen bytes. It aliases the payload.
func (f Field) Bytes(maxLen int) ([]byte, error) {
	if len(f.Value) > maxLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFieldTooLarge, len(f.Value), maxLen)
	}
	return f.Value, nil
}

// FieldReader iterates over the TLV fields of a payload, in the manner of
// bufio.Scanner:
//
//	r := wire.NewFieldReader(payload)
//	for r.Next() {
//		f := r.Field()
//		...
//	}
//	if err := r.Err(); err != nil { ... }
//
// It checks the structure (tags, lengths) but not the values. It does not
// allocate except to report an error. A FieldReader is not safe for
// concurrent use.
type FieldReader struct {
	b   []byte
	off int
	cur Field
	err error
}

// NewFieldReader returns a reader over the fields of payload.
func NewFieldReader(payload []byte) FieldReader {
	return FieldReader{b: payload}
}

// Next advances to the next field. It returns false at the end of the payload
// or on a structural error, which Err then returns.
func (r *FieldReader) Next() bool {
	if r.err != nil || r.off >= len(r.b) {
		return false
	}
	start := r.off
	r.cur = Field{Offset: start}
	tag, n, err := readUvarint(r.b[start:])
	if err != nil {
		r.err = fmt.Errorf("field tag: %w", err)
		return false
	}
	if tag == 0 || tag > MaxTag {
		r.err = fmt.Errorf("%w: field tag %d out of range 1..%d", ErrMalformed, tag, uint64(MaxTag))
		return false
	}
	r.cur.Tag = tag
	p := start + n
	length, m, err := readUvarint(r.b[p:])
	if err != nil {
		r.err = fmt.Errorf("field length: %w", err)
		return false
	}
	p += m
	if left := len(r.b) - p; length > uint64(left) {
		r.err = fmt.Errorf("%w: field length %d, %d bytes left", ErrTruncated, length, left)
		return false
	}
	end := p + int(length)
	r.cur.Value = r.b[p:end:end]
	r.off = end
	return true
}

// Field returns the current field. After Next returned false because of an
// error, it holds what was decoded of the faulty field: its Offset always,
// its Tag if the tag was readable.
func (r *FieldReader) Field() Field { return r.cur }

// Err returns the structural error that stopped Next, or nil at the end of
// the payload. It wraps ErrTruncated or ErrMalformed.
func (r *FieldReader) Err() error { return r.err }
