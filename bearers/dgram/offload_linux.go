//go:build linux

package dgram

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (Linux): a sender hands the kernel several
// datagrams of one size for one destination as one message with a
// UDP_SEGMENT control message, and the network stack carries them as one
// packet until the device (or, on loopback, the receiving socket) splits
// them. A receiver with UDP_GRO set gets such a train as one message with a
// UDP_GRO control message giving the segment size, and splits it itself. Both
// cut the kernel's per-datagram cost far more than recvmmsg/sendmmsg alone.

// maxGSOSegments is the most datagrams one message carries (the kernel's
// UDP_MAX_SEGMENTS is at least this).
const maxGSOSegments = 64

// maxGSOBytes bounds a message's total payload: it must fit one IP packet.
const maxGSOBytes = 65000

var (
	cmsgHdrLen     = unix.CmsgLen(0)
	segmentCmsgLen = unix.CmsgLen(2)
	// oobSend and oobRecv are the ancillary buffer sizes for one message.
	oobSend = unix.CmsgSpace(2)
	oobRecv = unix.CmsgSpace(4)
)

// setupOffload reports whether the kernel takes UDP_SEGMENT on this socket
// and turns UDP_GRO on, reporting whether that worked.
func setupOffload(pc *net.UDPConn) (gso, gro bool) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return false, false
	}
	_ = rc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			gso = true
		}
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1); err == nil {
			gro = true
		}
	})
	return gso, gro
}

func putCmsgLen(b []byte, l int) {
	if unix.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(b, uint64(l))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(l))
	}
}

func cmsgLenAt(b []byte) int {
	if unix.SizeofCmsghdr == 16 {
		v := binary.NativeEndian.Uint64(b)
		if v > uint64(len(b)) {
			return -1
		}
		return int(v)
	}
	return int(binary.NativeEndian.Uint32(b))
}

// putSegmentCmsg writes a UDP_SEGMENT control message for segments of seg
// bytes into b (at least oobSend bytes) and returns it.
func putSegmentCmsg(b []byte, seg int) []byte {
	b = b[:oobSend]
	clear(b)
	putCmsgLen(b, segmentCmsgLen)
	off := unix.SizeofCmsghdr - 8
	binary.NativeEndian.PutUint32(b[off:], uint32(unix.IPPROTO_UDP))
	binary.NativeEndian.PutUint32(b[off+4:], uint32(unix.UDP_SEGMENT))
	binary.NativeEndian.PutUint16(b[cmsgHdrLen:], uint16(seg))
	return b
}

// groSegment returns the segment size of a UDP_GRO control message in oob,
// or 0 if there is none.
func groSegment(oob []byte) int {
	off := unix.SizeofCmsghdr - 8
	for len(oob) >= unix.SizeofCmsghdr {
		l := cmsgLenAt(oob)
		if l < cmsgHdrLen || l > len(oob) {
			return 0
		}
		level := int32(binary.NativeEndian.Uint32(oob[off:]))
		typ := int32(binary.NativeEndian.Uint32(oob[off+4:]))
		data := oob[cmsgHdrLen:l]
		if level == unix.IPPROTO_UDP && typ == unix.UDP_GRO {
			var v uint32
			switch {
			case len(data) >= 4:
				v = binary.NativeEndian.Uint32(data)
			case len(data) >= 2:
				v = uint32(binary.NativeEndian.Uint16(data))
			}
			if v > 65535 { // no UDP segment is larger; ignore nonsense
				return 0
			}
			return int(v)
		}
		next := unix.CmsgSpace(l - cmsgHdrLen)
		if next > len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}
