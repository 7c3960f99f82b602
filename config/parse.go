package config

import (
	"github.com/bearerkit/connect/services/servicefile"
	"math"

	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/beevik/etree"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/xmlpos"
)

// Element and attribute names of the schema, in the order the documentation
// and "known:" lists give them.
const rootTag = "connectserver"

var (
	rootChildren     = []string{"http", "stateDir", "log", "authentication", "registration", "plugins", "resume", "connectionAdapter", "service", "configuration", "policy", "remoteServices", "diagnostics", "tunnel"}
	authChildren     = []string{"token", "certificates"}
	adapterChildren  = []string{"attribute"}
	adapterAttrs     = []string{"name", "type", "plugin", "address"}
	logLevels        = []string{"debug", "info", "warn", "error"}
	logFormats       = []string{"text", "json"}
	dashboardModes   = []string{DashboardLoopback, DashboardAny, DashboardOff}
	maxTokenFileSize = 64 << 10
)

// parser validates one document and builds the Server, collecting problems.
type parser struct {
	file     string
	dir      string // directory relative paths are resolved against
	data     []byte
	doc      *xmlpos.Doc // the document with its elements' lines
	problems Problems
	// readToken reads a token file; tests replace it to keep fuzzed
	// documents away from the real file system.
	readToken func(path string) (string, error)
}

// node is an element being validated: where it is and what its known
// attributes say.
type node struct {
	el    *etree.Element
	path  string            // e.g. "connectionAdapter[2]" or "authentication/token[1]"
	line  int               // line of its start tag
	attrs map[string]string // known attributes present (first occurrence)
}

func newParser(file string, data []byte) *parser {
	dir := filepath.Dir(file)
	if file == "" || file == DefaultFile {
		dir = "."
	}
	return &parser{file: file, dir: dir, data: data, readToken: readTokenFile}
}

func (p *parser) add(line int, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Msg: oneLine(fmt.Sprintf(format, args...))})
}

// run parses and validates, returning the Server or every problem sorted by
// line.
func (p *parser) run() (*Server, error) {
	s := p.parse()
	if len(p.problems) > 0 {
		p.problems.Sort()
		return nil, p.problems
	}
	return s, nil
}

// parse runs the whole validation. It returns nil when the document cannot
// be read as a configuration at all; otherwise the Server, which is only
// meaningful if no problem was recorded.
func (p *parser) parse() *Server {
	if len(p.data) > MaxFileSize {
		p.add(1, "file is larger than %d bytes; this is not a server configuration", MaxFileSize)
		return nil
	}
	p.doc = xmlpos.Read(p.file, p.data, xmlpos.Options{Root: rootTag, What: "a configuration", MaxDepth: maxDepth})
	p.problems = append(p.problems, p.doc.Problems()...)
	root := p.doc.Root()
	if root == nil {
		return nil
	}
	return p.server(p.node(root.El, rootTag))
}

// node prepares an element for validation.
func (p *parser) node(e *etree.Element, path string) *node {
	return &node{el: e, path: path, line: p.doc.Line(e)}
}

// attrLine is the line of the k-th occurrence (from 0) of a raw attribute
// name in n's start tag, or n's line when it cannot be found.
func (p *parser) attrLine(n *node, raw string, k int) int {
	return p.doc.AttrLine(n.el, raw, k)
}

// attrs records n's known attributes and reports unknown and repeated ones.
// Namespace declarations (xmlns, xmlns:x) are allowed anywhere and ignored.
func (p *parser) attrs(n *node, known ...string) {
	n.attrs = map[string]string{}
	seen := map[string]int{}
	for _, a := range n.el.Attr {
		if a.Space == "xmlns" || a.Space == "" && a.Key == "xmlns" {
			continue
		}
		key := a.Key
		if a.Space != "" {
			key = a.Space + ":" + a.Key
		}
		k := seen[key]
		seen[key]++
		line := p.attrLine(n, key, k)
		switch {
		case k > 0:
			p.add(line, "%s attribute %q given twice (first at line %d)", n.path, key, p.attrLine(n, key, 0))
		case !contains(known, key):
			if len(known) == 0 {
				p.add(line, "%s attribute %q unknown (%s has no attributes)", n.path, key, n.path)
			} else {
				p.add(line, "%s attribute %q unknown (known: %s)", n.path, key, strings.Join(known, ", "))
			}
		default:
			n.attrs[key] = a.Value
		}
	}
}

