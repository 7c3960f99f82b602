// Package wire owns the Connect wire protocol, version 1: the frame format,
// the connection-level message types (Hello, Welcome, Reject, Ping, Pong,
// Close, Data), their TLV payload encoding, the version check, and Conn, which
// reads and writes frames over a stream bearer connection (one byte stream)
// or a datagram bearer connection (one frame per datagram).
//
// The specification is docs/PROTOCOL.md; this package is its reference
// implementation. It imports nothing of Connect.
//
// # Frames
//
// A frame is a 12-byte header followed by a payload:
//
//	version u8 | type u8 | flags u16 | channel u32 | length u32 | payload
//
// all big-endian. AppendFrame encodes one, ParseHeader and DecodeFrame decode
// one. Decoders reject, before allocating anything, a frame whose length
// exceeds the configured maximum payload.
//
// # Messages
//
// Control messages (Hello, Welcome, Reject, Ping, Pong, Close) travel on
// channel 0 with no flags; their payload is a sequence of TLV fields so that
// later versions can add fields that older peers skip. Data frames carry an
// opaque application payload on a channel; the layers above (sessions, resume)
// own channel numbers, flags and the payload format. DecodeMessage turns a
// frame into a Message; AppendMessage and MessageFrame go the other way.
// The TLV helpers (AppendUint64Field, FieldReader, ...) are exported so that
// later layers can encode their own messages the same way.
//
// # Errors
//
// Decoders never panic and never trust a length beyond the configured limits.
// Every decode failure is a *DecodeError naming the frame type, the field and
// the byte offset, wrapping one of the sentinel errors (ErrVersion,
// ErrTruncated, ...). Input from a peer that does not speak Connect at all
// fails with ErrVersion and a message saying so.
//
// # Concurrency
//
// The encoding and decoding functions are safe for concurrent use; they keep
// no state. Message values are plain data: do not change one while it is
// being encoded. See Conn for the rules of a connection.
package wire

import (
	"encoding/binary"
	"fmt"
)

// Version is the protocol version this package implements. It is both the
// frame format version carried in every header and the only protocol version
// NegotiateVersion selects.
const Version uint8 = 1

const (
	// HeaderSize is the size of a frame header in bytes.
	HeaderSize = 12
	// MaxFrameHardLimit is the largest payload any reader accepts, whatever
	// it is configured to: 16 MiB.
	MaxFrameHardLimit = 16 << 20
	// DefaultMaxPayload is the maximum payload used when a reader is
	// configured with zero or a negative value: 1 MiB.
	DefaultMaxPayload = 1 << 20
	// MaxDatagramPayload is the largest payload a datagram connection
	// carries: the largest UDP payload over IPv4 (65507 bytes) minus the
	// frame header.
	MaxDatagramPayload = 65507 - HeaderSize
)

// Type is a frame's message type.
type Type uint8

// The message types of version 1. Values 0x01 to 0x0f are connection control;
// 0x10 is application data; everything else is reserved.
const (
	// TypeHello is the client's first frame on a connection: versions,
	// client id, credentials.
	TypeHello Type = 0x01
	// TypeWelcome is the server's acceptance of a Hello.
	TypeWelcome Type = 0x02
	// TypeReject is the server's refusal of a Hello (or of a connection
	// that sent none in time); the server closes the connection after it.
	TypeReject Type = 0x03
	// TypePing asks the peer for a Pong.
	TypePing Type = 0x04
	// TypePong answers a Ping.
	TypePong Type = 0x05
	// TypeClose announces that the sender is closing the connection, with a
	// code and a reason.
	TypeClose Type = 0x06
	// TypeData carries an opaque payload on a channel.
	TypeData Type = 0x10
)

// String returns the type's name, for example "Hello", or "Type(0x7f)" for a
// type this version does not define.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeWelcome:
		return "Welcome"
	case TypeReject:
		return "Reject"
	case TypePing:
		return "Ping"
	case TypePong:
		return "Pong"
	case TypeClose:
		return "Close"
	case TypeData:
		return "Data"
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Known reports whether t is a type version 1 defines.
func (t Type) Known() bool {
	return t >= TypeHello && t <= TypeClose || t == TypeData
}

// IsControl reports whether t is a connection control type (Hello to Close).
// Control frames travel on channel 0 with no flags.
func (t Type) IsControl() bool { return t >= TypeHello && t <= TypeClose }

// Header is a decoded frame header.
type Header struct {
	Version uint8  // always Version once ParseHeader accepted it
	Type    Type   // message type
	Flags   uint16 // owned by the layer that owns the channel; 0 on control frames
	Channel uint32 // 0 for control frames; assigned by later layers for Data
	Length  uint32 // payload length in bytes
}

// Frame is one frame: a header without its version and length, and the
// payload. The zero Frame is not valid (its type is 0).
type Frame struct {
	Type    Type
	Flags   uint16
	Channel uint32
	Payload []byte
}

