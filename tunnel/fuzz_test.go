package tunnel

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzDecodeOpen: any bytes decode to an Open that encodes back to the
// same bytes, or to an error; never a panic.
func FuzzDecodeOpen(f *testing.F) {
	for _, o := range []Open{{Service: "redis", Origin: "127.0.0.1:5000"}, {Service: "s"}} {
		b, _ := AppendOpen(nil, o)
		f.Add(b)
	}
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeOpen(b)
		if err != nil {
			return
		}
		again, err := AppendOpen(nil, o)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v from % x, encodes to % x (%v)", o, b, again, err)
		}
		_ = DecodeOpened(b) // must not panic either
	})
}

// FuzzParseProxyV2: any bytes parse to a header or an error, never a panic;
// a PROXY header parses back to what it was written from.
func FuzzParseProxyV2(f *testing.F) {
	b4, _ := AppendProxyV2(nil, netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	b6, _ := AppendProxyV2(nil, netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[::1]:2"))
	f.Add(b4)
	f.Add(b6)
	f.Add(append(append([]byte{}, proxySig[:]...), 0x20, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseProxyV2(bytes.NewReader(b))
		if err != nil || h.Local {
			return
		}
		again, err := AppendProxyV2(nil, h.Source, h.Destination)
		if err != nil {
			t.Fatalf("parsed %+v from % x, which does not encode: %v", h, b, err)
		}
		h2, err := ParseProxyV2(bytes.NewReader(again))
		unmap := func(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
		if err != nil || unmap(h2.Source) != unmap(h.Source) || unmap(h2.Destination) != unmap(h.Destination) {
			t.Fatalf("round trip: %+v -> %+v (%v)", h, h2, err)
		}
	})
}
