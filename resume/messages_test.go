package resume

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/wire"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz")

var testID = uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

func filled(b byte) (a [32]byte) {
	for i := range a {
		a[i] = b + byte(i)
	}
	return a
}

// sampleControls returns one or more messages of every kind, every field set
// in at least one.
func sampleControls() []struct {
	name string
	m    message
} {
	return []struct {
		name string
		m    message
	}{
		{"open", &openMsg{key: filled(1), replayBuffer: 4 << 20, maxMessage: 1 << 20}},
		{"resume", &resumeMsg{id: testID, nonce: filled(2)}},
		{"challenge", &challengeMsg{nonce: filled(3), proof: filled(4)}},
		{"proof", &proofMsg{proof: filled(5), received: 123456789, replayBuffer: 64 << 10, maxMessage: 1}},
		{"proof-nothing-received", &proofMsg{proof: filled(5), replayBuffer: 1, maxMessage: wire.MaxFrameHardLimit}},
		{"accept-open", &acceptMsg{id: testID, key: filled(6), replayBuffer: 4 << 20, maxMessage: 1 << 20}},
		{"accept-resume", &acceptMsg{id: testID, received: 1<<64 - 1, replayBuffer: 1 << 30, maxMessage: 65536}},
		{"refuse-expired", &refuseMsg{code: RefuseExpired, message: "session expired; ü", delivered: 41}},
		{"refuse-busy", &refuseMsg{code: RefuseBusy, message: "full", retryable: true}},
		{"refuse-unknown-code", &refuseMsg{code: 999}},
		{"ack", &ackMsg{received: 1}},
		{"ack-max", &ackMsg{received: 1<<64 - 1}},
		{"close", &closeMsg{code: CloseGoingAway, reason: "draining", received: 77}},
		{"close-normal", &closeMsg{}},
	}
}

func encodeControl(m message) []byte {
	return wire.AppendFrame(nil, controlFrame(nil, m))
}

func TestControlRoundTrip(t *testing.T) {
	for _, s := range sampleControls() {
		t.Run(s.name, func(t *testing.T) {
			if field, err := s.m.check(); err != nil {
				t.Fatalf("sample fails its own check at %s: %v", field, err)
			}
			f, n, err := wire.DecodeFrame(encodeControl(s.m), 0)
			if err != nil || n == 0 {
				t.Fatalf("frame: %v", err)
			}
			if f.Type != wire.TypeData || f.Channel != Channel || f.Flags != flagControl|uint16(s.m.kind()) {
				t.Fatalf("frame header %+v", f)
			}
			got, err := decodeControl(f.Flags, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, s.m) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, s.m)
			}
		})
	}
}

func TestControlSkipsUnknownFields(t *testing.T) {
	p := (&ackMsg{received: 9}).appendPayload(nil)
	p = wire.AppendStringField(p, 9, "from a later version")
	p = wire.AppendUint64Field(p, 1000, 5)
	m, err := decodeControl(flagControl|uint16(kindAck), p)
	if err != nil {
		t.Fatal(err)
	}
	if m.(*ackMsg).received != 9 {
		t.Fatalf("got %+v", m)
	}
}

