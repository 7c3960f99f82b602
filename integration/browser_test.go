package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is Debian's browser, which CI installs (.ci/run).
const chromium = "/usr/bin/chromium"

// TestDashboardInABrowser opens the dashboard in headless Chromium, sees a
// client connect and its counters rise, sees a bearer plugin restart after
// it is killed, uses the page's keyboard basics, saves a screenshot, and
// finds no console error.
func TestDashboardInABrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CONNECT_REQUIRE_BROWSER") != "" {
			t.Fatalf("CONNECT_REQUIRE_BROWSER is set and %s is missing (apt-get install -y chromium): %v", chromium, err)
		}
		t.Skipf("no browser at %s (apt-get install -y chromium to run this test; CONNECT_REQUIRE_BROWSER=1 makes its absence a failure)", chromium)
	}
	s, ep := diagServer(t, "")

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1100),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	// Every console message, from before the page loads.
	var (
		mu       sync.Mutex
		problems []string
	)
	messages := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleException, "assert":
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			default:
				t.Logf("browser console: %s", m.String())
			}
		}
	}()
	defer func() { cancel(); <-consoleDone }()

	poll := func(what, expr string) float64 {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Poll[float64](expr, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
		if err != nil {
			t.Fatalf("the dashboard never showed %s: %v", what, err)
		}
		return v
	}

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+s.http+"/")); err != nil {
		t.Fatal(err)
	}
	poll("a first snapshot", `Number(document.body.dataset.updated || 0)`)

	// A client connects; its row appears and its counters rise.
	id := demoWatcher(t, s, ep)
	cellValue := func(row, field string) string {
		return fmt.Sprintf(`(() => { const td = document.querySelector('%s td[data-field="%s"]'); return td ? Number(td.dataset.value) : 0; })()`, row, field)
	}
	clientRow := fmt.Sprintf(`tr[data-client-id="%s"]`, id)
	first := poll("the client's bytes out", cellValue(clientRow, "bytesOut"))
	poll("the client's bytes out rising", fmt.Sprintf(`(() => { const v = %s; return v > %v ? v : 0; })()`, cellValue(clientRow, "bytesOut"), first))
	poll("the client's messages rising", cellValue(clientRow, "messages"))
	poll("the client's round trip", cellValue(clientRow, "rtt"))

	// A bearer plugin is killed; the page shows its restart and new pid.
	pluginRow := `tr[data-plugin="bearer:tcp"]`
	before := s.adapter("tcp")
	poll("the tcp plugin's pid", fmt.Sprintf(`(() => { const v = %s; return v === %d ? v : 0; })()`, cellValue(pluginRow, "pid"), before.PID))
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll("the tcp plugin restarted", fmt.Sprintf(`(() => {
		const row = document.querySelector('%s');
		if (!row) return 0;
		const restarts = Number(row.querySelector('td[data-field="restarts"]').dataset.value);
		const pid = Number(row.querySelector('td[data-field="pid"]').dataset.value);
		const state = row.querySelector('td[data-field="state"]').textContent;
		return restarts >= 1 && pid > 0 && pid !== %d && state === "running" ? restarts : 0;
	})()`, pluginRow, before.PID))

	// Keyboard basics: the first Tab reaches the skip link, every table
	// scrolls in a focusable region, p pauses and resumes.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	poll("the skip link focused by Tab", `document.activeElement && document.activeElement.classList.contains("skip") ? 1 : 0`)
	poll("five focusable table regions", `document.querySelectorAll('.scroll[tabindex="0"][role="region"] table').length === 5 ? 1 : 0`)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`), chromedp.KeyEvent("p")); err != nil {
		t.Fatal(err)
	}
	poll("pause on p", `document.getElementById("pause").getAttribute("aria-pressed") === "true" ? 1 : 0`)
	if err := chromedp.Do(ctx, chromedp.KeyEvent("p")); err != nil {
		t.Fatal(err)
	}
	poll("resume on p", `document.getElementById("pause").getAttribute("aria-pressed") === "false" ? 1 : 0`)
	// Charts have lines once a few seconds are in.
	poll("a throughput line", `document.querySelectorAll('#chart-throughput polyline').length`)

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (kept with go test -artifacts)", path)

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser console error: %s", p)
	}
}
