package wire

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// Field limits. Decoders reject longer values with ErrFieldTooLarge, and
// Conn.WriteMessage refuses to send them.
const (
	// MaxTokenLen bounds Hello.Token.
	MaxTokenLen = 4096
	// MaxNameLen bounds Hello.ClientName and Welcome.ServerID.
	MaxNameLen = 256
	// MaxTextLen bounds Reject.Message and Close.Reason.
	MaxTextLen = 1024
	// DefaultPingIntervalMillis is the keepalive interval when
	// Welcome.PingIntervalMillis is zero: 15 s.
	DefaultPingIntervalMillis = 15000
	// clientIDLen is the exact size of a client id field.
	clientIDLen = 16
)

// Message is a decoded frame. The control messages (*Hello, *Welcome,
// *Reject, *Ping, *Pong, *Close) encode their fields as TLV; *Data carries an
// opaque payload with its channel and flags.
type Message interface {
	// Type is the frame type the message travels in.
	Type() Type
	// AppendPayload appends the message's payload encoding to dst. It does
	// not validate; Conn.WriteMessage does.
	AppendPayload(dst []byte) []byte
}

// control is implemented by the control messages.
type control interface {
	Message
	// decode fills the message from a payload.
	decode(p []byte) error
	// check validates the message; on failure it returns the tag of the
	// field at fault.
	check() (tag uint64, err error)
}

// NegotiateVersion picks the protocol version to speak with a client whose
// Hello offered versions clientMin to clientMax: the highest version this
// package implements within that range. ok is false when there is none; the
// server then answers Reject with RejectVersion.
func NegotiateVersion(clientMin, clientMax uint8) (v uint8, ok bool) {
	if clientMin <= Version && Version <= clientMax {
		return Version, true
	}
	return 0, false
}

// Hello is the client's first frame on every connection (type 0x01). It asks
// to register and carries the client's credentials.
type Hello struct {
	// MinVersion and MaxVersion are the protocol versions the client
	// speaks, inclusive. Both are required; 1 <= MinVersion <= MaxVersion.
	MinVersion, MaxVersion uint8 // tags 1, 2
	// ClientID is the client's persistent id, a UUID. Required, non-zero.
	ClientID [16]byte // tag 3
	// Token is the client's authentication token; empty if it
	// authenticates otherwise (TLS client certificate) or not at all. At
	// most MaxTokenLen bytes of UTF-8.
	Token string // tag 4
	// ClientName is a human-readable name for logs, at most MaxNameLen
	// bytes of UTF-8.
	ClientName string // tag 5
	// Features is a bit set of optional features the client supports
	// (features.go); receivers ignore bits they do not know.
	Features uint64 // tag 6
	// MaxPayload is the largest payload the client accepts; zero means
	// DefaultMaxPayload. At most MaxFrameHardLimit. The server must not
	// send larger frames.
	MaxPayload uint32 // tag 7
}

var helloNames = []string{1: "min_version", 2: "max_version", 3: "client_id", 4: "token", 5: "client_name", 6: "features", 7: "max_payload"}

// Type returns TypeHello.
func (*Hello) Type() Type { return TypeHello }

// AppendPayload appends the TLV encoding of h; zero fields are omitted.
func (h *Hello) AppendPayload(dst []byte) []byte {
	if h == nil {
		return dst
	}
	dst = appendUintOpt(dst, 1, uint64(h.MinVersion))
	dst = appendUintOpt(dst, 2, uint64(h.MaxVersion))
	dst = appendIDOpt(dst, 3, h.ClientID)
	dst = appendStringOpt(dst, 4, h.Token)
	dst = appendStringOpt(dst, 5, h.ClientName)
	dst = appendUintOpt(dst, 6, h.Features)
	return appendUintOpt(dst, 7, uint64(h.MaxPayload))
}

func (h *Hello) decode(p []byte) error {
	fs, err := decodeFields(TypeHello, helloNames, p, func(f Field) (err error) {
		switch f.Tag {
		case 1:
			h.MinVersion, err = f.Uint8()
		case 2:
			h.MaxVersion, err = f.Uint8()
		case 3:
			h.ClientID, err = fieldID(f)
		case 4:
			h.Token, err = f.Text(MaxTokenLen)
		case 5:
			h.ClientName, err = f.Text(MaxNameLen)
		case 6:
			h.Features, err = f.Uint64()
		case 7:
			h.MaxPayload, err = f.Uint32()
		}
		return err
	})
	if err != nil {
		return err
	}
	return fs.check(h)
}

