// Package config owns the server configuration: the XML file that
// connectserver reads (see docs/CONFIG.md), its embedded default, and its
// validation.
//
// Load and Parse read a configuration with github.com/beevik/etree, check
// everything a configuration can get wrong without starting the server
// (unknown elements and attributes, bad endpoints, durations and enums,
// duplicate adapter names and addresses, unreadable token files) and report
// every problem at once as Problems, one "file:line: message" per problem.
// Default returns the embedded default configuration that connectserver runs
// with when no --config is given.
//
// The package does not know the bearers' own attributes: a bearer checks those
// itself when it is created. It imports nothing of Connect but the bearer
// contract.
package config

import (
	_ "embed"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bearerkit/connect/bearers"
)

// Defaults for settings the file leaves out.
const (
	DefaultHTTPAddr            = "127.0.0.1:8080"
	DefaultLogLevel            = "info"
	DefaultLogFormat           = "text"
	DefaultRegistrationTimeout = 10 * time.Second
	DefaultPluginStartTimeout  = 10 * time.Second
	DefaultRestartBackoffMin   = 100 * time.Millisecond
	DefaultRestartBackoffMax   = 30 * time.Second
	DefaultLinger              = 10 * time.Minute
	DefaultPingFrequency       = 5 * time.Second
	DefaultPingWindowFactor    = 2
	// DefaultMaxRetries bounds socket creation and port discovery
	// attempts (<resume maxRetries>, runner and client --maxRetries).
	DefaultMaxRetries = 10
	// DefaultMaxControlConnectionRestarts bounds how many times in a row
	// a client or runner recreates its control connection without
	// attaching (--maxControlConnectionRestarts).
	DefaultMaxControlConnectionRestarts = 10
)

// Bounds of the <resume> settings.
const (
	MinPingFrequency    = 10 * time.Millisecond
	MaxPingFrequency    = time.Hour
	MinPingWindowFactor = 2
	MaxPingWindowFactor = 100
	// MaxRetriesLimit bounds maxRetries and maxControlConnectionRestarts.
	MaxRetriesLimit = 1000
)

// MaxFileSize is the largest configuration file Load and Parse accept.
const MaxFileSize = 1 << 20

// DefaultFile is the File name of the embedded default configuration.
const DefaultFile = "<embedded default.xml>"

// StockTypes maps the stock bearers' type ids to the endpoint scheme each
// serves. An adapter of a stock type needs no plugin attribute.
var StockTypes = map[string]string{
	"connect.bearer.tcp": "tcp",
	"connect.bearer.udp": "udp",
	"connect.bearer.ssl": "ssl",
}

// Server is a loaded, validated server configuration.
type Server struct {
	// File is the configuration file's name as given to Load or Parse
	// (DefaultFile for the embedded default).
	File string
	// HTTPAddr is the HTTP API's host:port, "" when it is off.
	HTTPAddr string
	// StateDir is the configured state directory (absolute), "" when the
	// file does not set one. Flags and $CONNECT_STATE_DIR take precedence.
	StateDir string
	// Log is the logging setup.
	Log Log
	// Auth is how clients authenticate.
	Auth Auth
	// RegistrationTimeout is how long a new connection may take to register.
	RegistrationTimeout time.Duration
	// Plugins are the plugin host's timings.
	Plugins Plugins
	// Resume holds the resume streams' settings: linger window and pings.
	Resume Resume
	// Adapters are the connection adapters (bearers listening on
	// endpoints), in file order.
	Adapters []Adapter
	// Services are the services the server hosts, in file order.
	Services []Service
	// Policy holds the access rules; nil when the file has none.
	Policy *Policy
	// RemoteServices says which clients may provide services as runners
	// (remoteservicerunner); nil when the file has no <remoteServices>:
	// then every authenticated client may. Its rules select clients like
	// the policy's; Methods and When are always empty.
	RemoteServices *Policy
	// Configuration holds the named configuration groups that the built-in
	// Configuration service publishes as runtime data.
	Configuration []ConfigGroup
	// Diagnostics says what the server measures and shows.
	Diagnostics Diagnostics
	// Tunnels are the TCP targets clients may reach through tunnel
	// streams, in file order (tunnel.go).
	Tunnels []Tunnel
}

