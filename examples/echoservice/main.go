// Command echoservice is an example Connect service plugin: the service file
// echo.xml and this one Go file. A host (connectserver, remoteservicerunner)
// starts it; run by hand it explains that it is a plugin and exits.
//
//	go build -o echoservice ./examples/echoservice
package main

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"time"

	"github.com/bearerkit/connect/services/serviceplugin"
)

//go:embed echo.xml
var serviceXML []byte

var service = &serviceplugin.Service{
	XML: serviceXML,
	Methods: map[string]serviceplugin.MethodFunc{
		"echo": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			calls, _ := call.Service.Get("meter.calls")
			if err := call.Service.Set("meter.calls", calls.(int64)+1); err != nil {
				return nil, err
			}
			return call.String("text"), nil
		},
		"add": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			return call.Int("a") + call.Int("b"), nil
		},
		"stats": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			values := call.List("values")
			st := map[string]any{"count": len(values), "mean": 0.0, "max": 0.0}
			sum := 0.0
			for i, v := range values {
				f := v.(float64)
				sum += f
				if i == 0 || f > st["max"].(float64) {
					st["max"] = f
				}
			}
			if len(values) > 0 {
				st["mean"] = sum / float64(len(values))
			}
			return st, nil
		},
		"sleep": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			if err := call.Service.Emit(ctx, "sleeping", map[string]any{"ms": call.Int("ms")}); err != nil {
				return nil, err
			}
			select {
			case <-time.After(time.Duration(call.Int("ms")) * time.Millisecond):
				return "slept", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		"fail": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			if call.String("mode") == "panic" {
				panic("asked to panic")
			}
			return nil, errors.New("asked to fail")
		},
		"setLevel": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			level := call.Float("level")
			if err := call.Service.Set("meter.level", level); err != nil {
				return nil, err
			}
			return nil, call.Service.Emit(ctx, "levelChanged", map[string]any{"level": level})
		},
	},
	OnSessionOpen: func(ctx context.Context, s *serviceplugin.Session) error {
		slog.Info("session opened", "session", s.ID, "client", s.ClientID)
		return nil
	},
	OnSessionClose: func(ctx context.Context, s *serviceplugin.Session, reason string) {
		slog.Info("session closed", "session", s.ID, "reason", reason)
	},
}

func main() { serviceplugin.Serve(service) }
