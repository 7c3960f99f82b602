// Package services is the service contract and values: what every service,
// built in or plugin, and every client has in common. Its subpackages are
// the service-file model (servicefile), the plugin SDK (serviceplugin) and
// the built-in services.
//
// The values part of the package is the value codec: how a value of a type
// declared in a service file (a method argument, a return value, an event
// argument, a node of runtime data) is held in Go, checked, encoded for the
// wire, written as JSON for the HTTP API and as text for the command line.
// Every side (server, client, plugin SDK, connectclient) uses it, so all
// agree to the byte. The specification, with the byte layout, is the
// "Values" section of docs/SERVICES.md.
//
//	Check, Normalize             is v a value of t; its canonical form
//	AppendValue, DecodeValue     binary encoding
//	AppendArgs, DecodeArgs       a method's or event's arguments
//	MarshalJSON, UnmarshalJSON   typed JSON (HTTP API)
//	ParseText, FormatText        text (command line, query arguments)
//	DefaultValue                 a new zero value
//
// # Go values
//
// A value of a servicefile.Type is held as the Go value of its Kind:
//
//	int     int64
//	float   float64 (finite: NaN and ±Inf are not float values)
//	bool    bool
//	string  string (valid UTF-8)
//	binary  []byte
//	T[]     []any, each element a value of T
//	struct  map[string]any with exactly one entry per field, keyed by name
//
// That is the canonical representation: DecodeValue, DecodeArgs,
// UnmarshalJSON, ParseText, Normalize and DefaultValue return it, with
// non-nil empty lists ([]any{}) and byte slices ([]byte{}), so that
// reflect.DeepEqual compares values and encoding/json writes [] rather than
// null.
//
// Check, Normalize, AppendValue, AppendArgs, MarshalJSON and FormatText also
// take convenient Go values, converted as Normalize documents: integers of
// any width for int (and for float when exact), float32 for float,
// json.Number, named types whose underlying type fits (type Mode string),
// any slice or array for a list, any byte slice or byte array for binary,
// any map with string keys for a struct. Nothing else is guessed: a float is
// never an int, a string never a number, a Go struct never a struct value.
// A struct value needs every field, on encode as on decode: a missing field
// is an error, never a silent zero, and so is a key that is not a field.
//
// # Errors and limits
//
// Every function reports a bad value with an *Error that says what was being
// done, where in the value (a path such as args.position[3].x) and, for
// bytes and JSON, at which offset; it wraps one of the sentinel errors
// (ErrType, ErrRange, ErrInvalid, ...) for errors.Is. No input makes a
// function panic. Decoders never allocate from a length or count they read
// beyond what the rest of the input can hold, nest at most MaxDepth levels,
// and accept at most MaxEmptyValues struct values that carry no data (which
// take no bytes, so that the input cannot bound their number).
//
// Types come from servicefile.Parse, which guarantees finite type trees; a
// hand-built *servicefile.Type that is nil, has an unknown Kind or a list
// without an element type is reported as ErrBadType, and one that contains
// itself stops at MaxDepth.
package services