// AppendFrame appends the encoding of f to dst and returns the extended
// slice. It does not check f: a frame with an unknown type, a control frame
// with a channel or flags, or a payload longer than the reader's limit is
// encoded as given and rejected by the reader. Conn.WriteFrame checks. A
// payload of 4 GiB or more cannot be represented; its length is truncated
// to 32 bits.
func AppendFrame(dst []byte, f Frame) []byte {
	dst = appendHeader(dst, f.Type, f.Flags, f.Channel, uint32(len(f.Payload)))
	return append(dst, f.Payload...)
}

func appendHeader(dst []byte, t Type, flags uint16, channel, length uint32) []byte {
	dst = append(dst, Version, byte(t))
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint32(dst, channel)
	return binary.BigEndian.AppendUint32(dst, length)
}

// ParseHeader decodes the frame header at the start of b. It checks, in this
// order: the version byte (ErrVersion; checked even when b holds fewer than
// HeaderSize bytes, so that a foreign protocol is recognised at once), that
// b holds a whole header (ErrTruncated), the type (ErrUnknownType), that a
// control frame has channel 0 and no flags (ErrMalformed), and that the
// length is at most MaxFrameHardLimit (ErrFrameTooLarge). It does not look at
// the payload. Errors are *DecodeError.
func ParseHeader(b []byte) (Header, error) {
	if len(b) == 0 {
		return Header{}, &DecodeError{Field: "header", Err: fmt.Errorf("%w: no bytes", ErrTruncated)}
	}
	if b[0] != Version {
		return Header{}, versionError(b)
	}
	if len(b) < HeaderSize {
		return Header{}, &DecodeError{Field: "header", Offset: len(b),
			Err: fmt.Errorf("%w: %d of %d header bytes", ErrTruncated, len(b), HeaderSize)}
	}
	h := Header{
		Version: b[0],
		Type:    Type(b[1]),
		Flags:   binary.BigEndian.Uint16(b[2:4]),
		Channel: binary.BigEndian.Uint32(b[4:8]),
		Length:  binary.BigEndian.Uint32(b[8:12]),
	}
	if !h.Type.Known() {
		return Header{}, &DecodeError{Field: "header.type", Offset: 1,
			Err: fmt.Errorf("%w 0x%02x", ErrUnknownType, b[1])}
	}
	if err := checkControlHeader(h.Type, h.Flags, h.Channel); err != nil {
		return Header{}, err
	}
	if h.Length > MaxFrameHardLimit {
		return Header{}, tooLarge(h.Type, h.Length, MaxFrameHardLimit)
	}
	return h, nil
}

func checkControlHeader(t Type, flags uint16, channel uint32) error {
	if !t.IsControl() {
		return nil
	}
	if channel != 0 {
		return &DecodeError{Type: t, Field: "header.channel", Offset: 4,
			Err: fmt.Errorf("%w: control frame on channel %d, want 0", ErrMalformed, channel)}
	}
	if flags != 0 {
		return &DecodeError{Type: t, Field: "header.flags", Offset: 2,
			Err: fmt.Errorf("%w: control frame with flags 0x%04x, want 0", ErrMalformed, flags)}
	}
	return nil
}

func tooLarge(t Type, length uint32, limit int) error {
	return &DecodeError{Type: t, Field: "header.length", Offset: 8,
		Err: fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d", ErrFrameTooLarge, length, limit)}
}

// normMax turns a configured maximum payload into the effective one: zero or
// negative means DefaultMaxPayload, and nothing exceeds MaxFrameHardLimit.
func normMax(maxPayload int) int {
	if maxPayload <= 0 {
		return DefaultMaxPayload
	}
	return min(maxPayload, MaxFrameHardLimit)
}

// DecodeFrame decodes the frame at the start of b, typically one datagram. It
// returns the frame and the number of bytes it occupied; bytes after it are
// left to the caller (a datagram reader treats them as an error). The payload
// aliases b and has its capacity clipped to its length, so appending to it
// never overwrites b.
//
// maxPayload is the largest payload accepted: zero or negative means
// DefaultMaxPayload; values above MaxFrameHardLimit mean MaxFrameHardLimit. A
// longer declared length fails with ErrFrameTooLarge whether or not the bytes
// are there. DecodeFrame does not allocate except to report an error. Errors
// are *DecodeError; see ParseHeader for the header checks.
func DecodeFrame(b []byte, maxPayload int) (Frame, int, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Frame{}, 0, err
	}
	limit := normMax(maxPayload)
	if h.Length > uint32(limit) {
		return Frame{}, 0, tooLarge(h.Type, h.Length, limit)
	}
	end := HeaderSize + int(h.Length)
	if len(b) < end {
		return Frame{}, 0, &DecodeError{Type: h.Type, Field: "payload", Offset: len(b),
			Err: fmt.Errorf("%w: header declares %d payload bytes, %d present", ErrTruncated, h.Length, len(b)-HeaderSize)}
	}
	return Frame{Type: h.Type, Flags: h.Flags, Channel: h.Channel, Payload: b[HeaderSize:end:end]}, end, nil
}
