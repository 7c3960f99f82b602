package session

import (
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/bearerkit/connect/wire"
)

// Channel is the wire channel that carries session messages on a
// registered connection without a resume stream (a datagram bearer): one
// message per Data frame, flags 0. (Channel 0 is the connection's own;
// channel 1 belongs to the resume layer, which carries them otherwise.)
const Channel uint32 = 2

// Limits. Encode refuses and Decode rejects anything beyond them.
const (
	// MaxMessageSize bounds an encoded message (the kind byte included):
	// the largest frame payload any Connect receiver accepts. A connection
	// usually accepts less (1 MiB by default, docs/PROTOCOL.md "Limits");
	// a sender checks the peer's limit before it sends.
	MaxMessageSize = wire.MaxFrameHardLimit
	// MaxServiceName bounds a service name (the service-file rule).
	MaxServiceName = 128
	// MaxName bounds a method or an event name (an identifier in the
	// service file).
	MaxName = 64
	// MaxSessionID bounds a session id. Servers issue UUIDs (36 bytes).
	MaxSessionID = 64
	// MaxPath bounds a runtime-data path.
	MaxPath = 4096
	// MaxText bounds an error message, a close reason, a service's
	// description or problem.
	MaxText = 4096
	// MaxVersion bounds a service version string.
	MaxVersion = 64
	// MaxDocument bounds a service file (Description.XML) and a routing
	// document (SessionStarted.Routing).
	MaxDocument = 1 << 20
	// MaxEvents bounds the event names of one Subscribe (a service file
	// declares at most 1024 events).
	MaxEvents = 1024
	// MaxServices bounds the entries of a ServiceList.
	MaxServices = 4096
)

// Kind is the type of a message: its first byte.
type Kind uint8

// The message kinds (docs/PROTOCOL.md, "Sessions").
const (
	// Requests, client → server.
	KindListServices Kind = 0x01
	KindDescribe     Kind = 0x02
	KindStartSession Kind = 0x03
	KindCloseSession Kind = 0x04
	KindCall         Kind = 0x05
	KindSubscribe    Kind = 0x06
	KindWatch        Kind = 0x07
	KindStop         Kind = 0x08
	KindCancel       Kind = 0x09

	// Responses, server → client.
	KindError          Kind = 0x40
	KindServiceList    Kind = 0x41
	KindDescription    Kind = 0x42
	KindSessionStarted Kind = 0x43
	KindResult         Kind = 0x44
	KindOK             Kind = 0x45
	KindSnapshot       Kind = 0x46

	// Notifications, server → client.
	KindEvent         Kind = 0x80
	KindEventsLost    Kind = 0x81
	KindDataChange    Kind = 0x82
	KindSessionClosed Kind = 0x83
)

var kindNames = map[Kind]string{
	KindListServices: "ListServices", KindDescribe: "Describe", KindStartSession: "StartSession",
	KindCloseSession: "CloseSession", KindCall: "Call", KindSubscribe: "Subscribe", KindWatch: "Watch",
	KindStop: "Stop", KindCancel: "Cancel",
	KindError: "Error", KindServiceList: "ServiceList", KindDescription: "Description",
	KindSessionStarted: "SessionStarted", KindResult: "Result", KindOK: "OK", KindSnapshot: "Snapshot",
	KindEvent: "Event", KindEventsLost: "EventsLost", KindDataChange: "DataChange", KindSessionClosed: "SessionClosed",
	KindReclaim: "Reclaim", KindReclaimed: "Reclaimed", // reclaim.go
}

// String names the kind ("Call"), or "kind 0xNN" for one this version does
// not define.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind 0x%02x", uint8(k))
}

// Known reports whether this version defines k.
func (k Kind) Known() bool { _, ok := kindNames[k]; return ok }

// IsRequest reports whether k is in the request range (0x01–0x3f), known or
// not.
func (k Kind) IsRequest() bool { return k >= 0x01 && k <= 0x3f }

// IsResponse reports whether k is in the response range (0x40–0x7f).
func (k Kind) IsResponse() bool { return k >= 0x40 && k <= 0x7f }

// IsNotification reports whether k is in the notification range (0x80–0xbf).
func (k Kind) IsNotification() bool { return k >= 0x80 && k <= 0xbf }

// Code says why a request failed, in an Error response. Receivers accept
// codes they do not know (String says "code N").
type Code uint16

