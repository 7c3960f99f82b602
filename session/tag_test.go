package session

import (
	"bytes"
	"errors"
	"testing"
)

func testLinkKey(t testing.TB, sessionID string) []byte {
	t.Helper()
	secret := bytes.Repeat([]byte{7}, SecretSize)
	k := DeriveLinkKey(secret, sessionID)
	if len(k) != LinkKeySize {
		t.Fatalf("link key of %d bytes", len(k))
	}
	return k
}

func TestDeriveLinkKey(t *testing.T) {
	if DeriveLinkKey(nil, "s") != nil || DeriveLinkKey(make([]byte, 5), "s") != nil {
		t.Fatal("a link key without a secret of the right size")
	}
	a, b := testLinkKey(t, "s1"), testLinkKey(t, "s2")
	if bytes.Equal(a, b) {
		t.Fatal("two sessions, one link key")
	}
	ka, kb := DeriveLinkTagKeys(a, "unreliable"), DeriveLinkTagKeys(a, "other")
	if ka.ID == kb.ID || ka.ClientToRunner == kb.ClientToRunner {
		t.Fatal("two links, same id or key")
	}
	if ka.ClientToRunner == ka.RunnerToClient {
		t.Fatal("both directions have the same key")
	}
	if DeriveLinkTagKeys(a, "unreliable") != ka {
		t.Fatal("derivation is not deterministic")
	}
}

func TestTaggedRoundTrip(t *testing.T) {
	k := DeriveLinkTagKeys(testLinkKey(t, "s1"), "unreliable")
	frame := []byte("a wire frame")
	d := AppendTagged(nil, &k.ClientToRunner, k.ID, 42, frame)
	if len(d) != len(frame)+TagOverhead {
		t.Fatalf("%d bytes, want %d", len(d), len(frame)+TagOverhead)
	}
	id, c, f, err := ParseTagged(d)
	if err != nil || id != k.ID || c != 42 || !bytes.Equal(f, frame) {
		t.Fatalf("ParseTagged = %x %d %q %v", id, c, f, err)
	}
	if !VerifyTag(&k.ClientToRunner, d) {
		t.Fatal("the tag does not verify")
	}
}

// TestTagForgery: a changed bit anywhere, the wrong direction's key,
// another link's or another session's key, and truncation all fail.
func TestTagForgery(t *testing.T) {
	k := DeriveLinkTagKeys(testLinkKey(t, "s1"), "unreliable")
	d := AppendTagged(nil, &k.ClientToRunner, k.ID, 9, []byte("payload bytes"))
	for i := range d {
		for bit := 0; bit < 8; bit++ {
			f := bytes.Clone(d)
			f[i] ^= 1 << bit
			if VerifyTag(&k.ClientToRunner, f) {
				t.Fatalf("flipping bit %d of byte %d: still verifies", bit, i)
			}
		}
	}
	if VerifyTag(&k.RunnerToClient, d) {
		t.Fatal("verifies under the other direction's key (reflection)")
	}
	other := DeriveLinkTagKeys(testLinkKey(t, "s1"), "reliable")
	if VerifyTag(&other.ClientToRunner, d) {
		t.Fatal("verifies under another link's key")
	}
	wrong := DeriveLinkTagKeys(testLinkKey(t, "s2"), "unreliable")
	if VerifyTag(&wrong.ClientToRunner, d) {
		t.Fatal("verifies under another session's key")
	}
	for n := 0; n < len(d); n++ {
		if VerifyTag(&k.ClientToRunner, d[:n]) {
			t.Fatalf("truncated to %d bytes: verifies", n)
		}
	}
	// A tag made with a key nobody has.
	var zero [32]byte
	if VerifyTag(&k.ClientToRunner, AppendTagged(nil, &zero, k.ID, 9, []byte("payload bytes"))) {
		t.Fatal("a forged tag verifies")
	}
}

