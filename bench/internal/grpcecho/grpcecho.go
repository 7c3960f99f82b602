// Package grpcecho is the gRPC-Go baseline the benchmarks compare against:
// one unary method that echoes its request, written by hand without protoc
// (a ServiceDesc with one method and a codec that passes raw bytes), so
// that a figure is gRPC-Go's own cost and not protobuf's.
package grpcecho

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
)

// Method is the echo method's full name.
const Method = "/connectbench.Echo/Echo"

// Codec marshals *[]byte (or []byte) as itself. Use it on both ends:
// grpc.ForceServerCodec(Codec{}) and grpc.ForceCodec(Codec{}).
type Codec struct{}

// Name implements encoding.CodecV1.
func (Codec) Name() string { return "connectbench-raw" }

// Marshal implements encoding.CodecV1.
func (Codec) Marshal(v any) ([]byte, error) {
	switch b := v.(type) {
	case *[]byte:
		return *b, nil
	case []byte:
		return b, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

// Unmarshal implements encoding.CodecV1.
func (Codec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...) // data may be reused by gRPC after we return
	return nil
}

type echoServer interface{}

type echoImpl struct{}

func handler(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return &in, nil
	}
	info := &grpc.UnaryServerInfo{Server: echoImpl{}, FullMethod: Method}
	return interceptor(ctx, &in, info, func(_ context.Context, req any) (any, error) { return req, nil })
}

var desc = grpc.ServiceDesc{
	ServiceName: "connectbench.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: handler}},
	Metadata:    "hand-written, no .proto",
}

// Register adds the echo service to s (created with grpc.ForceServerCodec(Codec{})).
func Register(s *grpc.Server) { s.RegisterService(&desc, echoImpl{}) }

// Call makes one echo call on cc (created with grpc.ForceCodec(Codec{})).
func Call(ctx context.Context, cc *grpc.ClientConn, in []byte, out *[]byte) error {
	return cc.Invoke(ctx, Method, &in, out)
}
