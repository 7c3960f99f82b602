package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// Service plugins for these tests are this test binary too: with
// CONNECT_TEST_SERVICE_PLUGIN set it serves that service from init, before
// any test runs (go-plugin's helper-process pattern).
const serviceModeEnv = "CONNECT_TEST_SERVICE_PLUGIN"

// stateDirEnv names a directory the test plugin counts its starts in.
const stateDirEnv = "CONNECT_TEST_SERVICE_DIR"

// hostModeEnv makes the test binary a host that starts a service plugin,
// prints its pid and waits to be killed.
const hostModeEnv = "CONNECT_TEST_SERVICE_HOST"

func init() {
	if mode := os.Getenv(serviceModeEnv); mode != "" {
		serveServiceMode(mode)
		os.Exit(0)
	}
	if os.Getenv(hostModeEnv) != "" {
		exe, _ := os.Executable()
		s, err := StartService(context.Background(), ServiceOptions{Service: "test.svc", Path: exe,
			Env: []string{serviceModeEnv + "=svc"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("pid", s.Status().PID)
		time.Sleep(time.Hour)
	}
}

const testServiceXML = `<service name="test.svc" version="1.0">
  <method name="echo" returns="binary"><arg name="data" type="binary"/></method>
  <method name="block" returns="bool" description="Blocks until its context ends.">
    <arg name="tag" type="string"/>
  </method>
  <method name="boom"/>
  <method name="setHits"><arg name="hits" type="int"/></method>
  <method name="whoami" returns="string"/>
  <method name="pid" returns="int"/>
  <event name="blocking"><arg name="tag" type="string"/></event>
  <event name="unblocked">
    <arg name="tag" type="string"/>
    <arg name="reason" type="string"/>
    <arg name="hadDeadline" type="bool"/>
  </event>
  <data>
    <object name="counters"><value name="hits" type="int"/></object>
    <list name="names" type="string"/>
  </data>
</service>`

func testService(xml string) *serviceplugin.Service {
	return &serviceplugin.Service{
		XML: []byte(xml),
		Methods: map[string]serviceplugin.MethodFunc{
			"echo": func(_ context.Context, c *serviceplugin.Call) (any, error) { return c.Binary("data"), nil },
			"block": func(ctx context.Context, c *serviceplugin.Call) (any, error) {
				tag := c.String("tag")
				if err := c.Service.Emit(ctx, "blocking", map[string]any{"tag": tag}); err != nil {
					return nil, err
				}
				<-ctx.Done()
				_, hadDeadline := ctx.Deadline()
				// The caller is gone; the event tells the test what the
				// method saw.
				_ = c.Service.Emit(context.Background(), "unblocked", map[string]any{
					"tag": tag, "reason": ctx.Err().Error(), "hadDeadline": hadDeadline})
				return nil, ctx.Err()
			},
			"boom": func(context.Context, *serviceplugin.Call) (any, error) {
				_ = os.Args[len(os.Args)+1] // a real runtime panic
				return nil, nil
			},
			"setHits": func(_ context.Context, c *serviceplugin.Call) (any, error) {
				return nil, c.Service.Set("counters.hits", c.Int("hits"))
			},
			"whoami": func(_ context.Context, c *serviceplugin.Call) (any, error) {
				if c.Session == nil {
					return "nobody", nil
				}
				return c.Session.ClientID, nil
			},
			"pid": func(context.Context, *serviceplugin.Call) (any, error) { return os.Getpid(), nil },
		},
		OnSessionOpen: func(_ context.Context, s *serviceplugin.Session) error {
			// "fragile" sessions do not survive a restart of the plugin.
			if strings.HasPrefix(s.ID, "fragile") && starts() > 1 {
				return errors.New("fragile sessions do not survive a restart")
			}
			return nil
		},
	}
}

// starts counts the processes started with this stateDirEnv, this one
// included.
func starts() int {
	dir := os.Getenv(stateDirEnv)
	if dir == "" {
		return 1
	}
	n, _ := os.ReadFile(filepath.Join(dir, "starts"))
	i, _ := strconv.Atoi(string(n))
	return i
}

func countStart() {
	if dir := os.Getenv(stateDirEnv); dir != "" {
		os.WriteFile(filepath.Join(dir, "starts"), []byte(strconv.Itoa(starts()+1)), 0o600)
	}
}

func serveServiceMode(mode string) {
	countStart()
	switch mode {
	case "svc":
		serviceplugin.Serve(testService(testServiceXML))
	case "wrongname":
		serviceplugin.Serve(testService(strings.Replace(testServiceXML, "test.svc", "test.other", 1)))
	case "hang":
		time.Sleep(time.Hour)
	case "badxml", "noready", "nonsense":
		serveRawService(&rawService{mode: mode})
	}
}

// serveRawService serves a hand-written implementation of the contract,
// for plugins that misbehave below what serviceplugin.Serve allows.
func serveRawService(impl servicepb.ServiceServer) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: serviceplugin.Handshake,
		Plugins:         plugin.PluginSet{serviceplugin.PluginName: &serviceplugin.GRPCPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hclog.NewNullLogger(),
	})
}

type rawService struct {
	servicepb.UnimplementedServiceServer
	mode string
}

func (r *rawService) Describe(context.Context, *servicepb.DescribeRequest) (*servicepb.DescribeResponse, error) {
	xml := testServiceXML
	if r.mode == "badxml" {
		xml = strings.Replace(xml, `type="binary"/></method>`, `type="binray"/></method>`, 1)
	}
	return &servicepb.DescribeResponse{Name: "test.svc", Version: "1.0", ServiceXml: []byte(xml), ContractVersion: serviceplugin.ContractVersion}, nil
}

func (r *rawService) Connect(stream servicepb.Service_ConnectServer) error {
	if _, err := stream.Recv(); err != nil { // Start
		return err
	}
	if r.mode == "noready" {
		<-stream.Context().Done()
		return nil
	}
	send := func(m *servicepb.PluginMessage) {
		if err := stream.Send(m); err != nil {
			os.Exit(3)
		}
	}
	// A valid snapshot: hits 0, no names.
	send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Ready{Ready: &servicepb.Ready{Data: []byte{0, 0}}}})
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		call := m.GetCall()
		if call == nil {
			continue
		}
		// Nonsense first: an undeclared event, arguments that do not
		// decode, an unknown data path, a value of the wrong type, a
		// second Ready, a result for a call never made.
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Event{Event: &servicepb.Event{Name: "nosuchevent"}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Event{Event: &servicepb.Event{Name: "blocking", Args: []byte{200}}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Data{Data: &servicepb.DataUpdate{Path: "counters.nope", Value: []byte{2}}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Data{Data: &servicepb.DataUpdate{Path: "counters.hits", Value: []byte{0x80, 0x80}}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Ready{Ready: &servicepb.Ready{}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Result{Result: &servicepb.Result{CallId: 1 << 60}}})
		// Then one good event and update, so the test knows the rest was
		// read and dropped.
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Event{Event: &servicepb.Event{Name: "blocking", Args: []byte{2, 'o', 'k'}}}})
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Data{Data: &servicepb.DataUpdate{Path: "counters.hits", Value: []byte{14}}}})
		// The answer: a result that is not a binary value, or one for a
		// method that returns nothing.
		send(&servicepb.PluginMessage{Msg: &servicepb.PluginMessage_Result{Result: &servicepb.Result{CallId: call.CallId, Value: []byte{0xff, 0xff, 0xff}}}})
	}
}

