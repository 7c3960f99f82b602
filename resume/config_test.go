package resume

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if err := VerifyConfig(c); err != nil {
		t.Fatal(err)
	}
	if c.ReplayBuffer != 4<<20 || c.AckInterval != time.Second || c.Linger != 10*time.Minute {
		t.Fatalf("defaults changed: %+v", c)
	}
	if DefaultConfig() == c {
		t.Fatal("DefaultConfig returns a shared value")
	}
}

func TestVerifyConfig(t *testing.T) {
	cases := []struct {
		field  string
		change func(*Config)
	}{
		{"ReplayBuffer", func(c *Config) { c.ReplayBuffer = 1000 }},
		{"ReplayBuffer", func(c *Config) { c.ReplayBuffer = 2 << 30 }},
		{"ReceiveBuffer", func(c *Config) { c.ReceiveBuffer = 0 }},
		{"MaxMessage", func(c *Config) { c.MaxMessage = 0 }},
		{"MaxMessage", func(c *Config) { c.MaxMessage = 32 << 20 }},
		{"MaxMessage", func(c *Config) { c.ReplayBuffer = 1 << 20 }}, // 1 MiB messages do not fit with their overhead
		{"MaxMessage", func(c *Config) { c.ReceiveBuffer = 1 << 20 }},
		{"AckInterval", func(c *Config) { c.AckInterval = 0 }},
		{"KeepaliveInterval", func(c *Config) { c.KeepaliveInterval = -1 }},
		{"DeadTimeout", func(c *Config) { c.DeadTimeout = -1 }},
		{"DeadTimeout", func(c *Config) { c.KeepaliveInterval = 0 }},
		{"DeadTimeout", func(c *Config) { c.DeadTimeout = 9 * time.Second }},
		{"HandshakeTimeout", func(c *Config) { c.HandshakeTimeout = 0 }},
		{"Linger", func(c *Config) { c.Linger = -time.Second }},
		{"RetryFast", func(c *Config) { c.RetryFast = -1 }},
		{"RetryMin", func(c *Config) { c.RetryMin = 0 }},
		{"RetryMax", func(c *Config) { c.RetryMax = time.Millisecond }},
		{"MaxSessions", func(c *Config) { c.MaxSessions = 0 }},
		{"TombstoneTTL", func(c *Config) { c.TombstoneTTL = -1 }},
		{"MaxTombstones", func(c *Config) { c.MaxTombstones = -1 }},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.change(c)
		err := VerifyConfig(c)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want a *ConfigError for %s", tc.field, err, tc.field)
		}
		if _, err := NewTable(c); !errors.As(err, &ce) {
			t.Errorf("%s: NewTable accepted it: %v", tc.field, err)
		}
		if _, err := Open(t.Context(), nil, c); !errors.As(err, &ce) {
			t.Errorf("%s: Open accepted it: %v", tc.field, err)
		}
	}
	if err := VerifyConfig(nil); err == nil {
		t.Error("nil config accepted")
	}
	// Disabling keepalives and the dead-connection check together is fine.
	c := DefaultConfig()
	c.KeepaliveInterval, c.DeadTimeout, c.TombstoneTTL, c.MaxTombstones, c.RetryFast = 0, 0, 0, 0, 0
	if err := VerifyConfig(c); err != nil {
		t.Fatal(err)
	}
}
