// Package builtin is the one place that decides which services
// connectserver has built in, as package bearers/stock does for bearers. A
// configuration names one with <service name="Demo" builtin="demo"/>;
// connectserver re-executes itself as "connectserver plugin service NAME"
// to run it as a plugin subprocess, which calls ServePlugin, so that a
// built-in service crosses the same plugin boundary as a third-party one.
//
// The built-in services:
//
//	demo   the Demo service (package services/demo): a simulated sensor station
package builtin

import (
	"fmt"
	"strings"

	"github.com/bearerkit/connect/services/demo"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// registry maps a built-in name to the constructor of a fresh service.
// Keep it sorted by name.
var registry = []struct {
	name string
	new  func() *serviceplugin.Service
}{
	{"demo", demo.New},
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
// that lists the built-in names.
func New(name string) (*serviceplugin.Service, error) {
	for _, r := range registry {
		if r.name == name {
			return r.new(), nil
		}
	}
	return nil, fmt.Errorf("no built-in service %q (built-in services: %s)", name, strings.Join(Names(), ", "))
}

// ServePlugin serves the built-in service name as a plugin on this process
// (serviceplugin.Serve). It does not return on success; it returns an
// error only for a name that is not built in.
func ServePlugin(name string) error {
	svc, err := New(name)
	if err != nil {
		return err
	}
	serviceplugin.Serve(svc)
	return nil
}
