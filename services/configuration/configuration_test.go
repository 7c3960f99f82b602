package configuration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/services/configuration"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// contractJSON is the example of the contract with the server's core.
const contractJSON = `[{"name":"database","values":[{"name":"host","type":"string","value":"db.local"},{"name":"port","type":"int","value":"5432"}]}]`

// tricky is a string that needs escaping in XML, with line breaks and tabs
// that XML would turn into spaces if they were not escaped.
const tricky = "a<b & c>d \"quoted\" 'single'\n\tline two\r\nüñï €"

func sample() []configuration.Group {
	return []configuration.Group{
		{Name: "database", Values: []configuration.Value{
			{Name: "host", Type: "string", Value: "db.local"},
			{Name: "port", Type: "int", Value: "5432"},
			{Name: "ratio", Type: "float", Value: "-2.5e3"},
			{Name: "tls", Type: "bool", Value: "true"},
			{Name: "motd", Type: "string", Value: tricky},
			{Name: "empty", Type: "string", Value: ""},
		}},
		{Name: "_limits", Values: []configuration.Value{
			{Name: "max", Type: "int", Value: "-9223372036854775808"},
			{Name: "frac", Type: "float", Value: ".5"},
			{Name: "off", Type: "bool", Value: "false"},
		}},
		{Name: "nothing"},
	}
}

func newHost(t *testing.T, groups []configuration.Group) (*serviceplugin.TestHost, *serviceplugin.Service) {
	t.Helper()
	svc, err := configuration.New(groups)
	if err != nil {
		t.Fatal(err)
	}
	svc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return serviceplugin.NewTestHost(t, svc), svc
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServiceFile(t *testing.T) {
	d, err := servicefile.Parse("configuration.xml", configuration.GenerateXML(sample()))
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "Configuration" || d.Version != "1.0" || d.Description == "" {
		t.Fatalf("service %q %q %q", d.Name, d.Version, d.Description)
	}
	var paths []string
	d.Data.Walk(func(n *servicefile.DataNode) {
		if n.Persistent {
			t.Errorf("%s is persistent", n.Path)
		}
		paths = append(paths, n.Path+":"+n.Type.String())
	})
	want := []string{"database:object", "database.host:string", "database.port:int", "database.ratio:float",
		"database.tls:bool", "database.motd:string", "database.empty:string",
		"_limits:object", "_limits.max:int", "_limits.frac:float", "_limits.off:bool", "nothing:object"}
	if len(paths) > 0 && paths[0] == ":object" { // Walk may visit the root
		paths = paths[1:]
	}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("data nodes\n%v\nwant\n%v", paths, want)
	}
	if g := d.Method("groups"); g == nil || g.Returns.String() != "string[]" || len(g.Args) != 0 {
		t.Fatalf("method groups: %+v", g)
	}
	if g := d.Method("get"); g == nil || g.Returns.String() != "string" || len(g.Args) != 1 || g.Args[0].Name != "group" || g.Args[0].Type.String() != "string" {
		t.Fatalf("method get: %+v", g)
	}
}

// The runtime data, as the host receives it, holds the configured values,
// typed.
func TestRuntimeData(t *testing.T) {
	h, svc := newHost(t, sample())
	want := map[string]any{
		"database": map[string]any{"host": "db.local", "port": int64(5432), "ratio": -2500.0, "tls": true, "motd": tricky, "empty": ""},
		"_limits":  map[string]any{"max": int64(-9223372036854775808), "frac": 0.5, "off": false},
		"nothing":  map[string]any{},
	}
	if got := h.Data(""); !reflect.DeepEqual(got, want) {
		t.Fatalf("runtime data\n%#v\nwant\n%#v", got, want)
	}
	if got, err := svc.Get(""); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("the service's own runtime data\n%#v (%v)\nwant\n%#v", got, err, want)
	}
	if v := h.Data("database.motd"); v != tricky {
		t.Fatalf("database.motd = %q, want %q", v, tricky)
	}
}

