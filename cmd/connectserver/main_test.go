package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/config"
)

func TestResumeFlags(t *testing.T) {
	parse := func(args ...string) (*config.Server, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		linger := fs.Duration("linger", 0, "")
		freq := fs.Int("pingFrequency", 0, "")
		factor := fs.Int("pingWindowFactor", 0, "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		return cfg, applyResumeFlags(fs, cfg, *linger, *freq, *factor)
	}
	cfg, err := parse()
	if err != nil || cfg.Resume != (config.Resume{Linger: config.DefaultLinger, PingFrequency: config.DefaultPingFrequency, PingWindowFactor: config.DefaultPingWindowFactor, MaxRetries: config.DefaultMaxRetries}) {
		t.Fatalf("no flags: %+v, %v", cfg.Resume, err)
	}
	cfg, err = parse("--linger", "90s", "--pingFrequency", "250", "--pingWindowFactor", "4")
	if err != nil || cfg.Resume != (config.Resume{Linger: 90 * time.Second, PingFrequency: 250 * time.Millisecond, PingWindowFactor: 4, MaxRetries: config.DefaultMaxRetries}) {
		t.Fatalf("flags: %+v, %v", cfg.Resume, err)
	}
	for _, bad := range [][]string{{"--linger", "0s"}, {"--pingFrequency", "5"}, {"--pingWindowFactor", "1"}} {
		if _, err := parse(bad...); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
