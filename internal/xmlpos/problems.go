// Package xmlpos reads Connect's XML files (the server configuration, service
// files, routing documents) so that every element knows the line it is on,
// and collects what is wrong with a file as Problems, one
// "file:line: message" per problem, all of them at once.
//
// github.com/beevik/etree builds the tree but does not record positions, so
// Read makes a second pass over the same bytes with encoding/xml's tokenizer
// and matches the etree elements to the start tags it saw by document order
// (both parsers read the same start elements from the same tokenizer). The
// pass also bounds nesting depth and rejects everything but UTF-8.
//
// On top of that, Node offers the checks every schema needs, with the same
// wording everywhere: unknown and repeated attributes (listing the known
// ones), required attributes, unknown child elements, elements that may
// appear only once, and text where only attributes belong.
package xmlpos

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a file, located by file and line.
type Problem struct {
	// File is the file's name as it was given to the loader.
	File string
	// Line is the 1-based line the problem is on. It is 0 only when the
	// problem concerns the file as a whole (for example: it cannot be read).
	Line int
	// Msg says what is wrong, naming the element and attribute.
	Msg string
}

// String formats the problem as "file:line: message", the form editors and
// compilers use, or "file: message" when Line is 0.
func (p Problem) String() string {
	if p.Line <= 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Problems is every problem found in a file. Loaders return it as their
// error, so that all problems are reported at once rather than only the
// first.
type Problems []Problem

// Error returns one "file:line: message" line per problem, joined with "\n".
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Sort orders problems by file and line, keeping the order in which problems
// on the same line were found.
func (ps Problems) Sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].File != ps[j].File {
			return ps[i].File < ps[j].File
		}
		return ps[i].Line < ps[j].Line
	})
}

// lineBreaks escapes the characters that would split a message over lines.
var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// OneLine keeps a message on one line whatever values it quotes (a value
// taken from the file may hold a newline), so that every problem stays one
// "file:line: message" line.
func OneLine(msg string) string { return lineBreaks.Replace(msg) }

// Quote quotes s for a message, trimmed of surrounding white space and
// shortened to 40 characters, so that a huge value cannot make a huge
// message.
func Quote(s string) string {
	s = strings.TrimSpace(s)
	const max = 40
	n := 0
	for i := range s {
		if n == max {
			s = s[:i] + "..."
			break
		}
		n++
	}
	return fmt.Sprintf("%q", s)
}

// IsSpace reports whether r is XML white space.
func IsSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }

func isSpaceByte(b byte) bool { return b == ' ' || b == '\t' || b == '\r' || b == '\n' }
