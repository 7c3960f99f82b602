package servicefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bearerkit/connect/bearers"
	"github.com/bearerkit/connect/internal/testutil"
)

const exampleFile = "../../examples/xml/mediaplayer.xml"

// problemLines returns the "file:line: message" lines of a Parse/Load error,
// failing the test if err is not Problems.
func problemLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want problems")
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is %T, want Problems: %v", err, err)
	}
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	if err.Error() != strings.Join(lines, "\n") {
		t.Errorf("Error() = %q, want the problems joined by newlines", err.Error())
	}
	return lines
}

// Type constructors for expected models.
func scalar(k Kind, line int) *Type   { return &Type{Kind: k, Line: line} }
func list(elem *Type, line int) *Type { return &Type{Kind: List, Elem: elem, Line: line} }

func TestExample(t *testing.T) {
	s, err := Load(exampleFile)
	if err != nil {
		t.Fatalf("the example does not load:\n%v", err)
	}

	playlist := &Type{Kind: Struct, Name: "Playlist", Line: 11}
	track := &Type{Kind: Struct, Name: "Track", Description: "One playable track.", Line: 15}
	spectrum := &Type{Kind: Struct, Name: "Spectrum", Description: "Band levels per channel.", Line: 23}
	playlist.Fields = []*Field{
		{Name: "name", Type: scalar(String, 12), Line: 12},
		{Name: "tracks", Type: list(track, 13), Line: 13},
	}
	track.Fields = []*Field{
		{Name: "id", Type: scalar(Int, 16), Line: 16},
		{Name: "title", Type: scalar(String, 17), Line: 17},
		{Name: "artist", Type: scalar(String, 18), Line: 18},
		{Name: "duration", Type: scalar(Float, 19), Description: "Seconds.", Line: 19},
		{Name: "tags", Type: list(scalar(String, 20), 20), Line: 20},
		{Name: "cover", Type: scalar(Binary, 21), Description: "A PNG thumbnail.", Line: 21},
	}
	spectrum.Fields = []*Field{
		{Name: "levels", Type: list(list(scalar(Float, 24), 24), 24), Description: "levels[channel][band], in dB.", Line: 24},
	}

	player := &DataNode{Kind: ObjectNode, Name: "player", Path: "player", Line: 56, Type: &Type{Kind: Struct, Line: 56},
		Children: []*DataNode{
			{Kind: ValueNode, Name: "state", Path: "player.state", Type: scalar(String, 57), Default: "stopped", Line: 57},
			{Kind: ValueNode, Name: "volume", Path: "player.volume", Type: scalar(Int, 58), Default: int64(50), Persistent: true, Line: 58},
			{Kind: ValueNode, Name: "muted", Path: "player.muted", Type: scalar(Bool, 59), Default: false, Persistent: true, Line: 59},
			{Kind: ValueNode, Name: "position", Path: "player.position", Type: scalar(Float, 60), Default: 0.0,
				Description: "Seconds into the current track.", Line: 60},
			{Kind: ValueNode, Name: "current", Path: "player.current", Type: track, Line: 61},
			{Kind: ListNode, Name: "queue", Path: "player.queue", Type: list(track, 62), Line: 62},
		}}
	settings := &DataNode{Kind: ObjectNode, Name: "settings", Path: "settings", Persistent: true,
		Description: "Everything here survives restarts.", Line: 64, Type: &Type{Kind: Struct, Line: 64},
		Children: []*DataNode{
			{Kind: ValueNode, Name: "deviceName", Path: "settings.deviceName", Type: scalar(String, 65), Default: "living room", Persistent: true, Line: 65},
			{Kind: ValueNode, Name: "maxVolume", Path: "settings.maxVolume", Type: scalar(Int, 66), Default: int64(9223372036854775807), Persistent: true, Line: 66},
			{Kind: ValueNode, Name: "balance", Path: "settings.balance", Type: scalar(Float, 67), Default: -0.25, Persistent: true, Line: 67},
			{Kind: ValueNode, Name: "startupChime", Path: "settings.startupChime", Type: scalar(Binary, 68),
				Default: []byte("RIFF$\x00\x00\x00WAVE"), Persistent: true, Line: 68},
			{Kind: ListNode, Name: "favourites", Path: "settings.favourites", Type: list(playlist, 69), Persistent: true, Line: 69},
		}}
	root := &DataNode{Kind: ObjectNode, Line: 55, Type: &Type{Kind: Struct, Line: 55}, Children: []*DataNode{
		player, settings,
		{Kind: ValueNode, Name: "spectrum", Path: "spectrum", Type: spectrum, Line: 71},
		{Kind: ListNode, Name: "peaks", Path: "peaks", Type: list(list(scalar(Int, 72), 72), 72),
			Description: "Recent peak levels per channel: a list of lists.", Line: 72},
	}}
	// An object's type has its children as fields.
	for _, obj := range []*DataNode{root, player, settings} {
		for _, c := range obj.Children {
			obj.Type.Fields = append(obj.Type.Fields, &Field{Name: c.Name, Type: c.Type, Description: c.Description, Line: c.Line})
		}
	}

	want := &Service{
		Name:        "example.mediaplayer",
		Version:     "1.2.0",
		Description: "Plays tracks from a queue and publishes what it is doing.",
		Types:       []*Type{playlist, track, spectrum},
		Methods: []*Method{
			{Name: "play", Returns: scalar(Bool, 28), Description: "Plays a track now.", Line: 28, Args: []*Field{
				{Name: "track", Type: track, Line: 29},
				{Name: "position", Type: scalar(Float, 30), Description: "Where to start, in seconds.", Line: 30},
			}},
			{Name: "pause", Line: 32},
			{Name: "enqueue", Returns: scalar(Int, 33), Description: "Appends tracks to the queue; returns its new length.", Line: 33,
				Args: []*Field{{Name: "tracks", Type: list(track, 34), Line: 34}}},
			{Name: "loadPlaylist", Returns: playlist, Line: 36, Args: []*Field{{Name: "name", Type: scalar(String, 37), Line: 37}}},
			{Name: "setEqualizer", Line: 39, Args: []*Field{
				{Name: "gains", Type: list(list(scalar(Float, 40), 40), 40), Description: "gains[channel][band]", Line: 40},
				{Name: "enabled", Type: scalar(Bool, 41), Line: 41},
			}},
		},
		Events: []*Event{
			{Name: "trackChanged", Description: "Sent when a new track starts.", Line: 45, Args: []*Field{
				{Name: "track", Type: track, Line: 46},
				{Name: "queueLength", Type: scalar(Int, 47), Line: 47},
			}},
			{Name: "error", Line: 49, Args: []*Field{
				{Name: "message", Type: scalar(String, 50), Line: 50},
				{Name: "code", Type: scalar(Int, 51), Line: 51},
			}},
		},
		Data: root,
		Routing: &Routing{
			Description: "Control through the server, media data direct.",
			Line:        76,
			Links: []*Link{{Name: "secure", Bearer: "connect.bearer.ssl", Endpoint: bearers.MustParseEndpoint("ssl://127.0.0.1:9701"),
				Description: "A TLS link for the methods that carry personal data.", Line: 77}},
			Routes: []*Route{
				{Resource: Resource{MethodResource, All}, Line: 79, Alternatives: []Alternative{{Link: LinkServer, LinkType: Server, Line: 79}}},
				{Resource: Resource{MethodResource, "play"}, Line: 80, Alternatives: []Alternative{{Link: LinkReliable, LinkType: Direct, Line: 80}}},
				{Resource: Resource{MethodResource, "loadPlaylist"}, Line: 81, Alternatives: []Alternative{{Link: "secure", LinkType: Direct, Line: 81}}},
				{Resource: Resource{EventResource, All}, Line: 82, Alternatives: []Alternative{{Link: LinkServer, LinkType: Server, Line: 82}}},
				{Resource: Resource{DataResource, "player.position"}, Line: 83,
					Alternatives: []Alternative{{Link: LinkUnreliable, LinkType: DirectAndServer, Line: 83}}},
				{Resource: Resource{DataResource, "spectrum"}, Line: 84, Alternatives: []Alternative{
					{Link: LinkUnreliable, LinkType: Direct, Line: 85},
					{Link: LinkReliable, LinkType: Direct, Bearer: "connect.bearer.tcp", Line: 86},
					{Link: LinkServer, LinkType: Server, Line: 87},
				}},
			},
		},
		Endpoints: []*Endpoint{
			{Address: bearers.MustParseEndpoint("tcp://127.0.0.1:9700"), Description: "reliable links", Line: 93},
			{Address: bearers.MustParseEndpoint("udp://127.0.0.1:9700"), Description: "unreliable links", Line: 94},
		},
		File: exampleFile,
		Line: 7,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("the example's model differs from the expected one")
		compare(t, "Service", reflect.ValueOf(s), reflect.ValueOf(want))
	}

	// Every use of a custom type is the declared *Type itself.
	if s.Method("play").Args[0].Type != s.Type("Track") || s.Data.Lookup("player.queue").Type.Elem != s.Type("Track") ||
		s.Type("Playlist").Field("tracks").Type.Elem != s.Type("Track") || s.Method("loadPlaylist").Returns != s.Type("Playlist") {
		t.Error("custom types are not shared")
	}
}

