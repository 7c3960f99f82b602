package session

import (
	"fmt"
	"math"
	"time"

	"github.com/bearerkit/connect/wire"
)

// Remote services (docs/PROTOCOL.md, "Remote services"): a runner
// (remoteservicerunner) is a registered client that provides services. It
// offers each one with ProvideService, answered OK or Error like any
// request. From then on the server sends it runner requests for the
// sessions of its services (kinds 0xc0–0xdf, server → runner), which the
// runner answers with the ordinary responses (OK, Result, Error, runner →
// server), and the runner pushes its services' events, runtime data and
// lost sessions to the server as runner notifications (kinds 0xe0–0xff,
// runner → server). The server keeps the runtime data and fans events and
// data out to its clients' sessions as for a service inside the server.
//
// Request ids of the two directions are independent: a response from the
// runner answers a runner request of the server, a response from the
// server answers a request of the runner.

// The kinds of remote services.
const (
	// KindProvideService is a request, runner → server. Answer: OK.
	KindProvideService Kind = 0x30

	// Runner requests, server → runner.
	KindRemoteOpen   Kind = 0xc0 // answer: OK
	KindRemoteCall   Kind = 0xc1 // answer: Result
	KindRemoteClose  Kind = 0xc2 // no answer
	KindRemoteCancel Kind = 0xc3 // no answer

	// Runner notifications, runner → server.
	KindServiceEvent      Kind = 0xe0
	KindServiceData       Kind = 0xe1
	KindRemoteSessionLost Kind = 0xe2
)

// Limits of the remote-service messages.
const (
	// MaxEndpoints bounds the endpoints of one ProvideService.
	MaxEndpoints = 64
	// MaxAddress bounds an endpoint address.
	MaxAddress = 256
	// MaxBearerType bounds a bearer type id.
	MaxBearerType = 128
	// MaxToken bounds a session's direct-link token.
	MaxToken = 256
	// MaxClientID bounds a client id in RemoteOpen (servers send UUIDs).
	MaxClientID = 64
)

// IsRunnerRequest reports whether k is in the runner-request range
// (0xc0–0xdf, server → runner), known or not.
func (k Kind) IsRunnerRequest() bool { return k >= 0xc0 && k <= 0xdf }

// IsRunnerNotification reports whether k is in the runner-notification
// range (0xe0–0xff, runner → server), known or not.
func (k Kind) IsRunnerNotification() bool { return k >= 0xe0 }

// hasID reports whether messages of kind k carry a request id in tag 1
// (the kinds a receiver can answer with an Error when they do not decode).
func (k Kind) hasID() bool {
	switch k {
	case KindCancel, KindRemoteClose, KindRemoteCancel:
		return false
	}
	return k.IsRequest() || k.IsResponse() || k.IsRunnerRequest()
}

// RunnerRequest is a message the server sends to a runner; the runner
// answers it with one response carrying the same id (RemoteClose and
// RemoteCancel excepted).
type RunnerRequest interface {
	Message
	RunnerRequestID() uint64
}

// RunnerNotification is a message a runner pushes to the server about one
// of its services.
type RunnerNotification interface {
	Message
	ServiceName() string
}

// ProvideService offers a service to the server: the runner serves it from
// now on. Answer: OK, or Error (CodeRefused when the name belongs to a
// service of the server's own or to another runner's, CodeDenied when the
// server does not let this client provide services, CodeBadRequest when
// the service file is not valid).
type ProvideService struct {
	ID      uint64 // tag 1, required
	Service string // tag 2, required, ≤ MaxServiceName: the service file's name
	XML     []byte // tag 3, required, ≤ MaxDocument: the service file
	// Endpoints are the addresses where the runner accepts direct links,
	// for routing documents.
	Endpoints []RunnerEndpoint // tag 4, repeated (each a nested TLV), at most MaxEndpoints
	// Relay says that the runner does not listen: the server announces
	// its secondary endpoint for the runner's direct links and obtains
	// connections to the runner with ConnectRequest (relay.go).
	Relay bool // tag 5
}

