package wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, tt := range sampleMessages() {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkMessage(tt.m); err != nil {
				t.Fatalf("sample fails validation: %v", err)
			}
			enc := AppendMessage([]byte("prefix"), tt.m)
			if string(enc[:6]) != "prefix" {
				t.Fatal("AppendMessage clobbered dst")
			}
			enc = enc[6:]
			if viaFrame := AppendFrame(nil, MessageFrame(tt.m)); !bytes.Equal(enc, viaFrame) {
				t.Fatalf("AppendMessage and AppendFrame(MessageFrame) differ:\n% x\n% x", enc, viaFrame)
			}
			f, n, err := DecodeFrame(enc, 0)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(enc) || f.Type != tt.m.Type() {
				t.Fatalf("DecodeFrame: n %d of %d, type %v", n, len(enc), f.Type)
			}
			got, err := DecodeMessage(f)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.m
			if d, ok := want.(*Data); ok && d.Payload == nil {
				want = &Data{Channel: d.Channel, Flags: d.Flags, Payload: []byte{}}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, want)
			}
		})
	}
}

func TestDecodedControlMessageDoesNotAlias(t *testing.T) {
	enc := AppendMessage(nil, &Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID, Token: "tok", ClientName: "name"})
	f, _, err := DecodeFrame(enc, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(f)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = 0
	}
	h := m.(*Hello)
	if h.Token != "tok" || h.ClientName != "name" || h.ClientID != testClientID {
		t.Fatalf("decoded Hello changed with its frame: %+v", *h)
	}
}

func TestDecodedDataAliases(t *testing.T) {
	payload := []byte("abc")
	m, err := DecodeMessage(Frame{Type: TypeData, Channel: 3, Flags: 1, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	d := m.(*Data)
	if d.Channel != 3 || d.Flags != 1 || &d.Payload[0] != &payload[0] {
		t.Fatalf("Data = %+v, want channel 3 flags 1 aliasing the frame payload", d)
	}
}

// helloPayload is a valid Hello payload; tests append or alter fields.
func helloPayload() []byte {
	var b []byte
	b = AppendUint64Field(b, 1, 1)
	b = AppendUint64Field(b, 2, 1)
	return AppendBytesField(b, 3, testClientID[:])
}

func TestUnknownFieldsSkipped(t *testing.T) {
	p := AppendStringField(nil, 99, "a field from the future")
	p = append(p, helloPayload()...)
	p = AppendUint64Field(p, 1<<20, 5)
	p = AppendBytesField(p, MaxTag, nil)
	p = AppendStringField(p, 4, "tok")
	p = AppendBoolField(p, 8, true) // tag 8 is unknown to Hello
	m, err := DecodeMessage(Frame{Type: TypeHello, Payload: p})
	if err != nil {
		t.Fatal(err)
	}
	want := &Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID, Token: "tok"}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %v, want %v", m, want)
	}
}

func TestFieldOrderFree(t *testing.T) {
	var p []byte
	p = AppendBytesField(p, 3, testClientID[:])
	p = AppendStringField(p, 4, "tok")
	p = AppendUint64Field(p, 2, 2)
	p = AppendUint64Field(p, 1, 1)
	m, err := DecodeMessage(Frame{Type: TypeHello, Payload: p})
	if err != nil {
		t.Fatal(err)
	}
	if h := m.(*Hello); h.MinVersion != 1 || h.MaxVersion != 2 || h.Token != "tok" {
		t.Fatalf("got %v", h)
	}
}

