//go:build linux

package dgram

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSegmentCmsgRoundTrip(t *testing.T) {
	for _, seg := range []int{1, 64, 1200, 65000} {
		b := putSegmentCmsg(make([]byte, oobSend), seg)
		// A UDP_SEGMENT message has the layout of a UDP_GRO one but another
		// type; rewrite the type to read it back.
		binary.NativeEndian.PutUint32(b[unix.SizeofCmsghdr-4:], uint32(unix.UDP_GRO))
		if got := groSegment(b); got != seg {
			t.Errorf("segment %d read back as %d", seg, got)
		}
	}
	if got := groSegment(nil); got != 0 {
		t.Errorf("groSegment(nil) = %d", got)
	}
}

// FuzzGROSegment feeds arbitrary control data to the parser: it must not
// panic and must return a non-negative size.
func FuzzGROSegment(f *testing.F) {
	f.Add(putSegmentCmsg(make([]byte, oobSend), 1200))
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n := groSegment(b); n < 0 || n > 65535 {
			t.Fatalf("groSegment = %d", n)
		}
	})
}