// RunnerEndpoint is one address where a runner accepts direct links. It is
// encoded as the value of one tag-4 field of ProvideService, itself TLV.
type RunnerEndpoint struct {
	Address string // tag 1, required, ≤ MaxAddress: scheme://host:port[/path]
	Bearer  string // tag 2, required, ≤ MaxBearerType: the bearer type serving it
	// Capabilities are the bearer's capability bits (bearers.Capabilities).
	Capabilities uint64 // tag 3
}

// RemoteOpen asks the runner to open a session with one of its services.
// Answer: OK once the service accepted it, or Error (CodeRefused with the
// service's reason when it refused).
type RemoteOpen struct {
	ID      uint64 // tag 1, required
	Service string // tag 2, required
	Session string // tag 3, required, ≤ MaxSessionID
	Client  string // tag 4, ≤ MaxClientID: the client's id
	// Token is the session's direct-link token, which the runner checks
	// when the client opens a direct link.
	Token string // tag 5, ≤ MaxToken
	// Routing is the session's routing document, as the client got it:
	// the runner accepts a direct link only for a link it names, and a
	// call on a direct link only for a method routed over that link
	// (docs/REMOTE.md, "Direct links"). Empty when the service was
	// provided by an older server.
	Routing []byte // tag 6, ≤ MaxDocument
	// LinkKey is the session's link key (DeriveLinkKey of its secret,
	// LinkKeySize bytes): the runner checks with it the session tags of
	// the session's datagram links (docs/PROTOCOL.md §15.1). Empty when
	// the session has no secret: its datagram links carry no tags.
	LinkKey []byte // tag 7
}

// RemoteCall calls a method of one of the runner's services. Answer:
// Result, or Error.
type RemoteCall struct {
	ID      uint64 // tag 1, required
	Service string // tag 2, required
	Session string // tag 3, ≤ MaxSessionID; empty for a call outside sessions (the HTTP API)
	Method  string // tag 4, required, ≤ MaxName
	// Timeout is the time the caller still waits (0: no deadline); it
	// travels as nanoseconds.
	Timeout time.Duration // tag 5
	Args    []byte        // tag 6
}

// RemoteClose tells the runner that a session ended. No answer.
type RemoteClose struct {
	Service string // tag 1, required
	Session string // tag 2, required
	Reason  string // tag 3, ≤ MaxText
}

// RemoteCancel tells the runner that the caller of the RemoteCall whose ID
// is Target stopped waiting. No answer; the call is still answered.
type RemoteCancel struct {
	Target uint64 // tag 1, required
}

// ServiceEvent is an event one of the runner's services emitted, for one
// session or (Session empty) for every session subscribed to it.
type ServiceEvent struct {
	Service string // tag 1, required
	Session string // tag 2, ≤ MaxSessionID
	Name    string // tag 3, required, ≤ MaxName
	Args    []byte // tag 4
}

// ServiceData is a runtime-data update of one of the runner's services:
// the value at Path ("" for the whole tree), encoded against its type.
type ServiceData struct {
	Service string // tag 1, required
	Path    string // tag 2, ≤ MaxPath
	Value   []byte // tag 3
}

// RemoteSessionLost says that the runner's service ended a session on its
// own (a restarted plugin refused to reopen it): the server ends it for
// its client.
type RemoteSessionLost struct {
	Service string // tag 1, required
	Session string // tag 2, required
	Reason  string // tag 3, ≤ MaxText
}

var (
	namesProvide     = []string{1: "id", 2: "service", 3: "xml", 4: "endpoint", 5: "relay"}
	namesEndpoint    = []string{1: "address", 2: "bearer", 3: "capabilities"}
	namesRemoteOpen  = []string{1: "id", 2: "service", 3: "session", 4: "client", 5: "token", 6: "routing", 7: "link_key"}
	namesRemoteCall  = []string{1: "id", 2: "service", 3: "session", 4: "method", 5: "timeout_ns", 6: "args"}
	namesRemoteClose = []string{1: "service", 2: "session", 3: "reason"}
	namesSvcEvent    = []string{1: "service", 2: "session", 3: "name", 4: "args"}
	namesSvcData     = []string{1: "service", 2: "path", 3: "value"}
)

// ---- ProvideService ----

