// Command ledger is the service plugin of the resume integration tests: per
// session, an append-only list of integers. A client appends 1, 2, 3, ...
// and checks what append returns (the new length), the digest of the list
// and the appended events, so that the service's own record shows any call
// lost, run twice or out of order; open lists the sessions the service
// sees.
package main

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/bearerkit/connect/services/serviceplugin"
)

//go:embed ledger.xml
var serviceXML []byte

var (
	mu    sync.Mutex
	lists = map[string][]int64{}
)

// Digest is the digest of a list as the service reports it: COUNT:SHA256
// of the values' decimal lines.
func Digest(values []int64) string {
	h := sha256.New()
	for _, v := range values {
		h.Write(strconv.AppendInt(nil, v, 10))
		h.Write([]byte{'\n'})
	}
	return strconv.Itoa(len(values)) + ":" + hex.EncodeToString(h.Sum(nil))
}

var service = &serviceplugin.Service{
	XML: serviceXML,
	Methods: map[string]serviceplugin.MethodFunc{
		"append": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			if call.Session == nil {
				return nil, errors.New("append needs a session")
			}
			v := call.Int("value")
			mu.Lock()
			l, ok := lists[call.Session.ID]
			if ok {
				l = append(l, v)
				lists[call.Session.ID] = l
			}
			mu.Unlock()
			if !ok {
				return nil, errors.New("no list for session " + call.Session.ID)
			}
			if err := call.Session.Emit(ctx, "appended", map[string]any{"value": v}); err != nil {
				return nil, err
			}
			return int64(len(l)), nil
		},
		"digest": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			if call.Session == nil {
				return nil, errors.New("digest needs a session")
			}
			mu.Lock()
			d := Digest(lists[call.Session.ID])
			mu.Unlock()
			return d, nil
		},
		"fill": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			n := call.Int("size")
			if n < 0 || n > 1<<20 {
				return nil, errors.New("size must be from 0 to 1 MiB")
			}
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i % 251)
			}
			return b, nil
		},
		"open": func(ctx context.Context, call *serviceplugin.Call) (any, error) {
			var ids []string
			for _, s := range call.Service.Sessions() {
				ids = append(ids, s.ID)
			}
			sort.Strings(ids)
			return strings.Join(ids, ","), nil
		},
	},
	OnSessionOpen: func(ctx context.Context, s *serviceplugin.Session) error {
		mu.Lock()
		lists[s.ID] = nil
		mu.Unlock()
		slog.Info("ledger session opened", "ledger_session", s.ID, "client", s.ClientID)
		return nil
	},
	OnSessionClose: func(ctx context.Context, s *serviceplugin.Session, reason string) {
		mu.Lock()
		n := len(lists[s.ID])
		delete(lists, s.ID)
		mu.Unlock()
		slog.Info("ledger session closed", "ledger_session", s.ID, "reason", reason, "entries", n)
	},
}

func main() { serviceplugin.Serve(service) }
