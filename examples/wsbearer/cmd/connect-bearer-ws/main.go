// Command connect-bearer-ws serves the example WebSocket bearer
// (example.bearer.ws) as a Connect bearer plugin. A host starts it; run by
// hand it explains that it is a plugin and exits. See ../../README.md.
package main

import (
	"github.com/bearerkit/connect/bearers/bearerplugin"
	"github.com/bearerkit/connect/examples/wsbearer"
)

func main() { bearerplugin.Serve(wsbearer.Registration) }