func (r *rawService) Invoke(context.Context, *servicepb.Call) (*servicepb.Result, error) {
	return nil, status.Error(codes.Unimplemented, "no")
}

// recorder collects what a ServicePlugin delivers.
type recorder struct {
	mu     sync.Mutex
	events []serviceplugin.Event
	data   []serviceplugin.DataUpdate
	lost   []string
	ch     chan struct{} // signalled on every delivery
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) poke() {
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) onEvent(e serviceplugin.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) onData(u serviceplugin.DataUpdate) {
	r.mu.Lock()
	r.data = append(r.data, u)
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) onLost(id string, err error) {
	r.mu.Lock()
	r.lost = append(r.lost, id+": "+err.Error())
	r.mu.Unlock()
	r.poke()
}

// wait waits until cond (called with r.mu held) is true.
func (r *recorder) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.ch:
		case <-timeout:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; events %v, data %v, lost %v", what, r.events, r.data, r.lost)
		}
	}
}

// event waits for an event named name with string argument tag == tag and
// returns its decoded arguments.
func (r *recorder) event(t *testing.T, desc *servicefile.Service, name, tag string) map[string]any {
	t.Helper()
	var found map[string]any
	r.wait(t, "event "+name+" "+tag, func() bool {
		for _, e := range r.events {
			if e.Name != name {
				continue
			}
			args, err := services.DecodeArgs(desc.Event(name).Args, e.Args)
			if err != nil {
				t.Errorf("event %s: %v", name, err)
				continue
			}
			if args["tag"] == tag {
				found = args
				return true
			}
		}
		return false
	})
	return found
}