// The error codes.
const (
	// CodeBadRequest: the request does not decode or breaks a rule.
	CodeBadRequest Code = 1
	// CodeUnsupported: the server does not know the request's kind.
	CodeUnsupported Code = 2
	// CodeUnknownService: the server hosts no service of that name.
	CodeUnknownService Code = 3
	// CodeUnavailable: the service is not running (still starting, failed
	// to start), or its plugin died before it answered the call. Whether
	// the method ran is then unknown.
	CodeUnavailable Code = 4
	// CodeUnknownSession: no session with that id is open on this
	// client's resume stream (without a stream: on this connection).
	CodeUnknownSession Code = 5
	// CodeUnknownMethod: the service has no method of that name.
	CodeUnknownMethod Code = 6
	// CodeUnknownEvent: the service has no event of that name.
	CodeUnknownEvent Code = 7
	// CodeInvalidArgument: the arguments do not fit the method.
	CodeInvalidArgument Code = 8
	// CodeNotFound: the runtime-data path, or the subscription or watch
	// to stop, does not exist.
	CodeNotFound Code = 9
	// CodeRefused: the service refused to open the session.
	CodeRefused Code = 10
	// CodeApplication: the method returned an error of its own.
	CodeApplication Code = 11
	// CodeDeadlineExceeded: the call's deadline passed first.
	CodeDeadlineExceeded Code = 12
	// CodeCanceled: the call was cancelled (by Cancel, or because its
	// session closed).
	CodeCanceled Code = 13
	// CodeOverloaded: too many calls or sessions on this connection, or
	// the service runs as many calls as it allows.
	CodeOverloaded Code = 14
	// CodeTooLarge: the answer does not fit in one message the connection
	// carries.
	CodeTooLarge Code = 15
	// CodeServiceFault: the service broke its contract (a method panicked
	// or returned a value of the wrong type).
	CodeServiceFault Code = 16
	// CodeInternal: the server failed.
	CodeInternal Code = 17
	// CodeDenied: a policy forbids it.
	CodeDenied Code = 18
)

var codeNames = map[Code]string{
	CodeBadRequest: "bad request", CodeUnsupported: "unsupported", CodeUnknownService: "unknown service",
	CodeUnavailable: "unavailable", CodeUnknownSession: "unknown session", CodeUnknownMethod: "unknown method",
	CodeUnknownEvent: "unknown event", CodeInvalidArgument: "invalid argument", CodeNotFound: "not found",
	CodeRefused: "refused", CodeApplication: "application error", CodeDeadlineExceeded: "deadline exceeded",
	CodeCanceled: "canceled", CodeOverloaded: "overloaded", CodeTooLarge: "too large",
	CodeServiceFault: "service fault", CodeInternal: "internal error", CodeDenied: "denied",
}

// String names the code ("unknown method"), or "code N".
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Message is one session-layer message. The concrete types are the
// exported structs of this package; the interface is sealed.
type Message interface {
	// Kind is the message's kind.
	Kind() Kind
	appendFields(dst []byte) []byte
	// field decodes one field; known is false for a tag the kind does not
	// define (skipped).
	field(f wire.Field) (known bool, err error)
	// check validates the message; it returns the tag of the field at fault.
	check() (tag uint64, err error)
	// repeated reports whether tag may occur more than once.
	repeated(tag uint64) bool
	fieldName(tag uint64) string
}

// Request is a message a client sends; the server answers it with one
// response carrying the same id (Cancel excepted).
type Request interface {
	Message
	RequestID() uint64
}

// Response is a server's answer to the request with the id it carries.
type Response interface {
	Message
	ResponseTo() uint64
}

// Notification is a message the server pushes for a session.
type Notification interface {
	Message
	SessionID() string
}

// ---- Requests ----

// ListServices asks for the services the server hosts. Answer: ServiceList.
type ListServices struct {
	ID uint64 // tag 1, required
}

// Describe asks for a service's service file. Answer: Description.
type Describe struct {
	ID      uint64 // tag 1, required
	Service string // tag 2, required, ≤ MaxServiceName
}

// StartSession opens a session with a service. Answer: SessionStarted.
//
// Direct and Bearers say what the client can use for the direct links of
// a remote service's session (docs/ROUTING.md, "Resolution"): the server
// resolves the session's routing document with them. A client that does
// not set Direct gets every resource routed through the server (or a
// refusal naming what to configure, when the service routes something
// only directly).
type StartSession struct {
	ID      uint64 // tag 1, required
	Service string // tag 2, required, ≤ MaxServiceName
	// Bearers are the bearer types the client has adapters for, such as
	// connect.bearer.tcp: a direct link needs an adapter of its bearer's
	// type. Only with Direct.
	Bearers []string // tag 3, repeated, each 1 to MaxBearerType bytes, at most MaxClientBearers
	// Direct says that the client opens direct links to services' runners.
	Direct bool // tag 4
}

// CloseSession ends a session. Answer: OK. Its running calls are
// cancelled, its subscriptions and watches end.
type CloseSession struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required, ≤ MaxSessionID
}

// Call calls a method in a session. Answer: Result, or Error.
type Call struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required
	Method  string // tag 3, required, ≤ MaxName
	// Timeout is the time the caller still waits, from the moment it sent
	// the call (the two clocks need not agree); 0 for no deadline. It
	// travels as nanoseconds.
	Timeout time.Duration // tag 4
	// Args are the arguments encoded by services.AppendArgs against the
	// method's <arg>s.
	Args []byte // tag 5
}