func TestMessageErrors(t *testing.T) {
	hp := helloPayload()
	zeroID := make([]byte, 16)
	tests := []struct {
		name    string
		typ     Type
		payload []byte
		want    error
		field   string
		offset  int // -1: not checked
	}{
		{"duplicate known tag", TypeHello, AppendUint64Field(hp, 1, 1), ErrDuplicateField, "min_version", HeaderSize + len(hp)},
		{"zero client id", TypeHello, AppendBytesField(AppendUint64Field(AppendUint64Field(nil, 1, 1), 2, 1), 3, zeroID), ErrMissingField, "client_id", HeaderSize + 6},
		{"missing client id", TypeHello, AppendUint64Field(AppendUint64Field(nil, 1, 1), 2, 1), ErrMissingField, "client_id", HeaderSize + 6},
		{"short client id", TypeHello, AppendBytesField(hp, 3, testClientID[:15]), ErrDuplicateField, "client_id", -1},
		{"client id 15 bytes", TypeHello, AppendBytesField(AppendUint64Field(AppendUint64Field(nil, 1, 1), 2, 1), 3, testClientID[:15]), ErrMalformed, "client_id", HeaderSize + 6},
		{"missing min version", TypeHello, AppendBytesField(AppendUint64Field(nil, 2, 1), 3, testClientID[:]), ErrMissingField, "min_version", -1},
		{"min above max", TypeHello, AppendBytesField(AppendUint64Field(AppendUint64Field(nil, 1, 3), 2, 2), 3, testClientID[:]), ErrMalformed, "max_version", HeaderSize + 3},
		{"version overflows u8", TypeHello, AppendUint64Field(nil, 1, 300), ErrMalformed, "min_version", HeaderSize},
		{"token too long", TypeHello, AppendStringField(hp, 4, strings.Repeat("t", MaxTokenLen+1)), ErrFieldTooLarge, "token", HeaderSize + len(hp)},
		{"name not utf-8", TypeHello, AppendStringField(hp, 5, "\xff\xfe"), ErrMalformed, "client_name", HeaderSize + len(hp)},
		{"truncated field value", TypeHello, append(append(hp, 4, 40), "abc"...), ErrTruncated, "token", HeaderSize + len(hp)},
		{"truncated field length", TypeHello, append(hp, 4), ErrTruncated, "token", HeaderSize + len(hp)},
		{"truncated tag", TypeHello, append(hp, 0x80), ErrTruncated, "payload", HeaderSize + len(hp)},
		{"tag zero", TypeHello, append(hp, 0, 0), ErrMalformed, "payload", HeaderSize + len(hp)},
		{"tag over max", TypeHello, AppendUint64Field(hp, MaxTag+1, 0), ErrMalformed, "payload", HeaderSize + len(hp)},
		{"non-minimal tag", TypeHello, append(hp, 0x81, 0x00, 0), ErrMalformed, "payload", HeaderSize + len(hp)},
		{"varint overflow", TypePing, append([]byte{1, 10}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), ErrMalformed, "id", HeaderSize},
		{"varint all continuation bytes", TypePing, append([]byte{1, 10}, bytes.Repeat([]byte{0x80}, 10)...), ErrMalformed, "id", HeaderSize},
		{"non-minimal value", TypePing, []byte{1, 2, 0x85, 0x00}, ErrMalformed, "id", HeaderSize},
		{"bytes after integer", TypePing, []byte{1, 2, 0x05, 0x00}, ErrMalformed, "id", HeaderSize},
		{"empty integer", TypePing, []byte{2, 0}, ErrMalformed, "sent_unix_nano", HeaderSize},
		{"bool two", TypeReject, AppendBytesField(AppendUint64Field(nil, 1, 1), 3, []byte{2}), ErrMalformed, "retryable", HeaderSize + 3},
		{"bool two bytes", TypeReject, AppendBytesField(AppendUint64Field(nil, 1, 1), 3, []byte{1, 1}), ErrMalformed, "retryable", HeaderSize + 3},
		{"reject without code", TypeReject, AppendStringField(nil, 2, "why"), ErrMissingField, "code", HeaderSize + 5},
		{"reject code overflows u16", TypeReject, AppendUint64Field(nil, 1, 1<<16), ErrMalformed, "code", HeaderSize},
		{"reject message too long", TypeReject, AppendStringField(AppendUint64Field(nil, 1, 1), 2, strings.Repeat("m", MaxTextLen+1)), ErrFieldTooLarge, "message", HeaderSize + 3},
		{"welcome without version", TypeWelcome, AppendBytesField(nil, 3, testClientID[:]), ErrMissingField, "version", -1},
		{"welcome without client id", TypeWelcome, AppendUint64Field(nil, 1, 1), ErrMissingField, "client_id", -1},
		{"welcome max payload over hard limit", TypeWelcome, AppendUint64Field(AppendBytesField(AppendUint64Field(nil, 1, 1), 3, testClientID[:]), 5, MaxFrameHardLimit+1), ErrMalformed, "max_payload", -1},
		{"hello max payload over hard limit", TypeHello, AppendUint64Field(hp, 7, MaxFrameHardLimit+1), ErrMalformed, "max_payload", HeaderSize + len(hp)},
		{"welcome server id too long", TypeWelcome, AppendStringField(nil, 2, strings.Repeat("s", MaxNameLen+1)), ErrFieldTooLarge, "server_id", HeaderSize},
		{"ping interval overflows u32", TypeWelcome, AppendUint64Field(nil, 4, 1<<32), ErrMalformed, "ping_interval_ms", HeaderSize},
		{"close reason not utf-8", TypeClose, AppendStringField(nil, 2, "\xc0"), ErrMalformed, "reason", HeaderSize},
		{"pong duplicate", TypePong, AppendUint64Field(AppendUint64Field(nil, 1, 1), 1, 2), ErrDuplicateField, "id", HeaderSize + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeMessage(Frame{Type: tt.typ, Payload: tt.payload})
			if m != nil {
				t.Errorf("got a message %v with the error", m)
			}
			de := mustDecodeError(t, err, tt.want)
			if de.Type != tt.typ || de.Field != tt.field || (tt.offset >= 0 && de.Offset != tt.offset) {
				t.Errorf("type %v field %q offset %d, want %v %q %d: %v", de.Type, de.Field, de.Offset, tt.typ, tt.field, tt.offset, err)
			}
			if want := fmt.Sprintf("wire: decode %v field %s at offset %d: ", tt.typ, tt.field, de.Offset); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
		})
	}
}