// Dashboard access modes (<diagnostics dashboard="..">).
const (
	DashboardLoopback = "loopback" // only requests from a loopback address (the default)
	DashboardAny      = "any"      // whoever reaches the HTTP address
	DashboardOff      = "off"      // no dashboard, no /diagnostics endpoints
)

// Diagnostics is the <diagnostics> element (docs/DIAGNOSTICS.md).
type Diagnostics struct {
	// Enabled turns the measurements on (the default): per-client bytes,
	// messages and round trips, call latencies, the server's keepalive
	// pings, the once-a-second snapshot. Off, only the plain counters of
	// /metrics remain.
	Enabled bool
	// Dashboard is who may see the web dashboard and the /diagnostics
	// endpoints on the HTTP address: DashboardLoopback, DashboardAny or
	// DashboardOff.
	Dashboard string
}

// ConfigGroup is a <group> of <configuration>: named, typed values.
type ConfigGroup struct {
	Name   string        `json:"name"`
	Values []ConfigValue `json:"values"`
	Line   int           `json:"-"`
}

// ConfigValue is one <value name=".." type="int|float|bool|string" value=".."/>.
type ConfigValue struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
	Line  int    `json:"-"`
}

// Service is a <service> element: a service the server hosts, either built
// into connectserver or run from its plugin executable.
type Service struct {
	// Name is the service's name; the plugin must describe itself as it.
	Name string
	// Builtin names a service built into connectserver ("" for a plugin).
	Builtin string
	// Plugin is the service plugin executable (absolute), "" for a built-in.
	Plugin string
	// File is the service file (absolute) the plugin is expected to serve,
	// if the configuration names one; check validates it.
	File string
	// Line is the element's line in the configuration file.
	Line int
}

// Log is the logging setup.
type Log struct {
	// Level is debug, info, warn or error.
	Level string
	// Format is text or json.
	Format string
}

// Auth is how clients authenticate.
type Auth struct {
	// Tokens are the accepted client tokens. When empty, the server
	// generates one in its state directory.
	Tokens []string
	// AllowCertificates lets a client certificate verified by a secure
	// bearer authenticate the client without a token.
	AllowCertificates bool
	// TokenNames maps a token to the name its <token name=".."> gave it,
	// for policies and logs (tokens without a name are absent).
	TokenNames map[string]string
}

// Policy is the <policy> element: access rules, first match wins. A
// server without a <policy> allows every authenticated client everything.
type Policy struct {
	// Default is what happens when no rule matches: "deny" (the default
	// once a <policy> exists) or "allow".
	Default string
	Rules   []Rule
	Line    int
}

// Rule is an <allow> or <deny> element. A rule matches when every selector
// it gives matches; a selector left out matches anything.
type Rule struct {
	Allow    bool
	Service  string   // a service name, or "*"
	Methods  []string // nil: the session and every method; else these methods
	Client   string   // a client id
	Identity string   // a certificate identity, e.g. "CN=alice"
	Token    string   // a token's name (<token name="..">)
	When     *Condition
	Line     int
}

// Condition is a rule's when="PATH OP VALUE" on the service's runtime data.
type Condition struct {
	Path, Op, Value string
}

// Plugins are the plugin host's timings.
type Plugins struct {
	// StartTimeout is how long a plugin may take to start and hand shake.
	StartTimeout time.Duration
	// RestartBackoffMin and RestartBackoffMax bound the delay before a
	// crashed plugin is restarted; the delay doubles from min up to max.
	RestartBackoffMin time.Duration
	RestartBackoffMax time.Duration
}

