package resume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of the byte-stream calls: SendFrom (read straight into the replay
// buffer) and CopyTo (messages written out by the reading goroutine).

// patternReader is a byte stream of total bytes, tr's pattern repeated,
// returned in reads of random sizes from 1 to maxRead bytes.
type patternReader struct {
	tr      *traffic
	off     int
	total   int
	maxRead int
	rng     *rand.Rand
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off == r.total {
		return 0, io.EOF
	}
	n := min(len(p), r.total-r.off, 1+r.rng.IntN(r.maxRead))
	for i := range n {
		p[i] = r.tr.pattern[(r.off+i)%(1<<20)]
	}
	r.off += n
	return n, nil
}

// patternWriter checks that what is written is tr's pattern from offset 0.
type patternWriter struct {
	tr  *traffic
	off int
}

func (w *patternWriter) Write(p []byte) (int, error) {
	for i, b := range p {
		if want := w.tr.pattern[(w.off+i)%(1<<20)]; b != want {
			return i, fmt.Errorf("byte %d: got %#x, want %#x (lost, duplicated or reordered bytes)", w.off+i, b, want)
		}
	}
	w.off += len(p)
	return len(p), nil
}

// sendFromAll sends r with SendFrom until its end, then CloseSend.
func sendFromAll(ctx context.Context, s *Stream, r io.Reader) (int, error) {
	total := 0
	for {
		n, err := s.SendFrom(ctx, r, 0)
		total += n
		if err == io.EOF {
			return total, s.CloseSend()
		}
		if err != nil {
			return total, err
		}
	}
}

// TestChaosByteStream is TestChaos for byte streams: each side sends a
// pattern with SendFrom, in reads of random sizes (some above MaxMessage,
// many below half of it), through a proxy that breaks the connection again
// and again. The server reads with CopyTo; the client alternates CopyTo
// calls cut short by a timeout with Recv, so that the reading goroutine's
// writes, the queue and the hand-over between them are all exercised.
// Every byte must arrive exactly once, in order.
func TestChaosByteStream(t *testing.T) {
	total, maxBreaks := 32<<20, 200
	switch {
	case testing.Short():
		total, maxBreaks = 4<<20, 40
	case raceEnabled:
		total, maxBreaks = 12<<20, 100
	}
	ctx := testCtx(t, 60*time.Second)
	c, s, proxy := chaosPair(t, ctx, maxBreaks)
	defer c.Close()
	defer s.Close()

	up, down := newTraffic(3, 64), newTraffic(4, 64)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(who string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- fmt.Errorf("%s: %w", who, err)
			}
		}()
	}
	run("client send", func() error {
		_, err := sendFromAll(ctx, c, &patternReader{tr: up, total: total, maxRead: 300 << 10, rng: rand.New(rand.NewPCG(1, 1))})
		return err
	})
	run("server send", func() error {
		_, err := sendFromAll(ctx, s, &patternReader{tr: down, total: total, maxRead: 300 << 10, rng: rand.New(rand.NewPCG(2, 2))})
		return err
	})
	run("server copy", func() error {
		w := &patternWriter{tr: up}
		n, err := s.CopyTo(ctx, w)
		if err == nil && (n != int64(total) || w.off != total) {
			err = fmt.Errorf("CopyTo returned %d bytes, wrote %d, want %d", n, w.off, total)
		}
		return err
	})
	run("client copy and recv", func() error {
		w := &patternWriter{tr: down}
		var copied int64
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(20))*time.Millisecond)
			n, err := c.CopyTo(cctx, w)
			cancel()
			copied += n
			if err == nil {
				break // the end of the stream
			}
			if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				return err
			}
			m, err := c.Recv(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if _, err := w.Write(m); err != nil {
				return err
			}
			copied += int64(len(m))
		}
		if w.off != total || copied > int64(total) {
			return fmt.Errorf("received %d bytes (%d by CopyTo), want %d", w.off, copied, total)
		}
		return nil
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, st := range []*Stream{c, s} {
		if err := st.Flush(ctx); err != nil {
			t.Fatalf("%s flush: %v", st.role, err)
		}
	}
	breaks, kinds := proxy.stats()
	t.Logf("%d MiB each way, %d connections broken (%v), client attached %d connections", total>>20, breaks, kinds, c.Stats().Attaches)
	if a := c.Stats().Attaches; a < maxBreaks/4 {
		t.Fatalf("only %d resumptions: the proxy did not break enough connections", a-1)
	}
}

