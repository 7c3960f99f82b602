// Package configuration is Connect's built-in Configuration service,
// "Configuration" (version 1.0): it publishes the named configuration
// groups of the server configuration as runtime data, so that clients read
// settings the way they read any service's state.
//
// Every group becomes an object of the runtime data, holding one value per
// setting, typed (int, float, bool or string) and set to the configured
// value: a group "database" with values host (string) and port (int) is
// database.host and database.port. Two methods complete it:
//
//	groups() returns string[]       the group names, in configuration order
//	get(group string) returns string  the group as a JSON object of typed values
//
// The service file is generated from the groups (New); connectserver runs
// the service as a plugin subprocess through package builtin, with
// <service name="Configuration" builtin="configuration"/> in its
// configuration, and hands the groups to the plugin as JSON in the
// environment variable EnvGroups (FromEnv):
//
//	connectclient call Configuration.groups
//	connectclient call Configuration.get group=database
//	connectclient watch Configuration database.port
package configuration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// EnvGroups is the environment variable that carries the configuration
// groups to the plugin process, as the JSON of a []Group. Absent, empty
// or "[]" means no groups.
const EnvGroups = "CONNECT_CONFIGURATION_GROUPS"

// The service's identity.
const (
	ServiceName    = "Configuration"
	ServiceVersion = "1.0"
)

// Limits of a service file (docs/SERVICES.md, "Names and versions" and
// "Limits").
const (
	maxNameLen   = 64   // characters in a name
	maxDataNodes = 4096 // nodes of runtime data: groups and values
)

// Group is one named configuration group: an object of the runtime data.
type Group struct {
	// Name is the group's name, an identifier (a letter or '_', then
	// letters, digits and '_'; at most 64 characters), unique among the
	// groups.
	Name string `json:"name"`
	// Values are the group's settings, in order.
	Values []Value `json:"values"`
}

// Value is one setting of a group: a value of the runtime data.
type Value struct {
	// Name is the value's name, an identifier unique in its group.
	Name string `json:"name"`
	// Type is int, float, bool or string.
	Type string `json:"type"`
	// Value is the value in the syntax of a service-file default: a
	// decimal integer for an int (-42), a decimal number for a float (1.5,
	// -2e10), true or false for a bool, the text itself for a string.
	Value string `json:"value"`
}

// New returns a new Configuration service publishing groups, or an error
// naming every group or value that is not valid: a name that is not an
// identifier or is used twice, an unknown type, a value that is not of its
// type, a string that XML cannot carry.
func New(groups []Group) (*serviceplugin.Service, error) {
	if err := Validate(groups); err != nil {
		return nil, err
	}
	cs := &configService{names: make([]string, len(groups))}
	for i, g := range groups {
		cs.names[i] = g.Name
	}
	cs.svc = &serviceplugin.Service{
		XML: GenerateXML(groups),
		Methods: map[string]serviceplugin.MethodFunc{
			"groups": cs.groups,
			"get":    cs.get,
		},
	}
	// The service file is authoritative: check that it agrees with the
	// validation above (limits such as the 4096 data nodes are its own).
	if err := cs.svc.Check(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return cs.svc, nil
}

// FromEnv returns a new Configuration service publishing the groups in the
// environment variable EnvGroups (none when it is unset or empty).
func FromEnv() (*serviceplugin.Service, error) {
	groups, err := ParseGroups(os.Getenv(EnvGroups))
	if err != nil {
		return nil, err
	}
	return New(groups)
}

// ParseGroups decodes the JSON of a []Group, as EnvGroups holds it. ""
// and "null" are no groups; a key that Group and Value do not have is an
// error.
func ParseGroups(s string) ([]Group, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var groups []Group
	if err := dec.Decode(&groups); err != nil {
		return nil, fmt.Errorf("configuration: %s is not a JSON list of groups ([{\"name\":...,\"values\":[{\"name\":...,\"type\":...,\"value\":...}]}]): %v", EnvGroups, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("configuration: %s: unexpected data after the list of groups", EnvGroups)
	}
	return groups, nil
}

// Validate checks groups as New does, and returns every problem at once,
// one per line, each naming its group and value.
func Validate(groups []Group) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	seenGroup := map[string]int{}
	for gi, g := range groups {
		gname := fmt.Sprintf("group %d (%q)", gi+1, g.Name)
		if msg := checkName(g.Name); msg != "" {
			add("%s: the name %s", gname, msg)
		} else if first, dup := seenGroup[g.Name]; dup {
			add("%s: the name is already used by group %d", gname, first+1)
		} else {
			seenGroup[g.Name] = gi
			gname = fmt.Sprintf("group %q", g.Name)
		}
		seenValue := map[string]int{}
		for vi, v := range g.Values {
			vname := fmt.Sprintf("%s, value %d (%q)", gname, vi+1, v.Name)
			if msg := checkName(v.Name); msg != "" {
				add("%s: the name %s", vname, msg)
			} else if first, dup := seenValue[v.Name]; dup {
				add("%s: the name is already used by value %d of the group", vname, first+1)
			} else {
				seenValue[v.Name] = vi
				vname = fmt.Sprintf("%s, value %q", gname, v.Name)
			}
			if _, err := parseValue(v.Type, v.Value); err != nil {
				add("%s: %v", vname, err)
			}
		}
	}
	nodes := len(groups)
	for _, g := range groups {
		nodes += len(g.Values)
	}
	if nodes > maxDataNodes {
		add("%d groups and %d values in all: more than the %d nodes of runtime data a service may have", len(groups), nodes-len(groups), maxDataNodes)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("configuration: %s", strings.Join(problems, "\n"))
}

// checkName returns what is wrong with a group or value name, or "".
func checkName(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > maxNameLen:
		return fmt.Sprintf("is longer than %d characters", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return "is not an identifier (an ASCII letter or '_', then letters, digits and '_')"
		}
	}
	return ""
}

// floatSyntax is a decimal number, as service-file defaults write it.
var floatSyntax = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// parseValue parses s as a value of type typ, in the syntax of a
// service-file default.
func parseValue(typ, s string) (any, error) {
	switch typ {
	case "int":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return nil, fmt.Errorf("%q is out of range for int (-9223372036854775808 to 9223372036854775807)", s)
			}
			return nil, fmt.Errorf("%q is not an int (a decimal integer, like -42)", s)
		}
		return n, nil
	case "float":
		if !floatSyntax.MatchString(s) {
			return nil, fmt.Errorf("%q is not a float (a decimal number, like 1.5 or -2e10)", s)
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%q is out of range for float (a 64-bit IEEE 754 number)", s)
		}
		return f, nil
	case "bool":
		switch s {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a bool (true or false)", s)
	case "string":
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("the string is not valid UTF-8")
		}
		for _, r := range s {
			if !xmlChar(r) {
				return nil, fmt.Errorf("the string holds the character %U, which XML cannot carry", r)
			}
		}
		return s, nil
	case "":
		return nil, errors.New("no type (want int, float, bool or string)")
	}
	return nil, fmt.Errorf("unknown type %q (want int, float, bool or string)", typ)
}

