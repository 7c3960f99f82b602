package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The gRPC baseline: one unary method that echoes its request, over plaintext
// HTTP/2 on loopback TCP. It is written by hand, without protoc: a
// ServiceDesc with one method and a codec that passes raw bytes, so that
// the figure is gRPC-Go's own cost and not protobuf's.

const echoMethod = "/bearerbench.Echo/Echo"

// rawCodec marshals *[]byte as itself.
type rawCodec struct{}

func (rawCodec) Name() string { return "bearerbench-raw" }

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

// echoServer is the service's handler type; the service needs no state.
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
	ServiceName: "bearerbench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "bearerbench (hand-written, no .proto)",
}

type grpcBaseline struct {
	srv *grpc.Server
	cc  *grpc.ClientConn
}

func startGRPC(ctx context.Context) (*grpcBaseline, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&echoDesc, echoImpl{})
	go srv.Serve(ln) // returns when srv stops
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &grpcBaseline{srv: srv, cc: cc}, nil
}

// call makes one unary call and returns the echoed payload in *out.
func (g *grpcBaseline) call(ctx context.Context, in []byte, out *[]byte) error {
	return g.cc.Invoke(ctx, echoMethod, &in, out)
}

func (g *grpcBaseline) close() {
	g.cc.Close()
	g.srv.Stop()
}
