package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// copyMessage detaches a *Data from the connection's buffer.
func copyMessage(m Message) Message {
	if d, ok := m.(*Data); ok {
		return &Data{Channel: d.Channel, Flags: d.Flags, Payload: append([]byte{}, d.Payload...)}
	}
	return m
}

func normalize(m Message) Message {
	if d, ok := m.(*Data); ok && d.Payload == nil {
		return &Data{Channel: d.Channel, Flags: d.Flags, Payload: []byte{}}
	}
	return m
}

// exchange sends every message from a to b and checks that b reads them
// back intact, in order.
func exchange(t *testing.T, a, b Conn, msgs []Message) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := a.WriteMessage(m); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, want := range msgs {
		got, err := b.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !reflect.DeepEqual(copyMessage(got), normalize(want)) {
			t.Fatalf("message %d:\n got %v\nwant %v", i, got, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func streamTestMessages() []Message {
	var msgs []Message
	for _, s := range sampleMessages() {
		msgs = append(msgs, s.m)
	}
	// Sizes around the read buffer and the writev threshold, and large
	// payloads that take the separate read path.
	for i, n := range []int{copyWriteMax, copyWriteMax + 1, streamReadBuffer - HeaderSize, streamReadBuffer - HeaderSize + 1, 200 << 10, 64, DefaultMaxPayload, 3} {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(j*7 + i)
		}
		msgs = append(msgs, &Data{Channel: uint32(i), Payload: p})
	}
	return msgs
}

func TestStreamConnTCP(t *testing.T) {
	c, s := tcpPair(t)
	client, server := NewStreamConn(c, 0), NewStreamConn(s, 0)
	msgs := streamTestMessages()
	exchange(t, client, server, msgs)
	exchange(t, server, client, msgs)
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ReadFrame(); err != io.EOF {
		t.Fatalf("ReadFrame after the peer closed = %v, want io.EOF", err)
	}
}

// TestStreamConnConcurrentWriters has several goroutines write frames of
// varied sizes at once and checks that every frame arrives whole and that
// each writer's frames arrive in order.
func TestStreamConnConcurrentWriters(t *testing.T) {
	const writers, perWriter = 8, 150
	c, s := tcpPair(t)
	client, server := NewStreamConn(c, 0), NewStreamConn(s, 0)

	payload := func(w, seq int) []byte {
		n := 8 + (seq*997+w*131)%(3*copyWriteMax) // 8 B to 48 KiB: both write paths
		p := make([]byte, n)
		binary.BigEndian.PutUint32(p, uint32(seq))
		for i := 4; i < n; i++ {
			p[i] = byte(w ^ seq ^ i)
		}
		return p
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for seq := range perWriter {
				var err error
				if seq%10 == 0 {
					err = client.WriteMessage(&Ping{ID: uint64(w)<<32 | uint64(seq)})
				} else {
					err = client.WriteFrame(Frame{Type: TypeData, Channel: uint32(w), Flags: uint16(seq), Payload: payload(w, seq)})
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	next := make([]int, writers)
	for range writers * perWriter {
		m, err := server.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var w, seq int
		switch m := m.(type) {
		case *Ping:
			w, seq = int(m.ID>>32), int(uint32(m.ID))
		case *Data:
			w, seq = int(m.Channel), int(m.Flags)
			if w >= writers || !bytes.Equal(m.Payload, payload(w, seq)) {
				t.Fatalf("writer %d frame %d: payload of %d bytes corrupted", w, seq, len(m.Payload))
			}
		default:
			t.Fatalf("unexpected %T", m)
		}
		if seq != next[w] {
			t.Fatalf("writer %d: got frame %d, want %d", w, seq, next[w])
		}
		next[w]++
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

func TestStreamConnGarbage(t *testing.T) {
	c, s := tcpPair(t)
	server := NewStreamConn(s, 0)
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_, err := server.ReadFrame()
	mustDecodeError(t, err, ErrVersion)
	if !strings.Contains(err.Error(), "does not speak Connect protocol v1") || !strings.Contains(err.Error(), "HTTP") {
		t.Fatalf("error %q does not say the peer speaks HTTP, not Connect", err)
	}
	if _, err2 := server.ReadMessage(); err2 != err {
		t.Fatalf("second read = %v, want the same error", err2)
	}
}

// TestStreamConnGarbageFirstByte checks that a foreign protocol is reported
// as soon as its first byte arrives, without waiting for a whole header.
func TestStreamConnGarbageFirstByte(t *testing.T) {
	c, s := tcpPair(t)
	server := NewStreamConn(s, 0)
	if _, err := c.Write([]byte("hi")); err != nil { // fewer than HeaderSize bytes, and the peer waits
		t.Fatal(err)
	}
	_, err := server.ReadFrame()
	mustDecodeError(t, err, ErrVersion)
}

func TestStreamConnTruncated(t *testing.T) {
	ping := AppendMessage(nil, &Ping{ID: 1})
	big := AppendFrame(nil, Frame{Type: TypeData, Payload: make([]byte, 100<<10)})
	small := AppendFrame(nil, Frame{Type: TypeData, Payload: make([]byte, 100)})
	tests := []struct {
		name  string
		in    []byte
		field string
	}{
		{"in header", append(ping, ping[:5]...), "header"},
		{"in small payload", append(ping, small[:50]...), "payload"},
		{"in large payload", append(ping, big[:70<<10]...), "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s := tcpPair(t)
			server := NewStreamConn(s, 0)
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if m, err := server.ReadMessage(); err != nil || m.(*Ping).ID != 1 {
				t.Fatalf("first frame: %v, %v", m, err)
			}
			_, err := server.ReadFrame()
			de := mustDecodeError(t, err, ErrTruncated)
			if !errors.Is(err, io.ErrUnexpectedEOF) || de.Field != tt.field {
				t.Fatalf("error %q: want field %q and io.ErrUnexpectedEOF", err, tt.field)
			}
		})
	}
}

// allocatedBytes returns how many bytes f allocated on the heap.
func allocatedBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestStreamConnOversizeDoesNotAllocate(t *testing.T) {
	for _, length := range []uint32{DefaultMaxPayload + 1, MaxFrameHardLimit + 1, 1<<32 - 1} {
		conn := NewStreamConn(&memConn{r: bytes.NewReader(header(1, TypeData, 0, 1, length))}, 0)
		var err error
		if n := allocatedBytes(func() { _, err = conn.ReadFrame() }); n > 64<<10 {
			t.Errorf("length %d: allocated %d bytes before rejecting", length, n)
		}
		mustDecodeError(t, err, ErrFrameTooLarge)
	}
}

// TestStreamConnAllocatesAsBytesArrive: a header that claims the maximum
// payload but delivers a few bytes must not make the reader allocate the
// claimed size.
func TestStreamConnAllocatesAsBytesArrive(t *testing.T) {
	in := append(header(1, TypeData, 0, 1, MaxFrameHardLimit), make([]byte, 100)...)
	conn := NewStreamConn(&memConn{r: bytes.NewReader(in)}, MaxFrameHardLimit)
	var err error
	if n := allocatedBytes(func() { _, err = conn.ReadFrame() }); n > 1<<20 {
		t.Errorf("allocated %d bytes for 100 received of a claimed 16 MiB", n)
	}
	mustDecodeError(t, err, ErrTruncated)
}

// TestStreamConnChunked feeds frames one byte at a time.
func TestStreamConnChunked(t *testing.T) {
	var in []byte
	msgs := streamTestMessages()
	for _, m := range msgs {
		in = AppendMessage(in, m)
	}
	for _, chunk := range []int{1, 7, 4096} {
		conn := NewStreamConn(&memConn{r: bytes.NewReader(in), chunk: chunk}, 0)
		for i, want := range msgs {
			got, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("chunk %d message %d: %v", chunk, i, err)
			}
			if !reflect.DeepEqual(copyMessage(got), normalize(want)) {
				t.Fatalf("chunk %d message %d differs", chunk, i)
			}
		}
		if _, err := conn.ReadFrame(); err != io.EOF {
			t.Fatalf("chunk %d: end = %v, want io.EOF", chunk, err)
		}
	}
}

func TestStreamConnReadTimeoutIsRetryable(t *testing.T) {
	c, s := tcpPair(t)
	server := NewStreamConn(s, 0)
	if err := s.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err := server.ReadFrame()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrame with an expired deadline = %v", err)
	}
	if err := s.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	client := NewStreamConn(c, 0)
	if err := client.WriteMessage(&Ping{ID: 9}); err != nil {
		t.Fatal(err)
	}
	m, err := server.ReadMessage()
	if err != nil || m.(*Ping).ID != 9 {
		t.Fatalf("read after the timeout: %v, %v", m, err)
	}
}

func TestConnWriteRefusals(t *testing.T) {
	for _, kind := range []string{"stream", "datagram"} {
		t.Run(kind, func(t *testing.T) {
			mc := &memConn{r: bytes.NewReader(nil)}
			var conn Conn
			if kind == "stream" {
				conn = NewStreamConn(mc, 1000)
			} else {
				conn = NewDatagramConn(mc, 1000)
			}
			refusals := []struct {
				name string
				err  error
				want error
			}{
				{"too large", conn.WriteFrame(Frame{Type: TypeData, Payload: make([]byte, 1001)}), ErrFrameTooLarge},
				{"unknown type", conn.WriteFrame(Frame{Type: 0x33}), ErrUnknownType},
				{"zero type", conn.WriteFrame(Frame{}), ErrUnknownType},
				{"control on channel", conn.WriteFrame(Frame{Type: TypePing, Channel: 1}), ErrMalformed},
				{"control with flags", conn.WriteFrame(Frame{Type: TypePong, Flags: 1}), ErrMalformed},
				{"invalid hello", conn.WriteMessage(&Hello{MinVersion: 1, MaxVersion: 1}), ErrMissingField},
				{"hello too large", conn.WriteMessage(&Hello{MinVersion: 1, MaxVersion: 1, ClientID: testClientID, Token: strings.Repeat("t", MaxTokenLen)}), ErrFrameTooLarge},
				{"data too large", conn.WriteMessage(&Data{Payload: make([]byte, 1001)}), ErrFrameTooLarge},
			}
			for _, r := range refusals {
				if !errors.Is(r.err, r.want) {
					t.Errorf("%s: %v, want %v", r.name, r.err, r.want)
				}
			}
			if conn.WriteMessage(nil) == nil {
				t.Error("WriteMessage(nil) succeeded")
			}
			if mc.w.Len() != 0 {
				t.Fatalf("refused writes wrote % x", mc.w.Bytes())
			}
			if err := conn.WriteFrame(Frame{Type: TypeData, Payload: make([]byte, 1000)}); err != nil {
				t.Fatalf("a frame at the limit: %v", err)
			}
		})
	}
}

func TestConnClose(t *testing.T) {
	c, _ := tcpPair(t)
	uc, _ := udpPair(t)
	conns := []Conn{NewStreamConn(c, 0), NewDatagramConn(uc, 0)}
	for _, conn := range conns {
		if err := conn.Close(); err != nil {
			t.Fatal(err)
		}
		if err := conn.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := conn.ReadFrame(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrame after Close = %v, want net.ErrClosed", err)
		}
		if err := conn.WriteMessage(&Ping{}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteMessage after Close = %v, want net.ErrClosed", err)
		}
	}
}

// TestCloseUnblocksRead: Close from another goroutine ends a blocked read.
func TestCloseUnblocksRead(t *testing.T) {
	_, s := tcpPair(t)
	server := NewStreamConn(s, 0)
	errc := make(chan error, 1)
	go func() {
		_, err := server.ReadFrame()
		errc <- err
	}()
	server.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked ReadFrame after Close = %v", err)
	}
}

func datagramTestMessages() []Message {
	msgs := streamTestMessages()[:len(sampleMessages())]
	return append(msgs, &Data{Channel: 5, Payload: bytes.Repeat([]byte{7}, MaxDatagramPayload)})
}

func TestDatagramConnUDP(t *testing.T) {
	uc, us := udpPair(t)
	client, server := NewDatagramConn(uc, 0), NewDatagramConn(us, 0)
	msgs := datagramTestMessages()
	exchange(t, client, server, msgs)
	exchange(t, server, client, msgs)
}

func TestDatagramConnCap(t *testing.T) {
	uc, _ := udpPair(t)
	conn := NewDatagramConn(uc, 1<<20)
	err := conn.WriteFrame(Frame{Type: TypeData, Payload: make([]byte, MaxDatagramPayload+1)})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("payload over MaxDatagramPayload: %v", err)
	}
}

// TestDatagramConnBadDatagrams sends datagrams that are not exactly one valid
// frame; each gives an error, and the connection goes on reading.
func TestDatagramConnBadDatagrams(t *testing.T) {
	uc, us := udpPair(t)
	server := NewDatagramConn(us, 1000)
	ping := AppendMessage(nil, &Ping{ID: 3})
	bad := []struct {
		name string
		in   []byte
		want error
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), ErrVersion},
		{"trailing bytes", append(append([]byte{}, ping...), 0, 0), ErrTrailingData},
		{"two frames", append(append([]byte{}, ping...), ping...), ErrTrailingData},
		{"truncated", ping[:len(ping)-1], ErrTruncated},
		{"short header", ping[:4], ErrTruncated},
		{"empty", nil, ErrTruncated},
		{"declared over max", header(1, TypeData, 0, 0, 1001), ErrFrameTooLarge},
		{"datagram over max", AppendFrame(nil, Frame{Type: TypeData, Payload: make([]byte, 5000)}), ErrFrameTooLarge},
		{"big datagram small header", append(header(1, TypeData, 0, 0, 10), make([]byte, 5000)...), ErrTrailingData},
		{"unknown type", header(1, 0x20, 0, 0, 0), ErrUnknownType},
	}
	for _, b := range bad {
		if _, err := uc.Write(b.in); err != nil {
			t.Fatal(err)
		}
		if _, err := uc.Write(ping); err != nil {
			t.Fatal(err)
		}
		_, err := server.ReadFrame()
		if !errors.Is(err, b.want) {
			t.Fatalf("%s: %v, want %v", b.name, err, b.want)
		}
		m, err := server.ReadMessage()
		if err != nil || m.(*Ping).ID != 3 {
			t.Fatalf("%s: next datagram: %v, %v", b.name, m, err)
		}
	}
}

func TestDatagramConnConcurrentWriters(t *testing.T) {
	const writers, perWriter = 4, 25
	uc, us := udpPair(t)
	client, server := NewDatagramConn(uc, 0), NewDatagramConn(us, 0)
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for seq := range perWriter {
				p := bytes.Repeat([]byte{byte(w*perWriter + seq)}, 100+seq)
				if err := client.WriteFrame(Frame{Type: TypeData, Channel: uint32(w), Flags: uint16(seq), Payload: p}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	seen := make(map[string]bool)
	for range writers * perWriter {
		f, err := server.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		w, seq := int(f.Channel), int(f.Flags)
		if w >= writers || seq >= perWriter || !bytes.Equal(f.Payload, bytes.Repeat([]byte{byte(w*perWriter + seq)}, 100+seq)) {
			t.Fatalf("datagram channel %d flags %d corrupted", w, seq)
		}
		key := fmt.Sprint(w, seq)
		if seen[key] {
			t.Fatalf("datagram %s twice", key)
		}
		seen[key] = true
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}