func TestControlDecodeErrors(t *testing.T) {
	ackFlags := flagControl | uint16(kindAck)
	openFlags := flagControl | uint16(kindOpen)
	refuseFlags := flagControl | uint16(kindRefuse)
	openPayload := (&openMsg{key: filled(1), replayBuffer: 1, maxMessage: 1}).appendPayload(nil)
	cases := []struct {
		name   string
		flags  uint16
		p      []byte
		want   error
		field  string
		offset int
	}{
		{"unknown kind", flagControl | 0x42, nil, wire.ErrMalformed, "header.flags", 2},
		{"extra flag bits", ackFlags | 0x0100, nil, wire.ErrMalformed, "header.flags", 2},
		{"ack missing received", ackFlags, nil, wire.ErrMissingField, "received", 12},
		{"ack zero", ackFlags, []byte{1, 1, 0}, wire.ErrMissingField, "received", 12},
		{"ack duplicate", ackFlags, []byte{1, 1, 5, 1, 1, 6}, wire.ErrDuplicateField, "received", 15},
		{"ack non-minimal varint", ackFlags, []byte{1, 2, 0x85, 0x00}, wire.ErrMalformed, "received", 12},
		{"ack truncated", ackFlags, []byte{1, 5, 1}, wire.ErrTruncated, "received", 12},
		{"tag zero", ackFlags, []byte{0, 1, 1}, wire.ErrMalformed, "payload", 12},
		{"open short key", openFlags, wire.AppendBytesField(nil, 1, make([]byte, 31)), wire.ErrMalformed, "key", 12},
		{"open zero key", openFlags, wire.AppendUint64Field(wire.AppendUint64Field(wire.AppendBytesField(nil, 1, make([]byte, 32)), 2, 1), 3, 1), wire.ErrMissingField, "key", 12},
		{"open no replay", openFlags, wire.AppendBytesField(nil, 1, bytes.Repeat([]byte{1}, 32)), wire.ErrMissingField, "replay_buffer", 12 + 34},
		{"open max too large", openFlags, append(openPayload[:len(openPayload)-3:len(openPayload)-3], wire.AppendUint64Field(nil, 3, 1<<25)...), wire.ErrMalformed, "max_message", 12 + len(openPayload) - 3},
		{"refuse bad bool", refuseFlags, []byte{1, 1, 1, 4, 1, 2}, wire.ErrMalformed, "retryable", 15},
		{"refuse no code", refuseFlags, nil, wire.ErrMissingField, "code", 12},
		{"refuse long message", refuseFlags, wire.AppendStringField([]byte{1, 1, 1}, 2, strings.Repeat("x", wire.MaxTextLen+1)), wire.ErrFieldTooLarge, "message", 15},
		{"refuse bad utf8", refuseFlags, wire.AppendStringField([]byte{1, 1, 1}, 2, "\xff"), wire.ErrMalformed, "message", 15},
		{"resume nil id", flagControl | uint16(kindResume), wire.AppendBytesField(nil, 2, bytes.Repeat([]byte{1}, 32)), wire.ErrMissingField, "session_id", 12 + 34},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := decodeControl(c.flags, c.p)
			if err == nil {
				t.Fatalf("decoded %#v, want an error", m)
			}
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, c.want) {
				t.Fatalf("error %q (%T), want a *DecodeError wrapping %v", err, err, c.want)
			}
			if de.Field != c.field || de.Offset != c.offset {
				t.Fatalf("error %q: field %q offset %d, want %q at %d", err, de.Field, de.Offset, c.field, c.offset)
			}
			if !strings.HasPrefix(err.Error(), "resume: decode ") {
				t.Fatalf("error text %q", err)
			}
		})
	}
}

var sentinels = []error{wire.ErrTruncated, wire.ErrMalformed, wire.ErrDuplicateField, wire.ErrMissingField, wire.ErrFieldTooLarge}

// FuzzDecodeControl decodes a control message: the first two bytes are the
// frame flags, the rest the payload. A decoded message must re-encode to a
// message that decodes to the same; an error must be a *DecodeError wrapping
// one of wire's sentinels, with an offset inside the frame.
func FuzzDecodeControl(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		flags := uint16(data[0])<<8 | uint16(data[1])
		payload := data[2:]
		m, err := decodeControl(flags, payload)
		if err != nil {
			if m != nil {
				t.Fatalf("message %#v returned with error %v", m, err)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %q (%T) is not a *DecodeError", err, err)
			}
			found := false
			for _, s := range sentinels {
				found = found || errors.Is(err, s)
			}
			if !found {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			if de.Offset < 0 || de.Offset > wire.HeaderSize+len(payload) {
				t.Fatalf("error %q: offset %d outside the frame", err, de.Offset)
			}
			return
		}
		if _, err := m.check(); err != nil {
			t.Fatalf("decoded %#v fails the check: %v", m, err)
		}
		fr := controlFrame(nil, m)
		if fr.Flags != flags {
			t.Fatalf("flags 0x%04x re-encoded as 0x%04x", flags, fr.Flags)
		}
		m2, err := decodeControl(fr.Flags, fr.Payload)
		if err != nil {
			t.Fatalf("re-encoded %#v does not decode: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%#v\n%#v", m, m2)
		}
	})
}

