// Command connectserver hosts Connect services and accepts clients over the
// configured bearers. With no flags it runs on an embedded default
// configuration: tcp://127.0.0.1:9500, udp://127.0.0.1:9500,
// ssl://127.0.0.1:9501 and the HTTP API on 127.0.0.1:8080.
//
//	connectserver [--config FILE] [--listen URL]... [--http ADDR|off] [--state-dir DIR]
//	              [--token TOKEN]... [--log-level L] [--log-format text|json]
//	              [--linger D] [--pingFrequency MS] [--pingWindowFactor N]
//	              [--secondaryBindPort PORT] [--secondaryConnectPort PORT] [--maxRetries N]
//	connectserver check --config FILE
//	connectserver version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/stock"
	"github.com/bearerkit/connect/config"
	"github.com/bearerkit/connect/core"
	"github.com/bearerkit/connect/internal/cli"
	"github.com/bearerkit/connect/internal/statedir"
	"github.com/bearerkit/connect/internal/version"
	"github.com/bearerkit/connect/services/builtin"
	"github.com/bearerkit/connect/services/servicefile"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return cli.ExitStatus("connectserver", dispatch(args, stdout, stderr), stderr)
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, version.String("connectserver"))
			return nil
		case "check":
			return check(args[1:], stdout, stderr)
		case "plugin":
			// Hidden: the server re-executes itself to run a stock bearer
			// or a built-in service as a plugin subprocess.
			switch {
			case len(args) == 3 && args[1] == "bearer":
				return stock.ServePlugin(args[2])
			case len(args) == 3 && args[1] == "service":
				return builtin.ServePlugin(args[2])
			}
			return cli.Usagef("usage: connectserver plugin bearer tcp|udp|ssl, or plugin service NAME (started by connectserver itself)")
		}
	}
	return serve(args, stderr)
}

func serve(args []string, stderr io.Writer) error {
	fs := pflag.NewFlagSet("connectserver", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFile := fs.String("config", "", "XML server configuration `FILE` (default: the embedded configuration)")
	listen := fs.StringArray("listen", nil, "listen on `URL` (tcp://, udp://, ssl://, or a plugin adapter's scheme); replaces the configured stock adapters; repeatable")
	httpAddr := fs.String("http", "", "HTTP API `ADDR` (host:port), or off")
	stateDir := fs.String("state-dir", "", "state `DIR` (default $CONNECT_STATE_DIR, else the file's stateDir, else ~/.local/state/connect)")
	tokens := fs.StringArray("token", nil, "accept client `TOKEN` (repeatable; adds to the configured tokens)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error (default from the configuration, info)")
	logFormat := fs.String("log-format", "", "log format: text or json (default from the configuration, text)")
	linger := fs.Duration("linger", 0, "how long a client's sessions outlive its connection (`D`, default from <resume linger>, 10m)")
	pingFrequency := fs.Int("pingFrequency", 0, "keepalive interval in milliseconds (`MS`, default from <resume pingFrequency>, 5000)")
	pingWindowFactor := fs.Int("pingWindowFactor", 0, "declare a path dead after `N` ping intervals without traffic (default from <resume pingWindowFactor>, 2)")
	control := registerControlFlags(fs) // control.go
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage:\n  connectserver [flags]\n  connectserver check --config FILE\n  connectserver version\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}

	cfg := config.Default()
	if *cfgFile != "" {
		var err error
		if cfg, err = config.Load(*cfgFile); err != nil {
			return err
		}
	}
	if len(*listen) > 0 {
		if err := cfg.ApplyListen(*listen); err != nil {
			return cli.Usagef("--listen: %v", err)
		}
	}
	switch *httpAddr {
	case "":
	case "off":
		cfg.HTTPAddr = ""
	default:
		cfg.HTTPAddr = *httpAddr
	}
	cfg.Auth.Tokens = append(cfg.Auth.Tokens, *tokens...)
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
	}
	if err := applyResumeFlags(fs, cfg, *linger, *pingFrequency, *pingWindowFactor); err != nil {
		return err
	}
	if err := control.apply(fs, cfg); err != nil {
		return err
	}
	logger, err := cli.NewLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	dirFlag := *stateDir
	if dirFlag == "" && os.Getenv(statedir.EnvVar) == "" {
		dirFlag = cfg.StateDir
	}
	dir, err := statedir.Resolve(dirFlag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find my own executable to start the stock bearer plugins: %w", err)
	}
	srv, err := core.New(core.Options{
		Config:   cfg,
		StateDir: dir,
		StockPlugin: func(scheme string) (string, []string) {
			return exe, []string{"plugin", "bearer", scheme}
		},
		BuiltinService: func(name string) (string, []string) {
			return exe, []string{"plugin", "service", name}
		},
		Logger: logger,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting", "version", version.String("connectserver"), "config", cfg.File, "state_dir", dir)
	if err := srv.Start(ctx); err != nil {
		return err
	}
	for _, a := range srv.Adapters() {
		if a.Endpoint != "" {
			logger.Info("clients connect with", "command", "connectclient --server "+a.Endpoint+" ping")
		}
	}
	<-ctx.Done()
	logger.Info("shutting down")
	return srv.Close()
}

// applyResumeFlags applies --linger, --pingFrequency and --pingWindowFactor
// (the <resume> attributes of the same names) when given.
func applyResumeFlags(fs *pflag.FlagSet, cfg *config.Server, linger time.Duration, freq, factor int) error {
	if fs.Changed("linger") {
		if linger <= 0 {
			return cli.Usagef("--linger must be greater than 0, got %v", linger)
		}
		cfg.Resume.Linger = linger
	}
	if fs.Changed("pingFrequency") {
		d := time.Duration(freq) * time.Millisecond
		if d < config.MinPingFrequency || d > config.MaxPingFrequency {
			return cli.Usagef("--pingFrequency must be from %d to %d milliseconds, got %d", config.MinPingFrequency.Milliseconds(), config.MaxPingFrequency.Milliseconds(), freq)
		}
		cfg.Resume.PingFrequency = d
	}
	if fs.Changed("pingWindowFactor") {
		if factor < config.MinPingWindowFactor || factor > config.MaxPingWindowFactor {
			return cli.Usagef("--pingWindowFactor must be from %d to %d, got %d", config.MinPingWindowFactor, config.MaxPingWindowFactor, factor)
		}
		cfg.Resume.PingWindowFactor = factor
	}
	return nil
}

// check validates a configuration and every stock adapter's attributes,
// printing one "file:line: message" line per problem.
func check(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("connectserver check", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFile := fs.String("config", "", "XML server configuration `FILE` to check (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return cli.Usagef("%v", err)
	}
	if *cfgFile == "" {
		return cli.Usagef("check needs --config FILE")
	}
	cfg, err := config.Load(*cfgFile)
	var problems config.Problems
	if err != nil && !errors.As(err, &problems) {
		return err
	}
	if cfg != nil {
		problems = append(problems, cfg.CheckPlugins()...)
		problems = append(problems, checkAttributes(cfg)...)
		problems = append(problems, checkServices(cfg)...)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p.String())
		}
		return fmt.Errorf("%d problem(s) in %s", len(problems), *cfgFile)
	}
	fmt.Fprintf(stdout, "%s: ok (%d connection adapters)\n", *cfgFile, len(cfg.Adapters))
	return nil
}

