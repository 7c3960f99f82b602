package resume

import (
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/wire"
)

// The resume protocol travels in wire Data frames on channel Channel
// (docs/RESUME.md, "On the wire"). The frame flags, which belong to the layer
// that owns the channel, say what a frame is:
//
//	flags 0x0000           an application message (sequenced)
//	flags 0x0001 (FIN)     end of the sender's messages (sequenced, empty)
//	flags 0x8000 | kind    a control message (not sequenced); TLV payload
//
// Any other flag value is a protocol error.

// Channel is the wire channel on which a resumable stream sends all its
// frames. A connection attached to a stream carries nothing else (except the
// connection-level Ping, Pong and Close of docs/PROTOCOL.md).
const Channel uint32 = 1

const (
	flagFIN     uint16 = 0x0001
	flagControl uint16 = 0x8000
	kindMask    uint16 = 0x00ff
)

// kind is the type of a control message, carried in the low byte of the
// frame flags.
type kind uint8

const (
	kindOpen      kind = 1 // client → server: create a session
	kindResume    kind = 2 // client → server: resume a session
	kindChallenge kind = 3 // server → client: nonce and server proof
	kindProof     kind = 4 // client → server: client proof and last received
	kindAccept    kind = 5 // server → client: session accepted, last received
	kindRefuse    kind = 6 // server → client: refused, why
	kindAck       kind = 7 // either: cumulative acknowledgement
	kindClose     kind = 8 // either: the session ends
)

var kindNames = [...]string{kindOpen: "Open", kindResume: "Resume", kindChallenge: "Challenge",
	kindProof: "Proof", kindAccept: "Accept", kindRefuse: "Refuse", kindAck: "Ack", kindClose: "Close"}

func (k kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(0x%02x)", uint8(k))
}

// Field sizes.
const (
	keyLen   = 32 // X25519 public key
	nonceLen = 32
	proofLen = 32 // HMAC-SHA256
	idLen    = 16
)

// RefuseCode says why a server refused to open or resume a session.
type RefuseCode uint16

// Refusal codes (docs/RESUME.md, "Refuse").
const (
	// RefuseUnknown: the server knows no session with that id (never
	// existed, or forgotten long ago).
	RefuseUnknown RefuseCode = 1
	// RefuseAuth: the client did not prove knowledge of the session
	// secret.
	RefuseAuth RefuseCode = 2
	// RefuseExpired: the session expired after its linger window; the
	// refusal carries the last sequence number the server received.
	RefuseExpired RefuseCode = 3
	// RefuseClosed: the session was ended (by either side); the refusal
	// carries the last sequence number the server received.
	RefuseClosed RefuseCode = 4
	// RefuseBusy: the server takes no more sessions now; retryable.
	RefuseBusy RefuseCode = 5
	// RefuseProtocol: the handshake broke the protocol.
	RefuseProtocol RefuseCode = 6
	// RefuseLost: the client reports having received less than it had
	// already acknowledged: it lost state, and the server no longer holds
	// the messages to replay. The session is ended.
	RefuseLost RefuseCode = 7
)

func (c RefuseCode) String() string {
	switch c {
	case RefuseUnknown:
		return "unknown session"
	case RefuseAuth:
		return "session secret not proven"
	case RefuseExpired:
		return "session expired"
	case RefuseClosed:
		return "session closed"
	case RefuseBusy:
		return "server busy"
	case RefuseProtocol:
		return "protocol error"
	case RefuseLost:
		return "client lost acknowledged messages"
	}
	return fmt.Sprintf("RefuseCode(%d)", uint16(c))
}

// CloseCode says why a session ended, in a Close control message.
type CloseCode uint16

// Close codes.
const (
	// CloseNormal: the application closed the session.
	CloseNormal CloseCode = 0
	// CloseGoingAway: the server shuts down.
	CloseGoingAway CloseCode = 1
	// CloseProtocolError: the peer broke the protocol in a way that cannot
	// be repaired by resuming.
	CloseProtocolError CloseCode = 2
	// CloseExpired: the session expired.
	CloseExpired CloseCode = 3
)

