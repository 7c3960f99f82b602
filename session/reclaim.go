package session

import (
	"fmt"

	"github.com/bearerkit/connect/wire"
)

// Reclaiming sessions after a client restart (docs/PROTOCOL.md, "Reclaim").
// A session started on a resume stream comes with a secret
// (SessionStarted.Secret). A client that keeps the ids and secrets of its
// open sessions on disk presents them, after a restart, in a Reclaim: the
// server moves the sessions it still holds onto the new stream, ends every
// other session of the client id (telling the services), and answers, per
// session presented, whether it was restored or why not.

// The reclaim kinds. They sit apart from the first kinds (0x20, 0x60) so
// that other requests can be numbered on from 0x0a.
const (
	KindReclaim   Kind = 0x20 // request
	KindReclaimed Kind = 0x60 // response
)

// Limits of the reclaim messages.
const (
	// SecretSize is the size of a session's reclaim secret.
	SecretSize = 32
	// MaxReclaim bounds the sessions of one Reclaim and the results of
	// one Reclaimed (a server holds at most 1024 sessions per client
	// stream).
	MaxReclaim = 1024
)

// ReclaimStatus says what became of a session a client presented.
type ReclaimStatus uint8

// The reclaim statuses.
const (
	// ReclaimRestored: the session is now carried by the new stream.
	ReclaimRestored ReclaimStatus = 1
	// ReclaimExpired: the session expired: its stream's client did not
	// come back within the linger window.
	ReclaimExpired ReclaimStatus = 2
	// ReclaimClosed: the session was ended before the reclaim (by the
	// client, by the service, or because an earlier restart of the client
	// did not claim it).
	ReclaimClosed ReclaimStatus = 3
	// ReclaimUnknown: the server knows no such session of this client (it
	// never existed, belongs to another client, or ended so long ago that
	// the server forgot it).
	ReclaimUnknown ReclaimStatus = 4
	// ReclaimDenied: the secret was wrong. The server logs it; the
	// session, if it exists, is not touched.
	ReclaimDenied ReclaimStatus = 5
)

var reclaimStatusNames = map[ReclaimStatus]string{
	ReclaimRestored: "restored", ReclaimExpired: "expired", ReclaimClosed: "closed",
	ReclaimUnknown: "unknown", ReclaimDenied: "denied",
}

// String names the status ("expired"), or "status N".
func (s ReclaimStatus) String() string {
	if n, ok := reclaimStatusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// Reclaim asks the server to move the listed sessions of the client (its
// client id, from the registration) onto this stream, and to end every
// other session of the client. An empty list ends them all. It must be the
// first request on a new stream. Answer: Reclaimed.
type Reclaim struct {
	ID       uint64         // tag 1, required
	Sessions []ReclaimEntry // tag 2, repeated (nested TLV), at most MaxReclaim, ids distinct
}

// ReclaimEntry is one session presented in a Reclaim.
type ReclaimEntry struct {
	Session string // tag 1, required, ≤ MaxSessionID
	Secret  []byte // tag 2, required, SecretSize bytes
}

// Reclaimed answers Reclaim: one result per session presented, in the
// same order.
type Reclaimed struct {
	ID      uint64          // tag 1, required
	Results []ReclaimResult // tag 2, repeated (nested TLV), at most MaxReclaim
}

// ReclaimResult is what became of one session presented in a Reclaim.
type ReclaimResult struct {
	Session string        // tag 1, required, ≤ MaxSessionID
	Status  ReclaimStatus // tag 2, required
	Service string        // tag 3, ≤ MaxServiceName: the session's service, when known
	// Routing is the restored session's routing document (restored only).
	Routing []byte // tag 4, ≤ MaxDocument
	// Reason says, for a session that was not restored, why it ended.
	Reason string // tag 5, ≤ MaxText
	// Requests counts the requests of the session the server received
	// (from every process of the client), and LastRequest is the id of
	// the last of them: what was last delivered before the session ended.
	Requests    uint64 // tag 6
	LastRequest uint64 // tag 7
	// EndedUnixMilli is when the session ended (not restored), in
	// milliseconds since the Unix epoch; 0 if not known.
	EndedUnixMilli uint64 // tag 8
}

var (
	namesReclaim       = []string{1: "id", 2: "session"}
	namesReclaimEntry  = []string{1: "session", 2: "secret"}
	namesReclaimed     = []string{1: "id", 2: "result"}
	namesReclaimResult = []string{1: "session", 2: "status", 3: "service", 4: "routing", 5: "reason", 6: "requests", 7: "last_request", 8: "ended_unix_ms"}
)

// checkSecret checks a session secret: SecretSize bytes, or (unless
// required) none.
func checkSecret(b []byte, required bool) error {
	switch {
	case len(b) == 0 && required:
		return ErrMissingField
	case len(b) != 0 && len(b) != SecretSize:
		return fmt.Errorf("%w: secret of %d bytes, want %d", ErrMalformed, len(b), SecretSize)
	}
	return nil
}

// nested decodes the fields of a nested TLV value with field, rejecting
// duplicates of tags 1 to 8; its errors name the field.
func nested(b []byte, names []string, field func(f wire.Field) error) error {
	r := wire.NewFieldReader(b)
	var seen uint16
	for r.Next() {
		f := r.Field()
		if f.Tag >= 1 && f.Tag < uint64(len(names)) {
			if seen&(1<<f.Tag) != 0 {
				return fmt.Errorf("%s: %w", names[f.Tag], ErrDuplicateField)
			}
			seen |= 1 << f.Tag
		}
		if err := field(f); err != nil {
			return fmt.Errorf("%s at entry offset %d: %w", name(names, f.Tag), f.Offset, err)
		}
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("entry at offset %d: %w", r.Field().Offset, err)
	}
	return nil
}

// ---- Reclaim ----

func (*Reclaim) Kind() Kind          { return KindReclaim }
func (m *Reclaim) RequestID() uint64 { return m.ID }
func (m *Reclaim) appendFields(dst []byte) []byte {
	dst = appendUint(dst, 1, m.ID)
	var entry []byte
	for i := range m.Sessions {
		e := &m.Sessions[i]
		entry = appendBytes(appendString(entry[:0], 1, e.Session), 2, e.Secret)
		dst = wire.AppendBytesField(dst, 2, entry)
	}
	return dst
}
func (m *Reclaim) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		if len(m.Sessions) >= MaxReclaim {
			return true, fmt.Errorf("%w: more than %d sessions", ErrFieldTooLarge, MaxReclaim)
		}
		var e ReclaimEntry
		err := nested(f.Value, namesReclaimEntry, func(f wire.Field) error {
			switch f.Tag {
			case 1:
				return text(f, MaxSessionID, &e.Session)
			case 2:
				return blob(f, SecretSize, &e.Secret)
			}
			return nil
		})
		if err == nil {
			err = e.check()
		}
		if err != nil {
			return true, err
		}
		m.Sessions = append(m.Sessions, e)
		return true, nil
	}
	return false, nil
}
func (e *ReclaimEntry) check() error {
	if err := checkRequired(e.Session, MaxSessionID); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if err := checkSecret(e.Secret, true); err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	return nil
}
func (m *Reclaim) check() (uint64, error) {
	if m.ID == 0 {
		return 1, ErrMissingField
	}
	if len(m.Sessions) > MaxReclaim {
		return 2, fmt.Errorf("%w: %d sessions, limit %d", ErrFieldTooLarge, len(m.Sessions), MaxReclaim)
	}
	seen := make(map[string]struct{}, len(m.Sessions))
	for i := range m.Sessions {
		if err := m.Sessions[i].check(); err != nil {
			return 2, fmt.Errorf("session %d: %w", i, err)
		}
		if _, dup := seen[m.Sessions[i].Session]; dup {
			return 2, fmt.Errorf("%w: session %q listed twice", ErrMalformed, m.Sessions[i].Session)
		}
		seen[m.Sessions[i].Session] = struct{}{}
	}
	return 0, nil
}
func (*Reclaim) repeated(tag uint64) bool    { return tag == 2 }
func (*Reclaim) fieldName(tag uint64) string { return name(namesReclaim, tag) }

