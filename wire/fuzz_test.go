package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz")

// sentinels are the errors every decode failure must wrap one of.
var sentinels = []error{ErrTruncated, ErrFrameTooLarge, ErrVersion, ErrUnknownType, ErrMalformed,
	ErrDuplicateField, ErrMissingField, ErrFieldTooLarge, ErrTrailingData}

func checkDecodeError(t *testing.T, err error, frameLen int) {
	t.Helper()
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
	if de.Offset < 0 || de.Offset > max(frameLen, HeaderSize) {
		t.Fatalf("error %q: offset %d outside the frame of %d bytes", err, de.Offset, frameLen)
	}
}

// checkMessageRoundTrip re-encodes a decoded message, decodes it again and
// requires the same message; a decoded message must also pass the checks a
// writer applies.
func checkMessageRoundTrip(t *testing.T, m Message) {
	t.Helper()
	if err := checkMessage(m); err != nil {
		t.Fatalf("decoded %v fails the writer's checks: %v", m, err)
	}
	enc := AppendMessage(nil, m)
	f, n, err := DecodeFrame(enc, MaxFrameHardLimit)
	if err != nil || n != len(enc) {
		t.Fatalf("re-encoded %v does not decode as a frame: %v", m, err)
	}
	m2, err := DecodeMessage(f)
	if err != nil {
		t.Fatalf("re-encoded %v does not decode: %v", m, err)
	}
	if !reflect.DeepEqual(normalize(m), normalize(m2)) {
		t.Fatalf("round trip changed the message:\n%#v\n%#v", m, m2)
	}
}

// FuzzDecodeFrame decodes one datagram's worth of bytes.
func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 16
		fr, n, err := DecodeFrame(data, limit)
		if err != nil {
			checkDecodeError(t, err, len(data))
			if len(data) > 0 && data[0] != Version && !errors.Is(err, ErrVersion) {
				t.Fatalf("first byte 0x%02x gave %v, want ErrVersion", data[0], err)
			}
			return
		}
		if n != HeaderSize+len(fr.Payload) || n > len(data) || len(fr.Payload) > limit || !fr.Type.Known() {
			t.Fatalf("frame %+v, n %d, input %d bytes", fr, n, len(data))
		}
		if enc := AppendFrame(nil, fr); !bytes.Equal(enc, data[:n]) {
			t.Fatalf("re-encoding differs:\n% x\n% x", enc, data[:n])
		}
		m, err := DecodeMessage(fr)
		if err != nil {
			checkDecodeError(t, err, n)
			return
		}
		checkMessageRoundTrip(t, m)
	})
}

// FuzzDecodeMessage decodes a payload; the first byte is the frame type.
func FuzzDecodeMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		fr := Frame{Type: Type(data[0]), Payload: data[1:]}
		m, err := DecodeMessage(fr)
		if err != nil {
			if m != nil {
				t.Fatalf("message %v returned with error %v", m, err)
			}
			checkDecodeError(t, err, HeaderSize+len(fr.Payload))
			return
		}
		if m.Type() != fr.Type {
			t.Fatalf("frame type %v gave a %v", fr.Type, m.Type())
		}
		checkMessageRoundTrip(t, m)
	})
}

// FuzzStreamConn reads frames from a byte stream delivered in chunks; the
// first byte sets the chunk size. Every frame read must be the frame
// DecodeFrame finds at the same place, and the stream must end in io.EOF
// exactly at a frame boundary, or in a sticky decode error.
func FuzzStreamConn(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		const limit = 40 << 10 // above the read buffer, to take both paths
		stream := data[1:]
		conn := NewStreamConn(&memConn{r: bytes.NewReader(stream), chunk: int(data[0]%16) + 1}, limit)
		off := 0
		for {
			fr, err := conn.ReadFrame()
			if err == io.EOF {
				if off != len(stream) {
					t.Fatalf("io.EOF at %d of %d bytes", off, len(stream))
				}
				return
			}
			if err != nil {
				checkDecodeError(t, err, len(stream)-off)
				if _, err2 := conn.ReadFrame(); err2 != err {
					t.Fatalf("error not sticky: %v, then %v", err, err2)
				}
				if _, _, derr := DecodeFrame(stream[off:], limit); derr == nil {
					t.Fatalf("stream failed with %v where DecodeFrame succeeds", err)
				}
				return
			}
			want, n, derr := DecodeFrame(stream[off:], limit)
			if derr != nil {
				t.Fatalf("stream read %+v where DecodeFrame fails: %v", fr, derr)
			}
			if !reflect.DeepEqual(fr, want) {
				t.Fatalf("at %d: stream %+v, DecodeFrame %+v", off, fr, want)
			}
			off += n
		}
	})
}