// compare reports the first differences between two values, by path, so
// that a failing model comparison says where.
func compare(t *testing.T, path string, got, want reflect.Value) {
	t.Helper()
	if got.Kind() != want.Kind() {
		t.Errorf("%s: kind %v, want %v", path, got.Kind(), want.Kind())
		return
	}
	switch got.Kind() {
	case reflect.Pointer, reflect.Interface:
		if got.IsNil() || want.IsNil() {
			if got.IsNil() != want.IsNil() {
				t.Errorf("%s: got %v, want %v", path, got, want)
			}
			return
		}
		compare(t, path, got.Elem(), want.Elem())
	case reflect.Struct:
		for i := 0; i < got.NumField(); i++ {
			compare(t, path+"."+got.Type().Field(i).Name, got.Field(i), want.Field(i))
		}
	case reflect.Slice:
		if got.Len() != want.Len() {
			t.Errorf("%s: %d elements, want %d", path, got.Len(), want.Len())
		}
		for i := 0; i < min(got.Len(), want.Len()); i++ {
			compare(t, fmt.Sprintf("%s[%d]", path, i), got.Index(i), want.Index(i))
		}
	default:
		if !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("%s = %#v, want %#v", path, got.Interface(), want.Interface())
		}
	}
}

// TestBadFiles checks the exact problems reported for each file in
// testdata/bad: several problems in one file, all reported, sorted by line.
func TestBadFiles(t *testing.T) {
	tests := map[string][]string{
		"service.xml": {
			`testdata/bad/service.xml:2: service attribute "name": "media player" is not a service name (dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters, like mediaplayer or com.example.player)`,
			`testdata/bad/service.xml:2: service attribute "version": "1.02" is not a version (MAJOR.MINOR or MAJOR.MINOR.PATCH, decimal numbers without leading zeros, like 1.0 or 2.3.1)`,
			`testdata/bad/service.xml:2: service has text "Plays music."; settings are given as attributes`,
			`testdata/bad/service.xml:3: service attribute "owner" unknown (known: name, version, description)`,
			`testdata/bad/service.xml:5: service element <description> unknown (known: struct, method, event, data, routing, endpoints)`,
			`testdata/bad/service.xml:7: data given twice (first at line 6); only one is allowed`,
		},
		"required.xml": {
			`testdata/bad/required.xml:1: service attribute "name" is required`,
			`testdata/bad/required.xml:1: service attribute "version" is required`,
			`testdata/bad/required.xml:2: method[1] attribute "name" is required`,
			`testdata/bad/required.xml:3: method[2] attribute "name": "" is not a name (a letter or _ followed by letters, digits and _, at most 64 characters)`,
			`testdata/bad/required.xml:4: method[2]/arg[1] attribute "name" is required`,
			`testdata/bad/required.xml:4: method[2]/arg[1] attribute "type" is required`,
			`testdata/bad/required.xml:6: event[1] attribute "name": "9lives" is not a name (a letter or _ followed by letters, digits and _, at most 64 characters)`,
			`testdata/bad/required.xml:7: struct[1] attribute "name" is required`,
		},
		"types.xml": {
			`testdata/bad/types.xml:4: struct Track/field title declared twice (first at line 3)`,
			`testdata/bad/types.xml:5: struct Track/field album: struct Track contains itself (Track.album -> Album.tracks -> Track); a type cannot contain itself, not even through a list`,
			`testdata/bad/types.xml:6: struct Track/field rating attribute "type": unknown type "Rating" (known: int, float, bool, string, binary, Track, Album, Tree, Shapes)`,
			`testdata/bad/types.xml:7: struct Track/field tags attribute "repeated": "yes" is not true or false`,
			`testdata/bad/types.xml:12: struct Track declared twice (first at line 2)`,
			`testdata/bad/types.xml:13: struct int: "int" is a built-in name; choose another`,
			`testdata/bad/types.xml:15: struct Tree/field children: struct Tree contains itself (Tree.children -> Tree); a type cannot contain itself, not even through a list`,
			`testdata/bad/types.xml:18: struct Shapes/field a attribute "type": "int[][][][][][][][][]": lists nested more than 8 deep`,
			`testdata/bad/types.xml:19: struct Shapes/field b attribute "type": "int[][][][][][][][]": lists nested more than 8 deep`,
			`testdata/bad/types.xml:20: struct Shapes/field c attribute "type": "[]int" is not a type (a type name such as int or Track, followed by [] for each level of list)`,
			`testdata/bad/types.xml:21: struct Shapes/field d attribute "type": "int []" is not a type (a type name such as int or Track, followed by [] for each level of list)`,
			`testdata/bad/types.xml:22: struct Shapes/field e attribute "type" is empty`,
			`testdata/bad/types.xml:23: struct Shapes/field f attribute "type": "list" is not a type; write T[] for a list of T, like int[], or repeated="true"`,
			`testdata/bad/types.xml:24: struct Shapes/field g attribute "type": object is runtime data (<object> in <data>), not a type; declare a <struct>`,
			`testdata/bad/types.xml:25: struct Shapes/field h attribute "type": unknown type "Int" (known: int, float, bool, string, binary, Track, Album, Tree, Shapes)`,
		},
		"methods.xml": {
			`testdata/bad/methods.xml:6: method move attribute "returns": unknown type "Pointt" (known: int, float, bool, string, binary, Point)`,
			`testdata/bad/methods.xml:7: method move/arg to attribute "persistent" unknown (known: name, type, repeated, description); persistent is set on <value>, <list> and <object> in <data>`,
			`testdata/bad/methods.xml:8: method move/arg to declared twice (first at line 7)`,
			`testdata/bad/methods.xml:9: method move/arg speed attribute "default" unknown (known: name, type, repeated, description); defaults are set on <value>s in <data>`,
			`testdata/bad/methods.xml:11: method move element <argument> unknown (known: arg)`,
			`testdata/bad/methods.xml:13: method move declared twice (first at line 6)`,
			`testdata/bad/methods.xml:14: method stop attribute "returns" is empty`,
			`testdata/bad/methods.xml:14: method stop has text "Stops."; settings are given as attributes`,
			`testdata/bad/methods.xml:17: event moved attribute "returns" unknown (known: name, description)`,
			`testdata/bad/methods.xml:19: event moved/arg when attribute "type" is required`,
			`testdata/bad/methods.xml:21: event moved declared twice (first at line 17)`,
			`testdata/bad/methods.xml:22: event moved/arg[1] attribute "name" is required`,
		},
		"data.xml": {
			`testdata/bad/data.xml:5: data attribute "persistent" unknown (known: description); persistent is set on <value>, <list> and <object> in <data>`,
			`testdata/bad/data.xml:6: data i attribute "default": "abc" is not an int (a decimal integer, like -42)`,
			`testdata/bad/data.xml:7: data big attribute "default": "9223372036854775808" is out of range for int (-9223372036854775808 to 9223372036854775807)`,
			`testdata/bad/data.xml:8: data f attribute "default": "1,5" is not a float (a decimal number, like 1.5 or -2e10)`,
			`testdata/bad/data.xml:9: data huge attribute "default": "1e309" is out of range for float (a 64-bit IEEE 754 number)`,
			`testdata/bad/data.xml:10: data b attribute "default": "yes" is not a bool (true or false)`,
			`testdata/bad/data.xml:11: data bin attribute "default": "not base64!" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)`,
			`testdata/bad/data.xml:12: data track attribute "default": a value of type Track has no default; defaults are for int, float, bool, string and binary values`,
			`testdata/bad/data.xml:13: data ints attribute "type": "int[]" is a list; declare a list with <list>`,
			`testdata/bad/data.xml:14: data i declared twice (first at line 6)`,
			`testdata/bad/data.xml:15: data queue attribute "default" unknown (known: name, type, persistent, description); defaults are set on <value>s in <data>`,
			`testdata/bad/data.xml:16: data nothing attribute "type" is required`,
			`testdata/bad/data.xml:18: data settings.volume attribute "persistent": false inside the persistent object settings (line 17), where everything is persistent`,
			`testdata/bad/data.xml:20: data settings.deep.x attribute "persistent": "maybe" is not true or false`,
			`testdata/bad/data.xml:21: data settings.deep.x declared twice (first at line 20)`,
			`testdata/bad/data.xml:23: data settings element <field> unknown (known: value, list, object)`,
			`testdata/bad/data.xml:25: data object[2] attribute "name": "bad name" is not a name (a letter or _ followed by letters, digits and _, at most 64 characters)`,
			`testdata/bad/data.xml:26: data object[2].ok attribute "type": unknown type "Nope" (known: int, float, bool, string, binary, Track)`,
		},
		"routing.xml": {
			`testdata/bad/routing.xml:11: routing/link secure declared twice (first at line 10)`,
			`testdata/bad/routing.xml:12: routing/link reliable: "reliable" is a built-in link (server, reliable, unreliable); choose another name`,
			`testdata/bad/routing.xml:13: routing/link odd attribute "bearer": bearer type "Connect.Bearer": character 'C' not allowed (use a-z 0-9 _ -)`,
			`testdata/bad/routing.xml:13: routing/link odd attribute "endpoint": bad endpoint "127.0.0.1:9704": want scheme://host:port, like tcp://127.0.0.1:9500`,
			`testdata/bad/routing.xml:14: routing/link half attribute "bearer" is required`,
			`testdata/bad/routing.xml:14: routing/link half attribute "endpoint" is required`,
			`testdata/bad/routing.xml:16: routing/route[2]: method play is already routed at line 15`,
			`testdata/bad/routing.xml:17: routing/route[3] attribute "method": no method "stop" in the service (methods: play)`,
			`testdata/bad/routing.xml:18: routing/route[4] attribute "linkType": direct_and_server is for runtime data only, not for event changed`,
			`testdata/bad/routing.xml:19: routing/route[5] attribute "link": unknown link "sideways" (known: server, reliable, unreliable, secure, odd, half)`,
			`testdata/bad/routing.xml:20: routing/route[6] attribute "data": no runtime data "player.volume.db": player.volume is a value`,
			`testdata/bad/routing.xml:21: routing/route[7] attribute "data": no runtime data "player.mute" (in player: volume)`,
			`testdata/bad/routing.xml:22: routing/route[8] attribute "data": "player..volume" is not a data path (names separated by dots, like player.volume, or * for all runtime data)`,
			`testdata/bad/routing.xml:23: routing/route[9] attribute "linkType": direct needs a direct link, and link "server" goes through the server`,
			`testdata/bad/routing.xml:24: routing/route[10] attribute "linkType": server goes through the server, and link "unreliable" is direct; leave link out or write link="server"`,
			`testdata/bad/routing.xml:25: routing/route[11]: method and event given; a route names one resource`,
			`testdata/bad/routing.xml:26: routing/route[12]: name what is routed with method="...", event="..." or data="..."`,
			`testdata/bad/routing.xml:27: routing/route[13]: event changed is already routed at line 18`,
			`testdata/bad/routing.xml:27: routing/route[13]: no link; give link="..." or linkType="...", or <alternative> elements`,
			`testdata/bad/routing.xml:28: routing/route[14] attribute "bearer": link secure names its bearer at line 10; leave bearer out here`,
			`testdata/bad/routing.xml:29: routing/route[15]: give link, linkType and bearer on the <route> or on its <alternative>s, not both`,
			`testdata/bad/routing.xml:29: routing/route[15] attribute "linkType": "fast" unknown (known: direct, server, direct_and_server)`,
			`testdata/bad/routing.xml:30: routing/route[15]/alternative[1] attribute "bearer": the server link has no bearer of its own; bearer is for direct links`,
		},
		"alternatives.xml": {
			`testdata/bad/alternatives.xml:9: routing/route[1]/alternative[2]: same link as routing/route[1]/alternative[1] (line 8)`,
			`testdata/bad/alternatives.xml:13: routing/route[1]/alternative[6]: never used: routing/route[1]/alternative[5] (line 12) goes through the server, which always works; put the server last`,
			`testdata/bad/alternatives.xml:14: routing/route[1]/alternative[7]: give link="..." or linkType="..."`,
			`testdata/bad/alternatives.xml:15: routing/route[1]/alternative[8] attribute "linkType": direct_and_server needs a direct link, and link "server" goes through the server`,
			`testdata/bad/alternatives.xml:16: routing/route[1]/alternative[9]: more than 8 alternatives in a route`,
			`testdata/bad/alternatives.xml:19: routing/route[2]/alternative[1] attribute "linkType": direct_and_server is for runtime data only, not for event tick`,
			`testdata/bad/alternatives.xml:20: routing/route[2] element <via> unknown (known: alternative)`,
		},
		"endpoints.xml": {
			`testdata/bad/endpoints.xml:2: endpoints attribute "name" unknown (endpoints has no attributes)`,
			`testdata/bad/endpoints.xml:4: endpoints/endpoint[2] attribute "address": tcp://127.0.0.1:9700 already declared at line 3`,
			`testdata/bad/endpoints.xml:5: endpoints/endpoint[3] attribute "address": bad endpoint "tcp://127.0.0.1": address 127.0.0.1: missing port in address (a port is required)`,
			`testdata/bad/endpoints.xml:6: endpoints/endpoint[4] attribute "address": bad endpoint "udp://:9700": empty host; name an address such as 127.0.0.1 (nothing listens on all interfaces unless you say 0.0.0.0)`,
			`testdata/bad/endpoints.xml:7: endpoints/endpoint[5] attribute "address" is required`,
			`testdata/bad/endpoints.xml:8: endpoints/endpoint[6] has text "udp"; settings are given as attributes`,
			`testdata/bad/endpoints.xml:10: endpoints given twice (first at line 2); only one is allowed`,
		},
		"syntax.xml": {
			`testdata/bad/syntax.xml:4: XML syntax error: element <arg> closed by </method>`,
		},
		"root.xml": {
			`testdata/bad/root.xml:3: root element is <connectserver>, want <service>`,
		},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.xml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := tests[filepath.Base(f)]; !ok {
			t.Errorf("%s has no expected problems in the table", f)
		}
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Load(filepath.Join("testdata", "bad", name))
			if s != nil {
				t.Error("a Service returned together with problems")
			}
			testutil.DiffLines(t, "problem", problemLines(t, err), want)
		})
	}
}