func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal closure"
	case CloseGoingAway:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case CloseExpired:
		return "expired"
	}
	return fmt.Sprintf("CloseCode(%d)", uint16(c))
}

// message is a control message.
type message interface {
	kind() kind
	// appendPayload appends the TLV encoding; zero fields are omitted.
	appendPayload(dst []byte) []byte
	// field decodes one field; known reports whether the tag is defined.
	field(f wire.Field) (known bool, err error)
	// check validates the decoded or to-be-sent message; it names the
	// field at fault.
	check() (field string, err error)
	// name returns the name of the field with the given tag.
	name(tag uint64) string
}

type openMsg struct {
	key          [keyLen]byte // tag 1, required: client X25519 public key
	replayBuffer uint64       // tag 2, required: the client's replay buffer
	maxMessage   uint32       // tag 3, required: largest message the client accepts
}

type resumeMsg struct {
	id    uuid.UUID      // tag 1, required
	nonce [nonceLen]byte // tag 2, required: client nonce
}

type challengeMsg struct {
	nonce [nonceLen]byte // tag 1, required: server nonce
	proof [proofLen]byte // tag 2, required: server proof
}

type proofMsg struct {
	proof        [proofLen]byte // tag 1, required: client proof
	received     uint64         // tag 2: last sequence the client received
	replayBuffer uint64         // tag 3, required
	maxMessage   uint32         // tag 4, required
}

type acceptMsg struct {
	id           uuid.UUID    // tag 1, required
	key          [keyLen]byte // tag 2: server X25519 public key (answer to Open only)
	received     uint64       // tag 3: last sequence the server received
	replayBuffer uint64       // tag 4, required
	maxMessage   uint32       // tag 5, required
}

type refuseMsg struct {
	code      RefuseCode // tag 1, required
	message   string     // tag 2, ≤ wire.MaxTextLen
	delivered uint64     // tag 3: last sequence the server received (expired, closed)
	retryable bool       // tag 4
}

type ackMsg struct {
	received uint64 // tag 1, required: last sequence received
}

type closeMsg struct {
	code     CloseCode // tag 1
	reason   string    // tag 2, ≤ wire.MaxTextLen
	received uint64    // tag 3: last sequence the sender received
}

func (*openMsg) kind() kind      { return kindOpen }
func (*resumeMsg) kind() kind    { return kindResume }
func (*challengeMsg) kind() kind { return kindChallenge }
func (*proofMsg) kind() kind     { return kindProof }
func (*acceptMsg) kind() kind    { return kindAccept }
func (*refuseMsg) kind() kind    { return kindRefuse }
func (*ackMsg) kind() kind       { return kindAck }
func (*closeMsg) kind() kind     { return kindClose }

func tagName(names []string, tag uint64) string {
	if tag < uint64(len(names)) && names[tag] != "" {
		return names[tag]
	}
	return fmt.Sprintf("tag %d", tag)
}

var (
	openNames      = []string{1: "key", 2: "replay_buffer", 3: "max_message"}
	resumeNames    = []string{1: "session_id", 2: "nonce"}
	challengeNames = []string{1: "nonce", 2: "proof"}
	proofNames     = []string{1: "proof", 2: "received", 3: "replay_buffer", 4: "max_message"}
	acceptNames    = []string{1: "session_id", 2: "key", 3: "received", 4: "replay_buffer", 5: "max_message"}
	refuseNames    = []string{1: "code", 2: "message", 3: "delivered", 4: "retryable"}
	ackNames       = []string{1: "received"}
	closeNames     = []string{1: "code", 2: "reason", 3: "received"}
)