func (h *Hello) check() (uint64, error) {
	switch {
	case h.MinVersion == 0:
		return 1, ErrMissingField
	case h.MaxVersion == 0:
		return 2, ErrMissingField
	case h.MinVersion > h.MaxVersion:
		return 2, fmt.Errorf("%w: max_version %d is below min_version %d", ErrMalformed, h.MaxVersion, h.MinVersion)
	case h.ClientID == [16]byte{}:
		return 3, ErrMissingField
	case h.MaxPayload > MaxFrameHardLimit:
		return 7, fmt.Errorf("%w: %d exceeds the hard limit of %d", ErrMalformed, h.MaxPayload, MaxFrameHardLimit)
	}
	if err := checkText(h.Token, MaxTokenLen); err != nil {
		return 4, err
	}
	if err := checkText(h.ClientName, MaxNameLen); err != nil {
		return 5, err
	}
	return 0, nil
}

// String describes h for logs. The token is never shown, only its length.
// (String and GoString have value receivers so that printing a Hello value,
// not only a pointer, hides the token.)
func (h Hello) String() string {
	return fmt.Sprintf("Hello{versions %d-%d, client %s, name %q, token %s, features 0x%x, max payload %d}",
		h.MinVersion, h.MaxVersion, formatID(h.ClientID), h.ClientName, redact(h.Token), h.Features, h.MaxPayload)
}

// GoString is String, so that %#v does not print the token either.
func (h Hello) GoString() string { return h.String() }

func redact(s string) string {
	if s == "" {
		return "none"
	}
	return fmt.Sprintf("<redacted, %d bytes>", len(s))
}

// formatID formats a client id in the usual UUID form.
func formatID(id [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])
}

// Welcome is the server's acceptance of a Hello (type 0x02). The client is
// Connected once it has received it.
type Welcome struct {
	// Version is the protocol version the server chose from the Hello's
	// range. Required, non-zero.
	Version uint8 // tag 1
	// ServerID identifies the server (for logs and for the server
	// network), at most MaxNameLen bytes of UTF-8.
	ServerID string // tag 2
	// ClientID echoes the Hello's client id. Required, non-zero.
	ClientID [16]byte // tag 3
	// PingIntervalMillis is the keepalive interval the server asks for;
	// zero means DefaultPingIntervalMillis (docs/PROTOCOL.md, "Keepalive").
	PingIntervalMillis uint32 // tag 4
	// MaxPayload is the largest payload the server accepts; zero means
	// DefaultMaxPayload. At most MaxFrameHardLimit.
	MaxPayload uint32 // tag 5
	// Features is the subset of the Hello's features the server accepted.
	Features uint64 // tag 6
	// PingWindowMillis is the dead-path window the server asks for: a side
	// that has received nothing for this long considers the path dead.
	// Zero means three ping intervals (docs/PROTOCOL.md, "Keepalive").
	PingWindowMillis uint32 // tag 7
}

var welcomeNames = []string{1: "version", 2: "server_id", 3: "client_id", 4: "ping_interval_ms", 5: "max_payload", 6: "features", 7: "ping_window_ms"}

// Type returns TypeWelcome.
func (*Welcome) Type() Type { return TypeWelcome }

// AppendPayload appends the TLV encoding of w; zero fields are omitted.
func (w *Welcome) AppendPayload(dst []byte) []byte {
	if w == nil {
		return dst
	}
	dst = appendUintOpt(dst, 1, uint64(w.Version))
	dst = appendStringOpt(dst, 2, w.ServerID)
	dst = appendIDOpt(dst, 3, w.ClientID)
	dst = appendUintOpt(dst, 4, uint64(w.PingIntervalMillis))
	dst = appendUintOpt(dst, 5, uint64(w.MaxPayload))
	dst = appendUintOpt(dst, 6, w.Features)
	return appendUintOpt(dst, 7, uint64(w.PingWindowMillis))
}

func (w *Welcome) decode(p []byte) error {
	fs, err := decodeFields(TypeWelcome, welcomeNames, p, func(f Field) (err error) {
		switch f.Tag {
		case 1:
			w.Version, err = f.Uint8()
		case 2:
			w.ServerID, err = f.Text(MaxNameLen)
		case 3:
			w.ClientID, err = fieldID(f)
		case 4:
			w.PingIntervalMillis, err = f.Uint32()
		case 5:
			w.MaxPayload, err = f.Uint32()
		case 6:
			w.Features, err = f.Uint64()
		case 7:
			w.PingWindowMillis, err = f.Uint32()
		}
		return err
	})
	if err != nil {
		return err
	}
	return fs.check(w)
}

