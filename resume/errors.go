package resume

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Sentinel errors. The package wraps them in typed errors that say which
// session and what was or was not delivered; test with errors.Is and get the
// details with errors.As.
var (
	// ErrClosed: the stream was closed by this side's Close (or its
	// Table's Close).
	ErrClosed = errors.New("resume: stream closed")
	// ErrAbandoned: this side dropped the stream with Abandon; the peer
	// was not told and keeps its side for its linger window.
	ErrAbandoned = errors.New("resume: stream abandoned by this side")
	// ErrSendClosed: Send after CloseSend.
	ErrSendClosed = errors.New("resume: send side closed")
	// ErrMessageTooLarge: a message longer than the smaller of this side's
	// Config.MaxMessage and the peer's. Returned by Send (as a
	// *MessageTooLargeError); the stream is unaffected.
	ErrMessageTooLarge = errors.New("resume: message too large")
	// ErrUnknownSession: the server knows no session with that id.
	ErrUnknownSession = errors.New("resume: unknown session")
	// ErrAuth: a resume did not prove knowledge of the session secret (on
	// the server: a forged or corrupted resume; on the client: the server
	// refused our proof, or could not prove its own).
	ErrAuth = errors.New("resume: session secret not proven")
	// ErrExpired: the session outlived its linger window without a
	// connection (*ExpiredError says what was delivered).
	ErrExpired = errors.New("resume: session expired")
	// ErrPeerClosed: the peer ended the session (*PeerClosedError says
	// what was delivered).
	ErrPeerClosed = errors.New("resume: session closed by the peer")
	// ErrLost: messages were lost: one side reports having received less
	// than it had acknowledged, so they can no longer be replayed
	// (*LostError names them).
	ErrLost = errors.New("resume: acknowledged messages lost")
	// ErrBusy: the server refuses new sessions for now (MaxSessions).
	ErrBusy = errors.New("resume: server busy")
	// ErrProtocol: the peer broke the resume protocol (*ProtocolError
	// says where). On an attached connection this ends the connection, not
	// the session: the client resumes on a new one.
	ErrProtocol = errors.New("resume: protocol violation")
)

func shortID(id uuid.UUID) string { return id.String() }

