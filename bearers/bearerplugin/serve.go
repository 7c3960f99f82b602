package bearerplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
	"github.com/bearerkit/connect/internal/handoff"
)

// Serve serves the bearer as a plugin on this process's standard streams and
// handoff socket. It does not return. Run it from main; the process must
// have been started by a Connect host.
func Serve(reg bearers.Registration) {
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       reg.Info.Type,
		Output:     os.Stderr,
		JSONFormat: true,
		Level:      hclog.Info,
	})
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a Connect bearer plugin (%s); connectserver or connectclient starts it, it is not run by hand.\n", os.Args[0], reg.Info.Type)
		os.Exit(2)
	}
	sender, err := openHandoff()
	if err != nil {
		logger.Error("cannot open the handoff socket", "error", err)
		os.Exit(2)
	}
	// A plugin must not outlive its host: when the host's end of the handoff
	// socket closes (the host exited, even by SIGKILL), exit.
	go func() {
		sender.WaitPeerGone()
		logger.Info("host is gone; exiting")
		os.Exit(0)
	}()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &GRPCPlugin{Impl: NewServer(reg, sender, logger)}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          logger,
	})
	os.Exit(0)
}

func openHandoff() (*handoff.Sender, error) {
	f := os.NewFile(HandoffFD, "handoff")
	if f == nil {
		return nil, errors.New("descriptor 3 is not open")
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("descriptor 3 is not a socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("descriptor 3 is a %T, not a unix socket", c)
	}
	return handoff.NewSender(uc), nil
}

// Server implements the gRPC contract over a bearer. It is exported so that
// tests and embedders can serve a bearer over their own transport; plugin
// authors call Serve.
type Server struct {
	bearerpb.UnimplementedBearerServer
	reg    bearers.Registration
	send   *handoff.Sender
	log    hclog.Logger
	nextID atomic.Uint64

	mu        sync.Mutex
	bearer    bearers.Bearer
	listeners map[uint64]*served
	noticed   map[string]bool // notices already sent to the host
}

type served struct {
	l         bearers.Listener
	accepting atomic.Bool
}

// NewServer returns a Server for reg that hands connections over send.
func NewServer(reg bearers.Registration, send *handoff.Sender, log hclog.Logger) *Server {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Server{reg: reg, send: send, log: log, listeners: map[uint64]*served{}, noticed: map[string]bool{}}
}

// Describe implements bearerpb.BearerServer.
func (s *Server) Describe(context.Context, *bearerpb.DescribeRequest) (*bearerpb.DescribeResponse, error) {
	i := s.reg.Info
	return &bearerpb.DescribeResponse{Type: i.Type, Scheme: i.Scheme, Capabilities: uint32(i.Capabilities), ContractVersion: ContractVersion}, nil
}

// Configure implements bearerpb.BearerServer.
func (s *Server) Configure(_ context.Context, req *bearerpb.ConfigureRequest) (*bearerpb.ConfigureResponse, error) {
	s.mu.Lock()
	if s.bearer != nil {
		s.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "bearer already configured")
	}
	b, err := s.reg.New(bearers.Config{Attributes: bearers.Attributes(req.Attributes), StateDir: req.StateDir})
	if err == nil {
		s.bearer = b
	}
	s.mu.Unlock()
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &bearerpb.ConfigureResponse{Notices: s.newNotices(b)}, nil
}

func (s *Server) configured() (bearers.Bearer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bearer == nil {
		return nil, status.Error(codes.FailedPrecondition, "Configure was not called")
	}
	return s.bearer, nil
}

// Listen implements bearerpb.BearerServer.
func (s *Server) Listen(ctx context.Context, req *bearerpb.ListenRequest) (*bearerpb.ListenResponse, error) {
	b, err := s.configured()
	if err != nil {
		return nil, err
	}
	ep, err := bearers.ParseEndpoint(req.Endpoint)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if pb, ok := b.(bearers.PacketBinder); ok {
		pc, err := pb.BindPacket(ctx, ep)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		defer pc.Close() // the host has its own descriptor once sent
		id := s.nextID.Add(1)
		if err := s.send.SendConn(id, pc); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		return &bearerpb.ListenResponse{
			Endpoint: ep.WithAddr(pc.LocalAddr()).String(),
			PacketSocket: &bearerpb.Connection{ConnId: id, Handoff: bearerpb.Handoff_HANDOFF_PACKET_LISTENER,
				LocalAddr: pc.LocalAddr().String()},
		}, nil
	}
	l, err := b.Listen(ctx, ep)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	id := s.nextID.Add(1)
	s.mu.Lock()
	s.listeners[id] = &served{l: l}
	s.mu.Unlock()
	return &bearerpb.ListenResponse{ListenerId: id, Endpoint: l.Endpoint().String(), Notices: s.newNotices(b)}, nil
}

