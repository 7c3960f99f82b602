package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogToSlog returns an hclog.Logger (what go-plugin wants) whose entries
// end up in logger: go-plugin's own messages and the plugin's stderr lines,
// at their levels, tagged with the plugin name.
func hclogToSlog(logger *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "plugin",
		Output:     &lineWriter{log: logger.With("plugin", name)},
		JSONFormat: true,
		Level:      hclog.Debug,
	})
}

// lineWriter parses hclog JSON lines and re-emits them through slog.
type lineWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a runaway line: flush what we have
		w.emit(w.buf)
		w.buf = nil
	}
	return len(p), nil
}

func (w *lineWriter) emit(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.log.Info(string(line))
		return
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := m["@message"].(string)
	if msg == "plugin process exited" && level == slog.LevelError {
		// go-plugin says so at error level whenever the exit status is not
		// zero, also when the host stops the plugin on purpose (shutdown,
		// restart). The host logs an unexpected death itself, as an error
		// that says what it does about it.
		level = slog.LevelInfo
	}
	attrs := make([]any, 0, 2*len(m))
	for k, v := range m {
		if k == "@level" || k == "@message" || k == "@timestamp" || k == "@module" || k == "@caller" {
			continue
		}
		attrs = append(attrs, k, v)
	}
	w.log.Log(context.Background(), level, msg, attrs...)
}
