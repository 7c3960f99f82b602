package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Session tags on datagram direct links (docs/PROTOCOL.md §15.1).
//
// A datagram link (the unreliable link over udp) keeps its session
// identity across a change of the client's address and port: every
// datagram on it, in both directions, is a tagged envelope around one wire
// frame:
//
//	magic 0xC5 | version 1 | link id (8) | counter (8) | wire frame | tag (16)
//
// The tag is the first 16 bytes of HMAC-SHA256 over everything before it,
// keyed by the link's key for that direction. The keys come from the
// session's secret (SessionStarted.Secret), which only the client and the
// server know: the server gives the runner LinkKey = DeriveLinkKey(secret,
// session) in RemoteOpen, over its own connection, never over udp; both
// ends derive from it, per link name, the link id and one key per
// direction (DeriveLinkTagKeys). The counter is a number the sender never
// repeats on that link and direction (it starts at the wall clock in
// nanoseconds and counts up), and the receiver keeps a replay window
// (ReplayWindow): a datagram is taken once, only if its tag verifies and
// its counter is fresh. The runner moves the link to the source address of
// the newest such datagram.

// Sizes of the tagged envelope.
const (
	// TagMagic is the first byte of a tagged datagram (a plain wire frame
	// starts with its version, 1).
	TagMagic = 0xC5
	// TagVersion is the envelope's version.
	TagVersion = 1
	// TagHeaderSize is magic, version, link id and counter.
	TagHeaderSize = 18
	// TagSize is the size of the truncated HMAC-SHA256 tag.
	TagSize = 16
	// TagOverhead is what the envelope adds to a frame.
	TagOverhead = TagHeaderSize + TagSize
	// LinkKeySize is the size of a session's link key (RemoteOpen.LinkKey).
	LinkKeySize = 32
	// ReplayWindowSize is how far behind the newest counter a reordered
	// datagram is still taken.
	ReplayWindowSize = 256
)

// Errors of ParseTagged.
var (
	ErrNotTagged = errors.New("not a tagged datagram")
	ErrBadTag    = errors.New("malformed tagged datagram")
)

// DeriveLinkKey returns a session's link key, from its secret: what the
// server gives the runner so that it can check the tags of the session's
// datagram links without learning the secret (which reclaims the session).
// Nil when the session has no secret.
func DeriveLinkKey(secret []byte, sessionID string) []byte {
	if len(secret) != SecretSize {
		return nil
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("connect link key v1\x00"))
	m.Write([]byte(sessionID))
	return m.Sum(nil)
}

// LinkTagKeys are what both ends of one datagram link derive from the
// session's link key and the link's name.
type LinkTagKeys struct {
	// ID names the link in every datagram, so that the runner finds it
	// whatever address the datagram comes from.
	ID uint64
	// ClientToRunner and RunnerToClient key the tags of each direction
	// (distinct, so that a datagram cannot be reflected back).
	ClientToRunner, RunnerToClient [32]byte
}

// DeriveLinkTagKeys derives the id and keys of link from a session's link
// key (LinkKeySize bytes).
func DeriveLinkTagKeys(linkKey []byte, link string) LinkTagKeys {
	sub := func(label string) []byte {
		m := hmac.New(sha256.New, linkKey)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write([]byte(link))
		return m.Sum(nil)
	}
	var k LinkTagKeys
	k.ID = binary.BigEndian.Uint64(sub("id"))
	copy(k.ClientToRunner[:], sub("client to runner"))
	copy(k.RunnerToClient[:], sub("runner to client"))
	return k
}

// AppendTagged appends to dst the tagged envelope of frame, with the link
// id, the counter and the tag under key.
func AppendTagged(dst []byte, key *[32]byte, id, counter uint64, frame []byte) []byte {
	start := len(dst)
	dst = append(dst, TagMagic, TagVersion)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = binary.BigEndian.AppendUint64(dst, counter)
	dst = append(dst, frame...)
	return append(dst, tagOf(key, dst[start:])...)
}

func tagOf(key *[32]byte, b []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(b)
	var sum [sha256.Size]byte
	return m.Sum(sum[:0])[:TagSize]
}

// IsTagged reports whether a datagram claims to be a tagged envelope (its
// first byte is TagMagic); ParseTagged says whether it is one.
func IsTagged(b []byte) bool { return len(b) > 0 && b[0] == TagMagic }

// ParseTagged reads a tagged datagram's link id, counter and frame without
// checking its tag (VerifyTag does, with the link's key). The frame is a
// subslice of b. It never panics and allocates nothing.
func ParseTagged(b []byte) (id, counter uint64, frame []byte, err error) {
	switch {
	case !IsTagged(b):
		return 0, 0, nil, ErrNotTagged
	case len(b) < TagOverhead+1:
		return 0, 0, nil, fmt.Errorf("%w: %d bytes, at least %d", ErrBadTag, len(b), TagOverhead+1)
	case b[1] != TagVersion:
		return 0, 0, nil, fmt.Errorf("%w: version %d, want %d", ErrBadTag, b[1], TagVersion)
	}
	id = binary.BigEndian.Uint64(b[2:10])
	counter = binary.BigEndian.Uint64(b[10:18])
	if counter == 0 {
		return 0, 0, nil, fmt.Errorf("%w: counter 0", ErrBadTag)
	}
	return id, counter, b[TagHeaderSize : len(b)-TagSize], nil
}

// VerifyTag reports whether the tag of a tagged datagram (as ParseTagged
// accepts it) is right for key; the comparison takes constant time.
func VerifyTag(key *[32]byte, b []byte) bool {
	if len(b) < TagOverhead+1 {
		return false
	}
	n := len(b) - TagSize
	return hmac.Equal(tagOf(key, b[:n]), b[n:])
}

// ReplayWindow remembers which counters of one link and direction were
// taken: the newest, and which of the ReplayWindowSize before it. The zero
// value is an empty window. It is not safe for concurrent use.
type ReplayWindow struct {
	top  uint64
	bits [ReplayWindowSize / 64]uint64
}

func (w *ReplayWindow) bit(c uint64) (int, uint64) {
	i := c % ReplayWindowSize
	return int(i / 64), 1 << (i % 64)
}

// Fresh reports whether counter c may be taken: never 0, newer than the
// newest, or within the window behind it and not taken yet.
func (w *ReplayWindow) Fresh(c uint64) bool {
	switch {
	case c == 0:
		return false
	case c > w.top:
		return true
	case w.top-c >= ReplayWindowSize:
		return false
	}
	i, m := w.bit(c)
	return w.bits[i]&m == 0
}

// Take records counter c as taken, if Fresh; newest says that c is the
// newest counter so far (the runner follows its source address).
func (w *ReplayWindow) Take(c uint64) (ok, newest bool) {
	if !w.Fresh(c) {
		return false, false
	}
	if c > w.top {
		if c-w.top >= ReplayWindowSize {
			clear(w.bits[:])
		} else {
			for x := w.top + 1; x < c; x++ {
				i, m := w.bit(x)
				w.bits[i] &^= m
			}
		}
		w.top, newest = c, true
	}
	i, m := w.bit(c)
	w.bits[i] |= m
	return true, newest
}

// Newest is the newest counter taken (0: none).
func (w *ReplayWindow) Newest() uint64 { return w.top }
