package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/bearers"
)

func ep(s string) bearers.Endpoint { return bearers.MustParseEndpoint(s) }

// problemLines returns the "file:line: message" lines of a Parse/Load error,
// failing the test if err is not Problems.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want problems")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is %T, want Problems: %v", err, err)
	}
	if err.Error() != strings.Join(lines(ps), "\n") {
		t.Errorf("Error() = %q, want the problems joined by newlines", err.Error())
	}
	return lines(ps)
}

func lines(ps Problems) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestDefault(t *testing.T) {
	s := Default()
	want := &Server{
		File:                DefaultFile,
		HTTPAddr:            "127.0.0.1:8080",
		Log:                 Log{Level: "info", Format: "text"},
		RegistrationTimeout: 10 * time.Second,
		Plugins:             Plugins{StartTimeout: 10 * time.Second, RestartBackoffMin: 100 * time.Millisecond, RestartBackoffMax: 30 * time.Second},
		Resume:              Resume{Linger: 10 * time.Minute, PingFrequency: 5 * time.Second, PingWindowFactor: 2, MaxRetries: 10},
		Adapters: []Adapter{
			{Name: "tcp", Type: "connect.bearer.tcp", Address: ep("tcp://127.0.0.1:9500"), Attributes: bearers.Attributes{}, Line: 14},
			{Name: "udp", Type: "connect.bearer.udp", Address: ep("udp://127.0.0.1:9500"), Attributes: bearers.Attributes{}, Line: 15},
			{Name: "ssl", Type: "connect.bearer.ssl", Address: ep("ssl://127.0.0.1:9501"), Attributes: bearers.Attributes{}, Line: 16},
		},
		Services:    []Service{{Name: "Demo", Builtin: "demo", Line: 18}, {Name: "Diagnostics", Builtin: "diagnostics", Line: 20}},
		Diagnostics: Diagnostics{Enabled: true, Dashboard: DashboardLoopback},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("Default() =\n%+v\nwant\n%+v", s, want)
	}
	if len(s.Auth.Tokens) != 0 || s.Auth.AllowCertificates {
		t.Errorf("default auth = %+v, want no tokens (the server generates one)", s.Auth)
	}
	// Every call is a fresh copy.
	s.Adapters[0].Attributes["x"] = "y"
	s.Adapters = nil
	if again := Default(); !reflect.DeepEqual(again, want) {
		t.Errorf("Default() changed after a caller modified an earlier result: %+v", again)
	}
	// DefaultXML is the embedded file and a copy of it.
	x := DefaultXML()
	if !bytes.Equal(x, defaultXML) {
		t.Error("DefaultXML() differs from the embedded default.xml")
	}
	x[0] = 'X'
	if bytes.Equal(x, defaultXML) {
		t.Error("DefaultXML() returned the embedded slice itself")
	}
	if _, err := Parse("default.xml", DefaultXML()); err != nil {
		t.Errorf("DefaultXML() does not parse: %v", err)
	}
}

func TestExample(t *testing.T) {
	path := filepath.Join("..", "examples", "xml", "connectserver.xml")
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// lineOf finds the line of the adapter named name, so that editing the
	// example's comments does not break the test.
	lineOf := func(name string) int {
		i := bytes.Index(raw, []byte(`<connectionAdapter name="`+name+`"`))
		if i < 0 {
			t.Fatalf("example has no adapter %q", name)
		}
		return bytes.Count(raw[:i], []byte("\n")) + 1
	}
	if s.File != path || s.HTTPAddr != "127.0.0.1:8080" || s.StateDir != "/var/lib/connect" {
		t.Errorf("File, HTTPAddr, StateDir = %q, %q, %q", s.File, s.HTTPAddr, s.StateDir)
	}
	if s.Log != (Log{Level: "info", Format: "text"}) {
		t.Errorf("Log = %+v", s.Log)
	}
	if want := []string{"s3cret-example-token", "another-token-for-the-ci"}; !reflect.DeepEqual(s.Auth.Tokens, want) || !s.Auth.AllowCertificates {
		t.Errorf("Auth = %+v, want tokens %q and certificates allowed", s.Auth, want)
	}
	if s.RegistrationTimeout != 10*time.Second {
		t.Errorf("RegistrationTimeout = %v", s.RegistrationTimeout)
	}
	if s.Plugins != (Plugins{StartTimeout: 10 * time.Second, RestartBackoffMin: 100 * time.Millisecond, RestartBackoffMax: 30 * time.Second}) {
		t.Errorf("Plugins = %+v", s.Plugins)
	}
	if s.Resume != (Resume{Linger: 10 * time.Minute, PingFrequency: 5 * time.Second, PingWindowFactor: 2, MaxRetries: 10}) {
		t.Errorf("Resume = %+v", s.Resume)
	}
	wantAdapters := []Adapter{
		{Name: "tcp", Type: "connect.bearer.tcp", Address: ep("tcp://127.0.0.1:9500"), Attributes: bearers.Attributes{"nodelay": "true"}, Line: lineOf("tcp")},
		{Name: "udp", Type: "connect.bearer.udp", Address: ep("udp://127.0.0.1:9500"), Attributes: bearers.Attributes{}, Line: lineOf("udp")},
		{Name: "ssl", Type: "connect.bearer.ssl", Address: ep("ssl://127.0.0.1:9501"), Attributes: bearers.Attributes{}, Line: lineOf("ssl")},
		{Name: "ws", Type: "example.bearer.ws", Plugin: filepath.Join(dir, "..", "..", "bin", "connect-bearer-ws"),
			Address: ep("ws://127.0.0.1:9600/connect"), Attributes: bearers.Attributes{}, Line: lineOf("ws")},
	}
	if !reflect.DeepEqual(s.Adapters, wantAdapters) {
		t.Errorf("Adapters =\n%+v\nwant\n%+v", s.Adapters, wantAdapters)
	}
	if r := s.RemoteServices; r == nil || r.Default != "deny" || len(r.Rules) != 1 || r.Rules[0].Token != "ops" || !r.Rules[0].Allow {
		t.Errorf("RemoteServices = %+v", r)
	}
	if s.Diagnostics != (Diagnostics{Enabled: true, Dashboard: DashboardLoopback}) {
		t.Errorf("Diagnostics = %+v", s.Diagnostics)
	}
}

