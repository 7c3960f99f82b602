// Package bearerplugin serves a bearer as a Connect plugin subprocess. A
// bearer author writes the bearer against package bearers and a ten-line main:
//
//	func main() { bearerplugin.Serve(mybearer.Registration) }
//
// The host (connectserver, connectclient, remoteservicerunner) starts the
// executable, speaks hashicorp/go-plugin's handshake and the gRPC control
// contract in package bearerpb with it, and receives every connection as a
// file descriptor on the handoff socket (descriptor 3): the kernel socket
// itself for connections that implement bearers.SocketConn (tcp, udp), or one
// end of a unix socket pair that this package relays to the connection for
// everything else (TLS, WebSocket, ...). See docs/BEARERS.md.
package bearerplugin

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
)

// ContractVersion is the version of the bearer plugin contract this package
// speaks; DescribeResponse.contract_version carries it.
const ContractVersion = 1

// PluginName is the name under which the bearer is dispensed.
const PluginName = "bearer"

// HandoffFD is the descriptor number of the handoff socket in the plugin.
const HandoffFD = 3

// Handshake is the go-plugin handshake both sides use. A plugin started by
// hand, without the magic cookie, refuses to run and says so.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "CONNECT_BEARER_PLUGIN",
	MagicCookieValue: "5f0c1b2e-connect-bearer",
}

// GRPCPlugin adapts the bearer contract to go-plugin. The host uses it with
// Impl nil (it only needs the client side); Serve sets Impl.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl bearerpb.BearerServer
}

// GRPCServer registers the bearer service.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	bearerpb.RegisterBearerServer(s, p.Impl)
	return nil
}

// GRPCClient returns the control client.
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return bearerpb.NewBearerClient(c), nil
}
