package session

import (
	"fmt"

	"github.com/bearerkit/connect/wire"
)

// newMessage returns an empty message of kind k, or nil for a kind this
// version does not define.
func newMessage(k Kind) Message {
	switch k {
	case KindListServices:
		return &ListServices{}
	case KindDescribe:
		return &Describe{}
	case KindStartSession:
		return &StartSession{}
	case KindCloseSession:
		return &CloseSession{}
	case KindCall:
		return &Call{}
	case KindSubscribe:
		return &Subscribe{}
	case KindWatch:
		return &Watch{}
	case KindStop:
		return &Stop{}
	case KindCancel:
		return &Cancel{}
	case KindError:
		return &Error{}
	case KindServiceList:
		return &ServiceList{}
	case KindDescription:
		return &Description{}
	case KindSessionStarted:
		return &SessionStarted{}
	case KindResult:
		return &Result{}
	case KindOK:
		return &OK{}
	case KindSnapshot:
		return &Snapshot{}
	case KindEvent:
		return &Event{}
	case KindEventsLost:
		return &EventsLost{}
	case KindDataChange:
		return &DataChange{}
	case KindSessionClosed:
		return &SessionClosed{}
	case KindReclaim:
		return &Reclaim{}
	case KindReclaimed:
		return &Reclaimed{}
	}
	return newRemoteMessage(k)
}

// Check validates m as Encode does, without encoding it.
func Check(m Message) error {
	if m == nil {
		return &EncodeError{Err: fmt.Errorf("%w: nil message", ErrMalformed)}
	}
	if tag, err := m.check(); err != nil {
		return &EncodeError{Kind: m.Kind(), Field: m.fieldName(tag), Err: err}
	}
	return nil
}

// Append validates m and appends its encoding to dst. A message that
// breaks a rule (a missing id, a name over its limit, ...) or whose
// encoding would exceed MaxMessageSize is refused with an *EncodeError and
// dst is returned unchanged.
func Append(dst []byte, m Message) ([]byte, error) {
	if err := Check(m); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, byte(m.Kind()))
	dst = m.appendFields(dst)
	if n := len(dst) - start; n > MaxMessageSize {
		return dst[:start], &EncodeError{Kind: m.Kind(), Err: fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, n, MaxMessageSize)}
	}
	return dst, nil
}

// Encode returns the encoding of m (see Append).
func Encode(m Message) ([]byte, error) { return Append(nil, m) }

// Decode decodes one message. It accepts fields in any order, skips tags
// the kind does not define, and rejects a second occurrence of a field that
// is not repeated; a decoded message passes the checks Encode applies.
// Errors are *DecodeError. The message keeps nothing of b.
func Decode(b []byte) (Message, error) {
	if len(b) == 0 || len(b) > MaxMessageSize {
		return nil, &DecodeError{Field: "kind", Err: fmt.Errorf("%w: %d bytes (1 to %d)", ErrTooLarge, len(b), MaxMessageSize)}
	}
	k := Kind(b[0])
	m := newMessage(k)
	if m == nil {
		de := &DecodeError{Kind: k, Field: "kind", Err: fmt.Errorf("%w 0x%02x", ErrUnknownKind, b[0])}
		if k.IsRequest() || k.IsResponse() || k.IsRunnerRequest() {
			de.ID = peekID(b[1:])
		}
		return nil, de
	}
	fail := func(tag uint64, offset int, err error) (Message, error) {
		de := &DecodeError{Kind: k, Field: m.fieldName(tag), Offset: offset, Err: err}
		if tag == 0 {
			de.Field = "fields"
		}
		if k.hasID() {
			de.ID = peekID(b[1:])
		}
		return nil, de
	}
	var seen [8]bool // tags 1..7 are the only ones defined
	r := wire.NewFieldReader(b[1:])
	for r.Next() {
		f := r.Field()
		known, err := m.field(f)
		if err != nil {
			return fail(f.Tag, 1+f.Offset, err)
		}
		if !known {
			continue
		}
		if f.Tag < uint64(len(seen)) && !m.repeated(f.Tag) {
			if seen[f.Tag] {
				return fail(f.Tag, 1+f.Offset, ErrDuplicateField)
			}
			seen[f.Tag] = true
		}
	}
	if err := r.Err(); err != nil {
		f := r.Field()
		return fail(f.Tag, 1+f.Offset, err)
	}
	if tag, err := m.check(); err != nil {
		return fail(tag, len(b), err)
	}
	return m, nil
}

// peekID returns the value of tag 1 if the fields up to it are well formed
// and it is a valid non-zero integer; 0 otherwise.
func peekID(fields []byte) uint64 {
	r := wire.NewFieldReader(fields)
	for r.Next() {
		if f := r.Field(); f.Tag == 1 {
			v, err := f.Uint64()
			if err != nil {
				return 0
			}
			return v
		}
	}
	return 0
}
