package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/bearerkit/connect/bench/internal/grpcecho"
)

// The gRPC baseline, as in bench/bearerbench: one unary method that echoes
// its request over plaintext HTTP/2 on loopback TCP, written by hand without
// protoc (a ServiceDesc with one method and a codec that passes raw bytes),
// so that the figure is gRPC-Go's own cost and not protobuf's. Unlike
// bearerbench, the server runs in another process, as connectserver does.

// serveGRPC is the subprocess "e2ecall grpc-server": it listens on a free
// loopback port, prints the address on stdout and serves until its stdin
// ends (the parent exited or closed it) or its parent changes.
func serveGRPC() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2ecall grpc-server:", err)
		return 1
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(grpcecho.Codec{}))
	grpcecho.Register(srv)
	fmt.Println(ln.Addr().String())
	parent := os.Getppid()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		srv.Stop()
	}()
	go func() {
		for range time.Tick(500 * time.Millisecond) {
			if os.Getppid() != parent {
				srv.Stop()
				return
			}
		}
	}()
	srv.Serve(ln) // returns when srv stops
	return 0
}
