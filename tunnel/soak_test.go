package tunnel

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bearerkit/connect/internal/soak"
)

// soakCuts is how many times the soak tests cut the link: a few dozen in
// `go test`, more with CONNECT_SOAK_CUTS (make soak).
func soakCuts(t *testing.T) int {
	if v := os.Getenv("CONNECT_SOAK_CUTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("CONNECT_SOAK_CUTS=%q: want a positive number", v)
		}
		return n
	}
	return 20
}

// localEnd listens on loopback like `connectclient tunnel` will: every
// accepted connection gets its own stream to the rig's server and is pumped
// through it. It returns the listening address.
func (r *rig) localEnd(ctx context.Context, service string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := r.open(ctx)
				defer s.Close()
				if err := Dial(ctx, s, service, c.RemoteAddr().String()); err != nil {
					r.t.Errorf("tunnel: %v", err)
					c.Close()
					return
				}
				if _, err := Pump(ctx, c, s); err != nil && ctx.Err() == nil {
					r.t.Errorf("client pump: %v", err)
				}
				s.Flush(ctx)
			}()
		}
	}()
	r.t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// cutWhile resets the server's newest connection every interval until done
// is closed or max cuts were made, and returns the number of cuts.
func (r *rig) cutWhile(done <-chan struct{}, interval time.Duration, max int) int {
	cuts := 0
	for cuts < max {
		select {
		case <-done:
			return cuts
		case <-time.After(interval):
		}
		r.breakNewest()
		cuts++
	}
	return cuts
}

// redis-cli writes a known sequence of keys and list entries through the
// tunnel while the link is cut again and again: every answer arrives once
// and in order, redis holds exactly the sequence, and the tunnel used one
// backend connection throughout.
func TestSoakRedis(t *testing.T) {
	rd := soak.StartRedis(t)
	before := rd.ConnectionsReceived(t)
	r := newRig(t, func(o Open) (Target, error) {
		if o.Service != "redis" {
			return Target{}, errors.New("no tunnel " + o.Service)
		}
		return Target{Address: rd.Addr}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	local := r.localEnd(ctx, "redis")
	cuts := soakCuts(t)
	n := 100 * cuts
	done := make(chan struct{})
	cutc := make(chan int, 1)
	go func() { cutc <- r.cutWhile(done, 40*time.Millisecond, cuts) }()
	soak.RedisWorkload(t, local, n, time.Duration(cuts)*50*time.Millisecond)
	close(done)
	made := <-cutc
	// Since the first INFO: the tunnel's backend connection, and this
	// INFO's own.
	if got := rd.ConnectionsReceived(t) - before; got != 2 {
		t.Fatalf("redis received %d connections during the workload, want 1 (the tunnel's) and this query's", got)
	}
	rd.CheckRedis(t, n)
	if made == 0 {
		t.Fatal("the link was never cut")
	}
	t.Logf("%d commands through %d link cuts", 2*n, made)
}

// An ssh session carries megabytes to sha256sum on the far side while the
// link is cut again and again; the digest matches.
func TestSoakSSH(t *testing.T) {
	sd := soak.StartSSHD(t)
	r := newRig(t, func(o Open) (Target, error) { return Target{Address: sd.Addr}, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	local := r.localEnd(ctx, "ssh")
	cuts := soakCuts(t)
	done := make(chan struct{})
	cutc := make(chan int, 1)
	go func() { cutc <- r.cutWhile(done, 50*time.Millisecond, cuts) }()
	sd.Transfer(t, local, 8<<20, 7, time.Duration(cuts)*60*time.Millisecond)
	close(done)
	made := <-cutc
	if made < cuts/2 {
		t.Fatalf("only %d of %d link cuts happened during the transfer", made, cuts)
	}
	t.Logf("8 MiB through ssh, %d link cuts", made)
}
