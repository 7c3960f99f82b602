package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/session"
)

const commandUsage = `  ping                                 connect, register and measure round trips (--count, --interval)
  services                             list the server's services
  describe SERVICE                     show a service's methods, events, types and runtime data
                                       (--xml: the service file itself; --routing: a session's routing document)
  call SERVICE.METHOD [name=value]...  call a method; each value is typed from the service file:
                                       int 42, float 1.5, bool true, string as is, binary base64 or hex:00ff,
                                       lists and structs as JSON ('[1,2]', '{"x":1}'); a list argument may
                                       also be given once per element (values=1 values=2)
  events SERVICE [EVENT]...            print the service's events (all, or those named) until interrupted
                                       or --count N
  watch SERVICE [PATH]                 print the runtime data at PATH (default: all of it), then its
                                       changes, until interrupted or --count N
  top [--json]                         live view of the server's figures (the Diagnostics service), sorted by
                                       traffic; q quits; --json prints one snapshot
  tunnel --service NAME [--listen ADDR]  accept local TCP connections on ADDR (default 127.0.0.1:0) and
                                       carry each through its own resumable stream to the server's tunnel
                                       NAME; prints where it listens; runs until interrupted
  version                              print the version
`

// serviceCommand runs services, describe, call, events and watch.
func serviceCommand(o *options, cmd string, args []string, stdout, stderr io.Writer) error {
	var run func(ctx context.Context, c *client.Client) error
	switch cmd {
	case "services":
		if len(args) != 0 {
			return cli.Usagef("services takes no arguments")
		}
		run = func(ctx context.Context, c *client.Client) error { return listServices(ctx, o, c, stdout) }
	case "describe":
		if len(args) != 1 {
			return cli.Usagef("usage: describe SERVICE [--xml | --routing]")
		}
		if o.xml && o.routing {
			return cli.Usagef("--xml and --routing exclude each other")
		}
		run = func(ctx context.Context, c *client.Client) error { return describe(ctx, o, c, args[0], stdout, stderr) }
	case "call":
		if len(args) < 1 {
			return cli.Usagef("usage: call SERVICE.METHOD [name=value]...")
		}
		i := strings.LastIndexByte(args[0], '.')
		if i <= 0 || i == len(args[0])-1 {
			return cli.Usagef("call %q: want SERVICE.METHOD (for example example.echo.add)", args[0])
		}
		service, method := args[0][:i], args[0][i+1:]
		pairs, err := splitArgs(args[1:])
		if err != nil {
			return err
		}
		run = func(ctx context.Context, c *client.Client) error {
			return call(ctx, o, c, service, method, pairs, stdout, stderr)
		}
	case "events":
		if len(args) < 1 {
			return cli.Usagef("usage: events SERVICE [EVENT]...")
		}
		if o.count < 0 {
			return cli.Usagef("--count must not be negative")
		}
		run = func(ctx context.Context, c *client.Client) error {
			return events(ctx, o, c, args[0], args[1:], stdout, stderr)
		}
	case "watch":
		if len(args) < 1 || len(args) > 2 {
			return cli.Usagef("usage: watch SERVICE [PATH]")
		}
		if o.count < 0 {
			return cli.Usagef("--count must not be negative")
		}
		path := ""
		if len(args) == 2 {
			path = args[1]
		}
		run = func(ctx context.Context, c *client.Client) error {
			return watch(ctx, o, c, args[0], path, stdout, stderr)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, _, _, closeAll, err := dial(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	return run(ctx, c)
}

// request bounds one request by --timeout.
func request(ctx context.Context, o *options) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.timeout)
}

// streamRequest bounds the start of events and watch by --timeout; after
// a lost connection, starting again waits as long as it takes (until
// interrupted), since the client keeps reconnecting.
func streamRequest(ctx context.Context, o *options, again bool) (context.Context, context.CancelFunc) {
	if again {
		return context.WithCancel(ctx)
	}
	return request(ctx, o)
}

func listServices(ctx context.Context, o *options, c *client.Client, stdout io.Writer) error {
	rctx, cancel := request(ctx, o)
	defer cancel()
	list, err := c.Services(rctx)
	if err != nil {
		return err
	}
	if o.json {
		if list == nil {
			list = []client.ServiceInfo{}
		}
		return json.NewEncoder(stdout).Encode(map[string]any{"services": list})
	}
	if len(list) == 0 {
		fmt.Fprintln(stdout, "the server hosts no services")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATUS\tDESCRIPTION")
	for _, s := range list {
		status := "available"
		if !s.Available {
			status = "unavailable"
		}
		desc := s.Description
		if s.Runner != "" {
			status += ", remote"
			if s.Available {
				desc = strings.TrimSpace(desc + " (runner " + s.Runner + ")")
			}
		}
		if s.Problem != "" {
			desc = strings.TrimSpace(desc + " (" + s.Problem + ")")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Version, status, desc)
	}
	return tw.Flush()
}

// ---- describe ----

type jsonField struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Description string `json:"description,omitempty"`
}

type jsonMethod struct {
	Name        string      `json:"name"`
	Args        []jsonField `json:"args"`
	Returns     string      `json:"returns,omitempty"`
	Description string      `json:"description,omitempty"`
}

type jsonType struct {
	Name        string      `json:"name"`
	Fields      []jsonField `json:"fields"`
	Description string      `json:"description,omitempty"`
}

// jsonDescription is describe --json.
type jsonDescription struct {
	Name        string         `json:"name"`
	Version     string         `json:"version"`
	Description string         `json:"description,omitempty"`
	Methods     []jsonMethod   `json:"methods"`
	Events      []jsonMethod   `json:"events"`
	Types       []jsonType     `json:"types"`
	Data        []jsonDataNode `json:"data"`
	XML         string         `json:"xml"`
	Routing     string         `json:"routing,omitempty"`
}

type jsonDataNode struct {
	Path        string          `json:"path"`
	Kind        string          `json:"kind"`
	Type        string          `json:"type"`
	Default     json.RawMessage `json:"default,omitempty"`
	Persistent  bool            `json:"persistent,omitempty"`
	Description string          `json:"description,omitempty"`
}

func fields(fs []*servicefile.Field) []jsonField {
	out := make([]jsonField, len(fs))
	for i, f := range fs {
		out[i] = jsonField{Name: f.Name, Type: f.Type.String(), Description: f.Description}
	}
	return out
}

func signature(fs []*servicefile.Field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Name + " " + f.Type.String()
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func describe(ctx context.Context, o *options, c *client.Client, service string, stdout, stderr io.Writer) error {
	rctx, cancel := request(ctx, o)
	defer cancel()
	xmlText, desc, err := c.Describe(rctx, service)
	if err != nil {
		return err
	}
	var routing []byte
	if o.routing {
		s, err := startSession(rctx, c, service, stderr)
		if err != nil {
			return err
		}
		routing = s.Routing()
		s.Close()
	}
	if o.json {
		out := jsonDescription{Name: desc.Name, Version: desc.Version, Description: desc.Description}
		var methods []jsonMethod
		for _, m := range desc.Methods {
			jm := jsonMethod{Name: m.Name, Args: fields(m.Args), Description: m.Description}
			if m.Returns != nil {
				jm.Returns = m.Returns.String()
			}
			methods = append(methods, jm)
		}
		var evs []jsonMethod
		for _, e := range desc.Events {
			evs = append(evs, jsonMethod{Name: e.Name, Args: fields(e.Args), Description: e.Description})
		}
		var types []jsonType
		for _, t := range desc.Types {
			types = append(types, jsonType{Name: t.Name, Fields: fields(t.Fields), Description: t.Description})
		}
		var data []jsonDataNode
		desc.Data.Walk(func(n *servicefile.DataNode) {
			if n.Path == "" {
				return
			}
			jn := jsonDataNode{Path: n.Path, Kind: n.Kind.String(), Type: n.Type.String(), Persistent: n.Persistent, Description: n.Description}
			if n.Default != nil {
				jn.Default, _ = services.MarshalJSON(n.Type, n.Default)
			}
			data = append(data, jn)
		})
		out.Methods, out.Events, out.Types, out.Data = orEmpty(methods), orEmpty(evs), orEmpty(types), orEmpty(data)
		out.XML, out.Routing = string(xmlText), string(routing)
		return json.NewEncoder(stdout).Encode(out)
	}
	if o.xml {
		_, err := stdout.Write(xmlText)
		return err
	}
	if o.routing {
		_, err := stdout.Write(routing)
		return err
	}
	var b strings.Builder
	printDescription(&b, desc)
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		if line == "" {
			continue
		}
		io.WriteString(stdout, strings.TrimRight(line, " \n")+"\n")
	}
	return nil
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printDescription(w io.Writer, desc *servicefile.Service) {
	fmt.Fprintf(w, "service %s %s\n", desc.Name, desc.Version)
	if desc.Description != "" {
		fmt.Fprintf(w, "  %s\n", desc.Description)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	section := func(title string, n int) {
		if n > 0 {
			fmt.Fprintf(tw, "\n%s:\n", title)
		}
	}
	section("methods", len(desc.Methods))
	for _, m := range desc.Methods {
		ret := ""
		if m.Returns != nil {
			ret = " " + m.Returns.String()
		}
		fmt.Fprintf(tw, "  %s%s%s\t%s\n", m.Name, signature(m.Args), ret, m.Description)
	}
	section("events", len(desc.Events))
	for _, e := range desc.Events {
		fmt.Fprintf(tw, "  %s%s\t%s\n", e.Name, signature(e.Args), e.Description)
	}
	section("types", len(desc.Types))
	for _, t := range desc.Types {
		parts := make([]string, len(t.Fields))
		for i, f := range t.Fields {
			parts[i] = f.Name + " " + f.Type.String()
		}
		fmt.Fprintf(tw, "  struct %s { %s }\t%s\n", t.Name, strings.Join(parts, ", "), t.Description)
	}
	section("runtime data", len(desc.Data.Children))
	desc.Data.Walk(func(n *servicefile.DataNode) {
		if n.Path == "" {
			return
		}
		typ := n.Type.String()
		switch n.Kind {
		case servicefile.ObjectNode:
			typ = "object"
		case servicefile.ListNode:
			typ = "list of " + n.Type.Elem.String()
		}
		var notes []string
		if n.Default != nil {
			notes = append(notes, "= "+services.FormatText(n.Type, n.Default))
		}
		if n.Persistent {
			notes = append(notes, "persistent")
		}
		fmt.Fprintf(tw, "  %s\t%s %s\t%s\n", n.Path, typ, strings.Join(notes, ", "), n.Description)
	})
	tw.Flush()
}

// ---- call ----

type pair struct{ name, value string }

// splitArgs splits name=value arguments.
func splitArgs(args []string) ([]pair, error) {
	out := make([]pair, 0, len(args))
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !ok || name == "" {
			return nil, cli.Usagef("argument %q: want name=value", a)
		}
		out = append(out, pair{name, value})
	}
	return out, nil
}

// argumentError names the argument, its type and what is wrong.
func argumentError(f *servicefile.Field, err error) error {
	return fmt.Errorf("argument %s (%s): %s", f.Name, f.Type, problem(err))
}

// problem says what is wrong with a value, without the services package's
// prefix.
func problem(err error) string {
	msg := err.Error()
	var se *services.Error
	if errors.As(err, &se) && se.Err != nil {
		msg = se.Err.Error()
		if se.Path != "" {
			msg = se.Path + ": " + msg
		}
		if se.Offset > 0 {
			msg += fmt.Sprintf(" (at offset %d)", se.Offset)
		}
	}
	return msg
}

// typedArgs parses the arguments by the method's argument types. A list
// argument given once as JSON ('[1,2]') is the list; otherwise each
// occurrence is one element.
func typedArgs(service string, m *servicefile.Method, pairs []pair) (map[string]any, error) {
	given := map[string][]string{}
	var order []string
	for _, p := range pairs {
		if _, seen := given[p.name]; !seen {
			order = append(order, p.name)
		}
		given[p.name] = append(given[p.name], p.value)
	}
	args := map[string]any{}
	for _, name := range order {
		var f *servicefile.Field
		for _, a := range m.Args {
			if a.Name == name {
				f = a
			}
		}
		if f == nil {
			return nil, fmt.Errorf("method %s.%s has no argument %q (arguments: %s)", service, m.Name, name, signature(m.Args))
		}
		vs := given[name]
		isList := f.Type.Kind == servicefile.List
		switch {
		case len(vs) == 1 && (!isList || strings.HasPrefix(strings.TrimLeft(vs[0], " \t\r\n"), "[")):
			v, err := services.ParseText(f.Type, vs[0])
			if err != nil {
				return nil, argumentError(f, err)
			}
			args[name] = v
		case isList:
			elems := make([]any, len(vs))
			for i, s := range vs {
				v, err := services.ParseText(f.Type.Elem, s)
				if err != nil {
					return nil, fmt.Errorf("argument %s (%s): element %d: %s", f.Name, f.Type, i, problem(err))
				}
				elems[i] = v
			}
			args[name] = elems
		default:
			return nil, fmt.Errorf("argument %s (%s) given %d times; only list arguments repeat", name, f.Type, len(vs))
		}
	}
	for _, f := range m.Args {
		if _, ok := args[f.Name]; !ok {
			return nil, fmt.Errorf("missing argument %s (%s); %s.%s takes %s", f.Name, f.Type, service, m.Name, signature(m.Args))
		}
	}
	return args, nil
}

func call(ctx context.Context, o *options, c *client.Client, service, method string, pairs []pair, stdout, stderr io.Writer) error {
	op := fmt.Sprintf("call %s.%s", service, method)
	rctx, cancel := request(ctx, o)
	defer cancel()
	_, desc, err := c.Describe(rctx, service)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	m := desc.Method(method)
	if m == nil {
		names := make([]string, len(desc.Methods))
		for i, m := range desc.Methods {
			names[i] = m.Name
		}
		return fmt.Errorf("%s: service %s has no method %q (methods: %s; connectclient describe %s shows them)", op, service, method, strings.Join(names, ", "), service)
	}
	args, err := typedArgs(service, m, pairs)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s, err := startSession(rctx, c, service, stderr)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer s.Close()
	res, err := s.Call(rctx, method, args)
	if o.linkStats {
		printLinkStats(stderr, s)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("%w (no answer within --timeout %s; raise it for a slow method)", err, o.timeout)
		}
		return err
	}
	if o.json {
		body := []byte("null")
		if m.Returns != nil {
			if body, err = services.MarshalJSON(m.Returns, res); err != nil {
				return fmt.Errorf("%s: result: %w", op, err)
			}
		}
		return json.NewEncoder(stdout).Encode(struct {
			Service string          `json:"service"`
			Method  string          `json:"method"`
			Result  json.RawMessage `json:"result"`
		}{service, method, body})
	}
	if m.Returns != nil {
		fmt.Fprintln(stdout, services.FormatText(m.Returns, res))
	}
	return nil
}

// startSession starts a session and says on stderr where it does
// otherwise than its routing document routes it (a direct link that could
// not be opened, and the fallback taken).
func startSession(ctx context.Context, c *client.Client, service string, stderr io.Writer) (*client.Session, error) {
	s, err := c.StartSession(ctx, service)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Code == session.CodeRefused && strings.Contains(ce.Message, "the client has no connect.bearer.ssl adapter") {
			return nil, fmt.Errorf("%w (connectclient has one with --link-ca FILE, FILE holding the runner's certificate, or --link-insecure)", err)
		}
		return nil, err
	}
	for _, n := range s.Notes() {
		fmt.Fprintf(stderr, "connectclient: note: %s\n", n)
	}
	return s, nil
}

