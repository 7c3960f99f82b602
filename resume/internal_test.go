package resume

import (
	"errors"
	"testing"
)

// White-box tests of the rules that the end-to-end tests cannot provoke from
// a correct peer.

// TestReceiverDiscardsDuplicates: a message numbered at or below the last one
// received is discarded; a gap, a FIN with a payload, or anything after a
// FIN is a protocol error (which ends the connection, not the session).
func TestReceiverDiscardsDuplicates(t *testing.T) {
	s := newStream(*DefaultConfig(), roleServer, testID, filled(1))
	s.peerReplay = 4 << 20
	s.recvd = 5
	l := &link{s: s, kick: make(chan struct{}, 1), done: make(chan struct{}), recvNext: 4}
	for _, p := range []string{"four again", "five again", "six"} {
		if err := l.onData([]byte(p), false); err != nil {
			t.Fatal(err)
		}
	}
	if s.in.len() != 1 || string(*s.in.at(0).buf) != "six" || s.recvd != 6 {
		t.Fatalf("queue of %d, received %d", s.in.len(), s.recvd)
	}
	l.recvNext = 9
	if err := l.onData([]byte("nine"), false); !errors.Is(err, ErrProtocol) {
		t.Fatalf("gap: %v", err)
	}
	l.recvNext = 7
	if err := l.onData([]byte("x"), true); !errors.Is(err, ErrProtocol) {
		t.Fatalf("FIN with a payload: %v", err)
	}
	l.recvNext = 7
	if err := l.onData(nil, true); err != nil {
		t.Fatal(err)
	}
	if err := l.onData([]byte("after the end"), false); !errors.Is(err, ErrProtocol) {
		t.Fatalf("message after FIN: %v", err)
	}
	l.next = 3
	if err := l.onAck(3); !errors.Is(err, ErrProtocol) {
		t.Fatalf("acknowledgement of a message never sent on the connection: %v", err)
	}
}

// TestInstallChecksPeerState: the peer's "last received" in a handshake must
// lie between what it acknowledged before and what was sent. Above: a
// protocol error. Below: the peer lost messages it had acknowledged, which
// no longer exist anywhere: the stream ends with a *LostError naming them.
func TestInstallChecksPeerState(t *testing.T) {
	s := newStream(*DefaultConfig(), roleClient, testID, filled(1))
	s.sent, s.acked = 5, 3
	s.out.push(msg{})
	s.out.push(msg{})
	if err := s.install(nil, 6, 1, 1); !errors.Is(err, ErrProtocol) || s.Err() != nil {
		t.Fatalf("peer ahead of the sender: %v (stream %v)", err, s.Err())
	}
	err := s.install(nil, 2, 1, 1)
	var lost *LostError
	if !errors.As(err, &lost) || lost.Reported != 2 || lost.Acked != 3 || !errors.Is(s.Err(), ErrLost) {
		t.Fatalf("peer behind its own acknowledgement: %v (stream %v)", err, s.Err())
	}
}
