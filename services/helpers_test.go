package services

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/bearerkit/connect/services/servicefile"
)

// The test service (testdata/values.xml), loaded once.
var (
	testServiceOnce sync.Once
	testSvc         *servicefile.Service
	testSvcErr      error
)

func testService(tb testing.TB) *servicefile.Service {
	tb.Helper()
	testServiceOnce.Do(func() {
		testSvc, testSvcErr = servicefile.Load("testdata/values.xml")
	})
	if testSvcErr != nil {
		tb.Fatal(testSvcErr)
	}
	return testSvc
}

// typ returns the type written as in a service file ("int", "Track",
// "float[][]"), with the test service's structs; "args" is the struct of
// the call method's arguments and "data" the runtime-data tree's type.
func typ(tb testing.TB, expr string) *servicefile.Type {
	tb.Helper()
	s := testService(tb)
	switch expr {
	case "args":
		return &servicefile.Type{Kind: servicefile.Struct, Fields: s.Method("call").Args}
	case "data":
		return s.Data.Type
	}
	base, lists := expr, 0
	for strings.HasSuffix(base, "[]") {
		base = strings.TrimSuffix(base, "[]")
		lists++
	}
	var t *servicefile.Type
	switch base {
	case "int":
		t = &servicefile.Type{Kind: servicefile.Int}
	case "float":
		t = &servicefile.Type{Kind: servicefile.Float}
	case "bool":
		t = &servicefile.Type{Kind: servicefile.Bool}
	case "string":
		t = &servicefile.Type{Kind: servicefile.String}
	case "binary":
		t = &servicefile.Type{Kind: servicefile.Binary}
	default:
		if t = s.Type(base); t == nil {
			tb.Fatalf("no type %q", base)
		}
	}
	for range lists {
		t = &servicefile.Type{Kind: servicefile.List, Elem: t}
	}
	return t
}

// callArgs are the call method's arguments.
func callArgs(tb testing.TB) []*servicefile.Field {
	return testService(tb).Method("call").Args
}

// Value constructors.
func list(v ...any) []any { return append([]any{}, v...) }

func point(x, y float64) map[string]any { return map[string]any{"x": x, "y": y} }

func track(title string, duration float64, tags []any, cover []byte, plays int64, liked bool) map[string]any {
	return map[string]any{"title": title, "duration": duration, "tags": tags, "cover": cover, "plays": plays, "liked": liked}
}

// sentinels are the errors every error must wrap one of.
var sentinels = []error{ErrType, ErrRange, ErrInvalid, ErrMissingField, ErrUnknownField, ErrTruncated,
	ErrTrailingData, ErrTooDeep, ErrTooLarge, ErrBadType}

// checkError requires err to be an *Error with op, wrapping want (or some
// sentinel when want is nil), with an offset inside [0, n] when n >= 0 and
// -1 when n < 0 ... unless the op reads input. It returns the *Error.
func checkError(tb testing.TB, err error, op string, want error, inputLen int) *Error {
	tb.Helper()
	var e *Error
	if !errors.As(err, &e) {
		tb.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if e.Op != op {
		tb.Fatalf("error %q: op %q, want %q", err, e.Op, op)
	}
	if want != nil && !errors.Is(err, want) {
		tb.Fatalf("error %q does not wrap %v", err, want)
	}
	found := false
	for _, s := range sentinels {
		found = found || errors.Is(err, s)
	}
	if !found {
		tb.Fatalf("error %q wraps no sentinel", err)
	}
	if inputLen >= 0 && (e.Offset < 0 || e.Offset > inputLen) {
		tb.Fatalf("error %q: offset %d outside the input of %d bytes", err, e.Offset, inputLen)
	}
	if strings.ContainsAny(err.Error(), "\n\r") {
		tb.Fatalf("error %q spans lines", err)
	}
	return e
}
