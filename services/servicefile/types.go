package servicefile

import (
	"encoding/base64"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/xmlpos"
)

// typeAttr resolves the type written in attribute key of c (a type
// expression: a name followed by one "[]" per list level), wrapped in one
// more list when repeated. It reports what is wrong and returns nil then,
// or when the attribute is absent (Require reports that).
func (p *parser) typeAttr(c *xmlpos.Node, key string, repeated bool) *Type {
	v, ok := c.Attr(key)
	if !ok {
		return nil
	}
	line := c.AttrLine(key)
	bad := func(format string, args ...any) *Type {
		c.Add(line, "%s attribute %q: %s", c.Path, key, fmt.Sprintf(format, args...))
		return nil
	}
	if v == "" {
		c.Add(line, "%s attribute %q is empty", c.Path, key)
		return nil
	}
	base, lists := v, 0
	for strings.HasSuffix(base, "[]") {
		base = strings.TrimSuffix(base, "[]")
		lists++
	}
	if repeated {
		lists++
	}
	if !validName(base) {
		return bad("%s is not a type (%s)", xmlpos.Quote(v), typeRule)
	}
	if lists > maxListDepth {
		return bad("%s: lists nested more than %d deep", xmlpos.Quote(v), maxListDepth)
	}
	var t *Type
	if k := builtinKinds[base]; k != 0 {
		t = &Type{Kind: k, Line: line}
	} else if st := p.structs[base]; st != nil {
		t = st
	} else {
		switch base {
		case "object":
			return bad("object is runtime data (<object> in <data>), not a type; declare a <struct>")
		case "list", "repeated":
			return bad("%s is not a type; write T[] for a list of T, like int[], or repeated=\"true\"", xmlpos.Quote(v))
		}
		known := append([]string(nil), builtins...)
		for _, st := range p.s.Types {
			known = append(known, st.Name)
		}
		return bad("unknown type %s (known: %s)", xmlpos.Quote(base), nameList(known))
	}
	for i := 0; i < lists; i++ {
		t = &Type{Kind: List, Elem: t, Line: line}
	}
	return t
}

// structOf is the struct a type is or holds (through lists), or nil.
func structOf(t *Type) *Type {
	for t != nil && t.Kind == List {
		t = t.Elem
	}
	if t != nil && t.Kind == Struct {
		return t
	}
	return nil
}

// checkTypes reports custom types that contain themselves (directly, or
// through other types or lists) and, when there are none, types nested
// deeper than maxTypeDepth. After it, with no problem reported, every Type
// is a finite tree.
func (p *parser) checkTypes() {
	const (
		white = iota
		grey
		black
	)
	state := map[*Type]int{}
	type step struct {
		t *Type
		f *Field
	}
	var stack []step
	cycles := false
	var visit func(t *Type)
	visit = func(t *Type) {
		state[t] = grey
		for _, f := range t.Fields {
			u := structOf(f.Type)
			if u == nil {
				continue
			}
			stack = append(stack, step{t, f})
			switch state[u] {
			case white:
				visit(u)
			case grey:
				cycles = true
				i := len(stack) - 1
				for stack[i].t != u {
					i--
				}
				var b strings.Builder
				for _, s := range stack[i:] {
					fmt.Fprintf(&b, "%s.%s -> ", s.t.Name, s.f.Name)
				}
				b.WriteString(u.Name)
				start := stack[i]
				p.doc.Add(start.f.Line, "struct %s/field %s: struct %s contains itself (%s); a type cannot contain itself, not even through a list",
					start.t.Name, start.f.Name, u.Name, b.String())
			}
			stack = stack[:len(stack)-1]
		}
		state[t] = black
	}
	for _, t := range p.s.Types {
		if state[t] == white {
			visit(t)
		}
	}
	if cycles {
		return
	}
	depth := map[*Type]int{}
	var depthOf func(t *Type) int
	depthOf = func(t *Type) int {
		switch {
		case t == nil:
			return 0
		case t.Kind == List:
			return 1 + depthOf(t.Elem)
		case t.Kind != Struct:
			return 1
		}
		if d, ok := depth[t]; ok {
			return d
		}
		d := 0
		for _, f := range t.Fields {
			d = max(d, depthOf(f.Type))
		}
		depth[t] = d + 1
		return d + 1
	}
	for _, t := range p.s.Types {
		if depthOf(t) > maxTypeDepth {
			p.doc.Add(t.Line, "struct %s: types nested more than %d deep (a struct in a struct or a list counts one level)", t.Name, maxTypeDepth)
			return
		}
	}
}