// countingReader returns size bytes of value b per Read, and counts calls.
type countingReader struct {
	size  int
	calls atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	k := r.calls.Add(1)
	n := min(len(p), r.size)
	for i := range n {
		p[i] = byte(k)
	}
	return n, nil
}

// TestSendFromBackpressure: with acknowledgements held in the network,
// SendFrom reads exactly as many times as the replay buffer has room for a
// whole read of max bytes, then blocks before reading; nothing is lost.
func TestSendFromBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ReplayBuffer = 64 << 10
		cfg.MaxMessage = 1000
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, cfg)
		n.relay().toClient.hold() // the server's acknowledgements stay in the network

		r := &countingReader{size: 1000}
		const total = 100
		done := make(chan error, 1)
		go func() {
			for range total {
				if _, err := c.SendFrom(context.Background(), r, 0); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		fit := int64(cfg.ReplayBuffer / (1000 + MessageOverhead))
		synctest.Wait()
		if got := r.calls.Load(); got != fit {
			t.Fatalf("%d Reads with a replay buffer for %d messages", got, fit)
		}
		if st := c.Stats(); st.Buffered != int(fit)*(1000+MessageOverhead) {
			t.Fatalf("client %+v", st)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := r.calls.Load(); got != fit {
			t.Fatalf("after 10 s: %d Reads", got)
		}
		n.relay().toClient.release()
		synctest.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for i := range total {
			want := bytes.Repeat([]byte{byte(i + 1)}, 1000)
			mustRecv(t, s, want)
		}
		if err := c.Flush(vctx(t)); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.Attaches != 1 || st.Buffered != 0 {
			t.Fatalf("client %+v", st)
		}
	})
}

// readerFunc is an io.Reader made of a function.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestSendFromReads: what SendFrom queues for each kind of Read result, and
// what it costs in the replay buffer.
func TestSendFromReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxMessage = 64 << 10
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, cfg)
		n.relay().toClient.hold() // keep everything in the replay buffer
		ctx := vctx(t)
		errRead := errors.New("read failed")
		steps := []struct {
			n    int
			err  error
			size int // the buffer SendFrom must offer
		}{
			{10, nil, 1000},           // a short read: copied into a buffer of its size
			{40 << 10, nil, 0},        // more than half of max: kept as read
			{5, io.EOF, 1000},         // bytes and the end: queued, and io.EOF returned
			{0, io.EOF, 1000},         // nothing read: nothing queued
			{7, errRead, 100 << 10},   // max above MaxMessage: MaxMessage
			{0, nil, 1000},            // an empty read queues nothing
			{64 << 10, nil, 64 << 10}, // a whole buffer
		}
		var want [][]byte
		buffered := 0
		for i, st := range steps {
			var b []byte
			got, err := c.SendFrom(ctx, readerFunc(func(p []byte) (int, error) {
				offer := st.size
				if offer <= 0 || offer > cfg.MaxMessage {
					offer = cfg.MaxMessage
				}
				if len(p) != offer {
					t.Errorf("step %d: Read offered %d bytes, want %d", i, len(p), offer)
				}
				b = bytes.Repeat([]byte{byte('a' + i)}, st.n)
				return copy(p, b), st.err
			}), st.size)
			if got != st.n || err != st.err {
				t.Fatalf("step %d: SendFrom = %d, %v; want %d, %v", i, got, err, st.n, st.err)
			}
			if st.n > 0 {
				want = append(want, b)
				buffered += st.n + MessageOverhead
			}
			if cs := c.Stats(); cs.Buffered != buffered || cs.Sent != uint64(len(want)) {
				t.Fatalf("step %d: client %+v, want %d messages buffered, costing %d", i, cs, len(want), buffered)
			}
		}
		c.CloseSend()
		if _, err := c.SendFrom(ctx, readerFunc(func([]byte) (int, error) {
			t.Error("Read after CloseSend")
			return 0, nil
		}), 0); err != ErrSendClosed {
			t.Fatalf("SendFrom after CloseSend: %v", err)
		}
		n.relay().toClient.release()
		mustRecv(t, s, want...)
		if _, err := s.Recv(ctx); err != io.EOF {
			t.Fatalf("after the messages: %v, want io.EOF", err)
		}
	})
}

