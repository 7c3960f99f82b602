package pluginhost

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/bearers/bearerplugin/bearerpb"
	"google.golang.org/grpc/status"
)

// streamListener receives the connections a plugin accepts, over the Accept
// stream and the handoff socket. One goroutine (run) owns the stream; Close
// stops it.
type streamListener struct {
	p     *Plugin
	id    uint64
	ep    bearers.Endpoint
	conns chan bearers.Conn

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	closeOnce sync.Once
	closing   atomic.Bool // set before the plugin is told to close
	mu        sync.Mutex
	err       error // why run ended
}

func newStreamListener(p *Plugin, id uint64, ep bearers.Endpoint) *streamListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &streamListener{p: p, id: id, ep: ep, conns: make(chan bearers.Conn), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go l.run()
	return l
}

func (l *streamListener) run() {
	defer close(l.done)
	stream, err := l.p.rpc.Accept(l.ctx, &bearerpb.AcceptRequest{ListenerId: l.id})
	if err != nil {
		l.stop(fmt.Errorf("accept on %s via plugin %s: %w", l.ep, l.p.opts.Name, grpcMessage(err)))
		return
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			if l.closing.Load() || l.ctx.Err() != nil {
				err = net.ErrClosed
			}
			l.stop(fmt.Errorf("accept on %s via plugin %s: %w", l.ep, l.p.opts.Name, grpcMessage(err)))
			return
		}
		tctx, cancel := context.WithTimeout(l.ctx, l.p.opts.ControlTimeout)
		c, err := l.p.receive(tctx, m)
		cancel()
		if err != nil {
			// A connection we cannot take is the plugin's fault, not the
			// listener's: log it and keep accepting.
			l.p.opts.Logger.Warn("dropping a connection the plugin handed over badly", "plugin", l.p.opts.Name, "error", err)
			continue
		}
		select {
		case l.conns <- c:
		case <-l.ctx.Done():
			c.Close()
			l.stop(net.ErrClosed)
			return
		}
	}
}

func (l *streamListener) stop(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

// Accept implements bearers.Listener.
func (l *streamListener) Accept(ctx context.Context) (bearers.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *streamListener) Addr() net.Addr             { return addr{l.ep.Scheme, l.ep.HostPort()} }
func (l *streamListener) Endpoint() bearers.Endpoint { return l.ep }

// Close implements bearers.Listener: it closes the plugin's listener and
// ends the Accept stream. Idempotent.
func (l *streamListener) Close() error {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		if l.p.alive() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), l.p.opts.ControlTimeout)
			l.p.rpc.CloseListener(ctx, &bearerpb.CloseListenerRequest{ListenerId: l.id})
			cancel()
		}
		l.cancel()
	})
	<-l.done
	return nil
}

// grpcMessage strips gRPC's "rpc error: code = X desc =" wrapper so that the
// plugin's own message reads cleanly in logs and client errors.
func grpcMessage(err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s (%s)", s.Message(), s.Code())
	}
	return err
}
