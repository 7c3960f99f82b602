package wire

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. The package never returns them bare: decoders wrap them in
// a *DecodeError that says which frame type, which field and which byte
// offset, and connections wrap them with what they were doing. Test with
// errors.Is.
var (
	// ErrTruncated: the input ended inside a frame header, a payload, a
	// field tag, a field length or a field value. On a stream it means the
	// peer closed the connection in the middle of a frame (the error then
	// also wraps io.ErrUnexpectedEOF).
	ErrTruncated = errors.New("truncated")
	// ErrFrameTooLarge: a frame header declares a payload longer than the
	// reader's configured maximum (or than MaxFrameHardLimit), or a writer
	// was given a payload longer than the connection's maximum. Readers
	// report it before allocating anything for the payload.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrVersion: the first byte of a frame is not protocol version 1. This
	// is what any non-Connect peer produces (an HTTP request, a TLS
	// handshake, random bytes); the wrapping error names the byte and, when
	// it recognises one, the protocol the peer seems to speak.
	ErrVersion = errors.New("peer does not speak Connect protocol v1")
	// ErrUnknownType: a frame header carries a message type this version
	// does not define. Version 1 decoders reject such frames (see
	// docs/PROTOCOL.md, "Unknown frame types").
	ErrUnknownType = errors.New("unknown frame type")
	// ErrMalformed: bytes that cannot be valid in their position: a
	// non-minimal or overlong varint, a field tag of zero, an integer that
	// overflows its field, a bool other than 0 or 1, a string that is not
	// UTF-8, a control frame on a channel other than 0 or with flags set,
	// a field value that breaks a rule (for example MinVersion > MaxVersion).
	ErrMalformed = errors.New("malformed")
	// ErrDuplicateField: a message payload holds a field this version knows
	// more than once.
	ErrDuplicateField = errors.New("duplicate field")
	// ErrMissingField: a required field is absent or zero.
	ErrMissingField = errors.New("required field missing or zero")
	// ErrFieldTooLarge: a string or bytes field is longer than its limit
	// (MaxTokenLen, MaxNameLen, MaxTextLen, or the exact size of an id).
	ErrFieldTooLarge = errors.New("field too large")
	// ErrTrailingData: a datagram holds bytes after its frame. Each datagram
	// must carry exactly one frame.
	ErrTrailingData = errors.New("trailing data after frame")
)

// DecodeError reports bytes that could not be decoded, saying what and where.
// Its Error method reads like
//
//	wire: decode Hello field token at offset 17: truncated: length 40, 3 bytes left
//
// Unwrap returns Err, so errors.Is(err, ErrTruncated) and the like work.
type DecodeError struct {
	// Type is the frame type being decoded; zero if the header was not
	// understood far enough to know it.
	Type Type
	// Field names the field at fault: a header field ("header.version",
	// "header.type", "header.length", "header.channel", "header.flags"),
	// "header" or "payload" as a whole, or a message field by its name in
	// docs/PROTOCOL.md ("client_id", "token", ...), or "tag N" for a
	// field this version does not know. Empty if no field applies.
	Field string
	// Offset counts bytes from the start of the frame: the header is
	// bytes 0 to 11 and the payload starts at HeaderSize. For a message
	// field it is the offset of the field's tag; for a missing field, the
	// end of the payload.
	Offset int
	// Err is the cause; it wraps one of the sentinel errors.
	Err error
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("wire: decode ")
	if e.Type.Known() {
		b.WriteString(e.Type.String())
	} else {
		b.WriteString("frame")
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

// versionError builds the error for a first byte that is not Version. b holds
// that byte and whatever follows it that is already at hand (it may be one
// byte only); it is used to recognise common foreign protocols.
func versionError(b []byte) error {
	first := b[0]
	var what strings.Builder
	fmt.Fprintf(&what, "first byte 0x%02x", first)
	if first >= 0x20 && first < 0x7f {
		fmt.Fprintf(&what, " %q", rune(first))
	}
	if hint := foreignProtocol(b); hint != "" {
		what.WriteString("; ")
		what.WriteString(hint)
	}
	return &DecodeError{
		Field:  "header.version",
		Offset: 0,
		Err:    fmt.Errorf("%w: not a Connect v1 frame (%s)", ErrVersion, what.String()),
	}
}

// foreignProtocol guesses what a peer that sent b speaks instead.
func foreignProtocol(b []byte) string {
	s := string(b[:min(len(b), 16)])
	for _, p := range []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ", "PRI * HTTP/2", "HTTP/"} {
		if strings.HasPrefix(s, p) || (len(s) < len(p) && len(s) >= 3 && strings.HasPrefix(p, s)) {
			return "looks like HTTP"
		}
	}
	switch {
	case strings.HasPrefix(s, "SSH-"):
		return "looks like SSH"
	case len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03:
		return "looks like a TLS handshake: is the peer using ssl:// against a plain endpoint?"
	case b[0] >= 2 && b[0] <= 0x0f:
		return fmt.Sprintf("frame version %d; this side speaks version %d", b[0], Version)
	}
	return ""
}
