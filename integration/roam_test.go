package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDirectUnreliableRoams runs connectserver, remoteservicerunner (the
// echo example) and an in-process client on loopback, with meter.level
// routed over the unreliable (udp) direct link. Midway through a stream
// of runtime-data changes the client moves the link onto a new socket (a
// new source port, Session.Roam): the runner follows it on the first
// datagram, whose session tag it checks, and the data keeps flowing on the
// same session and the same link (no new session, no new LinkOpen, no
// note). Datagrams from a third socket (an unknown link id, a malformed
// envelope) are dropped and counted by the runner, and change nothing.
func TestDirectUnreliableRoams(t *testing.T) {
	r := &directRig{
		ep:      fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")),
		linkTCP: fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")),
		linkUDP: fmt.Sprintf("udp://127.0.0.1:%d", freePort(t, "udp")),
	}
	r.s = startServer(t, serverConfig{adapters: []string{adapterXML("tcp", "connect.bearer.tcp", r.ep, "")}}, true)
	file := directEcho(t, "", `    <route method="*" linkType="server"/>
    <route method="setLevel" link="reliable"/>
    <route data="meter.level" link="unreliable"/>
`)
	run := startRunner(t, r.s, t.TempDir(), "--server", r.ep, "--service", file, "--plugin", bin.echoService,
		"--listen", r.linkTCP, "--listen", r.linkUDP)
	r.s.waitRemote("example.echo", true)

	c := r.goClient(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := c.StartSession(ctx, "example.echo")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := linkStats(s)["unreliable"]; !st.Open {
		t.Fatalf("the unreliable link is not open: %+v", st)
	}
	watch, err := s.Watch(ctx, "meter.level")
	if err != nil {
		t.Fatal(err)
	}
	// set sets meter.level (a call on the reliable link) and waits until
	// the watch sees it (over udp; the runner sends the last values again
	// after a quiet moment, so a lost datagram only delays it).
	set := func(v float64) {
		t.Helper()
		if _, err := s.Call(ctx, "setLevel", map[string]any{"level": v}); err != nil {
			t.Fatal(err)
		}
		for {
			select {
			case dc := <-watch:
				if dc.Value == v {
					return
				}
			case <-ctx.Done():
				t.Fatalf("the watch never saw meter.level %v", v)
			}
		}
	}
	const n = 40
	for i := range n {
		set(float64(i) / 1000)
	}
	moved, err := s.Roam(ctx)
	if err != nil || moved != 1 {
		t.Fatalf("Roam: %d links moved, %v", moved, err)
	}
	for i := n; i < 2*n; i++ {
		set(float64(i) / 1000)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(run.logs.String(), `msg="a direct link moved to a new address"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the runner never moved the link:\n%s", run.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A third socket: an unknown link id, and a malformed envelope.
	third, err := net.Dial("udp", strings.TrimPrefix(r.linkUDP, "udp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	forged := append([]byte{0xC5, 1}, make([]byte, 16+40)...)
	forged[9], forged[17] = 1, 1 // link id 1, counter 1
	third.Write(forged)
	third.Write([]byte{0xC5, 1, 2, 3})
	for !strings.Contains(run.logs.String(), `msg="a datagram on a direct-link endpoint was dropped"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the runner never reported the forged datagrams:\n%s", run.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 2 * n; i < 2*n+10; i++ {
		set(float64(i) / 1000)
	}

	// One session, one LinkOpen of the unreliable link, no note.
	st := linkStats(s)["unreliable"]
	if !st.Open || st.Rejected != 0 || len(s.Notes()) != 0 {
		t.Fatalf("unreliable link %+v, notes %v", st, s.Notes())
	}
	if got := strings.Count(r.s.logs.String(), `msg="session started"`); got != 1 {
		t.Errorf("the server started %d sessions, want 1", got)
	}
	if got := strings.Count(run.logs.String(), `msg="direct link open"`); got != 2 { // reliable, unreliable
		t.Errorf("the runner opened %d direct links, want 2:\n%s", got, run.logs)
	}
}
