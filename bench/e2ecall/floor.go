package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The floor: what three Go processes cost with nothing but sockets. A
// client writes a length-prefixed message on loopback TCP to a relay
// process, the relay writes it on a unix socket to an echo process, and the
// answer comes back the same way: the shape of a Connect call (client →
// connectserver over tcp, connectserver → service plugin over its unix data
// socket) with no framing, no session layer, no service. No design with
// the service in its own process can be faster; the report compares both
// Connect and the gRPC baseline with it.
//
// The relay is "e2ecall floor-relay SOCKET" and the echo server "e2ecall
// floor-echo SOCKET": this program, re-executed. Both exit when their
// standard input ends (this process exited or closed it).

// maxFloorMessage bounds a message of the floor's protocol.
const maxFloorMessage = 1 << 20

// readMsg reads one message: a 4-byte big-endian length, then the bytes.
func readMsg(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFloorMessage {
		return nil, fmt.Errorf("floor message of %d bytes", n)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// writeMsg writes one message in one write.
func writeMsg(w io.Writer, buf, msg []byte) ([]byte, error) {
	buf = binary.BigEndian.AppendUint32(buf[:0], uint32(len(msg)))
	buf = append(buf, msg...)
	_, err := w.Write(buf)
	return buf, err
}

// serveFloor runs the subprocess modes; the second argument is the unix
// socket's path.
func serveFloor(mode, sock string) int {
	go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	switch mode {
	case "floor-echo":
		ln, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2ecall floor-echo:", err)
			return 1
		}
		fmt.Println("ready")
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				var in, out []byte
				for {
					m, err := readMsg(r, in)
					if err != nil {
						return
					}
					in = m
					if out, err = writeMsg(c, out, m); err != nil {
						return
					}
				}
			}()
		}
	case "floor-relay":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2ecall floor-relay:", err)
			return 1
		}
		fmt.Println(ln.Addr().String())
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", sock)
				if err != nil {
					fmt.Fprintln(os.Stderr, "e2ecall floor-relay:", err)
					return
				}
				defer u.Close()
				cr, ur := bufio.NewReader(c), bufio.NewReader(u)
				var in, out []byte
				for {
					m, err := readMsg(cr, in)
					if err != nil {
						return
					}
					if out, err = writeMsg(u, out, m); err != nil {
						return
					}
					if m, err = readMsg(ur, m); err != nil {
						return
					}
					in = m
					if out, err = writeMsg(c, out, m); err != nil {
						return
					}
				}
			}()
		}
	}
	return 2
}

// floorPool is the client side: one connection per caller, made on first
// use.
type floorPool struct {
	addr string
	mu   sync.Mutex
	cs   map[int]*floorConn
}

type floorConn struct {
	c       net.Conn
	r       *bufio.Reader
	in, out []byte
}

func (p *floorPool) call(caller int, payload []byte) error {
	p.mu.Lock()
	fc := p.cs[caller]
	if fc == nil {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			p.mu.Unlock()
			return err
		}
		fc = &floorConn{c: c, r: bufio.NewReader(c)}
		p.cs[caller] = fc
	}
	p.mu.Unlock()
	fc.c.SetDeadline(time.Now().Add(10 * time.Second))
	var err error
	if fc.out, err = writeMsg(fc.c, fc.out, payload); err != nil {
		return err
	}
	if fc.in, err = readMsg(fc.r, fc.in); err != nil {
		return err
	}
	if string(fc.in) != string(payload) {
		return errors.New("floor: wrong answer")
	}
	return nil
}

func (p *floorPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fc := range p.cs {
		fc.c.Close()
	}
}

// startFloor starts the two floor processes and returns the pool.
func (e *env) startFloor() (*floorPool, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(e.dir, "floor.sock")
	var addr string
	for _, mode := range []string{"floor-echo", "floor-relay"} {
		cmd := exec.Command(exe, mode, sock)
		if _, err := cmd.StdinPipe(); err != nil { // its end tells the child to exit
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = e.stderr
		p, err := startProc(cmd)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", mode, err)
		}
		e.mu.Lock()
		e.floor = append(e.floor, p)
		e.mu.Unlock()
		linec := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(out).ReadString('\n')
			linec <- strings.TrimSpace(line)
			io.Copy(io.Discard, out)
		}()
		select {
		case addr = <-linec:
		case <-time.After(30 * time.Second):
		}
		if addr == "" {
			return nil, fmt.Errorf("%s did not start", mode)
		}
	}
	return &floorPool{addr: addr, cs: map[int]*floorConn{}}, nil
}