// seedCorpus returns the committed seeds of each fuzz target.
func seedCorpus() map[string]map[string][]byte {
	frames := map[string][]byte{}
	var all []byte
	for _, s := range sampleMessages() {
		enc := AppendMessage(nil, s.m)
		frames[s.name] = enc
		all = append(all, enc...)
	}
	frames["data-20k"] = AppendFrame(nil, Frame{Type: TypeData, Channel: 2, Payload: bytes.Repeat([]byte("0123456789"), 2048)})

	garbage := map[string][]byte{
		"garbage-http":       []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1:9500\r\n\r\n"),
		"garbage-tls":        {0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03, 0x5a, 0x11, 0x22},
		"garbage-ssh":        []byte("SSH-2.0-OpenSSH_9.6\r\n"),
		"garbage-random":     {0x9c, 0x2e, 0xf1, 0x07, 0x00, 0x5d, 0xaa, 0x13, 0x80, 0x41, 0xfe, 0x36, 0x0b, 0xc8, 0x72},
		"garbage-v2":         header(2, TypeHello, 0, 0, 0),
		"bad-unknown-type":   header(1, 0x11, 0, 0, 0),
		"bad-oversize":       header(1, TypeData, 0, 1, 1<<32-1),
		"bad-truncated":      append(header(1, TypeData, 0, 1, 100), 1, 2, 3),
		"bad-short-header":   {1, 4, 0, 0, 0},
		"bad-control-chan":   append(header(1, TypePing, 0, 9, 3), 1, 1, 1),
		"bad-dup-field":      AppendFrame(nil, Frame{Type: TypePing, Payload: []byte{1, 1, 5, 1, 1, 6}}),
		"bad-trailing-bytes": append(AppendMessage(nil, &Ping{ID: 1}), 0xff),
	}

	payloads := map[string][]byte{}
	for _, s := range sampleMessages() {
		payloads[s.name] = append([]byte{byte(s.m.Type())}, s.m.AppendPayload(nil)...)
	}
	hp := helloPayload()
	payloads["hello-unknown-fields"] = append([]byte{byte(TypeHello)}, AppendStringField(AppendUint64Field(hp, 1000, 7), 9, "future")...)
	payloads["hello-duplicate"] = append([]byte{byte(TypeHello)}, AppendUint64Field(hp, 2, 1)...)
	payloads["hello-zero-id"] = append([]byte{byte(TypeHello), 1, 1, 1, 2, 1, 1, 3, 16}, make([]byte, 16)...)
	payloads["hello-truncated"] = append(append([]byte{byte(TypeHello)}, hp...), 4, 50, 'a')
	payloads["ping-non-minimal"] = []byte{byte(TypePing), 1, 2, 0x80, 0x00}
	payloads["reject-bad-bool"] = []byte{byte(TypeReject), 1, 1, 1, 3, 1, 2}
	payloads["unknown-type"] = []byte{0x42, 1, 1, 1}

	frameSeeds := map[string][]byte{}
	for k, v := range frames {
		frameSeeds[k] = v
	}
	for k, v := range garbage {
		frameSeeds[k] = v
	}
	streamSeeds := map[string][]byte{
		"all-messages-chunk1":  append([]byte{0}, all...),
		"all-messages-chunk16": append([]byte{15}, all...),
		"large-frame":          append([]byte{3}, append(append([]byte{}, frames["ping"]...), frames["data-20k"]...)...),
		"truncated-large":      append([]byte{5}, frames["data-20k"][:15000]...),
		"then-garbage":         append(append([]byte{2}, frames["pong"]...), garbage["garbage-http"]...),
		"garbage":              append([]byte{4}, garbage["garbage-random"]...),
		"oversize":             append([]byte{1}, garbage["bad-oversize"]...),
	}
	return map[string]map[string][]byte{
		"FuzzDecodeFrame":   frameSeeds,
		"FuzzDecodeMessage": payloads,
		"FuzzStreamConn":    streamSeeds,
	}
}

func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
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
			want := corpusFile(data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (run go test ./wire -run TestSeedCorpus -update-corpus): %v", path, err)
			}
		}
	}
}