func serviceOptions(t *testing.T, mode string, logs *logBuffer, rec *recorder) ServiceOptions {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var w io.Writer // a nil *logBuffer is not a nil io.Writer
	if logs != nil {
		w = logs
	}
	o := options(t, mode, w)
	so := ServiceOptions{
		Service:      "test.svc",
		Name:         mode,
		Path:         exe,
		Env:          []string{serviceModeEnv + "=" + mode, stateDirEnv + "=" + t.TempDir()},
		StartTimeout: 10 * time.Second,
		BackoffMin:   20 * time.Millisecond,
		Logger:       o.Logger,
	}
	if rec != nil {
		so.OnEvent, so.OnData, so.OnSessionLost = rec.onEvent, rec.onData, rec.onLost
	}
	return so
}

func startService(t *testing.T, mode string, logs *logBuffer, rec *recorder) *ServicePlugin {
	t.Helper()
	s, err := StartService(context.Background(), serviceOptions(t, mode, logs, rec))
	if err != nil {
		t.Fatalf("StartService(%s): %v", mode, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// call encodes args, calls, and decodes the result.
func call(ctx context.Context, s *ServicePlugin, session, method string, args map[string]any) (any, error) {
	m := s.Description().Method(method)
	enc, err := services.AppendArgs(nil, m.Args, args)
	if err != nil {
		return nil, err
	}
	res, err := s.Call(ctx, session, method, enc)
	if err != nil || m.Returns == nil {
		return nil, err
	}
	return services.DecodeValue(m.Returns, res)
}

func mustCall(t *testing.T, s *ServicePlugin, session, method string, args map[string]any) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := call(ctx, s, session, method, args)
	if err != nil {
		t.Fatalf("call %s: %v", method, err)
	}
	return v
}

func wantCode(t *testing.T, err error, code serviceplugin.Code) *serviceplugin.Error {
	t.Helper()
	var ce *serviceplugin.CallError
	var e *serviceplugin.Error
	if !errors.As(err, &ce) || !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error %v (%T), want a CallError with code %v", err, err, code)
	}
	return e
}

func TestServicePluginCalls(t *testing.T) {
	rec := newRecorder()
	s := startService(t, "svc", nil, rec)
	if d := s.Description(); d.Name != "test.svc" || d.Method("block") == nil {
		t.Fatalf("description %+v", d)
	}
	if st := s.Status(); st.State != StateRunning || st.PID <= 0 || st.PID == os.Getpid() {
		t.Fatalf("status %+v", st)
	}
	// The first data delivered is the whole tree.
	rec.wait(t, "the snapshot", func() bool { return len(rec.data) > 0 })
	if rec.data[0].Path != "" {
		t.Fatalf("first update %+v, want the whole tree", rec.data[0])
	}
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = byte(i)
	}
	if got := mustCall(t, s, "", "echo", map[string]any{"data": payload}); string(got.([]byte)) != string(payload) {
		t.Fatalf("echo returned %v", got)
	}
	if got := mustCall(t, s, "", "pid", nil); got != int64(s.Status().PID) {
		t.Fatalf("pid %v, status %+v", got, s.Status())
	}

	ctx := context.Background()
	if err := s.OpenSession(ctx, serviceplugin.SessionInfo{ID: "s1", ClientID: "client-7"}); err != nil {
		t.Fatal(err)
	}
	if got := mustCall(t, s, "s1", "whoami", nil); got != "client-7" {
		t.Fatalf("whoami in s1: %v", got)
	}
	_, err := call(ctx, s, "s2", "whoami", nil)
	if e := wantCode(t, err, serviceplugin.CodeNoSession); !strings.Contains(e.Message, `"s2"`) {
		t.Fatalf("message %q", e.Message)
	}
	s.CloseSession("s1", "closed by client")
	_, err = call(ctx, s, "s1", "whoami", nil)
	wantCode(t, err, serviceplugin.CodeNoSession)

	_, err = s.Call(ctx, "", "nosuch", nil)
	wantCode(t, err, serviceplugin.CodeUnknownMethod)
	_, err = s.Call(ctx, "", "echo", []byte{0xff})
	if e := wantCode(t, err, serviceplugin.CodeInvalidArgument); !strings.Contains(e.Message, "echo") {
		t.Fatalf("message %q does not name the method", e.Message)
	}
	if !strings.Contains(err.Error(), "service test.svc") || !strings.Contains(err.Error(), "call echo") {
		t.Fatalf("error %q does not name the service and the call", err)
	}

	// The same call as a unary RPC.
	enc, _ := services.AppendArgs(nil, s.Description().Method("echo").Args, map[string]any{"data": payload})
	res, err := s.CallUnary(ctx, "", "echo", enc)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := services.DecodeValue(s.Description().Method("echo").Returns, res); string(v.([]byte)) != string(payload) {
		t.Fatalf("unary echo returned %v", v)
	}
}