// PingWindow returns the dead-path window the Welcome asks for: its
// PingWindowMillis, or three ping intervals when that is zero.
func (w *Welcome) PingWindow() time.Duration {
	if w.PingWindowMillis > 0 {
		return time.Duration(w.PingWindowMillis) * time.Millisecond
	}
	return 3 * w.PingInterval()
}

// PingInterval returns the keepalive interval the Welcome asks for: its
// PingIntervalMillis, or DefaultPingIntervalMillis when that is zero.
func (w *Welcome) PingInterval() time.Duration {
	ms := w.PingIntervalMillis
	if ms == 0 {
		ms = DefaultPingIntervalMillis
	}
	return time.Duration(ms) * time.Millisecond
}

func (w *Welcome) check() (uint64, error) {
	switch {
	case w.Version == 0:
		return 1, ErrMissingField
	case w.ClientID == [16]byte{}:
		return 3, ErrMissingField
	case w.MaxPayload > MaxFrameHardLimit:
		return 5, fmt.Errorf("%w: %d exceeds the hard limit of %d", ErrMalformed, w.MaxPayload, MaxFrameHardLimit)
	}
	if err := checkText(w.ServerID, MaxNameLen); err != nil {
		return 2, err
	}
	return 0, nil
}

// RejectCode says why a server refused a connection.
type RejectCode uint16

// Reject codes. Receivers must accept codes they do not know and act on
// Reject.Retryable.
const (
	// RejectAuth: the token or certificate was missing or not accepted.
	RejectAuth RejectCode = 1
	// RejectVersion: no common protocol version.
	RejectVersion RejectCode = 2
	// RejectRegistrationTimeout: no valid Hello within the registration
	// timeout.
	RejectRegistrationTimeout RejectCode = 3
	// RejectBadHello: the Hello could not be decoded or broke a rule.
	RejectBadHello RejectCode = 4
	// RejectBusy: the server does not take more clients now.
	RejectBusy RejectCode = 5
	// RejectInternal: the server failed.
	RejectInternal RejectCode = 6
	// RejectProtocol: the first frame was not a Hello, or not a Connect v1
	// frame at all.
	RejectProtocol RejectCode = 7
)

// String describes the code, for example "authentication failed", or
// "RejectCode(42)" for a code this version does not define.
func (c RejectCode) String() string {
	switch c {
	case RejectAuth:
		return "authentication failed"
	case RejectVersion:
		return "unsupported protocol version"
	case RejectRegistrationTimeout:
		return "registration timed out"
	case RejectBadHello:
		return "bad hello"
	case RejectBusy:
		return "server busy"
	case RejectInternal:
		return "internal server error"
	case RejectProtocol:
		return "protocol error"
	}
	return fmt.Sprintf("RejectCode(%d)", uint16(c))
}

// Reject is the server's refusal of a connection (type 0x03). The server
// closes the connection after sending it.
type Reject struct {
	// Code says why. Required, non-zero.
	Code RejectCode // tag 1
	// Message explains, for humans; at most MaxTextLen bytes of UTF-8.
	Message string // tag 2
	// Retryable tells the client whether trying again unchanged may
	// succeed (true for RejectBusy, false for RejectAuth).
	Retryable bool // tag 3
	// RetryAfterMillis, when non-zero, is how long the client should wait
	// before retrying.
	RetryAfterMillis uint32 // tag 4
}

var rejectNames = []string{1: "code", 2: "message", 3: "retryable", 4: "retry_after_ms"}

// Type returns TypeReject.
func (*Reject) Type() Type { return TypeReject }

// AppendPayload appends the TLV encoding of r; zero fields are omitted.
func (r *Reject) AppendPayload(dst []byte) []byte {
	if r == nil {
		return dst
	}
	dst = appendUintOpt(dst, 1, uint64(r.Code))
	dst = appendStringOpt(dst, 2, r.Message)
	if r.Retryable {
		dst = AppendBoolField(dst, 3, true)
	}
	return appendUintOpt(dst, 4, uint64(r.RetryAfterMillis))
}