// Subscribe asks for a session's events: every event (All), or those
// named. Answer: OK. Events then arrive as Event notifications until the
// subscription is stopped (Stop with Target = this request's ID) or the
// session ends. Subscriptions of one session add up.
type Subscribe struct {
	ID      uint64   // tag 1, required
	Session string   // tag 2, required
	Events  []string // tag 3, repeated, each ≤ MaxName, at most MaxEvents; not with All
	All     bool     // tag 4; exactly one of All and Events
}

// Watch asks for a session's runtime data at Path ("" for the whole tree).
// Answer: Snapshot, the value at Path; then DataChange notifications whose
// Watch is this request's ID, until Stop or the session's end.
type Watch struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required
	Path    string // tag 3, ≤ MaxPath
}

// Stop ends a subscription or a watch of a session: Target is the ID of the
// Subscribe or Watch request that started it. Answer: OK.
type Stop struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required
	Target  uint64 // tag 3, required
}

// Cancel tells the server that the caller stopped waiting for the Call
// whose ID is Target: the method's context is cancelled. No answer; the
// Call itself is still answered (usually with CodeCanceled).
type Cancel struct {
	Target uint64 // tag 1, required
}

// ---- Responses ----

// Error answers a request that failed.
type Error struct {
	ID      uint64 // tag 1, required
	Code    Code   // tag 2, required
	Message string // tag 3, ≤ MaxText; for people
}

// ServiceList answers ListServices.
type ServiceList struct {
	ID       uint64         // tag 1, required
	Services []ServiceEntry // tag 2, repeated (each a nested TLV), at most MaxServices
}

// ServiceEntry describes one hosted service in a ServiceList. It is encoded
// as the value of one tag-2 field, itself TLV.
type ServiceEntry struct {
	Name        string // tag 1, required, ≤ MaxServiceName
	Version     string // tag 2, ≤ MaxVersion
	Description string // tag 3, ≤ MaxText
	Available   bool   // tag 4: the service accepts sessions now
	Problem     string // tag 5, ≤ MaxText: why it is unavailable
	// Runner, for a remote service, names the runner that provides it
	// ("NAME (client ID)"); empty for a service inside the server.
	Runner string // tag 6, ≤ MaxText
}

// Description answers Describe: the text of the service file.
type Description struct {
	ID  uint64 // tag 1, required
	XML []byte // tag 2, required, ≤ MaxDocument
}

// SessionStarted answers StartSession.
type SessionStarted struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required, ≤ MaxSessionID: the session id
	// Routing is the session's routing document (XML, docs/PROTOCOL.md
	// "Routing documents").
	Routing []byte // tag 3, required, ≤ MaxDocument
	// Secret is the session's reclaim secret: a client that keeps it (with
	// the session id) can take the session back after a restart (Reclaim).
	// Exactly SecretSize bytes, or empty when the session cannot be
	// reclaimed (it lives on a connection, not on a resume stream).
	Secret []byte // tag 4
}

// Result answers a Call that succeeded: the result encoded by
// services.AppendValue against the method's return type; empty for a
// method that returns nothing.
type Result struct {
	ID    uint64 // tag 1, required
	Value []byte // tag 2
}

// OK answers CloseSession, Subscribe and Stop.
type OK struct {
	ID uint64 // tag 1, required
	// Resume, in answer to a LinkOpen with Resume, says that the runner
	// runs a resume stream over the link (docs/PROTOCOL.md §15.3).
	Resume bool // tag 2
}

// Snapshot answers Watch: the value at the watched path, encoded against
// its type.
type Snapshot struct {
	ID    uint64 // tag 1, required
	Path  string // tag 2, ≤ MaxPath
	Value []byte // tag 3
}

// ---- Notifications ----

// Event is an event the service emitted, for a session that subscribed to
// it: the arguments encoded by services.AppendArgs against the event's
// <arg>s.
type Event struct {
	Session string // tag 1, required
	Name    string // tag 2, required, ≤ MaxName
	Args    []byte // tag 3
}

// EventsLost says that Count events of the session were dropped at this
// point of the event stream because the client did not read them fast
// enough (the server's queue for the session was full).
type EventsLost struct {
	Session string // tag 1, required
	Count   uint64 // tag 2, required
}

// DataChange says that the runtime data at Path, at or below the path of
// the watch Watch, has the value Value (encoded against the type at Path).
// Changes are coalesced: a client that reads slowly gets the latest value
// of a path, not every value it had.
type DataChange struct {
	Session string // tag 1, required
	Watch   uint64 // tag 2, required: the Watch request's ID
	Path    string // tag 3, ≤ MaxPath
	Value   []byte // tag 4
}

// SessionClosed says that the server ended a session (the service refused
// to reopen it after a restart, the service was removed, the server shuts
// down). Its subscriptions and watches are over.
type SessionClosed struct {
	Session string // tag 1, required
	Reason  string // tag 2, ≤ MaxText
}

// ---- Field names ----