func (*ProvideService) Kind() Kind          { return KindProvideService }
func (m *ProvideService) RequestID() uint64 { return m.ID }
func (m *ProvideService) appendFields(dst []byte) []byte {
	dst = appendBytes(appendString(appendUint(dst, 1, m.ID), 2, m.Service), 3, m.XML)
	var entry []byte
	for i := range m.Endpoints {
		entry = m.Endpoints[i].appendFields(entry[:0])
		dst = wire.AppendBytesField(dst, 4, entry)
	}
	return appendBool(dst, 5, m.Relay)
}
func (m *ProvideService) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxServiceName, &m.Service)
	case 3:
		return true, blob(f, MaxDocument, &m.XML)
	case 4:
		if len(m.Endpoints) >= MaxEndpoints {
			return true, fmt.Errorf("%w: more than %d endpoints", ErrFieldTooLarge, MaxEndpoints)
		}
		var e RunnerEndpoint
		if err := e.decode(f.Value); err != nil {
			return true, err
		}
		m.Endpoints = append(m.Endpoints, e)
		return true, nil
	case 5:
		v, err := f.Bool()
		m.Relay = v
		return true, err
	}
	return false, nil
}
func (m *ProvideService) check() (uint64, error) {
	var xml, endpoints error
	if len(m.XML) == 0 {
		xml = ErrMissingField
	}
	if len(m.Endpoints) > MaxEndpoints {
		endpoints = fmt.Errorf("%w: %d endpoints, limit %d", ErrFieldTooLarge, len(m.Endpoints), MaxEndpoints)
	}
	for i := range m.Endpoints {
		if endpoints != nil {
			break
		}
		if err := m.Endpoints[i].check(); err != nil {
			endpoints = fmt.Errorf("endpoint %d: %w", i, err)
		}
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Service, MaxServiceName)},
		tagCheck{3, xml}, tagCheck{3, checkBlob(m.XML, MaxDocument)}, tagCheck{4, endpoints})
}
func (*ProvideService) repeated(tag uint64) bool    { return tag == 4 }
func (*ProvideService) fieldName(tag uint64) string { return name(namesProvide, tag) }

func (e *RunnerEndpoint) appendFields(dst []byte) []byte {
	return appendUint(appendString(appendString(dst, 1, e.Address), 2, e.Bearer), 3, e.Capabilities)
}

// decode decodes a nested endpoint; its errors name the endpoint's field.
func (e *RunnerEndpoint) decode(b []byte) error {
	r := wire.NewFieldReader(b)
	var seen uint8
	for r.Next() {
		f := r.Field()
		if f.Tag >= 1 && f.Tag <= 3 {
			if seen&(1<<f.Tag) != 0 {
				return fmt.Errorf("%s: %w", namesEndpoint[f.Tag], ErrDuplicateField)
			}
			seen |= 1 << f.Tag
		}
		var err error
		switch f.Tag {
		case 1:
			err = text(f, MaxAddress, &e.Address)
		case 2:
			err = text(f, MaxBearerType, &e.Bearer)
		case 3:
			err = uint64Field(f, &e.Capabilities)
		}
		if err != nil {
			return fmt.Errorf("%s at endpoint offset %d: %w", name(namesEndpoint, f.Tag), f.Offset, err)
		}
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("endpoint at offset %d: %w", r.Field().Offset, err)
	}
	return e.check()
}

func (e *RunnerEndpoint) check() error {
	if err := checkRequired(e.Address, MaxAddress); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if err := checkRequired(e.Bearer, MaxBearerType); err != nil {
		return fmt.Errorf("bearer: %w", err)
	}
	return nil
}

// ---- RemoteOpen ----

func (*RemoteOpen) Kind() Kind                { return KindRemoteOpen }
func (m *RemoteOpen) RunnerRequestID() uint64 { return m.ID }
func (m *RemoteOpen) appendFields(dst []byte) []byte {
	dst = appendString(appendString(appendUint(dst, 1, m.ID), 2, m.Service), 3, m.Session)
	dst = appendBytes(appendString(appendString(dst, 4, m.Client), 5, m.Token), 6, m.Routing)
	return appendBytes(dst, 7, m.LinkKey)
}
func (m *RemoteOpen) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxServiceName, &m.Service)
	case 3:
		return true, text(f, MaxSessionID, &m.Session)
	case 4:
		return true, text(f, MaxClientID, &m.Client)
	case 5:
		return true, text(f, MaxToken, &m.Token)
	case 6:
		return true, blob(f, MaxDocument, &m.Routing)
	case 7:
		return true, blob(f, LinkKeySize, &m.LinkKey)
	}
	return false, nil
}
func (m *RemoteOpen) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Service, MaxServiceName)},
		tagCheck{3, checkRequired(m.Session, MaxSessionID)}, tagCheck{4, checkText(m.Client, MaxClientID)},
		tagCheck{5, checkText(m.Token, MaxToken)}, tagCheck{6, checkBlob(m.Routing, MaxDocument)},
		tagCheck{7, checkSecret(m.LinkKey, false)})
}
func (*RemoteOpen) repeated(uint64) bool        { return false }
func (*RemoteOpen) fieldName(tag uint64) string { return name(namesRemoteOpen, tag) }