func (r *Reject) decode(p []byte) error {
	fs, err := decodeFields(TypeReject, rejectNames, p, func(f Field) (err error) {
		switch f.Tag {
		case 1:
			var c uint16
			c, err = f.Uint16()
			r.Code = RejectCode(c)
		case 2:
			r.Message, err = f.Text(MaxTextLen)
		case 3:
			r.Retryable, err = f.Bool()
		case 4:
			r.RetryAfterMillis, err = f.Uint32()
		}
		return err
	})
	if err != nil {
		return err
	}
	return fs.check(r)
}

func (r *Reject) check() (uint64, error) {
	if r.Code == 0 {
		return 1, ErrMissingField
	}
	if err := checkText(r.Message, MaxTextLen); err != nil {
		return 2, err
	}
	return 0, nil
}

// Error makes a received Reject usable as an error, for example
// "wire: rejected by server: authentication failed (code 1): bad token".
func (r *Reject) Error() string {
	if r == nil {
		return "wire: rejected by server"
	}
	s := fmt.Sprintf("wire: rejected by server: %s (code %d)", r.Code, uint16(r.Code))
	if r.Message != "" {
		s += ": " + r.Message
	}
	return s
}

// Ping asks the peer to answer with a Pong (type 0x04).
type Ping struct {
	// ID identifies the ping; the Pong echoes it.
	ID uint64 // tag 1
	// SentUnixNano is the sender's clock when it sent the ping; the Pong
	// echoes it so that the sender can measure the round trip.
	SentUnixNano int64 // tag 2
}

// Pong answers a Ping (type 0x05), echoing its fields.
type Pong struct {
	ID           uint64 // tag 1, the Ping's ID
	SentUnixNano int64  // tag 2, the Ping's SentUnixNano
}

var pingNames = []string{1: "id", 2: "sent_unix_nano"}

// Type returns TypePing.
func (*Ping) Type() Type { return TypePing }

// Type returns TypePong.
func (*Pong) Type() Type { return TypePong }

// AppendPayload appends the TLV encoding of p; zero fields are omitted.
func (p *Ping) AppendPayload(dst []byte) []byte {
	if p == nil {
		return dst
	}
	return appendPing(dst, p.ID, p.SentUnixNano)
}

// AppendPayload appends the TLV encoding of p; zero fields are omitted.
func (p *Pong) AppendPayload(dst []byte) []byte {
	if p == nil {
		return dst
	}
	return appendPing(dst, p.ID, p.SentUnixNano)
}

func appendPing(dst []byte, id uint64, sent int64) []byte {
	dst = appendUintOpt(dst, 1, id)
	return appendUintOpt(dst, 2, uint64(sent))
}

func (p *Ping) decode(b []byte) (err error) {
	p.ID, p.SentUnixNano, err = decodePing(TypePing, b)
	return err
}

func (p *Pong) decode(b []byte) (err error) {
	p.ID, p.SentUnixNano, err = decodePing(TypePong, b)
	return err
}

func decodePing(t Type, p []byte) (id uint64, sent int64, err error) {
	_, err = decodeFields(t, pingNames, p, func(f Field) (err error) {
		switch f.Tag {
		case 1:
			id, err = f.Uint64()
		case 2:
			sent, err = f.Int64()
		}
		return err
	})
	return id, sent, err
}

func (*Ping) check() (uint64, error) { return 0, nil }
func (*Pong) check() (uint64, error) { return 0, nil }

// CloseCode says why a peer closes an established connection. It is a code
// space of its own: Reject refuses a registration, Close ends a connection
// that was Connected (docs/PROTOCOL.md, "Close").
type CloseCode uint16

// Close codes. Receivers must accept codes they do not know.
const (
	// CloseNormal: the sender is done; nothing is wrong.
	CloseNormal CloseCode = 0
	// CloseGoingAway: the server shuts down or drains; reconnect, possibly
	// to another server.
	CloseGoingAway CloseCode = 1
	// CloseProtocolError: the peer broke the protocol.
	CloseProtocolError CloseCode = 2
	// ClosePingTimeout: the peer stopped answering pings.
	ClosePingTimeout CloseCode = 3
	// CloseReplaced: a newer connection of the same client id took over.
	CloseReplaced CloseCode = 4
	// CloseInternal: the sender failed.
	CloseInternal CloseCode = 5
)

// String describes the code, for example "going away", or "CloseCode(42)"
// for a code this version does not define.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal closure"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case ClosePingTimeout:
		return "ping timeout"
	case CloseReplaced:
		return "replaced by a newer connection"
	case CloseInternal:
		return "internal error"
	}
	return fmt.Sprintf("CloseCode(%d)", uint16(c))
}

