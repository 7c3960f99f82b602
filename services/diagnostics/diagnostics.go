// Package diagnostics is Connect's built-in Diagnostics service,
// "Diagnostics" (version 1.0), and the shape of the figures it carries:
// Snapshot, the one document that the server's measurements produce and
// that every view shows (the service's runtime data, GET /diagnostics, the
// dashboard, connectclient top, /metrics).
//
// The server measures (package core); about once a second it publishes a
// Snapshot to this service, which holds it as runtime data like any service
// holds its state, so that clients watch it ("connectclient watch
// Diagnostics clients") and GET /serviceruntimedata/Diagnostics returns it
// as typed JSON. The runtime data's names are the JSON names of Snapshot,
// so that the typed JSON of the whole tree decodes into a Snapshot with
// encoding/json.
//
// connectserver runs the service as a plugin subprocess through package
// builtin, with <service name="Diagnostics" builtin="diagnostics"/> in its
// configuration, and hands it a random key in the environment variable
// EnvKey: the publish method refuses callers without it, so that no client
// can forge the figures. Its methods:
//
//	snapshot() returns string              the latest figures as JSON
//	publish(key string, snapshot string)   used by the server only
package diagnostics

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// The service's identity.
const (
	ServiceName    = "Diagnostics"
	ServiceVersion = "1.0"
)

// EnvKey is the environment variable that carries the server's publishing
// key to the plugin process. Without it the service refuses every publish.
const EnvKey = "CONNECT_DIAGNOSTICS_KEY"

// XML is the service file.
//
//go:embed diagnostics.xml
var XML []byte

// Snapshot is every figure the server measures, at one moment. Lists are
// never nil in a published snapshot (see Normalize): typed JSON has no null.
type Snapshot struct {
	Server   Server    `json:"server"`
	Totals   Totals    `json:"totals"`
	Clients  []Client  `json:"clients"`
	Sessions []Session `json:"sessions"`
	Services []Service `json:"services"`
	Bearers  []Bearer  `json:"bearers"`
	Plugins  []Plugin  `json:"plugins"`
}

// Server describes the server process.
type Server struct {
	ID                 string  `json:"id"`
	Version            string  `json:"version"`
	TimeUnixMillis     int64   `json:"timeUnixMillis"`
	StartedUnixMillis  int64   `json:"startedUnixMillis"`
	UptimeSeconds      float64 `json:"uptimeSeconds"`
	PID                int64   `json:"pid"`
	RSSBytes           int64   `json:"rssBytes"`
	Goroutines         int64   `json:"goroutines"`
	PingIntervalMillis int64   `json:"pingIntervalMillis"`
	Clients            int64   `json:"clients"`
	Connecting         int64   `json:"connecting"`
	Sessions           int64   `json:"sessions"`
	ListLimit          int64   `json:"listLimit"`
}

// Totals are server-wide counters since the start, and their rates.
type Totals struct {
	Connections          int64   `json:"connections"`
	Registrations        int64   `json:"registrations"`
	RegistrationFailures int64   `json:"registrationFailures"`
	PingsAnswered        int64   `json:"pingsAnswered"`
	BytesIn              int64   `json:"bytesIn"`
	BytesOut             int64   `json:"bytesOut"`
	BytesInPerSec        float64 `json:"bytesInPerSec"`
	BytesOutPerSec       float64 `json:"bytesOutPerSec"`
	MessagesIn           int64   `json:"messagesIn"`
	MessagesOut          int64   `json:"messagesOut"`
	MessagesInPerSec     float64 `json:"messagesInPerSec"`
	MessagesOutPerSec    float64 `json:"messagesOutPerSec"`
	Calls                int64   `json:"calls"`
	CallsPerSec          float64 `json:"callsPerSec"`
	CallErrors           int64   `json:"callErrors"`
}

// Client is a registered client connection.
type Client struct {
	ID                       string  `json:"id"`
	Name                     string  `json:"name"`
	Bearer                   string  `json:"bearer"`
	BearerType               string  `json:"bearerType"`
	Remote                   string  `json:"remote"`
	Auth                     string  `json:"auth"`
	State                    string  `json:"state"`
	ConnectedSinceUnixMillis int64   `json:"connectedSinceUnixMillis"`
	RTTLastMicros            float64 `json:"rttLastMicros"`
	RTTMinMicros             float64 `json:"rttMinMicros"`
	RTTAvgMicros             float64 `json:"rttAvgMicros"`
	RTTMaxMicros             float64 `json:"rttMaxMicros"`
	RTTSamples               int64   `json:"rttSamples"`
	BytesIn                  int64   `json:"bytesIn"`
	BytesOut                 int64   `json:"bytesOut"`
	BytesInPerSec            float64 `json:"bytesInPerSec"`
	BytesOutPerSec           float64 `json:"bytesOutPerSec"`
	MessagesIn               int64   `json:"messagesIn"`
	MessagesOut              int64   `json:"messagesOut"`
	MessagesInPerSec         float64 `json:"messagesInPerSec"`
	MessagesOutPerSec        float64 `json:"messagesOutPerSec"`
	Sessions                 int64   `json:"sessions"`
	Resumes                  int64   `json:"resumes"`
	LinkBreaks               int64   `json:"linkBreaks"`
	ReplayBufferedBytes      int64   `json:"replayBufferedBytes"`
	ReplayBufferedMessages   int64   `json:"replayBufferedMessages"`
}