func TestMethods(t *testing.T) {
	h, _ := newHost(t, sample())
	ctx := testContext(t)

	got, err := h.Call(ctx, "groups", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{"database", "_limits", "nothing"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("groups() = %#v, want %#v", got, want)
	}

	tests := []struct {
		group string
		want  string // exact JSON, keys in configuration order
	}{
		{"database", `{"host":"db.local","port":5432,"ratio":-2500,"tls":true,"motd":"a\u003cb \u0026 c\u003ed \"quoted\" 'single'\n\tline two\r\nüñï €","empty":""}`},
		{"_limits", `{"max":-9223372036854775808,"frac":0.5,"off":false}`},
		{"nothing", `{}`},
	}
	for _, tc := range tests {
		got, err := h.Call(ctx, "get", map[string]any{"group": tc.group})
		if err != nil {
			t.Fatalf("get(%s): %v", tc.group, err)
		}
		if got != tc.want {
			t.Errorf("get(%s) =\n%s\nwant\n%s", tc.group, got, tc.want)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(got.(string)), &m); err != nil {
			t.Errorf("get(%s) is not JSON: %v", tc.group, err)
		}
	}

	for _, bad := range []string{"nope", "", "database.host", "Database", "1x"} {
		_, err := h.Call(ctx, "get", map[string]any{"group": bad})
		var se *serviceplugin.Error
		if !errors.As(err, &se) || se.Code != serviceplugin.CodeInvalidArgument {
			t.Fatalf("get(%q) = %v, want an invalid-argument error", bad, err)
		}
		want := `no configuration group "` + bad + `" (groups: database, _limits, nothing)`
		if se.Message != want {
			t.Errorf("get(%q): %q, want %q", bad, se.Message, want)
		}
	}
}

// No groups is a valid service with no runtime data.
func TestEmpty(t *testing.T) {
	for _, groups := range [][]configuration.Group{nil, {}} {
		h, _ := newHost(t, groups)
		ctx := testContext(t)
		if got := h.Data(""); !reflect.DeepEqual(got, map[string]any{}) {
			t.Fatalf("runtime data %#v, want none", got)
		}
		got, err := h.Call(ctx, "groups", nil)
		if err != nil || !reflect.DeepEqual(got, []any{}) {
			t.Fatalf("groups() = %#v, %v; want []", got, err)
		}
		_, err = h.Call(ctx, "get", map[string]any{"group": "database"})
		var se *serviceplugin.Error
		if !errors.As(err, &se) || se.Code != serviceplugin.CodeInvalidArgument || se.Message != `no configuration group "database" (groups: none)` {
			t.Fatalf("get(database) = %v", err)
		}
	}
}

func TestFromEnv(t *testing.T) {
	for _, env := range []string{"", "[]", " [] ", "null"} {
		t.Setenv(configuration.EnvGroups, env)
		svc, err := configuration.FromEnv()
		if err != nil {
			t.Fatalf("FromEnv with %q: %v", env, err)
		}
		if v, err := svc.Get(""); err != nil || !reflect.DeepEqual(v, map[string]any{}) {
			t.Fatalf("FromEnv with %q: runtime data %v, %v", env, v, err)
		}
	}

	t.Setenv(configuration.EnvGroups, contractJSON)
	svc, err := configuration.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	h := serviceplugin.NewTestHost(t, svc)
	if got, want := h.Data("database"), map[string]any{"host": "db.local", "port": int64(5432)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("database = %#v, want %#v", got, want)
	}
	got, err := h.Call(testContext(t), "get", map[string]any{"group": "database"})
	if err != nil || got != `{"host":"db.local","port":5432}` {
		t.Fatalf("get(database) = %v, %v", got, err)
	}

	for env, msg := range map[string]string{
		`{"name":"x"}`: "configuration: CONNECT_CONFIGURATION_GROUPS is not a JSON list of groups",
		`[{"name":"x","values":[{"name":"a","type":"int","value":"1","persistent":true}]}]`: `unknown field "persistent"`,
		`[{"name":"x","values":[{"name":"a","type":"int","value":1}]}]`:                     "cannot unmarshal number",
		`[] []`: "unexpected data after the list of groups",
		`[{"name":"x","values":[{"name":"a","type":"int","value":"one"}]}]`: `configuration: group "x", value "a": "one" is not an int`,
	} {
		t.Setenv(configuration.EnvGroups, env)
		svc, err := configuration.FromEnv()
		if svc != nil || err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("FromEnv with %s = %v, %v; want an error with %q", env, svc, err, msg)
		}
	}
}

