package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/bearerkit/connect/config"
)

func TestControlFlags(t *testing.T) {
	parse := func(args ...string) (*config.Server, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f := registerControlFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		return cfg, f.apply(fs, cfg)
	}
	cfg, err := parse()
	if r := cfg.Resume; err != nil || r.SecondaryBindPort != 0 || r.SecondaryConnectPort != 0 || r.MaxRetries != config.DefaultMaxRetries {
		t.Fatalf("no flags: %+v, %v", r, err)
	}
	cfg, err = parse("--secondaryBindPort", "9600", "--secondaryConnectPort", "19600", "--maxRetries", "3")
	if r := cfg.Resume; err != nil || r.SecondaryBindPort != 9600 || r.SecondaryConnectPort != 19600 || r.MaxRetries != 3 {
		t.Fatalf("flags: %+v, %v", r, err)
	}
	for _, bad := range [][]string{{"--secondaryBindPort", "70000"}, {"--secondaryConnectPort", "-1"}, {"--maxRetries", "0"}} {
		if _, err := parse(bad...); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