// xmlChar reports whether XML 1.0 allows r in a document.
func xmlChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' ||
		r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

// GenerateXML returns the service file of the Configuration service for
// groups, which must be valid (see Validate).
func GenerateXML(groups []Group) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	fmt.Fprintf(&b, `<service name="%s" version="%s" description="The named configuration groups of the server configuration, as runtime data: one object per group, one typed value per setting.">`+"\n", ServiceName, ServiceVersion)
	b.WriteString(`  <method name="groups" returns="string[]" description="The names of the configuration groups, in configuration order."/>` + "\n")
	b.WriteString(`  <method name="get" returns="string" description="A configuration group as a JSON object of its typed values.">` + "\n")
	b.WriteString(`    <arg name="group" type="string" description="The group's name."/>` + "\n")
	b.WriteString("  </method>\n")
	b.WriteString(`  <data description="One object per configuration group.">` + "\n")
	for _, g := range groups {
		if len(g.Values) == 0 {
			fmt.Fprintf(&b, "    <object name=\"%s\"/>\n", attr(g.Name))
			continue
		}
		fmt.Fprintf(&b, "    <object name=\"%s\">\n", attr(g.Name))
		for _, v := range g.Values {
			fmt.Fprintf(&b, "      <value name=\"%s\" type=\"%s\" default=\"%s\"/>\n", attr(v.Name), attr(v.Type), attr(v.Value))
		}
		b.WriteString("    </object>\n")
	}
	b.WriteString("  </data>\n</service>\n")
	return b.Bytes()
}

// attr escapes s for a double-quoted XML attribute, keeping tabs and line
// breaks (which XML would otherwise turn into spaces).
func attr(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '"':
			b.WriteString("&quot;")
		case '\'':
			b.WriteString("&apos;")
		case '\t':
			b.WriteString("&#9;")
		case '\n':
			b.WriteString("&#10;")
		case '\r':
			b.WriteString("&#13;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// configService implements the methods.
type configService struct {
	svc   *serviceplugin.Service
	names []string // the group names, in order
}

func (cs *configService) groups(context.Context, *serviceplugin.Call) (any, error) {
	list := make([]any, len(cs.names))
	for i, n := range cs.names {
		list[i] = n
	}
	return list, nil
}

func (cs *configService) get(_ context.Context, call *serviceplugin.Call) (any, error) {
	name := call.String("group")
	node := cs.svc.Description().Data.Lookup(name)
	if checkName(name) != "" || node == nil { // checkName rejects paths (a dot)
		known := "none"
		if len(cs.names) > 0 {
			known = strings.Join(cs.names, ", ")
		}
		return nil, serviceplugin.Errorf(serviceplugin.CodeInvalidArgument, "no configuration group %q (groups: %s)", name, known)
	}
	v, err := cs.svc.Get(name)
	if err != nil {
		return nil, err
	}
	js, err := services.MarshalJSON(node.Type, v)
	if err != nil {
		return nil, err
	}
	return string(js), nil
}
