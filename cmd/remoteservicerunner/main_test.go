package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsage checks the command line: each bad one is refused before
// anything starts, with the exit status and the message given.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "echo.xml")
	xml, err := os.ReadFile("../../examples/echoservice/echo.xml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, xml, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.xml")
	os.WriteFile(bad, []byte(`<service name="x" version="1.0"><method/></service>`), 0o644)
	exe := filepath.Join(dir, "plugin")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	notExe := filepath.Join(dir, "plain")
	os.WriteFile(notExe, nil, 0o644)
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "remoteservicerunner: no service: give --service FILE.xml --plugin PATH (once per service)"},
		{[]string{"--service", good}, 2, "remoteservicerunner: 1 --service and 0 --plugin: give one --plugin per --service, in the same order"},
		{[]string{"--service", good, "--plugin", exe, "extra"}, 2, `remoteservicerunner: unexpected argument "extra" (every setting is a flag)`},
		{[]string{"--service", good, "--plugin", exe, "--bogus"}, 2, "remoteservicerunner: unknown flag: --bogus"},
		{[]string{"--service", good, "--plugin", exe, "--listen", "tcp://0.0.0.0:9700"}, 2,
			"remoteservicerunner: --listen tcp://0.0.0.0:9700: 0.0.0.0 names all interfaces; give the address clients dial (for example 127.0.0.1 or the host's name)"},
		{[]string{"--service", good, "--plugin", exe, "--endpoint", "tcp://127.0.0.1:0"}, 2, "remoteservicerunner: --listen tcp://127.0.0.1:0: give the port clients dial (not 0)"},
		{[]string{"--service", good, "--plugin", exe, "--listen", "ws://127.0.0.1:9700"}, 2, "remoteservicerunner: --listen ws://127.0.0.1:9700: bearers: unknown scheme \"ws\""},
		{[]string{"--service", good, "--plugin", exe, "--plugin-start-timeout", "0s"}, 2, "remoteservicerunner: durations must be positive"},
		{[]string{"--service", good, "--plugin", exe, "--link-cert", "c.pem"}, 2, "remoteservicerunner: --link-cert and --link-key go together"},
		{[]string{"--service", bad, "--plugin", exe, "--service", good, "--plugin", notExe, "--service", good, "--plugin", exe}, 1,
			"remoteservicerunner: " + bad + ":1: method[1] attribute \"name\" is required\n" +
				"--plugin " + notExe + " (for " + good + "): not an executable file\n" +
				good + ": service example.echo is already given by " + good + "; give each service once"},
		{[]string{"--service", filepath.Join(dir, "none.xml"), "--plugin", exe}, 1, "remoteservicerunner: " + filepath.Join(dir, "none.xml")},
		{[]string{"--service", good, "--plugin", exe, "--server", "nope"}, 2, "remoteservicerunner: --server: bearers: bad endpoint \"nope\""},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		code := exitStatus(dispatch(ctx, c.args, &stdout, &stderr), &stderr)
		cancel()
		if code != c.code || !strings.HasPrefix(stderr.String(), c.want) {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit %d and a start of\n%s", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := dispatch(context.Background(), []string{"version"}, &stdout, &stderr); err != nil || !strings.HasPrefix(stdout.String(), "remoteservicerunner ") {
		t.Fatalf("version: %v %q", err, stdout.String())
	}
}

// TestLinkEndpoints: the endpoints of declared links are listened on and
// announced too, once.
func TestLinkEndpoints(t *testing.T) {
	xml, err := os.ReadFile("../../examples/xml/mediaplayer.xml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mp.xml")
	os.WriteFile(path, xml, 0o644)
	exe := filepath.Join(t.TempDir(), "plugin")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	for _, c := range []struct {
		listen []string
		want   string
	}{
		{nil, "tcp://127.0.0.1:9700 udp://127.0.0.1:9700 ssl://127.0.0.1:9701"},
		{[]string{"tcp://127.0.0.1:9800"}, "tcp://127.0.0.1:9800 ssl://127.0.0.1:9701"},
		{[]string{"ssl://127.0.0.1:9701"}, "ssl://127.0.0.1:9701"},
	} {
		svcs, err := loadServices(&options{services: []string{path}, plugins: []string{exe}, listen: c.listen})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range svcs[0].endpoints {
			got = append(got, e.Address.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("--listen %v: endpoints %v, want %s", c.listen, got, c.want)
		}
	}
}