// line is the line of attribute key of n (n's line if it is absent).
func (p *parser) line(n *node, key string) int { return p.attrLine(n, key, 0) }

// require reports the attributes of n that are missing and returns whether
// all are present.
func (p *parser) require(n *node, keys ...string) bool {
	ok := true
	for _, k := range keys {
		if _, has := n.attrs[k]; !has {
			p.add(n.line, "%s attribute %q is required", n.path, k)
			ok = false
		}
	}
	return ok
}

// noText reports non-blank text inside n: settings are attributes.
func (p *parser) noText(n *node) {
	for _, t := range n.el.Child {
		if cd, ok := t.(*etree.CharData); ok && strings.TrimFunc(cd.Data, isXMLSpace) != "" {
			p.add(n.line, "%s has text %s; settings are given as attributes", n.path, quoteShort(cd.Data))
			return
		}
	}
}

// leaf validates an element that takes attributes and nothing else.
func (p *parser) leaf(n *node, known ...string) {
	p.attrs(n, known...)
	p.noText(n)
	for _, c := range n.el.ChildElements() {
		p.add(p.node(c, "").line, "%s element <%s> unknown (%s has no child elements)", n.path, fullTag(c), n.path)
	}
}

// children iterates over n's child elements, reporting unknown ones and
// repeated singletons, and calls visit with a node for each known one.
// Elements named in repeated get an index in their path ("token[2]").
func (p *parser) children(n *node, known, repeated []string, visit func(tag string, c *node)) {
	count := map[string]int{}
	first := map[string]int{}
	for _, c := range n.el.ChildElements() {
		tag := fullTag(c)
		count[tag]++
		path := tag
		if contains(repeated, tag) {
			path = fmt.Sprintf("%s[%d]", tag, count[tag])
		}
		if n.path != rootTag {
			path = n.path + "/" + path
		}
		cn := p.node(c, path)
		switch {
		case !contains(known, tag):
			p.add(cn.line, "%s element <%s> unknown (known: %s)", n.path, tag, strings.Join(known, ", "))
		case !contains(repeated, tag) && count[tag] > 1:
			p.add(cn.line, "%s given twice (first at line %d); only one is allowed", path, first[tag])
		default:
			first[tag] = cn.line
			visit(tag, cn)
		}
	}
}