func TestDecodeErrorText(t *testing.T) {
	hp := helloPayload() // 24 bytes: the token field starts at frame offset 36
	p := append(append(hp, 4, 40), "abc"...)
	_, err := DecodeMessage(Frame{Type: TypeHello, Payload: p})
	want := "wire: decode Hello field token at offset 36: truncated: field length 40, 3 bytes left"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n %v\nwant\n %s", err, want)
	}
}

func TestDecodeMessageFrameErrors(t *testing.T) {
	_, err := DecodeMessage(Frame{Type: 0x42})
	if de := mustDecodeError(t, err, ErrUnknownType); de.Field != "header.type" {
		t.Errorf("field %q", de.Field)
	}
	_, err = DecodeMessage(Frame{Type: TypeWelcome, Channel: 1})
	mustDecodeError(t, err, ErrMalformed)
	_, err = DecodeMessage(Frame{Type: TypeClose, Flags: 1})
	mustDecodeError(t, err, ErrMalformed)
	// Data may use any channel and flags.
	if _, err := DecodeMessage(Frame{Type: TypeData, Channel: 0, Flags: 0xffff}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckMessage(t *testing.T) {
	tests := []struct {
		m    Message
		want error
		text string
	}{
		{&Hello{MinVersion: 1, MaxVersion: 1}, ErrMissingField, "wire: write Hello: field client_id: required field missing or zero"},
		{&Hello{MinVersion: 2, MaxVersion: 1, ClientID: testClientID}, ErrMalformed, ""},
		{&Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID, Token: strings.Repeat("x", MaxTokenLen+1)}, ErrFieldTooLarge, ""},
		{&Welcome{Version: 1}, ErrMissingField, ""},
		{&Reject{Message: "no code"}, ErrMissingField, ""},
		{&Close{Reason: "\xff"}, ErrMalformed, ""},
	}
	for _, tt := range tests {
		err := checkMessage(tt.m)
		if !errors.Is(err, tt.want) {
			t.Errorf("checkMessage(%v) = %v, want %v", tt.m, err, tt.want)
		}
		if tt.text != "" && (err == nil || err.Error() != tt.text) {
			t.Errorf("checkMessage(%v) = %v, want %q", tt.m, err, tt.text)
		}
	}
}

func TestHelloStringRedactsToken(t *testing.T) {
	h := &Hello{MinVersion: 1, MaxVersion: 2, ClientID: testClientID, Token: "hunter2", ClientName: "box"}
	for _, s := range []string{fmt.Sprint(h), fmt.Sprintf("%+v", h), fmt.Sprintf("%#v", h), fmt.Sprintf("%v", *h), fmt.Sprintf("%+v", *h)} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("%q shows the token", s)
		}
		if !strings.Contains(s, "6ba7b810-9dad-11d1-80b4-00c04fd430c8") || !strings.Contains(s, "<redacted, 7 bytes>") {
			t.Errorf("%q lacks the client id or the token length", s)
		}
	}
}

