package core

import "github.com/bearerkit/connect/session"

// Session tags of datagram direct links (docs/PROTOCOL.md §15.1): the
// runner checks them with the session's link key, derived from the
// session's secret, which the server hands it in RemoteOpen (over the
// runner's own connection, never over udp). A session without a secret
// (not on a resume stream) has no link key, and its datagram links carry
// no tags.

// setLinkKey records the link key of a new session of a remote service,
// derived from its secret (nil: none), for the RemoteOpen that follows.
func (hs *hostedService) setLinkKey(id string, secret []byte) {
	if hs.remote == nil {
		return
	}
	key := session.DeriveLinkKey(secret, id)
	rs := hs.remote
	rs.mu.Lock()
	rs.putKey(id, key)
	rs.mu.Unlock()
}

// putKey records a session's link key; the caller holds rs.mu.
func (rs *remoteState) putKey(id string, key []byte) {
	if key == nil {
		return
	}
	if rs.keys == nil {
		rs.keys = map[string][]byte{}
	}
	rs.keys[id] = key
}

// linkKey returns a session's link key, for RemoteOpen; nil if none.
func (rs *remoteState) linkKey(id string) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.keys[id]
}