func TestParseTaggedErrors(t *testing.T) {
	k := DeriveLinkTagKeys(testLinkKey(t, "s1"), "unreliable")
	good := AppendTagged(nil, &k.ClientToRunner, k.ID, 1, []byte{1})
	badVersion := bytes.Clone(good)
	badVersion[1] = 2
	zeroCounter := AppendTagged(nil, &k.ClientToRunner, k.ID, 0, []byte{1})
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrNotTagged},
		{"a wire frame", []byte{1, 0x10, 0, 0}, ErrNotTagged},
		{"magic only", []byte{TagMagic}, ErrBadTag},
		{"no frame", good[:TagOverhead], ErrBadTag},
		{"version", badVersion, ErrBadTag},
		{"counter 0", zeroCounter, ErrBadTag},
	} {
		if _, _, _, err := ParseTagged(c.b); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestReplayWindow: each counter once; reordered ones within the window;
// nothing older; newest reported.
func TestReplayWindow(t *testing.T) {
	var w ReplayWindow
	take := func(c uint64, wantOK, wantNewest bool) {
		t.Helper()
		ok, newest := w.Take(c)
		if ok != wantOK || newest != wantNewest {
			t.Fatalf("Take(%d) = %v, %v; want %v, %v", c, ok, newest, wantOK, wantNewest)
		}
	}
	take(0, false, false)
	take(1000, true, true)
	take(1000, false, false) // replay
	take(990, true, false)   // reordered
	take(990, false, false)
	take(1000-ReplayWindowSize+1, true, false)
	take(1000-ReplayWindowSize, false, false) // too old
	take(1001, true, true)
	take(1000, false, false)
	take(1300, true, true) // a jump beyond the window
	take(1001, false, false)
	take(1299, true, false)
	take(1299, false, false)
	if w.Newest() != 1300 {
		t.Fatalf("Newest = %d", w.Newest())
	}
	// Bits of counters that left the window do not refuse their successors.
	var v ReplayWindow
	for c := uint64(1); c <= 3*ReplayWindowSize; c++ {
		if ok, _ := v.Take(c); !ok {
			t.Fatalf("in-order counter %d refused", c)
		}
	}
	for c := uint64(2 * ReplayWindowSize); c <= 3*ReplayWindowSize; c++ {
		if v.Fresh(c) {
			t.Fatalf("counter %d fresh again", c)
		}
	}
}

// FuzzTaggedDatagram: the decoder never panics, a datagram it accepts
// re-encodes to itself under the key that verifies it, and no input
// verifies under a key without having been made with it.
func FuzzTaggedDatagram(f *testing.F) {
	k := DeriveLinkTagKeys(DeriveLinkKey(bytes.Repeat([]byte{7}, SecretSize), "s1"), "unreliable")
	f.Add(AppendTagged(nil, &k.ClientToRunner, k.ID, 1, []byte{1, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(AppendTagged(nil, &k.RunnerToClient, k.ID, 1<<62, []byte("x")))
	f.Add([]byte{TagMagic})
	f.Add([]byte{1, 0x10, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, c, frame, err := ParseTagged(b)
		ok := VerifyTag(&k.ClientToRunner, b)
		if err != nil {
			if ok && IsTagged(b) && len(b) >= TagOverhead+1 && b[1] == TagVersion && c != 0 {
				t.Fatalf("rejected (%v) but verifies", err)
			}
			return
		}
		if len(frame) != len(b)-TagOverhead {
			t.Fatalf("frame of %d bytes from %d", len(frame), len(b))
		}
		if ok && !bytes.Equal(AppendTagged(nil, &k.ClientToRunner, id, c, frame), b) {
			t.Fatal("verifies, but does not re-encode to itself")
		}
		var w ReplayWindow
		if ok, _ := w.Take(c); !ok {
			t.Fatal("a fresh window refuses a valid counter")
		}
		if w.Fresh(c) {
			t.Fatal("a counter taken is fresh again")
		}
	})
}