// ---- RemoteCall ----

func (*RemoteCall) Kind() Kind                { return KindRemoteCall }
func (m *RemoteCall) RunnerRequestID() uint64 { return m.ID }
func (m *RemoteCall) appendFields(dst []byte) []byte {
	dst = appendString(appendString(appendUint(dst, 1, m.ID), 2, m.Service), 3, m.Session)
	dst = appendString(dst, 4, m.Method)
	if m.Timeout > 0 {
		dst = appendUint(dst, 5, uint64(m.Timeout))
	}
	return appendBytes(dst, 6, m.Args)
}
func (m *RemoteCall) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxServiceName, &m.Service)
	case 3:
		return true, text(f, MaxSessionID, &m.Session)
	case 4:
		return true, text(f, MaxName, &m.Method)
	case 5:
		v, err := f.Uint64()
		if err == nil && v > math.MaxInt64 {
			err = fmt.Errorf("%w: timeout of %d ns exceeds %d", ErrMalformed, v, int64(math.MaxInt64))
		}
		m.Timeout = time.Duration(v)
		return true, err
	case 6:
		return true, blob(f, MaxMessageSize, &m.Args)
	}
	return false, nil
}
func (m *RemoteCall) check() (uint64, error) {
	var timeout error
	if m.Timeout < 0 {
		timeout = fmt.Errorf("%w: negative timeout %s", ErrMalformed, m.Timeout)
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Service, MaxServiceName)},
		tagCheck{3, checkText(m.Session, MaxSessionID)}, tagCheck{4, checkRequired(m.Method, MaxName)},
		tagCheck{5, timeout}, tagCheck{6, checkBlob(m.Args, MaxMessageSize)})
}
func (*RemoteCall) repeated(uint64) bool        { return false }
func (*RemoteCall) fieldName(tag uint64) string { return name(namesRemoteCall, tag) }

// ---- RemoteClose ----

func (*RemoteClose) Kind() Kind { return KindRemoteClose }

// RunnerRequestID is 0: a RemoteClose has no id and no answer.
func (m *RemoteClose) RunnerRequestID() uint64 { return 0 }
func (m *RemoteClose) appendFields(dst []byte) []byte {
	return appendString(appendString(appendString(dst, 1, m.Service), 2, m.Session), 3, m.Reason)
}
func (m *RemoteClose) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxServiceName, &m.Service)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxText, &m.Reason)
	}
	return false, nil
}
func (m *RemoteClose) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Service, MaxServiceName)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, checkText(m.Reason, MaxText)})
}
func (*RemoteClose) repeated(uint64) bool        { return false }
func (*RemoteClose) fieldName(tag uint64) string { return name(namesRemoteClose, tag) }

// ---- RemoteCancel ----

func (*RemoteCancel) Kind() Kind { return KindRemoteCancel }

// RunnerRequestID is the Target: a RemoteCancel has no id of its own and
// no answer.
func (m *RemoteCancel) RunnerRequestID() uint64        { return m.Target }
func (m *RemoteCancel) appendFields(dst []byte) []byte { return appendUint(dst, 1, m.Target) }
func (m *RemoteCancel) field(f wire.Field) (bool, error) {
	if f.Tag == 1 {
		return true, uint64Field(f, &m.Target)
	}
	return false, nil
}
func (m *RemoteCancel) check() (uint64, error)    { return first(tagCheck{1, required(m.Target)}) }
func (*RemoteCancel) repeated(uint64) bool        { return false }
func (*RemoteCancel) fieldName(tag uint64) string { return name(namesCancel, tag) }

