package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/bearerkit/connect/bench/internal/measure"
)

// summary collects the goal verdicts for the closing lines.
type summary struct{ lines []string }

func (s *summary) add(format string, args ...any) {
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

func (s *summary) print(w io.Writer) {
	if len(s.lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Goals\n\n")
	for _, l := range s.lines {
		fmt.Fprintf(w, "- %s\n", l)
	}
}

func verdict(ok bool) string {
	if ok {
		return "**MET**"
	}
	return "**NOT met**"
}

// spread is the median and the quartiles of a set of values.
type spread struct{ median, q1, q3 float64 }

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 {
		// Linear interpolation between the closest ranks.
		x := q * float64(len(s)-1)
		i := int(x)
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (x-float64(i))*(s[i+1]-s[i])
	}
	return spread{median: at(0.5), q1: at(0.25), q3: at(0.75)}
}

func medianGBps(xs []xfer) float64 { return spreadOf(gbpsOf(xs)).median }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func reportBulk(w io.Writer, cfg config, r *bulkResult, sum *summary) {
	per := cfg.bulkTransfer()
	fmt.Fprintf(w, "\n## 1. Bulk throughput of one tunnelled TCP connection\n\n")
	fmt.Fprintf(w, "%d transfers of %d MiB per path and direction, after one unmeasured; %d KiB writes and reads at the generator and the sink; "+
		"each transfer on a fresh connection (for the tunnel a fresh resume session). GB = 10⁹ bytes. "+
		"CPU: user + system time during the transfers per GiB moved, of the path's relay processes (10 ms ticks) and of all processes "+
		"(the relays and this one, which writes and reads).\n\n",
		cfg.bulkTransfers, per>>20, cfg.chunkKiB)
	fmt.Fprintf(w, "| path | direction | GB/s (median) | middle half | × two socat | × one socat | relay CPU s/GiB | all CPU s/GiB |\n")
	fmt.Fprintf(w, "|---|---|---:|---:|---:|---:|---:|---:|\n")
	med := map[string]float64{}
	for _, c := range r.cases {
		med[c.key()] = medianGBps(r.xfers[c.key()])
	}
	for _, c := range r.cases {
		xs := r.xfers[c.key()]
		var bytes, ticks int64
		var gen time.Duration
		capped := ""
		for _, x := range xs {
			bytes += x.bytes
			ticks += x.relayCPU
			gen += x.genCPU
			if x.capped {
				capped = " †"
			}
		}
		sp := spreadOf(gbpsOf(xs))
		dir := "up"
		if c.down {
			dir = "down"
		}
		gib := float64(bytes) / (1 << 30)
		relayCPU := float64(ticks) / 100 / gib
		cpu := "–"
		if c.path.relays > 0 {
			cpu = fmt.Sprintf("%.2f", relayCPU)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f%s | %.2f – %.2f | %s | %s | %s | %.2f |\n", c.path.label, dir, sp.median, capped, sp.q1, sp.q3,
			ratio(sp.median, med["socat2/"+dir]), ratio(sp.median, med["socat1/"+dir]), cpu, relayCPU+gen.Seconds()/gib)
	}
	for _, dir := range []string{"up", "down"} {
		t, s2, s1 := med["tunnel/"+dir], med["socat2/"+dir], med["socat1/"+dir]
		if t == 0 || s2 == 0 {
			continue
		}
		sum.add("tunnel bulk throughput, %s: %.2f× two chained socat relays (goal ≥ %.1f×: %s; %.2f GB/s against %.2f); "+
			"%.2f× one socat relay (DESIGN.md ≥ %.1f×: %s)",
			dir, t/s2, goalTunnelVsSocat2, verdict(t/s2 >= goalTunnelVsSocat2), t, s2, t/s1, goalDesignVsSocat1, verdict(t/s1 >= goalDesignVsSocat1))
	}
}

func gbpsOf(xs []xfer) []float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = x.gbps()
	}
	return v
}