func (*openMsg) name(t uint64) string      { return tagName(openNames, t) }
func (*resumeMsg) name(t uint64) string    { return tagName(resumeNames, t) }
func (*challengeMsg) name(t uint64) string { return tagName(challengeNames, t) }
func (*proofMsg) name(t uint64) string     { return tagName(proofNames, t) }
func (*acceptMsg) name(t uint64) string    { return tagName(acceptNames, t) }
func (*refuseMsg) name(t uint64) string    { return tagName(refuseNames, t) }
func (*ackMsg) name(t uint64) string       { return tagName(ackNames, t) }
func (*closeMsg) name(t uint64) string     { return tagName(closeNames, t) }

// Encoding helpers: zero values are omitted.

func putUint(dst []byte, tag, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return wire.AppendUint64Field(dst, tag, v)
}

func putBytes(dst []byte, tag uint64, b []byte) []byte {
	for _, c := range b {
		if c != 0 {
			return wire.AppendBytesField(dst, tag, b)
		}
	}
	return dst
}

func putString(dst []byte, tag uint64, s string) []byte {
	if s == "" {
		return dst
	}
	return wire.AppendStringField(dst, tag, s)
}

func (m *openMsg) appendPayload(dst []byte) []byte {
	dst = putBytes(dst, 1, m.key[:])
	dst = putUint(dst, 2, m.replayBuffer)
	return putUint(dst, 3, uint64(m.maxMessage))
}

func (m *resumeMsg) appendPayload(dst []byte) []byte {
	dst = putBytes(dst, 1, m.id[:])
	return putBytes(dst, 2, m.nonce[:])
}

func (m *challengeMsg) appendPayload(dst []byte) []byte {
	dst = putBytes(dst, 1, m.nonce[:])
	return putBytes(dst, 2, m.proof[:])
}

func (m *proofMsg) appendPayload(dst []byte) []byte {
	dst = putBytes(dst, 1, m.proof[:])
	dst = putUint(dst, 2, m.received)
	dst = putUint(dst, 3, m.replayBuffer)
	return putUint(dst, 4, uint64(m.maxMessage))
}

func (m *acceptMsg) appendPayload(dst []byte) []byte {
	dst = putBytes(dst, 1, m.id[:])
	dst = putBytes(dst, 2, m.key[:])
	dst = putUint(dst, 3, m.received)
	dst = putUint(dst, 4, m.replayBuffer)
	return putUint(dst, 5, uint64(m.maxMessage))
}

func (m *refuseMsg) appendPayload(dst []byte) []byte {
	dst = putUint(dst, 1, uint64(m.code))
	dst = putString(dst, 2, m.message)
	dst = putUint(dst, 3, m.delivered)
	if m.retryable {
		dst = wire.AppendBoolField(dst, 4, true)
	}
	return dst
}

func (m *ackMsg) appendPayload(dst []byte) []byte { return putUint(dst, 1, m.received) }

func (m *closeMsg) appendPayload(dst []byte) []byte {
	dst = putUint(dst, 1, uint64(m.code))
	dst = putString(dst, 2, m.reason)
	return putUint(dst, 3, m.received)
}

// Decoding helpers.

func fixed(dst []byte, f wire.Field) error {
	if len(f.Value) != len(dst) {
		return fmt.Errorf("%w: must be exactly %d bytes, got %d", wire.ErrMalformed, len(dst), len(f.Value))
	}
	copy(dst, f.Value)
	return nil
}

func (m *openMsg) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, fixed(m.key[:], f)
	case 2:
		v, err := f.Uint64()
		m.replayBuffer = v
		return true, err
	case 3:
		v, err := f.Uint32()
		m.maxMessage = v
		return true, err
	}
	return false, nil
}

func (m *resumeMsg) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, fixed(m.id[:], f)
	case 2:
		return true, fixed(m.nonce[:], f)
	}
	return false, nil
}

func (m *challengeMsg) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, fixed(m.nonce[:], f)
	case 2:
		return true, fixed(m.proof[:], f)
	}
	return false, nil
}