// ---- ServiceEvent ----

func (*ServiceEvent) Kind() Kind            { return KindServiceEvent }
func (m *ServiceEvent) ServiceName() string { return m.Service }
func (m *ServiceEvent) appendFields(dst []byte) []byte {
	dst = appendString(appendString(dst, 1, m.Service), 2, m.Session)
	return appendBytes(appendString(dst, 3, m.Name), 4, m.Args)
}
func (m *ServiceEvent) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxServiceName, &m.Service)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxName, &m.Name)
	case 4:
		return true, blob(f, MaxMessageSize, &m.Args)
	}
	return false, nil
}
func (m *ServiceEvent) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Service, MaxServiceName)}, tagCheck{2, checkText(m.Session, MaxSessionID)},
		tagCheck{3, checkRequired(m.Name, MaxName)}, tagCheck{4, checkBlob(m.Args, MaxMessageSize)})
}
func (*ServiceEvent) repeated(uint64) bool        { return false }
func (*ServiceEvent) fieldName(tag uint64) string { return name(namesSvcEvent, tag) }

// ---- ServiceData ----

func (*ServiceData) Kind() Kind            { return KindServiceData }
func (m *ServiceData) ServiceName() string { return m.Service }
func (m *ServiceData) appendFields(dst []byte) []byte {
	return appendBytes(appendString(appendString(dst, 1, m.Service), 2, m.Path), 3, m.Value)
}
func (m *ServiceData) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxServiceName, &m.Service)
	case 2:
		return true, text(f, MaxPath, &m.Path)
	case 3:
		return true, blob(f, MaxMessageSize, &m.Value)
	}
	return false, nil
}
func (m *ServiceData) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Service, MaxServiceName)}, tagCheck{2, checkText(m.Path, MaxPath)},
		tagCheck{3, checkBlob(m.Value, MaxMessageSize)})
}
func (*ServiceData) repeated(uint64) bool        { return false }
func (*ServiceData) fieldName(tag uint64) string { return name(namesSvcData, tag) }

// ---- RemoteSessionLost ----

func (*RemoteSessionLost) Kind() Kind            { return KindRemoteSessionLost }
func (m *RemoteSessionLost) ServiceName() string { return m.Service }
func (m *RemoteSessionLost) appendFields(dst []byte) []byte {
	return appendString(appendString(appendString(dst, 1, m.Service), 2, m.Session), 3, m.Reason)
}
func (m *RemoteSessionLost) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, text(f, MaxServiceName, &m.Service)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxText, &m.Reason)
	}
	return false, nil
}
func (m *RemoteSessionLost) check() (uint64, error) {
	return first(tagCheck{1, checkRequired(m.Service, MaxServiceName)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, checkText(m.Reason, MaxText)})
}
func (*RemoteSessionLost) repeated(uint64) bool        { return false }
func (*RemoteSessionLost) fieldName(tag uint64) string { return name(namesRemoteClose, tag) }

var remoteKindNames = map[Kind]string{
	KindProvideService: "ProvideService", KindRemoteOpen: "RemoteOpen", KindRemoteCall: "RemoteCall",
	KindRemoteClose: "RemoteClose", KindRemoteCancel: "RemoteCancel", KindServiceEvent: "ServiceEvent",
	KindServiceData: "ServiceData", KindRemoteSessionLost: "RemoteSessionLost",
}

func init() {
	for k, n := range remoteKindNames {
		kindNames[k] = n
	}
}

// newRemoteMessage returns an empty message of a remote-service kind, or
// nil for a kind this version does not define.
func newRemoteMessage(k Kind) Message {
	switch k {
	case KindProvideService:
		return &ProvideService{}
	case KindRemoteOpen:
		return &RemoteOpen{}
	case KindRemoteCall:
		return &RemoteCall{}
	case KindRemoteClose:
		return &RemoteClose{}
	case KindRemoteCancel:
		return &RemoteCancel{}
	case KindServiceEvent:
		return &ServiceEvent{}
	case KindServiceData:
		return &ServiceData{}
	case KindRemoteSessionLost:
		return &RemoteSessionLost{}
	}
	return newDirectMessage(k)
}
