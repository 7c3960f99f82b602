package session

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bearerkit/connect/wire"
)

// directSamples are samples() of the direct-link kinds and of the fields
// direct links added to older kinds.
func directSamples() []struct {
	name string
	m    Message
} {
	return []struct {
		name string
		m    Message
	}{
		{"start-session-direct", &StartSession{ID: 3, Service: "example.echo", Direct: true,
			Bearers: []string{"connect.bearer.tcp", "connect.bearer.udp", "connect.bearer.ssl"}}},
		{"start-session-direct-no-adapters", &StartSession{ID: 3, Service: "example.echo", Direct: true}},
		{"remote-open-routing", &RemoteOpen{ID: 13, Service: "example.echo", Session: sid, Client: "1e9699ae-33d3-44db-a95a-6346e03625ef",
			Token: "q8Vt3kZ0pL2xY7wN", Routing: []byte(`<routing session="s" service="example.echo"><link name="server" kind="server"/></routing>`)}},
		{"remote-open-link-key", &RemoteOpen{ID: 13, Service: "example.echo", Session: sid, Token: "q8Vt3kZ0pL2xY7wN",
			LinkKey: bytes.Repeat([]byte{0xab}, LinkKeySize)}},
		{"link-open", &LinkOpen{ID: 1, Session: sid, Link: "reliable:connect.bearer.tcp", Token: "q8Vt3kZ0pL2xY7wN"}},
		{"link-open-resume", &LinkOpen{ID: 1, Session: sid, Link: "reliable", Token: "q8Vt3kZ0pL2xY7wN", Resume: true}},
		{"ok-resume", &OK{ID: 1, Resume: true}},
		{"links-down", &LinksDown{ID: 2, Session: sid, Links: []string{"unreliable", "secure"}}},
		{"links-down-none", &LinksDown{ID: 3, Session: sid}},
	}
}

// directBadSeeds are broken direct-link messages for the fuzz corpus.
func directBadSeeds() map[string][]byte {
	id := wire.AppendUint64Field(nil, 1, 7)
	sess := wire.AppendStringField(nil, 2, "s")
	return map[string][]byte{
		"bad-link-open-no-token":  append(append(append([]byte{byte(KindLinkOpen)}, id...), sess...), wire.AppendStringField(nil, 3, "reliable")...),
		"bad-links-down-empty":    append(append(append([]byte{byte(KindLinksDown)}, id...), sess...), 3, 0),
		"bad-start-bearer-direct": append(append(append([]byte{byte(KindStartSession)}, id...), wire.AppendStringField(nil, 2, "x")...), wire.AppendStringField(nil, 3, "connect.bearer.tcp")...),
	}
}

