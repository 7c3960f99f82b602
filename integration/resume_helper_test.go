package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/tcp"
	"github.com/bearerkit/connect/client"
	"github.com/bearerkit/connect/internal/statedir"
)

// The resume tests run real client processes: this test binary re-executed
// with helperEnv set to a mode. The helper prints what it sees on stdout,
// one line per fact, and logs on stderr.

const (
	helperEnv       = "CONNECT_RESUME_HELPER"
	helperServer    = "CONNECT_RESUME_SERVER"     // host:port
	helperTokenFile = "CONNECT_RESUME_TOKEN_FILE" // the server's token
	helperStateDir  = "CONNECT_RESUME_STATE_DIR"  // holds the client id
	helperStateFile = "CONNECT_RESUME_STATE_FILE" // client.Config.StateFile
	helperCount     = "CONNECT_RESUME_COUNT"      // appends (stream mode)
	ledgerService   = "test.ledger"
)

// ledgerDigest is the ledger service's digest of the list 1..n.
func ledgerDigest(n int) string {
	h := sha256.New()
	for i := 1; i <= n; i++ {
		fmt.Fprintf(h, "%d\n", i)
	}
	return strconv.Itoa(n) + ":" + hex.EncodeToString(h.Sum(nil))
}

// resumeClientConfig is the configuration of a test client of the server
// at addr (host:port, tcp), with fast retries.
func resumeClientConfig(addr, tokenFile, stateDir, stateFile string, logger *slog.Logger) (client.Config, error) {
	ep, err := bearers.ParseEndpoint("tcp://" + addr)
	if err != nil {
		return client.Config{}, err
	}
	token, err := statedir.ReadToken(tokenFile)
	if err != nil {
		return client.Config{}, err
	}
	id, err := statedir.ClientID(stateDir)
	if err != nil {
		return client.Config{}, err
	}
	b, err := tcp.New(bearers.Config{Attributes: bearers.Attributes{}})
	if err != nil {
		return client.Config{}, err
	}
	return client.Config{Server: ep, Bearer: b, ClientID: id, Token: token, Name: "resume-test",
		RegistrationTimeout: 2 * time.Second, RetryMin: 20 * time.Millisecond, RetryMax: 250 * time.Millisecond,
		StateFile: stateFile, Logger: logger}, nil
}

// resumeHelper runs one helper mode and returns the exit status.
func resumeHelper(mode string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, err := resumeClientConfig(os.Getenv(helperServer), os.Getenv(helperTokenFile), os.Getenv(helperStateDir), os.Getenv(helperStateFile), logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := client.Dial(dctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: dial:", err)
		return 1
	}
	defer c.Close()
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	fail := func(format string, args ...any) int {
		say("FAIL "+format, args...)
		return 1
	}
	call := func(s *client.Session, method string, args map[string]any) (any, error) {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return s.Call(cctx, method, args)
	}
	switch mode {
	case "open3":
		// Three sessions, session i with i+2 entries; then wait to be killed.
		for i := range 3 {
			s, err := c.StartSession(ctx, ledgerService)
			if err != nil {
				return fail("start session: %v", err)
			}
			for v := 1; v <= i+2; v++ {
				if _, err := call(s, "append", map[string]any{"value": v}); err != nil {
					return fail("append: %v", err)
				}
			}
			say("session %s %d", s.ID, i+2)
		}
		say("ready")
		<-ctx.Done()
		return 0
	case "reclaim":
		// Report what the restart reclaimed, prove the restored sessions
		// work, then wait to be stopped.
		for _, r := range c.Reclaimed() {
			if r.Session == nil {
				var re *client.ReclaimError
				if !errors.As(r.Err, &re) {
					return fail("session %s: %v", r.ID, r.Err)
				}
				say("lost %s %s expired=%v requests=%d last=%d: %v", r.ID, re.Status, errors.Is(r.Err, client.ErrSessionExpired), re.Requests, re.LastRequest, r.Err)
				continue
			}
			d, err := call(r.Session, "digest", nil)
			if err != nil {
				return fail("digest of %s: %v", r.ID, err)
			}
			n, _ := strconv.Atoi(strings.SplitN(d.(string), ":", 2)[0])
			if got, err := call(r.Session, "append", map[string]any{"value": n + 1}); err != nil || got != int64(n+1) {
				return fail("append to restored %s: %v, %v", r.ID, got, err)
			}
			say("restored %s %s", r.ID, d)
		}
		var ids []string
		for _, s := range c.Sessions() {
			ids = append(ids, s.ID)
		}
		say("sessions %s", strings.Join(ids, ","))
		say("ready")
		<-ctx.Done()
		return 0
	case "stream":
		// Append 1..N in one session, checking every answer, the events
		// and the service's digest.
		n, _ := strconv.Atoi(os.Getenv(helperCount))
		s, err := c.StartSession(ctx, ledgerService)
		if err != nil {
			return fail("start session: %v", err)
		}
		events, err := s.Subscribe(ctx, "appended")
		if err != nil {
			return fail("subscribe: %v", err)
		}
		for i := 1; i <= n; i++ {
			got, err := call(s, "append", map[string]any{"value": i})
			if err != nil || got != int64(i) {
				return fail("append %d: %v, %v", i, got, err)
			}
			say("appended %d", i)
			time.Sleep(5 * time.Millisecond)
		}
		for i := 1; i <= n; i++ {
			select {
			case ev, ok := <-events:
				if !ok || ev.Lost > 0 || ev.Args["value"] != int64(i) {
					return fail("event %d: %+v (open %v)", i, ev, ok)
				}
			case <-time.After(time.Minute):
				return fail("event %d never came", i)
			}
		}
		d, err := call(s, "digest", nil)
		if err != nil || d != ledgerDigest(n) {
			return fail("digest %v (%v), want %s", d, err, ledgerDigest(n))
		}
		say("done %s", d)
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
	return 2
}
