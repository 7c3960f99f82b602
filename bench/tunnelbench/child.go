package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/tunnel"
	"github.com/bearerkit/connect/wire"
)

// The child processes: this program re-executed with a mode. Each listens
// on a free loopback port, prints its address as its first line on stdout,
// serves until its standard input ends (the parent closed it or exited),
// and reports each finished tunnel or transfer as a line on stdout.
//
//	tunnelbench tunnel-client SERVER     the tunnel's client side (process A)
//	tunnelbench tunnel-server TARGET     the tunnel's server side (process B)
//	tunnelbench receiver TRANSFER READ   section 2's receiver
//
// Stand-ins: `connectclient tunnel --listen ADDR --service NAME` and
// connectserver's tunnel service, once they exist, do what A and B do here
// (with registration and the bearer in front of resume.Open and
// Table.Accept); the benchmark should then run them instead.

// tunnelName is the tunnel's name in Open; the stand-in server serves any.
const tunnelName = "tunnelbench"

// child runs mode if it is one of the child modes.
func child(mode string, args []string) (int, bool) {
	var run func([]string) error
	switch mode {
	case "tunnel-client":
		run = tunnelClient
	case "tunnel-server":
		run = tunnelServer
	case "receiver":
		run = receiver
	default:
		return 0, false
	}
	stopProfile := startProfile(os.Getenv(profileEnv), mode)
	// The parent closes our stdin, dies, or sends SIGTERM: stop (writing
	// the CPU profile first, if one is being taken).
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGTERM, os.Interrupt)
	go func() { io.Copy(io.Discard, os.Stdin); quit <- syscall.SIGTERM }()
	go func() { <-quit; stopProfile(); os.Exit(0) }()
	if err := run(args); err != nil {
		fmt.Fprintf(os.Stderr, "tunnelbench %s: %v\n", mode, err)
		return 1, true
	}
	return 0, true
}

// sayMu serialises the lines a child writes on stdout.
var sayMu sync.Mutex

func say(format string, args ...any) {
	sayMu.Lock()
	defer sayMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

// finish ends a tunnel's stream cleanly (everything acknowledged, then
// Close), bounded in time.
func finish(s *resume.Stream) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Flush(ctx)
	s.Close()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// tunnelClient is process A: for each local connection it opens a resume
// stream to the server side (loopback TCP, default resume configuration),
// opens the tunnel on it and pumps. It reports "done UP DOWN ERR" per
// connection.
func tunnelClient(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: tunnel-client SERVER")
	}
	server := args[0]
	cfg := resume.DefaultConfig()
	dial := func(ctx context.Context) (wire.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", server)
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, cfg.MaxMessage), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	say("%s", ln.Addr())
	ctx := context.Background()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			s, err := resume.Open(octx, dial, cfg)
			if err == nil {
				err = tunnel.Dial(octx, s, tunnelName, c.RemoteAddr().String())
			}
			cancel()
			var st tunnel.Stats
			if err == nil {
				st, err = tunnel.Pump(ctx, c, s)
			} else {
				abort(c)
			}
			if s != nil {
				finish(s)
			}
			say("done %d %d %q", st.Up, st.Down, errText(err))
		}()
	}
}

// tunnelServer is process B: a resume Table behind a loopback TCP listener;
// each new session is a tunnel to TARGET. It reports "done UP DOWN ERR" per
// tunnel (UP: from TARGET into the stream).
func tunnelServer(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: tunnel-server TARGET")
	}
	target := tunnel.Target{Address: args[0]}
	cfg := resume.DefaultConfig()
	tbl, err := resume.NewTable(cfg)
	if err != nil {
		return err
	}
	defer tbl.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	say("%s", ln.Addr())
	ctx := context.Background()
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			s, isNew, err := tbl.Accept(ctx, wire.NewStreamConn(c, cfg.MaxMessage))
			if err != nil || !isNew {
				return // a resumed session is served where it was opened
			}
			_, st, err := tunnel.Accept(ctx, s, func(tunnel.Open) (tunnel.Target, error) { return target, nil }, dial)
			finish(s)
			say("done %d %d %q", st.Up, st.Down, errText(err))
		}()
	}
}

// ackSize is the receiver's acknowledgement of a transfer in section 2:
// the bytes received so far and its own CPU time so far (nanoseconds), each
// 8 bytes big-endian.
const ackSize = 16

func appendAck(b []byte, n int64) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	return binary.BigEndian.AppendUint64(b, uint64(ownCPU()))
}

// Modes of a resume session in section 2, its first message: how the
// receiver reads it.
const (
	modeRecv   = "recv"    // Stream.Recv, a message at a time
	modeCopyTo = "copy-to" // Stream.CopyTo into a counting io.Writer
)

// receiver is section 2's far end. It listens twice: raw TCP connections,
// read READ bytes at a time, and resume sessions (default configuration),
// read with Recv a message at a time or with CopyTo, as the session's first
// message says (modeRecv, modeCopyTo). Whenever a connection's or session's
// count reaches a multiple of TRANSFER it answers with an ack.
func receiver(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: receiver TRANSFER READ")
	}
	transfer, err1 := strconv.ParseInt(args[0], 10, 64)
	readSize, err2 := strconv.Atoi(args[1])
	if err := errors.Join(err1, err2); err != nil || transfer <= 0 || readSize <= 0 {
		return fmt.Errorf("bad arguments %q: %v", args, err)
	}
	rawLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	resLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg := resume.DefaultConfig()
	tbl, err := resume.NewTable(cfg)
	if err != nil {
		return err
	}
	defer tbl.Close()
	say("%s %s", rawLn.Addr(), resLn.Addr())
	ctx := context.Background()
	go func() {
		for {
			c, err := rawLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, readSize)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					if k > 0 && n%transfer == 0 {
						if _, err := c.Write(appendAck(nil, n)); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	for {
		c, err := resLn.Accept()
		if err != nil {
			return err
		}
		go func() {
			s, isNew, err := tbl.Accept(ctx, wire.NewStreamConn(c, cfg.MaxMessage))
			if err != nil || !isNew {
				return
			}
			defer s.Close()
			mode, err := s.Recv(ctx)
			if err != nil {
				return
			}
			if string(mode) == modeCopyTo {
				// The counting writer runs on the stream's reading
				// goroutine: it hands the acks to this one to send.
				acks := make(chan int64, 16)
				cw := &countingWriter{transfer: transfer, acks: acks}
				go func() {
					s.CopyTo(ctx, cw)
					close(acks)
				}()
				for n := range acks {
					if err := s.Send(ctx, appendAck(nil, n)); err != nil {
						return
					}
				}
				return
			}
			var n int64
			ack := make([]byte, 0, ackSize)
			for {
				m, err := s.Recv(ctx)
				if err != nil {
					return
				}
				n += int64(len(m))
				if len(m) > 0 && n%transfer == 0 {
					if err := s.Send(ctx, appendAck(ack[:0], n)); err != nil {
						return
					}
				}
			}
		}()
	}
}

// countingWriter counts the bytes CopyTo writes and passes the count on at
// every multiple of transfer.
type countingWriter struct {
	n, transfer int64
	acks        chan<- int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if len(p) > 0 && c.n%c.transfer == 0 {
		c.acks <- c.n
	}
	return len(p), nil
}
