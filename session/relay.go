package session

import (
	"fmt"

	"github.com/bearerkit/connect/wire"
)

// Connection requests (docs/PROTOCOL.md, "Connection requests"): a runner
// that does not listen (remoteservicerunner without --listen) still serves
// direct links. Its ProvideService says Relay; the server then announces
// its own secondary endpoint in routing documents, and when a client's
// direct link arrives there, it asks the runner over the runner's control
// connection (its resume stream) for a connection: ConnectRequest, with a
// one-time token. The runner dials the server's secondary port, sends
// ConnectAttach with that token as its first message, and answers the
// request OK; the server then relays the client's link (its LinkOpen
// first) over that connection, byte for byte.

// The kinds of connection requests.
const (
	// KindConnectAttach is the first message a runner sends on a
	// connection it dialed to the server's secondary port. No answer on
	// success (the relayed link follows); Error and close otherwise.
	KindConnectAttach Kind = 0x3d
	// KindConnectRequest is a runner request, server → runner. Answer: OK
	// once the runner attached a connection, or Error.
	KindConnectRequest Kind = 0xc4
)

// Limits of connection requests.
const (
	// ConnectTokenSize is the size of a connection request's token.
	ConnectTokenSize = 16
	// MaxConnectHost bounds ConnectRequest.Host.
	MaxConnectHost = 253
)

// ConnectRequest asks a runner for one connection to the server's
// secondary port, for a direct link of Session that a client opened there.
type ConnectRequest struct {
	ID uint64 // tag 1, required
	// Token is the one-time token the runner presents in ConnectAttach:
	// exactly ConnectTokenSize random bytes. Never logged.
	Token []byte // tag 2, required
	// Port is the secondary port to dial (secondaryConnectPort).
	Port uint64 // tag 3, required, 1–65535
	// Host is the host to dial; empty: the host the runner reached the
	// server at (what servers send).
	Host    string // tag 4, ≤ MaxConnectHost
	Session string // tag 5, ≤ MaxSessionID: the session whose link it is, for logs
	Link    string // tag 6, ≤ MaxLinkName: the link's name, for logs
	// Datagram asks for a udp path instead of a tcp connection: the runner
	// dials a connected udp socket to Host:Port, sends ConnectAttach in one
	// datagram (one wire frame), repeats it as its keepalive, and serves the
	// session's tagged datagram links (§15.1) that the server forwards on
	// it (docs/PROTOCOL.md §15.2).
	Datagram bool // tag 7
}

// ConnectAttach binds a connection a runner dialed to the connection
// request whose token it carries.
type ConnectAttach struct {
	ID    uint64 // tag 1, required
	Token []byte // tag 2, required, ConnectTokenSize bytes. Never logged.
}

var (
	namesConnectRequest = []string{1: "id", 2: "token", 3: "port", 4: "host", 5: "session", 6: "link", 7: "datagram"}
	namesConnectAttach  = []string{1: "id", 2: "token"}
)

func checkConnectToken(b []byte) error {
	switch {
	case len(b) == 0:
		return ErrMissingField
	case len(b) != ConnectTokenSize:
		return fmt.Errorf("%w: token of %d bytes, want %d", ErrMalformed, len(b), ConnectTokenSize)
	}
	return nil
}

// ---- ConnectRequest ----

func (*ConnectRequest) Kind() Kind                { return KindConnectRequest }
func (m *ConnectRequest) RunnerRequestID() uint64 { return m.ID }
func (m *ConnectRequest) appendFields(dst []byte) []byte {
	dst = appendUint(appendBytes(appendUint(dst, 1, m.ID), 2, m.Token), 3, m.Port)
	dst = appendString(appendString(appendString(dst, 4, m.Host), 5, m.Session), 6, m.Link)
	return appendBool(dst, 7, m.Datagram)
}
func (m *ConnectRequest) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, blob(f, ConnectTokenSize, &m.Token)
	case 3:
		return true, uint64Field(f, &m.Port)
	case 4:
		return true, text(f, MaxConnectHost, &m.Host)
	case 5:
		return true, text(f, MaxSessionID, &m.Session)
	case 6:
		return true, text(f, MaxLinkName, &m.Link)
	case 7:
		v, err := f.Bool()
		m.Datagram = v
		return true, err
	}
	return false, nil
}
func (m *ConnectRequest) check() (uint64, error) {
	var port error
	switch {
	case m.Port == 0:
		port = ErrMissingField
	case m.Port > 65535:
		port = fmt.Errorf("%w: port %d", ErrMalformed, m.Port)
	}
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkConnectToken(m.Token)}, tagCheck{3, port},
		tagCheck{4, checkText(m.Host, MaxConnectHost)}, tagCheck{5, checkText(m.Session, MaxSessionID)},
		tagCheck{6, checkText(m.Link, MaxLinkName)})
}
func (*ConnectRequest) repeated(uint64) bool        { return false }
func (*ConnectRequest) fieldName(tag uint64) string { return name(namesConnectRequest, tag) }

// String shows the message without its token.
func (m *ConnectRequest) String() string {
	return fmt.Sprintf("ConnectRequest{id %d, host %q, port %d, session %q, link %q, datagram %t}", m.ID, m.Host, m.Port, m.Session, m.Link, m.Datagram)
}

// ---- ConnectAttach ----

func (*ConnectAttach) Kind() Kind          { return KindConnectAttach }
func (m *ConnectAttach) RequestID() uint64 { return m.ID }
func (m *ConnectAttach) appendFields(dst []byte) []byte {
	return appendBytes(appendUint(dst, 1, m.ID), 2, m.Token)
}
func (m *ConnectAttach) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, blob(f, ConnectTokenSize, &m.Token)
	}
	return false, nil
}
func (m *ConnectAttach) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkConnectToken(m.Token)})
}
func (*ConnectAttach) repeated(uint64) bool        { return false }
func (*ConnectAttach) fieldName(tag uint64) string { return name(namesConnectAttach, tag) }

// String shows the message without its token.
func (m *ConnectAttach) String() string { return fmt.Sprintf("ConnectAttach{id %d}", m.ID) }

func init() {
	kindNames[KindConnectRequest] = "ConnectRequest"
	kindNames[KindConnectAttach] = "ConnectAttach"
}

// newRelayMessage returns an empty message of a connection-request kind,
// or nil.
func newRelayMessage(k Kind) Message {
	switch k {
	case KindConnectRequest:
		return &ConnectRequest{}
	case KindConnectAttach:
		return &ConnectAttach{}
	}
	return nil
}
