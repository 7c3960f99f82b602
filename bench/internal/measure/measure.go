// Package measure is the call-latency and call-rate machinery the service
// benchmarks share: every path is measured in the same run, latency in
// blocks that take turns so that machine noise spreads over all paths, and
// every series is bounded in count and in time.
package measure

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Block is how many calls one path makes before the next path's turn.
const Block = 100

// Path is one way of making a call. Call is given the caller's index (0
// for the latency series; 0..callers-1 for the rate).
type Path struct {
	Key, Label string
	Call       func(ctx context.Context, caller int) error
}

// Latency warms every path up, then measures calls sequential calls per
// path, in turns of Block calls; a path stops once its calls took limit in
// all (its series is then shorter). The series come back sorted.
func Latency(ctx context.Context, paths []Path, warmup, calls int, limit time.Duration) (map[string][]time.Duration, error) {
	out := map[string][]time.Duration{}
	sctx, cancel := context.WithTimeout(ctx, time.Duration(len(paths))*limit+60*time.Second)
	defer cancel()
	for _, p := range paths {
		for i := 0; i < warmup; i++ {
			if err := p.Call(sctx, 0); err != nil {
				return nil, fmt.Errorf("%s: %w", p.Key, err)
			}
		}
		out[p.Key] = make([]time.Duration, 0, calls)
	}
	spent := map[string]time.Duration{}
	for done := 0; done < calls; done += Block {
		for _, p := range paths {
			if spent[p.Key] > limit {
				continue
			}
			for i := 0; i < min(Block, calls-done); i++ {
				t0 := time.Now()
				if err := p.Call(sctx, 0); err != nil {
					return nil, fmt.Errorf("%s: %w", p.Key, err)
				}
				d := time.Since(t0)
				spent[p.Key] += d
				out[p.Key] = append(out[p.Key], d)
			}
		}
	}
	for _, s := range out {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	return out, nil
}

// Pct is the p-th percentile of a sorted series (0 for an empty one).
func Pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)]
}

// Rate is how many calls completed in how long.
type Rate struct {
	Calls   int64
	Elapsed time.Duration
}

// PerSec is the calls per second.
func (r Rate) PerSec() float64 { return float64(r.Calls) / r.Elapsed.Seconds() }

// Throughput runs callers concurrent callers on each path, one path after
// the other, each for limit or until maxCalls calls completed.
func Throughput(ctx context.Context, paths []Path, callers int, maxCalls int64, limit time.Duration) (map[string]Rate, error) {
	out := map[string]Rate{}
	for _, p := range paths {
		rctx, cancel := context.WithTimeout(ctx, limit+30*time.Second)
		var (
			n        atomic.Int64
			wg       sync.WaitGroup
			firstErr error
			errOnce  sync.Once
		)
		stopAt := time.Now().Add(limit)
		start := time.Now()
		for i := 0; i < callers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stopAt) && n.Load() < maxCalls {
					if err := p.Call(rctx, i); err != nil {
						errOnce.Do(func() { firstErr = fmt.Errorf("%s: %w", p.Key, err) })
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		cancel()
		if firstErr != nil {
			return nil, firstErr
		}
		out[p.Key] = Rate{Calls: n.Load(), Elapsed: elapsed}
	}
	return out, nil
}