// writerFunc is an io.Writer made of a function.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestCopyTo: messages already queued and those arriving while CopyTo waits
// are written in order; the end of the stream ends CopyTo with nil; a
// writer's error ends it with that error and later messages stay for Recv;
// a cancelled CopyTo returns ctx.Err() and never touches its writer again.
func TestCopyTo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		n := newPipeNet(t, nil)
		c, s := openPipe(t, n, cfg)
		ctx := vctx(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
		mustSend(t, c, []byte("queued 1"), []byte("queued 2"))
		synctest.Wait()

		// Cancelled: writes what is queued, then waits; after it returned,
		// its writer is not used again.
		var buf bytes.Buffer
		var returned atomic.Bool
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := s.CopyTo(cctx, writerFunc(func(p []byte) (int, error) {
				if returned.Load() {
					t.Error("CopyTo's writer used after CopyTo returned")
				}
				return buf.Write(p)
			}))
			returned.Store(true)
			done <- err
		}()
		synctest.Wait()
		mustSend(t, c, big)
		synctest.Wait()
		cancel()
		if err := <-done; err != context.Canceled {
			t.Fatalf("cancelled CopyTo: %v", err)
		}
		if want := append([]byte("queued 1queued 2"), big...); !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("cancelled CopyTo wrote %d bytes, want %d", buf.Len(), len(want))
		}
		if st := s.Stats(); st.Queued != 0 || st.Received != 3 {
			t.Fatalf("server %+v", st)
		}

		// Messages after that go to the queue, then to Recv.
		mustSend(t, c, []byte("for Recv"))
		mustRecv(t, s, []byte("for Recv"))

		// A writer's error: the message counts as read, later ones stay.
		errWrite := errors.New("write failed")
		writes := 0
		go func() {
			_, err := s.CopyTo(ctx, writerFunc(func(p []byte) (int, error) {
				writes++
				return 0, errWrite
			}))
			done <- err
		}()
		synctest.Wait()
		mustSend(t, c, []byte("lost to the writer"), []byte("after the error"))
		if err := <-done; err != errWrite || writes != 1 {
			t.Fatalf("CopyTo with a failing writer: %v after %d writes", err, writes)
		}
		mustRecv(t, s, []byte("after the error"))

		// Until the end: CopyTo returns nil and the total; Recv then
		// returns io.EOF.
		buf.Reset()
		go func() {
			n, err := s.CopyTo(ctx, &buf)
			if n != int64(len(big)+3) {
				t.Errorf("CopyTo returned %d bytes, want %d", n, len(big)+3)
			}
			done <- err
		}()
		mustSend(t, c, big, []byte("end"))
		c.CloseSend()
		if err := <-done; err != nil {
			t.Fatalf("CopyTo at the end of the stream: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), append(big, "end"...)) {
			t.Fatalf("CopyTo wrote %d bytes", buf.Len())
		}
		if _, err := s.Recv(ctx); err != io.EOF {
			t.Fatalf("Recv after CopyTo's end: %v", err)
		}
		if n, err := s.CopyTo(ctx, &buf); n != 0 || err != nil {
			t.Fatalf("CopyTo after the end: %d, %v", n, err)
		}
	})
}

// TestCopyToSlowWriterNoFalseDead: while CopyTo's writer blocks, the
// connection is not read — and not taken for dead either, however long the
// writer takes; the sender is held back by flow control, nothing is lost.
func TestCopyToSlowWriterNoFalseDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.ReplayBuffer = 256 << 10
		cfg.MaxMessage = 64 << 10
		n := newPipeNet(t, cfg)
		c, s := openPipe(t, n, cfg)
		msgs := numbered("m", 1, 200)
		for i := range msgs {
			msgs[i] = append(msgs[i], make([]byte, 8<<10)...)
		}
		var buf bytes.Buffer
		first := true
		done := make(chan error, 1)
		ctx := vctx(t)
		go func() {
			_, err := s.CopyTo(ctx, writerFunc(func(p []byte) (int, error) {
				if first {
					first = false
					time.Sleep(8 * cfg.DeadTimeout)
				}
				return buf.Write(p)
			}))
			done <- err
		}()
		synctest.Wait() // CopyTo waits: the reading goroutine will write
		var sent atomic.Int64
		go func() {
			for _, m := range msgs {
				if c.Send(context.Background(), m) != nil {
					return
				}
				sent.Add(1)
			}
			c.CloseSend()
		}()
		time.Sleep(4 * cfg.DeadTimeout)
		synctest.Wait()
		if got := sent.Load(); got == int64(len(msgs)) || got == 0 {
			t.Fatalf("%d of %d Sends returned: the sender was not held back", got, len(msgs))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if want := bytes.Join(msgs, nil); !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("CopyTo wrote %d bytes, want %d", buf.Len(), len(want))
		}
		if cs, ss := c.Stats(), s.Stats(); cs.Attaches != 1 || ss.Attaches != 1 {
			t.Fatalf("a connection was taken for dead: client %+v, server %+v", cs, ss)
		}
	})
}
