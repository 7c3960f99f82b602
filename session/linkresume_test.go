package session

import (
	"bytes"
	"testing"
)

func TestLinkBindProof(t *testing.T) {
	linkKey := bytes.Repeat([]byte{7}, LinkKeySize)
	key := DeriveLinkResumeKey(linkKey, "reliable")
	if len(key) != 32 || DeriveLinkResumeKey(linkKey[:5], "reliable") != nil {
		t.Fatalf("key %x", key)
	}
	if bytes.Equal(key, DeriveLinkResumeKey(linkKey, "reliable:connect.bearer.ssl")) {
		t.Fatal("two links share a resume key")
	}
	tags := DeriveLinkTagKeys(linkKey, "reliable")
	if bytes.Equal(key, tags.ClientToRunner[:]) || bytes.Equal(key, tags.RunnerToClient[:]) {
		t.Fatal("the resume key is a tag key")
	}
	id := [16]byte{1, 2, 3}
	c, r := LinkBindProof(key, id, false), LinkBindProof(key, id, true)
	if bytes.Equal(c, r) || len(c) != LinkProofSize {
		t.Fatal("the two directions' proofs are equal")
	}
	if !VerifyLinkBindProof(key, id, false, c) || !VerifyLinkBindProof(key, id, true, r) {
		t.Fatal("a right proof does not verify")
	}
	other := id
	other[15] = 1
	for name, ok := range map[string]bool{
		"reflected":    VerifyLinkBindProof(key, id, true, c),
		"other stream": VerifyLinkBindProof(key, other, false, c),
		"other key":    VerifyLinkBindProof(DeriveLinkResumeKey(linkKey, "x"), id, false, c),
		"short":        VerifyLinkBindProof(key, id, false, c[:31]),
		"empty":        VerifyLinkBindProof(key, id, false, nil),
		"no key":       VerifyLinkBindProof(nil, id, false, c),
	} {
		if ok {
			t.Errorf("%s: verified", name)
		}
	}
	for i := range c { // every bit flipped
		for b := 0; b < 8; b++ {
			f := bytes.Clone(c)
			f[i] ^= 1 << b
			if VerifyLinkBindProof(key, id, false, f) {
				t.Fatalf("byte %d bit %d flipped: verified", i, b)
			}
		}
	}
}
