package wire

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestFrameLayout(t *testing.T) {
	f := Frame{Type: TypeData, Flags: 0x0102, Channel: 0x03040506, Payload: []byte("hi")}
	got := AppendFrame([]byte{0xee}, f)
	want := []byte{0xee, 0x01, 0x10, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x00, 0x00, 0x00, 0x02, 'h', 'i'}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendFrame = % x, want % x", got, want)
	}
	h, err := ParseHeader(got[1:])
	if err != nil {
		t.Fatal(err)
	}
	if want := (Header{Version: 1, Type: TypeData, Flags: 0x0102, Channel: 0x03040506, Length: 2}); h != want {
		t.Fatalf("ParseHeader = %+v, want %+v", h, want)
	}
}

func TestDecodeFrame(t *testing.T) {
	b := AppendFrame(nil, Frame{Type: TypeData, Flags: 3, Channel: 9, Payload: []byte("payload")})
	b = append(b, "next"...)
	f, n, err := DecodeFrame(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != HeaderSize+7 || f.Type != TypeData || f.Flags != 3 || f.Channel != 9 || string(f.Payload) != "payload" {
		t.Fatalf("DecodeFrame = %+v, %d", f, n)
	}
	if cap(f.Payload) != len(f.Payload) {
		t.Fatalf("payload capacity %d not clipped to its length %d", cap(f.Payload), len(f.Payload))
	}
	_ = append(f.Payload, 'X')
	if string(b[n:]) != "next" {
		t.Fatal("appending to the payload overwrote the following bytes")
	}
}

func header(v uint8, t Type, flags uint16, channel, length uint32) []byte {
	b := []byte{v, byte(t)}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, channel)
	return binary.BigEndian.AppendUint32(b, length)
}

func TestDecodeFrameErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		max      int
		want     error
		field    string
		offset   int
		contains []string
	}{
		{"empty", nil, 0, ErrTruncated, "header", 0, nil},
		{"short header", []byte{1, 4, 0}, 0, ErrTruncated, "header", 3, []string{"3 of 12 header bytes"}},
		{"http", []byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"), 0, ErrVersion, "header.version", 0,
			[]string{"does not speak Connect protocol v1", "first byte 0x47 'G'", "looks like HTTP"}},
		{"http short", []byte("GET"), 0, ErrVersion, "header.version", 0, []string{"looks like HTTP"}},
		{"http2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, ErrVersion, "header.version", 0, []string{"looks like HTTP"}},
		{"tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x00}, 0, ErrVersion, "header.version", 0,
			[]string{"first byte 0x16", "TLS handshake"}},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), 0, ErrVersion, "header.version", 0, []string{"looks like SSH"}},
		{"future version", header(2, TypePing, 0, 0, 0), 0, ErrVersion, "header.version", 0, []string{"frame version 2", "speaks version 1"}},
		{"zero byte", make([]byte, 20), 0, ErrVersion, "header.version", 0, []string{"first byte 0x00"}},
		{"unknown type", header(1, 0x7f, 0, 0, 0), 0, ErrUnknownType, "header.type", 1, []string{"0x7f"}},
		{"type zero", header(1, 0, 0, 0, 0), 0, ErrUnknownType, "header.type", 1, nil},
		{"control on channel", header(1, TypeHello, 0, 5, 0), 0, ErrMalformed, "header.channel", 4, []string{"channel 5"}},
		{"control with flags", header(1, TypePing, 0x10, 0, 0), 0, ErrMalformed, "header.flags", 2, []string{"0x0010"}},
		{"over hard limit", header(1, TypeData, 0, 1, MaxFrameHardLimit+1), 1 << 30, ErrFrameTooLarge, "header.length", 8, []string{"16777217"}},
		{"max uint32", header(1, TypeData, 0, 1, 1<<32-1), 0, ErrFrameTooLarge, "header.length", 8, nil},
		{"over configured max", header(1, TypeData, 0, 1, 101), 100, ErrFrameTooLarge, "header.length", 8, []string{"101 bytes exceeds the limit of 100"}},
		{"over default max", header(1, TypeData, 0, 1, DefaultMaxPayload+1), 0, ErrFrameTooLarge, "header.length", 8, nil},
		{"truncated payload", append(header(1, TypeData, 0, 1, 10), 1, 2, 3), 0, ErrTruncated, "payload", 15, []string{"declares 10 payload bytes, 3 present"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := DecodeFrame(tt.in, tt.max)
			de := mustDecodeError(t, err, tt.want)
			if n != 0 {
				t.Errorf("n = %d on error", n)
			}
			if de.Field != tt.field || de.Offset != tt.offset {
				t.Errorf("field %q offset %d, want %q %d (%v)", de.Field, de.Offset, tt.field, tt.offset, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "wire: decode ") {
				t.Errorf("error %q lacks the wire: decode prefix", msg)
			}
			for _, s := range tt.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
		})
	}
}

func TestVersionErrorText(t *testing.T) {
	_, _, err := DecodeFrame([]byte("GET / HTTP/1.1\r\n"), 0)
	want := `wire: decode frame field header.version at offset 0: peer does not speak Connect protocol v1: not a Connect v1 frame (first byte 0x47 'G'; looks like HTTP)`
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
}

func TestDecodeFrameLimits(t *testing.T) {
	full := AppendFrame(nil, Frame{Type: TypeData, Payload: make([]byte, DefaultMaxPayload)})
	if _, _, err := DecodeFrame(full, 0); err != nil {
		t.Fatalf("payload of exactly DefaultMaxPayload with max 0: %v", err)
	}
	if _, _, err := DecodeFrame(full, DefaultMaxPayload-1); err == nil {
		t.Fatal("payload over the configured max accepted")
	}
	hard := AppendFrame(nil, Frame{Type: TypeData, Payload: make([]byte, MaxFrameHardLimit)})
	if _, _, err := DecodeFrame(hard, 1<<40); err != nil {
		t.Fatalf("payload of exactly MaxFrameHardLimit with a larger max: %v", err)
	}
}

func TestDecodeFrameDoesNotAllocate(t *testing.T) {
	b := AppendFrame(nil, Frame{Type: TypeData, Channel: 1, Payload: make([]byte, 64<<10)})
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := DecodeFrame(b, 0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("DecodeFrame allocated %v times per call", allocs)
	}
}

func TestTypeStrings(t *testing.T) {
	names := map[Type]string{TypeHello: "Hello", TypeWelcome: "Welcome", TypeReject: "Reject", TypePing: "Ping",
		TypePong: "Pong", TypeClose: "Close", TypeData: "Data", 0: "Type(0x00)", 0x7f: "Type(0x7f)"}
	for typ, want := range names {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
	for i := range 256 {
		typ := Type(i)
		_, named := names[typ]
		known := named && typ != 0 && typ != 0x7f
		if typ.Known() != known {
			t.Errorf("%v.Known() = %v", typ, typ.Known())
		}
		if typ.IsControl() != (known && typ != TypeData) {
			t.Errorf("%v.IsControl() = %v", typ, typ.IsControl())
		}
	}
}