// Resume is the <resume> element: how long a client's sessions outlive its
// connection, and how a dead path is detected.
type Resume struct {
	// Linger is how long a client's resume stream (and its sessions)
	// survives without a connection; then the sessions end with the
	// reason "expired".
	Linger time.Duration
	// PingFrequency is the keepalive interval: each side of a stream
	// pings after this long without writing (announced to clients in
	// Welcome).
	PingFrequency time.Duration
	// PingWindowFactor: a side that received nothing for PingWindowFactor
	// × PingFrequency declares the path dead and resumes on a new
	// connection.
	PingWindowFactor int
	// SecondaryBindPort is the TCP port of the server's secondary
	// endpoint, where runners that do not listen connect when the server
	// asks them over their control connection, and where clients open
	// the direct links relayed to such runners (docs/REMOTE.md, "Runners
	// that do not listen"). 0: an ephemeral port.
	SecondaryBindPort int
	// SecondaryConnectPort is the port runners and clients are told to
	// dial for the secondary endpoint, for a server behind address
	// translation; 0: the bound port.
	SecondaryConnectPort int
	// MaxRetries bounds the attempts to create the secondary endpoint's
	// socket (binding its port) before the server gives up.
	MaxRetries int
}

// PingWindow is PingWindowFactor × PingFrequency.
func (r Resume) PingWindow() time.Duration {
	return time.Duration(r.PingWindowFactor) * r.PingFrequency
}

// Adapter is a connection adapter: one bearer listening on one endpoint.
type Adapter struct {
	// Name identifies the adapter in logs and metrics; unique. It defaults
	// to the last part of the type ("tcp" for connect.bearer.tcp).
	Name string
	// Type is the bearer type id, for example connect.bearer.tcp.
	Type string
	// Plugin is the bearer's executable as an absolute path, or "" for a
	// stock bearer built into connectserver. A relative path in the file is
	// resolved against the configuration file's directory.
	Plugin string
	// Address is the endpoint the bearer listens on.
	Address bearers.Endpoint
	// Attributes are the bearer's own settings (never nil after Parse).
	Attributes bearers.Attributes
	// Line is the adapter's line in the file, 0 when it did not come from
	// the file (for example from --listen).
	Line int
}

// IsStock reports whether the adapter's type is a stock bearer type (built
// in, unless Plugin overrides it with an external executable).
func (a Adapter) IsStock() bool {
	_, ok := StockTypes[a.Type]
	return ok
}

//go:embed default.xml
var defaultXML []byte

// DefaultXML returns a copy of the embedded default configuration's XML.
func DefaultXML() []byte {
	return append([]byte(nil), defaultXML...)
}

// Default returns the embedded default configuration: tcp, udp and ssl
// bearers on loopback and the HTTP API on 127.0.0.1:8080. Every call returns
// a fresh copy that the caller may change.
//
// The embedded file is part of the program and is tested to parse; Default
// panics only if a build broke that invariant.
func Default() *Server {
	s, err := Parse(DefaultFile, defaultXML)
	if err != nil {
		panic(fmt.Sprintf("config: embedded default configuration is invalid:\n%v", err))
	}
	return s
}

// Load reads and parses the configuration file at path. Relative paths in the
// file (plugins, token files, the state directory) are resolved against the
// file's directory. On any problem it returns a nil Server and Problems.
func Load(path string) (*Server, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Problems{{File: path, Msg: fmt.Sprintf("cannot read configuration: %v", unwrapPath(err))}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, Problems{{File: path, Msg: fmt.Sprintf("cannot read configuration: %v", unwrapPath(err))}}
	}
	return Parse(path, data)
}

// Parse parses a configuration held in memory. file names it in problems and
// locates relative paths: they are resolved against file's directory (the
// working directory when file has none). On any problem it returns a nil
// Server and Problems listing every problem found, sorted by line.
func Parse(file string, data []byte) (*Server, error) {
	return newParser(file, data).run()
}

// unwrapPath drops the operation and path from an *os.PathError, which the
// caller already names.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
