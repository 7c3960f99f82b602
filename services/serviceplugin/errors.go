package serviceplugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// Code classifies the error of a call the service answered. The values are
// those of the contract's ErrorCode.
type Code int32

// The codes.
const (
	// CodeApplication: the method returned an error of its own (or
	// OnSessionOpen refused a session). The message is the method's.
	CodeApplication = Code(servicepb.ErrorCode_ERROR_CODE_APPLICATION)
	// CodeInvalidArgument: the arguments do not decode as the method's
	// arguments (or a method said so by returning an *Error with this code).
	CodeInvalidArgument = Code(servicepb.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	// CodeUnknownMethod: the service has no such method.
	CodeUnknownMethod = Code(servicepb.ErrorCode_ERROR_CODE_UNKNOWN_METHOD)
	// CodePanic: the method panicked. The plugin logged the stack and goes on.
	CodePanic = Code(servicepb.ErrorCode_ERROR_CODE_PANIC)
	// CodeBadResult: the method returned a value that is not of its
	// declared return type: a bug in the service.
	CodeBadResult = Code(servicepb.ErrorCode_ERROR_CODE_BAD_RESULT)
	// CodeDeadlineExceeded: the call's deadline passed before it finished.
	CodeDeadlineExceeded = Code(servicepb.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
	// CodeCanceled: the call was cancelled (the caller gave up, its
	// session closed, the host went away).
	CodeCanceled = Code(servicepb.ErrorCode_ERROR_CODE_CANCELED)
	// CodeNoSession: the call names a session that is not open.
	CodeNoSession = Code(servicepb.ErrorCode_ERROR_CODE_NO_SESSION)
	// CodeOverloaded: the plugin already runs as many calls as it allows.
	CodeOverloaded = Code(servicepb.ErrorCode_ERROR_CODE_OVERLOADED)
)

var codeNames = map[Code]string{
	CodeApplication:      "application error",
	CodeInvalidArgument:  "invalid argument",
	CodeUnknownMethod:    "unknown method",
	CodePanic:            "panic",
	CodeBadResult:        "bad result",
	CodeDeadlineExceeded: "deadline exceeded",
	CodeCanceled:         "canceled",
	CodeNoSession:        "no session",
	CodeOverloaded:       "overloaded",
}

// String names the code ("invalid argument"), or "code N" for a code this
// package does not know.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", int32(c))
}

// Error is an error the service answered for a call: a method returns one
// to choose its code (any other error becomes CodeApplication), and the
// host's Call returns one (inside a *CallError) when the service answered
// with an error.
type Error struct {
	Code    Code
	Message string
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, context.DeadlineExceeded) and
// errors.Is(err, context.Canceled) true for the matching codes.
func (e *Error) Is(target error) bool {
	switch target {
	case context.DeadlineExceeded:
		return e.Code == CodeDeadlineExceeded
	case context.Canceled:
		return e.Code == CodeCanceled
	}
	return false
}

// Sentinel errors. Their text is short because they always come wrapped
// in an error that names the service (a *CallError, or "serviceplugin:
// emit EVENT: ...").
var (
	// ErrNotConnected: Emit was called while no host is connected; the
	// event went nowhere.
	ErrNotConnected = errors.New("no host is connected")
	// ErrClosed: the connection (or the host's service) was closed.
	ErrClosed = errors.New("closed")
	// ErrConnLost: the stream to the plugin ended before the call was
	// answered (the plugin died or broke the contract). Whether the method
	// ran is unknown.
	ErrConnLost = errors.New("no answer: the connection to the service plugin ended")
	// ErrTooManyCalls: the host already waits for as many calls as
	// HostConnOptions.MaxPendingCalls allows.
	ErrTooManyCalls = errors.New("too many calls are waiting for the service")
	// ErrProtocol: the peer broke the contract (an answer that does not
	// decode, a message out of place).
	ErrProtocol = errors.New("the plugin broke the service contract")
)

// CallError is the error of a host's call: it names the service, the
// method (or the session being opened), the call's id on the stream and
// the session, and wraps why the call failed: an *Error the service
// answered, a context error when the caller stopped waiting, ErrConnLost
// (wrapped with what happened to the plugin), ErrClosed or ErrTooManyCalls.
type CallError struct {
	Service string
	// Method is the method called; "" for a session open.
	Method  string
	Session string
	// ID is the call's id on the stream; 0 when the call was never sent,
	// so that the plugin cannot have run it (it is safe to make again).
	ID  uint64
	Err error
}

func (e *CallError) Error() string {
	var what string
	switch {
	case e.Method == "":
		what = fmt.Sprintf("open session %q", e.Session)
	case e.Session == "":
		what = "call " + e.Method
	default:
		what = fmt.Sprintf("call %s in session %q", e.Method, e.Session)
	}
	if e.ID != 0 {
		what += fmt.Sprintf(" (#%d)", e.ID)
	}
	return fmt.Sprintf("service %s: %s: %v", e.Service, what, e.Err)
}

func (e *CallError) Unwrap() error { return e.Err }

func toProtoError(e *Error) *servicepb.Error {
	return &servicepb.Error{Code: servicepb.ErrorCode(e.Code), Message: e.Message}
}

// fromProtoError converts an answered error, keeping a message for codes
// this version does not know.
func fromProtoError(pe *servicepb.Error) *Error {
	e := &Error{Code: Code(pe.Code), Message: pe.Message}
	if e.Message == "" {
		e.Message = e.Code.String()
	}
	return e
}
