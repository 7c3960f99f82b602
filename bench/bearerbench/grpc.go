package main

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bearerkit/connect/bench/internal/grpcecho"
)

// The gRPC baseline: one unary method that echoes its request, over plaintext
// HTTP/2 on loopback TCP. It is written by hand, without protoc: a
// ServiceDesc with one method and a codec that passes raw bytes, so that
// the figure is gRPC-Go's own cost and not protobuf's.

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
	srv := grpc.NewServer(grpc.ForceServerCodec(grpcecho.Codec{}))
	grpcecho.Register(srv)
	go srv.Serve(ln) // returns when srv stops
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(grpcecho.Codec{})))
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &grpcBaseline{srv: srv, cc: cc}, nil
}

// call makes one unary call and returns the echoed payload in *out.
func (g *grpcBaseline) call(ctx context.Context, in []byte, out *[]byte) error {
	return grpcecho.Call(ctx, g.cc, in, out)
}

func (g *grpcBaseline) close() {
	g.cc.Close()
	g.srv.Stop()
}
