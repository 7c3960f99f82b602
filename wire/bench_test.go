package wire

import (
	"io"
	"testing"
)

func benchEncode(b *testing.B, m Message) {
	buf := AppendMessage(nil, m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], m)
	}
}

func benchDecode(b *testing.B, m Message, message bool) {
	buf := AppendMessage(nil, m)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		f, _, err := DecodeFrame(buf, 0)
		if err != nil {
			b.Fatal(err)
		}
		if message {
			if _, err := DecodeMessage(f); err != nil {
				b.Fatal(err)
			}
		}
	}
}

var (
	benchPing    = &Ping{ID: 1234567, SentUnixNano: 1_750_000_000_123_456_789}
	benchHello   = &Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID, Token: "0123456789abcdef0123456789abcdef", ClientName: "bench-client", Features: 3}
	benchData64  = &Data{Channel: 1, Payload: make([]byte, 64)}
	benchData64K = &Data{Channel: 1, Payload: make([]byte, 64<<10)}
)

func BenchmarkEncodePing(b *testing.B)    { benchEncode(b, benchPing) }
func BenchmarkEncodeHello(b *testing.B)   { benchEncode(b, benchHello) }
func BenchmarkEncodeData64(b *testing.B)  { benchEncode(b, benchData64) }
func BenchmarkEncodeData64K(b *testing.B) { benchEncode(b, benchData64K) }
func BenchmarkDecodePing(b *testing.B)    { benchDecode(b, benchPing, true) }
func BenchmarkDecodeHello(b *testing.B)   { benchDecode(b, benchHello, true) }
func BenchmarkDecodeData64(b *testing.B)  { benchDecode(b, benchData64, false) }
func BenchmarkDecodeData64K(b *testing.B) { benchDecode(b, benchData64K, false) }

// BenchmarkDecodeMessageData64 includes DecodeMessage, which allocates the
// *Data.
func BenchmarkDecodeMessageData64(b *testing.B) { benchDecode(b, benchData64, true) }

// loopReader replays buf forever.
type loopReader struct {
	buf []byte
	off int
}

func (r *loopReader) Read(p []byte) (int, error) {
	n := copy(p, r.buf[r.off:])
	r.off = (r.off + n) % len(r.buf)
	return n, nil
}

func benchStreamRead(b *testing.B, m Message) {
	var buf []byte
	for range 64 {
		buf = AppendMessage(buf, m)
	}
	conn := NewStreamConn(&memConn{r: &loopReader{buf: buf}}, 0)
	b.SetBytes(int64(len(buf) / 64))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := conn.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStreamConnReadData64(b *testing.B)  { benchStreamRead(b, benchData64) }
func BenchmarkStreamConnReadData64K(b *testing.B) { benchStreamRead(b, benchData64K) }

// discardConn is a net.Conn whose writes vanish.
type discardConn struct{ memConn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

func benchStreamWrite(b *testing.B, m Message) {
	conn := NewStreamConn(&discardConn{memConn{r: io.MultiReader()}}, 0)
	b.SetBytes(int64(len(AppendMessage(nil, m))))
	b.ReportAllocs()
	for b.Loop() {
		if err := conn.WriteMessage(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStreamConnWritePing(b *testing.B)    { benchStreamWrite(b, benchPing) }
func BenchmarkStreamConnWriteData64(b *testing.B)  { benchStreamWrite(b, benchData64) }
func BenchmarkStreamConnWriteData64K(b *testing.B) { benchStreamWrite(b, benchData64K) }