// newNotices returns the bearer's notices not reported before: a bearer
// may have something new to say after Listen (a generated certificate).
func (s *Server) newNotices(b bearers.Bearer) []string {
	n, ok := b.(bearers.Noticer)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, msg := range n.Notices() {
		if !s.noticed[msg] {
			s.noticed[msg] = true
			out = append(out, msg)
		}
	}
	return out
}

// Accept implements bearerpb.BearerServer.
func (s *Server) Accept(req *bearerpb.AcceptRequest, stream bearerpb.Bearer_AcceptServer) error {
	s.mu.Lock()
	sv := s.listeners[req.ListenerId]
	s.mu.Unlock()
	if sv == nil {
		return status.Errorf(codes.NotFound, "no listener %d", req.ListenerId)
	}
	if !sv.accepting.CompareAndSwap(false, true) {
		return status.Errorf(codes.AlreadyExists, "listener %d already has an Accept stream", req.ListenerId)
	}
	defer sv.accepting.Store(false)
	ctx := stream.Context()
	for {
		c, err := sv.l.Accept(ctx)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return status.Error(codes.Unavailable, err.Error())
		}
		msg, err := s.handOver(c)
		if err != nil {
			s.log.Warn("handing over an accepted connection failed", "remote", c.RemoteAddr().String(), "error", err)
			continue
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// CloseListener implements bearerpb.BearerServer.
func (s *Server) CloseListener(_ context.Context, req *bearerpb.CloseListenerRequest) (*bearerpb.CloseListenerResponse, error) {
	s.mu.Lock()
	sv := s.listeners[req.ListenerId]
	delete(s.listeners, req.ListenerId)
	s.mu.Unlock()
	if sv == nil {
		return nil, status.Errorf(codes.NotFound, "no listener %d", req.ListenerId)
	}
	sv.l.Close()
	return &bearerpb.CloseListenerResponse{}, nil
}

// Dial implements bearerpb.BearerServer.
func (s *Server) Dial(ctx context.Context, req *bearerpb.DialRequest) (*bearerpb.Connection, error) {
	b, err := s.configured()
	if err != nil {
		return nil, err
	}
	ep, err := bearers.ParseEndpoint(req.Endpoint)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := b.Dial(ctx, ep)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	msg, err := s.handOver(c)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return msg, nil
}

// handOver sends c's descriptor to the host: the kernel socket itself when c
// is one, else one end of a socket pair that a relay connects to c.
func (s *Server) handOver(c bearers.Conn) (*bearerpb.Connection, error) {
	id := s.nextID.Add(1)
	msg := &bearerpb.Connection{ConnId: id, LocalAddr: c.LocalAddr().String(), RemoteAddr: c.RemoteAddr().String(), PeerIdentity: c.Peer().Identity}
	if sc, ok := c.(bearers.SocketConn); ok {
		switch k := sc.NetConn().(type) {
		case *net.TCPConn:
			msg.Handoff = bearerpb.Handoff_HANDOFF_STREAM_SOCKET
			err := s.send.SendConn(id, k)
			c.Close() // the host holds the socket now
			return msg, err
		case *net.UDPConn:
			msg.Handoff = bearerpb.Handoff_HANDOFF_PACKET_SOCKET
			err := s.send.SendConn(id, k)
			c.Close()
			return msg, err
		}
	}
	datagram := s.reg.Info.Capabilities.Has(bearers.Datagram)
	typ := syscall.SOCK_STREAM
	msg.Handoff = bearerpb.Handoff_HANDOFF_STREAM_RELAY
	if datagram {
		typ = syscall.SOCK_SEQPACKET
		msg.Handoff = bearerpb.Handoff_HANDOFF_DATAGRAM_RELAY
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	err = s.send.Send(id, fds[1])
	syscall.Close(fds[1])
	if err != nil {
		syscall.Close(fds[0])
		c.Close()
		return nil, err
	}
	f := os.NewFile(uintptr(fds[0]), "relay")
	local, err := net.FileConn(f)
	f.Close()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("relay end: %w", err)
	}
	go relay(local.(*net.UnixConn), c, datagram)
	return msg, nil
}

// relay copies between the host's socket pair end and the bearer connection
// until both directions end, honouring half-close where both sides can.
// It owns both connections and closes them.
func relay(host *net.UnixConn, c bearers.Conn, datagram bool) {
	defer host.Close()
	defer c.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	copyHalf := func(dst, src net.Conn) {
		defer wg.Done()
		if datagram {
			copyDatagrams(dst, src)
		} else {
			buf := make([]byte, 64<<10)
			io.CopyBuffer(dst, src, buf)
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && !datagram {
			if cw.CloseWrite() == nil {
				return
			}
		}
		// No half-close: ending one direction ends the connection.
		dst.Close()
		src.Close()
	}
	go copyHalf(c, host)
	go copyHalf(host, c)
	wg.Wait()
}

func copyDatagrams(dst, src net.Conn) {
	buf := make([]byte, 65536)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