var (
	namesID           = []string{1: "id"}
	namesOK           = []string{1: "id", 2: "resume"}
	namesDescribe     = []string{1: "id", 2: "service"}
	namesStartSession = []string{1: "id", 2: "service", 3: "bearer", 4: "direct"}
	namesSession      = []string{1: "id", 2: "session"}
	namesCall         = []string{1: "id", 2: "session", 3: "method", 4: "timeout_ns", 5: "args"}
	namesSubscribe    = []string{1: "id", 2: "session", 3: "event", 4: "all"}
	namesWatch        = []string{1: "id", 2: "session", 3: "path"}
	namesStop         = []string{1: "id", 2: "session", 3: "target"}
	namesCancel       = []string{1: "target"}
	namesError        = []string{1: "id", 2: "code", 3: "message"}
	namesServiceList  = []string{1: "id", 2: "service"}
	namesEntry        = []string{1: "name", 2: "version", 3: "description", 4: "available", 5: "problem", 6: "runner"}
	namesDescription  = []string{1: "id", 2: "xml"}
	namesStarted      = []string{1: "id", 2: "session", 3: "routing", 4: "secret"}
	namesResult       = []string{1: "id", 2: "value"}
	namesSnapshot     = []string{1: "id", 2: "path", 3: "value"}
	namesEvent        = []string{1: "session", 2: "name", 3: "args"}
	namesLost         = []string{1: "session", 2: "count"}
	namesChange       = []string{1: "session", 2: "watch", 3: "path", 4: "value"}
	namesClosed       = []string{1: "session", 2: "reason"}
)

func name(names []string, tag uint64) string {
	if tag < uint64(len(names)) && names[tag] != "" {
		return names[tag]
	}
	return fmt.Sprintf("tag %d", tag)
}

// ---- Encoding helpers ----

func appendUint(dst []byte, tag, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return wire.AppendUint64Field(dst, tag, v)
}

func appendString(dst []byte, tag uint64, s string) []byte {
	if s == "" {
		return dst
	}
	return wire.AppendStringField(dst, tag, s)
}

func appendBytes(dst []byte, tag uint64, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	return wire.AppendBytesField(dst, tag, b)
}

func appendBool(dst []byte, tag uint64, v bool) []byte {
	if !v {
		return dst
	}
	return wire.AppendBoolField(dst, tag, true)
}

// text decodes a UTF-8 string of at most max bytes (a copy).
func text(f wire.Field, max int, dst *string) error {
	s, err := f.Text(max)
	*dst = s
	return err
}

// textItem decodes one element of a repeated, non-empty text field into
// *dst, refusing the (max+1)th: plural names the elements and empty the
// message for an empty one ("empty event name").
func textItem(f wire.Field, maxLen, max int, plural, empty string, dst *[]string) error {
	if len(*dst) >= max {
		return fmt.Errorf("%w: more than %d %s", ErrFieldTooLarge, max, plural)
	}
	var v string
	if err := text(f, maxLen, &v); err != nil {
		return err
	}
	if v == "" {
		return fmt.Errorf("%w: %s", ErrMalformed, empty)
	}
	*dst = append(*dst, v)
	return nil
}

// blob decodes a byte string of at most max bytes (a copy; nil when empty).
func blob(f wire.Field, max int, dst *[]byte) error {
	b, err := f.Bytes(max)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		*dst = nil
	} else {
		*dst = append([]byte(nil), b...)
	}
	return nil
}

func uint64Field(f wire.Field, dst *uint64) (err error) {
	*dst, err = f.Uint64()
	return err
}

func checkText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFieldTooLarge, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	return nil
}

func checkRequired(s string, max int) error {
	if s == "" {
		return ErrMissingField
	}
	return checkText(s, max)
}

func checkBlob(b []byte, max int) error {
	if len(b) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFieldTooLarge, len(b), max)
	}
	return nil
}

// tagCheck is one field's check: the tag and its error.
type tagCheck struct {
	tag uint64
	err error
}

// first returns the tag and error of the first failing check.
func first(checks ...tagCheck) (uint64, error) {
	for _, c := range checks {
		if c.err != nil {
			return c.tag, c.err
		}
	}
	return 0, nil
}

func required(v uint64) error {
	if v == 0 {
		return ErrMissingField
	}
	return nil
}

// ---- ListServices ----

func (*ListServices) Kind() Kind                       { return KindListServices }
func (m *ListServices) RequestID() uint64              { return m.ID }
func (m *ListServices) appendFields(dst []byte) []byte { return appendUint(dst, 1, m.ID) }
func (m *ListServices) field(f wire.Field) (bool, error) {
	if f.Tag == 1 {
		return true, uint64Field(f, &m.ID)
	}
	return false, nil
}
func (m *ListServices) check() (uint64, error)    { return first(tagCheck{1, required(m.ID)}) }
func (*ListServices) repeated(uint64) bool        { return false }
func (*ListServices) fieldName(tag uint64) string { return name(namesID, tag) }

// ---- Describe ----

