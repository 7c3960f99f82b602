package serviceplugin

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// connectWait is how long a served plugin waits for its host's Connect
// stream before it concludes that the host is gone and exits.
const connectWait = time.Minute

// Serve serves svc as a plugin on this process's standard streams. It does
// not return. Run it from main; the process must have been started by a
// Connect host (connectserver, remoteservicerunner), and run by hand it
// says so and exits with status 2. An invalid service (see Service.Check)
// is reported on standard error, and the process exits with status 1.
//
// Serve sets slog's default logger to one the host receives: log with slog
// and the lines appear in the host's log, tagged with the plugin. The plugin
// exits when its host's stream ends (the host exited or stopped it, even
// by SIGKILL): a plugin never outlives its host.
func Serve(svc *Service) {
	logger := slog.New(newHostLogHandler(os.Stderr))
	slog.SetDefault(logger)
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a Connect service plugin; connectserver or remoteservicerunner starts it, it is not run by hand.\n", os.Args[0])
		os.Exit(2)
	}
	srv, err := NewServer(svc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		select {
		case <-srv.attached:
		case <-time.After(connectWait):
			logger.Error("no host connected a stream; exiting", "waited", connectWait.String())
			os.Exit(1)
		}
		<-srv.ended
		logger.Debug("the host's stream ended; exiting")
		os.Exit(0)
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &GRPCPlugin{Impl: srv}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       svc.desc.Name,
			Output:     os.Stderr,
			JSONFormat: true,
			Level:      hclog.Info,
		}),
	})
	os.Exit(0)
}

// newHostLogHandler writes slog records as the JSON lines go-plugin reads
// from a plugin's standard error (hclog's format: "@level", "@message",
// "@timestamp"), so that the host logs them at their level.
func newHostLogHandler(w io.Writer) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	})
}
