package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// PROXY protocol version 2 (the HAProxy specification, "2.2. Binary header
// format (version 2)"): a header the tunnel writes first on its backend
// connection so that a backend that understands it sees the tunnel client's
// address instead of the server's. Only the PROXY command with TCP over IPv4
// or IPv6 is written; the parser also accepts LOCAL and skips TLVs.

// proxySig is the 12-byte signature every version 2 header starts with.
var proxySig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

const (
	proxyV2Local = 0x20 // version 2, command LOCAL
	proxyV2Proxy = 0x21 // version 2, command PROXY
	proxyTCP4    = 0x11 // AF_INET, STREAM
	proxyTCP6    = 0x21 // AF_INET6, STREAM
	// maxProxyBody bounds the part after the fixed 16 bytes that ParseProxyV2
	// reads (the length field allows 65535; addresses and a few TLVs take
	// far less).
	maxProxyBody = 4096
)

// AppendProxyV2 appends a PROXY protocol v2 header for a TCP connection from
// src to dst, both valid. Two IPv4 addresses (or IPv4-mapped IPv6 ones) are
// written as TCP over IPv4; otherwise both are written as IPv6, an IPv4
// address as IPv4-mapped.
func AppendProxyV2(b []byte, src, dst netip.AddrPort) ([]byte, error) {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if !sa.IsValid() || !da.IsValid() {
		return b, errors.New("tunnel: PROXY header: invalid address")
	}
	b = append(b, proxySig[:]...)
	b = append(b, proxyV2Proxy)
	switch {
	case sa.Is4() && da.Is4():
		b = append(b, proxyTCP4)
		b = binary.BigEndian.AppendUint16(b, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	default:
		b = append(b, proxyTCP6)
		b = binary.BigEndian.AppendUint16(b, 36)
		s16, d16 := sa.As16(), da.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return b, nil
}

// ProxyHeader is a parsed PROXY protocol v2 header.
type ProxyHeader struct {
	// Local is true for the LOCAL command (a health check by the proxy
	// itself): Source and Destination are then zero.
	Local               bool
	Source, Destination netip.AddrPort
}

// ParseProxyV2 reads one PROXY protocol v2 header from r, for backends and
// tests. It reads exactly the header's bytes. Errors say what is wrong;
// it never reads more than 16 + 4096 bytes.
func ParseProxyV2(r io.Reader) (ProxyHeader, error) {
	var h ProxyHeader
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return h, fmt.Errorf("tunnel: PROXY header: %w", err)
	}
	if [12]byte(fixed[:12]) != proxySig {
		return h, errors.New("tunnel: PROXY header: no version 2 signature")
	}
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > maxProxyBody {
		return h, fmt.Errorf("tunnel: PROXY header: %d bytes of addresses, more than %d", n, maxProxyBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return h, fmt.Errorf("tunnel: PROXY header: %w", err)
	}
	switch fixed[12] {
	case proxyV2Local:
		h.Local = true
		return h, nil
	case proxyV2Proxy:
	default:
		return h, fmt.Errorf("tunnel: PROXY header: version/command byte %#02x, want 0x20 or 0x21", fixed[12])
	}
	var alen int
	switch fixed[13] {
	case proxyTCP4:
		alen = 4
	case proxyTCP6:
		alen = 16
	default:
		return h, fmt.Errorf("tunnel: PROXY header: family/protocol byte %#02x, only TCP over IPv4 (0x11) or IPv6 (0x21) is supported", fixed[13])
	}
	if n < 2*alen+4 {
		return h, fmt.Errorf("tunnel: PROXY header: %d bytes of addresses, too few for the family", n)
	}
	sa, _ := netip.AddrFromSlice(body[:alen])
	da, _ := netip.AddrFromSlice(body[alen : 2*alen])
	h.Source = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[2*alen:]))
	h.Destination = netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[2*alen+2:]))
	return h, nil
}

// AppendProxyV2Local appends a PROXY protocol v2 header with the LOCAL
// command and no addresses: the connection is the proxy's own (the tunnel
// writes it when the client's address is not an IP address and port).
func AppendProxyV2Local(b []byte) []byte {
	b = append(b, proxySig[:]...)
	return append(b, proxyV2Local, 0, 0, 0)
}
