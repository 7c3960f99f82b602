package session

import (
	"fmt"

	"github.com/bearerkit/connect/wire"
)

// Direct links (docs/PROTOCOL.md, "Direct links"): a client opens the
// direct links its routing document lists to the service's runner, over
// the link's bearer, and frames them like a server connection (wire
// frames; session messages in Data frames on Channel). The first message
// the client sends on a direct link is a LinkOpen, which the runner
// answers with OK (the link is bound to the session) or Error. From then
// on the link carries the session's Calls routed over it (answered on the
// link) and, from the runner, the session's Events and DataChanges routed
// over it, whose DataChange.Watch is the LinkOpen's id.
//
// LinksDown tells the server which direct links of a session the client
// does not have (it could not open them, or lost them), so that the server
// sends the session the events and runtime data that now fall back to the
// server link.

// The kinds of direct links.
const (
	// KindLinkOpen is a request, client → runner, first on a direct link.
	// Answer: OK, or Error.
	KindLinkOpen Kind = 0x38
	// KindLinksDown is a request, client → server. Answer: OK.
	KindLinksDown Kind = 0x39
)

// Limits of the direct-link messages.
const (
	// MaxClientBearers bounds the bearer types of one StartSession.
	MaxClientBearers = 64
	// MaxLinkName bounds a link name (routing.MaxLinkNameLen).
	MaxLinkName = 200
	// MaxSessionLinks bounds the links of one LinksDown (routing.MaxLinks).
	MaxSessionLinks = 64
)

// LinkOpen authenticates a direct link and binds it to a session: the
// session's id, the link's name in the routing document and the token the
// document gives the link. Answer: OK, or Error (CodeDenied when the
// runner has no such session with that token, or the session no such
// link over the bearer the client used).
type LinkOpen struct {
	ID      uint64 // tag 1, required
	Session string // tag 2, required, ≤ MaxSessionID
	Link    string // tag 3, required, ≤ MaxLinkName
	// Token is the link's token from the routing document. Never logged.
	Token string // tag 4, required, ≤ MaxToken
	// Resume asks for a resume stream over the link (a stream bearer,
	// a session with a link key; docs/PROTOCOL.md §15.3): a runner that
	// agrees answers OK with Resume set, and the resume handshake follows
	// on the connection.
	Resume bool // tag 5
}

// LinksDown tells the server which direct links of a session the client
// does not use: the resources routed over them fall back as the routing
// document says, and those that fall back to the server link are sent by
// the server from now on. It replaces the list of an earlier LinksDown;
// an empty list means that every direct link is up. Answer: OK.
type LinksDown struct {
	ID      uint64   // tag 1, required
	Session string   // tag 2, required
	Links   []string // tag 3, repeated, each 1 to MaxLinkName bytes, at most MaxSessionLinks
}

var (
	namesLinkOpen  = []string{1: "id", 2: "session", 3: "link", 4: "token", 5: "resume"}
	namesLinksDown = []string{1: "id", 2: "session", 3: "link"}
)

// ---- LinkOpen ----

func (*LinkOpen) Kind() Kind          { return KindLinkOpen }
func (m *LinkOpen) RequestID() uint64 { return m.ID }
func (m *LinkOpen) appendFields(dst []byte) []byte {
	dst = appendString(appendUint(dst, 1, m.ID), 2, m.Session)
	return appendBool(appendString(appendString(dst, 3, m.Link), 4, m.Token), 5, m.Resume)
}
func (m *LinkOpen) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, text(f, MaxLinkName, &m.Link)
	case 4:
		return true, text(f, MaxToken, &m.Token)
	case 5:
		v, err := f.Bool()
		m.Resume = v
		return true, err
	}
	return false, nil
}
func (m *LinkOpen) check() (uint64, error) {
	return first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)},
		tagCheck{3, checkRequired(m.Link, MaxLinkName)}, tagCheck{4, checkRequired(m.Token, MaxToken)})
}
func (*LinkOpen) repeated(uint64) bool        { return false }
func (*LinkOpen) fieldName(tag uint64) string { return name(namesLinkOpen, tag) }

// String shows the message without its token.
func (m *LinkOpen) String() string {
	resume := ""
	if m.Resume {
		resume = ", resume"
	}
	return fmt.Sprintf("LinkOpen{id %d, session %q, link %q, token: %d bytes%s}", m.ID, m.Session, m.Link, len(m.Token), resume)
}

// ---- LinksDown ----

func (*LinksDown) Kind() Kind          { return KindLinksDown }
func (m *LinksDown) RequestID() uint64 { return m.ID }
func (m *LinksDown) appendFields(dst []byte) []byte {
	dst = appendString(appendUint(dst, 1, m.ID), 2, m.Session)
	for _, l := range m.Links {
		dst = wire.AppendStringField(dst, 3, l)
	}
	return dst
}
func (m *LinksDown) field(f wire.Field) (bool, error) {
	switch f.Tag {
	case 1:
		return true, uint64Field(f, &m.ID)
	case 2:
		return true, text(f, MaxSessionID, &m.Session)
	case 3:
		return true, textItem(f, MaxLinkName, MaxSessionLinks, "links", "empty link name", &m.Links)
	}
	return false, nil
}
func (m *LinksDown) check() (uint64, error) {
	if tag, err := first(tagCheck{1, required(m.ID)}, tagCheck{2, checkRequired(m.Session, MaxSessionID)}); err != nil {
		return tag, err
	}
	if len(m.Links) > MaxSessionLinks {
		return 3, fmt.Errorf("%w: %d links, limit %d", ErrFieldTooLarge, len(m.Links), MaxSessionLinks)
	}
	for _, l := range m.Links {
		if err := checkRequired(l, MaxLinkName); err != nil {
			return 3, err
		}
	}
	return 0, nil
}
func (*LinksDown) repeated(tag uint64) bool    { return tag == 3 }
func (*LinksDown) fieldName(tag uint64) string { return name(namesLinksDown, tag) }

func init() {
	kindNames[KindLinkOpen] = "LinkOpen"
	kindNames[KindLinksDown] = "LinksDown"
}

// newDirectMessage returns an empty message of a direct-link kind, or nil.
func newDirectMessage(k Kind) Message {
	switch k {
	case KindLinkOpen:
		return &LinkOpen{}
	case KindLinksDown:
		return &LinksDown{}
	}
	return newRelayMessage(k)
}
