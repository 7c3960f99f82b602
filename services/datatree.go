package services

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/services/servicefile"
)

// DataTree is a service's runtime data: one value of the tree's type (the
// anonymous struct of the top-level nodes), held in the canonical Go
// representation of this package and owned by the tree: values are copied
// in (by encoding and decoding them) and out, so no caller ever shares a map
// or slice with it. Paths are dot paths ("sensors.temperature", lists by
// index: "readings.3"); "" is the whole tree. Not safe for concurrent use:
// the owner serializes calls (the service plugin SDK and the server each
// hold one under a mutex).
type DataTree struct {
	// MaxValueSize, if positive, bounds the encoding of a value Set
	// accepts; a larger value is refused and nothing changes.
	MaxValueSize int

	typ  *servicefile.Type
	root any
}

// NewDataTree builds the tree's initial value: every value at its default,
// every list empty.
func NewDataTree(root *servicefile.DataNode) (*DataTree, error) {
	v, err := initialValue(root)
	if err != nil {
		return nil, err
	}
	return &DataTree{typ: root.Type, root: v}, nil
}

func initialValue(n *servicefile.DataNode) (any, error) {
	switch {
	case n.Kind == servicefile.ObjectNode:
		m := make(map[string]any, len(n.Children))
		for _, c := range n.Children {
			v, err := initialValue(c)
			if err != nil {
				return nil, err
			}
			m[c.Name] = v
		}
		return m, nil
	case n.Default != nil:
		v, err := Normalize(n.Type, n.Default)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Path, err)
		}
		return v, nil
	}
	v := DefaultValue(n.Type)
	if v == nil {
		return nil, fmt.Errorf("%s: its zero value is too large to hold (see DefaultValue)", n.Path)
	}
	return v, nil
}

// locate walks path through the tree's value. It returns the type at path,
// the value there, and a function that replaces it.
func (d *DataTree) locate(path string) (*servicefile.Type, any, func(any), error) {
	t, cur := d.typ, d.root
	set := func(v any) { d.root = v }
	if path == "" {
		return t, cur, set, nil
	}
	walked := ""
	for _, seg := range strings.Split(path, ".") {
		where := walked
		if where == "" {
			where = "the data tree"
		}
		switch t.Kind {
		case servicefile.Struct:
			f := t.Field(seg)
			if f == nil {
				return nil, nil, nil, fmt.Errorf("%s has no %s (it has: %s)", where, strconv.Quote(seg), fieldNames(t))
			}
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, nil, nil, fmt.Errorf("internal: %s holds a %T, not a struct", where, cur)
			}
			t, cur = f.Type, m[seg]
			set = func(v any) { m[seg] = v }
		case servicefile.List:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || strconv.Itoa(i) != seg {
				return nil, nil, nil, fmt.Errorf("%s is a list (%s): %s is not an index (a decimal number without sign or leading zeros)", where, t, strconv.Quote(seg))
			}
			l, ok := cur.([]any)
			if !ok {
				return nil, nil, nil, fmt.Errorf("internal: %s holds a %T, not a list", where, cur)
			}
			if i >= len(l) {
				return nil, nil, nil, fmt.Errorf("index %d is out of range: the list %s has %d elements (set the whole list to change its length)", i, where, len(l))
			}
			t, cur = t.Elem, l[i]
			set = func(v any) { l[i] = v }
		default:
			return nil, nil, nil, fmt.Errorf("%s is a %s, which has no %s", where, t, strconv.Quote(seg))
		}
		if walked == "" {
			walked = seg
		} else {
			walked += "." + seg
		}
	}
	return t, cur, set, nil
}

// Type is the type of the whole tree.
func (d *DataTree) Type() *servicefile.Type { return d.typ }

// TypeAt is the type of the node at path.
func (d *DataTree) TypeAt(path string) (*servicefile.Type, error) {
	t, _, _, err := d.locate(path)
	return t, err
}

// Set checks v against the type at path, stores a copy and returns its
// encoding.
func (d *DataTree) Set(path string, v any) ([]byte, error) {
	t, _, put, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	enc, err := AppendValue(nil, t, v)
	if err != nil {
		return nil, err
	}
	if d.MaxValueSize > 0 && len(enc) > d.MaxValueSize {
		return nil, fmt.Errorf("the value takes %d bytes, more than a message carries (%d)", len(enc), d.MaxValueSize)
	}
	cp, err := DecodeValue(t, enc)
	if err != nil {
		return nil, fmt.Errorf("internal: a value encoded for %s does not decode: %w", t, err)
	}
	put(cp)
	return enc, nil
}

// SetEncoded stores an encoded value at path (an update received from a
// plugin, or a value restored from storage).
func (d *DataTree) SetEncoded(path string, enc []byte) error {
	t, _, put, err := d.locate(path)
	if err != nil {
		return err
	}
	v, err := DecodeValue(t, enc)
	if err != nil {
		return err
	}
	put(v)
	return nil
}

// Lookup returns the type at path and the value there, not copied: the
// caller must not modify it, nor keep it past its next call on the tree.
func (d *DataTree) Lookup(path string) (*servicefile.Type, any, error) {
	t, v, _, err := d.locate(path)
	return t, v, err
}

// Get returns a copy of the value at path.
func (d *DataTree) Get(path string) (any, error) {
	t, v, _, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	enc, err := AppendValue(nil, t, v)
	if err != nil {
		return nil, fmt.Errorf("internal: the value of %s does not encode: %w", dataPathName(path), err)
	}
	return DecodeValue(t, enc)
}

// Encoded returns the encoding of the value at path.
func (d *DataTree) Encoded(path string) ([]byte, error) {
	t, v, _, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	return AppendValue(nil, t, v)
}

func fieldNames(t *servicefile.Type) string {
	if len(t.Fields) == 0 {
		return "nothing"
	}
	var names []string
	for i, f := range t.Fields {
		if i == 10 {
			names = append(names, "...")
			break
		}
		names = append(names, f.Name)
	}
	return strings.Join(names, ", ")
}

func dataPathName(path string) string {
	if path == "" {
		return "the whole data tree"
	}
	return path
}
