//go:build !linux

package dgram

import "net"

// Segmentation offload is Linux only; elsewhere every message is one datagram.

const (
	maxGSOSegments = 1
	maxGSOBytes    = 0
	oobSend        = 0
	oobRecv        = 0
)

func setupOffload(*net.UDPConn) (gso, gro bool) { return false, false }

func putSegmentCmsg(b []byte, seg int) []byte { return nil }

func groSegment([]byte) int { return 0 }
