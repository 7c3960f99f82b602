package session

import (
	"crypto/hmac"
	"crypto/sha256"
)

// Resume streams on reliable direct links (docs/PROTOCOL.md §15.3).
//
// A session with a link key (RemoteOpen.LinkKey, which only the client and
// the runner know) opens its reliable direct links with LinkOpen.Resume;
// after the runner's OK (Resume set) the client opens a resume stream on
// the connection (docs/RESUME.md), and the first message each way on that
// stream is a bind proof: HMAC-SHA256 under the link's resume key
// (DeriveLinkResumeKey) of a label naming the direction and the stream's
// id. The runner binds the stream to the session's link only after the
// client's proof verifies, and the client uses the stream only after the
// runner's does: so someone who saw the link's token (it travels in clear
// over tcp) can neither take the link over nor pose as the runner. From
// then on the stream's own secret (an X25519 exchange) authenticates every
// resumption.

// LinkProofSize is the size of a bind proof.
const LinkProofSize = sha256.Size

// DeriveLinkResumeKey derives the resume key of one reliable direct link
// from the session's link key (LinkKeySize bytes): a label of its own, so
// that it is independent of the datagram tag keys (DeriveLinkTagKeys).
// Nil when linkKey is not a link key.
func DeriveLinkResumeKey(linkKey []byte, link string) []byte {
	if len(linkKey) != LinkKeySize {
		return nil
	}
	m := hmac.New(sha256.New, linkKey)
	m.Write([]byte("connect direct resume v1\x00"))
	m.Write([]byte(link))
	return m.Sum(nil)
}

// LinkBindProof is the bind proof of a direct link's resume stream with
// the given id, by the client (runner false) or the runner.
func LinkBindProof(key []byte, streamID [16]byte, runner bool) []byte {
	label := "connect direct resume v1 client bind"
	if runner {
		label = "connect direct resume v1 runner bind"
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(streamID[:])
	return m.Sum(nil)
}

// VerifyLinkBindProof reports whether proof is the bind proof of the
// stream by the side runner says, in constant time. Any input is safe.
func VerifyLinkBindProof(key []byte, streamID [16]byte, runner bool, proof []byte) bool {
	if len(key) == 0 || len(proof) != LinkProofSize {
		return false
	}
	return hmac.Equal(LinkBindProof(key, streamID, runner), proof)
}
