package diagnostics_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/diagnostics"
	"github.com/bearerkit/connect/services/serviceplugin"
)

// sample fills every field, so that a name the XML and the Go type do not
// share shows up.
func sample() *diagnostics.Snapshot {
	return &diagnostics.Snapshot{
		Server: diagnostics.Server{ID: "srv", Version: "v", TimeUnixMillis: 1700000000000, StartedUnixMillis: 1699999999000,
			UptimeSeconds: 1.5, PID: 42, RSSBytes: 1 << 20, Goroutines: 9, PingIntervalMillis: 5000, Clients: 1, Connecting: 2, Sessions: 1, ListLimit: 100},
		Totals: diagnostics.Totals{Connections: 3, Registrations: 1, RegistrationFailures: 2, PingsAnswered: 4, BytesIn: 5, BytesOut: 6,
			BytesInPerSec: 7.5, BytesOutPerSec: 8.5, MessagesIn: 9, MessagesOut: 10, MessagesInPerSec: 1.25, MessagesOutPerSec: 2.25,
			Calls: 11, CallsPerSec: 3.5, CallErrors: 1},
		Clients: []diagnostics.Client{{ID: "c1", Name: "n", Bearer: "tcp", BearerType: "connect.bearer.tcp", Remote: "127.0.0.1:1", Auth: "token",
			State: "connected", ConnectedSinceUnixMillis: 1, RTTLastMicros: 50, RTTMinMicros: 40, RTTAvgMicros: 55, RTTMaxMicros: 90, RTTSamples: 3,
			BytesIn: 1, BytesOut: 2, BytesInPerSec: 3, BytesOutPerSec: 4, MessagesIn: 5, MessagesOut: 6, MessagesInPerSec: 7, MessagesOutPerSec: 8,
			Sessions: 1}},
		Sessions: []diagnostics.Session{{ID: "s1", Service: "Demo", ClientID: "c1", SinceUnixMillis: 2, Calls: 3, Subscriptions: 1, Watches: 2,
			MessagesIn: 4, MessagesOut: 5, Links: []diagnostics.Link{{Name: "server", Type: "server", MessagesIn: 4, MessagesOut: 5}}}},
		Services: []diagnostics.Service{{Name: "Demo", Version: "1.0", State: "running", Sessions: 1, Calls: 3, CallsPerSec: 1, Errors: 0, Events: 7,
			LatencyP50Micros: 80, LatencyP99Micros: 200, LatencyCalls: 3}},
		Bearers: []diagnostics.Bearer{{Name: "tcp", Type: "connect.bearer.tcp", Endpoint: "tcp://127.0.0.1:9500", State: "running", Connections: 3,
			Clients: 1, BytesIn: 5, BytesOut: 6, BytesInPerSec: 1, BytesOutPerSec: 2, AcceptErrors: 2}},
		Plugins: []diagnostics.Plugin{{Kind: "bearer", Name: "tcp", State: "running", PID: 43, Restarts: 1, RSSBytes: 4096, SinceUnixMillis: 3, LastError: "x"}},
	}
}

func newHost(t *testing.T, key string) (*serviceplugin.TestHost, *serviceplugin.Service) {
	t.Helper()
	svc := diagnostics.New(key)
	svc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return serviceplugin.NewTestHost(t, svc), svc
}

func TestSnapshotIsTheRuntimeData(t *testing.T) {
	svc := diagnostics.New("")
	if err := svc.Check(); err != nil {
		t.Fatal(err)
	}
	typ := svc.Description().Data.Type
	for name, snap := range map[string]*diagnostics.Snapshot{"full": sample(), "empty": {}} {
		snap.Normalize()
		doc, err := json.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		v, err := services.UnmarshalJSON(typ, doc)
		if err != nil {
			t.Fatalf("%s: the JSON of a Snapshot is not the service's runtime data: %v\n%s", name, err, doc)
		}
		back, err := services.MarshalJSON(typ, v)
		if err != nil {
			t.Fatal(err)
		}
		got, err := diagnostics.Decode(back)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, snap) {
			t.Fatalf("%s: round trip through the runtime data changed the snapshot:\n%+v\n%+v", name, got, snap)
		}
	}
}

func TestPublishNeedsTheKey(t *testing.T) {
	h, _ := newHost(t, "sekrit")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	snap := sample()
	doc, _ := json.Marshal(snap)

	_, err := h.Call(ctx, "publish", map[string]any{"key": "wrong", "snapshot": string(doc)})
	if err == nil || !strings.Contains(err.Error(), "for the server only") {
		t.Fatalf("publish with a wrong key: %v", err)
	}
	_, err = h.Call(ctx, "publish", map[string]any{"key": "sekrit", "snapshot": `{"server":{}}`})
	if err == nil || !strings.Contains(err.Error(), "not the runtime data") {
		t.Fatalf("publish of a bad document: %v", err)
	}
	if _, err := h.Call(ctx, "publish", map[string]any{"key": "sekrit", "snapshot": string(doc)}); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitData(ctx, "clients.0.id", "c1"); err != nil {
		t.Fatal(err)
	}
	res, err := h.Call(ctx, "snapshot", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := diagnostics.Decode([]byte(res.(string)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, snap) {
		t.Fatalf("snapshot() = %+v\nwant %+v", got, snap)
	}
}

func TestNoKeyRefusesEveryPublish(t *testing.T) {
	h, _ := newHost(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.Call(ctx, "publish", map[string]any{"key": "", "snapshot": "{}"}); err == nil {
		t.Fatal("a service without a key accepted a publish")
	}
	// Before any publish, snapshot() is the defaults: a valid, empty snapshot.
	res, err := h.Call(ctx, "snapshot", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := diagnostics.Decode([]byte(res.(string)))
	if err != nil || got.Server.TimeUnixMillis != 0 || len(got.Clients) != 0 {
		t.Fatalf("snapshot before publish: %+v %v", got, err)
	}
}