// printLinkStats writes a session's links and their counters (--link-stats).
func printLinkStats(w io.Writer, s *client.Session) {
	for _, st := range s.LinkStats() {
		state := "open"
		if !st.Open {
			state = "down: " + st.Down
		}
		where := ""
		if st.Address != "" {
			where = " " + st.Address
		}
		fmt.Fprintf(w, "connectclient: link %s%s: %s; sent %d messages (%d bytes, %d calls), received %d (%d bytes, %d events, %d data changes)\n",
			st.Link, where, state, st.MessagesSent, st.BytesSent, st.Calls, st.MessagesReceived, st.BytesReceived, st.Events, st.DataChanges)
	}
}

// ---- events and watch ----

// reconnectable reports whether a stream ended because the connection was
// lost (the client reconnects by itself; a new session takes over).
func reconnectable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, client.ErrConnectionLost)
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// sessionFor returns an open session with service that the client took back
// after a restart (--session-file), or starts a new one.
func sessionFor(ctx context.Context, c *client.Client, service string, stderr io.Writer) (*client.Session, error) {
	for _, r := range c.Reclaimed() {
		if r.Session != nil && r.Service == service && r.Session.Err() == nil && !reused[r.ID] {
			reused[r.ID] = true
			fmt.Fprintf(stderr, "connectclient: took back session %s of the previous run\n", r.ID)
			return r.Session, nil
		}
	}
	return startSession(ctx, c, service, stderr)
}

