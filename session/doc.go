// Package session defines the session-layer messages a Connect client and
// server exchange to use services: list and describe services, start and
// close sessions, call methods, subscribe to events and watch runtime data
// (specification: docs/PROTOCOL.md, "Sessions").
//
// The package is a codec and nothing else: Encode and Append turn a Message
// into bytes, Decode turns bytes back into a Message, and neither knows how
// the bytes travel. Over a stream bearer every message is one message of
// the client's resume stream (package resume); over a datagram bearer, the
// payload of one wire Data frame on Channel (2) of a registered connection.
//
// A message is one kind byte followed by TLV fields, encoded with the wire
// package's field helpers (docs/PROTOCOL.md, "Payload encoding"):
//
//	kind (1 byte) | field | field | ...
//
// Kinds 0x01–0x3f are requests (client → server), 0x40–0x7f responses
// (server → client; each answers the request whose id it carries), and
// 0x80–0xbf notifications the server pushes (events, runtime-data changes,
// a session's end). Every request carries a non-zero id in tag 1 and gets
// exactly one response with the same id, except Cancel, which gets none.
// The same messages travel on the direct links between a client and a
// remote service's runner, opened with LinkOpen (direct.go; docs/PROTOCOL.md
// "Direct links"), and between the server and runners (remote.go).
//
// Every limit is checked on encode and on decode alike, so that what one
// side encodes the other decodes. Decode never panics, never allocates in
// proportion to a length it has not seen the bytes for, and keeps nothing of
// its input: strings and byte slices in a decoded message are copies. Its
// errors are *DecodeError values saying which message kind, which field and
// which byte offset, wrapping ErrTruncated, ErrMalformed, ErrDuplicateField,
// ErrMissingField, ErrFieldTooLarge, ErrUnknownKind or ErrTooLarge.
package session
