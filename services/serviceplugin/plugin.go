// Package serviceplugin serves a Connect service as a plugin subprocess,
// and is the host's end of the same contract. A service is one XML service
// file (docs/SERVICES.md) and one short Go file:
//
//	//go:embed echo.xml
//	var echoXML []byte
//
//	func main() {
//		serviceplugin.Serve(&serviceplugin.Service{
//			XML: echoXML,
//			Methods: map[string]serviceplugin.MethodFunc{
//				"echo": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
//					return call.String("text"), nil
//				},
//			},
//		})
//	}
//
// The host (connectserver, remoteservicerunner; see package pluginhost)
// starts the executable, speaks hashicorp/go-plugin's handshake and the gRPC
// contract of package servicepb with it: Describe, then one long-lived
// Connect stream that carries every method call, result, event,
// runtime-data update and session notice. A service emits events with
// Service.Emit and publishes runtime data with Service.Set; both are checked
// against the XML file's types before anything is sent.
//
// # Concurrency
//
// Every method call runs in its own goroutine: calls run concurrently, a
// slow or blocked method delays nothing else, and there is no main-thread
// rule. A method's context ends at the caller's deadline, when the caller
// gives up, when the call's session closes and when the host goes away. A
// panic in a method (or a session hook) becomes an error to the caller
// (CodePanic) and a log line with the stack; the plugin goes on. The
// methods of Service, Call and Session are safe for concurrent use.
//
// # Testing
//
// NewTestHost runs a service in process, behind the real gRPC contract, so
// that an author tests methods, events and runtime data without building
// a plugin binary.
//
// # The host's end
//
// HostConn is the other end of the Connect stream: it multiplexes calls,
// checks every answer against the service file and delivers events and
// data updates. Package pluginhost uses it on a plugin subprocess; NewTestHost
// uses it in process.
package serviceplugin

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/bearerkit/connect/services/serviceplugin/servicepb"
)

// ContractVersion is the version of the service plugin contract this
// package speaks; Describe and Start carry it.
const ContractVersion = 1

// MaxPayload is the largest encoded value one message carries: a call's
// arguments, a result, an event's arguments, a runtime-data update, the
// whole runtime-data tree in Ready, and all restored values together in
// Start. gRPC refuses messages over 4 MiB by breaking the stream, which
// would fail every call at once; so both sides check first, and a value
// too large fails alone, with an error that says so.
const MaxPayload = 4<<20 - 64<<10

// PluginName is the name under which the service is dispensed.
const PluginName = "service"

// Handshake is the go-plugin handshake both sides use. A plugin started by
// hand, without the magic cookie, refuses to run and says so.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "CONNECT_SERVICE_PLUGIN",
	MagicCookieValue: "8d3a6e51-connect-service",
}

// GRPCPlugin adapts the service contract to go-plugin. The host uses it with
// Impl nil (it only needs the client side); Serve sets Impl.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl servicepb.ServiceServer
}

// GRPCServer registers the service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	servicepb.RegisterServiceServer(s, p.Impl)
	return nil
}

// GRPCClient returns the contract's client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return servicepb.NewServiceClient(c), nil
}