// reused marks the reclaimed sessions already in use (one command runs per
// process, on one goroutine).
var reused = map[string]bool{}

func events(ctx context.Context, o *options, c *client.Client, service string, names []string, stdout, stderr io.Writer) error {
	what := "all events"
	if len(names) > 0 {
		what = strings.Join(names, ", ")
	}
	enc := json.NewEncoder(stdout)
	seen := 0
	for again := false; ; again = true {
		rctx, cancel := streamRequest(ctx, o, again)
		s, err := sessionFor(rctx, c, service, stderr)
		if err != nil {
			cancel()
			return fmt.Errorf("events %s: %w", service, err)
		}
		ch, err := s.Subscribe(ctx, names...)
		cancel()
		if err != nil {
			s.Close()
			return fmt.Errorf("events %s: %w", service, err)
		}
		fmt.Fprintf(stderr, "connectclient: subscribed to %s: %s (session %s); interrupt to stop\n", service, what, s.ID)
		for ev := range ch {
			if ev.Lost > 0 {
				if o.json {
					enc.Encode(jsonEvent{Service: service, Lost: ev.Lost, Time: ev.Time})
				} else {
					fmt.Fprintf(stdout, "%s (lost %d events: this client did not keep up)\n", stamp(ev.Time), ev.Lost)
				}
				continue
			}
			decl := s.Description().Event(ev.Name)
			if o.json {
				args, err := services.MarshalJSON(&servicefile.Type{Kind: servicefile.Struct, Fields: decl.Args}, ev.Args)
				if err != nil {
					return fmt.Errorf("events %s: %s: %w", service, ev.Name, err)
				}
				enc.Encode(jsonEvent{Service: service, Event: ev.Name, Args: args, Time: ev.Time})
			} else {
				var b strings.Builder
				b.WriteString(stamp(ev.Time))
				b.WriteByte(' ')
				b.WriteString(ev.Name)
				for _, a := range decl.Args {
					b.WriteByte(' ')
					b.WriteString(a.Name)
					b.WriteByte('=')
					b.WriteString(textValue(a.Type, ev.Args[a.Name]))
				}
				fmt.Fprintln(stdout, b.String())
			}
			seen++
			if o.count > 0 && seen >= o.count {
				s.Close()
				return nil
			}
		}
		err = s.Err()
		s.Close()
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if !reconnectable(ctx, err) {
			return fmt.Errorf("events %s: %w", service, err)
		}
		fmt.Fprintf(stderr, "connectclient: %v; subscribing again once reconnected (events in between are lost)\n", err)
	}
}