// ---- Reclaimed ----

func (*Reclaimed) Kind() Kind           { return KindReclaimed }
func (m *Reclaimed) ResponseTo() uint64 { return m.ID }
func (m *Reclaimed) appendFields(dst []byte) []byte {
	dst = appendUint(dst, 1, m.ID)
	var entry []byte
	for i := range m.Results {
		r := &m.Results[i]
		entry = appendString(entry[:0], 1, r.Session)
		entry = appendUint(entry, 2, uint64(r.Status))
		entry = appendString(entry, 3, r.Service)
		entry = appendBytes(entry, 4, r.Routing)
		entry = appendString(entry, 5, r.Reason)
		entry = appendUint(entry, 6, r.Requests)
		entry = appendUint(entry, 7, r.LastRequest)
		entry = appendUint(entry, 8, r.EndedUnixMilli)
		dst = wire.AppendBytesField(dst, 2, entry)
	}
	return dst
}
func (m *Reclaimed) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		if len(m.Results) >= MaxReclaim {
			return true, fmt.Errorf("%w: more than %d results", ErrFieldTooLarge, MaxReclaim)
		}
		var r ReclaimResult
		err := nested(f.Value, namesReclaimResult, func(f wire.Field) error {
			switch f.Tag {
			case 1:
				return text(f, MaxSessionID, &r.Session)
			case 2:
				v, err := f.Uint8()
				r.Status = ReclaimStatus(v)
				return err
			case 3:
				return text(f, MaxServiceName, &r.Service)
			case 4:
				return blob(f, MaxDocument, &r.Routing)
			case 5:
				return text(f, MaxText, &r.Reason)
			case 6:
				return uint64Field(f, &r.Requests)
			case 7:
				return uint64Field(f, &r.LastRequest)
			case 8:
				return uint64Field(f, &r.EndedUnixMilli)
			}
			return nil
		})
		if err == nil {
			err = r.check()
		}
		if err != nil {
			return true, err
		}
		m.Results = append(m.Results, r)
		return true, nil
	}
	return false, nil
}
func (r *ReclaimResult) check() error {
	if err := checkRequired(r.Session, MaxSessionID); err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if r.Status == 0 {
		return fmt.Errorf("status: %w", ErrMissingField)
	}
	for _, c := range []struct {
		name, s string
		max     int
	}{{"service", r.Service, MaxServiceName}, {"reason", r.Reason, MaxText}} {
		if err := checkText(c.s, c.max); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	if err := checkBlob(r.Routing, MaxDocument); err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	return nil
}
func (m *Reclaimed) check() (uint64, error) {
	if m.ID == 0 {
		return 1, ErrMissingField
	}
	if len(m.Results) > MaxReclaim {
		return 2, fmt.Errorf("%w: %d results, limit %d", ErrFieldTooLarge, len(m.Results), MaxReclaim)
	}
	for i := range m.Results {
		if err := m.Results[i].check(); err != nil {
			return 2, fmt.Errorf("result %d: %w", i, err)
		}
	}
	return 0, nil
}
func (*Reclaimed) repeated(tag uint64) bool    { return tag == 2 }
func (*Reclaimed) fieldName(tag uint64) string { return name(namesReclaimed, tag) }
