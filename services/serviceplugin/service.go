package serviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// MethodFunc implements one method of the service. ctx ends at the caller's
// deadline, when the caller gives up, when the call's session closes and
// when the host goes away; a method that may take long should watch it.
//
// The result must be a value of the method's return type (as
// services.Normalize accepts it: an int for an int, a map[string]any for a
// struct, ...), or nil for a method that returns nothing. An error becomes
// the caller's error: an *Error keeps its code, ctx's own errors become
// CodeDeadlineExceeded or CodeCanceled, anything else CodeApplication with
// the error's text.
type MethodFunc func(ctx context.Context, call *Call) (any, error)

// Service is a service served by this plugin: its XML service file and its
// Go implementation. Fill in the exported fields, then pass the *Service to
// Serve (or NewTestHost); do not change them afterwards, and do not copy a
// Service once it is in use.
type Service struct {
	// XML is the service file's text (usually //go:embed'ed). Exactly one
	// of XML and XMLPath is set.
	XML []byte
	// XMLPath is the service file's path, read once, when the service is
	// first used.
	XMLPath string
	// Methods maps every method the service file declares to its
	// implementation; a declared method without one, or an entry the file
	// does not declare, is an error when the service starts.
	Methods map[string]MethodFunc
	// OnSessionOpen, if set, is called when a client opens a session with
	// the service, before any call in the session runs. An error refuses
	// the session; the client gets it. ctx ends at the host's deadline for
	// opening the session.
	OnSessionOpen func(ctx context.Context, s *Session) error
	// OnSessionClose, if set, is called once a session that was opened
	// ends, with why ("closed by client", "host disconnected", ...). The
	// session's context is already cancelled.
	OnSessionClose func(ctx context.Context, s *Session, reason string)
	// MaxConcurrentCalls bounds the calls running at once; beyond it a call
	// fails at once with CodeOverloaded (it never waits behind a slow one).
	// Default 10000.
	MaxConcurrentCalls int
	// Logger receives the service's own log lines (panics with their
	// stacks, contract problems). Default: slog.Default(), which Serve sends
	// to the host.
	Logger *slog.Logger

	initOnce sync.Once
	desc     *servicefile.Service
	xmlText  []byte
	initErr  error

	mu   sync.Mutex // guards data and conn
	data *services.DataTree
	conn *conn // the connected host, nil while none is
}

// init loads and checks the service once.
func (s *Service) init() error {
	s.initOnce.Do(func() { s.initErr = s.load() })
	return s.initErr
}

func (s *Service) load() error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.MaxConcurrentCalls <= 0 {
		s.MaxConcurrentCalls = 10000
	}
	var (
		desc *servicefile.Service
		err  error
	)
	switch {
	case len(s.XML) > 0 && s.XMLPath != "":
		return errors.New("serviceplugin: both Service.XML and Service.XMLPath are set; set one")
	case len(s.XML) > 0:
		s.xmlText = s.XML
		desc, err = servicefile.Parse("service.xml", s.XML)
	case s.XMLPath != "":
		desc, err = servicefile.Load(s.XMLPath)
		if err == nil {
			// Load checked the file; read the same bytes for Describe.
			s.xmlText, err = os.ReadFile(s.XMLPath)
		}
	default:
		return errors.New("serviceplugin: Service.XML and Service.XMLPath are both empty; set one to the service file")
	}
	if err != nil {
		return fmt.Errorf("serviceplugin: the service file is not valid:\n%w", err)
	}
	var problems []string
	for _, m := range desc.Methods {
		if s.Methods[m.Name] == nil {
			problems = append(problems, fmt.Sprintf("method %s (line %d) has no implementation in Service.Methods", m.Name, m.Line))
		}
	}
	var extra []string
	for name := range s.Methods {
		if desc.Method(name) == nil {
			extra = append(extra, fmt.Sprintf("Service.Methods has %q, which the service file does not declare (methods: %s)", name, methodNames(desc)))
		}
	}
	sort.Strings(extra)
	problems = append(problems, extra...)
	if len(problems) > 0 {
		return fmt.Errorf("serviceplugin: service %s: %s", desc.Name, strings.Join(problems, "; "))
	}
	data, err := services.NewDataTree(desc.Data)
	if data != nil {
		data.MaxValueSize = MaxPayload
	}
	if err != nil {
		return fmt.Errorf("serviceplugin: service %s: runtime data defaults: %w", desc.Name, err)
	}
	s.desc, s.data = desc, data
	return nil
}