func TestCodeStrings(t *testing.T) {
	if s := RejectAuth.String(); s != "authentication failed" {
		t.Errorf("RejectAuth = %q", s)
	}
	for c := RejectAuth; c <= RejectProtocol; c++ {
		if strings.HasPrefix(c.String(), "RejectCode(") {
			t.Errorf("code %d has no name", c)
		}
	}
	if s := RejectCode(99).String(); s != "RejectCode(99)" {
		t.Errorf("RejectCode(99) = %q", s)
	}
	for c := CloseNormal; c <= CloseInternal; c++ {
		if strings.HasPrefix(c.String(), "CloseCode(") {
			t.Errorf("close code %d has no name", c)
		}
	}
	if s := CloseCode(77).String(); s != "CloseCode(77)" {
		t.Errorf("CloseCode(77) = %q", s)
	}
	r := &Reject{Code: RejectAuth, Message: "bad token"}
	if s := r.Error(); s != "wire: rejected by server: authentication failed (code 1): bad token" {
		t.Errorf("Reject.Error() = %q", s)
	}
}

func TestNegotiateVersion(t *testing.T) {
	tests := []struct {
		lo, hi uint8
		v      uint8
		ok     bool
	}{{1, 1, 1, true}, {1, 5, 1, true}, {0, 1, 1, true}, {2, 3, 0, false}, {0, 0, 0, false}}
	for _, tt := range tests {
		v, ok := NegotiateVersion(tt.lo, tt.hi)
		if v != tt.v || ok != tt.ok {
			t.Errorf("NegotiateVersion(%d, %d) = %d, %v; want %d, %v", tt.lo, tt.hi, v, ok, tt.v, tt.ok)
		}
	}
}

func TestNilMessages(t *testing.T) {
	if b := AppendMessage([]byte("x"), nil); string(b) != "x" {
		t.Errorf("AppendMessage(nil) appended %q", b[1:])
	}
	if f := MessageFrame(nil); f.Type != 0 {
		t.Errorf("MessageFrame(nil) = %+v", f)
	}
	var d *Data
	if f := MessageFrame(d); f.Type != TypeData || len(f.Payload) != 0 {
		t.Errorf("MessageFrame((*Data)(nil)) = %+v", f)
	}
	var h *Hello
	if b := AppendMessage(nil, h); len(b) != HeaderSize {
		t.Errorf("AppendMessage((*Hello)(nil)) = % x", b)
	}
}

func TestFieldReader(t *testing.T) {
	var p []byte
	p = AppendUint32Field(p, 1, 1<<32-1)
	p = AppendInt64Field(p, 2, -1)
	p = AppendBoolField(p, 3, false)
	p = AppendStringField(p, 300, "héllo")
	p = AppendBytesField(p, 5, []byte{0, 1, 2})
	r := NewFieldReader(p)
	var tags []uint64
	for r.Next() {
		f := r.Field()
		tags = append(tags, f.Tag)
		var err error
		switch f.Tag {
		case 1:
			var v uint32
			v, err = f.Uint32()
			if v != 1<<32-1 {
				t.Errorf("uint32 = %d", v)
			}
			if _, err := f.Uint16(); !errors.Is(err, ErrMalformed) {
				t.Errorf("Uint16 of 2^32-1: %v", err)
			}
		case 2:
			var v int64
			v, err = f.Int64()
			if v != -1 || len(f.Value) != 10 {
				t.Errorf("int64 = %d in %d bytes", v, len(f.Value))
			}
		case 3:
			var v bool
			v, err = f.Bool()
			if v {
				t.Error("bool = true")
			}
		case 300:
			var v string
			v, err = f.Text(6)
			if v != "héllo" {
				t.Errorf("text = %q", v)
			}
			if _, err := f.Text(5); !errors.Is(err, ErrFieldTooLarge) {
				t.Errorf("Text over its limit: %v", err)
			}
		case 5:
			var v []byte
			v, err = f.Bytes(3)
			if !bytes.Equal(v, []byte{0, 1, 2}) {
				t.Errorf("bytes = %v", v)
			}
		}
		if err != nil {
			t.Errorf("tag %d: %v", f.Tag, err)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tags, []uint64{1, 2, 3, 300, 5}) {
		t.Fatalf("tags %v", tags)
	}
}

func TestNameTables(t *testing.T) {
	for _, typ := range []Type{TypeHello, TypeWelcome, TypeReject, TypePing, TypePong, TypeClose} {
		names := namesOf(typ)
		if len(names) == 0 || len(names) > maxKnownTags+1 || names[0] != "" {
			t.Errorf("%v: %d names (tags 1..%d allowed), names[0] %q", typ, len(names), maxKnownTags, names[0])
		}
	}
}