func TestServicePluginBlockingMethodStallsNothing(t *testing.T) {
	rec := newRecorder()
	s := startService(t, "svc", nil, rec)
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := s.OpenSession(ctx, serviceplugin.SessionInfo{ID: id, ClientID: "client-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	blockCtx, unblock := context.WithCancel(ctx)
	blocked := make(chan error, 1)
	go func() {
		_, err := call(blockCtx, s, "a", "block", map[string]any{"tag": "held"})
		blocked <- err
	}()
	rec.event(t, s.Description(), "blocking", "held") // the method is running

	// Other calls, in the same session, another session and none, all
	// complete while it blocks.
	var wg sync.WaitGroup
	errs := make(chan error, 300)
	for i := 0; i < 100; i++ {
		for _, session := range []string{"a", "b", ""} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				v, err := call(cctx, s, session, "echo", map[string]any{"data": []byte(strconv.Itoa(i))})
				if err == nil && string(v.([]byte)) != strconv.Itoa(i) {
					err = fmt.Errorf("echo %d returned %q", i, v)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	select {
	case err := <-blocked:
		t.Fatalf("the blocking call returned early: %v", err)
	default:
	}
	unblock()
	err := <-blocked
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	// The plugin was told, and the method's context ended.
	got := rec.event(t, s.Description(), "unblocked", "held")
	if got["hadDeadline"] != false || !strings.Contains(got["reason"].(string), "canceled") {
		t.Fatalf("the method saw %v", got)
	}
}

func TestServicePluginDeadline(t *testing.T) {
	rec := newRecorder()
	s := startService(t, "svc", nil, rec)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := call(ctx, s, "", "block", map[string]any{"tag": "late"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", err)
	}
	var ce *serviceplugin.CallError
	if !errors.As(err, &ce) || ce.Method != "block" || ce.ID == 0 {
		t.Fatalf("error %#v", err)
	}
	// The deadline reached the method as its context's deadline.
	got := rec.event(t, s.Description(), "unblocked", "late")
	if got["hadDeadline"] != true {
		t.Fatalf("the method's context had no deadline: %v", got)
	}
}

func TestServicePluginPanicIsAnError(t *testing.T) {
	logs := &logBuffer{}
	s := startService(t, "svc", logs, nil)
	pid := s.Status().PID
	_, err := call(context.Background(), s, "", "boom", nil)
	e := wantCode(t, err, serviceplugin.CodePanic)
	if !strings.Contains(e.Message, "boom") || !strings.Contains(e.Message, "index out of range") {
		t.Fatalf("panic message %q", e.Message)
	}
	if got := mustCall(t, s, "", "pid", nil); got != int64(pid) || s.Status().Restarts != 0 {
		t.Fatalf("the plugin did not survive the panic: pid %v, status %+v", got, s.Status())
	}
	// The stack went to the host's log.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "method panicked") {
		if time.Now().After(deadline) {
			t.Fatalf("the panic was not logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServicePluginEventsAndData(t *testing.T) {
	rec := newRecorder()
	o := serviceOptions(t, "svc", nil, rec)
	hits := s2b(t, "counters.hits", int64(42))
	o.Restore = func() []serviceplugin.DataUpdate {
		return []serviceplugin.DataUpdate{{Path: "counters.hits", Value: hits}}
	}
	s, err := StartService(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The snapshot has the restored value.
	rec.wait(t, "the snapshot", func() bool { return len(rec.data) > 0 })
	snap, err := services.DecodeValue(s.Description().Data.Type, rec.data[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.(map[string]any)["counters"].(map[string]any)["hits"]; got != int64(42) {
		t.Fatalf("restored hits %v, snapshot %v", got, snap)
	}
	mustCall(t, s, "", "setHits", map[string]any{"hits": 7})
	rec.mu.Lock()
	last := rec.data[len(rec.data)-1] // delivered before the call's result
	rec.mu.Unlock()
	if last.Path != "counters.hits" || string(last.Value) != string(s2b(t, "counters.hits", int64(7))) {
		t.Fatalf("last update %+v", last)
	}
}

// s2b encodes v as the value at path of the test service.
func s2b(t *testing.T, path string, v any) []byte {
	t.Helper()
	desc, err := servicefile.Parse("test.xml", []byte(testServiceXML))
	if err != nil {
		t.Fatal(err)
	}
	typ, err := serviceplugin.PathType(desc.Data.Type, path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := services.AppendValue(nil, typ, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServicePluginKilledMidCall(t *testing.T) {
	logs := &logBuffer{}
	rec := newRecorder()
	s := startService(t, "svc", logs, rec)
	ctx := context.Background()
	for _, id := range []string{"s1", "fragile-1"} {
		if err := s.OpenSession(ctx, serviceplugin.SessionInfo{ID: id, ClientID: "client-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	first := s.Status()
	blocked := make(chan error, 1)
	go func() {
		_, err := call(ctx, s, "s1", "block", map[string]any{"tag": "doomed"})
		blocked <- err
	}()
	rec.event(t, s.Description(), "blocking", "doomed")

	syscall.Kill(first.PID, syscall.SIGKILL)
	var err error
	select {
	case err = <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("the pending call did not fail when its plugin died")
	}
	if !errors.Is(err, ErrPluginExited) || !errors.Is(err, serviceplugin.ErrConnLost) {
		t.Fatalf("pending call: %v, want ErrPluginExited and ErrConnLost", err)
	}
	msg := err.Error()
	for _, want := range []string{"service test.svc", "call block", `session "s1"`, "plugin process exited", "pid " + strconv.Itoa(first.PID), "signal: killed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	t.Logf("the pending call failed with: %v", err)

	// The next call waits for the restart and goes to a new process; the
	// session is open there too.
	if got := mustCall(t, s, "s1", "whoami", nil); got != "client-s1" {
		t.Fatalf("whoami in s1 after the restart: %v", got)
	}
	st := s.Status()
	if st.PID == first.PID || st.State != StateRunning || st.Restarts < 1 || !strings.Contains(st.LastError, "plugin process exited") {
		t.Fatalf("status after the restart %+v (before %+v)", st, first)
	}
	if got := mustCall(t, s, "", "pid", nil); got != int64(st.PID) {
		t.Fatalf("pid %v, status %+v", got, st)
	}
	// The session the new process refused is reported lost.
	rec.wait(t, "the lost session", func() bool { return len(rec.lost) == 1 })
	if !strings.HasPrefix(rec.lost[0], "fragile-1: ") || !strings.Contains(rec.lost[0], "do not survive") {
		t.Fatalf("lost %v", rec.lost)
	}
	_, err = call(ctx, s, "fragile-1", "whoami", nil)
	wantCode(t, err, serviceplugin.CodeNoSession)
	if !strings.Contains(logs.String(), "service plugin died") || !strings.Contains(logs.String(), "restarting service plugin") {
		t.Fatalf("the log does not say what happened:\n%s", logs)
	}
}

func TestServicePluginStartFailures(t *testing.T) {
	cases := []struct {
		mode string
		want []string
	}{
		{"wrongname", []string{`plugin serves service "test.other", configuration says "test.svc"`}},
		{"badxml", []string{"not valid", `described service file):2:`, `unknown type "binray"`}},
		{"hang", []string{"timeout"}},
		{"noready", []string{"Ready", "deadline exceeded"}},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			o := serviceOptions(t, c.mode, nil, nil)
			o.StartTimeout = 2 * time.Second
			s, err := StartService(context.Background(), o)
			if err == nil {
				s.Close()
				t.Fatal("StartService succeeded")
			}
			if !strings.Contains(err.Error(), "service plugin "+c.mode) {
				t.Errorf("error %q does not name the plugin", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestServicePluginNonsenseAnswers(t *testing.T) {
	rec := newRecorder()
	logs := &logBuffer{}
	o := serviceOptions(t, "nonsense", logs, rec)
	s, err := StartService(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = s.Call(ctx, "", "echo", []byte{0})
	if !errors.Is(err, serviceplugin.ErrProtocol) || !strings.Contains(err.Error(), "is not a binary") {
		t.Fatalf("nonsense result: %v", err)
	}
	// Only the good event and update got through.
	rec.wait(t, "the good update", func() bool { return len(rec.data) == 2 })
	rec.mu.Lock()
	events, data := rec.events, rec.data
	rec.mu.Unlock()
	if len(events) != 1 || events[0].Name != "blocking" || string(events[0].Args) != "\x02ok" {
		t.Fatalf("events %+v", events)
	}
	if data[1].Path != "counters.hits" {
		t.Fatalf("data %+v", data)
	}
	if st := s.Status(); st.Restarts != 0 || st.State != StateRunning {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(logs.String(), "does not declare") {
		t.Fatalf("nonsense not logged:\n%s", logs)
	}
}

func TestServicePluginClose(t *testing.T) {
	rec := newRecorder()
	s := startService(t, "svc", nil, rec)
	pid := s.Status().PID
	blocked := make(chan error, 1)
	go func() {
		_, err := call(context.Background(), s, "", "block", map[string]any{"tag": "closing"})
		blocked <- err
	}()
	rec.event(t, s.Description(), "blocking", "closing")
	s.Close()
	s.Close()
	if err := <-blocked; !errors.Is(err, serviceplugin.ErrClosed) {
		t.Fatalf("call pending at Close: %v", err)
	}
	if _, err := s.Call(context.Background(), "", "pid", nil); !errors.Is(err, serviceplugin.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	if st := s.Status(); st.State != StateStopped {
		t.Fatalf("status %+v", st)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		// Reaped by go-plugin's Kill; a zombie would still answer.
		t.Fatalf("plugin process %d still exists after Close", pid)
	}
}

// A plugin never outlives its host, even one killed with SIGKILL.
func TestServicePluginExitsWithItsHost(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := exec.Command(exe)
	host.Env = append(os.Environ(), hostModeEnv+"=1")
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	defer host.Process.Kill()
	var pid int
	if _, err := fmt.Fscanf(out, "pid %d\n", &pid); err != nil || pid <= 0 {
		t.Fatalf("the host did not report its plugin: %v", err)
	}
	host.Process.Kill()
	host.Wait()
	for deadline := time.Now().Add(20 * time.Second); !processGone(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d still runs after its host was killed", pid)
		}
	}
}

// processGone reports whether pid has exited (a zombie waiting to be
// reaped by whoever inherited it counts as gone).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesized command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}