func methodNames(d *servicefile.Service) string {
	if len(d.Methods) == 0 {
		return "none"
	}
	names := make([]string, len(d.Methods))
	for i, m := range d.Methods {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

func eventNames(d *servicefile.Service) string {
	if len(d.Events) == 0 {
		return "none"
	}
	names := make([]string, len(d.Events))
	for i, e := range d.Events {
		names[i] = e.Name
	}
	return strings.Join(names, ", ")
}

// Check loads the service file and checks the service: the file is valid,
// and Methods implements exactly the methods it declares. Serve and
// NewTestHost check too; call Check to fail early in your own code.
func (s *Service) Check() error { return s.init() }

// Description returns the parsed service file, or nil if the service is
// not valid (see Check). Do not modify it.
func (s *Service) Description() *servicefile.Service {
	if s.init() != nil {
		return nil
	}
	return s.desc
}

// Emit sends event to every session of the service. args holds every
// argument of the event by name, as services.Normalize accepts them; they
// are checked against the service file before anything is sent. Emit waits
// while the host is slower than the events (backpressure), until ctx ends;
// it fails with ErrNotConnected when no host is connected.
func (s *Service) Emit(ctx context.Context, event string, args map[string]any) error {
	return s.emit(ctx, "", event, args)
}

// EmitTo sends event to one session only.
func (s *Service) EmitTo(ctx context.Context, sessionID, event string, args map[string]any) error {
	if sessionID == "" {
		return fmt.Errorf("serviceplugin: emit %s: empty session id (use Emit for every session)", event)
	}
	return s.emit(ctx, sessionID, event, args)
}

func (s *Service) emit(ctx context.Context, sessionID, event string, args map[string]any) error {
	if err := s.init(); err != nil {
		return err
	}
	ev := s.desc.Event(event)
	if ev == nil {
		return fmt.Errorf("serviceplugin: emit %q: service %s has no such event (events: %s)", event, s.desc.Name, eventNames(s.desc))
	}
	enc, err := services.AppendArgs(nil, ev.Args, args)
	if err != nil {
		return fmt.Errorf("serviceplugin: emit %s: %w", event, err)
	}
	if len(enc) > MaxPayload {
		return fmt.Errorf("serviceplugin: emit %s: the arguments take %d bytes, more than a message carries (%d)", event, len(enc), MaxPayload)
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("serviceplugin: emit %s: %w", event, ErrNotConnected)
	}
	if sessionID != "" && c.session(sessionID) == nil {
		return fmt.Errorf("serviceplugin: emit %s to session %q: the session is not open", event, sessionID)
	}
	msg := &servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Event{Event: &servicepb.Event{Name: event, Args: enc, SessionId: sessionID}}}
	if err := c.out.push(ctx, msg); err != nil {
		if errors.Is(err, ErrClosed) {
			err = ErrNotConnected
		}
		return fmt.Errorf("serviceplugin: emit %s: %w", event, err)
	}
	return nil
}

// Set sets the runtime-data node at path to v, checked against the node's
// type in the service file, and publishes the change to the host. A path
// walks the data tree's value: an object's child or a struct's field by
// name, a list's element by index ("player.volume", "player.queue",
// "player.queue.2", "player.queue.2.title"); an index must exist (to
// change a list's length, set the whole list). "" is the whole tree.
//
// Set never waits: runtime data is state, not a log, so when the host is
// slower than the updates, updates of a path not yet sent are replaced by
// the newest (a host always sees the latest value, and sees it before any
// event emitted after the Set). Without a host, Set only changes the value
// a host will get when it connects.
func (s *Service) Set(path string, v any) error {
	if err := s.init(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	enc, err := s.data.Set(path, v)
	if err != nil {
		return fmt.Errorf("serviceplugin: set %s: %w", pathName(path), err)
	}
	if s.conn != nil {
		s.conn.out.pushData(path, &servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Data{Data: &servicepb.DataUpdate{Path: path, Value: enc}}})
	}
	return nil
}

// Get returns a copy of the runtime-data node at path (see Set), in the
// canonical Go representation of package services.
func (s *Service) Get(path string) (any, error) {
	if err := s.init(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.data.Get(path)
	if err != nil {
		return nil, fmt.Errorf("serviceplugin: get %s: %w", pathName(path), err)
	}
	return v, nil
}

func pathName(path string) string {
	if path == "" {
		return "the whole data tree"
	}
	return path
}

// Sessions returns the sessions open now, in no particular order.
func (s *Service) Sessions() []*Session {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.openSessions()
}

// Session returns the open session with id, or nil.
func (s *Service) Session(id string) *Session {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return nil
	}
	if ss := c.session(id); ss != nil && ss.isOpen() {
		return ss
	}
	return nil
}

// Call is one method call, as a MethodFunc sees it.
type Call struct {
	// ID is the call's id on the host's stream (for logs).
	ID uint64
	// Method is the method's declaration in the service file.
	Method *servicefile.Method
	// Session is the session the call belongs to; nil for a call outside
	// any session (from the server's HTTP API, for example).
	Session *Session
	// Args holds every argument by name, decoded and checked against the
	// service file, in the canonical Go representation of package
	// services (int64, float64, bool, string, []byte, []any,
	// map[string]any). The method may keep and modify it.
	Args map[string]any
	// Service is the service being called, for Emit and Set.
	Service *Service
}

func (c *Call) arg(name string, want servicefile.Kind, accessor string) any {
	var f *servicefile.Field
	for _, a := range c.Method.Args {
		if a.Name == name {
			f = a
		}
	}
	if f == nil {
		panic(fmt.Sprintf("serviceplugin: Call.%s(%q): method %s has no argument %s", accessor, name, c.Method.Name, name))
	}
	if want != 0 && f.Type.Kind != want {
		panic(fmt.Sprintf("serviceplugin: Call.%s(%q): argument %s of method %s is a %s", accessor, name, name, c.Method.Name, f.Type))
	}
	return c.Args[name]
}

// Arg returns argument name. Asking for an argument the method does not
// declare is a bug in the service: it panics, which the caller gets as a
// CodePanic error. So do the typed accessors below, for an argument of
// another type.
func (c *Call) Arg(name string) any { return c.arg(name, 0, "Arg") }

// Int returns int argument name.
func (c *Call) Int(name string) int64 { v, _ := c.arg(name, servicefile.Int, "Int").(int64); return v }

// Float returns float argument name.
func (c *Call) Float(name string) float64 {
	v, _ := c.arg(name, servicefile.Float, "Float").(float64)
	return v
}

// Bool returns bool argument name.
func (c *Call) Bool(name string) bool { v, _ := c.arg(name, servicefile.Bool, "Bool").(bool); return v }

// String returns string argument name.
func (c *Call) String(name string) string {
	v, _ := c.arg(name, servicefile.String, "String").(string)
	return v
}

// Binary returns binary argument name.
func (c *Call) Binary(name string) []byte {
	v, _ := c.arg(name, servicefile.Binary, "Binary").([]byte)
	return v
}

// List returns list argument name.
func (c *Call) List(name string) []any {
	v, _ := c.arg(name, servicefile.List, "List").([]any)
	return v
}

// Struct returns struct argument name.
func (c *Call) Struct(name string) map[string]any {
	v, _ := c.arg(name, servicefile.Struct, "Struct").(map[string]any)
	return v
}

// Session is a client's open use of the service.
type Session struct {
	// ID is the session id the host gave the session.
	ID string
	// ClientID is the persistent id of the session's client.
	ClientID string

	svc    *Service
	ctx    context.Context
	cancel context.CancelCauseFunc
	opened chan struct{} // closed once OnSessionOpen returned
	err    error         // OnSessionOpen's error; read after opened is closed
}

// Context is cancelled when the session ends; context.Cause says why.
func (s *Session) Context() context.Context { return s.ctx }

// Emit sends event to this session only (see Service.Emit).
func (s *Session) Emit(ctx context.Context, event string, args map[string]any) error {
	return s.svc.EmitTo(ctx, s.ID, event, args)
}

func (s *Session) isOpen() bool {
	select {
	case <-s.opened:
		return s.err == nil && s.ctx.Err() == nil
	default:
		return false
	}
}
