package session

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz")

const sid = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"

// samples holds one or more messages of every kind, every field set in at
// least one.
func samples() []struct {
	name string
	m    Message
} {
	return append([]struct {
		name string
		m    Message
	}{
		{"list-services", &ListServices{ID: 1}},
		{"describe", &Describe{ID: 2, Service: "example.echo"}},
		{"start-session", &StartSession{ID: 3, Service: "com.example.player"}},
		{"close-session", &CloseSession{ID: 4, Session: sid}},
		{"call", &Call{ID: 5, Session: sid, Method: "add", Timeout: 1500 * time.Millisecond, Args: []byte{0x50, 0x04}}},
		{"call-no-args-no-deadline", &Call{ID: 1 << 63, Session: sid, Method: "ping"}},
		{"subscribe-all", &Subscribe{ID: 6, Session: sid, All: true}},
		{"subscribe-some", &Subscribe{ID: 7, Session: sid, Events: []string{"levelChanged", "sleeping"}}},
		{"watch-root", &Watch{ID: 8, Session: sid}},
		{"watch-path", &Watch{ID: 9, Session: sid, Path: "player.queue.3.title"}},
		{"stop", &Stop{ID: 10, Session: sid, Target: 7}},
		{"cancel", &Cancel{Target: 5}},
		{"error", &Error{ID: 5, Code: CodeUnknownMethod, Message: `service example.echo has no method "nope"`}},
		{"error-unknown-code", &Error{ID: 5, Code: 999}},
		{"service-list", &ServiceList{ID: 1, Services: []ServiceEntry{
			{Name: "example.echo", Version: "1.0", Description: "Echoes; ü", Available: true},
			{Name: "demo", Problem: "plugin did not start"},
			{Name: "sensor.hub", Version: "2.0", Available: true, Runner: "remoteservicerunner (client 1e9699ae-33d3-44db-a95a-6346e03625ef)"},
		}}},
		{"service-list-empty", &ServiceList{ID: 1}},
		{"description", &Description{ID: 2, XML: []byte(`<service name="x" version="1.0"/>`)}},
		{"session-started", &SessionStarted{ID: 3, Session: sid, Routing: []byte(`<routing/>`)}},
		{"result", &Result{ID: 5, Value: []byte{0x54}}},
		{"result-empty", &Result{ID: 5}},
		{"ok", &OK{ID: 4}},
		{"snapshot", &Snapshot{ID: 9, Path: "meter", Value: make([]byte, 9)}},
		{"event", &Event{Session: sid, Name: "levelChanged", Args: []byte{0, 0, 0, 0, 0, 0, 0xe8, 0x3f}}},
		{"event-no-args", &Event{Session: sid, Name: "tick"}},
		{"events-lost", &EventsLost{Session: sid, Count: 44}},
		{"data-change", &DataChange{Session: sid, Watch: 9, Path: "meter.level", Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{"session-closed", &SessionClosed{Session: sid, Reason: "the restarted service refused to reopen the session"}},
		{"session-started-secret", &SessionStarted{ID: 3, Session: sid, Routing: []byte(`<routing/>`), Secret: bytes.Repeat([]byte{0xa5}, SecretSize)}},
		{"reclaim", &Reclaim{ID: 1, Sessions: []ReclaimEntry{
			{Session: sid, Secret: bytes.Repeat([]byte{1}, SecretSize)},
			{Session: "2", Secret: bytes.Repeat([]byte{2}, SecretSize)},
		}}},
		{"reclaim-none", &Reclaim{ID: 1}},
		{"reclaimed", &Reclaimed{ID: 1, Results: []ReclaimResult{
			{Session: sid, Status: ReclaimRestored, Service: "example.echo", Routing: []byte(`<routing/>`)},
			{Session: "2", Status: ReclaimExpired, Service: "example.echo", Reason: "expired", Requests: 12, LastRequest: 40, EndedUnixMilli: 1700000000000},
			{Session: "3", Status: ReclaimDenied},
			{Session: "4", Status: 77},
		}}},
	}, append(append(remoteSamples(), directSamples()...), relaySamples()...)...)
}

// normalize maps empty slices to nil, as a decoder returns them.
func normalize(m Message) Message {
	v := reflect.ValueOf(m).Elem()
	out := reflect.New(v.Type())
	out.Elem().Set(v)
	e := out.Elem()
	for i := 0; i < e.NumField(); i++ {
		f := e.Field(i)
		if f.Kind() == reflect.Slice && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return out.Interface().(Message)
}

func TestRoundTrip(t *testing.T) {
	seen := map[Kind]bool{}
	for _, s := range samples() {
		enc, err := Encode(s.m)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if Kind(enc[0]) != s.m.Kind() {
			t.Fatalf("%s: first byte 0x%02x, want %v", s.name, enc[0], s.m.Kind())
		}
		got, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !reflect.DeepEqual(got, normalize(s.m)) {
			t.Fatalf("%s: round trip\n got %#v\nwant %#v", s.name, got, s.m)
		}
		seen[s.m.Kind()] = true
	}
	for k := range kindNames {
		if !seen[k] {
			t.Errorf("no sample of %v", k)
		}
	}
}

func TestKindRanges(t *testing.T) {
	for k := range kindNames {
		m := newMessage(k)
		_, isReq := m.(Request)
		_, isResp := m.(Response)
		_, isNote := m.(Notification)
		if isReq != k.IsRequest() || isResp != k.IsResponse() || isNote != k.IsNotification() {
			t.Errorf("%v: interfaces (%v %v %v) disagree with its range", k, isReq, isResp, isNote)
		}
	}
	if Kind(0x3a).String() != "kind 0x3a" || Code(77).String() != "code 77" || CodeUnknownMethod.String() != "unknown method" {
		t.Fatal("String of unknown values")
	}
}

// TestDecodeErrors lists decode failures with their exact messages.
func TestDecodeErrors(t *testing.T) {
	call := func(fields ...[]byte) []byte {
		return append([]byte{byte(KindCall)}, bytes.Join(fields, nil)...)
	}
	id := wire.AppendUint64Field(nil, 1, 7)
	sess := wire.AppendStringField(nil, 2, "s1")
	method := wire.AppendStringField(nil, 3, "add")
	cases := []struct {
		name   string
		in     []byte
		want   string
		is     error
		wantID uint64
	}{
		{"empty", nil, "session: decode message field kind at offset 0: message size out of range: 0 bytes (1 to 16777216)", ErrTooLarge, 0},
		{"unknown-kind", []byte{0x3a}, "session: decode kind 0x3a field kind at offset 0: unknown message kind 0x3a", ErrUnknownKind, 0},
		{"unknown-request-with-id", append([]byte{0x3a}, id...), "session: decode kind 0x3a field kind at offset 0: unknown message kind 0x3a", ErrUnknownKind, 7},
		{"missing-id", call(sess, method), "session: decode Call field id at offset 10: required field missing or zero", ErrMissingField, 0},
		{"missing-method", call(id, sess), "session: decode Call field method at offset 8: required field missing or zero", ErrMissingField, 7},
		{"method-too-long", call(id, sess, wire.AppendStringField(nil, 3, strings.Repeat("m", 65))), "session: decode Call field method at offset 8: field too large: 65 bytes, limit 64", ErrFieldTooLarge, 7},
		{"duplicate", call(id, sess, method, method), "session: decode Call field method at offset 13: duplicate field", ErrDuplicateField, 7},
		{"truncated", call(id, sess, []byte{3, 10, 'a'}), "session: decode Call field method at offset 8: truncated: field length 10, 1 bytes left", ErrTruncated, 7},
		{"bad-utf8", call(id, sess, wire.AppendStringField(nil, 3, "a\xff")), "session: decode Call field method at offset 8: malformed: not valid UTF-8", ErrMalformed, 7},
		{"timeout-overflow", call(id, sess, method, wire.AppendUint64Field(nil, 4, 1<<63)), "session: decode Call field timeout_ns at offset 13: malformed: timeout of 9223372036854775808 ns exceeds 9223372036854775807", ErrMalformed, 7},
		{"tag-zero", call(id, []byte{0, 0}), "session: decode Call field fields at offset 4: malformed: field tag 0 out of range 1..4294967295", ErrMalformed, 7},
		{"non-minimal-id", append([]byte{byte(KindOK)}, 1, 2, 0x81, 0x00), "session: decode OK field id at offset 1: malformed: non-minimal varint", ErrMalformed, 0},
		{"subscribe-nothing", append(append([]byte{byte(KindSubscribe)}, id...), sess...), "session: decode Subscribe field event at offset 8: required field missing or zero: name at least one event, or set all", ErrMissingField, 7},
		{"subscribe-both", append(append(append(append([]byte{byte(KindSubscribe)}, id...), sess...), wire.AppendStringField(nil, 3, "e")...), wire.AppendBoolField(nil, 4, true)...), "session: decode Subscribe field all at offset 14: malformed: all and a list of events exclude each other", ErrMalformed, 7},
		{"bool-two", append([]byte{byte(KindServiceList)}, append(id, 2, 3, 4, 1, 2)...), "session: decode ServiceList field service at offset 4: available at entry offset 0: malformed: bool must be one byte 0 or 1", ErrMalformed, 7},
		{"entry-without-name", append([]byte{byte(KindServiceList)}, append(id, 2, 3, 2, 1, 'x')...), "session: decode ServiceList field service at offset 4: name: required field missing or zero", ErrMissingField, 7},
		{"error-code-range", append([]byte{byte(KindError)}, append(id, wire.AppendUint64Field(nil, 2, 70000)...)...), "session: decode Error field code at offset 4: malformed: value 70000 exceeds 65535", ErrMalformed, 7},
		{"description-empty", append([]byte{byte(KindDescription)}, id...), "session: decode Description field xml at offset 4: required field missing or zero", ErrMissingField, 7},
		{"notification-no-session", []byte{byte(KindEvent), 2, 1, 'e'}, "session: decode Event field session at offset 4: required field missing or zero", ErrMissingField, 0},
		{"secret-short", append(append([]byte{byte(KindSessionStarted)}, id...), append(append(wire.AppendStringField(nil, 2, "s"), wire.AppendBytesField(nil, 3, []byte("<r/>"))...), wire.AppendBytesField(nil, 4, []byte("short"))...)...), "session: decode SessionStarted field secret at offset 20: malformed: secret of 5 bytes, want 32", ErrMalformed, 7},
		{"reclaim-no-secret", append(append([]byte{byte(KindReclaim)}, id...), wire.AppendBytesField(nil, 2, wire.AppendStringField(nil, 1, "s"))...), "session: decode Reclaim field session at offset 4: secret: required field missing or zero", ErrMissingField, 7},
		{"reclaim-twice", append(append(append([]byte{byte(KindReclaim)}, id...), reclaimEntry("s")...), reclaimEntry("s")...), "session: decode Reclaim field session at offset 82: malformed: session \"s\" listed twice", ErrMalformed, 7},
		{"reclaimed-no-status", append(append([]byte{byte(KindReclaimed)}, id...), wire.AppendBytesField(nil, 2, wire.AppendStringField(nil, 1, "s"))...), "session: decode Reclaimed field result at offset 4: status: required field missing or zero", ErrMissingField, 7},
		{"reclaimed-status-range", append(append([]byte{byte(KindReclaimed)}, id...), wire.AppendBytesField(nil, 2, wire.AppendUint64Field(wire.AppendStringField(nil, 1, "s"), 2, 300))...), "session: decode Reclaimed field result at offset 4: status at entry offset 3: malformed: value 300 exceeds 255", ErrMalformed, 7},
	}
	for _, c := range cases {
		_, err := Decode(c.in)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: got %v (%T), want a *DecodeError", c.name, err, err)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, err, c.want)
		}
		if !errors.Is(err, c.is) {
			t.Errorf("%s: %v does not wrap %v", c.name, err, c.is)
		}
		if de.ID != c.wantID {
			t.Errorf("%s: ID %d, want %d", c.name, de.ID, c.wantID)
		}
	}
}

// reclaimEntry is an encoded Reclaim session field.
func reclaimEntry(id string) []byte {
	return wire.AppendBytesField(nil, 2, wire.AppendBytesField(wire.AppendStringField(nil, 1, id), 2, bytes.Repeat([]byte{9}, SecretSize)))
}

func TestUnknownFieldsSkipped(t *testing.T) {
	enc, err := Encode(&Describe{ID: 3, Service: "x"})
	if err != nil {
		t.Fatal(err)
	}
	enc = wire.AppendStringField(enc, 99, "from a later version")
	m, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if d := m.(*Describe); d.ID != 3 || d.Service != "x" {
		t.Fatalf("%+v", d)
	}
}

func TestEncodeErrors(t *testing.T) {
	cases := []struct {
		m    Message
		want string
	}{
		{&Call{Session: "s", Method: "m"}, "session: encode Call field id: required field missing or zero"},
		{&Call{ID: 1, Session: "s", Method: "m", Timeout: -time.Second}, "session: encode Call field timeout_ns: malformed: negative timeout -1s"},
		{&Describe{ID: 1, Service: strings.Repeat("s", 129)}, "session: encode Describe field service: field too large: 129 bytes, limit 128"},
		{&Subscribe{ID: 1, Session: "s", Events: []string{""}}, "session: encode Subscribe field event: required field missing or zero"},
		{&ServiceList{ID: 1, Services: []ServiceEntry{{Name: "a", Version: "\xff"}}}, "session: encode ServiceList field service: service 0: version: malformed: not valid UTF-8"},
		{&EventsLost{Session: "s"}, "session: encode EventsLost field count: required field missing or zero"},
		{nil, "session: encode kind 0x00: malformed: nil message"},
	}
	for _, c := range cases {
		dst := []byte("keep")
		out, err := Append(dst, c.m)
		if err == nil || err.Error() != c.want {
			t.Errorf("%#v:\n got %v\nwant %s", c.m, err, c.want)
		}
		if string(out) != "keep" {
			t.Errorf("%#v: dst changed to %q", c.m, out)
		}
	}
}

func TestMessageTooLarge(t *testing.T) {
	_, err := Encode(&Result{ID: 1, Value: make([]byte, MaxMessageSize)})
	if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrFieldTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, err := Decode(make([]byte, MaxMessageSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
}

func TestCutText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello world", 8, "hello..."},
		{"héllo wörld", 5, "h..."}, // never cuts inside é
		{"a\xffb", 10, "a\ufffdb"},
		{"abcdef", 2, ""},
	} {
		if got := CutText(c.in, c.max); got != c.want || len(got) > c.max {
			t.Errorf("CutText(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
	e := NewError(1, CodeApplication, strings.Repeat("x", 2*MaxText))
	if _, err := Encode(e); err != nil {
		t.Fatal(err)
	}
}

// seedCorpus returns the seeds of FuzzDecode: every sample and a few
// broken messages.
func seedCorpus() map[string][]byte {
	seeds := map[string][]byte{}
	for _, s := range samples() {
		enc, err := Encode(s.m)
		if err != nil {
			panic(err)
		}
		seeds[s.name] = enc
	}
	id := wire.AppendUint64Field(nil, 1, 7)
	seeds["bad-unknown-kind"] = append([]byte{0x3a}, id...)
	seeds["bad-truncated"] = []byte{byte(KindCall), 1, 1, 7, 3, 10, 'a'}
	seeds["bad-duplicate"] = append(append([]byte{byte(KindOK)}, id...), id...)
	seeds["bad-entry"] = append([]byte{byte(KindServiceList)}, append(id, 2, 3, 4, 1, 2)...)
	maps.Copy(seeds, remoteBadSeeds())
	maps.Copy(seeds, directBadSeeds())
	maps.Copy(seeds, relayBadSeeds())
	return seeds
}

// TestSeedCorpus checks that testdata/fuzz holds the seeds seedCorpus
// generates. Run with -update-corpus to rewrite them.
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range seedCorpus() {
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
			t.Errorf("%s is missing or stale (run go test ./session -run TestSeedCorpus -update-corpus): %v", path, err)
		}
	}
}

var sentinels = []error{ErrTruncated, ErrMalformed, ErrDuplicateField, ErrMissingField, ErrFieldTooLarge, ErrUnknownKind, ErrTooLarge}

// FuzzDecode decodes arbitrary bytes: no panic; an error is a *DecodeError
// wrapping a sentinel with an offset inside the input; a message re-encodes
// to bytes that decode to the same message.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%v (%T) is not a *DecodeError", err, err)
			}
			found := false
			for _, s := range sentinels {
				found = found || errors.Is(err, s)
			}
			if !found {
				t.Fatalf("%v wraps no sentinel", err)
			}
			if de.Offset < 0 || de.Offset > len(data) {
				t.Fatalf("%v: offset outside the %d-byte input", err, len(data))
			}
			return
		}
		if err := Check(m); err != nil {
			t.Fatalf("decoded %#v fails Check: %v", m, err)
		}
		enc, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", m, err)
		}
		if len(enc) > len(data) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(data), len(enc))
		}
		m2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded %#v does not decode: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%#v\n%#v", m, m2)
		}
	})
}
