package bearers_test

import (
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

func TestCapabilitiesString(t *testing.T) {
	for _, tc := range []struct {
		c    bearers.Capabilities
		want string
	}{
		{0, "none"},
		{bearers.Reliable, "reliable"},
		{bearers.Reliable | bearers.Ordered, "reliable|ordered"},
		{bearers.Reliable | bearers.Ordered | bearers.Secure, "reliable|ordered|secure"},
		{bearers.Datagram, "datagram"},
		{bearers.Datagram | bearers.Secure, "secure|datagram"},
		{bearers.Reliable | bearers.Ordered | bearers.Secure | bearers.Datagram, "reliable|ordered|secure|datagram"},
		{1 << 4, "0x10"},
		{bearers.Reliable | 1<<8 | 1<<31, "reliable|0x80000100"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("Capabilities(%#x).String() = %q, want %q", uint32(tc.c), got, tc.want)
		}
	}
}

func TestCapabilitiesHas(t *testing.T) {
	c := bearers.Reliable | bearers.Ordered
	for _, tc := range []struct {
		want bearers.Capabilities
		has  bool
	}{
		{0, true}, // the empty set is always included
		{bearers.Reliable, true},
		{bearers.Ordered, true},
		{bearers.Reliable | bearers.Ordered, true},
		{bearers.Secure, false},
		{bearers.Reliable | bearers.Secure, false}, // every flag must be set, not any
		{bearers.Datagram, false},
	} {
		if got := c.Has(tc.want); got != tc.has {
			t.Errorf("(%s).Has(%s) = %v, want %v", c, tc.want, got, tc.has)
		}
	}
}

func TestCapabilitiesValidate(t *testing.T) {
	for _, c := range []bearers.Capabilities{
		bearers.Reliable | bearers.Ordered,                  // tcp
		bearers.Reliable | bearers.Ordered | bearers.Secure, // ssl
		bearers.Datagram,                                      // udp
		bearers.Datagram | bearers.Secure,                     // dtls
		bearers.Datagram | bearers.Reliable | bearers.Ordered, // seqpacket
		bearers.Datagram | bearers.Ordered,                    // a datagram bearer may order without reliability
		bearers.Reliable | bearers.Ordered | bearers.Secure | bearers.Datagram,
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("(%s).Validate() = %v, want nil", c, err)
		}
	}
	for _, tc := range []struct {
		c    bearers.Capabilities
		want []string
	}{
		{0, []string{"stream bearer must be reliable and ordered", "none"}},
		{bearers.Reliable, []string{"stream bearer must be reliable and ordered", "got reliable"}},
		{bearers.Ordered, []string{"stream bearer must be reliable and ordered", "got ordered"}},
		{bearers.Secure, []string{"stream bearer must be reliable and ordered"}},
		{bearers.Reliable | bearers.Secure, []string{"stream bearer must be reliable and ordered", "reliable|secure"}},
		{1 << 4, []string{"unknown capability bits", "0x10"}},
		{bearers.Reliable | bearers.Ordered | 1<<9, []string{"unknown capability bits", "reliable|ordered|0x200"}},
		{bearers.Datagram | 1<<31, []string{"unknown capability bits"}},
	} {
		err := tc.c.Validate()
		if err == nil {
			t.Errorf("Capabilities(%#x).Validate() = nil, want an error", uint32(tc.c))
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Capabilities(%#x).Validate() = %q, does not say %q", uint32(tc.c), err, w)
			}
		}
	}
}

func TestValidateType(t *testing.T) {
	for _, s := range []string{"connect.bearer.tcp", "a.b", "x-1.y_2", "com.example.bearer.ws2"} {
		if err := bearers.ValidateType(s); err != nil {
			t.Errorf("ValidateType(%q) = %v, want nil", s, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty bearer type"},
		{"tcp", "at least two dot-separated parts"},
		{"a..b", "empty part"},
		{".a", "empty part"},
		{"a.", "empty part"},
		{"Connect.bearer", `character 'C' not allowed`},
		{"a.b c", `character ' ' not allowed`},
		{"a.bé", `character 'é' not allowed`},
		{"a.b/c", `character '/' not allowed`},
	} {
		err := bearers.ValidateType(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateType(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
		if err != nil && tc.in != "" && !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ValidateType(%q) = %v, does not name the type", tc.in, err)
		}
	}
}

func TestValidateScheme(t *testing.T) {
	for _, s := range []string{"tcp", "ws", "coap+tcp", "a-b.c", "x1", "z"} {
		if err := bearers.ValidateScheme(s); err != nil {
			t.Errorf("ValidateScheme(%q) = %v, want nil", s, err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty scheme"},
		{"1tcp", `character '1' not allowed`},
		{"+a", `character '+' not allowed`},
		{".a", `character '.' not allowed`},
		{"TCP", `character 'T' not allowed`}, // lower case only
		{"tCp", `character 'C' not allowed`},
		{"tc p", `character ' ' not allowed`},
		{"t_p", `character '_' not allowed`},
		{"tcp:", `character ':' not allowed`},
	} {
		err := bearers.ValidateScheme(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateScheme(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

func TestInfoValidate(t *testing.T) {
	good := bearers.Info{Type: "connect.bearer.tcp", Scheme: "tcp", Capabilities: bearers.Reliable | bearers.Ordered}
	if err := good.Validate(); err != nil {
		t.Fatalf("%+v.Validate() = %v", good, err)
	}
	for _, tc := range []struct {
		change func(*bearers.Info)
		want   string
	}{
		{func(i *bearers.Info) { i.Type = "" }, "empty bearer type"},
		{func(i *bearers.Info) { i.Type = "tcp" }, "at least two"},
		{func(i *bearers.Info) { i.Scheme = "" }, "empty scheme"},
		{func(i *bearers.Info) { i.Scheme = "TCP" }, "scheme \"TCP\""},
		{func(i *bearers.Info) { i.Capabilities = bearers.Reliable }, "reliable and ordered"},
		{func(i *bearers.Info) { i.Capabilities |= 1 << 12 }, "unknown capability bits"},
	} {
		info := good
		tc.change(&info)
		err := info.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v.Validate() = %v, want an error saying %q", info, err, tc.want)
		}
	}
}

func TestAttributesClone(t *testing.T) {
	a := bearers.Attributes{"nodelay": "true", "keepalive": "1s"}
	c := a.Clone()
	c["nodelay"] = "false"
	delete(c, "keepalive")
	c["new"] = "x"
	if len(a) != 2 || a["nodelay"] != "true" || a["keepalive"] != "1s" {
		t.Errorf("changing the clone changed the original: %v", a)
	}
	var nilAttrs bearers.Attributes
	if c := nilAttrs.Clone(); c == nil || len(c) != 0 {
		t.Errorf("nil.Clone() = %#v, want an empty, writable map", c)
	}
}