func (*Describe) Kind() Kind          { return KindDescribe }
func (m *Describe) RequestID() uint64 { return m.ID }
func (m *Describe) appendFields(dst []byte) []byte {
	return appendString(appendUint(dst, 1, m.ID), 2, m.Service)
}
func (m *Describe) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxServiceName, &m.Service)
	}
	return false, nil
}
func (m *Describe) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Service, MaxServiceName)})
}
func (*Describe) repeated(uint64) bool        { return false }
func (*Describe) fieldName(tag uint64) string { return name(namesDescribe, tag) }

// ---- StartSession ----

func (*StartSession) Kind() Kind          { return KindStartSession }
func (m *StartSession) RequestID() uint64 { return m.ID }
func (m *StartSession) appendFields(dst []byte) []byte {
	dst = appendString(appendUint(dst, 1, m.ID), 2, m.Service)
	for _, b := range m.Bearers {
		dst = wire.AppendStringField(dst, 3, b)
	}
	return appendBool(dst, 4, m.Direct)
}
func (m *StartSession) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxServiceName, &m.Service)
	case 3:
		return true, textItem(f, MaxBearerType, MaxClientBearers, "bearers", "empty bearer type", &m.Bearers)
	case 4:
		v, err := f.Bool()
		m.Direct = v
		return true, err
	}
	return false, nil
}
func (m *StartSession) check() (uint64, error) {
	if tag, err := first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Service, MaxServiceName)}); err != nil {
		return tag, err
	}
	switch {
	case len(m.Bearers) > MaxClientBearers:
		return 3, fmt.Errorf("%w: %d bearers, limit %d", ErrFieldTooLarge, len(m.Bearers), MaxClientBearers)
	case len(m.Bearers) > 0 && !m.Direct:
		return 3, fmt.Errorf("%w: bearers without direct (a client that opens no direct links has no use for adapters)", ErrMalformed)
	}
	for _, b := range m.Bearers {
		if err := checkRequired(b, MaxBearerType); err != nil {
			return 3, err
		}
	}
	return 0, nil
}
func (*StartSession) repeated(tag uint64) bool    { return tag == 3 }
func (*StartSession) fieldName(tag uint64) string { return name(namesStartSession, tag) }

// ---- CloseSession ----

func (*CloseSession) Kind() Kind          { return KindCloseSession }
func (m *CloseSession) RequestID() uint64 { return m.ID }
func (m *CloseSession) appendFields(dst []byte) []byte {
	return appendString(appendUint(dst, 1, m.ID), 2, m.Session)
}
func (m *CloseSession) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	}
	return false, nil
}
func (m *CloseSession) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)})
}
func (*CloseSession) repeated(uint64) bool        { return false }
func (*CloseSession) fieldName(tag uint64) string { return name(namesSession, tag) }

// ---- Call ----

func (*Call) Kind() Kind          { return KindCall }
func (m *Call) RequestID() uint64 { return m.ID }
func (m *Call) appendFields(dst []byte) []byte {
	dst = appendUint(dst, 1, m.ID)
	dst = appendString(dst, 2, m.Session)
	dst = appendString(dst, 3, m.Method)
	if m.Timeout > 0 {
		dst = appendUint(dst, 4, uint64(m.Timeout))
	}
	return appendBytes(dst, 5, m.Args)
}
func (m *Call) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxName, &m.Method)
	case 4:
		v, err := f.Uint64()
		if err == nil && v > math.MaxInt64 {
			err = fmt.Errorf("%w: timeout of %d ns exceeds %d", ErrMalformed, v, int64(math.MaxInt64))
		}
		m.Timeout = time.Duration(v)
		return true, err
	case 5:
		return true, blob(f, MaxMessageSize, &m.Args)
	}
	return false, nil
}
func (m *Call) check() (uint64, error) {
	var timeout error
	if m.Timeout < 0 {
		timeout = fmt.Errorf("%w: negative timeout %s", ErrMalformed, m.Timeout)
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, checkRequired(m.Method, MaxName)}, tagCheck{4, timeout}, tagCheck{5, checkBlob(m.Args, MaxMessageSize)})
}
func (*Call) repeated(uint64) bool        { return false }
func (*Call) fieldName(tag uint64) string { return name(namesCall, tag) }

// ---- Subscribe ----

