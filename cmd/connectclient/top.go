package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"golang.org/x/term"

	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/diagnostics"
)

// top shows the server's figures live: it watches the Diagnostics
// service's runtime data over the normal client connection, so it works
// wherever connectclient does. On a terminal it redraws the screen at
// every snapshot (about once a second) until q; otherwise it prints one
// plain frame per snapshot until interrupted or --count N. --json prints
// one snapshot and exits.
func top(o *options, stdout, stderr io.Writer) error {
	if o.count < 0 {
		return cli.Usagef("--count must not be negative")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, _, id, closeAll, err := dial(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	if o.json {
		snap, err := oneSnapshot(ctx, o, c)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(snap)
	}
	out, isFile := stdout.(*os.File)
	screen := isFile && term.IsTerminal(int(out.Fd()))
	var keys <-chan byte
	if screen && term.IsTerminal(int(os.Stdin.Fd())) {
		kr, restore, err := startKeys()
		if err != nil {
			return fmt.Errorf("top: the terminal: %w", err)
		}
		defer restore()
		keys = kr
	}
	v := &topView{self: id, screen: screen, out: stdout}
	if screen {
		v.width, v.height = 100, 30
		io.WriteString(stdout, "\x1b[?1049h\x1b[?25l") // alternate screen, no cursor
		defer io.WriteString(stdout, "\x1b[?25h\x1b[?1049l")
	}
	return v.run(ctx, o, c, keys)
}

// oneSnapshot returns the Diagnostics service's current figures, waiting
// (within --timeout) for the first publication if the server has not
// published yet.
func oneSnapshot(ctx context.Context, o *options, c *client.Client) (*diagnostics.Snapshot, error) {
	rctx, cancel := request(ctx, o)
	defer cancel()
	s, err := c.StartSession(rctx, diagnostics.ServiceName)
	if err != nil {
		return nil, fmt.Errorf("top: %w", err)
	}
	defer s.Close()
	ch, err := s.Watch(rctx, "")
	if err != nil {
		return nil, fmt.Errorf("top: %w", err)
	}
	for dc := range ch {
		snap, err := decodeSnapshot(dc)
		if err != nil {
			return nil, err
		}
		if snap.Server.TimeUnixMillis != 0 {
			return snap, nil
		}
	}
	if rctx.Err() != nil {
		return nil, fmt.Errorf("top: the server published no diagnostics within %s (are they off? see <diagnostics> in docs/CONFIG.md)", o.timeout)
	}
	return nil, fmt.Errorf("top: %w", s.Err())
}

func decodeSnapshot(dc client.DataChange) (*diagnostics.Snapshot, error) {
	doc, err := services.MarshalJSON(dc.Type, dc.Value)
	if err != nil {
		return nil, fmt.Errorf("top: the Diagnostics data does not encode: %w", err)
	}
	return diagnostics.Decode(doc)
}

// startKeys puts the terminal in raw mode and reads keys from standard
// input. restore stops the reader (it has returned when restore returns)
// and restores the terminal.
func startKeys() (<-chan byte, func(), error) {
	fd := int(os.Stdin.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, err
	}
	// A non-blocking descriptor of our own, so that the reader can be
	// stopped with a deadline instead of being left blocked in read.
	in, err := pollableStdin()
	keys := make(chan byte, 16)
	done := make(chan struct{})
	stopping := make(chan struct{})
	if err != nil {
		close(done) // no key reader: q is not available, interrupt is
	} else {
		go func() {
			defer close(done)
			buf := make([]byte, 64)
			for {
				n, err := in.Read(buf)
				for _, b := range buf[:n] {
					select {
					case keys <- b:
					case <-stopping:
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	var once sync.Once
	restore := func() {
		once.Do(func() {
			close(stopping)
			if in != nil {
				in.SetReadDeadline(time.Now())
			}
			<-done
			if in != nil {
				in.Close()
			}
			syscall.SetNonblock(fd, false)
			term.Restore(fd, state)
		})
	}
	return keys, restore, nil
}

// pollableStdin returns a duplicate of standard input whose reads honour
// deadlines. The caller closes it (which leaves standard input open) and
// puts standard input back in blocking mode: the two share that flag.
func pollableStdin() (*os.File, error) {
	fd, err := syscall.Dup(int(os.Stdin.Fd()))
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "/dev/stdin")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// topView draws snapshots.
type topView struct {
	self          uuid.UUID
	screen        bool
	out           io.Writer
	width, height int
	frames        int
}

func (v *topView) run(ctx context.Context, o *options, c *client.Client, keys <-chan byte) error {
	var last *diagnostics.Snapshot
	status := "connecting to the Diagnostics service…"
	redraw := func() {
		if v.screen {
			if f, ok := v.out.(*os.File); ok {
				if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 0 && h > 0 {
					v.width, v.height = w, h
				}
			}
		}
		v.draw(last, status)
	}
	for again := false; ; again = true {
		rctx, cancel := streamRequest(ctx, o, again)
		s, err := c.StartSession(rctx, diagnostics.ServiceName)
		if err != nil {
			cancel()
			return fmt.Errorf("top: %w", err)
		}
		ch, err := s.Watch(ctx, "")
		cancel()
		if err != nil {
			s.Close()
			return fmt.Errorf("top: %w", err)
		}
		status = ""
	loop:
		for {
			select {
			case dc, ok := <-ch:
				if !ok {
					break loop
				}
				snap, err := decodeSnapshot(dc)
				if err != nil {
					s.Close()
					return err
				}
				last = snap
				redraw()
				v.frames++
				if !v.screen && o.count > 0 && v.frames >= o.count {
					s.Close()
					return nil
				}
			case k := <-keys:
				switch k {
				case 'q', 'Q', 3 /* ^C in raw mode */, 4 /* ^D */ :
					s.Close()
					return nil
				default:
					redraw()
				}
			case <-ctx.Done():
				s.Close()
				return nil
			}
		}
		err = s.Err()
		s.Close()
		if ctx.Err() != nil {
			return nil
		}
		if !reconnectable(ctx, err) {
			return fmt.Errorf("top: %w", err)
		}
		status = "connection lost; reconnecting…"
		redraw()
	}
}

// draw writes one frame: on a terminal it replaces the screen, cut to its
// size; otherwise it prints the lines and a blank line.
func (v *topView) draw(snap *diagnostics.Snapshot, status string) {
	lines := v.frame(snap, status)
	var b strings.Builder
	if !v.screen {
		for _, l := range lines {
			b.WriteString(strings.TrimRight(l, " "))
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
		io.WriteString(v.out, b.String())
		return
	}
	b.WriteString("\x1b[H")
	for i, l := range lines {
		if i >= v.height {
			break
		}
		if r := []rune(l); len(r) > v.width {
			l = string(r[:v.width])
		}
		b.WriteString(l)
		b.WriteString("\x1b[K")
		if i < v.height-1 && i < len(lines)-1 {
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\x1b[J")
	io.WriteString(v.out, b.String())
}

// frame lays out a snapshot as lines of text.
func (v *topView) frame(snap *diagnostics.Snapshot, status string) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if snap == nil {
		add("connect top — %s", orDash(status))
		if v.screen {
			add("q quits")
		}
		return out
	}
	sv := snap.Server
	when := time.UnixMilli(sv.TimeUnixMillis).Format("15:04:05")
	if sv.TimeUnixMillis == 0 {
		when = "no figures yet (are diagnostics off?)"
	}
	add("connect top — server %s, up %s — %s", shortID(sv.ID), fmtDuration(time.Duration(sv.UptimeSeconds*float64(time.Second))), when)
	t := snap.Totals
	add("clients %d (connecting %d)  sessions %d  in %s  out %s  msgs %s/s  calls %s/s  errors %d  mem %s",
		sv.Clients, sv.Connecting, sv.Sessions, fmtRate(t.BytesInPerSec), fmtRate(t.BytesOutPerSec),
		fmtNum(t.MessagesInPerSec+t.MessagesOutPerSec), fmtNum(t.CallsPerSec), t.CallErrors, fmtBytes(float64(sv.RSSBytes)))
	if status != "" {
		add("%s", status)
	}
	add("")

	clients := append([]diagnostics.Client(nil), snap.Clients...)
	sort.SliceStable(clients, func(i, j int) bool {
		a, b := &clients[i], &clients[j]
		if ta, tb := a.Traffic(), b.Traffic(); ta != tb {
			return ta > tb
		}
		return a.BytesIn+a.BytesOut > b.BytesIn+b.BytesOut
	})
	add("%-37s %-14s %-6s %-21s %10s %10s %10s %10s %5s %9s", "CLIENT", "NAME", "BEARER", "REMOTE", "IN/s", "OUT/s", "IN", "OUT", "SESS", "RTT avg")
	// Room for the clients: what the screen leaves after the other tables.
	room := len(clients)
	if v.screen {
		room = max(3, v.height-len(out)-len(snap.Services)-len(snap.Plugins)-8)
	}
	for i, c := range clients {
		if i >= room {
			add("… %d more", len(clients)-i)
			break
		}
		mark := " "
		if c.ID == v.self.String() {
			mark = "*" // this connectclient
		}
		rtt := "–"
		if c.RTTSamples > 0 {
			rtt = fmtMicros(c.RTTAvgMicros)
		}
		add("%s%-36s %-14s %-6s %-21s %10s %10s %10s %10s %5d %9s", mark, c.ID, cut(c.Name, 14), cut(c.Bearer, 6), cut(c.Remote, 21),
			fmtRate(c.BytesInPerSec), fmtRate(c.BytesOutPerSec), fmtBytes(float64(c.BytesIn)), fmtBytes(float64(c.BytesOut)), c.Sessions, rtt)
	}
	if len(clients) == 0 {
		add(" (no client)")
	}
	add("")
	add("%-20s %-10s %5s %9s %7s %9s %9s", "SERVICE", "STATE", "SESS", "CALLS/s", "ERRORS", "P50", "P99")
	for _, s := range snap.Services {
		add("%-20s %-10s %5d %9s %7d %9s %9s", cut(s.Name, 20), s.State, s.Sessions, fmtNum(s.CallsPerSec), s.Errors,
			fmtMicros(s.LatencyP50Micros), fmtMicros(s.LatencyP99Micros))
	}
	add("")
	add("%-8s %-20s %-10s %8s %8s %10s", "PLUGIN", "NAME", "STATE", "PID", "RESTARTS", "MEMORY")
	for _, p := range snap.Plugins {
		add("%-8s %-20s %-10s %8d %8d %10s", p.Kind, cut(p.Name, 20), p.State, p.PID, p.Restarts, fmtBytes(float64(p.RSSBytes)))
	}
	if v.screen {
		add("")
		add("sorted by traffic; * is this connectclient; q quits")
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return orDash(id)
}

func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func fmtBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

func fmtRate(n float64) string { return fmtBytes(n) + "/s" }

func fmtNum(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", n/1e3)
	case n == float64(int64(n)):
		return fmt.Sprintf("%d", int64(n))
	}
	return fmt.Sprintf("%.1f", n)
}

func fmtMicros(us float64) string {
	switch {
	case us <= 0:
		return "–"
	case us < 1000:
		return fmt.Sprintf("%.0fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return d.String()
}
