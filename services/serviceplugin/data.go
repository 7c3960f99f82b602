package serviceplugin

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bearerkit/connect/services"
	"github.com/bearerkit/connect/services/servicefile"
)

// dataTree is a service's runtime data: one value of the tree's type (the
// anonymous struct of the top-level nodes), held in the canonical Go
// representation of package services and owned by the tree: values are
// copied in (by encoding and decoding them) and out, so no caller ever
// shares a map or slice with it. Not safe for concurrent use; Service.mu
// guards it.
type dataTree struct {
	typ  *servicefile.Type
	root any
}

// newDataTree builds the tree's initial value: every value at its default,
// every list empty.
func newDataTree(root *servicefile.DataNode) (*dataTree, error) {
	v, err := initialValue(root)
	if err != nil {
		return nil, err
	}
	return &dataTree{typ: root.Type, root: v}, nil
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
		v, err := services.Normalize(n.Type, n.Default)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.Path, err)
		}
		return v, nil
	}
	v := services.DefaultValue(n.Type)
	if v == nil {
		return nil, fmt.Errorf("%s: its zero value is too large to hold (see services.DefaultValue)", n.Path)
	}
	return v, nil
}

// locate walks path through the tree's value. It returns the type at path,
// the value there, and a function that replaces it.
func (d *dataTree) locate(path string) (*servicefile.Type, any, func(any), error) {
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

// set checks v against the type at path, stores a copy and returns its
// encoding.
func (d *dataTree) set(path string, v any) ([]byte, error) {
	t, _, put, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	enc, err := services.AppendValue(nil, t, v)
	if err != nil {
		return nil, err
	}
	if len(enc) > MaxPayload {
		return nil, fmt.Errorf("the value takes %d bytes, more than a message carries (%d)", len(enc), MaxPayload)
	}
	cp, err := services.DecodeValue(t, enc)
	if err != nil {
		return nil, fmt.Errorf("internal: a value encoded for %s does not decode: %w", t, err)
	}
	put(cp)
	return enc, nil
}

// setEncoded stores an encoded value at path (a value the host restores).
func (d *dataTree) setEncoded(path string, enc []byte) error {
	t, _, put, err := d.locate(path)
	if err != nil {
		return err
	}
	v, err := services.DecodeValue(t, enc)
	if err != nil {
		return err
	}
	put(v)
	return nil
}

// get returns a copy of the value at path.
func (d *dataTree) get(path string) (any, error) {
	t, v, _, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	enc, err := services.AppendValue(nil, t, v)
	if err != nil {
		return nil, fmt.Errorf("internal: the value of %s does not encode: %w", pathName(path), err)
	}
	return services.DecodeValue(t, enc)
}

// encoded returns the encoding of the value at path.
func (d *dataTree) encoded(path string) ([]byte, error) {
	t, v, _, err := d.locate(path)
	if err != nil {
		return nil, err
	}
	return services.AppendValue(nil, t, v)
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