func (*Subscribe) Kind() Kind          { return KindSubscribe }
func (m *Subscribe) RequestID() uint64 { return m.ID }
func (m *Subscribe) appendFields(dst []byte) []byte {
	dst = appendUint(dst, 1, m.ID)
	dst = appendString(dst, 2, m.Session)
	for _, e := range m.Events {
		dst = wire.AppendStringField(dst, 3, e)
	}
	return appendBool(dst, 4, m.All)
}
func (m *Subscribe) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, textItem(f, MaxName, MaxEvents, "events", "empty event name", &m.Events)
	case 4:
		v, err := f.Bool()
		m.All = v
		return true, err
	}
	return false, nil
}
func (m *Subscribe) check() (uint64, error) {
	if tag, err := first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)}); err != nil {
		return tag, err
	}
	switch {
	case m.All && len(m.Events) > 0:
		return 4, fmt.Errorf("%w: all and a list of events exclude each other", ErrMalformed)
	case !m.All && len(m.Events) == 0:
		return 3, fmt.Errorf("%w: name at least one event, or set all", ErrMissingField)
	case len(m.Events) > MaxEvents:
		return 3, fmt.Errorf("%w: %d events, limit %d", ErrFieldTooLarge, len(m.Events), MaxEvents)
	}
	for _, e := range m.Events {
		if err := checkRequired(e, MaxName); err != nil {
			return 3, err
		}
	}
	return 0, nil
}
func (*Subscribe) repeated(tag uint64) bool    { return tag == 3 }
func (*Subscribe) fieldName(tag uint64) string { return name(namesSubscribe, tag) }

// ---- Watch ----

func (*Watch) Kind() Kind          { return KindWatch }
func (m *Watch) RequestID() uint64 { return m.ID }
func (m *Watch) appendFields(dst []byte) []byte {
	return appendString(appendString(appendUint(dst, 1, m.ID), 2, m.Session), 3, m.Path)
}
func (m *Watch) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxPath, &m.Path)
	}
	return false, nil
}
func (m *Watch) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, checkText(m.Path, MaxPath)})
}
func (*Watch) repeated(uint64) bool        { return false }
func (*Watch) fieldName(tag uint64) string { return name(namesWatch, tag) }

// ---- Stop ----

func (*Stop) Kind() Kind          { return KindStop }
func (m *Stop) RequestID() uint64 { return m.ID }
func (m *Stop) appendFields(dst []byte) []byte {
	return appendUint(appendString(appendUint(dst, 1, m.ID), 2, m.Session), 3, m.Target)
}
func (m *Stop) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, uint64Field(f, &m.Target)
	}
	return false, nil
}
func (m *Stop) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, required(m.Target)})
}
func (*Stop) repeated(uint64) bool        { return false }
func (*Stop) fieldName(tag uint64) string { return name(namesStop, tag) }

// ---- Cancel ----

func (*Cancel) Kind() Kind { return KindCancel }

// RequestID is the Target: a Cancel has no id of its own and no answer.
func (m *Cancel) RequestID() uint64              { return m.Target }
func (m *Cancel) appendFields(dst []byte) []byte { return appendUint(dst, 1, m.Target) }
func (m *Cancel) field(f wire.Field) (bool, error) {
	if f.Tag == 1 {
		return true, uint64Field(f, &m.Target)
	}
	return false, nil
}
func (m *Cancel) check() (uint64, error)    { return first(tagCheck{1, required(m.Target)}) }
func (*Cancel) repeated(uint64) bool        { return false }
func (*Cancel) fieldName(tag uint64) string { return name(namesCancel, tag) }

// ---- Error ----

func (*Error) Kind() Kind           { return KindError }
func (m *Error) ResponseTo() uint64 { return m.ID }
func (m *Error) appendFields(dst []byte) []byte {
	return appendString(appendUint(appendUint(dst, 1, m.ID), 2, uint64(m.Code)), 3, m.Message)
}
func (m *Error) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		v, err := f.Uint16()
		m.Code = Code(v)
		return true, err
	case 3:
		return true, text(f, MaxText, &m.Message)
	}
	return false, nil
}
func (m *Error) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, required(uint64(m.Code))}, tagCheck{3, checkText(m.Message, MaxText)})
}
func (*Error) repeated(uint64) bool        { return false }
func (*Error) fieldName(tag uint64) string { return name(namesError, tag) }

// NewError returns an Error answering request id, with msg cut to MaxText
// bytes (at a UTF-8 boundary, invalid UTF-8 replaced) so that it always
// encodes.
func NewError(id uint64, code Code, msg string) *Error {
	return &Error{ID: id, Code: code, Message: CutText(msg, MaxText)}
}

// CutText returns s as valid UTF-8 of at most max bytes, cut at a rune
// boundary with "..." at the end when it was longer.
func CutText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD
	}
	if len(s) <= max {
		return s
	}
	if max < 3 {
		return ""
	}
	cut := max - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// ---- ServiceList ----

func (*ServiceList) Kind() Kind           { return KindServiceList }
func (m *ServiceList) ResponseTo() uint64 { return m.ID }
func (m *ServiceList) appendFields(dst []byte) []byte {
	dst = appendUint(dst, 1, m.ID)
	var entry []byte
	for i := range m.Services {
		entry = m.Services[i].appendFields(entry[:0])
		dst = wire.AppendBytesField(dst, 2, entry)
	}
	return dst
}
func (m *ServiceList) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		if len(m.Services) >= MaxServices {
			return true, fmt.Errorf("%w: more than %d services", ErrFieldTooLarge, MaxServices)
		}
		var e ServiceEntry
		if err := e.decode(f.Value); err != nil {
			return true, err
		}
		m.Services = append(m.Services, e)
		return true, nil
	}
	return false, nil
}
func (m *ServiceList) check() (uint64, error) {
	if m.ID == 0 {
		return 1, ErrMissingField
	}
	if len(m.Services) > MaxServices {
		return 2, fmt.Errorf("%w: %d services, limit %d", ErrFieldTooLarge, len(m.Services), MaxServices)
	}
	for i := range m.Services {
		if err := m.Services[i].check(); err != nil {
			return 2, fmt.Errorf("service %d: %w", i, err)
		}
	}
	return 0, nil
}
func (*ServiceList) repeated(tag uint64) bool    { return tag == 2 }
func (*ServiceList) fieldName(tag uint64) string { return name(namesServiceList, tag) }

