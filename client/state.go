package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/google/uuid"

	"github.com/bearerkit/connect/session"
)

// The state file (Config.StateFile): the id, service and secret of every
// open session, so that a restarted client can reclaim them.
//
//	{"version": 1, "clientId": "…", "sessions": [{"id": "…", "service": "…", "secret": "base64"}]}
//
// A session is in the file once StartSession has returned it (the file is
// written, and synced, before); a session that ends leaves the file shortly
// after (written in the background). The file is replaced atomically
// (written beside it, then renamed), mode 0600: its secrets let whoever
// reads it take the sessions over, as the client's token lets it connect.

// stateVersion is the state file's format version.
const stateVersion = 1

// maxStateFile bounds the state file the client reads.
const maxStateFile = 1 << 20

type stateFile struct {
	Version  int             `json:"version"`
	ClientID string          `json:"clientId"`
	Sessions []storedSession `json:"sessions"`
}

type storedSession struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Secret  []byte `json:"secret"`
}

// stateStore keeps the state file. Its writer goroutine is stopped by
// close.
type stateStore struct {
	path     string
	clientID uuid.UUID
	log      *slog.Logger

	mu       sync.Mutex
	sessions map[string]storedSession

	wmu    sync.Mutex // serialises writes of the file
	dirty  chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
}

// openStateStore reads the state file (a missing file holds no sessions)
// and starts the background writer.
func openStateStore(path string, clientID uuid.UUID, log *slog.Logger) (*stateStore, error) {
	st := &stateStore{path: path, clientID: clientID, log: log, sessions: map[string]storedSession{},
		dirty: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	list, err := readStateFile(path, clientID)
	if err != nil {
		return nil, err
	}
	for _, s := range list {
		st.sessions[s.ID] = s
	}
	go st.writer()
	return st, nil
}

func readStateFile(path string, clientID uuid.UUID) ([]storedSession, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: state file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, fmt.Errorf("client: state file: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("client: state file %s: %s (remove it to start without reclaiming sessions)", path, fmt.Sprintf(format, args...))
	}
	if len(data) > maxStateFile {
		return nil, bad("larger than %d bytes", maxStateFile)
	}
	if len(data) == 0 {
		return nil, nil
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, bad("%v", err)
	}
	if sf.Version != stateVersion {
		return nil, bad("format version %d, this client reads %d", sf.Version, stateVersion)
	}
	if id, err := uuid.Parse(sf.ClientID); err != nil || id != clientID {
		return nil, bad("it holds the sessions of client id %q, and this client is %s", sf.ClientID, clientID)
	}
	if len(sf.Sessions) > session.MaxReclaim {
		return nil, bad("%d sessions, at most %d", len(sf.Sessions), session.MaxReclaim)
	}
	seen := map[string]bool{}
	for i, s := range sf.Sessions {
		switch {
		case s.ID == "" || len(s.ID) > session.MaxSessionID:
			return nil, bad("session %d: bad id %q", i, s.ID)
		case len(s.Secret) != session.SecretSize:
			return nil, bad("session %s: secret of %d bytes, want %d", s.ID, len(s.Secret), session.SecretSize)
		case seen[s.ID]:
			return nil, bad("session %s listed twice", s.ID)
		}
		seen[s.ID] = true
	}
	return sf.Sessions, nil
}

// list returns the stored sessions, by id.
func (st *stateStore) list() []storedSession {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]storedSession, 0, len(st.sessions))
	for _, s := range st.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// add records an open session and writes the file before it returns.
func (st *stateStore) add(id, service string, secret []byte) {
	st.mu.Lock()
	st.sessions[id] = storedSession{ID: id, Service: service, Secret: append([]byte(nil), secret...)}
	st.mu.Unlock()
	st.flush()
}

// remove forgets an ended session; the file is rewritten in the background.
func (st *stateStore) remove(id string) {
	st.mu.Lock()
	_, ok := st.sessions[id]
	delete(st.sessions, id)
	st.mu.Unlock()
	if ok {
		select {
		case st.dirty <- struct{}{}:
		default:
		}
	}
}

// replace sets the stored sessions to keep (after a reclaim) and writes
// the file.
func (st *stateStore) replace(keep []storedSession) {
	st.mu.Lock()
	st.sessions = make(map[string]storedSession, len(keep))
	for _, s := range keep {
		st.sessions[s.ID] = s
	}
	st.mu.Unlock()
	st.flush()
}

func (st *stateStore) writer() {
	defer close(st.done)
	for {
		select {
		case <-st.dirty:
			st.flush()
		case <-st.stop:
			select {
			case <-st.dirty:
				st.flush()
			default:
			}
			return
		}
	}
}

// flush writes the current sessions to the file (atomically: a temporary
// file beside it, synced, then renamed). A failure is logged: the sessions
// still work, only a restart could not reclaim them.
func (st *stateStore) flush() {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	sf := stateFile{Version: stateVersion, ClientID: st.clientID.String(), Sessions: st.list()}
	data, err := json.MarshalIndent(sf, "", "  ")
	if err == nil {
		err = writeFileAtomic(st.path, append(data, '\n'))
	}
	if err != nil {
		st.log.Error("cannot write the session state file; a restarted client could not reclaim its sessions", "file", st.path, "error", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself, on file systems that need it
		d.Close()
	}
	return nil
}

// close stops the writer after a last write of pending changes. Nil-safe
// and idempotent.
func (st *stateStore) close() {
	if st == nil {
		return
	}
	st.closed.Do(func() {
		close(st.stop)
		<-st.done
	})
}
