package main

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Targets checked by the summary line (docs/BENCHMARKS.md).
const (
	targetThroughputRatio = 0.90                  // tcp bearer via plugin vs raw TCP
	targetP50Added        = 2 * time.Microsecond  // tcp bearer via plugin p50 minus raw p50
	designP50Added        = 20 * time.Microsecond // DESIGN.md §6: the plugin hop adds < 20 µs at p50
	designGRPCRatio       = 1.0                   // DESIGN.md §6: no worse than gRPC-Go unary
)

// percentile is the nearest-rank percentile of samples (p in 0..100).
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func mean(samples []time.Duration) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	return sum / time.Duration(len(samples))
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// stats are a series' summary figures.
type stats struct {
	n              int
	p50, p99, mean time.Duration
	capped         bool
}

func summarize(s *series) stats {
	if s == nil {
		return stats{}
	}
	return stats{n: len(s.samples), p50: percentile(s.samples, 50), p99: percentile(s.samples, 99), mean: mean(s.samples), capped: s.capped}
}

// thrStats summarise single transfers: the median and quartiles of their
// GB/s.
type thrStats struct {
	gbps           []float64
	median, q1, q3 float64
	capped         bool
}

func summarizeThr(xs []xfer) thrStats {
	t := thrStats{gbps: make([]float64, len(xs))}
	for i, x := range xs {
		t.gbps[i] = x.gbps()
		t.capped = t.capped || x.capped
	}
	f := summarizeValues(t.gbps)
	t.median, t.q1, t.q3 = f.median, f.q1, f.q3
	return t
}

// bootstrapRatio estimates a 90% interval for median(xs)/median(base) by
// resampling both with replacement.
func bootstrapRatio(xs, base []float64) (lo, hi float64) {
	if len(xs) == 0 || len(base) == 0 {
		return 0, 0
	}
	rng := rand.New(rand.NewPCG(7, 11)) // deterministic: same data, same interval
	const rounds = 2000
	v := make([]float64, 0, rounds)
	a, b := make([]float64, len(xs)), make([]float64, len(base))
	for range rounds {
		for i := range a {
			a[i] = xs[rng.IntN(len(xs))]
		}
		for i := range b {
			b[i] = base[rng.IntN(len(base))]
		}
		if d := summarizeValues(b).median; d > 0 {
			v = append(v, summarizeValues(a).median/d)
		}
	}
	if len(v) == 0 {
		return 0, 0
	}
	slices.Sort(v)
	return v[len(v)*5/100], v[min(len(v)-1, len(v)*95/100)]
}

// floatStats are the median and quartiles (nearest rank) of some values.
type floatStats struct{ median, q1, q3 float64 }

func summarizeValues(v []float64) floatStats {
	if len(v) == 0 {
		return floatStats{}
	}
	v = slices.Clone(v)
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	return floatStats{median: m, q1: rank(0.25), q3: rank(0.75)}
}

