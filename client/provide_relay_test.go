package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
)

// TestDialRetry: dialing the secondary endpoint is attempted up to
// maxRetries times (ProviderRelay.MaxRetries), and the error says so.
func TestDialRetry(t *testing.T) {
	attempts, failFirst := 0, 0
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		attempts++
		if attempts <= failFirst {
			return nil, errors.New("connection refused")
		}
		a, _ := net.Pipe()
		return a, nil
	}
	failFirst = 4
	c, err := dialRetry(t.Context(), dial, "127.0.0.1:9600", 5, 0)
	if err != nil || attempts != 5 {
		t.Fatalf("4 failures, maxRetries 5: %v after %d attempts", err, attempts)
	}
	c.Close()
	attempts, failFirst = 0, 100
	_, err = dialRetry(t.Context(), dial, "127.0.0.1:9600", 3, 0)
	if err == nil || attempts != 3 || !strings.Contains(err.Error(), "connection refused (gave up after 3 attempts, maxRetries 3)") {
		t.Fatalf("always failing, maxRetries 3: %v after %d attempts", err, attempts)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	attempts = 0
	if _, err := dialRetry(ctx, dial, "127.0.0.1:9600", 10, 0); err == nil || attempts != 1 {
		t.Fatalf("a cancelled context: %v after %d attempts", err, attempts)
	}
}

// TestProviderRelayExcludesListeners: a provider either listens or has the
// server relay.
func TestProviderRelayExcludesListeners(t *testing.T) {
	_, err := NewProvider(ProviderConfig{Services: []ProvidedService{{XML: []byte(directXML), Handler: directHandler{}}},
		Listeners: []ProviderListener{{Listener: stubListener{}, Bearer: relayBearer}}, Relay: &ProviderRelay{}})
	if !errors.Is(err, errNoRelay) {
		t.Fatalf("a provider with Listeners and Relay: %v", err)
	}
}

type stubListener struct{}

func (stubListener) Accept(context.Context) (bearers.Conn, error) { return nil, net.ErrClosed }
func (stubListener) Addr() net.Addr                               { return nil }
func (stubListener) Endpoint() bearers.Endpoint                   { return bearers.Endpoint{} }
func (stubListener) Close() error                                 { return nil }