// TestDirectDecodeErrors lists decode failures of the direct-link messages
// and fields with their exact messages.
func TestDirectDecodeErrors(t *testing.T) {
	msg := func(k Kind, fields ...[]byte) []byte { return append([]byte{byte(k)}, bytes.Join(fields, nil)...) }
	id := wire.AppendUint64Field(nil, 1, 7)
	sess := wire.AppendStringField(nil, 2, "s1")
	svc := wire.AppendStringField(nil, 2, "svc")
	link := wire.AppendStringField(nil, 3, "reliable")
	token := wire.AppendStringField(nil, 4, "tok")
	direct := wire.AppendBoolField(nil, 4, true)
	bearer := func(b string) []byte { return wire.AppendStringField(nil, 3, b) }
	var many []byte
	for range MaxClientBearers + 1 {
		many = append(many, bearer("connect.bearer.tcp")...)
	}
	var manyLinks []byte
	for range MaxSessionLinks + 1 {
		manyLinks = append(manyLinks, wire.AppendStringField(nil, 3, "l")...)
	}
	cases := []struct {
		name string
		in   []byte
		want string
		is   error
	}{
		{"link-open-no-token", msg(KindLinkOpen, id, sess, link), "session: decode LinkOpen field token at offset 18: required field missing or zero", ErrMissingField},
		{"link-open-no-link", msg(KindLinkOpen, id, sess, token), "session: decode LinkOpen field link at offset 13: required field missing or zero", ErrMissingField},
		{"link-open-no-session", msg(KindLinkOpen, id, link, token), "session: decode LinkOpen field session at offset 19: required field missing or zero", ErrMissingField},
		{"link-open-long-link", msg(KindLinkOpen, id, sess, wire.AppendStringField(nil, 3, strings.Repeat("l", MaxLinkName+1)), token), "session: decode LinkOpen field link at offset 8: field too large: 201 bytes, limit 200", ErrFieldTooLarge},
		{"link-open-long-token", msg(KindLinkOpen, id, sess, link, wire.AppendStringField(nil, 4, strings.Repeat("t", MaxToken+1))), "session: decode LinkOpen field token at offset 18: field too large: 257 bytes, limit 256", ErrFieldTooLarge},
		{"link-open-twice", msg(KindLinkOpen, id, sess, link, link, token), "session: decode LinkOpen field link at offset 18: duplicate field", ErrDuplicateField},
		{"links-down-empty-name", msg(KindLinksDown, id, sess, []byte{3, 0}), "session: decode LinksDown field link at offset 8: malformed: empty link name", ErrMalformed},
		{"links-down-too-many", msg(KindLinksDown, id, sess, manyLinks), "session: decode LinksDown field link at offset 200: field too large: more than 64 links", ErrFieldTooLarge},
		{"start-bearer-without-direct", msg(KindStartSession, id, svc, bearer("connect.bearer.tcp")), "session: decode StartSession field bearer at offset 29: malformed: bearers without direct (a client that opens no direct links has no use for adapters)", ErrMalformed},
		{"start-empty-bearer", msg(KindStartSession, id, svc, bearer(""), direct), "session: decode StartSession field bearer at offset 9: malformed: empty bearer type", ErrMalformed},
		{"start-long-bearer", msg(KindStartSession, id, svc, bearer(strings.Repeat("b", MaxBearerType+1)), direct), "session: decode StartSession field bearer at offset 9: field too large: 129 bytes, limit 128", ErrFieldTooLarge},
		{"start-too-many-bearers", msg(KindStartSession, id, svc, many, direct), "session: decode StartSession field bearer at offset 1289: field too large: more than 64 bearers", ErrFieldTooLarge},
		{"start-direct-twice", msg(KindStartSession, id, svc, direct, direct), "session: decode StartSession field direct at offset 12: duplicate field", ErrDuplicateField},
		{"remote-open-routing-twice", msg(KindRemoteOpen, id, svc, wire.AppendStringField(nil, 3, "s"), wire.AppendBytesField(nil, 6, []byte("<r/>")), wire.AppendBytesField(nil, 6, []byte("<r/>"))),
			"session: decode RemoteOpen field routing at offset 18: duplicate field", ErrDuplicateField},
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
		if de.ID != 7 {
			t.Errorf("%s: ID %d, want 7", c.name, de.ID)
		}
	}
}

func TestDirectEncodeErrors(t *testing.T) {
	cases := []struct {
		m    Message
		want string
	}{
		{&LinkOpen{ID: 1, Session: "s", Link: "l"}, "session: encode LinkOpen field token: required field missing or zero"},
		{&LinksDown{ID: 1, Session: "s", Links: []string{""}}, "session: encode LinksDown field link: required field missing or zero"},
		{&StartSession{ID: 1, Service: "x", Bearers: []string{"connect.bearer.tcp"}}, "session: encode StartSession field bearer: malformed: bearers without direct (a client that opens no direct links has no use for adapters)"},
		{&StartSession{ID: 1, Service: "x", Direct: true, Bearers: make([]string, MaxClientBearers+1)}, "session: encode StartSession field bearer: field too large: 65 bearers, limit 64"},
	}
	for _, c := range cases {
		if _, err := Encode(c.m); err == nil || err.Error() != c.want {
			t.Errorf("%#v:\n got %v\nwant %s", c.m, err, c.want)
		}
	}
}

func TestLinkOpenStringHidesToken(t *testing.T) {
	s := (&LinkOpen{ID: 1, Session: "s", Link: "reliable", Token: "secret-token"}).String()
	if strings.Contains(s, "secret") || s != `LinkOpen{id 1, session "s", link "reliable", token: 12 bytes}` {
		t.Fatal(s)
	}
}