// floatSyntax is a decimal number, as JSON writes it (with an optional "+"
// and without the leading-zero rule): no hex, no underscores, no NaN or Inf.
var floatSyntax = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// parseScalar parses a default of kind k, returning its Go value or a
// message saying what is wrong.
func parseScalar(k Kind, v string) (any, string) {
	switch k {
	case Int:
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			return n, ""
		}
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return nil, fmt.Sprintf("%s is out of range for int (-9223372036854775808 to 9223372036854775807)", xmlpos.Quote(v))
		}
		return nil, fmt.Sprintf("%s is not an int (a decimal integer, like -42)", xmlpos.Quote(v))
	case Float:
		if !floatSyntax.MatchString(v) {
			return nil, fmt.Sprintf("%s is not a float (a decimal number, like 1.5 or -2e10)", xmlpos.Quote(v))
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Sprintf("%s is out of range for float (a 64-bit IEEE 754 number)", xmlpos.Quote(v))
		}
		return f, ""
	case Bool:
		switch v {
		case "true":
			return true, ""
		case "false":
			return false, ""
		}
		return nil, fmt.Sprintf("%s is not a bool (true or false)", xmlpos.Quote(v))
	case String:
		return v, ""
	case Binary:
		b, err := base64.StdEncoding.Strict().DecodeString(v)
		if err != nil {
			return nil, fmt.Sprintf("%s is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)", xmlpos.Quote(v))
		}
		return b, ""
	}
	return nil, fmt.Sprintf("type %s has no default", k)
}

// zeroValue is the default of a scalar kind with no default attribute.
func zeroValue(k Kind) any {
	switch k {
	case Int:
		return int64(0)
	case Float:
		return float64(0)
	case Bool:
		return false
	case String:
		return ""
	case Binary:
		return []byte{}
	}
	return nil
}

// validName reports whether s is a name: an identifier of at most
// maxNameLen ASCII letters, digits and '_', not starting with a digit.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validServiceName reports whether s is a service name: dot-separated words
// of ASCII letters, digits, '_' and '-', each starting with a letter, at
// most maxServiceNameLen in all. Such a name is safe in URLs, file names,
// metric labels and "SERVICE.METHOD" (which splits at the last dot).
func validServiceName(s string) bool {
	if s == "" || len(s) > maxServiceNameLen {
		return false
	}
	for _, w := range strings.Split(s, ".") {
		if w == "" || !(w[0] >= 'a' && w[0] <= 'z' || w[0] >= 'A' && w[0] <= 'Z') {
			return false
		}
		for i := 1; i < len(w); i++ {
			c := w[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

var versionSyntax = regexp.MustCompile(`^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8}))?$`)

// validVersion reports whether s is MAJOR.MINOR or MAJOR.MINOR.PATCH.
func validVersion(s string) bool { return versionSyntax.MatchString(s) }

// parseEndpoint parses an endpoint, with an error that does not repeat the
// package name.
func parseEndpoint(s string) (bearers.Endpoint, error) {
	if len(s) > maxEndpointLen {
		return bearers.Endpoint{}, fmt.Errorf("%s is not an endpoint: longer than %d characters", xmlpos.Quote(s), maxEndpointLen)
	}
	ep, err := bearers.ParseEndpoint(s)
	if err != nil {
		return ep, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "bearers: "))
	}
	return ep, nil
}

// ValidName reports whether s is a name as service files define them (of
// a method, event, argument, field or runtime-data node).
func ValidName(s string) bool { return validName(s) }

// ValidPath reports whether s is a dot path of names, as runtime data is
// addressed ("player.volume").
func ValidPath(s string) bool {
	for {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return validName(s)
		}
		if !validName(s[:i]) {
			return false
		}
		s = s[i+1:]
	}
}

// ValidateBearer checks a bearer type id as a service file must name it,
// with an error that does not repeat the package name.
func ValidateBearer(s string) error { return validateBearer(s) }

// validateBearer checks a bearer type id, with an error that does not
// repeat the package name.
func validateBearer(s string) error {
	if len(s) > maxBearerLen {
		return fmt.Errorf("bearer type %s is longer than %d characters", xmlpos.Quote(s), maxBearerLen)
	}
	if err := bearers.ValidateType(s); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "bearers: "))
	}
	return nil
}

// ValidateServiceName checks a service name as a service file's name
// attribute must be, for callers that name services elsewhere (the server
// configuration).
func ValidateServiceName(s string) error {
	if !validServiceName(s) {
		return fmt.Errorf("service name %q: want dot-separated words of letters, digits, '_' and '-', each starting with a letter, at most %d characters", s, maxServiceNameLen)
	}
	return nil
}
