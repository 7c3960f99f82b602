// Package histogram is a fixed-size latency histogram that many goroutines
// record into without locks: one atomic add on a bucket and one on the sum
// per value. Buckets are log-linear: eight per power of two from 1 µs to
// about 275 s (each bucket spans at most 12.5% of its lower bound), with
// eight linear buckets of 128 ns below 1 µs and the last bucket holding
// everything longer. A quantile read from it is within one bucket of the
// exact one.
//
// The server keeps one per service for call latency; Snapshot copies the
// cumulative counts, and the difference of two snapshots (Counts.Sub) gives
// the latency of the calls made between them.
package histogram

import (
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	subBits  = 3
	subCount = 1 << subBits
	minExp   = 10 // 2^10 ns: the first log bucket starts at 1024 ns
	maxExp   = 38 // 2^38 ns ≈ 275 s: the last octave
	// NumBuckets is the number of buckets of a Histogram.
	NumBuckets = subCount * (maxExp - minExp + 2)
)

// Histogram counts durations. The zero value is ready; its methods are safe
// for concurrent use. Do not copy it once in use.
type Histogram struct {
	buckets [NumBuckets]atomic.Uint64
	sum     atomic.Int64 // nanoseconds
}

// Record counts one duration; a negative one counts as 0.
func (h *Histogram) Record(d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	h.buckets[bucketOf(ns)].Add(1)
	h.sum.Add(ns)
}

// Snapshot copies the counts into c. Values recorded while it runs may be
// counted in c's buckets but not yet in its sum, or the other way round.
func (h *Histogram) Snapshot(c *Counts) {
	for i := range h.buckets {
		c.Buckets[i] = h.buckets[i].Load()
	}
	c.Sum = time.Duration(h.sum.Load())
}

// Counts is a copy of a histogram's counts.
type Counts struct {
	Buckets [NumBuckets]uint64
	Sum     time.Duration // of every value counted
}

// Count is the number of values counted.
func (c *Counts) Count() uint64 {
	var n uint64
	for _, b := range c.Buckets {
		n += b
	}
	return n
}

// Sub returns c minus an earlier snapshot of the same histogram: the
// values counted between the two.
func (c *Counts) Sub(earlier *Counts) Counts {
	var d Counts
	for i := range c.Buckets {
		if c.Buckets[i] > earlier.Buckets[i] {
			d.Buckets[i] = c.Buckets[i] - earlier.Buckets[i]
		}
	}
	if c.Sum > earlier.Sum {
		d.Sum = c.Sum - earlier.Sum
	}
	return d
}

// Quantile returns the q-quantile (0 < q <= 1) of the counted values,
// interpolated linearly inside its bucket; 0 when nothing was counted.
func (c *Counts) Quantile(q float64) time.Duration {
	n := c.Count()
	if n == 0 {
		return 0
	}
	switch {
	case q <= 0 || q != q: // NaN too
		q = 0
	case q > 1:
		q = 1
	}
	rank := q * float64(n)
	if rank < 1 {
		rank = 1
	}
	var seen float64
	for i, b := range c.Buckets {
		if b == 0 {
			continue
		}
		if seen+float64(b) >= rank {
			lo, hi := Bounds(i)
			pos := (rank - seen) / float64(b)
			return time.Duration(float64(lo) + pos*float64(hi-lo))
		}
		seen += float64(b)
	}
	_, hi := Bounds(NumBuckets - 1)
	return time.Duration(hi)
}

// Mean is the mean of the counted values; 0 when nothing was counted.
func (c *Counts) Mean() time.Duration {
	n := c.Count()
	if n == 0 {
		return 0
	}
	return c.Sum / time.Duration(n)
}

// bucketOf returns the bucket of a duration of ns >= 0 nanoseconds.
func bucketOf(ns int64) int {
	if ns < 1<<minExp {
		return int(ns >> (minExp - subBits))
	}
	e := bits.Len64(uint64(ns)) - 1 // >= minExp
	if e > maxExp {
		return NumBuckets - 1
	}
	mant := int(ns>>(e-subBits)) & (subCount - 1)
	return (e-minExp+1)<<subBits + mant
}

// Bounds returns the range [lo, hi) of bucket i, in nanoseconds. The last
// bucket also holds everything above hi.
func Bounds(i int) (lo, hi int64) {
	if i < subCount {
		w := int64(1) << (minExp - subBits)
		return int64(i) * w, int64(i+1) * w
	}
	e := i>>subBits - 1 + minExp
	mant := int64(i & (subCount - 1))
	shift := e - subBits
	return (subCount + mant) << shift, (subCount + mant + 1) << shift
}
