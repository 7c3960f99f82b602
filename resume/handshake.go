package resume

import (
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/wire"
)

// The handshakes (docs/RESUME.md, "Handshakes"):
//
//	open:    client Open{key, replay_buffer, max_message}
//	         server Accept{session_id, key, replay_buffer, max_message} | Refuse
//	resume:  client Resume{session_id, nonce}
//	         server Challenge{nonce, proof} | Refuse
//	         client Proof{proof, received, replay_buffer, max_message}
//	         server Accept{session_id, received, replay_buffer, max_message} | Refuse
//
// The session secret comes from an X25519 exchange in the open handshake
// (HKDF-SHA256 over the shared secret, salted with the session id, bound to
// both public keys): it never crosses the wire. A resume proves knowledge of
// it both ways with HMAC-SHA256 over both nonces, so a recorded proof is
// worthless for another resume.

const (
	labelSecret      = "connect resume v1 secret"
	labelServerProof = "connect resume v1 server proof"
	labelClientProof = "connect resume v1 client proof"
)

// deriveSecret computes the session secret from our X25519 key and the
// peer's public key.
func deriveSecret(priv *ecdh.PrivateKey, peerKey []byte, id uuid.UUID, clientKey, serverKey []byte) ([32]byte, error) {
	var secret [32]byte
	pub, err := ecdh.X25519().NewPublicKey(peerKey)
	if err != nil {
		return secret, err
	}
	shared, err := priv.ECDH(pub) // fails for low-order points
	if err != nil {
		return secret, err
	}
	key, err := hkdf.Key(sha256.New, shared, id[:], labelSecret+string(clientKey)+string(serverKey), len(secret))
	if err != nil {
		return secret, err
	}
	copy(secret[:], key)
	return secret, nil
}

// proof is the HMAC-SHA256 a side sends to prove that it knows the secret.
func proof(secret [32]byte, label string, id uuid.UUID, clientNonce, serverNonce [nonceLen]byte) [proofLen]byte {
	h := hmac.New(sha256.New, secret[:])
	h.Write([]byte(label))
	h.Write(id[:])
	h.Write(clientNonce[:])
	h.Write(serverNonce[:])
	var p [proofLen]byte
	h.Sum(p[:0])
	return p
}

func nonce() [nonceLen]byte {
	var n [nonceLen]byte
	rand.Read(n[:]) // never fails (crypto/rand crashes the program instead)
	return n
}

// guardConn closes conn when ctx is done. The returned release stops the
// guard; it reports false if the guard fired (conn is then closed).
func guardConn(ctx context.Context, conn wire.Conn) (release func() bool) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	var released, ok bool
	return func() bool {
		if !released {
			released, ok = true, stop()
		}
		return ok
	}
}

func writeControl(conn wire.Conn, m message) error {
	return conn.WriteFrame(controlFrame(nil, m))
}

// readControl reads the next handshake message. It answers Pings and skips
// Pongs; anything else than a control message on Channel is a
// *ProtocolError.
func readControl(conn wire.Conn, id uuid.UUID, step string) (message, error) {
	for {
		f, err := conn.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("resume: handshake: %s: %w", step, err)
		}
		switch f.Type {
		case wire.TypePing:
			m, err := wire.DecodeMessage(f)
			if err != nil {
				return nil, &ProtocolError{SessionID: id, Op: "handshake: " + step, Err: err}
			}
			p := m.(*wire.Ping)
			if err := conn.WriteMessage(&wire.Pong{ID: p.ID, SentUnixNano: p.SentUnixNano}); err != nil {
				return nil, fmt.Errorf("resume: handshake: %s: %w", step, err)
			}
			continue
		case wire.TypePong:
			continue
		case wire.TypeClose:
			m, err := wire.DecodeMessage(f)
			if err != nil {
				return nil, &ProtocolError{SessionID: id, Op: "handshake: " + step, Err: err}
			}
			c := m.(*wire.Close)
			return nil, fmt.Errorf("resume: handshake: %s: the peer closed the connection (%s: %q): %w", step, c.Code, c.Reason, io.EOF)
		case wire.TypeData:
			if f.Channel == Channel && f.Flags&flagControl != 0 {
				m, err := decodeControl(f.Flags, f.Payload)
				if err != nil {
					return nil, &ProtocolError{SessionID: id, Op: "handshake: " + step, Err: err}
				}
				return m, nil
			}
			return nil, &ProtocolError{SessionID: id, Op: "handshake: " + step,
				Err: fmt.Errorf("got a Data frame on channel %d with flags 0x%04x, want a control message on channel %d", f.Channel, f.Flags, Channel)}
		}
		return nil, &ProtocolError{SessionID: id, Op: "handshake: " + step, Err: fmt.Errorf("unexpected %s frame", f.Type)}
	}
}

func unexpected(id uuid.UUID, step string, m message) error {
	return &ProtocolError{SessionID: id, Op: "handshake: " + step, Err: fmt.Errorf("unexpected %s message", m.kind())}
}