// svc wraps body in a <service> element; body starts on line 2.
func svc(body string) string {
	return "<service name=\"s\" version=\"1.0\">\n" + body + "\n</service>\n"
}

// TestProblems checks one message per case, in documents small enough to
// read in the table.
func TestProblems(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"empty file", ``, []string{`s.xml:1: no <service> element: the file has no elements`}},
		{"second root", svc("") + "<service/>", []string{
			`s.xml:4: second root element <service>; a service file has one <service> element`}},
		{"text outside", svc("") + "\n  words", []string{`s.xml:5: text "words" outside the <service> element`}},
		{"not UTF-8", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<service/>", []string{
			`s.xml:1: opening charset "ISO-8859-1": not supported; save the file as UTF-8 and declare encoding="UTF-8"`}},
		{"nested too deep", "<service name=\"s\" version=\"1\">\n" + strings.Repeat("<data>", 40), []string{
			`s.xml:2: elements nested more than 32 deep`}},
		{"duplicate XML attribute", "<service name=\"s\"\n name=\"t\" version=\"1.0\"/>", []string{
			`s.xml:2: service attribute "name" given twice (first at line 1)`}},
		{"version with one number", `<service name="s" version="1"/>`, []string{
			`s.xml:1: service attribute "version": "1" is not a version (MAJOR.MINOR or MAJOR.MINOR.PATCH, decimal numbers without leading zeros, like 1.0 or 2.3.1)`}},
		{"version with four numbers", `<service name="s" version="1.2.3.4"/>`, []string{
			`s.xml:1: service attribute "version": "1.2.3.4" is not a version (MAJOR.MINOR or MAJOR.MINOR.PATCH, decimal numbers without leading zeros, like 1.0 or 2.3.1)`}},
		{"service name with empty word", `<service name="a..b" version="1.0"/>`, []string{
			`s.xml:1: service attribute "name": "a..b" is not a service name (dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters, like mediaplayer or com.example.player)`}},
		{"service name too long", `<service name="` + strings.Repeat("a", 129) + `" version="1.0"/>`, []string{
			`s.xml:1: service attribute "name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..." is not a service name (dot-separated words of letters, digits, _ and -, each starting with a letter, at most 128 characters, like mediaplayer or com.example.player)`}},
		{"name too long", svc(`<method name="` + strings.Repeat("m", 65) + `"/>`), []string{
			`s.xml:2: method[1] attribute "name": "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm..." is not a name (a letter or _ followed by letters, digits and _, at most 64 characters)`}},
		{"leaf with a child", svc("<method name=\"m\">\n<arg name=\"a\" type=\"int\"><doc/></arg></method>"), []string{
			`s.xml:3: method m/arg a element <doc> unknown (method m/arg a has no child elements)`}},
		{"unknown type lists at most ten", svc(`<struct name="A"/><struct name="B"/><struct name="C"/><struct name="D"/><struct name="E"/><struct name="F"/>` +
			"\n" + `<method name="m" returns="G"/>`), []string{
			`s.xml:3: method m attribute "returns": unknown type "G" (known: int, float, bool, string, binary, A, B, C, D, E, ...)`}},
		{"type used in a struct before it is declared is fine; recursion through three", svc(
			"<struct name=\"A\"><field name=\"b\" type=\"B\"/></struct>\n" +
				"<struct name=\"B\"><field name=\"c\" type=\"C[][]\"/></struct>\n" +
				"<struct name=\"C\"><field name=\"a\" type=\"A\"/><field name=\"b\" type=\"B\"/></struct>"), []string{
			`s.xml:2: struct A/field b: struct A contains itself (A.b -> B.c -> C.a -> A); a type cannot contain itself, not even through a list`,
			`s.xml:3: struct B/field c: struct B contains itself (B.c -> C.b -> B); a type cannot contain itself, not even through a list`}},
		{"default on a list-typed value is reported once", svc(`<data><value name="v" type="int[]" default="1"/></data>`), []string{
			`s.xml:2: data v attribute "type": "int[]" is a list; declare a list with <list>`}},
		{"float defaults: no hex, no Inf", svc("<data>\n<value name=\"a\" type=\"float\" default=\"0x1p3\"/>\n<value name=\"b\" type=\"float\" default=\"Inf\"/>\n</data>"), []string{
			`s.xml:3: data a attribute "default": "0x1p3" is not a float (a decimal number, like 1.5 or -2e10)`,
			`s.xml:4: data b attribute "default": "Inf" is not a float (a decimal number, like 1.5 or -2e10)`}},
		{"int default with spaces or underscores", svc("<data>\n<value name=\"a\" type=\"int\" default=\" 1\"/>\n<value name=\"b\" type=\"int\" default=\"1_000\"/>\n</data>"), []string{
			`s.xml:3: data a attribute "default": "1" is not an int (a decimal integer, like -42)`,
			`s.xml:4: data b attribute "default": "1_000" is not an int (a decimal integer, like -42)`}},
		{"unpadded base64", svc(`<data><value name="a" type="binary" default="AAE"/></data>`), []string{
			`s.xml:2: data a attribute "default": "AAE" is not base64 (the standard alphabet of RFC 4648 with = padding, like AAEC/w==)`}},
		{"route to data inside a list or below an empty object", svc("<data><list name=\"l\" type=\"int\"/><object name=\"o\"/></data>\n<routing>\n" +
			"<route data=\"l.x\" link=\"server\"/>\n<route data=\"o.x\" link=\"server\"/>\n<route data=\"x\" link=\"server\"/>\n<route data=\"*\" link=\"server\"/>\n</routing>"), []string{
			`s.xml:4: routing/route[1] attribute "data": no runtime data "l.x": l is a list`,
			`s.xml:5: routing/route[2] attribute "data": no runtime data "o.x" (nothing in o)`,
			`s.xml:6: routing/route[3] attribute "data": no runtime data "x" (top level: l, o)`}},
		{"route to an event of a service without events", svc(`<routing><route event="e" link="server"/></routing>`), []string{
			`s.xml:2: routing/route[1] attribute "event": no event "e" in the service (it has no events)`}},
		{"bearer on the server link", svc(`<routing><route method="*" linkType="server" bearer="connect.bearer.tcp"/></routing>`), []string{
			`s.xml:2: routing/route[1] attribute "bearer": the server link has no bearer of its own; bearer is for direct links`}},
		{"bad bearer on a route", svc(`<routing><route method="*" link="reliable" bearer="tcp"/></routing>`), []string{
			`s.xml:2: routing/route[1] attribute "bearer": bearer type "tcp" must have at least two dot-separated parts, like connect.bearer.tcp`}},
		{"huge endpoint", svc(`<endpoints><endpoint address="tcp://` + strings.Repeat("h", 300) + `:1"/></endpoints>`), []string{
			`s.xml:2: endpoints/endpoint[1] attribute "address": "tcp://hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh..." is not an endpoint: longer than 256 characters`}},
		{"persistent on routing and service", `<service name="s" version="1.0" persistent="true"><routing persistent="true"/></service>`, []string{
			`s.xml:1: service attribute "persistent" unknown (known: name, version, description); persistent is set on <value>, <list> and <object> in <data>`,
			`s.xml:1: routing attribute "persistent" unknown (known: description); persistent is set on <value>, <list> and <object> in <data>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("s.xml", []byte(tt.doc))
			if s != nil {
				t.Error("a Service returned together with problems")
			}
			testutil.DiffLines(t, "problem", problemLines(t, err), tt.want)
		})
	}
}

// TestAccepted checks documents that must parse, and what they give.
func TestAccepted(t *testing.T) {
	t.Run("minimal", func(t *testing.T) {
		s, err := Parse("m.xml", []byte(`<service name="m" version="0.1"/>`))
		if err != nil {
			t.Fatal(err)
		}
		want := &Service{Name: "m", Version: "0.1", File: "m.xml", Line: 1,
			Data: &DataNode{Kind: ObjectNode, Type: &Type{Kind: Struct}}, Routing: &Routing{}}
		if !reflect.DeepEqual(s, want) {
			t.Errorf("got %+v, want %+v", s, want)
		}
	})
	t.Run("BOM, declaration, comments, namespaces, CRLF", func(t *testing.T) {
		doc := "\uFEFF<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<!-- c -->\r\n" +
			"<service xmlns=\"urn:x\" xmlns:a=\"urn:a\" name=\"com.example.x-y_z\" version=\"10.20.30\">\r\n" +
			"  <method name=\"_m9\" a:b=\"\"/>\r\n</service>\r\n"
		_, err := Parse("n.xml", []byte(doc))
		testutil.DiffLines(t, "problem", problemLines(t, err), []string{`n.xml:4: method _m9 attribute "a:b" unknown (known: name, returns, description)`})
	})
	t.Run("defaults and persistence", func(t *testing.T) {
		s, err := Parse("d.xml", []byte(svc(`<data>
<value name="i" type="int" default="-9223372036854775808"/>
<value name="f" type="float" default="+.5e-3"/>
<value name="s" type="string" default=" keep  spaces "/>
<value name="b" type="binary" default=""/>
<value name="z" type="float"/>
<object name="o" persistent="false"><value name="v" type="bool" persistent="true"/><value name="w" type="bool"/></object>
<object name="p" persistent="true"><object name="q" persistent="true"><value name="v" type="bool"/></object></object>
</data>`)))
		if err != nil {
			t.Fatal(err)
		}
		d := s.Data
		checks := []struct {
			path       string
			def        any
			persistent bool
		}{
			{"i", int64(-9223372036854775808), false},
			{"f", 0.0005, false},
			{"s", " keep  spaces ", false},
			{"b", []byte{}, false},
			{"z", 0.0, false},
			{"o", nil, false},
			{"o.v", false, true},
			{"o.w", false, false},
			{"p", nil, true},
			{"p.q", nil, true},
			{"p.q.v", false, true},
		}
		for _, c := range checks {
			n := d.Lookup(c.path)
			if n == nil {
				t.Errorf("no node %s", c.path)
				continue
			}
			if !reflect.DeepEqual(n.Default, c.def) || n.Persistent != c.persistent {
				t.Errorf("%s: default %#v persistent %v, want %#v %v", c.path, n.Default, n.Persistent, c.def, c.persistent)
			}
		}
		if d.Lookup("p.q.x") != nil || d.Lookup("i.x") != nil || d.Lookup("") != d {
			t.Error("Lookup finds what is not there")
		}
		var paths []string
		d.Walk(func(n *DataNode) { paths = append(paths, n.Path) })
		if got := strings.Join(paths, ","); got != ",i,f,s,b,z,o,o.v,o.w,p,p.q,p.q.v" {
			t.Errorf("Walk visits %s", got)
		}
	})
	t.Run("limits reached but not passed", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("<method name=\"m\">")
		for i := 0; i < maxArgs; i++ {
			fmt.Fprintf(&b, `<arg name="a%d" type="int[][][][][][][][]"/>`, i)
		}
		b.WriteString("</method><data>")
		for i := 0; i < maxDataNodes; i++ {
			fmt.Fprintf(&b, `<value name="v%d" type="int"/>`, i)
		}
		b.WriteString("</data>")
		// A chain of structs exactly maxTypeDepth deep: T0 holds T1 ...
		for i := 0; i < maxTypeDepth-1; i++ {
			fmt.Fprintf(&b, `<struct name="T%d"><field name="f" type="T%d"/></struct>`, i, i+1)
		}
		fmt.Fprintf(&b, `<struct name="T%d"/>`, maxTypeDepth-1)
		if _, err := Parse("l.xml", []byte(svc(b.String()))); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLimits checks that each count is bounded, with one message at the
// first element over the limit.
func TestLimits(t *testing.T) {
	many := func(n int, format string) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, format, i)
		}
		return b.String()
	}
	tests := []struct {
		name, body, want string
	}{
		{"structs", many(maxStructs+2, `<struct name="S%d"/>`), `s.xml:2: struct[1025]: more than 1024 structs in a service`},
		{"fields", `<struct name="S">` + many(maxFields+2, `<field name="f%d" type="int"/>`) + `</struct>`,
			`s.xml:2: struct S/field[257]: more than 256 fields in a struct`},
		{"methods", many(maxMethods+2, `<method name="m%d"/>`), `s.xml:2: method[1025]: more than 1024 methods in a service`},
		{"args", `<method name="m">` + many(maxArgs+2, `<arg name="a%d" type="int"/>`) + `</method>`,
			`s.xml:2: method m/arg[65]: more than 64 arguments in a method`},
		{"events", many(maxEvents+2, `<event name="e%d"/>`), `s.xml:2: event[1025]: more than 1024 events in a service`},
		{"event args", `<event name="e">` + many(maxArgs+2, `<arg name="a%d" type="int"/>`) + `</event>`,
			`s.xml:2: event e/arg[65]: more than 64 arguments in an event`},
		{"data nodes", `<data><object name="o">` + many(maxDataNodes+1, `<value name="v%d" type="int"/>`) + `</object></data>`,
			`s.xml:2: data o.v4095: more than 4096 nodes of runtime data in a service`},
		{"links", `<routing>` + many(maxLinks+2, `<link name="l%d" bearer="a.b" endpoint="tcp://h:1"/>`) + `</routing>`,
			`s.xml:2: routing/link[65]: more than 64 links in a service`},
		{"routes", `<routing>` + many(maxRoutes+2, `<route method="*" link="server" description="%d"/>`) + `</routing>`, ""},
		{"endpoints", `<endpoints>` + many(maxEndpoints+2, `<endpoint address="tcp://h:%d"/>`) + `</endpoints>`,
			`s.xml:2: endpoints/endpoint[65]: more than 64 endpoints in a service`},
		{"type depth", many(maxTypeDepth, `<struct name="T%[1]d"><field name="f" type="T%[1]d_"/></struct>`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("s.xml", []byte(svc(tt.body)))
			lines := problemLines(t, err)
			switch tt.name {
			case "routes":
				// Every route after the first is a duplicate: 1023 of them,
				// and the one over the limit, of which maxProblems are
				// listed.
				if len(lines) != maxProblems+1 || lines[len(lines)-1] != `s.xml:2: 24 more problems not listed; fix these first` {
					t.Errorf("%d problems, last %q", len(lines), lines[len(lines)-1])
				}
			case "type depth":
				// Every field names an unknown type: that is not the test;
				// see TestTypeDepth.
			default:
				testutil.DiffLines(t, "problem", lines, []string{tt.want})
			}
		})
	}
}

// TestManyProblems checks that a file of garbage gets a bounded list.
func TestManyProblems(t *testing.T) {
	_, err := Parse("s.xml", []byte(svc(strings.Repeat("<x/>\n", 5000))))
	lines := problemLines(t, err)
	if len(lines) != maxProblems+1 || lines[0] != `s.xml:2: service element <x> unknown (known: struct, method, event, data, routing, endpoints)` ||
		lines[maxProblems] != `s.xml:1001: 4000 more problems not listed; fix these first` {
		t.Errorf("%d problems: first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
}

func TestTypeDepth(t *testing.T) {
	var b strings.Builder
	for i := 0; i < maxTypeDepth; i++ {
		fmt.Fprintf(&b, "<struct name=\"T%d\"><field name=\"f\" type=\"T%d\"/></struct>\n", i, i+1)
	}
	fmt.Fprintf(&b, `<struct name="T%d"/>`, maxTypeDepth)
	_, err := Parse("s.xml", []byte(svc(b.String())))
	testutil.DiffLines(t, "problem", problemLines(t, err), []string{
		`s.xml:2: struct T0: types nested more than 32 deep (a struct in a struct or a list counts one level)`})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.xml")
	if err := os.WriteFile(big, []byte(svc(strings.Repeat(" ", MaxFileSize))), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.xml")
	tests := []struct{ path, want string }{
		{missing, missing + ": cannot read service file: no such file or directory"},
		{dir, dir + ": cannot read service file: not a regular file"},
		{big, big + ":1: file is larger than 1048576 bytes; this is not a service file"},
	}
	for _, tt := range tests {
		s, err := Load(tt.path)
		if s != nil {
			t.Errorf("%s: a Service returned together with problems", tt.path)
		}
		testutil.DiffLines(t, "problem", problemLines(t, err), []string{tt.want})
	}
}

func TestModelStrings(t *testing.T) {
	track := &Type{Kind: Struct, Name: "Track"}
	types := map[string]*Type{
		"int":       {Kind: Int},
		"binary[]":  {Kind: List, Elem: &Type{Kind: Binary}},
		"Track[][]": {Kind: List, Elem: &Type{Kind: List, Elem: track}},
		"object":    {Kind: Struct},
		"<nil>":     nil,
		"invalid":   {},
		"bool[]":    {Kind: List, Elem: &Type{Kind: Bool}},
		"float":     {Kind: Float},
		"string":    {Kind: String},
		"Track":     track,
	}
	for want, typ := range types {
		if got := typ.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	if Kind(200).String() != "invalid" || List.String() != "list" || Struct.String() != "struct" || !Binary.Scalar() || List.Scalar() {
		t.Error("Kind methods")
	}
	if ValueNode.String() != "value" || ListNode.String() != "list" || ObjectNode.String() != "object" || NodeKind(0).String() != "invalid" {
		t.Error("NodeKind.String")
	}
	res := map[Resource]string{
		{MethodResource, "play"}:        "method play",
		{MethodResource, All}:           "every method",
		{EventResource, All}:            "every event",
		{EventResource, "e"}:            "event e",
		{DataResource, All}:             "all runtime data",
		{DataResource, "player.volume"}: "data player.volume",
		{0, "x"}:                        "invalid x",
	}
	for r, want := range res {
		if got := r.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", r, got, want)
		}
	}
	s, err := Load(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if s.Method("nope") != nil || s.Event("nope") != nil || s.Type("nope") != nil || s.Event("error") == nil ||
		s.Routing.Link("secure") == nil || s.Routing.Link(LinkServer) != nil || s.Type("Track").Field("nope") != nil ||
		s.Routing.Route(Resource{DataResource, "spectrum"}) == nil || s.Routing.Route(Resource{DataResource, "player"}) != nil {
		t.Error("lookups")
	}
}

// TestDocs checks that the example in docs/SERVICES.md parses, so that the
// reference does not drift from the parser.
func TestDocs(t *testing.T) {
	raw, err := os.ReadFile("../../docs/SERVICES.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, "```xml\n<?xml")
	if start < 0 {
		t.Fatal("no XML example in docs/SERVICES.md")
	}
	doc = doc[start+len("```xml\n"):]
	doc = doc[:strings.Index(doc, "```")]
	s, err := Parse("SERVICES.md", []byte(doc))
	if err != nil {
		t.Fatalf("the example in docs/SERVICES.md does not parse:\n%v", err)
	}
	if msg := checkService(s); msg != "" {
		t.Fatal(msg)
	}
}