// Close announces that the sender closes the connection (type 0x06); it is
// the last frame the sender writes.
type Close struct {
	// Code says why; CloseNormal (zero) is the default.
	Code CloseCode // tag 1
	// Reason explains, for humans; at most MaxTextLen bytes of UTF-8.
	Reason string // tag 2
}

var closeNames = []string{1: "code", 2: "reason"}

// Type returns TypeClose.
func (*Close) Type() Type { return TypeClose }

// AppendPayload appends the TLV encoding of c; zero fields are omitted.
func (c *Close) AppendPayload(dst []byte) []byte {
	if c == nil {
		return dst
	}
	dst = appendUintOpt(dst, 1, uint64(c.Code))
	return appendStringOpt(dst, 2, c.Reason)
}

func (c *Close) decode(p []byte) error {
	fs, err := decodeFields(TypeClose, closeNames, p, func(f Field) (err error) {
		switch f.Tag {
		case 1:
			var v uint16
			v, err = f.Uint16()
			c.Code = CloseCode(v)
		case 2:
			c.Reason, err = f.Text(MaxTextLen)
		}
		return err
	})
	if err != nil {
		return err
	}
	return fs.check(c)
}

func (c *Close) check() (uint64, error) {
	if err := checkText(c.Reason, MaxTextLen); err != nil {
		return 2, err
	}
	return 0, nil
}

// Data is an application frame (type 0x10): an opaque payload on a channel.
// The wire layer does not interpret Channel, Flags or Payload; the layers
// above own them.
type Data struct {
	Channel uint32
	Flags   uint16
	// Payload is the application bytes. In a Data returned by
	// DecodeMessage or Conn.ReadMessage it aliases the frame.
	Payload []byte
}

// Type returns TypeData.
func (*Data) Type() Type { return TypeData }

// AppendPayload appends d.Payload.
func (d *Data) AppendPayload(dst []byte) []byte {
	if d == nil {
		return dst
	}
	return append(dst, d.Payload...)
}

// MessageFrame returns the frame that carries m: for *Data its channel, flags
// and payload (aliased, not copied); for the other messages channel 0, no
// flags and a newly allocated payload. It does not validate m. A nil m gives
// the zero Frame, which no writer accepts.
func MessageFrame(m Message) Frame {
	if m == nil {
		return Frame{}
	}
	if d, ok := m.(*Data); ok {
		if d == nil {
			return Frame{Type: TypeData}
		}
		return Frame{Type: TypeData, Flags: d.Flags, Channel: d.Channel, Payload: d.Payload}
	}
	return Frame{Type: m.Type(), Payload: m.AppendPayload(nil)}
}

// AppendMessage appends the whole frame carrying m (header and payload) to
// dst, encoding the payload in place: with a dst of sufficient capacity it
// does not allocate. Like MessageFrame it does not validate m; a nil m
// appends nothing.
func AppendMessage(dst []byte, m Message) []byte {
	if m == nil {
		return dst
	}
	if d, ok := m.(*Data); ok {
		if d == nil {
			d = &Data{}
		}
		dst = appendHeader(dst, TypeData, d.Flags, d.Channel, uint32(len(d.Payload)))
		return append(dst, d.Payload...)
	}
	start := len(dst)
	dst = appendHeader(dst, m.Type(), 0, 0, 0)
	dst = m.AppendPayload(dst)
	binary.BigEndian.PutUint32(dst[start+8:start+HeaderSize], uint32(len(dst)-start-HeaderSize))
	return dst
}

// DecodeMessage decodes a frame's message. Data frames give a *Data whose
// payload aliases f.Payload; control frames give a freshly allocated message
// that does not alias f. Errors are *DecodeError, with offsets counted from
// the start of the frame as if f had been read from the wire: an unknown type
// (ErrUnknownType), a control frame with a channel or flags (ErrMalformed),
// and payload errors (ErrTruncated, ErrMalformed, ErrDuplicateField,
// ErrMissingField, ErrFieldTooLarge).
func DecodeMessage(f Frame) (Message, error) {
	if !f.Type.Known() {
		return nil, &DecodeError{Field: "header.type", Offset: 1, Err: fmt.Errorf("%w 0x%02x", ErrUnknownType, uint8(f.Type))}
	}
	if err := checkControlHeader(f.Type, f.Flags, f.Channel); err != nil {
		return nil, err
	}
	var m control
	switch f.Type {
	case TypeData:
		return &Data{Channel: f.Channel, Flags: f.Flags, Payload: f.Payload}, nil
	case TypeHello:
		m = new(Hello)
	case TypeWelcome:
		m = new(Welcome)
	case TypeReject:
		m = new(Reject)
	case TypePing:
		m = new(Ping)
	case TypePong:
		m = new(Pong)
	case TypeClose:
		m = new(Close)
	}
	if err := m.decode(f.Payload); err != nil {
		return nil, err
	}
	return m, nil
}

