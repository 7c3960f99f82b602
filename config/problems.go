package config

import "github.com/bearerkit/connect/internal/xmlpos"

// Problem is one thing wrong with a configuration file, located by file and
// line. Its String method gives "file:line: message". Service files report
// the same type, so that `connectserver check` lists both alike.
type Problem = xmlpos.Problem

// Problems is every problem found in a configuration. Load and Parse return
// it as their error, so that all problems are reported at once rather than
// only the first. Error gives one "file:line: message" line per problem.
type Problems = xmlpos.Problems

// maxDepth bounds element nesting. A server configuration is three levels
// deep; anything much deeper is a mistake, and the bound keeps hostile input
// from costing stack or memory.
const maxDepth = 32

// oneLine keeps a message on one line whatever values it quotes (a path
// taken from the file may hold a newline), so that every problem stays one
// "file:line: message" line.
func oneLine(msg string) string { return xmlpos.OneLine(msg) }

// quoteShort quotes s for a message, shortened to a readable length.
func quoteShort(s string) string { return xmlpos.Quote(s) }

func isXMLSpace(r rune) bool { return xmlpos.IsSpace(r) }