func ratio(a, b float64) string {
	if b == 0 || a == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func signedMicros(d time.Duration) string {
	return fmt.Sprintf("%+.1f", micros(d))
}

func cappedMark(c bool) string {
	if c {
		return " †"
	}
	return ""
}

func report(w io.Writer, cfg config, r *results) {
	anyCapped := false
	var summary []string

	if cfg.sections["throughput"] {
		fmt.Fprintf(w, "\n## Bulk throughput\n\n")
		fmt.Fprintf(w, "One connection per transfer, dialing side → accepting side, in %s writes (framed: %s Data payloads); %d transfers of %s per path, the paths taking turns. GB/s is the median transfer's, with the middle half of the transfers beside it; × raw is the ratio of medians to raw TCP's, with a 90%% bootstrap interval. GB = 10⁹ bytes.\n\n",
			formatSize(int64(cfg.chunk)), formatSize(int64(cfg.framePay)), cfg.transfers, formatSize(cfg.transferSize()))
		fmt.Fprintln(w, "| path | GB/s | middle half | × raw | 90% interval |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: |")
		raw := summarizeThr(r.thr["raw"])
		for _, c := range r.thrCases {
			t := summarizeThr(r.thr[c.key])
			anyCapped = anyCapped || t.capped
			if c.key == "raw" {
				fmt.Fprintf(w, "| %s%s | %.2f | %.2f – %.2f | 1.00× | baseline |\n", c.label, cappedMark(t.capped), t.median, t.q1, t.q3)
				continue
			}
			lo, hi := bootstrapRatio(t.gbps, raw.gbps)
			fmt.Fprintf(w, "| %s%s | %.2f | %.2f – %.2f | %s | %.2f – %.2f |\n", c.label, cappedMark(t.capped), t.median, t.q1, t.q3,
				ratio(t.median, raw.median), lo, hi)
		}
		if raw.median > 0 {
			tcp := summarizeThr(r.thr["tcp"])
			rt := tcp.median / raw.median
			lo, hi := bootstrapRatio(tcp.gbps, raw.gbps)
			summary = append(summary, fmt.Sprintf("tcp bearer throughput %.2f× raw (90%% interval %.2f–%.2f; target ≥ %.2f×) %s",
				rt, lo, hi, targetThroughputRatio, verdict(rt >= targetThroughputRatio)))
			summary = append(summary, fmt.Sprintf("ssl via plugin %.2f× raw throughput (information)", summarizeThr(r.thr["ssl"]).median/raw.median))
		}
	}

	if cfg.sections["latency"] {
		raw, grpc := summarize(r.lat["raw"]), summarize(r.lat["grpc"])
		fmt.Fprintf(w, "\n## %d-byte round trip\n\n", cfg.size)
		fmt.Fprintf(w, "Dialing side writes %d bytes, accepting side echoes them; %d measured round trips per path over %d runs (a fresh connection per path and run, %d warm-up trips each), the paths taking turns in blocks of %d; the gRPC row is a unary call with a %d-byte payload on one client connection. Times in µs.\n\n",
			cfg.size, raw.n, cfg.runs, cfg.warmup, latencyBlock, cfg.size)
		fmt.Fprintln(w, "| path | p50 | p99 | mean | p50 − raw | × raw p50 | × gRPC p50 | × gRPC p99 |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, c := range r.latCases {
			s := summarize(r.lat[c.key])
			anyCapped = anyCapped || s.capped
			fmt.Fprintf(w, "| %s%s | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", c.label, cappedMark(s.capped),
				micros(s.p50), micros(s.p99), micros(s.mean), signedMicros(s.p50-raw.p50),
				ratio(float64(s.p50), float64(raw.p50)), ratio(float64(s.p50), float64(grpc.p50)), ratio(float64(s.p99), float64(grpc.p99)))
		}
		tcp, ssl := summarize(r.lat["tcp"]), summarize(r.lat["ssl"])
		if raw.n > 0 && tcp.n > 0 {
			added := tcp.p50 - raw.p50
			summary = append(summary, fmt.Sprintf("tcp bearer p50 %s µs vs raw (target ≤ +%.0f µs; DESIGN.md < +%.0f µs) %s",
				signedMicros(added), micros(targetP50Added), micros(designP50Added), verdict(added <= targetP50Added)))
			if grpc.n > 0 {
				ok := float64(tcp.p50) <= designGRPCRatio*float64(grpc.p50) && float64(tcp.p99) <= designGRPCRatio*float64(grpc.p99)
				summary = append(summary, fmt.Sprintf("tcp bearer vs gRPC unary p50 %s, p99 %s (target ≤ 1×) %s",
					ratio(float64(tcp.p50), float64(grpc.p50)), ratio(float64(tcp.p99), float64(grpc.p99)), verdict(ok)))
			}
		}
		if raw.n > 0 && ssl.n > 0 {
			summary = append(summary, fmt.Sprintf("ssl via plugin p50 %s µs vs raw (information)", signedMicros(ssl.p50-raw.p50)))
		}
	}

	if cfg.sections["setup"] {
		raw := summarize(r.setup["raw"])
		fmt.Fprintf(w, "\n## Connection setup\n\n")
		fmt.Fprintf(w, "From the start of Dial to the return of Accept on the listening side (for plugins: once the host holds the handed-over descriptor); %d connections per path over %d runs, one at a time, the paths taking turns in blocks of %d, after %d unmeasured ones per path and run. Times in µs.\n\n",
			raw.n, cfg.runs, setupBlock, setupWarmup)
		fmt.Fprintln(w, "| path | p50 | p99 | mean | p50 − raw | × raw p50 |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
		for _, c := range r.setupCases {
			s := summarize(r.setup[c.key])
			anyCapped = anyCapped || s.capped
			fmt.Fprintf(w, "| %s%s | %.1f | %.1f | %.1f | %s | %s |\n", c.label, cappedMark(s.capped),
				micros(s.p50), micros(s.p99), micros(s.mean), signedMicros(s.p50-raw.p50), ratio(float64(s.p50), float64(raw.p50)))
		}
		if tcp := summarize(r.setup["tcp"]); raw.n > 0 && tcp.n > 0 {
			summary = append(summary, fmt.Sprintf("plugin handoff adds %s µs per tcp connection at p50 (information)", signedMicros(tcp.p50-raw.p50)))
		}
	}

	if anyCapped {
		fmt.Fprintf(w, "\n† stopped by -time (%v) before its count; the figures cover what it did in that time.\n", cfg.limit)
	}
	if len(summary) > 0 {
		fmt.Fprintf(w, "\nSummary: %s.\n", strings.Join(summary, "; "))
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
