package resume_test

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/bearerkit/connect/resume"
	"github.com/bearerkit/connect/wire"
)

// A server Table behind a loopback listener, a client session, one message
// each way and a clean end. In Connect the connections are registered
// (Hello/Welcome) before they reach Table.Accept, and the DialFunc does the
// registration.
func Example() {
	ctx := context.Background()
	tbl, err := resume.NewTable(nil)
	if err != nil {
		panic(err)
	}
	defer tbl.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s, isNew, err := tbl.Accept(ctx, wire.NewStreamConn(c, wire.DefaultMaxPayload))
				if err != nil || !isNew {
					return // a resumed session is already being served
				}
				defer s.Close()
				for { // echo until the client's end
					msg, err := s.Recv(ctx)
					if err == io.EOF {
						s.CloseSend()
						s.Flush(ctx)
						return
					}
					if err != nil {
						return
					}
					s.Send(ctx, append([]byte("echo: "), msg...))
				}
			}()
		}
	}()

	dial := func(ctx context.Context) (wire.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		return wire.NewStreamConn(c, wire.DefaultMaxPayload), nil
	}
	s, err := resume.Open(ctx, dial, nil)
	if err != nil {
		panic(err)
	}
	defer s.Close()
	s.Send(ctx, []byte("hello"))
	s.CloseSend()
	for {
		msg, err := s.Recv(ctx)
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Printf("%s\n", msg)
	}
	fmt.Println(s.Flush(ctx))
	// Output:
	// echo: hello
	// EOF
	// <nil>
}