func (m *proofMsg) field(f wire.Field) (bool, error) {
	var err error
	switch f.Tag {
	case 1:
		err = fixed(m.proof[:], f)
	case 2:
		m.received, err = f.Uint64()
	case 3:
		m.replayBuffer, err = f.Uint64()
	case 4:
		m.maxMessage, err = f.Uint32()
	default:
		return false, nil
	}
	return true, err
}

func (m *acceptMsg) field(f wire.Field) (bool, error) {
	var err error
	switch f.Tag {
	case 1:
		err = fixed(m.id[:], f)
	case 2:
		err = fixed(m.key[:], f)
	case 3:
		m.received, err = f.Uint64()
	case 4:
		m.replayBuffer, err = f.Uint64()
	case 5:
		m.maxMessage, err = f.Uint32()
	default:
		return false, nil
	}
	return true, err
}

func (m *refuseMsg) field(f wire.Field) (bool, error) {
	var err error
	switch f.Tag {
	case 1:
		var c uint16
		c, err = f.Uint16()
		m.code = RefuseCode(c)
	case 2:
		m.message, err = f.Text(wire.MaxTextLen)
	case 3:
		m.delivered, err = f.Uint64()
	case 4:
		m.retryable, err = f.Bool()
	default:
		return false, nil
	}
	return true, err
}

func (m *ackMsg) field(f wire.Field) (bool, error) {
	if f.Tag != 1 {
		return false, nil
	}
	var err error
	m.received, err = f.Uint64()
	return true, err
}

func (m *closeMsg) field(f wire.Field) (bool, error) {
	var err error
	switch f.Tag {
	case 1:
		var c uint16
		c, err = f.Uint16()
		m.code = CloseCode(c)
	case 2:
		m.reason, err = f.Text(wire.MaxTextLen)
	case 3:
		m.received, err = f.Uint64()
	default:
		return false, nil
	}
	return true, err
}

// Validation: required fields, limits.

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func checkLimits(replay uint64, maxMsg uint32) (string, error) {
	switch {
	case replay == 0:
		return "replay_buffer", wire.ErrMissingField
	case maxMsg == 0:
		return "max_message", wire.ErrMissingField
	case maxMsg > wire.MaxFrameHardLimit:
		return "max_message", fmt.Errorf("%w: %d exceeds the hard limit of %d", wire.ErrMalformed, maxMsg, wire.MaxFrameHardLimit)
	}
	return "", nil
}

func (m *openMsg) check() (string, error) {
	if zero(m.key[:]) {
		return "key", wire.ErrMissingField
	}
	return checkLimits(m.replayBuffer, m.maxMessage)
}

func (m *resumeMsg) check() (string, error) {
	switch {
	case m.id == uuid.Nil:
		return "session_id", wire.ErrMissingField
	case zero(m.nonce[:]):
		return "nonce", wire.ErrMissingField
	}
	return "", nil
}

func (m *challengeMsg) check() (string, error) {
	switch {
	case zero(m.nonce[:]):
		return "nonce", wire.ErrMissingField
	case zero(m.proof[:]):
		return "proof", wire.ErrMissingField
	}
	return "", nil
}

func (m *proofMsg) check() (string, error) {
	if zero(m.proof[:]) {
		return "proof", wire.ErrMissingField
	}
	return checkLimits(m.replayBuffer, m.maxMessage)
}

func (m *acceptMsg) check() (string, error) {
	if m.id == uuid.Nil {
		return "session_id", wire.ErrMissingField
	}
	return checkLimits(m.replayBuffer, m.maxMessage)
}

