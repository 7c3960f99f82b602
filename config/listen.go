package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/bearerkit/connect/bearers"
)

// ApplyListen applies connectserver's repeatable --listen URL flag. When urls
// is empty it does nothing. Otherwise the listed endpoints replace:
//
//   - every adapter of a stock type (connect.bearer.tcp, .udp, .ssl), whether
//     or not its scheme is listed: --listen says exactly where the stock
//     bearers listen;
//   - every plugin adapter whose scheme is listed.
//
// Plugin adapters of schemes not listed are kept as configured. A tcp, udp
// or ssl URL becomes an adapter of the stock type; any other scheme must be
// served by a plugin adapter in the configuration, whose type and plugin the
// new adapter takes. A new adapter copies the attributes (and plugin
// override) of the first configured adapter of its type, so that, for
// example, an ssl certificate configured in the file still applies. Names
// are the first such adapter's name, or the type's last part, made unique
// with a "-2", "-3"... suffix. New adapters have Line 0.
//
// On error (a URL that does not parse, a scheme nothing serves, a path on a
// stock endpoint, the same address twice) s is left unchanged and the error
// names every bad URL.
func (s *Server) ApplyListen(urls []string) error {
	if len(urls) == 0 {
		return nil
	}
	// The first configured adapter of each type and of each plugin scheme
	// is the template for new ones.
	byType := map[string]Adapter{}
	byScheme := map[string]Adapter{}
	for _, a := range s.Adapters {
		if _, ok := byType[a.Type]; !ok {
			byType[a.Type] = a
		}
		if _, ok := byScheme[a.Address.Scheme]; !ok && !a.IsStock() {
			byScheme[a.Address.Scheme] = a
		}
	}

	var errs []error
	var fresh []Adapter
	listed := map[string]bool{}
	for _, u := range urls {
		ep, err := bearers.ParseEndpoint(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("--listen: %s", trimBearers(err)))
			continue
		}
		var a Adapter
		if t := stockScheme(ep.Scheme); t != "" {
			if ep.Path != "" {
				errs = append(errs, fmt.Errorf("--listen %s: %s endpoints take no path", u, ep.Scheme))
				continue
			}
			a = Adapter{Type: t, Name: t[strings.LastIndexByte(t, '.')+1:]}
			if tmpl, ok := byType[t]; ok {
				a.Name, a.Plugin, a.Attributes = tmpl.Name, tmpl.Plugin, tmpl.Attributes
			}
		} else {
			tmpl, ok := byScheme[ep.Scheme]
			if !ok {
				errs = append(errs, fmt.Errorf("--listen %s: no bearer serves %s://; built in are tcp, udp and ssl, and the configuration has no plugin adapter for %s%s",
					u, ep.Scheme, ep.Scheme, pluginSchemes(byScheme)))
				continue
			}
			a = Adapter{Type: tmpl.Type, Name: tmpl.Name, Plugin: tmpl.Plugin, Attributes: tmpl.Attributes}
			listed[ep.Scheme] = true
		}
		a.Address = ep
		a.Attributes = a.Attributes.Clone()
		fresh = append(fresh, a)
	}

	var kept []Adapter
	for _, a := range s.Adapters {
		if !a.IsStock() && !listed[a.Address.Scheme] {
			kept = append(kept, a)
		}
	}
	used := map[string]bool{}
	addrs := map[string]string{}
	for _, a := range kept {
		used[a.Name] = true
		if a.Address.Port != 0 {
			addrs[addrKey(a.Address)] = a.Name
		}
	}
	for i := range fresh {
		a := &fresh[i]
		base := a.Name
		for n := 2; used[a.Name]; n++ {
			a.Name = fmt.Sprintf("%s-%d", base, n)
		}
		used[a.Name] = true
		if a.Address.Port == 0 {
			continue
		}
		key := addrKey(a.Address)
		if other, dup := addrs[key]; dup {
			errs = append(errs, fmt.Errorf("--listen %s: address already used by adapter %q", a.Address, other))
			continue
		}
		addrs[key] = a.Name
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.Adapters = append(fresh, kept...)
	return nil
}

// pluginSchemes describes the plugin schemes the configuration has, for an
// error message.
func pluginSchemes(byScheme map[string]Adapter) string {
	if len(byScheme) == 0 {
		return ""
	}
	list := make([]string, 0, len(byScheme))
	for sc := range byScheme {
		list = append(list, sc)
	}
	sort.Strings(list)
	return " (plugin schemes configured: " + strings.Join(list, ", ") + ")"
}

// CheckPlugins reports plugin executables that do not exist, are not
// regular files or are not executable, one Problem per adapter at the
// adapter's line. Parse does not look at plugin files (a configuration may
// be checked on another machine than the one that runs it); connectserver
// check and startup call this.
func (s *Server) CheckPlugins() Problems {
	var ps Problems
	for _, a := range s.Adapters {
		if a.Plugin == "" {
			continue
		}
		var msg string
		fi, err := os.Stat(a.Plugin)
		switch {
		case err != nil:
			msg = unwrapPath(err).Error()
		case !fi.Mode().IsRegular():
			msg = "not a regular file"
		case fi.Mode().Perm()&0o111 == 0:
			msg = "not executable"
		}
		if msg != "" {
			ps = append(ps, Problem{File: s.File, Line: a.Line,
				Msg: oneLine(fmt.Sprintf("connectionAdapter %q: plugin %s: %s", a.Name, a.Plugin, msg))})
		}
	}
	return ps
}