// server validates the root element and everything in it.
func (p *parser) server(rn *node) *Server {
	s := &Server{
		File:                p.file,
		HTTPAddr:            DefaultHTTPAddr,
		Log:                 Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		RegistrationTimeout: DefaultRegistrationTimeout,
		Plugins: Plugins{
			StartTimeout:      DefaultPluginStartTimeout,
			RestartBackoffMin: DefaultRestartBackoffMin,
			RestartBackoffMax: DefaultRestartBackoffMax,
		},
		Resume:      Resume{Linger: DefaultLinger, PingFrequency: DefaultPingFrequency, PingWindowFactor: DefaultPingWindowFactor, MaxRetries: DefaultMaxRetries},
		Diagnostics: Diagnostics{Enabled: true, Dashboard: DashboardLoopback},
	}
	p.attrs(rn)
	p.noText(rn)
	var adapters []*adapterNode
	services := map[string]int{} // name -> line
	tunnels := map[string]int{}  // name -> line
	p.children(rn, rootChildren, []string{"connectionAdapter", "service", "tunnel"}, func(tag string, n *node) {
		switch tag {
		case "http":
			p.http(n, s)
		case "stateDir":
			p.leaf(n, "path")
			if p.require(n, "path") {
				if v := n.attrs["path"]; v == "" {
					p.add(p.line(n, "path"), "%s attribute %q is empty", n.path, "path")
				} else {
					s.StateDir = p.resolve(v)
				}
			}
		case "log":
			p.log(n, s)
		case "authentication":
			p.auth(n, s)
		case "registration":
			p.leaf(n, "timeout")
			s.RegistrationTimeout = p.duration(n, "timeout", DefaultRegistrationTimeout)
		case "plugins":
			p.leaf(n, "startTimeout", "restartBackoffMin", "restartBackoffMax")
			s.Plugins.StartTimeout = p.duration(n, "startTimeout", DefaultPluginStartTimeout)
			s.Plugins.RestartBackoffMin = p.duration(n, "restartBackoffMin", DefaultRestartBackoffMin)
			s.Plugins.RestartBackoffMax = p.duration(n, "restartBackoffMax", DefaultRestartBackoffMax)
			if s.Plugins.RestartBackoffMin > s.Plugins.RestartBackoffMax {
				p.add(n.line, "%s: restartBackoffMin (%v) is greater than restartBackoffMax (%v)",
					n.path, s.Plugins.RestartBackoffMin, s.Plugins.RestartBackoffMax)
			}
		case "resume":
			p.leaf(n, "linger", "pingFrequency", "pingWindowFactor", "secondaryBindPort", "secondaryConnectPort", "maxRetries")
			s.Resume.Linger = p.duration(n, "linger", DefaultLinger)
			if ms, ok := p.integer(n, "pingFrequency", MinPingFrequency.Milliseconds(), MaxPingFrequency.Milliseconds()); ok {
				s.Resume.PingFrequency = time.Duration(ms) * time.Millisecond
			}
			if f, ok := p.integer(n, "pingWindowFactor", MinPingWindowFactor, MaxPingWindowFactor); ok {
				s.Resume.PingWindowFactor = int(f)
			}
			if v, ok := p.integer(n, "secondaryBindPort", 0, 65535); ok {
				s.Resume.SecondaryBindPort = int(v)
			}
			if v, ok := p.integer(n, "secondaryConnectPort", 0, 65535); ok {
				s.Resume.SecondaryConnectPort = int(v)
			}
			if v, ok := p.integer(n, "maxRetries", 1, MaxRetriesLimit); ok {
				s.Resume.MaxRetries = int(v)
			}
		case "connectionAdapter":
			if a := p.adapter(n); a != nil {
				adapters = append(adapters, a)
			}
		case "service":
			if sv, ok := p.service(n, services); ok {
				s.Services = append(s.Services, sv)
			}
		case "configuration":
			s.Configuration = p.configuration(n)
		case "policy":
			s.Policy = p.policy(n)
		case "remoteServices":
			s.RemoteServices = p.remoteServices(n) // remote.go
		case "diagnostics":
			p.diagnostics(n, s)
		case "tunnel":
			if t, ok := p.tunnel(n, tunnels); ok { // tunnel.go
				s.Tunnels = append(s.Tunnels, t)
			}
		}
	})
	p.checkTunnelNames(s)
	if len(adapters) == 0 {
		p.add(rn.line, "%s has no <connectionAdapter>; declare at least one bearer to listen on", rootTag)
	}
	p.crossCheck(adapters)
	for _, a := range adapters {
		s.Adapters = append(s.Adapters, a.Adapter)
	}
	return s
}

func (p *parser) http(n *node, s *Server) {
	p.leaf(n, "address")
	if !p.require(n, "address") {
		return
	}
	v := n.attrs["address"]
	line := p.line(n, "address")
	if v == "off" {
		s.HTTPAddr = ""
		return
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(line, "%s attribute %q: %q is not host:port or off", n.path, "address", v)
		return
	}
	if pn, err := strconv.Atoi(port); err != nil || pn < 0 || pn > 65535 {
		p.add(line, "%s attribute %q: port %q is not a number from 0 to 65535", n.path, "address", port)
		return
	}
	if host == "" {
		p.add(line, "%s attribute %q: empty host in %q; name an address such as 127.0.0.1 (0.0.0.0 listens on all interfaces)", n.path, "address", v)
		return
	}
	s.HTTPAddr = v
}

