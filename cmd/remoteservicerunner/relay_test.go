package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirectModeFlags: without --listen the runner does not listen
// (--direct relay); with it, it listens; the limits are checked.
func TestDirectModeFlags(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "plugin")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	base := []string{"--service", "../../examples/echoservice/echo.xml", "--plugin", exe}
	for _, c := range []struct {
		args     []string
		direct   string
		restarts int
		relay    bool
	}{
		{nil, directRelay, 10, true},
		{[]string{"--listen", "tcp://127.0.0.1:9700"}, directListen, 10, false},
		{[]string{"--direct", "listen"}, directListen, 10, false},
		{[]string{"--maxControlConnectionRestarts", "0", "--maxRetries", "3"}, directRelay, -1, true},
	} {
		var stderr bytes.Buffer
		o, err := parseFlags(append(append([]string(nil), base...), c.args...), &stderr)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if o.direct != c.direct || o.restarts != c.restarts || (o.providerRelay() != nil) != c.relay {
			t.Errorf("%v: direct %q restarts %d relay %v", c.args, o.direct, o.restarts, o.providerRelay())
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--direct", "both"}, `--direct "both": want relay or listen`},
		{[]string{"--direct", "relay", "--listen", "tcp://127.0.0.1:9700"}, "--direct relay listens nowhere"},
		{[]string{"--maxRetries", "0"}, "--maxRetries must be from 1 to 1000, got 0"},
		{[]string{"--maxControlConnectionRestarts", "-2"}, "--maxControlConnectionRestarts must be from 0 (no limit) to 1000, got -2"},
	} {
		var stderr bytes.Buffer
		if _, err := parseFlags(append(append([]string(nil), base...), c.args...), &stderr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
}
