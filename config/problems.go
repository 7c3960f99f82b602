package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration file, located by file and
// line.
type Problem struct {
	// File is the configuration file's name as it was given to Load or Parse.
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

// Problems is every problem found in a configuration. Load and Parse return
// it as their error, so that all problems are reported at once rather than
// only the first.
type Problems []Problem

// Error returns one "file:line: message" line per problem, joined with "\n".
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortByLine orders problems by line, keeping the order in which problems on
// the same line were found.
func (ps Problems) sortByLine() {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}

// lineBreaks escapes the characters that would split a message over lines.
var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// oneLine keeps a message on one line whatever values it quotes (a path
// taken from the file may hold a newline), so that every problem stays one
// "file:line: message" line.
func oneLine(msg string) string { return lineBreaks.Replace(msg) }
