// Package builtin is the one place that decides which services
// connectserver has built in, as package bearers/stock does for bearers. A
// configuration names one with <service name="Demo" builtin="demo"/>;
// connectserver re-executes itself as "connectserver plugin service NAME"
// to run it as a plugin subprocess, which calls ServePlugin, so that a
// built-in service crosses the same plugin boundary as a third-party one.
//
// The built-in services:
//
//	configuration  the Configuration service (package services/configuration):
//	               the server configuration's named groups as runtime data,
//	               handed to the plugin in configuration.EnvGroups
//	demo           the Demo service (package services/demo): a simulated sensor station
//	diagnostics    the Diagnostics service (package services/diagnostics):
//	               the server's live figures as runtime data, published by
//	               the server with the key in diagnostics.EnvKey
package builtin

import (
	"fmt"
	"strings"

	"github.com/bearerkit/connect/services/configuration"
	"github.com/bearerkit/connect/services/demo"
	"github.com/bearerkit/connect/services/diagnostics"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// registry maps a built-in name to the constructor of a fresh service.
// Keep it sorted by name.
var registry = []struct {
	name string
	new  func() (*serviceplugin.Service, error)
}{
	{"configuration", configuration.FromEnv},
	{"demo", func() (*serviceplugin.Service, error) { return demo.New(), nil }},
	{"diagnostics", diagnostics.FromEnv},
}

// Names returns the names of the built-in services, sorted.
func Names() []string {
	names := make([]string, len(registry))
	for i, r := range registry {
		names[i] = r.name
	}
	return names
}

// New returns a new instance of the built-in service name, or an error
// that lists the built-in names, or the service's own error (the
// Configuration service's groups, from its environment, are not valid).
func New(name string) (*serviceplugin.Service, error) {
	for _, r := range registry {
		if r.name == name {
			svc, err := r.new()
			if err != nil {
				return nil, fmt.Errorf("built-in service %s: %w", name, err)
			}
			return svc, nil
		}
	}
	return nil, fmt.Errorf("no built-in service %q (built-in services: %s)", name, strings.Join(Names(), ", "))
}

// ServePlugin serves the built-in service name as a plugin on this process
// (serviceplugin.Serve). It does not return on success; it returns an
// error for a name that is not built in and for a service that cannot be
// made (see New).
func ServePlugin(name string) error {
	svc, err := New(name)
	if err != nil {
		return err
	}
	serviceplugin.Serve(svc)
	return nil
}