// The JSON of the contract with the server's core decodes to Group and
// Value, and Group and Value marshal to it.
func TestJSONContract(t *testing.T) {
	groups, err := configuration.ParseGroups(contractJSON)
	if err != nil {
		t.Fatal(err)
	}
	want := []configuration.Group{{Name: "database", Values: []configuration.Value{
		{Name: "host", Type: "string", Value: "db.local"},
		{Name: "port", Type: "int", Value: "5432"},
	}}}
	if !reflect.DeepEqual(groups, want) {
		t.Fatalf("ParseGroups = %#v", groups)
	}
	b, err := json.Marshal(want)
	if err != nil || string(b) != contractJSON {
		t.Fatalf("json.Marshal = %s, %v; want %s", b, err, contractJSON)
	}
}

func TestBadInput(t *testing.T) {
	v := func(name, typ, value string) configuration.Value {
		return configuration.Value{Name: name, Type: typ, Value: value}
	}
	g := func(name string, values ...configuration.Value) configuration.Group {
		return configuration.Group{Name: name, Values: values}
	}
	tests := []struct {
		name   string
		groups []configuration.Group
		want   string // the whole error message
	}{
		{"bad type", []configuration.Group{g("db", v("port", "integer", "1"))},
			`configuration: group "db", value "port": unknown type "integer" (want int, float, bool or string)`},
		{"binary type", []configuration.Group{g("db", v("key", "binary", "AAEC"))},
			`configuration: group "db", value "key": unknown type "binary" (want int, float, bool or string)`},
		{"no type", []configuration.Group{g("db", v("port", "", "1"))},
			`configuration: group "db", value "port": no type (want int, float, bool or string)`},
		{"bad int", []configuration.Group{g("db", v("port", "int", "5432.0"))},
			`configuration: group "db", value "port": "5432.0" is not an int (a decimal integer, like -42)`},
		{"int out of range", []configuration.Group{g("db", v("port", "int", "9223372036854775808"))},
			`configuration: group "db", value "port": "9223372036854775808" is out of range for int (-9223372036854775808 to 9223372036854775807)`},
		{"empty int", []configuration.Group{g("db", v("port", "int", ""))},
			`configuration: group "db", value "port": "" is not an int (a decimal integer, like -42)`},
		{"bad float", []configuration.Group{g("db", v("ratio", "float", "NaN"))},
			`configuration: group "db", value "ratio": "NaN" is not a float (a decimal number, like 1.5 or -2e10)`},
		{"float out of range", []configuration.Group{g("db", v("ratio", "float", "1e999"))},
			`configuration: group "db", value "ratio": "1e999" is out of range for float (a 64-bit IEEE 754 number)`},
		{"bad bool", []configuration.Group{g("db", v("tls", "bool", "yes"))},
			`configuration: group "db", value "tls": "yes" is not a bool (true or false)`},
		{"bool as 1", []configuration.Group{g("db", v("tls", "bool", "1"))},
			`configuration: group "db", value "tls": "1" is not a bool (true or false)`},
		{"string not UTF-8", []configuration.Group{g("db", v("motd", "string", "\xff"))},
			`configuration: group "db", value "motd": the string is not valid UTF-8`},
		{"string with a control character", []configuration.Group{g("db", v("motd", "string", "a\x00b"))},
			`configuration: group "db", value "motd": the string holds the character U+0000, which XML cannot carry`},
		{"bad group name", []configuration.Group{g("my-db", v("port", "int", "1"))},
			`configuration: group 1 ("my-db"): the name is not an identifier (an ASCII letter or '_', then letters, digits and '_')`},
		{"dotted group name", []configuration.Group{g("a.b")},
			`configuration: group 1 ("a.b"): the name is not an identifier (an ASCII letter or '_', then letters, digits and '_')`},
		{"empty group name", []configuration.Group{g("ok"), g("")},
			`configuration: group 2 (""): the name is empty`},
		{"long group name", []configuration.Group{g(strings.Repeat("x", 65))},
			`configuration: group 1 ("` + strings.Repeat("x", 65) + `"): the name is longer than 64 characters`},
		{"bad value name", []configuration.Group{g("db", v("2port", "int", "1"))},
			`configuration: group "db", value 1 ("2port"): the name is not an identifier (an ASCII letter or '_', then letters, digits and '_')`},
		{"XML in a value name", []configuration.Group{g("db", v(`a"/><x`, "int", "1"))},
			`configuration: group "db", value 1 ("a\"/><x"): the name is not an identifier (an ASCII letter or '_', then letters, digits and '_')`},
		{"duplicate group", []configuration.Group{g("db", v("a", "int", "1")), g("web"), g("db")},
			`configuration: group 3 ("db"): the name is already used by group 1`},
		{"duplicate value", []configuration.Group{g("db", v("port", "int", "1"), v("host", "string", "h"), v("port", "int", "2"))},
			`configuration: group "db", value 3 ("port"): the name is already used by value 1 of the group`},
		{"several problems", []configuration.Group{g("db", v("port", "int", "x"), v("bad name", "float", "1")), g("db", v("a", "real", "1"))},
			`configuration: group "db", value "port": "x" is not an int (a decimal integer, like -42)` + "\n" +
				`configuration: group "db", value 2 ("bad name"): the name is not an identifier (an ASCII letter or '_', then letters, digits and '_')` + "\n" +
				`group 2 ("db"): the name is already used by group 1` + "\n" +
				`group 2 ("db"), value "a": unknown type "real" (want int, float, bool or string)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if tc.name == "several problems" { // one "configuration: " prefix for the whole list
				want = strings.Replace(want, "\nconfiguration: ", "\n", -1)
			}
			svc, err := configuration.New(tc.groups)
			if svc != nil || err == nil {
				t.Fatalf("New = %v, %v; want an error", svc, err)
			}
			if err.Error() != want {
				t.Fatalf("New:\n%s\nwant\n%s", err, want)
			}
			if err := configuration.Validate(tc.groups); err == nil || err.Error() != want {
				t.Fatalf("Validate = %v", err)
			}
		})
	}
}

// Whatever Validate accepts, the service file accepts, with the same value.
func TestValuesAgreeWithServiceFile(t *testing.T) {
	tests := []struct {
		typ, value string
		want       any
	}{
		{"int", "0", int64(0)},
		{"int", "-42", int64(-42)},
		{"int", "+7", int64(7)},
		{"int", "007", int64(7)},
		{"int", "9223372036854775807", int64(9223372036854775807)},
		{"float", "1.5", 1.5},
		{"float", "-2e10", -2e10},
		{"float", ".5", 0.5},
		{"float", "3", 3.0},
		{"float", "3.", 3.0},
		{"float", "+1E+3", 1000.0},
		{"float", "1.7976931348623157e308", 1.7976931348623157e308},
		{"float", "-0", 0.0},
		{"bool", "true", true},
		{"bool", "false", false},
		{"string", "", ""},
		{"string", " ", " "},
		{"string", tricky, tricky},
		{"string", "\u00a0\U0001F600\uFFFD", "\u00a0\U0001F600\uFFFD"},
		{"string", "&amp; ]]> <!-- x --> <![CDATA[", "&amp; ]]> <!-- x --> <![CDATA["},
	}
	group := configuration.Group{Name: "g"}
	for i, tc := range tests {
		group.Values = append(group.Values, configuration.Value{Name: fmt.Sprintf("v%d", i), Type: tc.typ, Value: tc.value})
	}
	svc, err := configuration.New([]configuration.Group{group})
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range tests {
		got, err := svc.Get(fmt.Sprintf("g.v%d", i))
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %q = %#v, %v; want %#v", tc.typ, tc.value, got, err, tc.want)
		}
	}
}

// A service file holds at most 4096 nodes of runtime data.
func TestTooManyNodes(t *testing.T) {
	groups := make([]configuration.Group, 2048)
	for i := range groups {
		groups[i] = configuration.Group{Name: fmt.Sprintf("g%d", i), Values: []configuration.Value{{Name: "v", Type: "int", Value: "1"}}}
	}
	if _, err := configuration.New(groups); err != nil {
		t.Fatalf("4096 nodes: %v", err)
	}
	groups = append(groups, groups[0])
	svc, err := configuration.New(groups)
	want := "configuration: group 2049 (\"g0\"): the name is already used by group 1\n" +
		"2049 groups and 2049 values in all: more than the 4096 nodes of runtime data a service may have"
	if svc != nil || err == nil || err.Error() != want {
		t.Fatalf("New with 4098 nodes = %v, %v; want the error %q", svc, err, want)
	}
}
