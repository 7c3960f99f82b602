package core

import (
	"context"
	"strings"
	"time"

	"github.com/bearerkit/connect/internal/persist"
	"github.com/bearerkit/connect/services/servicefile"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// persistInterval is how often changed persistent runtime data is written.
const persistInterval = time.Second

// persistentPaths lists the top-most persistent nodes of a service's data
// tree: saving each of them saves every persistent value.
func persistentPaths(root *servicefile.DataNode) []string {
	var out []string
	var walk func(n *servicefile.DataNode)
	walk = func(n *servicefile.DataNode) {
		for _, c := range n.Children {
			if c.Persistent {
				out = append(out, c.Path)
				continue
			}
			walk(c)
		}
	}
	walk(root)
	return out
}

// touches reports whether an update at path changes the node at p.
func touches(path, p string) bool {
	return path == "" || path == p || strings.HasPrefix(p, path+".") || strings.HasPrefix(path, p+".")
}

// restore is ServiceOptions.Restore: what was saved, for the plugin to
// apply before anything else. A file that cannot be read is logged and
// ignored (the service starts from its defaults) rather than keeping the
// service down.
func (s *Server) restore(hs *hostedService) func() []serviceplugin.DataUpdate {
	return func() []serviceplugin.DataUpdate {
		// A restart of the plugin while the server runs: the server's
		// tree holds the latest values, newer than the file.
		hs.mu.Lock()
		if hs.data != nil {
			var out []serviceplugin.DataUpdate
			for _, p := range hs.persistent {
				if enc, err := hs.data.Encoded(p); err == nil {
					out = append(out, serviceplugin.DataUpdate{Path: p, Value: enc})
				}
			}
			hs.mu.Unlock()
			return out
		}
		hs.mu.Unlock()
		entries, err := s.store.Load(hs.cfg.Name)
		if err != nil {
			s.log.Error("cannot restore persistent runtime data; starting from the defaults", "service", hs.cfg.Name, "error", err)
			return nil
		}
		out := make([]serviceplugin.DataUpdate, len(entries))
		for i, e := range entries {
			out[i] = serviceplugin.DataUpdate{Path: e.Path, Value: e.Value}
		}
		return out
	}
}

// markDirty notes that an update touched persistent data. Called with hs.mu held.
func (hs *hostedService) markDirty(path string) {
	for _, p := range hs.persistent {
		if touches(path, p) {
			hs.dirty = true
			return
		}
	}
}

// persistLoop writes a service's persistent runtime data when it changed,
// at most once per persistInterval, and once more when ctx ends.
func (s *Server) persistLoop(ctx context.Context, hs *hostedService) {
	t := time.NewTicker(persistInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.savePersistent(hs)
			return
		case <-t.C:
			s.savePersistent(hs)
		}
	}
}

func (s *Server) savePersistent(hs *hostedService) {
	hs.mu.Lock()
	if !hs.dirty || hs.data == nil {
		hs.mu.Unlock()
		return
	}
	entries := make([]persist.Entry, 0, len(hs.persistent))
	for _, p := range hs.persistent {
		enc, err := hs.data.Encoded(p)
		if err != nil {
			continue
		}
		entries = append(entries, persist.Entry{Path: p, Value: enc})
	}
	hs.dirty = false
	hs.mu.Unlock()
	if err := s.store.Save(hs.cfg.Name, entries); err != nil {
		s.log.Error("cannot save persistent runtime data", "service", hs.cfg.Name, "error", err)
		hs.mu.Lock()
		hs.dirty = true
		hs.mu.Unlock()
	}
}