// RefusedError is a server's refusal of an Open or a Resume, as the client
// sees it, and what Table.Accept returns after refusing. Is matches the
// sentinel of its code: ErrUnknownSession, ErrAuth, ErrExpired,
// ErrPeerClosed, ErrBusy, ErrProtocol, ErrLost.
type RefusedError struct {
	SessionID uuid.UUID // uuid.Nil when opening a new session
	Code      RefuseCode
	Message   string // the server's explanation
	// Delivered is, for RefuseExpired and RefuseClosed, the last sequence
	// number of the client's messages that the server received.
	Delivered uint64
	Retryable bool
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString("resume: ")
	if e.SessionID != uuid.Nil {
		fmt.Fprintf(&b, "session %s: ", shortID(e.SessionID))
	}
	fmt.Fprintf(&b, "refused: %s (code %d)", e.Code, uint16(e.Code))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Is reports whether target is the sentinel error of e's code.
func (e *RefusedError) Is(target error) bool {
	switch e.Code {
	case RefuseUnknown:
		return target == ErrUnknownSession
	case RefuseAuth:
		return target == ErrAuth
	case RefuseExpired:
		return target == ErrExpired
	case RefuseClosed:
		return target == ErrPeerClosed
	case RefuseBusy:
		return target == ErrBusy
	case RefuseProtocol:
		return target == ErrProtocol
	case RefuseLost:
		return target == ErrLost
	}
	return false
}

// ExpiredError ends a stream whose session expired: on the server, when no
// connection came back within Config.Linger; on the client, when it could
// not reconnect within Config.Linger, or when the server answered a resume
// with "expired". It says which of this side's messages were delivered.
type ExpiredError struct {
	SessionID uuid.UUID
	// Delivered is the last sequence number of this side's messages that
	// the peer is known to have received. Messages Delivered+1 to Sent
	// were not delivered (Stream.Undelivered returns them).
	Delivered uint64
	// Sent is the last sequence number this side sent.
	Sent uint64
	// ByServer is true when the server declared the expiry (its answer to
	// a late resume, or the server's own stream). False when a client gave
	// up reconnecting: then the server may have received some messages
	// after Delivered without acknowledging them yet.
	ByServer bool
}

func (e *ExpiredError) Error() string {
	who := "the server expired it"
	if !e.ByServer {
		who = "no connection could be re-established within the linger window"
	}
	return fmt.Sprintf("resume: session %s expired (%s): %s", shortID(e.SessionID), who, undelivered(e.Delivered, e.Sent, e.ByServer))
}

// Is reports whether target is ErrExpired.
func (e *ExpiredError) Is(target error) bool { return target == ErrExpired }

func undelivered(delivered, sent uint64, exact bool) string {
	if sent <= delivered {
		return fmt.Sprintf("all %d messages sent were delivered", sent)
	}
	if exact {
		return fmt.Sprintf("messages 1 to %d were delivered, %d to %d were not", delivered, delivered+1, sent)
	}
	return fmt.Sprintf("messages 1 to %d were delivered, %d to %d were not confirmed", delivered, delivered+1, sent)
}

// PeerClosedError ends a stream whose peer ended the session (its Close, a
// server shutting down, or a refusal "closed" to a late resume).
type PeerClosedError struct {
	SessionID uuid.UUID
	Code      CloseCode
	Reason    string
	// Delivered and Sent are as in ExpiredError: messages Delivered+1 to
	// Sent of this side were not delivered.
	Delivered, Sent uint64
}

func (e *PeerClosedError) Error() string {
	s := fmt.Sprintf("resume: session %s closed by the peer (%s", shortID(e.SessionID), e.Code)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s + "): " + undelivered(e.Delivered, e.Sent, true)
}

// Is reports whether target is ErrPeerClosed.
func (e *PeerClosedError) Is(target error) bool { return target == ErrPeerClosed }

// LostError ends a stream when messages can no longer be delivered: the
// peer reports having received up to Reported, but had acknowledged up to
// Acked, and the messages in between were already released.
type LostError struct {
	SessionID       uuid.UUID
	Reported, Acked uint64
	Sent            uint64
}

func (e *LostError) Error() string {
	return fmt.Sprintf("resume: session %s: the peer reports receiving messages up to %d but had acknowledged up to %d; messages %d to %d are lost (%d sent)",
		shortID(e.SessionID), e.Reported, e.Acked, e.Reported+1, e.Acked, e.Sent)
}

// Is reports whether target is ErrLost.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// ProtocolError reports a peer that broke the resume protocol: what was
// being done and the cause (often a *DecodeError).
type ProtocolError struct {
	SessionID uuid.UUID // uuid.Nil if not known yet
	Op        string    // for example "handshake: read Proof", "read"
	Err       error
}

func (e *ProtocolError) Error() string {
	if e.SessionID == uuid.Nil {
		return fmt.Sprintf("resume: %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("resume: session %s: %s: %v", shortID(e.SessionID), e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *ProtocolError) Unwrap() error { return e.Err }

// Is reports whether target is ErrProtocol.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

// MessageTooLargeError is Send's refusal of a message longer than Limit.
type MessageTooLargeError struct {
	Size, Limit int
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("resume: message of %d bytes exceeds the limit of %d", e.Size, e.Limit)
}

// Is reports whether target is ErrMessageTooLarge.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// DecodeError reports a control message that could not be decoded, saying
// which message, which field and where:
//
//	resume: decode Proof field replay_buffer at offset 48: required field missing or zero
//
// It wraps one of package wire's sentinel errors (wire.ErrMalformed,
// wire.ErrTruncated, wire.ErrDuplicateField, wire.ErrMissingField,
// wire.ErrFieldTooLarge).
type DecodeError struct {
	// Message is the control message's name ("Open", "Ack", ...); empty
	// when the frame flags did not name a known one.
	Message string
	// Field is the field's name in docs/RESUME.md, "tag N" for an unknown
	// tag, "payload" or a header field ("header.flags").
	Field string
	// Offset counts bytes from the start of the frame (the payload starts
	// at wire.HeaderSize).
	Offset int
	// Err is the cause.
	Err error
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("resume: decode ")
	if e.Message != "" {
		b.WriteString(e.Message)
	} else {
		b.WriteString("control frame")
	}
	if e.Field != "" {
		b.WriteString(" field ")
		b.WriteString(e.Field)
	}
	fmt.Fprintf(&b, " at offset %d", e.Offset)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// ConfigError reports a Config field that VerifyConfig refuses.
type ConfigError struct {
	Field string // the Config field's name, for example "ReplayBuffer"
	Value any    // its value
	Rule  string // what it must be
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("resume: config: %s = %v: %s", e.Field, e.Value, e.Rule)
}