// checkServices loads every service file the configuration names, and
// checks that it describes the service under the configured name.
func checkServices(cfg *config.Server) config.Problems {
	var out config.Problems
	for _, sv := range cfg.Services {
		if sv.Builtin != "" {
			svc, err := builtin.New(sv.Builtin)
			if err == nil {
				if err = svc.Check(); err == nil && svc.Description().Name != sv.Name {
					err = fmt.Errorf("the built-in %q is service %q", sv.Builtin, svc.Description().Name)
				}
			}
			if err != nil {
				out = append(out, config.Problem{File: cfg.File, Line: sv.Line, Msg: fmt.Sprintf("service %s: %v", sv.Name, err)})
			}
		}
		if sv.File == "" {
			continue
		}
		desc, err := servicefile.Load(sv.File)
		var ps config.Problems
		switch {
		case errors.As(err, &ps):
			out = append(out, ps...)
		case err != nil:
			out = append(out, config.Problem{File: cfg.File, Line: sv.Line, Msg: fmt.Sprintf("service %s: %v", sv.Name, err)})
		case desc.Name != sv.Name:
			out = append(out, config.Problem{File: cfg.File, Line: sv.Line, Msg: fmt.Sprintf("service %s: file %s describes service %q", sv.Name, sv.File, desc.Name)})
		}
	}
	return out
}

// checkAttributes creates each stock bearer with its attributes (in a
// scratch state directory) so that a bad attribute is found before start.
func checkAttributes(cfg *config.Server) config.Problems {
	reg := stock.Registry()
	scratch, err := os.MkdirTemp("", "connectserver-check-")
	if err != nil {
		return nil
	}
	defer os.RemoveAll(scratch)
	var out config.Problems
	for _, a := range cfg.Adapters {
		r, ok := reg.ByType(a.Type)
		if !ok || a.Plugin != "" {
			continue // an external plugin checks its own attributes at start
		}
		if _, err := r.New(bearers.Config{Attributes: a.Attributes, StateDir: scratch}); err != nil {
			out = append(out, config.Problem{File: cfg.File, Line: a.Line, Msg: fmt.Sprintf("connectionAdapter %s: %v", a.Name, err)})
		}
	}
	return out
}