// jsonEvent is one line of events --json: an event, or (Lost > 0) the
// place where events were lost.
type jsonEvent struct {
	Service string          `json:"service"`
	Event   string          `json:"event,omitempty"`
	Args    json.RawMessage `json:"args,omitempty"`
	Lost    uint64          `json:"lost,omitempty"`
	Time    time.Time       `json:"time"`
}

// jsonChange is one line of watch --json.
type jsonChange struct {
	Service  string          `json:"service"`
	Path     string          `json:"path"`
	Value    json.RawMessage `json:"value"`
	Snapshot bool            `json:"snapshot"`
	Time     time.Time       `json:"time"`
}

// textValue formats a value for one human line: strings are quoted when
// they hold white space, quotes or '=', or are empty.
func textValue(t *servicefile.Type, v any) string {
	s := services.FormatText(t, v)
	if t.Kind == servicefile.String && (s == "" || strings.ContainsAny(s, " \t\r\n\"'=")) {
		return strconv.Quote(s)
	}
	return s
}

func watch(ctx context.Context, o *options, c *client.Client, service, path string, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	changes := 0
	for again := false; ; again = true {
		rctx, cancel := streamRequest(ctx, o, again)
		s, err := sessionFor(rctx, c, service, stderr)
		if err != nil {
			cancel()
			return fmt.Errorf("watch %s: %w", service, err)
		}
		ch, err := s.Watch(ctx, path)
		cancel()
		if err != nil {
			s.Close()
			return fmt.Errorf("watch %s: %w", service, err)
		}
		where := path
		if where == "" {
			where = "all runtime data"
		}
		fmt.Fprintf(stderr, "connectclient: watching %s: %s (session %s); interrupt to stop\n", service, where, s.ID)
		for dc := range ch {
			if o.json {
				v, err := services.MarshalJSON(dc.Type, dc.Value)
				if err != nil {
					return fmt.Errorf("watch %s: %s: %w", service, dc.Path, err)
				}
				enc.Encode(jsonChange{Service: service, Path: dc.Path, Value: v, Snapshot: dc.Snapshot, Time: dc.Time})
			} else {
				prefix := ""
				if !dc.Snapshot {
					prefix = stamp(dc.Time) + " "
				}
				for _, l := range flatten(dc.Path, dc.Type, dc.Value) {
					fmt.Fprintln(stdout, prefix+l)
				}
			}
			if !dc.Snapshot {
				changes++
				if o.count > 0 && changes >= o.count {
					s.Close()
					return nil
				}
			}
		}
		err = s.Err()
		s.Close()
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if !reconnectable(ctx, err) {
			return fmt.Errorf("watch %s: %w", service, err)
		}
		fmt.Fprintf(stderr, "connectclient: %v; watching again once reconnected\n", err)
	}
}

// flatten writes a value as "path = value" lines, one per leaf: structs
// (objects) are walked field by field, lists and scalars are one line.
func flatten(path string, t *servicefile.Type, v any) []string {
	if t.Kind == servicefile.Struct && len(t.Fields) > 0 {
		m, _ := v.(map[string]any)
		var out []string
		for _, f := range t.Fields {
			p := f.Name
			if path != "" {
				p = path + "." + f.Name
			}
			out = append(out, flatten(p, f.Type, m[f.Name])...)
		}
		return out
	}
	if path == "" {
		path = "(root)"
	}
	return []string{path + " = " + textValue(t, v)}
}