func (p *parser) diagnostics(n *node, s *Server) {
	p.leaf(n, "enabled", "dashboard")
	if v, ok := n.attrs["enabled"]; ok {
		switch v {
		case "true":
			s.Diagnostics.Enabled = true
		case "false":
			s.Diagnostics.Enabled = false
		default:
			p.add(p.line(n, "enabled"), "%s attribute %q: %q is not true or false", n.path, "enabled", v)
		}
	}
	if v, ok := n.attrs["dashboard"]; ok {
		if contains(dashboardModes, v) {
			s.Diagnostics.Dashboard = v
		} else {
			p.add(p.line(n, "dashboard"), "%s attribute %q: %q unknown (known: %s)", n.path, "dashboard", v, strings.Join(dashboardModes, ", "))
		}
	}
}

func (p *parser) log(n *node, s *Server) {
	p.leaf(n, "level", "format")
	if v, ok := n.attrs["level"]; ok {
		if contains(logLevels, v) {
			s.Log.Level = v
		} else {
			p.add(p.line(n, "level"), "%s attribute %q: %q unknown (known: %s)", n.path, "level", v, strings.Join(logLevels, ", "))
		}
	}
	if v, ok := n.attrs["format"]; ok {
		if contains(logFormats, v) {
			s.Log.Format = v
		} else {
			p.add(p.line(n, "format"), "%s attribute %q: %q unknown (known: %s)", n.path, "format", v, strings.Join(logFormats, ", "))
		}
	}
}

func (p *parser) auth(n *node, s *Server) {
	p.attrs(n)
	p.noText(n)
	p.children(n, authChildren, []string{"token"}, func(tag string, c *node) {
		switch tag {
		case "token":
			if tok, ok := p.token(c); ok {
				s.Auth.Tokens = append(s.Auth.Tokens, tok)
				if name, named := c.attrs["name"]; named {
					if !identifier(name) {
						p.add(p.line(c, "name"), "%s attribute %q: %q is not a name (a letter, then letters, digits or _, at most 64)", c.path, "name", name)
					} else {
						if s.Auth.TokenNames == nil {
							s.Auth.TokenNames = map[string]string{}
						}
						s.Auth.TokenNames[tok] = name
					}
				}
			}
		case "certificates":
			p.leaf(c, "allow")
			if !p.require(c, "allow") {
				return
			}
			switch v := c.attrs["allow"]; v {
			case "true":
				s.Auth.AllowCertificates = true
			case "false":
				s.Auth.AllowCertificates = false
			default:
				p.add(p.line(c, "allow"), "%s attribute %q: %q is not true or false", c.path, "allow", v)
			}
		}
	})
}

// token validates a <token value=".."/> or <token file=".."/> and returns
// the token.
func (p *parser) token(n *node) (string, bool) {
	p.leaf(n, "value", "file", "name")
	v, hasValue := n.attrs["value"]
	f, hasFile := n.attrs["file"]
	switch {
	case hasValue && hasFile:
		p.add(n.line, "%s: give value or file, not both", n.path)
		return "", false
	case !hasValue && !hasFile:
		p.add(n.line, "%s: attribute %q or %q is required", n.path, "value", "file")
		return "", false
	case hasValue:
		line := p.line(n, "value")
		if v == "" {
			p.add(line, "%s attribute %q is empty", n.path, "value")
			return "", false
		}
		if badTokenChars(v) {
			p.add(line, "%s attribute %q: a token cannot contain white space or control characters", n.path, "value")
			return "", false
		}
		return v, true
	}
	line := p.line(n, "file")
	if f == "" {
		p.add(line, "%s attribute %q is empty", n.path, "file")
		return "", false
	}
	path := p.resolve(f)
	tok, err := p.readToken(path)
	if err != nil {
		p.add(line, "%s attribute %q: %s: %v", n.path, "file", path, err)
		return "", false
	}
	return tok, true
}

