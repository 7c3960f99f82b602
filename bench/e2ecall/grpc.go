package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
)

// The gRPC baseline, as in bench/bearerbench: one unary method that echoes
// its request over plaintext HTTP/2 on loopback TCP, written by hand without
// protoc (a ServiceDesc with one method and a codec that passes raw bytes),
// so that the figure is gRPC-Go's own cost and not protobuf's. Unlike
// bearerbench, the server runs in another process, as connectserver does.

const echoMethod = "/e2ecall.Echo/Echo"

// rawCodec marshals *[]byte as itself.
type rawCodec struct{}

func (rawCodec) Name() string { return "e2ecall-raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch b := v.(type) {
	case *[]byte:
		return *b, nil
	case []byte:
		return b, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...) // data may be reused by gRPC after we return
	return nil
}

type echoServer interface{}

type echoImpl struct{}

func echoHandler(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return &in, nil
	}
	info := &grpc.UnaryServerInfo{Server: echoImpl{}, FullMethod: echoMethod}
	return interceptor(ctx, &in, info, func(_ context.Context, req any) (any, error) { return req, nil })
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "e2ecall.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "e2ecall (hand-written, no .proto)",
}

// serveGRPC is the subprocess "e2ecall grpc-server": it listens on a free
// loopback port, prints the address on stdout and serves until its stdin
// ends (the parent exited or closed it) or its parent changes.
func serveGRPC() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2ecall grpc-server:", err)
		return 1
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&echoDesc, echoImpl{})
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
