package session

import (
	"errors"
	"fmt"
	"strings"

	"github.com/bearerkit/connect/wire"
)

// Sentinel errors. Decode wraps them in a *DecodeError; Encode and Append
// wrap them in an *EncodeError. Test with errors.Is. The TLV errors are the
// wire package's own, so errors.Is(err, wire.ErrMalformed) works too.
var (
	// ErrTruncated: the input ended inside a field tag, length or value.
	ErrTruncated = wire.ErrTruncated
	// ErrMalformed: bytes that cannot be valid where they are: a
	// non-minimal varint, tag 0, an integer too large for its field, a bool
	// other than 0 or 1, a string that is not UTF-8, a field value that
	// breaks a rule.
	ErrMalformed = wire.ErrMalformed
	// ErrDuplicateField: a field that is not repeated occurs twice.
	ErrDuplicateField = wire.ErrDuplicateField
	// ErrMissingField: a required field is absent or zero.
	ErrMissingField = wire.ErrMissingField
	// ErrFieldTooLarge: a string, a byte string or a repeated field is
	// longer than its limit.
	ErrFieldTooLarge = wire.ErrFieldTooLarge
	// ErrUnknownKind: the first byte is not a kind this version defines.
	// A receiver answers an unknown request kind with an Error of code
	// CodeUnsupported when the id can be read (DecodeError.ID).
	ErrUnknownKind = errors.New("unknown message kind")
	// ErrTooLarge: the message is empty or longer than MaxMessageSize.
	ErrTooLarge = errors.New("message size out of range")
)

// DecodeError reports bytes that are not a valid message, saying what and
// where:
//
//	session: decode Call field method at offset 14: field too large: 300 bytes, limit 64
//
// Unwrap returns Err.
type DecodeError struct {
	// Kind is the message kind, from the first byte; 0 if there was none.
	Kind Kind
	// Field names the field at fault ("kind", "id", "method", "tag 9" for
	// a field this version does not define, "fields" for the TLV structure
	// as a whole); "" when no field applies.
	Field string
	// Offset counts bytes from the start of the message (the kind byte is
	// offset 0). For a missing field it is the length of the message.
	Offset int
	// ID is the message's id (tag 1) when the message is a request or a
	// response (or an unknown kind) and its id could be read; 0 otherwise.
	// A server answers a faulty request with an Error carrying it, and a
	// client fails the request waiting for it.
	ID uint64
	// Err is the cause; it wraps one of the sentinel errors.
	Err error
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("session: decode ")
	if e.Kind != 0 {
		b.WriteString(e.Kind.String())
	} else {
		b.WriteString("message")
	}
	if e.Field != "" {
		b.WriteString(" field ")
		b.WriteString(e.Field)
	}
	fmt.Fprintf(&b, " at offset %d", e.Offset)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// EncodeError reports a message that breaks a rule and was therefore not
// encoded:
//
//	session: encode Call field method: required field missing or zero
type EncodeError struct {
	Kind  Kind
	Field string
	Err   error
}

func (e *EncodeError) Error() string {
	s := "session: encode " + e.Kind.String()
	if e.Field != "" {
		s += " field " + e.Field
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *EncodeError) Unwrap() error { return e.Err }