func (e *ServiceEntry) appendFields(dst []byte) []byte {
	dst = appendString(dst, 1, e.Name)
	dst = appendString(dst, 2, e.Version)
	dst = appendString(dst, 3, e.Description)
	dst = appendBool(dst, 4, e.Available)
	dst = appendString(dst, 5, e.Problem)
	return appendString(dst, 6, e.Runner)
}

// decode decodes a nested entry; its errors name the entry's field.
func (e *ServiceEntry) decode(b []byte) error {
	r := wire.NewFieldReader(b)
	var seen uint8
	for r.Next() {
		f := r.Field()
		if f.Tag >= 1 && f.Tag <= 6 {
			if seen&(1<<f.Tag) != 0 {
				return fmt.Errorf("%s: %w", namesEntry[f.Tag], ErrDuplicateField)
			}
			seen |= 1 << f.Tag
		}
		var err error
		switch f.Tag {
		case 1:
			err = text(f, MaxServiceName, &e.Name)
		case 2:
			err = text(f, MaxVersion, &e.Version)
		case 3:
			err = text(f, MaxText, &e.Description)
		case 4:
			e.Available, err = f.Bool()
		case 5:
			err = text(f, MaxText, &e.Problem)
		case 6:
			err = text(f, MaxText, &e.Runner)
		}
		if err != nil {
			return fmt.Errorf("%s at entry offset %d: %w", name(namesEntry, f.Tag), f.Offset, err)
		}
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("entry at offset %d: %w", r.Field().Offset, err)
	}
	return e.check()
}

func (e *ServiceEntry) check() error {
	if err := checkRequired(e.Name, MaxServiceName); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	for _, c := range []struct {
		name, s string
		max     int
	}{{"version", e.Version, MaxVersion}, {"description", e.Description, MaxText}, {"problem", e.Problem, MaxText}, {"runner", e.Runner, MaxText}} {
		if err := checkText(c.s, c.max); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// ---- Description ----

func (*Description) Kind() Kind           { return KindDescription }
func (m *Description) ResponseTo() uint64 { return m.ID }
func (m *Description) appendFields(dst []byte) []byte {
	return appendBytes(appendUint(dst, 1, m.ID), 2, m.XML)
}
func (m *Description) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, blob(f, MaxDocument, &m.XML)
	}
	return false, nil
}
func (m *Description) check() (uint64, error) {
	var xml error
	if len(m.XML) == 0 {
		xml = ErrMissingField
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, xml}, tagCheck{2, checkBlob(m.XML, MaxDocument)})
}
func (*Description) repeated(uint64) bool        { return false }
func (*Description) fieldName(tag uint64) string { return name(namesDescription, tag) }

// ---- SessionStarted ----

func (*SessionStarted) Kind() Kind           { return KindSessionStarted }
func (m *SessionStarted) ResponseTo() uint64 { return m.ID }
func (m *SessionStarted) appendFields(dst []byte) []byte {
	return appendBytes(appendBytes(appendString(appendUint(dst, 1, m.ID), 2, m.Session), 3, m.Routing), 4, m.Secret)
}
func (m *SessionStarted) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, blob(f, MaxDocument, &m.Routing)
	case 4:
		return true, blob(f, SecretSize, &m.Secret)
	}
	return false, nil
}
func (m *SessionStarted) check() (uint64, error) {
	var routing error
	if len(m.Routing) == 0 {
		routing = ErrMissingField
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, routing}, tagCheck{3, checkBlob(m.Routing, MaxDocument)}, tagCheck{4, checkSecret(m.Secret, false)})
}
func (*SessionStarted) repeated(uint64) bool        { return false }
func (*SessionStarted) fieldName(tag uint64) string { return name(namesStarted, tag) }

// ---- Result ----

func (*Result) Kind() Kind           { return KindResult }
func (m *Result) ResponseTo() uint64 { return m.ID }
func (m *Result) appendFields(dst []byte) []byte {
	return appendBytes(appendUint(dst, 1, m.ID), 2, m.Value)
}
func (m *Result) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, blob(f, MaxMessageSize, &m.Value)
	}
	return false, nil
}
func (m *Result) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkBlob(m.Value, MaxMessageSize)})
}
func (*Result) repeated(uint64) bool        { return false }
func (*Result) fieldName(tag uint64) string { return name(namesResult, tag) }