// Traffic is the client's current byte rate, in and out: what lists and
// views sort by (then by total bytes).
func (c *Client) Traffic() float64 { return c.BytesInPerSec + c.BytesOutPerSec }

// Link is a link a session uses.
type Link struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	MessagesIn  int64  `json:"messagesIn"`
	MessagesOut int64  `json:"messagesOut"`
}

// Session is an open client session.
type Session struct {
	ID              string `json:"id"`
	Service         string `json:"service"`
	ClientID        string `json:"clientId"`
	SinceUnixMillis int64  `json:"sinceUnixMillis"`
	Calls           int64  `json:"calls"`
	Subscriptions   int64  `json:"subscriptions"`
	Watches         int64  `json:"watches"`
	MessagesIn      int64  `json:"messagesIn"`
	MessagesOut     int64  `json:"messagesOut"`
	Links           []Link `json:"links"`
}

// Service is a hosted service.
type Service struct {
	Name             string  `json:"name"`
	Version          string  `json:"version"`
	State            string  `json:"state"`
	Sessions         int64   `json:"sessions"`
	Calls            int64   `json:"calls"`
	CallsPerSec      float64 `json:"callsPerSec"`
	Errors           int64   `json:"errors"`
	Events           int64   `json:"events"`
	LatencyP50Micros float64 `json:"latencyP50Micros"`
	LatencyP99Micros float64 `json:"latencyP99Micros"`
	LatencyCalls     int64   `json:"latencyCalls"`
}

// Bearer is a connection adapter.
type Bearer struct {
	Name           string  `json:"name"`
	Type           string  `json:"type"`
	Endpoint       string  `json:"endpoint"`
	State          string  `json:"state"`
	Connections    int64   `json:"connections"`
	Clients        int64   `json:"clients"`
	BytesIn        int64   `json:"bytesIn"`
	BytesOut       int64   `json:"bytesOut"`
	BytesInPerSec  float64 `json:"bytesInPerSec"`
	BytesOutPerSec float64 `json:"bytesOutPerSec"`
	AcceptErrors   int64   `json:"acceptErrors"`
}

// Plugin is a plugin subprocess.
type Plugin struct {
	Kind            string `json:"kind"` // "bearer" or "service"
	Name            string `json:"name"`
	State           string `json:"state"`
	PID             int64  `json:"pid"`
	Restarts        int64  `json:"restarts"`
	RSSBytes        int64  `json:"rssBytes"`
	SinceUnixMillis int64  `json:"sinceUnixMillis"`
	LastError       string `json:"lastError"`
}

// Normalize replaces nil lists by empty ones, so that the snapshot's JSON
// is typed JSON of the service's runtime data.
func (s *Snapshot) Normalize() {
	if s.Clients == nil {
		s.Clients = []Client{}
	}
	if s.Sessions == nil {
		s.Sessions = []Session{}
	}
	for i := range s.Sessions {
		if s.Sessions[i].Links == nil {
			s.Sessions[i].Links = []Link{}
		}
	}
	if s.Services == nil {
		s.Services = []Service{}
	}
	if s.Bearers == nil {
		s.Bearers = []Bearer{}
	}
	if s.Plugins == nil {
		s.Plugins = []Plugin{}
	}
}

// New returns a new Diagnostics service that accepts figures published
// with key (none when key is empty).
func New(key string) *serviceplugin.Service {
	d := &diag{key: key}
	d.svc = &serviceplugin.Service{
		XML: XML,
		Methods: map[string]serviceplugin.MethodFunc{
			"snapshot": d.snapshot,
			"publish":  d.publish,
		},
	}
	return d.svc
}

// FromEnv returns a new Diagnostics service with the key in EnvKey.
func FromEnv() (*serviceplugin.Service, error) {
	return New(os.Getenv(EnvKey)), nil
}

type diag struct {
	svc *serviceplugin.Service
	key string
}

func (d *diag) snapshot(context.Context, *serviceplugin.Call) (any, error) {
	v, err := d.svc.Get("")
	if err != nil {
		return nil, err
	}
	b, err := services.MarshalJSON(d.svc.Description().Data.Type, v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func (d *diag) publish(_ context.Context, c *serviceplugin.Call) (any, error) {
	if d.key == "" || subtle.ConstantTimeCompare([]byte(c.String("key")), []byte(d.key)) != 1 {
		return nil, serviceplugin.Errorf(serviceplugin.CodeApplication, "Diagnostics.publish is for the server only: the key is wrong")
	}
	doc := []byte(c.String("snapshot"))
	v, err := services.UnmarshalJSON(d.svc.Description().Data.Type, doc)
	if err != nil {
		return nil, serviceplugin.Errorf(serviceplugin.CodeInvalidArgument, "the snapshot is not the runtime data of %s: %v", ServiceName, err)
	}
	if err := d.svc.Set("", v); err != nil {
		return nil, fmt.Errorf("publishing the snapshot: %w", err)
	}
	return nil, nil
}

// Decode reads a snapshot from JSON: the typed JSON of the runtime data
// (GET /serviceruntimedata/Diagnostics) or GET /diagnostics.
func Decode(data []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("diagnostics: not a snapshot: %w", err)
	}
	s.Normalize()
	return &s, nil
}