// checkMessage validates a message before it is sent.
func checkMessage(m Message) error {
	c, ok := m.(control)
	if !ok {
		return nil
	}
	if tag, err := c.check(); err != nil {
		return fmt.Errorf("wire: write %s: field %s: %w", m.Type(), fieldName(namesOf(m.Type()), tag), err)
	}
	return nil
}

func namesOf(t Type) []string {
	switch t {
	case TypeHello:
		return helloNames
	case TypeWelcome:
		return welcomeNames
	case TypeReject:
		return rejectNames
	case TypePing, TypePong:
		return pingNames
	case TypeClose:
		return closeNames
	}
	return nil
}

// fieldSet records which known fields of a payload were present and where.
type fieldSet struct {
	t     Type
	names []string
	size  int                   // payload length
	seen  uint64                // bit per known tag
	offs  [maxKnownTags + 1]int // offset of each known tag seen
}

// maxKnownTags is the largest tag a control message may define; the name
// tables stay within it (TestNameTables).
const maxKnownTags = 15

func fieldName(names []string, tag uint64) string {
	if tag < uint64(len(names)) && names[tag] != "" {
		return names[tag]
	}
	return fmt.Sprintf("tag %d", tag)
}

// errAt reports err for the field with the given tag: at the field if it was
// present, at the end of the payload otherwise.
func (s *fieldSet) errAt(tag uint64, off int, err error) error {
	return &DecodeError{Type: s.t, Field: fieldName(s.names, tag), Offset: HeaderSize + off, Err: err}
}

// check runs a decoded message's validation and reports a failure at the
// field it names.
func (s *fieldSet) check(c control) error {
	tag, err := c.check()
	if err == nil {
		return nil
	}
	off := s.size
	if tag < uint64(len(s.offs)) && s.seen&(1<<tag) != 0 {
		off = s.offs[tag]
	}
	return s.errAt(tag, off, err)
}

// decodeFields walks the fields of p, calling fn for each field whose tag is
// in names and skipping the others. It rejects structural errors and
// duplicate known tags. Errors are *DecodeError.
func decodeFields(t Type, names []string, p []byte, fn func(Field) error) (fieldSet, error) {
	s := fieldSet{t: t, names: names, size: len(p)}
	r := NewFieldReader(p)
	for r.Next() {
		f := r.Field()
		if f.Tag >= uint64(len(names)) || f.Tag > maxKnownTags || names[f.Tag] == "" {
			continue // unknown field: skipped, so that later versions can add fields
		}
		bit := uint64(1) << f.Tag
		if s.seen&bit != 0 {
			return s, s.errAt(f.Tag, f.Offset, fmt.Errorf("%w: first at offset %d", ErrDuplicateField, HeaderSize+s.offs[f.Tag]))
		}
		s.seen |= bit
		s.offs[f.Tag] = f.Offset
		if err := fn(f); err != nil {
			return s, s.errAt(f.Tag, f.Offset, err)
		}
	}
	if err := r.Err(); err != nil {
		f := r.Field()
		name := "payload"
		if f.Tag != 0 {
			name = fieldName(names, f.Tag)
		}
		return s, &DecodeError{Type: t, Field: name, Offset: HeaderSize + f.Offset, Err: err}
	}
	return s, nil
}

func fieldID(f Field) ([16]byte, error) {
	var id [16]byte
	if len(f.Value) != clientIDLen {
		return id, fmt.Errorf("%w: id must be %d bytes, got %d", ErrMalformed, clientIDLen, len(f.Value))
	}
	copy(id[:], f.Value)
	return id, nil
}

func checkText(s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFieldTooLarge, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	return nil
}

func appendUintOpt(dst []byte, tag, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return AppendUint64Field(dst, tag, v)
}

func appendStringOpt(dst []byte, tag uint64, s string) []byte {
	if s == "" {
		return dst
	}
	return AppendStringField(dst, tag, s)
}

func appendIDOpt(dst []byte, tag uint64, id [16]byte) []byte {
	if id == [16]byte{} {
		return dst
	}
	return AppendBytesField(dst, tag, id[:])
}
