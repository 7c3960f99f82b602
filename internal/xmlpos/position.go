package xmlpos

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// tagSpan is the byte range of one start tag, from its "<" to just after its
// ">" (or "/>").
type tagSpan struct {
	start, end int
	local      string // the element's local name, to check the matching
}

// positions knows where things are in the raw bytes of a document: the line
// of every byte offset, and the span of every start tag in document order.
type positions struct {
	data     []byte
	newlines []int // offsets of every '\n', ascending
	tags     []tagSpan
}

func newPositions(data []byte) *positions {
	p := &positions{data: data}
	for i, b := range data {
		if b == '\n' {
			p.newlines = append(p.newlines, i)
		}
	}
	return p
}

// line returns the 1-based line of a byte offset.
func (p *positions) line(off int) int {
	// The number of newlines strictly before off, plus one.
	return sort.SearchInts(p.newlines, off) + 1
}

// scanResult is what the position pass learned beyond the tag spans.
type scanResult struct {
	// fatal is set when the document is not well-formed XML or is nested
	// too deep; nothing else can be trusted then.
	fatal *Problem
	// problems are structural problems found while scanning a well-formed
	// document (a second root element, text outside the root).
	problems []Problem
	// root is true when the document has a root element.
	root bool
}

// scan tokenizes the document with encoding/xml, recording every start tag's
// span. It stops at the first syntax error, which it reports at the line the
// tokenizer was on.
func (p *positions) scan(file string, opt Options) scanResult {
	var res scanResult
	dec := xml.NewDecoder(bytes.NewReader(p.data))
	dec.Strict = true
	dec.CharsetReader = CharsetReader
	depth := 0
	textReported := false
	for {
		off := int(dec.InputOffset())
		tok, err := dec.Token()
		if err == io.EOF {
			return res
		}
		if err != nil {
			res.fatal = p.syntaxProblem(file, dec, err)
			return res
		}
		switch t := tok.(type) {
		case xml.StartElement:
			p.tags = append(p.tags, tagSpan{start: off, end: int(dec.InputOffset()), local: t.Name.Local})
			if depth == 0 {
				if res.root {
					res.problems = append(res.problems, Problem{File: file, Line: p.line(off),
						Msg: fmt.Sprintf("second root element <%s>; %s has one <%s> element", t.Name.Local, opt.What, opt.Root)})
				}
				res.root = true
			}
			depth++
			if depth > opt.MaxDepth {
				res.fatal = &Problem{File: file, Line: p.line(off),
					Msg: fmt.Sprintf("elements nested more than %d deep", opt.MaxDepth)}
				return res
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && !textReported {
				if i := bytes.IndexFunc(t, func(r rune) bool { return !IsSpace(r) }); i >= 0 {
					textReported = true
					res.problems = append(res.problems, Problem{File: file, Line: p.line(off + i),
						Msg: OneLine(fmt.Sprintf("text %s outside the <%s> element", Quote(string(t[i:])), opt.Root))})
				}
			}
		}
	}
}

// syntaxProblem turns a tokenizer error into a Problem at the line where it
// happened.
func (p *positions) syntaxProblem(file string, dec *xml.Decoder, err error) *Problem {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		line := se.Line
		if line < 1 {
			line = 1
		}
		return &Problem{File: file, Line: line, Msg: OneLine("XML syntax error: " + se.Msg)}
	}
	off := int(dec.InputOffset())
	if off > len(p.data) {
		off = len(p.data)
	}
	return &Problem{File: file, Line: p.line(off), Msg: OneLine(strings.TrimPrefix(err.Error(), "xml: "))}
}

// CharsetReader accepts only encodings that are UTF-8 already. encoding/xml
// handles a declared "UTF-8" itself and asks for anything else.
func CharsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	}
	return nil, errors.New("not supported; save the file as UTF-8 and declare encoding=\"UTF-8\"")
}

// attrOffsets finds where each attribute of a start tag begins. It reads the
// raw tag, which the tokenizer has already accepted as well-formed, and
// returns the offsets of every occurrence of each attribute name as written
// (with its prefix, if any). It never reads outside the span.
func (p *positions) attrOffsets(span tagSpan) map[string][]int {
	if span.start < 0 || span.end > len(p.data) || span.start >= span.end {
		return nil
	}
	b := p.data[span.start:span.end]
	out := map[string][]int{}
	i := 1 // skip '<'
	for i < len(b) && !isSpaceByte(b[i]) && b[i] != '/' && b[i] != '>' {
		i++
	}
	for {
		for i < len(b) && isSpaceByte(b[i]) {
			i++
		}
		if i >= len(b) || b[i] == '/' || b[i] == '>' {
			return out
		}
		nameStart := i
		for i < len(b) && !isSpaceByte(b[i]) && b[i] != '=' {
			i++
		}
		name := string(b[nameStart:i])
		for i < len(b) && isSpaceByte(b[i]) {
			i++
		}
		if i >= len(b) || b[i] != '=' {
			return out
		}
		i++
		for i < len(b) && isSpaceByte(b[i]) {
			i++
		}
		if i >= len(b) || (b[i] != '"' && b[i] != '\'') {
			return out
		}
		q := b[i]
		i++
		j := bytes.IndexByte(b[i:], q)
		if j < 0 {
			return out
		}
		i += j + 1
		out[name] = append(out[name], span.start+nameStart)
	}
}