// readTokenFile reads a token file: one token, surrounding white space
// trimmed. Only regular files are read, so that a configuration naming a
// device or a pipe cannot block or flood the server.
func readTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", unwrapPath(err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", unwrapPath(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(maxTokenFileSize)+1))
	if err != nil {
		return "", unwrapPath(err)
	}
	if len(b) > maxTokenFileSize {
		return "", fmt.Errorf("larger than %d bytes; a token file holds one token", maxTokenFileSize)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("file is empty; it must hold one token")
	case badTokenChars(tok):
		return "", fmt.Errorf("holds more than one word; it must hold one token without white space or control characters")
	}
	return tok, nil
}

func badTokenChars(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// duration parses an optional positive duration attribute of n.
func (p *parser) duration(n *node, key string, def time.Duration) time.Duration {
	v, ok := n.attrs[key]
	if !ok {
		return def
	}
	line := p.line(n, key)
	d, err := time.ParseDuration(v)
	if err != nil {
		p.add(line, "%s attribute %q: %q is not a duration (like 10s, 500ms or 1m30s)", n.path, key, v)
		return def
	}
	if d <= 0 {
		p.add(line, "%s attribute %q: must be greater than 0, got %q", n.path, key, v)
		return def
	}
	return d
}

// integer reads an optional integer attribute within [lo, hi]; ok is false
// when it is absent or wrong (a problem is recorded).
func (p *parser) integer(n *node, key string, lo, hi int64) (int64, bool) {
	v, ok := n.attrs[key]
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil || i < lo || i > hi {
		p.add(p.line(n, key), "%s attribute %q: %q is not an integer from %d to %d", n.path, key, v, lo, hi)
		return 0, false
	}
	return i, true
}

// adapterNode is a parsed connection adapter with what the cross-checks
// need to know.
type adapterNode struct {
	Adapter
	path     string
	nameLine int
	addrLine int
	plugLine int
	named    bool // the name was given, not defaulted
	typeOK   bool // Type is a valid type id
	addrOK   bool // Address parsed
}

func (p *parser) adapter(n *node) *adapterNode {
	p.attrs(n, adapterAttrs...)
	p.noText(n)
	a := &adapterNode{
		Adapter:  Adapter{Attributes: bearers.Attributes{}, Line: n.line},
		path:     n.path,
		nameLine: p.line(n, "name"),
		addrLine: p.line(n, "address"),
		plugLine: p.line(n, "plugin"),
	}
	p.require(n, "type", "address")

	if t, ok := n.attrs["type"]; ok {
		if err := bearers.ValidateType(t); err != nil {
			p.add(p.line(n, "type"), "%s attribute %q: %s", n.path, "type", trimBearers(err))
		} else {
			a.Type, a.typeOK = t, true
		}
	}
	if v, ok := n.attrs["address"]; ok {
		if ep, err := bearers.ParseEndpoint(v); err != nil {
			p.add(a.addrLine, "%s attribute %q: %s", n.path, "address", trimBearers(err))
		} else {
			a.Address, a.addrOK = ep, true
		}
	}
	if v, ok := n.attrs["plugin"]; ok {
		if v == "" {
			p.add(a.plugLine, "%s attribute %q is empty; leave it out for a stock bearer", n.path, "plugin")
		} else {
			a.Plugin = p.resolve(v)
		}
	}
	if v, ok := n.attrs["name"]; ok {
		if err := validateName(v); err != nil {
			p.add(a.nameLine, "%s attribute %q: %v", n.path, "name", err)
		} else {
			a.Name, a.named = v, true
		}
	} else if a.typeOK {
		a.Name = a.Type[strings.LastIndexByte(a.Type, '.')+1:]
	}

	if a.typeOK {
		scheme, stock := StockTypes[a.Type]
		switch {
		case stock && a.addrOK && a.Address.Scheme != scheme:
			p.add(a.addrLine, "%s attribute %q: scheme %q does not match type %s, which serves %s://",
				n.path, "address", a.Address.Scheme, a.Type, scheme)
		case stock && a.addrOK && a.Address.Path != "":
			p.add(a.addrLine, "%s attribute %q: %s endpoints take no path, got %q", n.path, "address", scheme, a.Address.Path)
		case !stock && !hasKey(n.attrs, "plugin"):
			p.add(n.line, "%s: type %s is not a stock bearer (stock: %s); name its executable with plugin=\"...\"",
				n.path, a.Type, strings.Join(stockTypeList(), ", "))
		case !stock && a.addrOK && stockScheme(a.Address.Scheme) != "":
			p.add(a.addrLine, "%s attribute %q: scheme %q belongs to the stock type %s; a plugin bearer serves a scheme of its own",
				n.path, "address", a.Address.Scheme, stockScheme(a.Address.Scheme))
		}
	}

	// <attribute name=".." value=".."/> children.
	first := map[string]int{}
	p.children(n, adapterChildren, adapterChildren, func(_ string, c *node) {
		p.leaf(c, "name", "value")
		if !p.require(c, "name", "value") {
			return
		}
		name, line := c.attrs["name"], p.line(c, "name")
		if name == "" {
			p.add(line, "%s attribute %q is empty", c.path, "name")
			return
		}
		if l, dup := first[name]; dup {
			p.add(line, "%s: bearer attribute %q already set at line %d", c.path, name, l)
			return
		}
		first[name] = line
		a.Attributes[name] = c.attrs["value"]
	})
	return a
}

// crossCheck reports problems between adapters: duplicate names and
// addresses, and types, schemes and plugins that disagree.
func (p *parser) crossCheck(adapters []*adapterNode) {
	byName := map[string]*adapterNode{}
	byAddr := map[string]*adapterNode{}
	byType := map[string]*adapterNode{}
	byScheme := map[string]*adapterNode{}
	for _, a := range adapters {
		if a.Name != "" {
			if o, dup := byName[a.Name]; dup {
				dflt := ""
				if !a.named {
					dflt = " (the default for its type)"
				}
				p.add(a.nameLine, "%s: name %q%s already used by %s at line %d; give one of them another name=\"...\"",
					a.path, a.Name, dflt, o.path, o.Line)
			} else {
				byName[a.Name] = a
			}
		}
		if a.addrOK && a.Address.Port != 0 {
			key := addrKey(a.Address)
			if o, dup := byAddr[key]; dup {
				p.add(a.addrLine, "%s attribute %q: %s already used by %s at line %d",
					a.path, "address", a.Address.String(), o.path, o.Line)
			} else {
				byAddr[key] = a
			}
		}
		if !a.typeOK {
			continue
		}
		if o, seen := byType[a.Type]; seen {
			if a.Plugin != o.Plugin {
				p.add(a.plugLine, "%s: type %s runs %s in %s at line %d, not %s; one type, one executable",
					a.path, a.Type, pluginName(o.Plugin), o.path, o.Line, pluginName(a.Plugin))
			}
			if a.addrOK && o.addrOK && a.Address.Scheme != o.Address.Scheme && !a.IsStock() {
				p.add(a.addrLine, "%s attribute %q: type %s serves %s:// in %s at line %d; a bearer type serves one scheme",
					a.path, "address", a.Type, o.Address.Scheme, o.path, o.Line)
			}
		} else {
			byType[a.Type] = a
		}
		if a.addrOK && !a.IsStock() {
			if o, seen := byScheme[a.Address.Scheme]; seen && o.Type != a.Type {
				p.add(a.addrLine, "%s attribute %q: scheme %q is already served by type %s in %s at line %d",
					a.path, "address", a.Address.Scheme, o.Type, o.path, o.Line)
			} else if !seen {
				byScheme[a.Address.Scheme] = a
			}
		}
	}
}

// resolve makes a path from the file absolute, relative to the file's
// directory.
func (p *parser) resolve(path string) string {
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return filepath.Clean(path)
}

// validateName checks an adapter name: 1 to 64 letters, digits, '.', '_'
// or '-', so that it is safe in logs, metrics and file names.
func validateName(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > 64 {
		return fmt.Errorf("name longer than 64 characters")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("name %q: character %q not allowed (use letters, digits, '.', '_' and '-')", s, r)
		}
	}
	return nil
}

