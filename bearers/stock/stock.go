// Package stock is the one place that decides which bearers Connect's
// binaries have built in: tcp, udp and ssl. connectserver re-executes itself
// as "connectserver plugin bearer NAME" to run one of them as a plugin
// subprocess; connectclient dials with them in process.
package stock

import (
	"fmt"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin"
	"github.com/bearerkit/connect/bearers/ssl"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/bearers/udp"
)

// Registrations are the stock bearers.
var Registrations = []bearers.Registration{tcp.Registration, udp.Registration, ssl.Registration}

// Registry returns a new registry holding the stock bearers.
func Registry() *bearers.Registry {
	r := &bearers.Registry{}
	for _, reg := range Registrations {
		r.MustRegister(reg)
	}
	return r
}

// ServePlugin serves the stock bearer for scheme as a plugin on this
// process (it does not return on success).
func ServePlugin(scheme string) error {
	reg, err := Registry().ByScheme(scheme)
	if err != nil {
		return fmt.Errorf("no stock bearer %q: %w", scheme, err)
	}
	bearerplugin.Serve(reg)
	return nil
}