func reportSession(w io.Writer, cfg config, r *sessResult, sum *summary) {
	fmt.Fprintf(w, "\n## 2. One resume session vs raw loopback TCP\n\n")
	fmt.Fprintf(w, "One long-lived connection per path from this process to the receiver process (resume: one session, "+
		"resume.Open over loopback TCP to a resume.Table there, default configuration); %d transfers of %d MiB per path after one unmeasured, "+
		"in random order per turn; %d KiB writes (raw) or messages (resume), the receiver reading %d KiB at a time (raw), a message at a time (Recv), "+
		"or with Stream.CopyTo into a counting io.Writer (a second session; the reading goroutine writes each message, no receive-queue copy). "+
		"CPU: user + system time of each process during the transfers, per MiB moved.\n\n",
		cfg.sessTransfers, r.transfer>>20, cfg.msgKiB, cfg.msgKiB)
	fmt.Fprintf(w, "| path | GB/s (median) | middle half | × raw | sender CPU µs/MiB | receiver CPU µs/MiB | both |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|\n")
	med := map[string]float64{}
	cpu := map[string]float64{}
	for _, key := range []string{"raw", "resume", "resume-copyto"} {
		xs := r.xfers[key]
		v := make([]float64, len(xs))
		var bytes int64
		var scpu, rcpu time.Duration
		for i, x := range xs {
			v[i] = x.gbps()
			bytes += x.bytes
			scpu += x.sendCPU
			rcpu += x.recvCPU
		}
		sp := spreadOf(v)
		med[key] = sp.median
		mib := float64(bytes) / (1 << 20)
		cpu[key] = float64(scpu+rcpu) / 1e3 / mib
		label := map[string]string{
			"raw":           "raw loopback TCP (**baseline**)",
			"resume":        "one resume session, Recv",
			"resume-copyto": "one resume session, CopyTo",
		}[key]
		fmt.Fprintf(w, "| %s | %.2f | %.2f – %.2f | %s | %.0f | %.0f | %.0f |\n", label, sp.median, sp.q1, sp.q3,
			ratio(sp.median, med["raw"]), float64(scpu)/1e3/mib, float64(rcpu)/1e3/mib, cpu[key])
	}
	for _, p := range []struct{ key, api string }{{"resume", "Recv"}, {"resume-copyto", "CopyTo"}} {
		q := med[p.key] / med["raw"]
		sum.add("one resume session, %s: %.2f× raw loopback TCP (goal ≥ %.1f×: %s); CPU per byte %.2f× raw's",
			p.api, q, goalSessionVsRaw, verdict(q >= goalSessionVsRaw), cpu[p.key]/cpu["raw"])
	}
}

func reportReconnect(w io.Writer, cfg config, r *reconnResult, sum *summary) {
	n := len(r.samples)
	fmt.Fprintf(w, "\n## 3. Link restored → first new application message\n\n")
	fmt.Fprintf(w, "%d breaks after %d unmeasured, each on a fresh session (resume.DefaultConfig(): RetryFast 3, RetryMin 100 ms), "+
		"client, relay and server in this process; one %d-byte numbered message each way every %s, %s of it before each cut; "+
		"the relay resets both sides of the connection and refuses new ones for %s. "+
		"cut: both sides reset; restored: the relay accepted the client's new connection; "+
		"first new: the receiver got the first message sent at or after the cut.\n\n",
		n, cfg.warmBreaks, trickleSize, cfg.period, cfg.steady, cfg.outage)
	fmt.Fprintf(w, "| interval | p50 | p99 | max |\n|---|---:|---:|---:|\n")
	col := func(f func(breakSample) time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i, b := range r.samples {
			s[i] = f(b)
		}
		slices.Sort(s)
		return s
	}
	upNew := col(func(b breakSample) time.Duration { return b.upNew })
	downNew := col(func(b breakSample) time.Duration { return b.downNew })
	rows := []struct {
		label string
		s     []time.Duration
	}{
		{"**restored → first new message, up** (client → server)", upNew},
		{"**restored → first new message, down** (server → client)", downNew},
		{"cut → restored (the client sees the reset and redials)", col(func(b breakSample) time.Duration { return b.redial })},
		{"cut → first new message, up", col(func(b breakSample) time.Duration { return b.upSince })},
		{"cut → first new message, down", col(func(b breakSample) time.Duration { return b.downSince })},
	}
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", row.label, ms(measure.Pct(row.s, 50)), ms(measure.Pct(row.s, 99)), ms(row.s[len(row.s)-1]))
	}
	fmt.Fprintf(w, "\n%d messages checked (every one once and in order), %d client connections attached (%.2f per break",
		r.messages, r.attaches, float64(r.attaches)/float64(n))
	if r.refused > 0 {
		fmt.Fprintf(w, "; %d reconnection attempts refused during the outages", r.refused)
	}
	fmt.Fprintf(w, ").\n")
	var upQ, downQ int
	for _, b := range r.samples {
		if b.upQueued {
			upQ++
		}
		if b.downQueued {
			downQ++
		}
	}
	fmt.Fprintf(w, "The first new message had been sent before the link was back (it waited in the replay buffer) in %d%% of the breaks up, %d%% down; "+
		"otherwise the figure includes the wait for its turn in the trickle (up to %s).\n", 100*upQ/n, 100*downQ/n, cfg.period)
	p50 := max(measure.Pct(upNew, 50), measure.Pct(downNew, 50))
	p99 := max(measure.Pct(upNew, 99), measure.Pct(downNew, 99))
	sum.add("link restored → first new message (worse direction): p50 %s (goal ≤ %s: %s), p99 %s (goal ≤ %s: %s), %d breaks, no loss or duplication",
		ms(p50), ms(goalRestoreP50), verdict(p50 <= goalRestoreP50), ms(p99), ms(goalRestoreP99), verdict(p99 <= goalRestoreP99), n)
}
