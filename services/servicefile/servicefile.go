// Package servicefile reads XML service files: the one file per service that
// declares its name and version, its custom types, methods, events and
// runtime data, its routing and its peer-to-peer endpoints (the schema is
// docs/SERVICES.md).
//
// Load and Parse check everything a service file can get wrong on its own
// (unknown elements and attributes, missing attributes, bad names and
// versions, duplicate names, unknown and recursive types, defaults that do
// not fit their type, persistent on something that is not runtime data,
// routes to unknown links or resources, a resource routed twice) and report
// every problem at once as Problems, one "file:line: message" per problem.
// On success they return a *Service: the model the rest of Connect builds
// on (the service SDK, the value codec, sessions, the routing resolver, the
// HTTP API). Every part of it keeps the line it came from.
//
// Routing is validated for shape only: that a route's bearer is offered by
// the runner, or that a direct link can be opened, is decided when the
// routing package resolves the declaration for a session.
//
// The package is for server, runner and plugin alike: it imports nothing of
// Connect but the bearer contract and the shared XML reader. Inputs are bounded (file size, element
// nesting, counts of every kind, type nesting), so a hostile file costs
// little and gets a clear error.
package servicefile

import (
	"fmt"
	"io"
	"os"

	"github.com/bearerkit/connect/internal/xmlpos"
)

// Problem is one thing wrong with a service file: File, Line (1-based; 0
// when the file could not be read) and Msg. String gives
// "file:line: message". It is the type the server configuration
// reports too (config.Problem), so both can be listed together.
type Problem = xmlpos.Problem

// Problems is every problem found in a service file, sorted by line. Load and
// Parse return it as their error; Error gives one "file:line: message" line
// per problem.
type Problems = xmlpos.Problems

// MaxFileSize is the largest service file Load and Parse accept.
const MaxFileSize = 1 << 20

// Load reads and parses the service file at path. It returns the validated
// Service, or a nil Service and Problems.
func Load(path string) (*Service, error) {
	fail := func(err error) (*Service, error) {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		return nil, Problems{{File: path, Msg: xmlpos.OneLine(fmt.Sprintf("cannot read service file: %v", err))}}
	}
	// Only regular files: a FIFO or a device named by mistake must not
	// block or flood the reader.
	fi, err := os.Stat(path)
	if err != nil {
		return fail(err)
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("not a regular file"))
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return fail(err)
	}
	return Parse(path, data)
}

// Parse parses a service file held in memory; file names it in problems. It
// returns the validated Service, or a nil Service and Problems listing every
// problem found, sorted by line. It never panics, whatever data holds.
func Parse(file string, data []byte) (*Service, error) {
	p := newParser(file, data)
	if p.doc.Root() != nil {
		p.service(p.doc.Root())
	}
	if err := p.doc.Err(); err != nil {
		return nil, err
	}
	return p.s, nil
}
