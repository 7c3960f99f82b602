package session

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/wire"
)

// remoteSamples are samples() of the remote-service kinds.
func remoteSamples() []struct {
	name string
	m    Message
} {
	return []struct {
		name string
		m    Message
	}{
		{"provide-service", &ProvideService{ID: 11, Service: "example.echo", XML: []byte(`<service name="example.echo" version="1.0"/>`),
			Endpoints: []RunnerEndpoint{
				{Address: "tcp://127.0.0.1:9700", Bearer: "connect.bearer.tcp", Capabilities: 3},
				{Address: "ssl://127.0.0.1:9701", Bearer: "connect.bearer.ssl", Capabilities: 7},
			}}},
		{"provide-service-no-endpoints", &ProvideService{ID: 12, Service: "a", XML: []byte("<service/>")}},
		{"remote-open", &RemoteOpen{ID: 13, Service: "example.echo", Session: sid, Client: "1e9699ae-33d3-44db-a95a-6346e03625ef", Token: "q8Vt3kZ0pL2xY7wN"}},
		{"remote-open-minimal", &RemoteOpen{ID: 14, Service: "example.echo", Session: sid}},
		{"remote-call", &RemoteCall{ID: 15, Service: "example.echo", Session: sid, Method: "add", Timeout: 2 * time.Second, Args: []byte{0x50, 0x04}}},
		{"remote-call-outside-session", &RemoteCall{ID: 16, Service: "example.echo", Method: "stats"}},
		{"remote-close", &RemoteClose{Service: "example.echo", Session: sid, Reason: "closed by the client"}},
		{"remote-cancel", &RemoteCancel{Target: 15}},
		{"service-event", &ServiceEvent{Service: "example.echo", Session: sid, Name: "levelChanged", Args: []byte{0, 0, 0, 0, 0, 0, 0xe8, 0x3f}}},
		{"service-event-all", &ServiceEvent{Service: "example.echo", Name: "tick"}},
		{"service-data", &ServiceData{Service: "example.echo", Path: "meter.level", Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		{"service-data-root", &ServiceData{Service: "example.echo", Value: []byte{9}}},
		{"remote-session-lost", &RemoteSessionLost{Service: "example.echo", Session: sid, Reason: "the restarted plugin refused it"}},
	}
}

// remoteBadSeeds are broken remote-service messages for the fuzz corpus.
func remoteBadSeeds() map[string][]byte {
	id := wire.AppendUint64Field(nil, 1, 7)
	return map[string][]byte{
		"bad-provide-endpoint":   append(append([]byte{byte(KindProvideService)}, id...), 4, 3, 1, 1, 'x'),
		"bad-remote-call-no-svc": append(append([]byte{byte(KindRemoteCall)}, id...), wire.AppendStringField(nil, 4, "m")...),
		"bad-unknown-runner":     append([]byte{0xcf}, id...),
	}
}

func TestRemoteKindRanges(t *testing.T) {
	for k := range remoteKindNames {
		m := newMessage(k)
		if m == nil || m.Kind() != k {
			t.Fatalf("%v: newMessage gives %#v", k, m)
		}
		_, isReq := m.(Request)
		_, isRunnerReq := m.(RunnerRequest)
		_, isRunnerNote := m.(RunnerNotification)
		if isReq != k.IsRequest() || isRunnerReq != k.IsRunnerRequest() || isRunnerNote != k.IsRunnerNotification() {
			t.Errorf("%v: interfaces (%v %v %v) disagree with its range", k, isReq, isRunnerReq, isRunnerNote)
		}
		if k.String() != remoteKindNames[k] || !k.Known() {
			t.Errorf("%v: name", k)
		}
	}
	if Kind(0xcf).String() != "kind 0xcf" || Kind(0xcf).Known() {
		t.Fatal("an undefined runner kind")
	}
}

// TestRemoteDecodeErrors lists decode failures of the remote-service
// messages with their exact messages.
func TestRemoteDecodeErrors(t *testing.T) {
	msg := func(k Kind, fields ...[]byte) []byte { return append([]byte{byte(k)}, bytes.Join(fields, nil)...) }
	id := wire.AppendUint64Field(nil, 1, 7)
	svc := wire.AppendStringField(nil, 2, "svc")
	xml := wire.AppendBytesField(nil, 3, []byte("<service/>"))
	endpoint := func(fields ...[]byte) []byte { return wire.AppendBytesField(nil, 4, bytes.Join(fields, nil)) }
	addr := wire.AppendStringField(nil, 1, "tcp://h:1")
	bearer := wire.AppendStringField(nil, 2, "connect.bearer.tcp")
	manyEndpoints := bytes.Repeat(endpoint(addr, bearer), MaxEndpoints+1)
	cases := []struct {
		name   string
		in     []byte
		want   string
		is     error
		wantID uint64
	}{
		{"provide-no-xml", msg(KindProvideService, id, svc),
			"session: decode ProvideService field xml at offset 9: required field missing or zero", ErrMissingField, 7},
		{"provide-endpoint-no-bearer", msg(KindProvideService, id, svc, xml, endpoint(addr)),
			"session: decode ProvideService field endpoint at offset 21: bearer: required field missing or zero", ErrMissingField, 7},
		{"provide-endpoint-duplicate", msg(KindProvideService, id, svc, xml, endpoint(addr, addr, bearer)),
			"session: decode ProvideService field endpoint at offset 21: address: duplicate field", ErrDuplicateField, 7},
		{"provide-endpoint-truncated", msg(KindProvideService, id, svc, xml, wire.AppendBytesField(nil, 4, []byte{1, 9, 'x'})),
			"session: decode ProvideService field endpoint at offset 21: endpoint at offset 0: truncated: field length 9, 1 bytes left", ErrTruncated, 7},
		{"provide-endpoint-address-too-long", msg(KindProvideService, id, svc, xml, endpoint(wire.AppendStringField(nil, 1, strings.Repeat("a", MaxAddress+1)), bearer)),
			"session: decode ProvideService field endpoint at offset 21: address at endpoint offset 0: field too large: 257 bytes, limit 256", ErrFieldTooLarge, 7},
		{"provide-too-many-endpoints", msg(KindProvideService, id, svc, xml, manyEndpoints),
			"session: decode ProvideService field endpoint at offset 2133: field too large: more than 64 endpoints", ErrFieldTooLarge, 7},
		{"remote-open-no-session", msg(KindRemoteOpen, id, svc),
			"session: decode RemoteOpen field session at offset 9: required field missing or zero", ErrMissingField, 7},
		{"remote-open-token-too-long", msg(KindRemoteOpen, id, svc, wire.AppendStringField(nil, 3, "s"), wire.AppendStringField(nil, 5, strings.Repeat("t", MaxToken+1))),
			"session: decode RemoteOpen field token at offset 12: field too large: 257 bytes, limit 256", ErrFieldTooLarge, 7},
		{"remote-call-no-method", msg(KindRemoteCall, id, svc),
			"session: decode RemoteCall field method at offset 9: required field missing or zero", ErrMissingField, 7},
		{"remote-call-timeout-overflow", msg(KindRemoteCall, id, svc, wire.AppendStringField(nil, 4, "m"), wire.AppendUint64Field(nil, 5, 1<<63)),
			"session: decode RemoteCall field timeout_ns at offset 12: malformed: timeout of 9223372036854775808 ns exceeds 9223372036854775807", ErrMalformed, 7},
		{"remote-close-no-session", msg(KindRemoteClose, wire.AppendStringField(nil, 1, "svc")),
			"session: decode RemoteClose field session at offset 6: required field missing or zero", ErrMissingField, 0},
		{"remote-cancel-no-target", msg(KindRemoteCancel),
			"session: decode RemoteCancel field target at offset 1: required field missing or zero", ErrMissingField, 0},
		{"service-event-no-name", msg(KindServiceEvent, wire.AppendStringField(nil, 1, "svc")),
			"session: decode ServiceEvent field name at offset 6: required field missing or zero", ErrMissingField, 0},
		{"service-data-no-service", msg(KindServiceData, wire.AppendStringField(nil, 2, "a.b")),
			"session: decode ServiceData field service at offset 6: required field missing or zero", ErrMissingField, 0},
		{"session-lost-bad-utf8", msg(KindRemoteSessionLost, wire.AppendStringField(nil, 1, "svc"), wire.AppendStringField(nil, 2, "s"), wire.AppendStringField(nil, 3, "\xff")),
			"session: decode RemoteSessionLost field reason at offset 9: malformed: not valid UTF-8", ErrMalformed, 0},
		{"unknown-runner-kind", msg(0xcf, id),
			"session: decode kind 0xcf field kind at offset 0: unknown message kind 0xcf", ErrUnknownKind, 7},
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

func TestRemoteEncodeErrors(t *testing.T) {
	cases := []struct {
		m    Message
		want string
	}{
		{&ProvideService{ID: 1, Service: "a"}, "session: encode ProvideService field xml: required field missing or zero"},
		{&ProvideService{ID: 1, Service: "a", XML: []byte("x"), Endpoints: []RunnerEndpoint{{Address: "tcp://h:1"}}},
			"session: encode ProvideService field endpoint: endpoint 0: bearer: required field missing or zero"},
		{&ProvideService{ID: 1, Service: "a", XML: []byte("x"), Endpoints: make([]RunnerEndpoint, MaxEndpoints+1)},
			"session: encode ProvideService field endpoint: field too large: 65 endpoints, limit 64"},
		{&RemoteOpen{ID: 1, Service: "a", Session: "s", Client: strings.Repeat("c", MaxClientID+1)},
			"session: encode RemoteOpen field client: field too large: 65 bytes, limit 64"},
		{&RemoteOpen{ID: 1, Service: "a", Session: "s", LinkKey: []byte{1, 2, 3}},
			"session: encode RemoteOpen field link_key: malformed: secret of 3 bytes, want 32"},
		{&RemoteCall{ID: 1, Service: "a", Method: "m", Timeout: -time.Second}, "session: encode RemoteCall field timeout_ns: malformed: negative timeout -1s"},
		{&RemoteClose{Service: "a"}, "session: encode RemoteClose field session: required field missing or zero"},
		{&RemoteCancel{}, "session: encode RemoteCancel field target: required field missing or zero"},
		{&ServiceEvent{Service: "a", Name: strings.Repeat("n", MaxName+1)}, "session: encode ServiceEvent field name: field too large: 65 bytes, limit 64"},
		{&ServiceData{Path: "x"}, "session: encode ServiceData field service: required field missing or zero"},
		{&RemoteSessionLost{Service: "a"}, "session: encode RemoteSessionLost field session: required field missing or zero"},
	}
	for _, c := range cases {
		_, err := Encode(c.m)
		if err == nil || err.Error() != c.want {
			t.Errorf("%#v:\n got %v\nwant %s", c.m, err, c.want)
		}
	}
}

// relaySamples are samples() of the connection-request kinds (relay.go).
func relaySamples() []struct {
	name string
	m    Message
} {
	tok := bytes.Repeat([]byte{0x5a}, ConnectTokenSize)
	return []struct {
		name string
		m    Message
	}{
		{"provide-service-relay", &ProvideService{ID: 17, Service: "example.echo", XML: []byte("<service/>"), Relay: true}},
		{"connect-request", &ConnectRequest{ID: 18, Token: tok, Port: 9600, Host: "connect.example.net", Session: sid, Link: "reliable"}},
		{"connect-request-minimal", &ConnectRequest{ID: 19, Token: tok, Port: 1}},
		{"connect-request-datagram", &ConnectRequest{ID: 20, Token: tok, Port: 9600, Session: sid, Link: "unreliable", Datagram: true}},
		{"connect-attach", &ConnectAttach{ID: 18, Token: tok}},
	}
}

// relayBadSeeds are broken connection-request messages for the corpus.
func relayBadSeeds() map[string][]byte {
	id := wire.AppendUint64Field(nil, 1, 7)
	return map[string][]byte{
		"bad-connect-request-port":     append(append(append([]byte{byte(KindConnectRequest)}, id...), wire.AppendBytesField(nil, 2, make([]byte, 16))...), wire.AppendUint64Field(nil, 3, 70000)...),
		"bad-connect-request-datagram": append(append(append(append([]byte{byte(KindConnectRequest)}, id...), wire.AppendBytesField(nil, 2, make([]byte, 16))...), wire.AppendUint64Field(nil, 3, 9600)...), wire.AppendUint64Field(nil, 7, 2)...),
		"bad-connect-attach-token":     append(append([]byte{byte(KindConnectAttach)}, id...), wire.AppendBytesField(nil, 2, make([]byte, 15))...),
	}
}

// TestRelayMessages round-trips the connection-request messages and lists
// their decode failures with their exact messages.
func TestRelayMessages(t *testing.T) {
	for _, s := range relaySamples() {
		b, err := Encode(s.m)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !reflect.DeepEqual(got, normalize(s.m)) {
			t.Errorf("%s: round trip gives %#v, want %#v", s.name, got, s.m)
		}
	}
	if k := KindConnectRequest; !k.IsRunnerRequest() || k.String() != "ConnectRequest" {
		t.Errorf("ConnectRequest kind %v", k)
	}
	if k := KindConnectAttach; !k.IsRequest() || k.String() != "ConnectAttach" {
		t.Errorf("ConnectAttach kind %v", k)
	}
	msg := func(k Kind, fields ...[]byte) []byte { return append([]byte{byte(k)}, bytes.Join(fields, nil)...) }
	id := wire.AppendUint64Field(nil, 1, 7)
	tok := wire.AppendBytesField(nil, 2, make([]byte, 16))
	cases := []struct {
		name, want string
		in         []byte
		is         error
	}{
		{"request-no-port", "session: decode ConnectRequest field port at offset 22: required field missing or zero", msg(KindConnectRequest, id, tok), ErrMissingField},
		{"request-port-too-large", "session: decode ConnectRequest field port at offset 27: malformed: port 65536", msg(KindConnectRequest, id, tok, wire.AppendUint64Field(nil, 3, 65536)), ErrMalformed},
		{"request-short-token", "session: decode ConnectRequest field token at offset 17: malformed: token of 8 bytes, want 16", msg(KindConnectRequest, id, wire.AppendBytesField(nil, 2, make([]byte, 8)), wire.AppendUint64Field(nil, 3, 1)), ErrMalformed},
		{"request-long-token", "session: decode ConnectRequest field token at offset 4: field too large: 17 bytes, limit 16", msg(KindConnectRequest, id, wire.AppendBytesField(nil, 2, make([]byte, 17))), ErrFieldTooLarge},
		{"attach-no-token", "session: decode ConnectAttach field token at offset 4: required field missing or zero", msg(KindConnectAttach, id), ErrMissingField},
		{"provide-relay-not-bool", "session: decode ProvideService field relay at offset", msg(KindProvideService, id, wire.AppendStringField(nil, 2, "s"), wire.AppendBytesField(nil, 3, []byte("x")), wire.AppendStringField(nil, 5, "yes")), ErrMalformed},
	}
	for _, c := range cases {
		_, err := Decode(c.in)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || !errors.Is(err, c.is) {
			t.Errorf("%s:\n got %v\nwant %s (%v)", c.name, err, c.want, c.is)
		}
	}
}