func refusedError(id uuid.UUID, m *refuseMsg) *RefusedError {
	return &RefusedError{SessionID: id, Code: m.code, Message: m.message, Delivered: m.delivered,
		Retryable: m.retryable || m.code == RefuseBusy}
}

// clientOpen runs the client side of the open handshake.
func clientOpen(conn wire.Conn, c *Config) (*acceptMsg, [32]byte, error) {
	var secret [32]byte
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, secret, fmt.Errorf("resume: open: %w", err)
	}
	om := &openMsg{replayBuffer: uint64(c.ReplayBuffer), maxMessage: uint32(c.MaxMessage)}
	copy(om.key[:], priv.PublicKey().Bytes())
	if err := writeControl(conn, om); err != nil {
		return nil, secret, fmt.Errorf("resume: open: %w", err)
	}
	m, err := readControl(conn, uuid.Nil, "read Accept")
	if err != nil {
		return nil, secret, err
	}
	switch m := m.(type) {
	case *refuseMsg:
		return nil, secret, refusedError(uuid.Nil, m)
	case *acceptMsg:
		if zero(m.key[:]) {
			return nil, secret, &ProtocolError{SessionID: m.id, Op: "handshake: read Accept", Err: fmt.Errorf("Accept to an Open without a key: %w", wire.ErrMissingField)}
		}
		if m.received != 0 {
			return nil, secret, &ProtocolError{SessionID: m.id, Op: "handshake: read Accept", Err: fmt.Errorf("a new session reports %d messages received", m.received)}
		}
		secret, err = deriveSecret(priv, m.key[:], m.id, om.key[:], m.key[:])
		if err != nil {
			return nil, secret, &ProtocolError{SessionID: m.id, Op: "handshake: derive secret", Err: err}
		}
		return m, secret, nil
	default:
		return nil, secret, unexpected(uuid.Nil, "read Accept", m)
	}
}

// clientResume runs the client side of the resume handshake on conn and, on
// success, attaches conn. release stops the handshake's timeout guard.
func (s *Stream) clientResume(conn wire.Conn, release func() bool) error {
	cn := nonce()
	if err := writeControl(conn, &resumeMsg{id: s.id, nonce: cn}); err != nil {
		return fmt.Errorf("resume: handshake: write Resume: %w", err)
	}
	m, err := readControl(conn, s.id, "read Challenge")
	if err != nil {
		return err
	}
	var ch *challengeMsg
	switch m := m.(type) {
	case *refuseMsg:
		return s.refused(m)
	case *challengeMsg:
		ch = m
	default:
		return unexpected(s.id, "read Challenge", m)
	}
	want := proof(s.secret, labelServerProof, s.id, cn, ch.nonce)
	if !hmac.Equal(want[:], ch.proof[:]) {
		return &ProtocolError{SessionID: s.id, Op: "handshake: verify the server's proof", Err: ErrAuth}
	}
	s.mu.Lock()
	recvd := s.recvd
	s.mu.Unlock()
	pm := &proofMsg{proof: proof(s.secret, labelClientProof, s.id, cn, ch.nonce), received: recvd,
		replayBuffer: uint64(s.cfg.ReplayBuffer), maxMessage: uint32(s.cfg.MaxMessage)}
	if err := writeControl(conn, pm); err != nil {
		return fmt.Errorf("resume: handshake: write Proof: %w", err)
	}
	m, err = readControl(conn, s.id, "read Accept")
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *refuseMsg:
		return s.refused(m)
	case *acceptMsg:
		if m.id != s.id {
			return &ProtocolError{SessionID: s.id, Op: "handshake: read Accept", Err: fmt.Errorf("Accept for session %s", m.id)}
		}
		if !release() {
			return fmt.Errorf("resume: handshake: %w", context.DeadlineExceeded)
		}
		return s.install(conn, m.received, m.replayBuffer, m.maxMessage)
	default:
		return unexpected(s.id, "read Accept", m)
	}
}

// refused turns a server's refusal of a resume into the error that ends (or,
// if retryable, does not end) the client stream.
func (s *Stream) refused(m *refuseMsg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m.code {
	case RefuseExpired, RefuseClosed:
		if m.delivered >= s.acked && m.delivered <= s.sent {
			s.ackThrough(m.delivered) // the server received these: not undelivered
		}
		if m.code == RefuseExpired {
			return &ExpiredError{SessionID: s.id, Delivered: s.acked, Sent: s.sent, ByServer: true}
		}
		return &PeerClosedError{SessionID: s.id, Code: CloseNormal, Reason: m.message, Delivered: s.acked, Sent: s.sent}
	}
	return refusedError(s.id, m)
}

// permanent reports whether a failed resume attempt ends the client stream.
func permanent(err error) bool {
	switch e := err.(type) {
	case *RefusedError:
		return !e.Retryable && e.Code != RefuseProtocol
	case *ExpiredError, *PeerClosedError, *LostError:
		return true
	}
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}