func checkText(s string) error {
	if len(s) > wire.MaxTextLen {
		return fmt.Errorf("%w: %d bytes, limit %d", wire.ErrFieldTooLarge, len(s), wire.MaxTextLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: not valid UTF-8", wire.ErrMalformed)
	}
	return nil
}

func (m *refuseMsg) check() (string, error) {
	if m.code == 0 {
		return "code", wire.ErrMissingField
	}
	if err := checkText(m.message); err != nil {
		return "message", err
	}
	return "", nil
}

func (m *ackMsg) check() (string, error) {
	if m.received == 0 {
		return "received", wire.ErrMissingField
	}
	return "", nil
}

func (m *closeMsg) check() (string, error) {
	if err := checkText(m.reason); err != nil {
		return "reason", err
	}
	return "", nil
}

func newMessage(k kind) message {
	switch k {
	case kindOpen:
		return new(openMsg)
	case kindResume:
		return new(resumeMsg)
	case kindChallenge:
		return new(challengeMsg)
	case kindProof:
		return new(proofMsg)
	case kindAccept:
		return new(acceptMsg)
	case kindRefuse:
		return new(refuseMsg)
	case kindAck:
		return new(ackMsg)
	case kindClose:
		return new(closeMsg)
	}
	return nil
}

// maxKnownTag bounds the tags any control message defines, so that the
// duplicate check fits in a bit set.
const maxKnownTag = 15

// decodeControl decodes the control message in a Data frame whose flags have
// flagControl set. Errors are *DecodeError; offsets count from the start of
// the frame, as in package wire. It allocates only the message (and the
// strings it holds).
func decodeControl(flags uint16, payload []byte) (message, error) {
	if flags&flagControl == 0 || flags&^(flagControl|kindMask) != 0 {
		return nil, &DecodeError{Field: "header.flags", Offset: 2,
			Err: fmt.Errorf("%w: control frame with flags 0x%04x", wire.ErrMalformed, flags)}
	}
	k := kind(flags & kindMask)
	m := newMessage(k)
	if m == nil {
		return nil, &DecodeError{Field: "header.flags", Offset: 2,
			Err: fmt.Errorf("%w: unknown control message kind 0x%02x", wire.ErrMalformed, uint8(k))}
	}
	var seen uint64
	var offs [maxKnownTag + 1]int
	r := wire.NewFieldReader(payload)
	for r.Next() {
		f := r.Field()
		known, err := m.field(f)
		if !known {
			continue // unknown fields are skipped: later versions may add some
		}
		if f.Tag <= maxKnownTag {
			bit := uint64(1) << f.Tag
			if seen&bit != 0 {
				return nil, &DecodeError{Message: k.String(), Field: m.name(f.Tag), Offset: wire.HeaderSize + f.Offset,
					Err: fmt.Errorf("%w: first at offset %d", wire.ErrDuplicateField, wire.HeaderSize+offs[f.Tag])}
			}
			seen |= bit
			offs[f.Tag] = f.Offset
		}
		if err != nil {
			return nil, &DecodeError{Message: k.String(), Field: m.name(f.Tag), Offset: wire.HeaderSize + f.Offset, Err: err}
		}
	}
	if err := r.Err(); err != nil {
		f := r.Field()
		name := "payload"
		if f.Tag != 0 {
			name = m.name(f.Tag)
		}
		return nil, &DecodeError{Message: k.String(), Field: name, Offset: wire.HeaderSize + f.Offset, Err: err}
	}
	if name, err := m.check(); err != nil {
		off := len(payload)
		for t := uint64(1); t <= maxKnownTag; t++ {
			if m.name(t) == name && seen&(1<<t) != 0 {
				off = offs[t]
			}
		}
		return nil, &DecodeError{Message: k.String(), Field: name, Offset: wire.HeaderSize + off, Err: err}
	}
	return m, nil
}

// controlFrame returns the frame carrying m, its payload appended to buf[:0].
func controlFrame(buf []byte, m message) wire.Frame {
	return wire.Frame{Type: wire.TypeData, Channel: Channel, Flags: flagControl | uint16(m.kind()), Payload: m.appendPayload(buf[:0])}
}