// addrKey identifies an endpoint for duplicate detection: scheme, host (IP
// literals in canonical form, names in lower case) and port.
func addrKey(ep bearers.Endpoint) string {
	host := strings.ToLower(ep.Host)
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return ep.Scheme + "://" + net.JoinHostPort(host, strconv.Itoa(ep.Port))
}

// stockScheme returns the stock type serving scheme, or "".
func stockScheme(scheme string) string {
	for t, s := range StockTypes {
		if s == scheme {
			return t
		}
	}
	return ""
}

// stockTypeList returns the stock type ids, sorted.
func stockTypeList() []string {
	out := make([]string, 0, len(StockTypes))
	for t := range StockTypes {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func pluginName(path string) string {
	if path == "" {
		return "the built-in bearer"
	}
	return path
}

func trimBearers(err error) string { return strings.TrimPrefix(err.Error(), "bearers: ") }

func fullTag(e *etree.Element) string {
	if e.Space != "" {
		return e.Space + ":" + e.Tag
	}
	return e.Tag
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// service reads <service name=".." builtin=".."/> or
// <service name=".." plugin=".." [file=".."]/>.
func (p *parser) service(n *node, seen map[string]int) (Service, bool) {
	p.leaf(n, "name", "builtin", "plugin", "file")
	sv := Service{Line: n.line}
	if !p.require(n, "name") {
		return sv, false
	}
	ok := true
	sv.Name = n.attrs["name"]
	if err := servicefile.ValidateServiceName(sv.Name); err != nil {
		p.add(p.line(n, "name"), "%s attribute %q: %v", n.path, "name", err)
		ok = false
	} else if l, dup := seen[sv.Name]; dup {
		p.add(p.line(n, "name"), "%s: service %q is already declared at line %d", n.path, sv.Name, l)
		ok = false
	} else {
		seen[sv.Name] = n.line
	}
	builtin, hasBuiltin := n.attrs["builtin"]
	plugin, hasPlugin := n.attrs["plugin"]
	switch {
	case hasBuiltin == hasPlugin:
		p.add(n.line, "%s: say either builtin=\"NAME\" (a service inside connectserver) or plugin=\"PATH\" (its executable)", n.path)
		ok = false
	case hasBuiltin && builtin == "":
		p.add(p.line(n, "builtin"), "%s attribute %q is empty", n.path, "builtin")
		ok = false
	case hasPlugin && plugin == "":
		p.add(p.line(n, "plugin"), "%s attribute %q is empty", n.path, "plugin")
		ok = false
	}
	sv.Builtin = builtin
	if hasPlugin && plugin != "" {
		sv.Plugin = p.resolve(plugin)
	}
	if f, has := n.attrs["file"]; has {
		if f == "" {
			p.add(p.line(n, "file"), "%s attribute %q is empty", n.path, "file")
			ok = false
		} else {
			sv.File = p.resolve(f)
		}
	}
	return sv, ok
}

// configuration reads <configuration><group name=".."><value name=".."
// type=".." value=".."/>...</group>...</configuration>.
func (p *parser) configuration(n *node) []ConfigGroup {
	p.attrs(n)
	p.noText(n)
	var groups []ConfigGroup
	seen := map[string]int{}
	p.children(n, []string{"group"}, []string{"group"}, func(_ string, g *node) {
		p.attrs(g, "name")
		p.noText(g)
		if !p.require(g, "name") {
			return
		}
		grp := ConfigGroup{Name: g.attrs["name"], Line: g.line}
		if !identifier(grp.Name) {
			p.add(p.line(g, "name"), "%s attribute %q: %q is not a name (a letter, then letters, digits or _, at most 64)", g.path, "name", grp.Name)
		} else if l, dup := seen[grp.Name]; dup {
			p.add(p.line(g, "name"), "%s: group %q is already declared at line %d", g.path, grp.Name, l)
		} else {
			seen[grp.Name] = g.line
		}
		names := map[string]int{}
		p.children(g, []string{"value"}, []string{"value"}, func(_ string, v *node) {
			p.leaf(v, "name", "type", "value")
			if !p.require(v, "name", "type", "value") {
				return
			}
			cv := ConfigValue{Name: v.attrs["name"], Type: v.attrs["type"], Value: v.attrs["value"], Line: v.line}
			switch {
			case !identifier(cv.Name):
				p.add(p.line(v, "name"), "%s attribute %q: %q is not a name (a letter, then letters, digits or _, at most 64)", v.path, "name", cv.Name)
				return
			case names[cv.Name] != 0:
				p.add(p.line(v, "name"), "%s: value %q is already declared at line %d", v.path, cv.Name, names[cv.Name])
				return
			}
			names[cv.Name] = v.line
			if err := checkConfigValue(cv.Type, cv.Value); err != nil {
				p.add(p.line(v, "value"), "%s: %v", v.path, err)
				return
			}
			grp.Values = append(grp.Values, cv)
		})
		groups = append(groups, grp)
	})
	return groups
}

func identifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func checkConfigValue(typ, v string) error {
	var err error
	switch typ {
	case "string":
		return nil
	case "int":
		_, err = strconv.ParseInt(v, 10, 64)
	case "float":
		var f float64
		f, err = strconv.ParseFloat(v, 64)
		if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			err = fmt.Errorf("not finite")
		}
	case "bool":
		_, err = strconv.ParseBool(v)
	default:
		return fmt.Errorf("type %q unknown (known: int, float, bool, string)", typ)
	}
	if err != nil {
		article := "a"
		if typ == "int" {
			article = "an"
		}
		return fmt.Errorf("value %q is not %s %s", v, article, typ)
	}
	return nil
}

// policy reads <policy [default="deny|allow"]> with <allow>/<deny> rules.
func (p *parser) policy(n *node) *Policy {
	p.attrs(n, "default")
	p.noText(n)
	pol := &Policy{Default: "deny", Line: n.line}
	if v, ok := n.attrs["default"]; ok {
		if v != "deny" && v != "allow" {
			p.add(p.line(n, "default"), "%s attribute %q: %q is not deny or allow", n.path, "default", v)
		} else {
			pol.Default = v
		}
	}
	p.children(n, []string{"allow", "deny"}, []string{"allow", "deny"}, func(tag string, r *node) {
		p.leaf(r, "service", "methods", "client", "identity", "token", "when")
		if !p.require(r, "service") {
			return
		}
		rule := Rule{Allow: tag == "allow", Service: r.attrs["service"], Client: r.attrs["client"],
			Identity: r.attrs["identity"], Token: r.attrs["token"], Line: r.line}
		if rule.Service != "*" {
			if err := servicefile.ValidateServiceName(rule.Service); err != nil {
				p.add(p.line(r, "service"), "%s attribute %q: %v (or * for every service)", r.path, "service", err)
			}
		}
		if m, ok := r.attrs["methods"]; ok && m != "*" {
			for _, name := range strings.Split(m, ",") {
				name = strings.TrimSpace(name)
				if !identifier(name) {
					p.add(p.line(r, "methods"), "%s attribute %q: %q is not a method name (comma-separated names, or *)", r.path, "methods", name)
					continue
				}
				rule.Methods = append(rule.Methods, name)
			}
		}
		if w, ok := r.attrs["when"]; ok {
			c, err := parseCondition(w)
			if err != nil {
				p.add(p.line(r, "when"), "%s attribute %q: %v", r.path, "when", err)
			} else {
				rule.When = c
			}
		}
		pol.Rules = append(pol.Rules, rule)
	})
	return pol
}

// parseCondition parses "PATH OP VALUE" with OP one of == != < <= > >=.
func parseCondition(s string) (*Condition, error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return nil, fmt.Errorf("%q: want PATH OP VALUE, like \"station.status == running\"", s)
	}
	switch f[1] {
	case "==", "!=", "<", "<=", ">", ">=":
	default:
		return nil, fmt.Errorf("%q: operator %q unknown (known: == != < <= > >=)", s, f[1])
	}
	return &Condition{Path: f[0], Op: f[1], Value: strings.Join(f[2:], " ")}, nil
}