// ---- OK ----

func (*OK) Kind() Kind           { return KindOK }
func (m *OK) ResponseTo() uint64 { return m.ID }
func (m *OK) appendFields(dst []byte) []byte {
	return appendBool(appendUint(dst, 1, m.ID), 2, m.Resume)
}
func (m *OK) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		v, err := f.Bool()
		m.Resume = v
		return true, err
	}
	return false, nil
}
func (m *OK) check() (uint64, error)    { return first(tagCheck{1, required(m.ID)}) }
func (*OK) repeated(uint64) bool        { return false }
func (*OK) fieldName(tag uint64) string { return name(namesOK, tag) }

// ---- Snapshot ----

func (*Snapshot) Kind() Kind           { return KindSnapshot }
func (m *Snapshot) ResponseTo() uint64 { return m.ID }
func (m *Snapshot) appendFields(dst []byte) []byte {
	return appendBytes(appendString(appendUint(dst, 1, m.ID), 2, m.Path), 3, m.Value)
}
func (m *Snapshot) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxPath, &m.Path)
	case 3:
		return true, blob(f, MaxMessageSize, &m.Value)
	}
	return false, nil
}
func (m *Snapshot) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkText(m.Path, MaxPath)}, tagCheck{3, checkBlob(m.Value, MaxMessageSize)})
}
func (*Snapshot) repeated(uint64) bool        { return false }
func (*Snapshot) fieldName(tag uint64) string { return name(namesSnapshot, tag) }

// ---- Event ----

func (*Event) Kind() Kind          { return KindEvent }
func (m *Event) SessionID() string { return m.Session }
func (m *Event) appendFields(dst []byte) []byte {
	return appendBytes(appendString(appendString(dst, 1, m.Session), 2, m.Name), 3, m.Args)
}
func (m *Event) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxSessionID, &m.Session)
	case 2:
		return true, text(f, MaxName, &m.Name)
	case 3:
		return true, blob(f, MaxMessageSize, &m.Args)
	}
	return false, nil
}
func (m *Event) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Session, MaxSessionID)}, tagCheck{2, checkRequired(m.Name, MaxName)},
		tagCheck{3, checkBlob(m.Args, MaxMessageSize)})
}
func (*Event) repeated(uint64) bool        { return false }
func (*Event) fieldName(tag uint64) string { return name(namesEvent, tag) }

// ---- EventsLost ----

func (*EventsLost) Kind() Kind          { return KindEventsLost }
func (m *EventsLost) SessionID() string { return m.Session }
func (m *EventsLost) appendFields(dst []byte) []byte {
	return appendUint(appendString(dst, 1, m.Session), 2, m.Count)
}
func (m *EventsLost) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxSessionID, &m.Session)
	case 2:
		return true, uint64Field(f, &m.Count)
	}
	return false, nil
}
func (m *EventsLost) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Session, MaxSessionID)}, tagCheck{2, required(m.Count)})
}
func (*EventsLost) repeated(uint64) bool        { return false }
func (*EventsLost) fieldName(tag uint64) string { return name(namesLost, tag) }

// ---- DataChange ----

func (*DataChange) Kind() Kind          { return KindDataChange }
func (m *DataChange) SessionID() string { return m.Session }
func (m *DataChange) appendFields(dst []byte) []byte {
	dst = appendString(dst, 1, m.Session)
	dst = appendUint(dst, 2, m.Watch)
	dst = appendString(dst, 3, m.Path)
	return appendBytes(dst, 4, m.Value)
}
func (m *DataChange) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxSessionID, &m.Session)
	case 2:
		return true, uint64Field(f, &m.Watch)
	case 3:
		return true, text(f, MaxPath, &m.Path)
	case 4:
		return true, blob(f, MaxMessageSize, &m.Value)
	}
	return false, nil
}
func (m *DataChange) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Session, MaxSessionID)}, tagCheck{2, required(m.Watch)},
		tagCheck{3, checkText(m.Path, MaxPath)}, tagCheck{4, checkBlob(m.Value, MaxMessageSize)})
}
func (*DataChange) repeated(uint64) bool        { return false }
func (*DataChange) fieldName(tag uint64) string { return name(namesChange, tag) }

// ---- SessionClosed ----

func (*SessionClosed) Kind() Kind          { return KindSessionClosed }
func (m *SessionClosed) SessionID() string { return m.Session }
func (m *SessionClosed) appendFields(dst []byte) []byte {
	return appendString(appendString(dst, 1, m.Session), 2, m.Reason)
}
func (m *SessionClosed) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxSessionID, &m.Session)
	case 2:
		return true, text(f, MaxText, &m.Reason)
	}
	return false, nil
}
func (m *SessionClosed) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Session, MaxSessionID)}, tagCheck{2, checkText(m.Reason, MaxText)})
}
func (*SessionClosed) repeated(uint64) bool        { return false }
func (*SessionClosed) fieldName(tag uint64) string { return name(namesClosed, tag) }
