package bearers

import (
	"fmt"
	"sort"
	"sync"
)

// Registration names a bearer implementation that can be created in process.
type Registration struct {
	Info Info
	New  Factory
}

// Registry maps bearer types and schemes to factories. It refuses duplicates,
// so that two bearers can never silently fight over a scheme. The zero value
// is ready to use; it is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	byType   map[string]Registration
	byScheme map[string]Registration
}

// Register adds a bearer. It fails if the info is invalid, the factory is nil,
// or the type or scheme is already registered.
func (r *Registry) Register(reg Registration) error {
	if err := reg.Info.Validate(); err != nil {
		return err
	}
	if reg.New == nil {
		return fmt.Errorf("bearers: register %s: nil factory", reg.Info.Type)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byType == nil {
		r.byType = map[string]Registration{}
		r.byScheme = map[string]Registration{}
	}
	if _, dup := r.byType[reg.Info.Type]; dup {
		return fmt.Errorf("bearers: bearer type %s registered twice", reg.Info.Type)
	}
	if other, dup := r.byScheme[reg.Info.Scheme]; dup {
		return fmt.Errorf("bearers: scheme %q of %s is already served by %s", reg.Info.Scheme, reg.Info.Type, other.Info.Type)
	}
	r.byType[reg.Info.Type] = reg
	r.byScheme[reg.Info.Scheme] = reg
	return nil
}

// MustRegister is Register for package init; it panics on error.
func (r *Registry) MustRegister(reg Registration) {
	if err := r.Register(reg); err != nil {
		panic(err)
	}
}

// ByType looks a bearer up by type id.
func (r *Registry) ByType(t string) (Registration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byType[t]
	return reg, ok
}

// ByScheme looks a bearer up by endpoint scheme.
func (r *Registry) ByScheme(s string) (Registration, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byScheme[s]
	if !ok {
		return Registration{}, fmt.Errorf("%w %q (known: %v)", ErrUnknownScheme, s, r.schemesLocked())
	}
	return reg, nil
}

// Types lists the registered type ids, sorted.
func (r *Registry) Types() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byType))
	for t := range r.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (r *Registry) schemesLocked() []string {
	out := make([]string, 0, len(r.byScheme))
	for s := range r.byScheme {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