// minimal is the smallest valid document: one adapter.
const minimal = `<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
</connectserver>
`

func TestMinimalDefaults(t *testing.T) {
	s, err := Parse("c.xml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPAddr != DefaultHTTPAddr || s.StateDir != "" || s.Log.Level != "info" || s.Log.Format != "text" ||
		s.RegistrationTimeout != DefaultRegistrationTimeout || s.Plugins.StartTimeout != DefaultPluginStartTimeout ||
		s.Plugins.RestartBackoffMin != DefaultRestartBackoffMin || s.Plugins.RestartBackoffMax != DefaultRestartBackoffMax ||
		s.Resume != (Resume{Linger: DefaultLinger, PingFrequency: DefaultPingFrequency, PingWindowFactor: DefaultPingWindowFactor, MaxRetries: DefaultMaxRetries}) {
		t.Errorf("defaults not applied: %+v", s)
	}
	if w := s.Resume.PingWindow(); w != 10*time.Second {
		t.Errorf("PingWindow = %v", w)
	}
	if s.Diagnostics != (Diagnostics{Enabled: true, Dashboard: DashboardLoopback}) {
		t.Errorf("diagnostics default = %+v, want on, dashboard on loopback", s.Diagnostics)
	}
	off, err := Parse("c.xml", []byte(strings.Replace(minimal, "</connectserver>", `<diagnostics enabled="false" dashboard="off"/></connectserver>`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if off.Diagnostics != (Diagnostics{Enabled: false, Dashboard: DashboardOff}) {
		t.Errorf("diagnostics = %+v, want off", off.Diagnostics)
	}
	if len(s.Adapters) != 1 || s.Adapters[0].Name != "tcp" || s.Adapters[0].Line != 2 || s.Adapters[0].Attributes == nil {
		t.Errorf("adapter = %+v, want name defaulted to tcp, line 2, non-nil attributes", s.Adapters)
	}
}

func TestValidVariants(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		check func(t *testing.T, s *Server)
	}{
		{"http off", `<connectserver><http address="off"/>` + adapterTCP + `</connectserver>`,
			func(t *testing.T, s *Server) {
				if s.HTTPAddr != "" {
					t.Errorf("HTTPAddr = %q, want empty", s.HTTPAddr)
				}
			}},
		{"http ipv6 port 0", `<connectserver><http address="[::1]:0"/>` + adapterTCP + `</connectserver>`,
			func(t *testing.T, s *Server) {
				if s.HTTPAddr != "[::1]:0" {
					t.Errorf("HTTPAddr = %q", s.HTTPAddr)
				}
			}},
		{"stock type run from a plugin", `<connectserver>
<connectionAdapter type="connect.bearer.tcp" plugin="/opt/tcp" address="tcp://127.0.0.1:1"/>
<connectionAdapter name="tcp2" type="connect.bearer.tcp" plugin="/opt/tcp" address="tcp://127.0.0.1:2"/>
</connectserver>`,
			func(t *testing.T, s *Server) {
				if s.Adapters[0].Plugin != "/opt/tcp" || !s.Adapters[0].IsStock() {
					t.Errorf("adapter = %+v", s.Adapters[0])
				}
			}},
		{"port 0 twice is no conflict", `<connectserver>
<connectionAdapter name="a" type="connect.bearer.tcp" address="tcp://127.0.0.1:0"/>
<connectionAdapter name="b" type="connect.bearer.tcp" address="tcp://127.0.0.1:0"/>
</connectserver>`,
			func(t *testing.T, s *Server) {
				if len(s.Adapters) != 2 {
					t.Errorf("adapters = %+v", s.Adapters)
				}
			}},
		{"same port different scheme or host", `<connectserver>
<connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
<connectionAdapter type="connect.bearer.udp" address="udp://127.0.0.1:9500"/>
<connectionAdapter name="tcp6" type="connect.bearer.tcp" address="tcp://[::1]:9500"/>
</connectserver>`,
			func(t *testing.T, s *Server) {
				if len(s.Adapters) != 3 {
					t.Errorf("adapters = %+v", s.Adapters)
				}
			}},
		{"namespaces, comments, BOM, declaration", "\uFEFF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- c -->\n" +
			`<connectserver xmlns="urn:x" xmlns:x="urn:y"><!-- c -->` + adapterTCP + `</connectserver>`,
			func(t *testing.T, s *Server) {
				if s.Adapters[0].Line != 3 {
					t.Errorf("line = %d, want 3", s.Adapters[0].Line)
				}
			}},
		{"certificates false, log json debug", `<connectserver><log level="debug" format="json"/>
<authentication><certificates allow="false"/><token value="t"/></authentication>` + adapterTCP + `</connectserver>`,
			func(t *testing.T, s *Server) {
				if s.Auth.AllowCertificates || s.Log != (Log{"debug", "json"}) || !reflect.DeepEqual(s.Auth.Tokens, []string{"t"}) {
					t.Errorf("server = %+v", s)
				}
			}},
		{"bearer attribute with empty value", `<connectserver><connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:1">
<attribute name="a" value=""/></connectionAdapter></connectserver>`,
			func(t *testing.T, s *Server) {
				if v, ok := s.Adapters[0].Attributes["a"]; !ok || v != "" {
					t.Errorf("attributes = %v", s.Adapters[0].Attributes)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("c.xml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

const adapterTCP = `<connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>`

// TestBadInputs checks the exact text of each problem. Documents are
// written with one element per line so that line numbers are easy to read.
func TestBadInputs(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"wrong root", `<server/>`, []string{`c.xml:1: root element is <server>, want <connectserver>`}},
		{"empty file", ``, []string{`c.xml:1: no <connectserver> element: the file has no elements`}},
		{"only a comment", "<!-- nothing -->\n", []string{`c.xml:1: no <connectserver> element: the file has no elements`}},
		{"no adapter", "\n<connectserver>\n</connectserver>", []string{
			`c.xml:2: connectserver has no <connectionAdapter>; declare at least one bearer to listen on`}},
		{"second root", "<connectserver>\n" + adapterTCP + "\n</connectserver>\n<connectserver/>", []string{
			`c.xml:4: second root element <connectserver>; a configuration has one <connectserver> element`}},
		{"text outside root", "<connectserver>\n" + adapterTCP + "\n</connectserver>\n\n  trailing words", []string{
			`c.xml:5: text "trailing words" outside the <connectserver> element`}},
		{"text inside", "<connectserver>\n<authentication>\n<token>s3cret</token>\n</authentication>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: authentication/token[1] has text "s3cret"; settings are given as attributes`,
			`c.xml:3: authentication/token[1]: attribute "value" or "file" is required`}},
		{"unknown attribute", "<connectserver>\n<connectionAdapter name=\"x\" type=\"connect.bearer.tcp\"\n   adress=\"tcp://127.0.0.1:9500\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "address" is required`,
			`c.xml:3: connectionAdapter[1] attribute "adress" unknown (known: name, type, plugin, address)`}},
		{"unknown element", "<connectserver>\n<htp address=\"off\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: connectserver element <htp> unknown (known: http, stateDir, log, authentication, registration, plugins, resume, connectionAdapter, service, configuration, policy, remoteServices, diagnostics, tunnel)`}},
		{"child of a leaf", "<connectserver>\n<http address=\"off\">\n<port/>\n</http>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: http element <port> unknown (http has no child elements)`}},
		{"prefixed element and attribute", "<connectserver xmlns:x=\"urn:x\">\n<x:http address=\"off\"/>\n<log x:level=\"info\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: connectserver element <x:http> unknown (known: http, stateDir, log, authentication, registration, plugins, resume, connectionAdapter, service, configuration, policy, remoteServices, diagnostics, tunnel)`,
			`c.xml:3: log attribute "x:level" unknown (known: level, format)`}},
		{"attribute on authentication", "<connectserver>\n<authentication mode=\"x\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: authentication attribute "mode" unknown (authentication has no attributes)`}},
		{"duplicate XML attribute", "<connectserver>\n<log level=\"info\"\n level=\"debug\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: log attribute "level" given twice (first at line 2)`}},
		{"resume values", "<connectserver>\n<resume linger=\"0s\" pingFrequency=\"5ms\"\n pingWindowFactor=\"1.5\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: resume attribute "linger": must be greater than 0, got "0s"`,
			`c.xml:2: resume attribute "pingFrequency": "5ms" is not an integer from 10 to 3600000`,
			`c.xml:3: resume attribute "pingWindowFactor": "1.5" is not an integer from 2 to 100`}},
		{"resume unknown attribute", "<connectserver>\n<resume pingInterval=\"5000\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: resume attribute "pingInterval" unknown (known: linger, pingFrequency, pingWindowFactor, secondaryBindPort, secondaryConnectPort, maxRetries)`}},
		{"singleton twice", "<connectserver>\n<log/>\n<log/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: log given twice (first at line 2); only one is allowed`}},
		{"diagnostics", "<connectserver>\n<diagnostics enabled=\"no\"\n dashboard=\"public\" x=\"1\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: diagnostics attribute "enabled": "no" is not true or false`,
			`c.xml:3: diagnostics attribute "x" unknown (known: enabled, dashboard)`,
			`c.xml:3: diagnostics attribute "dashboard": "public" unknown (known: loopback, any, off)`}},
		{"http address", "<connectserver>\n<http address=\"localhost\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: http attribute "address": "localhost" is not host:port or off`}},
		{"http port", "<connectserver>\n<http address=\"127.0.0.1:http\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: http attribute "address": port "http" is not a number from 0 to 65535`}},
		{"http empty host", "<connectserver>\n<http address=\":8080\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: http attribute "address": empty host in ":8080"; name an address such as 127.0.0.1 (0.0.0.0 listens on all interfaces)`}},
		{"http missing address", "<connectserver>\n<http/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: http attribute "address" is required`}},
		{"stateDir empty", "<connectserver>\n<stateDir path=\"\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: stateDir attribute "path" is empty`}},
		{"log enums", "<connectserver>\n<log level=\"verbose\"\n format=\"xml\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: log attribute "level": "verbose" unknown (known: debug, info, warn, error)`,
			`c.xml:3: log attribute "format": "xml" unknown (known: text, json)`}},
		{"durations", "<connectserver>\n<registration timeout=\"10\"/>\n<plugins startTimeout=\"-1s\"\n restartBackoffMin=\"0\"\n restartBackoffMax=\"soon\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: registration attribute "timeout": "10" is not a duration (like 10s, 500ms or 1m30s)`,
			`c.xml:3: plugins attribute "startTimeout": must be greater than 0, got "-1s"`,
			`c.xml:4: plugins attribute "restartBackoffMin": must be greater than 0, got "0"`,
			`c.xml:5: plugins attribute "restartBackoffMax": "soon" is not a duration (like 10s, 500ms or 1m30s)`}},
		{"backoff order", "<connectserver>\n<plugins restartBackoffMin=\"1m\" restartBackoffMax=\"1s\"/>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:2: plugins: restartBackoffMin (1m0s) is greater than restartBackoffMax (1s)`}},
		{"tokens", "<connectserver>\n<authentication>\n<token value=\"\"/>\n<token/>\n<token value=\"a\" file=\"b\"/>\n<token value=\"two words\"/>\n<token file=\"\"/>\n<token file=\"no-such.token\"/>\n</authentication>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: authentication/token[1] attribute "value" is empty`,
			`c.xml:4: authentication/token[2]: attribute "value" or "file" is required`,
			`c.xml:5: authentication/token[3]: give value or file, not both`,
			`c.xml:6: authentication/token[4] attribute "value": a token cannot contain white space or control characters`,
			`c.xml:7: authentication/token[5] attribute "file" is empty`,
			`c.xml:8: authentication/token[6] attribute "file": ` + mustAbs(t, "no-such.token") + `: no such file or directory`}},
		{"certificates", "<connectserver>\n<authentication>\n<certificates allow=\"yes\"/>\n<certificates/>\n</authentication>\n" + adapterTCP + "\n</connectserver>", []string{
			`c.xml:3: authentication/certificates attribute "allow": "yes" is not true or false`,
			`c.xml:4: authentication/certificates given twice (first at line 3); only one is allowed`}},
		{"adapter required", "<connectserver>\n<connectionAdapter/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "type" is required`,
			`c.xml:2: connectionAdapter[1] attribute "address" is required`}},
		{"bad type", "<connectserver>\n<connectionAdapter type=\"TCP\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "type": bearer type "TCP" must have at least two dot-separated parts, like connect.bearer.tcp`}},
		{"bad address", "<connectserver>\n<connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "address": bad endpoint "tcp://127.0.0.1": address 127.0.0.1: missing port in address (a port is required)`}},
		{"scheme mismatch", "<connectserver>\n<connectionAdapter type=\"connect.bearer.udp\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "address": scheme "tcp" does not match type connect.bearer.udp, which serves udp://`}},
		{"stock path", "<connectserver>\n<connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1/x\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "address": tcp endpoints take no path, got "/x"`}},
		{"plugin required", "<connectserver>\n<connectionAdapter type=\"example.bearer.ws\" address=\"ws://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1]: type example.bearer.ws is not a stock bearer (stock: connect.bearer.ssl, connect.bearer.tcp, connect.bearer.udp); name its executable with plugin="..."`}},
		{"plugin empty", "<connectserver>\n<connectionAdapter type=\"connect.bearer.tcp\" plugin=\"\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "plugin" is empty; leave it out for a stock bearer`}},
		{"plugin on a stock scheme", "<connectserver>\n<connectionAdapter type=\"my.tcp\" plugin=\"/p\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "address": scheme "tcp" belongs to the stock type connect.bearer.tcp; a plugin bearer serves a scheme of its own`}},
		{"bad name", "<connectserver>\n<connectionAdapter name=\"a b\" type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "name": name "a b": character ' ' not allowed (use letters, digits, '.', '_' and '-')`}},
		{"long name", "<connectserver>\n<connectionAdapter name=\"" + strings.Repeat("n", 65) + "\" type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\"/>\n</connectserver>", []string{
			`c.xml:2: connectionAdapter[1] attribute "name": name longer than 64 characters`}},
		{"long text is shortened", "<connectserver>\n" + adapterTCP + "\n<log>\n" + strings.Repeat("ab", 30) + "</log>\n</connectserver>", []string{
			`c.xml:3: log has text "` + strings.Repeat("ab", 20) + `..."; settings are given as attributes`}},
		{"duplicate names", "<connectserver>\n<connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\"/>\n<connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:2\"/>\n<connectionAdapter name=\"tcp\" type=\"connect.bearer.udp\" address=\"udp://127.0.0.1:2\"/>\n</connectserver>", []string{
			`c.xml:3: connectionAdapter[2]: name "tcp" (the default for its type) already used by connectionAdapter[1] at line 2; give one of them another name="..."`,
			`c.xml:4: connectionAdapter[3]: name "tcp" already used by connectionAdapter[1] at line 2; give one of them another name="..."`}},
		{"duplicate addresses", "<connectserver>\n<connectionAdapter name=\"a\" type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\"/>\n<connectionAdapter name=\"b\" type=\"connect.bearer.tcp\" address=\"tcp://127.000.0.1:1\"/>\n<connectionAdapter name=\"c\" type=\"connect.bearer.tcp\" address=\"tcp://[::1]:1\"/>\n<connectionAdapter name=\"d\" type=\"connect.bearer.tcp\" address=\"tcp://[0:0::1]:1\"/>\n<connectionAdapter name=\"e\" type=\"connect.bearer.tcp\" address=\"tcp://LOCALHOST:1\"/>\n<connectionAdapter name=\"f\" type=\"connect.bearer.tcp\" address=\"tcp://localhost:1\"/>\n</connectserver>", []string{
			`c.xml:5: connectionAdapter[4] attribute "address": tcp://[0:0::1]:1 already used by connectionAdapter[3] at line 4`,
			`c.xml:7: connectionAdapter[6] attribute "address": tcp://localhost:1 already used by connectionAdapter[5] at line 6`}},
		{"type runs two plugins, serves two schemes", "<connectserver>\n<connectionAdapter name=\"a\" type=\"x.ws\" plugin=\"/a\" address=\"ws://127.0.0.1:1\"/>\n<connectionAdapter name=\"b\" type=\"x.ws\" plugin=\"/b\" address=\"wss://127.0.0.1:2\"/>\n<connectionAdapter name=\"c\" type=\"y.ws\" plugin=\"/c\" address=\"ws://127.0.0.1:3\"/>\n</connectserver>", []string{
			`c.xml:3: connectionAdapter[2]: type x.ws runs /a in connectionAdapter[1] at line 2, not /b; one type, one executable`,
			`c.xml:3: connectionAdapter[2] attribute "address": type x.ws serves ws:// in connectionAdapter[1] at line 2; a bearer type serves one scheme`,
			`c.xml:4: connectionAdapter[3] attribute "address": scheme "ws" is already served by type x.ws in connectionAdapter[1] at line 2`}},
		{"stock type built in and from a plugin", "<connectserver>\n<connectionAdapter name=\"a\" type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\"/>\n<connectionAdapter name=\"b\" type=\"connect.bearer.tcp\" plugin=\"/b\" address=\"tcp://127.0.0.1:2\"/>\n</connectserver>", []string{
			`c.xml:3: connectionAdapter[2]: type connect.bearer.tcp runs the built-in bearer in connectionAdapter[1] at line 2, not /b; one type, one executable`}},
		{"bearer attributes", "<connectserver>\n<connectionAdapter type=\"connect.bearer.tcp\" address=\"tcp://127.0.0.1:1\">\n<attribute name=\"a\" value=\"1\"/>\n<attribute name=\"a\" value=\"2\"/>\n<attribute name=\"\" value=\"2\"/>\n<attribute name=\"b\"/>\n<attribute name=\"c\" value=\"1\" typ=\"int\"/>\n<attr name=\"d\" value=\"1\"/>\n</connectionAdapter>\n</connectserver>", []string{
			`c.xml:4: connectionAdapter[1]/attribute[2]: bearer attribute "a" already set at line 3`,
			`c.xml:5: connectionAdapter[1]/attribute[3] attribute "name" is empty`,
			`c.xml:6: connectionAdapter[1]/attribute[4] attribute "value" is required`,
			`c.xml:7: connectionAdapter[1]/attribute[5] attribute "typ" unknown (known: name, value)`,
			`c.xml:8: connectionAdapter[1] element <attr> unknown (known: attribute)`}},
		{"non-UTF-8 encoding", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<connectserver/>", []string{
			`c.xml:1: opening charset "ISO-8859-1": not supported; save the file as UTF-8 and declare encoding="UTF-8"`}},
		{"too deep", "<connectserver>\n" + strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40) + "</connectserver>", []string{
			`c.xml:2: elements nested more than 32 deep`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("c.xml", []byte(tc.doc))
			if s != nil {
				t.Errorf("Parse returned a Server together with problems")
			}
			got := problemLines(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAllProblemsReported checks that one document with many mistakes gets
// every one of them, in line order, and nothing else.
func TestAllProblemsReported(t *testing.T) {
	doc := `<?xml version="1.0"?>
<connectserver>
  <http address="127.0.0.1"/>
  <log level="loud"/>
  <registration timeout="forever"/>
  <connectionAdapter name="tcp" type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <connectionAdapter name="tcp" type="connect.bearer.udp" address="tcp://127.0.0.1:9500"/>
  <connectionAdapter name="ws" type="example.bearer.ws" adress="ws://127.0.0.1:9600"/>
  <bogus/>
</connectserver>
`
	want := []string{
		`connectserver.xml:3: http attribute "address": "127.0.0.1" is not host:port or off`,
		`connectserver.xml:4: log attribute "level": "loud" unknown (known: debug, info, warn, error)`,
		`connectserver.xml:5: registration attribute "timeout": "forever" is not a duration (like 10s, 500ms or 1m30s)`,
		`connectserver.xml:7: connectionAdapter[2] attribute "address": scheme "tcp" does not match type connect.bearer.udp, which serves udp://`,
		`connectserver.xml:7: connectionAdapter[2]: name "tcp" already used by connectionAdapter[1] at line 6; give one of them another name="..."`,
		`connectserver.xml:7: connectionAdapter[2] attribute "address": tcp://127.0.0.1:9500 already used by connectionAdapter[1] at line 6`,
		`connectserver.xml:8: connectionAdapter[3] attribute "adress" unknown (known: name, type, plugin, address)`,
		`connectserver.xml:8: connectionAdapter[3] attribute "address" is required`,
		`connectserver.xml:8: connectionAdapter[3]: type example.bearer.ws is not a stock bearer (stock: connect.bearer.ssl, connect.bearer.tcp, connect.bearer.udp); name its executable with plugin="..."`,
		`connectserver.xml:9: connectserver element <bogus> unknown (known: http, stateDir, log, authentication, registration, plugins, resume, connectionAdapter, service, configuration, policy, remoteServices, diagnostics, tunnel)`,
	}
	_, err := Parse("connectserver.xml", []byte(doc))
	got := problemLines(t, err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(want, "\n") {
		t.Errorf("Error() = %q", err.Error())
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"mismatched end tag", "<connectserver>\n  <http address=\"off\">\n\n</connectserver>", "c.xml:4: XML syntax error: element <http> closed by </connectserver>"},
		{"unclosed root", "<connectserver>\n<http address=\"off\"/>\n", "c.xml:3: XML syntax error: unexpected EOF"},
		{"unquoted attribute", "<connectserver>\n\n<http address=off/>\n</connectserver>", "c.xml:3: XML syntax error: unquoted or missing attribute value in element"},
		{"bad entity", "<connectserver>\n<token value=\"&nope;\"/>\n</connectserver>", "c.xml:2: XML syntax error: invalid character entity &nope;"},
		{"stray end tag", "<connectserver/>\n</connectserver>", "c.xml:2: XML syntax error: unexpected end element </connectserver>"},
		{"invalid UTF-8", "<connectserver>\n\n<http address=\"\xff\"/>\n</connectserver>", "c.xml:3: XML syntax error: invalid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.xml", []byte(tc.doc))
			got := problemLines(t, err)
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("problems = %q, want [%q]", got, tc.want)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	_, err := Parse("c.xml", bytes.Repeat([]byte(" "), MaxFileSize+1))
	got := problemLines(t, err)
	if want := "c.xml:1: file is larger than 1048576 bytes; this is not a server configuration"; len(got) != 1 || got[0] != want {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.xml")
	_, err := Load(path)
	got := problemLines(t, err)
	if want := path + ": cannot read configuration: no such file or directory"; len(got) != 1 || got[0] != want {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

// TestRelativePaths checks that plugin, token file and state directory paths
// are resolved against the configuration file's directory, not the working
// directory, and that token files are trimmed.
func TestRelativePaths(t *testing.T) {
	root := t.TempDir()
	confDir := filepath.Join(root, "etc", "connect")
	writeFile(t, filepath.Join(confDir, "tokens", "ops.token"), "  ops-token-1\n\n")
	writeFile(t, filepath.Join(root, "shared.token"), "shared\n")
	writeFile(t, filepath.Join(confDir, "tokens", "empty.token"), " \n")
	writeFile(t, filepath.Join(confDir, "tokens", "two.token"), "one\ntwo\n")
	writeFile(t, filepath.Join(confDir, "connectserver.xml"), `<connectserver>
  <stateDir path="../../state"/>
  <authentication>
    <token file="tokens/ops.token"/>
    <token file="../../shared.token"/>
    <token file="`+filepath.Join(root, "shared.token")+`"/>
  </authentication>
  <connectionAdapter name="ws" type="example.bearer.ws" plugin="bin/ws" address="ws://127.0.0.1:9600"/>
  <connectionAdapter type="connect.bearer.tcp" plugin="/usr/libexec/tcp" address="tcp://127.0.0.1:9500"/>
</connectserver>
`)
	s, err := Load(filepath.Join(confDir, "connectserver.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "state"); s.StateDir != want {
		t.Errorf("StateDir = %q, want %q", s.StateDir, want)
	}
	if want := []string{"ops-token-1", "shared", "shared"}; !reflect.DeepEqual(s.Auth.Tokens, want) {
		t.Errorf("Tokens = %q, want %q", s.Auth.Tokens, want)
	}
	if want := filepath.Join(confDir, "bin", "ws"); s.Adapters[0].Plugin != want {
		t.Errorf("plugin = %q, want %q", s.Adapters[0].Plugin, want)
	}
	if s.Adapters[1].Plugin != "/usr/libexec/tcp" {
		t.Errorf("absolute plugin = %q", s.Adapters[1].Plugin)
	}

	// Bad token files are problems at their lines.
	writeFile(t, filepath.Join(confDir, "bad.xml"), `<connectserver>
  <authentication>
    <token file="tokens/empty.token"/>
    <token file="tokens/two.token"/>
    <token file="tokens"/>
    <token file="tokens/missing.token"/>
  </authentication>
  `+adapterTCP+`
</connectserver>
`)
	bad := filepath.Join(confDir, "bad.xml")
	_, err = Load(bad)
	got := problemLines(t, err)
	tok := filepath.Join(confDir, "tokens")
	want := []string{
		bad + `:3: authentication/token[1] attribute "file": ` + tok + `/empty.token: file is empty; it must hold one token`,
		bad + `:4: authentication/token[2] attribute "file": ` + tok + `/two.token: holds more than one word; it must hold one token without white space or control characters`,
		bad + `:5: authentication/token[3] attribute "file": ` + tok + `: not a regular file`,
		bad + `:6: authentication/token[4] attribute "file": ` + tok + `/missing.token: no such file or directory`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPlugins(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "exe"), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(dir, "exe"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "plain"), "data")
	writeFile(t, filepath.Join(dir, "c.xml"), `<connectserver>
<connectionAdapter name="a" type="x.a" plugin="exe" address="a://127.0.0.1:1"/>
<connectionAdapter name="b" type="x.b" plugin="plain" address="b://127.0.0.1:1"/>
<connectionAdapter name="c" type="x.c" plugin="missing" address="c://127.0.0.1:1"/>
<connectionAdapter name="d" type="x.d" plugin="." address="d://127.0.0.1:1"/>
<connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:1"/>
</connectserver>`)
	file := filepath.Join(dir, "c.xml")
	s, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		file + `:3: connectionAdapter "b": plugin ` + dir + `/plain: not executable`,
		file + `:4: connectionAdapter "c": plugin ` + dir + `/missing: no such file or directory`,
		file + `:5: connectionAdapter "d": plugin ` + dir + `: not a regular file`,
	}
	if got := lines(s.CheckPlugins()); !reflect.DeepEqual(got, want) {
		t.Errorf("CheckPlugins:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ps := Default().CheckPlugins(); len(ps) != 0 {
		t.Errorf("default CheckPlugins = %v, want none", ps)
	}
}

func TestProblemString(t *testing.T) {
	if got := (Problem{File: "a.xml", Line: 3, Msg: "m"}).String(); got != "a.xml:3: m" {
		t.Errorf("String() = %q", got)
	}
	if got := (Problem{File: "a.xml", Msg: "m"}).String(); got != "a.xml: m" {
		t.Errorf("String() without line = %q", got)
	}
	ps := Problems{{File: "a", Line: 1, Msg: "x"}, {File: "a", Line: 2, Msg: "y"}}
	if got := ps.Error(); got != "a:1: x\na:2: y" {
		t.Errorf("Error() = %q", got)
	}
}

func TestServices(t *testing.T) {
	s, err := Parse("/etc/connect/c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <service name="Demo" builtin="demo"/>
  <service name="media.Player" plugin="bin/player" file="services/player.xml"/>
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{
		{Name: "Demo", Builtin: "demo", Line: 3},
		{Name: "media.Player", Plugin: "/etc/connect/bin/player", File: "/etc/connect/services/player.xml", Line: 4},
	}
	if !reflect.DeepEqual(s.Services, want) {
		t.Fatalf("Services = %+v, want %+v", s.Services, want)
	}
	_, err = Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <service name="Demo" builtin="demo" plugin="x"/>
  <service name="9lives" builtin="demo"/>
  <service name="Echo" plugin="e"/>
  <service name="Echo" plugin="e2"/>
  <service builtin="demo"/>
</connectserver>`))
	got := err.Error()
	for _, w := range []string{
		`c.xml:3: service[1]: say either builtin="NAME" (a service inside connectserver) or plugin="PATH" (its executable)`,
		`c.xml:4: service[2] attribute "name": service name "9lives": want dot-separated words`,
		`c.xml:6: service[4]: service "Echo" is already declared at line 5`,
		`c.xml:7: service[5]`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("problems lack %q:\n%s", w, got)
		}
	}
}

func TestConfigurationGroups(t *testing.T) {
	s, err := Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <configuration>
    <group name="database">
      <value name="host" type="string" value="db.local"/>
      <value name="port" type="int" value="5432"/>
    </group>
    <group name="ui">
      <value name="dark" type="bool" value="true"/>
    </group>
  </configuration>
</connectserver>`))
	if err != nil {
		t.Fatal(err)
	}
	want := []ConfigGroup{
		{Name: "database", Line: 4, Values: []ConfigValue{{Name: "host", Type: "string", Value: "db.local", Line: 5}, {Name: "port", Type: "int", Value: "5432", Line: 6}}},
		{Name: "ui", Line: 8, Values: []ConfigValue{{Name: "dark", Type: "bool", Value: "true", Line: 9}}},
	}
	if !reflect.DeepEqual(s.Configuration, want) {
		t.Fatalf("Configuration = %+v, want %+v", s.Configuration, want)
	}
	_, err = Parse("c.xml", []byte(`<connectserver>
  <connectionAdapter type="connect.bearer.tcp" address="tcp://127.0.0.1:9500"/>
  <configuration>
    <group name="db">
      <value name="port" type="int" value="many"/>
      <value name="ratio" type="decimal" value="1"/>
      <value name="9x" type="string" value=""/>
    </group>
    <group name="db"/>
  </configuration>
</connectserver>`))
	got := err.Error()
	for _, w := range []string{
		`c.xml:5: configuration/group[1]/value[1]: value "many" is not an int`,
		`c.xml:6: configuration/group[1]/value[2]: type "decimal" unknown (known: int, float, bool, string)`,
		`c.xml:7: `,
		`c.xml:9: `,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("problems lack %q:\n%s", w, got)
		}
	}
}