func seedCorpus() map[string]map[string][]byte {
	seeds := map[string][]byte{}
	for _, s := range sampleControls() {
		flags := flagControl | uint16(s.m.kind())
		seeds[s.name] = append([]byte{byte(flags >> 8), byte(flags)}, s.m.appendPayload(nil)...)
	}
	ack := flagControl | uint16(kindAck)
	seeds["bad-ack-duplicate"] = []byte{byte(ack >> 8), byte(ack), 1, 1, 5, 1, 1, 6}
	seeds["bad-ack-truncated"] = []byte{byte(ack >> 8), byte(ack), 1, 9, 1}
	seeds["bad-unknown-kind"] = []byte{0x80, 0x42, 1, 1, 1}
	seeds["bad-fin-flags"] = []byte{0x00, 0x01}
	seeds["unknown-fields"] = append([]byte{byte(ack >> 8), byte(ack)}, wire.AppendStringField([]byte{1, 1, 7}, 99, "later")...)

	// FuzzAccept: what a client may send first.
	open := encodeControl(&openMsg{key: filled(9), replayBuffer: 4 << 20, maxMessage: 1 << 20})
	resume := encodeControl(&resumeMsg{id: testID, nonce: filled(2)})
	proofFrame := encodeControl(&proofMsg{proof: filled(5), received: 3, replayBuffer: 1, maxMessage: 1})
	accept := map[string][]byte{
		"open":               open,
		"open-then-data":     append(append(append([]byte{}, open...), wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: Channel, Payload: []byte("hi")})...), encodeControl(&ackMsg{received: 1})...),
		"open-low-order-key": encodeControl(&openMsg{key: [32]byte{1}, replayBuffer: 1, maxMessage: 1}),
		"resume-unknown":     resume,
		"resume-and-proof":   append(append([]byte{}, resume...), proofFrame...),
		"ping-then-open":     append(wire.AppendMessage(nil, &wire.Ping{ID: 1}), open...),
		"close":              wire.AppendMessage(nil, &wire.Close{Code: wire.CloseGoingAway}),
		"proof-first":        proofFrame,
		"data-first":         wire.AppendFrame(nil, wire.Frame{Type: wire.TypeData, Channel: Channel}),
		"garbage":            []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"truncated-open":     open[:20],
	}
	return map[string]map[string][]byte{"FuzzDecodeControl": seeds, "FuzzAccept": accept}
}

// TestSeedCorpus checks that testdata/fuzz holds the seeds seedCorpus
// generates, so that they follow the encoders. Run with -update-corpus to
// rewrite them.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range seedCorpus() {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, data := range seeds {
			path := filepath.Join(dir, "seed-"+name)
			want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (run go test ./resume -run TestSeedCorpus -update-corpus): %v", path, err)
			}
		}
	}
}

// FuzzAccept feeds arbitrary bytes to Table.Accept as a client's side of a
// connection: the server must answer within its handshake timeout, never
// panic, return either a stream (the bytes were a valid Open) or a typed
// error, and leave the table consistent.
func FuzzAccept(f *testing.F) {
	tbl, err := NewTable(nil)
	if err != nil {
		f.Fatal(err)
	}
	defer tbl.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go io.Copy(io.Discard, a) // the server's answers
		go func() {
			a.Write(data)
			a.Close()
		}()
		s, isNew, err := tbl.Accept(context.Background(), wire.NewStreamConn(b, 0))
		if err == nil {
			if !isNew || s == nil {
				t.Fatalf("Accept succeeded without a new session: %v %v", s, isNew)
			}
			s.Close()
			return
		}
		var pe *ProtocolError
		var re *RefusedError
		var de *wire.DecodeError
		typed := errors.As(err, &pe) || errors.As(err, &re) || errors.As(err, &de) ||
			errorsIs(err, io.EOF, io.ErrUnexpectedEOF, io.ErrClosedPipe, net.ErrClosed)
		if !typed {
			t.Fatalf("Accept error %q (%T) is not a typed protocol, refusal, decode or I/O error", err, err)
		}
		if s != nil {
			t.Fatal("stream returned with an error")
		}
		if tbl.Len() != 0 {
			t.Fatalf("table holds %d sessions after a failed Accept", tbl.Len())
		}
	})
}
