package histogram

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	// Bucket bounds are contiguous, and every value falls in the bucket
	// whose bounds hold it.
	for i := 1; i < NumBuckets; i++ {
		_, prevHi := Bounds(i - 1)
		lo, hi := Bounds(i)
		if lo != prevHi || hi <= lo {
			t.Fatalf("bucket %d is [%d, %d), bucket %d ends at %d", i, lo, hi, i-1, prevHi)
		}
		if b := bucketOf(lo); b != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", lo, b, i)
		}
		if b := bucketOf(hi - 1); b != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", hi-1, b, i)
		}
		if i >= subCount && float64(hi-lo)/float64(lo) > 0.125+1e-9 {
			t.Fatalf("bucket %d [%d, %d) is wider than 12.5%%", i, lo, hi)
		}
	}
	if b := bucketOf(1 << 62); b != NumBuckets-1 {
		t.Fatalf("huge value in bucket %d", b)
	}
	var h Histogram
	h.Record(-time.Second) // counts as 0
	var c Counts
	h.Snapshot(&c)
	if c.Buckets[0] != 1 || c.Sum != 0 {
		t.Fatalf("negative duration: %+v", c.Buckets[:2])
	}
}

func TestQuantilesWithinABucket(t *testing.T) {
	var h Histogram
	r := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 20000)
	for i := range vals {
		// log-uniform from 2 µs to 20 ms
		v := time.Duration(2000 * pow(10000, r.Float64()))
		vals[i] = v
		h.Record(v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	var c Counts
	h.Snapshot(&c)
	if c.Count() != uint64(len(vals)) {
		t.Fatalf("count %d", c.Count())
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := c.Quantile(q)
		if rel := float64(got-exact) / float64(exact); rel > 0.13 || rel < -0.13 {
			t.Errorf("q%.3f: got %v, exact %v (%.1f%%)", q, got, exact, rel*100)
		}
	}
	var sum time.Duration
	for _, v := range vals {
		sum += v
	}
	if c.Sum != sum || c.Mean() != sum/time.Duration(len(vals)) {
		t.Errorf("sum %v want %v", c.Sum, sum)
	}
}

func pow(b, e float64) float64 { return math.Pow(b, e) }

func TestSubAndEmpty(t *testing.T) {
	var h Histogram
	var empty Counts
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Fatal("empty counts have a quantile")
	}
	for range 100 {
		h.Record(time.Millisecond)
	}
	var a, b Counts
	h.Snapshot(&a)
	for range 10 {
		h.Record(time.Second)
	}
	h.Snapshot(&b)
	d := b.Sub(&a)
	if d.Count() != 10 || d.Sum != 10*time.Second {
		t.Fatalf("delta: %d values, sum %v", d.Count(), d.Sum)
	}
	if p := d.Quantile(0.5); p < 900*time.Millisecond || p > 1100*time.Millisecond {
		t.Fatalf("p50 of the delta %v", p)
	}
	// An earlier snapshot that is "later" (a reset) gives no negative counts.
	if z := a.Sub(&b); z.Count() != 0 || z.Sum != 0 {
		t.Fatalf("reverse delta: %+v", z.Count())
	}
	for _, q := range []float64{-1, 0, 2} {
		if v := b.Quantile(q); v <= 0 {
			t.Fatalf("Quantile(%v) = %v", q, v)
		}
	}
}

func TestConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Record(time.Duration(g*1000+i) * time.Microsecond)
			}
		}()
	}
	var c Counts
	for range 10 {
		h.Snapshot(&c) // concurrent reads are fine
	}
	wg.Wait()
	h.Snapshot(&c)
	if c.Count() != 8000 {
		t.Fatalf("count %d", c.Count())
	}
}

// BenchmarkRecord measures what a call pays for latency measurement.
func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := 37 * time.Microsecond
	for b.Loop() {
		h.Record(d)
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := 37 * time.Microsecond
		for pb.Next() {
			h.Record(d)
		}
	})
}

// BenchmarkRecordWithClock adds the two clock reads a measured call makes.
func BenchmarkRecordWithClock(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		h.Record(time.Since(start))
	}
}
