package integration

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ansi matches the terminal control sequences top draws with.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// TestTopUnderATerminal runs connectclient top on a pseudo-terminal, reads
// the screen until it shows the live client, and quits it with q.
func TestTopUnderATerminal(t *testing.T) {
	s, ep := diagServer(t, "")
	id := demoWatcher(t, s, ep)

	cmd := exec.Command(bin.client, "--state-dir", s.stateDir, "--server", ep, "top")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 180})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	screen := &syncBuffer{}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := tty.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	// The screen: the watcher's full id on a row with its bearer, and top
	// itself marked with *.
	deadline := time.Now().Add(30 * time.Second)
	for {
		text := ansi.ReplaceAllString(screen.String(), "")
		if row := lineWith(text, id); row != "" && strings.Contains(row, "demo-watcher") && strings.Contains(row, "tcp") &&
			strings.Contains(text, "CLIENT") && strings.Contains(text, "q quits") && strings.Contains(text, "\n*") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("top never showed client %s; the screen:\n%s", id, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !bytes.Contains([]byte(screen.String()), []byte("\x1b[?1049h")) {
		t.Error("top did not switch to the alternate screen")
	}
	if _, err := tty.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("top exited with %v; screen:\n%s", exitErr, screen)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("top did not quit on q")
	}
	// The terminal's reader may still be copying top's last output.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(screen.String(), "\x1b[?1049l"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Error("top did not restore the screen")
			break
		}
	}
}

// lineWith returns the last line of text holding s, or "".
func lineWith(text, s string) string {
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}
