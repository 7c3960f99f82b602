package wire_test

import (
	"fmt"
	"net"

	"github.com/bearerkit/connect/wire"
)

// The registration exchange over a stream: the client sends Hello, the
// server checks it, picks a version and answers Welcome.
func Example() {
	c, s := net.Pipe()
	client := wire.NewStreamConn(c, 0)
	server := wire.NewStreamConn(s, 0)
	defer client.Close()
	defer server.Close()

	go func() {
		m, err := server.ReadMessage()
		if err != nil {
			return
		}
		hello, ok := m.(*wire.Hello)
		if !ok {
			server.WriteMessage(&wire.Reject{Code: wire.RejectProtocol, Message: "first frame must be Hello"})
			return
		}
		v, ok := wire.NegotiateVersion(hello.MinVersion, hello.MaxVersion)
		if !ok {
			server.WriteMessage(&wire.Reject{Code: wire.RejectVersion, Message: "this server speaks version 1"})
			return
		}
		server.WriteMessage(&wire.Welcome{Version: v, ServerID: "server-a", ClientID: hello.ClientID, PingIntervalMillis: 15000})
	}()

	id := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if err := client.WriteMessage(&wire.Hello{MinVersion: 1, MaxVersion: 1, ClientID: id, Token: "secret"}); err != nil {
		fmt.Println(err)
		return
	}
	m, err := client.ReadMessage()
	if err != nil {
		fmt.Println(err)
		return
	}
	switch m := m.(type) {
	case *wire.Welcome:
		fmt.Printf("connected to %s, protocol v%d, ping every %d ms\n", m.ServerID, m.Version, m.PingIntervalMillis)
	case *wire.Reject:
		fmt.Println(m)
	}
	// Output: connected to server-a, protocol v1, ping every 15000 ms
}

// A peer that does not speak Connect gets an error that says so.
func ExampleDecodeFrame_garbage() {
	_, _, err := wire.DecodeFrame([]byte("GET / HTTP/1.1\r\n\r\n"), 0)
	fmt.Println(err)
	// Output: wire: decode frame field header.version at offset 0: peer does not speak Connect protocol v1: not a Connect v1 frame (first byte 0x47 'G'; looks like HTTP)
}
